"""TABA's cost-benefit greedy search (METHOD section 4, step 4), one jitted `lax.while_loop`.

Images that carry the same label pattern are interchangeable for the objective, so the search
works on a table of distinct patterns and their image counts. A candidate is "label task t on m
more images of pattern p"; all (p, t) candidates of a step are scored in one vectorized call and
the best gain per cost wins. Chunk sizes m are a fraction of the remaining budget, so they shrink
as the budget runs out. Concrete image indices are drawn (seeded) only at the very end.

Besides the pattern counts, the search tracks a flow matrix `flow[i, r]`: how many images that
started with initial pattern i now carry pattern r. It is what lets the final label matrix contain
the `initial` allocation exactly.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from taba_jax import rng
from taba_jax.budget import information as info_lib
from taba_jax.budget.problem import Allocation, BudgetProblem

DEFAULT_STEP_FRACTION = 0.02
DEFAULT_MAX_PATTERNS = 512


class SearchState(NamedTuple):
    """Loop state of the greedy search (all on device)."""

    patterns: jax.Array  # (P, T) bool; rows with counts == 0 are free slots
    counts: jax.Array  # (P,) int32 images per pattern
    flow: jax.Array  # (I, P) int32 images from initial pattern i now in row r
    added: jax.Array  # (T,) int32 labels bought per task by the search
    steps: jax.Array  # () int32 greedy steps taken


def _target_row(state: SearchState, target: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Row that holds (or will hold) pattern `target`, and whether the table has room for it."""
    match = jnp.all(state.patterns == target, axis=1)
    free = state.counts == 0
    exists = match.any()
    row = jnp.where(exists, jnp.argmax(match), jnp.argmax(free))
    return row, exists | free.any()


def _move(state: SearchState, source, task, size, label=True, movable=None) -> SearchState:
    """Sets `task` to `label` on `size` images of pattern row `source` (size may be 0: a no-op).

    `movable` (I,) restricts which initial groups may supply the images (a label bought with the
    initial allocation is never removed).
    """
    target = state.patterns[source].at[task].set(label)
    row, _ = _target_row(state, target)
    column = state.flow[:, source] if movable is None else jnp.where(movable, state.flow[:, source], 0)
    taken = jnp.clip(size - (jnp.cumsum(column) - column), 0, column)
    return SearchState(
        patterns=state.patterns.at[row].set(jnp.where(size > 0, target, state.patterns[row])),
        counts=state.counts.at[source].add(-size).at[row].add(size),
        flow=state.flow.at[:, source].add(-taken).at[:, row].add(taken),
        added=state.added.at[task].add(jnp.where(label, size, -size)),
        steps=state.steps + 1,
    )


def _remaining(state: SearchState, budget: jax.Array, costs: jax.Array) -> jax.Array:
    return budget - state.added.astype(jnp.float32) @ costs


def _chunk_sizes(state, budget, costs, step_fraction, max_chunk) -> jax.Array:
    """(P, T) images per candidate: a fraction of the remaining budget, at least 1, at most available."""
    remaining = _remaining(state, budget, costs)
    affordable = jnp.floor(remaining / costs)
    chunk = jnp.maximum(1.0, jnp.floor(step_fraction * remaining / costs))
    if max_chunk is not None:
        chunk = jnp.minimum(chunk, float(max_chunk))
    sizes = jnp.minimum(jnp.minimum(chunk, affordable)[None, :], state.counts[:, None].astype(jnp.float32))
    return jnp.where(state.patterns, 0.0, jnp.maximum(sizes, 0.0))


