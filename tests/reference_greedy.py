"""Plain NumPy (float64) reference of TABA's greedy, one label per step, for checking the JAX search."""
from __future__ import annotations

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


def greedy(affinity, gamma, kappa, weights, costs, num_images, budget, transfer_cap=None):
    """Cost-benefit greedy over (pattern, task) candidates, one image per step, plus the
    single-task safeguard; returns {pattern tuple: count}."""
    num_tasks = len(costs)
    params = (affinity, gamma, kappa, weights)

    def value(state):
        keys = list(state)
        return objective(*params, keys, [state[k] for k in keys], transfer_cap=transfer_cap)

    def run_greedy(state, money):
        while True:
            base = value(state)
            best = None
            for pattern, count in state.items():
                for task in range(num_tasks):
                    if count == 0 or pattern[task] or costs[task] > money:
                        continue
                    trial = _moved(state, pattern, task, 1)
                    ratio = (value(trial) - base) / costs[task]
                    if best is None or ratio > best[0]:
                        best = (ratio, pattern, task)
            if best is None:
                return state, money
            state = _moved(state, best[1], best[2], 1)
            money -= costs[best[2]]

    start = {(False,) * num_tasks: num_images}
    candidates = [run_greedy(dict(start), budget)]
    for task in range(num_tasks):
        count = min(int(np.floor(budget / costs[task])), num_images)
        state = _moved(dict(start), (False,) * num_tasks, task, count)
        candidates.append((state, budget - count * costs[task]))
    state, money = max(candidates, key=lambda c: value(c[0]))
    state, _ = run_greedy(state, money)
    return {k: v for k, v in state.items() if v > 0}


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


def _moved(state, pattern, task, count):
    state = dict(state)
    target = tuple(v or i == task for i, v in enumerate(pattern))
    state[pattern] -= count
    state[target] = state.get(target, 0) + count
    return state
