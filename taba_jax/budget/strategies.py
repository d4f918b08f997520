"""Allocation strategies: the heuristics of METHOD section 2 and TABA, behind one `allocate`."""
from __future__ import annotations

import functools

import numpy as np

from taba_jax import rng
from taba_jax.budget import greedy
from taba_jax.budget import information as info_lib
from taba_jax.budget.problem import Allocation, BudgetProblem

HEURISTICS = ("equal_budget", "equal_count_disjoint", "equal_count_shared", "random_pairs")
STRATEGIES = ("single_task:<task>",) + HEURISTICS + ("taba", "shares:<w_1>/.../<w_T>:<shared|disjoint>")
SHARE_MODES = ("shared", "disjoint")
_SLACK = 1e-10  # relative budget slack so that e.g. 3 labels at 10/3 fit a budget of 10 in float64


def strategy_names(task_names) -> list[str]:
    """Every strategy for tasks `task_names`: single_task:<t> for each task, the heuristics and taba."""
    return [f"single_task:{t}" for t in task_names] + list(HEURISTICS) + ["taba"]


def share_strategies(num_tasks: int, resolution: int, modes=SHARE_MODES, interior: bool = False) -> list[str]:
    """The fixed-share grid of the best-in-hindsight oracle: every split of the budget into
    `resolution` equal parts over the tasks (the simplex at step 1/resolution), for each image mode;
    `interior`: only the splits that give every task at least one part."""
    least = 1 if interior else 0

    def splits(parts, tasks):
        if tasks == 1:
            yield (parts,)
            return
        for first in range(parts - least * (tasks - 1), least - 1, -1):
            for rest in splits(parts - first, tasks - 1):
                yield (first,) + rest
    return [f"shares:{'/'.join(map(str, w))}:{mode}" for mode in modes for w in splits(resolution, num_tasks)]


def parse_shares(strategy: str, num_tasks: int) -> tuple[np.ndarray, bool]:
    """`shares:2/1/1:shared` -> (money fractions (T,), shared images?); ValueError if malformed."""
    try:
        _, weights, mode = strategy.split(":")
        weights = np.array([float(w) for w in weights.split("/")])
    except ValueError:
        raise ValueError(f"strategy {strategy!r} must look like shares:<w_1>/.../<w_T>:<shared|disjoint>") from None
    if len(weights) != num_tasks or (weights < 0).any() or weights.sum() <= 0 or mode not in SHARE_MODES:
        raise ValueError(f"strategy {strategy!r} needs {num_tasks} non-negative weights, not all zero, and a mode "
                         f"in {SHARE_MODES}")
    return weights / weights.sum(), mode == "shared"


def allocate(problem: BudgetProblem, strategy: str, *, seed: int = 0,
             information: info_lib.InformationModel | None = None, initial=None, **greedy_options) -> Allocation:
    """Returns a feasible allocation of `problem.budget` by `strategy`, containing `initial`.

    `initial` (an Allocation or bool matrix already paid for, e.g. a pilot set) counts against the
    budget. `information` is required by "taba"; for the heuristics it only adds the predicted
    objective to `Allocation.info`. `greedy_options` go to `greedy.greedy_allocate`.
    """
    if not isinstance(problem, BudgetProblem):
        raise TypeError(f"problem must be a BudgetProblem, got {type(problem).__name__}")
    if not isinstance(strategy, str):
        raise TypeError(f"strategy must be a string, got {strategy!r}")
    if isinstance(seed, bool) or int(seed) != seed:
        raise TypeError(f"seed must be an integer, got {seed!r}")
    if information is not None and not isinstance(information, info_lib.InformationModel):
        raise TypeError(f"information must be an InformationModel, got {type(information).__name__}")
    if strategy == "taba":
        if information is None:
            raise ValueError("strategy 'taba' requires an information model (information=None given)")
        return greedy.greedy_allocate(problem, information, seed=seed, initial=initial, **greedy_options)
    if greedy_options:
        raise TypeError(f"options {sorted(greedy_options)} apply only to strategy 'taba'")
    if strategy.startswith("single_task:"):
        fill = functools.partial(_single_task, task=problem.task_index(strategy.split(":", 1)[1]))
    elif strategy in HEURISTICS:
        fill = _HEURISTIC_FILLS[strategy]
    elif strategy.startswith("shares:"):
        fractions, shared = parse_shares(strategy, problem.num_tasks)
        fill = functools.partial(_fixed_shares, fractions=fractions, shared=shared)
    else:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {list(STRATEGIES)}")
    labels = greedy.initial_labels(problem, initial)
    fill(problem, labels, problem.budget - problem.cost_of(labels), rng.numpy_rng(seed, "heuristic"))
    info = {}
    if information is not None:
        info["objective"] = info_lib.allocation_objective(information, labels)
    return Allocation(labels, problem, strategy, int(seed), info)


