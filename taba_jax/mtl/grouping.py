"""Task grouping under an inference budget (Standley et al., ICML 2020; Fifty et al., NeurIPS 2021).

Given an affinity `S[s, t]` (how much training task s helps task t, e.g. TABA's lookahead affinity)
and at most k networks, choose the groups of tasks trained together. As in both papers, groups may
overlap: a network is trained on all tasks of its group, and each task is served at inference by the
chosen group that predicts it best, so a group may hold a task only as a helper for the others.
Overlap is allowed because partitions are a special case (an overlapping choice is never worse) and
the inference cost, k networks, is the same; the price is training a task in several networks, which
needs no extra labels. Every task must be served by some group.

Fifty et al.'s criterion: the value of group G for a member t is the mean affinity from the other
members onto it, `mean_{s in G, s != t} S[s, t]` (0 for a task alone: nothing transfers), and a
choice of groups scores the sum over tasks of the value of the group serving it.

Exact search (T <= `exhaustive_limit`, default 10, at most 12): a choice is a partition of the tasks into at
most k served sets B, each served by the best group containing it; the best group for every B comes
from scanning its supersets, the best partition from a dynamic programme over subsets
(O(4^T + k 3^T)). Greedy beyond: start from one network with every task, add the group with the
largest gain while fewer than k, then swap single groups while that improves. Ties prefer fewer
networks, then smaller groups. Both enumerate the 2^T candidate groups, so T is limited to 16.
"""
from __future__ import annotations

import dataclasses

import numpy as np

MAX_TASKS = 16
MAX_EXHAUSTIVE_TASKS = 12  # O(4^T + k 3^T): about a second at 12 tasks, 3-4x more per extra task
METHODS = ("auto", "exhaustive", "greedy")


@dataclasses.dataclass(frozen=True)
class Grouping:
    """Chosen groups (sorted task indices), the index of the group serving each task, the score."""

    groups: tuple[tuple[int, ...], ...]
    served_by: tuple[int, ...]
    score: float
    method: str  # "exhaustive" or "greedy"


def group_values(affinity) -> np.ndarray:
    """(2^T, T): row `mask` holds the value of the group of tasks in bitmask `mask` for each member
    (mean affinity from the other members onto it, 0 alone) and -inf for non-members."""
    affinity = np.asarray(affinity, np.float64)
    num_tasks = affinity.shape[0]
    masks = np.arange(2 ** num_tasks)
    member = ((masks[:, None] >> np.arange(num_tasks)) & 1).astype(bool)
    size = member.sum(axis=1, keepdims=True)
    from_others = member.astype(np.float64) @ affinity - member * np.diag(affinity)
    mean = np.divide(from_others, size - 1, out=np.zeros_like(from_others), where=size > 1)
    return np.where(member, mean, -np.inf)


