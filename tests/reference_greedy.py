"""Plain NumPy (float64) reference of TABA's greedy, one label per step, for checking the JAX search."""
from __future__ import annotations

import functools
import itertools

import numpy as np


def objective(affinity, gamma, kappa, weights, patterns, counts, curve="power", transfer_cap=None):
    """F of pattern counts, straight from the METHOD formulas (and the optional transfer cap)."""
    patterns = np.asarray(patterns, float)
    u = 1.0 - np.prod((1.0 - affinity[None, :, :]) ** patterns[:, :, None], axis=1)
    counts = np.asarray(counts, float)
    information = counts @ u
    if transfer_cap is not None:
        direct = counts @ patterns
        information = direct + np.minimum(information - direct, transfer_cap * direct)
    if curve == "power":
        per_task = 1.0 - (1.0 + information / kappa) ** -gamma
    else:
        per_task = 1.0 - np.exp(-gamma / kappa * information)
    return float(per_task @ weights / weights.sum())


def greedy_outcomes(affinity, gamma, kappa, weights, costs, num_images, budget, transfer_cap=None,
                    tie_tolerance=1e-6):
    """Every end state of the cost-benefit greedy (one image per step, plus the single-task
    safeguard) over all ways of breaking ties; returns a set of frozensets of (pattern, count).

    Candidates whose gain per cost is within `tie_tolerance` of the best count as tied: zero
    affinities, or a transfer cap that clips the transfer credit, make candidates gain exactly the
    same, and float32 cannot rank near-ties, so any of them is a correct greedy step.
    """
    num_tasks = len(costs)
    params = (affinity, gamma, kappa, weights)

    def value(state):
        keys = list(state)
        return objective(*params, keys, [state[k] for k in keys], transfer_cap=transfer_cap)

    def money_left(state):
        return budget - sum(count * float(np.dot(pattern, costs)) for pattern, count in state.items())

    @functools.lru_cache(maxsize=None)
    def run_greedy(key):
        state, money = dict(key), money_left(dict(key))
        base = value(state)
        candidates = [((value(_moved(state, pattern, task, 1)) - base) / costs[task], pattern, task)
                      for pattern, count in state.items() for task in range(num_tasks)
                      if count > 0 and not pattern[task] and costs[task] <= money]
        if not candidates:
            return frozenset({key})
        best = max(ratio for ratio, _, _ in candidates)
        return frozenset().union(*(run_greedy(_key(_moved(state, pattern, task, 1)))
                                   for ratio, pattern, task in candidates if ratio >= best - tie_tolerance))

    start = {(False,) * num_tasks: num_images}
    singles = []
    for task in range(num_tasks):
        count = min(int(np.floor(budget / costs[task])), num_images)
        singles.append(_key(_moved(dict(start), (False,) * num_tasks, task, count)))
    outcomes = set()
    for greedy_end in run_greedy(_key(start)):
        choices = [greedy_end] + singles
        values = [value(dict(c)) for c in choices]
        for choice, choice_value in zip(choices, values):
            if choice_value >= max(values) - tie_tolerance:
                outcomes |= run_greedy(choice)
    return outcomes


def brute_force_best(affinity, gamma, kappa, weights, costs, num_images, budget):
    """max F over every distribution of the pool's images over label patterns within budget."""
    num_tasks = len(costs)
    patterns = list(itertools.product([False, True], repeat=num_tasks))
    pattern_costs = [float(np.dot(p, costs)) for p in patterns]
    best = 0.0

    def rec(index, left, money, counts):  # patterns[0] is the empty one: it takes the leftover images
        nonlocal best
        if index == len(patterns):
            best = max(best, objective(affinity, gamma, kappa, weights, patterns, [left] + counts))
            return
        for c in range(left + 1):
            if pattern_costs[index] * c > money + 1e-9:
                break
            rec(index + 1, left - c, money - pattern_costs[index] * c, counts + [c])

    rec(1, num_images, budget, [])
    return best


def _key(state):
    return frozenset((pattern, count) for pattern, count in state.items() if count > 0)


def _moved(state, pattern, task, count):
    state = dict(state)
    target = tuple(v or i == task for i, v in enumerate(pattern))
    state[pattern] -= count
    state[target] = state.get(target, 0) + count
    return state