def _best_candidate(state, model, budget, costs, task_mask, step_fraction, max_chunk):
    """Flat index of the best affordable candidate by gain per cost (or -inf ratio if none), and sizes."""
    sizes = _chunk_sizes(state, budget, costs, step_fraction, max_chunk)
    gains = info_lib.candidate_gains(model, state.patterns, state.counts, sizes)
    valid = (sizes >= 1) & task_mask[None, :]
    ratio = jnp.where(valid, gains / jnp.where(valid, sizes * costs, 1.0), -jnp.inf).reshape(-1)
    num_tasks = costs.shape[0]

    def table_full_for(flat):
        target = state.patterns[flat // num_tasks].at[flat % num_tasks].set(True)
        return ~_target_row(state, target)[1]

    # A candidate whose new pattern finds no free row is dropped; try the next best.
    ratio = jax.lax.while_loop(
        lambda r: (r.max() > -jnp.inf) & table_full_for(jnp.argmax(r)),
        lambda r: r.at[jnp.argmax(r)].set(-jnp.inf),
        ratio)
    best = jnp.argmax(ratio)
    return best, ratio[best], sizes.reshape(-1)[best].astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("max_chunk",))
def search(state: SearchState, model: info_lib.InformationModel, budget: jax.Array, costs: jax.Array,
           task_mask: jax.Array, step_fraction: float = DEFAULT_STEP_FRACTION,
           max_chunk: int | None = None) -> SearchState:
    """Runs the greedy from `state` until no affordable candidate is left. Pure and jittable.

    `budget` is what the search may spend on top of `state` (its `added` labels count against it).
    """
    num_tasks = costs.shape[0]

    def body(carry):
        state, _ = carry
        best, ratio, size = _best_candidate(state, model, budget, costs, task_mask, step_fraction, max_chunk)
        found = ratio > -jnp.inf
        state = jax.lax.cond(found, lambda s: _move(s, best // num_tasks, best % num_tasks, size),
                             lambda s: s, state)
        return state, ~found

    state, _ = jax.lax.while_loop(lambda carry: ~carry[1], body, (state, jnp.array(False)))
    return state


def _single_task_fill(state, model, budget, costs, task) -> SearchState:
    """The safeguard's alternative: the whole remaining budget on one task, most informative images first."""
    one_image = jnp.ones(state.patterns.shape, jnp.float32)
    per_image = info_lib.candidate_gains(model, state.patterns, state.counts, one_image)[:, task]
    eligible = ~state.patterns[:, task] & (state.counts > 0)
    order = jnp.argsort(jnp.where(eligible, -per_image, jnp.inf))
    affordable = jnp.maximum(jnp.floor(_remaining(state, budget, costs) / costs[task]), 0).astype(jnp.int32)
    last = order.shape[0] - 1

    def bought(s):
        return s.added[task] - state.added[task]

    def cond(carry):
        k, s = carry
        return (k <= last) & (bought(s) < affordable) & eligible[order[jnp.minimum(k, last)]]

    def body(carry):
        k, s = carry
        row = order[k]
        size = jnp.minimum(s.counts[row], affordable - bought(s))
        target = s.patterns[row].at[task].set(True)
        size = jnp.where(_target_row(s, target)[1], size, 0)
        return k + 1, _move(s, row, task, size)

    return jax.lax.while_loop(cond, body, (jnp.array(0), state))[1]


EXCHANGE_SIZES = (1, 2, 3)
EXCHANGE_BUDGET_IN_LABELS = 200


@functools.partial(jax.jit, static_argnames=("max_rounds", "max_chunk"))
def exchange(state: SearchState, model: info_lib.InformationModel, budget: jax.Array, costs: jax.Array,
             origins: jax.Array, max_rounds: int, step_fraction: float = DEFAULT_STEP_FRACTION,
             max_chunk: int | None = None) -> SearchState:
    """Local search after the greedy: give back r labels of one task s, buy one label of a task t
    (or none), re-spend the rest with the greedy; keep the best trial while it raises F.

    It repairs the knapsack effect of cost-benefit greedy, which can stop with money left just
    short of the label it should have bought. Trials (every s, r in EXCHANGE_SIZES, every t) run
    batched with vmap. `origins` (I, T) are the initial patterns, whose labels are never given back.
    """
    num_tasks = costs.shape[0]
    eye = jnp.eye(num_tasks, dtype=bool)
    sizes = jnp.asarray(EXCHANGE_SIZES, jnp.int32)

    def value(s):
        return info_lib.objective(model, info_lib.model_information(model, s.patterns, s.counts))

    def trial(state, task, size, forced):
        """Give back `size` labels of `task`, buy one label of `forced` (if < T), refill greedily."""
        information = info_lib.model_information(model, state.patterns, state.counts)
        removable = state.flow.T @ (~origins[:, task]).astype(jnp.int32)  # (P,) images whose label the search bought
        loss = -info_lib.objective_gains(model, information, info_lib.change_deltas(
            model, state.patterns, state.counts, state.patterns & ~eye[task], jnp.ones(state.counts.shape)))
        row = jnp.argmin(jnp.where(state.patterns[:, task] & (removable >= size), loss, jnp.inf))
        feasible = state.patterns[row, task] & (removable[row] >= size) \
            & _target_row(state, state.patterns[row].at[task].set(False))[1]
        state = _move(state, row, task, jnp.where(feasible, size, 0), label=False, movable=~origins[:, task])
        forced_sizes = jnp.zeros_like(state.patterns, jnp.float32).at[:, jnp.minimum(forced, num_tasks - 1)].set(
            jnp.where((forced < num_tasks) & (costs[jnp.minimum(forced, num_tasks - 1)]
                                              <= _remaining(state, budget, costs)), 1.0, 0.0))
        forced_sizes = jnp.where(state.patterns | (state.counts[:, None] < 1), 0.0, forced_sizes)
        gains = jnp.where(forced_sizes > 0, info_lib.candidate_gains(model, state.patterns, state.counts,
                                                                     forced_sizes), -jnp.inf).reshape(-1)
        pick = jnp.argmax(gains)
        can_force = (gains[pick] > -jnp.inf) & _target_row(
            state, state.patterns[pick // num_tasks].at[pick % num_tasks].set(True))[1]
        state = _move(state, pick // num_tasks, pick % num_tasks, can_force.astype(jnp.int32))
        # Refill without `task`, then with every task: one search in a loop, so one copy compiles.
        masks = jnp.stack([~eye[task], jnp.ones(num_tasks, bool)])
        state = jax.lax.fori_loop(
            0, 2, lambda i, s: search(s, model, budget, costs, masks[i], step_fraction, max_chunk), state)
        return state, feasible

    def body(carry):
        state, rounds, _ = carry
        grid = jnp.meshgrid(jnp.arange(num_tasks), sizes, jnp.arange(num_tasks + 1), indexing="ij")
        trials, feasible = jax.vmap(lambda t, r, f: trial(state, t, r, f))(*(g.reshape(-1) for g in grid))
        values = jnp.where(feasible, jax.vmap(value)(trials), -jnp.inf)
        best = jnp.argmax(values)
        better = values[best] > value(state)
        state = jax.tree.map(lambda new, old: jnp.where(better, new[best], old), trials, state)
        return state, rounds + 1, better

    state, _, _ = jax.lax.while_loop(lambda c: c[2] & (c[1] < max_rounds), body,
                                     (state, jnp.array(0), jnp.array(True)))
    return state


def search_with_safeguard(state: SearchState, model: info_lib.InformationModel, budget: jax.Array,
                          costs: jax.Array, step_fraction: float = DEFAULT_STEP_FRACTION,
                          max_chunk: int | None = None) -> tuple[SearchState, jax.Array]:
    """Greedy plus the cost-benefit safeguard: keep the best of the greedy result and every
    single-task allocation. Returns the chosen state and its choice (-1 greedy, t single task t).
    Pure and jittable; called outside jit it runs the compiled `search` (which `greedy_allocate`
    reuses for the remainder) and `safeguard`, so the greedy loop compiles once per shape."""
    greedy = search(state, model, budget, costs, jnp.ones(costs.shape[0], bool), step_fraction, max_chunk)
    return safeguard(state, greedy, model, budget, costs)


@jax.jit
def safeguard(state: SearchState, greedy: SearchState, model: info_lib.InformationModel, budget: jax.Array,
              costs: jax.Array) -> tuple[SearchState, jax.Array]:
    """The better of `greedy` (the search's result from `state`) and every single-task fill of the
    budget from `state`, by objective; and the choice (-1 greedy, t single task t)."""
    num_tasks = costs.shape[0]
    singles = jax.vmap(lambda t: _single_task_fill(state, model, budget, costs, t))(jnp.arange(num_tasks))

    def value(s):
        return info_lib.objective(model, info_lib.model_information(model, s.patterns, s.counts))

    single_values = jax.vmap(value)(singles)
    best_single = jnp.argmax(single_values)
    use_single = single_values[best_single] > value(greedy)
    chosen = jax.tree.map(lambda g, s: jnp.where(use_single, s[best_single], g), greedy, singles)
    return chosen, jnp.where(use_single, best_single, -1)


def greedy_allocate(problem: BudgetProblem, information: info_lib.InformationModel, *, seed: int = 0,
                    initial=None, step_fraction: float = DEFAULT_STEP_FRACTION, max_chunk: int | None = None,
                    max_patterns: int = DEFAULT_MAX_PATTERNS, max_exchanges: int | None = None,
                    strategy_name: str = "taba") -> Allocation:
    """TABA's allocation: the greedy search on device, then seeded image indices on the host.

    `initial` (an Allocation or bool matrix already paid for, e.g. the pilot) is contained in the
    result and its cost counts against the budget. `max_chunk=1` gives the exact one-label-per-step
    greedy; `max_patterns` bounds the pattern table (candidates that would need a new pattern once
    it is full are skipped). `max_exchanges` bounds the rounds of the exchange local search (default 2 * num_tasks
    when the budget buys fewer than EXCHANGE_BUDGET_IN_LABELS of the dearest label, else 0).
    """
    if not isinstance(information, info_lib.InformationModel):
        raise TypeError(f"information must be an InformationModel, got {type(information).__name__}")
    if information.num_tasks != problem.num_tasks:
        raise ValueError(f"information has {information.num_tasks} tasks, the problem {problem.num_tasks}")
    if not 0 < step_fraction <= 1:
        raise ValueError(f"step_fraction must be in (0, 1], got {step_fraction}")
    if max_chunk is not None and max_chunk < 1:
        raise ValueError(f"max_chunk must be a positive integer or None, got {max_chunk}")
    if max_exchanges is None:  # the knapsack gap is at most about max cost / budget of F: large budgets skip it
        small_budget = problem.budget < EXCHANGE_BUDGET_IN_LABELS * problem.costs.max()
        max_exchanges = 2 * problem.num_tasks if small_budget else 0
    max_exchanges = int(max_exchanges)
    if max_exchanges < 0:
        raise ValueError(f"max_exchanges must be non-negative, got {max_exchanges}")
    if max_patterns < 1:
        raise ValueError(f"max_patterns must be positive, got {max_patterns}")
    start = initial_labels(problem, initial)
    num_images, num_tasks = start.shape
    if start.any():
        patterns0, counts0, inverse = info_lib.unique_patterns_with_inverse(start)
    else:  # the common case: nothing bought yet, one pattern, no sort of the pool needed
        patterns0, counts0, inverse = start[:1], np.array([num_images]), None
    num_initial = len(counts0)
    # Given an initial allocation, its groups are padded with empty groups (no images) to the whole
    # pattern space where that fits in max_patterns, else to the next power of two: the compiled search
    # then has one shape per task count, or a few (many tasks), whatever `initial` holds (TABA's rounds
    # start from allocations with different numbers of patterns).
    if not start.any():
        padded = num_initial
    elif 2 ** num_tasks <= max_patterns:
        padded = 2 ** num_tasks
    else:
        padded = 1 << (num_initial - 1).bit_length()
    capacity = padded + min(2 ** num_tasks, max_patterns)
    patterns = np.zeros((capacity, num_tasks), bool)
    patterns[:num_initial] = patterns0
    counts = np.zeros(capacity, np.int32)
    counts[:num_initial] = counts0
    flow = np.zeros((padded, capacity), np.int32)
    flow[np.arange(num_initial), np.arange(num_initial)] = counts0
    state = SearchState(jnp.asarray(patterns), jnp.asarray(counts), jnp.asarray(flow),
                        jnp.zeros(num_tasks, jnp.int32), jnp.zeros((), jnp.int32))
    costs32 = jnp.asarray(problem.costs, jnp.float32)

    # float32 cannot resolve one label in a budget of millions, so the bulk of the search runs
    # against a budget lowered by its rounding error, and a second search spends the exact
    # remainder computed here in float64 (small, hence precise in float32).
    remaining = problem.budget - problem.cost_of(start)
    margin = 0.0 if _exact_in_float32(problem) else 16 * num_tasks * float(np.finfo(np.float32).eps) * problem.budget
    state, choice = search_with_safeguard(state, information, jnp.float32(max(remaining - margin, 0.0)),
                                          costs32, step_fraction, max_chunk)
    remainder = remaining - float(np.asarray(state.added, np.int64) @ problem.costs)
    remainder = jnp.float32(max(remainder, 0.0))
    all_tasks = jnp.ones(num_tasks, bool)
    state = search(state._replace(added=jnp.zeros(num_tasks, jnp.int32)), information, remainder, costs32,
                   all_tasks, step_fraction, max_chunk)
    if max_exchanges:
        state = exchange(state, information, remainder, costs32, jnp.asarray(patterns[:padded]), max_exchanges,
                         step_fraction, max_chunk)
    labels = _assign_images(start, inverse, np.asarray(state.patterns), np.asarray(state.flow)[:num_initial], seed)
    _undo_float32_overspend(problem, labels, start, np.array(state.added), seed)
    choice = int(choice)
    allocation = Allocation(labels, problem, strategy_name, seed, {
        "objective": info_lib.allocation_objective(information, labels),
        "initial_objective": float(info_lib.objective(  # from the pattern counts already at hand
            information, info_lib.model_information(information, patterns0, counts0))),
        "safeguard": "greedy" if choice < 0 else f"single_task:{problem.task_names[choice]}",
        "information_model": information.to_json(),
    })
    return allocation


def initial_labels(problem: BudgetProblem, initial) -> np.ndarray:
    """The `initial` allocation as a writable bool matrix (zeros if None), checked against the problem."""
    if initial is None:
        return np.zeros((problem.num_images, problem.num_tasks), bool)
    labels = problem.check_labels(initial, "initial").copy()
    cost = problem.cost_of(labels)
    if not problem.is_affordable(cost):
        raise ValueError(f"initial allocation costs {cost}, which exceeds the budget {problem.budget}")
    return labels


def _assign_images(start, inverse, patterns, flow, seed) -> np.ndarray:
    """Turns pattern flows into a label matrix: within each initial group, a seeded shuffle of the
    images is cut into runs, one per final pattern."""
    labels = start.copy()
    generator = rng.numpy_rng(seed, "greedy_assign")
    if inverse is None:
        groups = [np.arange(len(start))]
    else:
        order = np.argsort(inverse, kind="stable")
        groups = np.split(order, np.cumsum(flow.sum(axis=1))[:-1])
    for group, group_flow in zip(groups, flow):
        rows = np.repeat(np.arange(len(group_flow)), group_flow)
        labels[generator.permutation(group)] = patterns[rows]
    return labels


def _undo_float32_overspend(problem, labels, start, last_added, seed) -> None:
    """Drops labels bought by the final search while float64 says the budget is exceeded.

    Only reachable when the remainder lies within float32 rounding of a multiple of a cost that
    float32 cannot represent; one dropped label is then enough.
    """
    generator = rng.numpy_rng(seed, "greedy_assign")
    while not problem.is_affordable(problem.cost_of(labels)):
        task = max(np.flatnonzero(last_added > 0), key=lambda t: problem.costs[t])
        candidates = np.flatnonzero(labels[:, task] & ~start[:, task])
        labels[generator.choice(candidates), task] = False
        last_added[task] -= 1


def _exact_in_float32(problem: BudgetProblem) -> bool:
    """Whether float32 budget arithmetic is exact: budget and costs on a common power-of-two grid,
    with every sum below 2**24 grid steps (integer costs and budgets under 16 million, say)."""
    values = np.append(problem.costs, problem.budget)
    for exponent in range(-10, 11):
        step = 2.0 ** -exponent
        if np.all(np.mod(values, step) == 0):
            return (problem.budget + problem.costs.max()) / step < 2 ** 24
    return False