def equal_budget_counts(problem: BudgetProblem) -> np.ndarray:
    """Labels per task that equal_budget buys on an empty pool: `floor(B / (T c_t))` (T,)."""
    share = problem.budget / problem.num_tasks
    return np.array([_affordable(problem, share, cost) for cost in problem.costs])


def top_up(problem: BudgetProblem, initial, counts, *, seed: int = 0) -> Allocation:
    """`initial` plus labels of each task t on more images until it holds `counts[t]`, images with the
    fewest labels first as equal_budget picks them; tasks in index order, each only as far as the
    budget still affords (never over it)."""
    counts = np.asarray(counts)
    if counts.shape != (problem.num_tasks,) or (counts < 0).any():
        raise ValueError(f"counts must be {problem.num_tasks} non-negative label counts, got {counts.tolist()}")
    labels = greedy.initial_labels(problem, initial)
    generator = rng.numpy_rng(seed, "top_up")
    for task, (count, cost) in enumerate(zip(counts, problem.costs)):
        missing = int(count) - int(labels[:, task].sum())
        affordable = _affordable(problem, problem.budget - problem.cost_of(labels), cost)
        _label_least_labeled(labels, task, min(max(missing, 0), affordable), generator)
    return Allocation(labels, problem, "top_up", int(seed), {})


def _affordable(problem: BudgetProblem, money: float, cost: float) -> int:
    return max(int(np.floor((money + _SLACK * problem.budget) / cost)), 0)


def _label_least_labeled(labels: np.ndarray, task: int, count: int, generator: np.random.Generator) -> int:
    """Labels `task` on up to `count` images lacking it, images with the fewest labels first
    (so tasks get disjoint images while the pool allows), random among equals. Returns how many."""
    candidates = np.flatnonzero(~labels[:, task])
    order = np.lexsort((generator.random(len(candidates)), labels[candidates].sum(axis=1)))
    chosen = candidates[order[:count]]
    labels[chosen, task] = True
    return len(chosen)


def _single_task(problem, labels, remaining, generator, *, task):
    _label_least_labeled(labels, task, _affordable(problem, remaining, problem.costs[task]), generator)


def _equal_budget(problem, labels, remaining, generator):
    share = remaining / problem.num_tasks
    for task, cost in enumerate(problem.costs):
        _label_least_labeled(labels, task, _affordable(problem, share, cost), generator)


def _fixed_shares(problem, labels, remaining, generator, *, fractions, shared):
    """A fixed fraction of the money per task; `shared`: the tasks label the same images as far as
    their counts allow (one random order, every task from its start), else disjoint images."""
    counts = [_affordable(problem, remaining * f, c) for f, c in zip(fractions, problem.costs)]
    if not shared:
        for task, count in enumerate(counts):
            _label_least_labeled(labels, task, count, generator)
        return
    order = generator.permutation(problem.num_images)
    for task, count in enumerate(counts):
        lacking = order[~labels[order, task]]
        labels[lacking[:count], task] = True


def _equal_count_disjoint(problem, labels, remaining, generator):
    count = _affordable(problem, remaining, problem.costs.sum())
    for task in range(problem.num_tasks):
        _label_least_labeled(labels, task, count, generator)


def _equal_count_shared(problem, labels, remaining, generator):
    """The same images for every task ("fully labeled"): the least labeled images first."""
    count = min(_affordable(problem, remaining, problem.costs.sum()), problem.num_images)
    order = np.lexsort((generator.random(problem.num_images), labels.sum(axis=1)))
    labels[order[:count]] = True


def _random_pairs(problem, labels, remaining, generator):
    """Random unlabeled (image, task) pairs, each bought if still affordable, until none is."""
    num_tasks = problem.num_tasks
    pairs = generator.permutation(np.flatnonzero(~labels.reshape(-1)))
    money = remaining + _SLACK * problem.budget
    while True:
        pairs = pairs[problem.costs[pairs % num_tasks] <= money]
        if len(pairs) == 0:
            return
        spend = np.cumsum(problem.costs[pairs % num_tasks])
        bought = int(np.searchsorted(spend, money, side="right"))  # a prefix; the next one is unaffordable
        labels.reshape(-1)[pairs[:bought]] = True
        money -= spend[bought - 1] if bought else 0.0
        pairs = pairs[bought:]


_HEURISTIC_FILLS = {"equal_budget": _equal_budget, "equal_count_disjoint": _equal_count_disjoint,
                    "equal_count_shared": _equal_count_shared, "random_pairs": _random_pairs}