def select_groups(affinity, max_groups: int, method: str = "auto", exhaustive_limit: int = 10) -> Grouping:
    """At most `max_groups` overlapping groups maximising the summed value of each task's serving group.

    `affinity` (T, T) finite, `affinity[s, t]` = effect of s on t (the diagonal is not used);
    `method` "exhaustive", "greedy" or "auto" (exhaustive for T <= `exhaustive_limit`). Pure.
    """
    affinity = np.asarray(affinity, np.float64)
    if affinity.ndim != 2 or affinity.shape[0] != affinity.shape[1] or affinity.shape[0] == 0:
        raise ValueError(f"affinity must be a non-empty square (T, T) matrix, got shape {affinity.shape}")
    if not np.isfinite(affinity).all():
        raise ValueError(f"affinity must be finite, got {affinity.tolist()}")
    num_tasks = affinity.shape[0]
    if num_tasks > MAX_TASKS:
        raise ValueError(f"affinity has {num_tasks} tasks; select_groups enumerates the 2^T candidate groups "
                         f"and supports at most {MAX_TASKS}")
    if not isinstance(max_groups, (int, np.integer)) or isinstance(max_groups, bool) or max_groups < 1:
        raise ValueError(f"max_groups must be an integer >= 1, got {max_groups!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "auto":
        method = "exhaustive" if num_tasks <= min(exhaustive_limit, MAX_EXHAUSTIVE_TASKS) else "greedy"
    if method == "exhaustive" and num_tasks > MAX_EXHAUSTIVE_TASKS:
        raise ValueError(f"method='exhaustive' supports at most {MAX_EXHAUSTIVE_TASKS} tasks, got {num_tasks}; "
                         f"use 'greedy'")
    values = group_values(affinity)
    tolerance = 1e-9 * (1.0 + np.abs(affinity).max()) * num_tasks
    search = _exhaustive if method == "exhaustive" else _greedy
    return _grouping(search(values, min(int(max_groups), num_tasks), tolerance), values, method)


def _candidate_order(num_tasks: int) -> np.ndarray:
    """Non-empty group bitmasks, fewest members first (the tie-break towards smaller groups)."""
    masks = np.arange(1, 2 ** num_tasks)
    sizes = np.array([bin(m).count("1") for m in masks])
    return masks[np.lexsort((masks, sizes))]


def _exhaustive(values: np.ndarray, max_groups: int, tolerance: float) -> list[int]:
    num_tasks = values.shape[1]
    full = 2 ** num_tasks - 1
    order = _candidate_order(num_tasks)
    ordered_values = np.where(np.isfinite(values[order]), values[order], 0.0)
    # Best group (and its value) to serve exactly the tasks of each served set.
    served_value = np.full(full + 1, -np.inf)
    server = np.zeros(full + 1, np.int64)
    for served in range(1, full + 1):
        tasks = [t for t in range(num_tasks) if served >> t & 1]
        supersets = (order & served) == served
        totals = np.where(supersets, ordered_values[:, tasks].sum(axis=1), -np.inf)
        best = int(np.argmax(totals >= totals.max() - tolerance))  # first within tolerance: smallest group
        served_value[served], server[served] = totals[best], order[best]
    # best[j][mask]: the tasks of `mask` served by at most j + 1 networks; split[j][mask]: the served set
    # holding the lowest task of `mask` (0: the same as with one network fewer).
    best = [served_value.copy()]
    split = [np.zeros(full + 1, np.int64)]
    for _ in range(1, max_groups):
        previous, current, chosen = best[-1], best[-1].copy(), np.zeros(full + 1, np.int64)
        for mask in range(1, full + 1):
            lowest = mask & -mask
            rest = mask ^ lowest
            sub = rest
            while sub:  # served sets = lowest task + a non-empty proper part of the rest
                served = lowest | (rest ^ sub)
                total = served_value[served] + previous[mask ^ served]
                if total > current[mask] + tolerance:
                    current[mask], chosen[mask] = total, served
                sub = (sub - 1) & rest
        best.append(current)
        split.append(chosen)
    groups, mask, level = [], full, max_groups - 1
    while mask:
        while level > 0 and split[level][mask] == 0:
            level -= 1
        served = split[level][mask] if level > 0 else mask
        groups.append(int(server[served]))
        mask ^= served
        level -= 1
    return groups


def _greedy(values: np.ndarray, max_groups: int, tolerance: float) -> list[int]:
    num_tasks = values.shape[1]
    full = 2 ** num_tasks - 1
    order = _candidate_order(num_tasks)
    candidate_values = values[order]
    groups = [full]
    while len(groups) < max_groups:
        served = values[groups].max(axis=0)
        gains = np.maximum(candidate_values - served, 0.0).sum(axis=1)
        if gains.max() <= tolerance:
            break
        groups.append(int(order[np.argmax(gains)]))
    while True:  # single swaps, best first, while one improves the score and every task stays served
        score = values[groups].max(axis=0).sum()
        best_gain, best_swap = tolerance, None
        for index in range(len(groups)):
            others = groups[:index] + groups[index + 1:]
            served = values[others].max(axis=0) if others else np.full(num_tasks, -np.inf)
            covered = np.bitwise_or.reduce(others) if others else 0
            totals = np.maximum(candidate_values, served).sum(axis=1)
            totals = np.where((order | covered) == full, totals, -np.inf)
            candidate = int(np.argmax(totals))
            if totals[candidate] - score > best_gain:
                best_gain, best_swap = totals[candidate] - score, (index, int(order[candidate]))
        if best_swap is None:
            return groups
        groups[best_swap[0]] = best_swap[1]


def _grouping(masks: list[int], values: np.ndarray, method: str) -> Grouping:
    """Each task served by its best chosen group (first on ties); groups serving no task dropped."""
    num_tasks = values.shape[1]
    masks = sorted(set(masks), key=lambda m: [t for t in range(num_tasks) if m >> t & 1])
    serving = np.argmax(values[masks], axis=0)
    used = sorted(set(serving.tolist()))
    groups = tuple(tuple(t for t in range(num_tasks) if masks[i] >> t & 1) for i in used)
    served_by = tuple(used.index(i) for i in serving.tolist())
    score = float(sum(values[masks[serving[t]], t] for t in range(num_tasks)))
    return Grouping(groups, served_by, score, method)
