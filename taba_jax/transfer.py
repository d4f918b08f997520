"""Transfer between tasks measured on a sweep's runs: how one task's labels move another's error.

TABA's pilot estimates transfer before any label is bought (the lookahead affinity S). A sweep holds,
per budget and seed, many allocations that differ in how many labels each task got, so afterwards
the same question can be asked of the trained models themselves. Per budget and target task t:

    log e_t = a_seed + sum_s b[s, t] log n_s        (least squares over the runs)

with e_t the primary metric's error on the test split (1 - metric where higher is better), n_s task
s's labels and one intercept per seed (every run of a seed shares its initialisation and data
order). b[s, t] is the elasticity of t's error in s's labels: negative where s's labels help t,
positive where they hurt it. Intervals are 95 %, with standard errors clustered by seed.

These are partial effects within the allocations the sweep ran: a budget moves money between tasks
together, so they are only as good as the spread of allocations (heuristics, TABA variants and the
oracle's grid give one). The "implied affinity" turns them into METHOD's unit: a task-s label gives
task t the share S[s, t] of a task-t label, so per label the two derivatives of log e_t are in the
ratio S[s, t], i.e. S[s, t] = b[s, t] / b[t, t] * n_t / n_s at the cell's geometric-mean label
counts. METHOD gives an s label on an image already labelled for t nothing, so on allocations with
shared images the implied affinity understates the S that would describe them.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats

from taba_jax.records import ExperimentRecord
from taba_jax.taba import affinity_from_elasticity, primary_error


@dataclasses.dataclass(frozen=True)
class MeasuredTransfer:
    """Label elasticities of one budget's runs; (T, T) arrays are indexed [source s, target t]."""

    tasks: tuple[str, ...]
    elasticity: np.ndarray  # b[s, t] = d log error_t / d log labels_s
    half_width: np.ndarray  # of the 95 % interval (seed-clustered standard errors)
    labels: np.ndarray  # (T,) geometric-mean label count per task over the runs
    runs: int
    seeds: int

    @property
    def resolved(self) -> np.ndarray:
        """(T, T) bool: the interval excludes 0."""
        return np.abs(self.elasticity) > self.half_width

    def implied_affinity(self) -> np.ndarray:
        """(T, T) S[s, t] = b[s, t] / b[t, t] * n_t / n_s (negative: s's labels hurt t), 1 on the
        diagonal, NaN in every column whose own elasticity is not resolved below 0 (no unit to
        measure transfer in)."""
        return affinity_from_elasticity(self.elasticity, self.labels,
                                        np.diag(self.elasticity) + np.diag(self.half_width) < 0)


def clustered_least_squares(design: np.ndarray, target: np.ndarray, clusters: np.ndarray):
    """Least-squares coefficients, their cluster-robust (CR1) standard errors and the degrees of
    freedom (clusters - 1) of their t intervals."""
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    residual = target - design @ coef
    bread = np.linalg.pinv(design.T @ design)
    groups = np.unique(clusters)
    scores = np.array([design[clusters == g].T @ residual[clusters == g] for g in groups])
    n, k = design.shape
    correction = len(groups) / (len(groups) - 1) * (n - 1) / (n - k)
    return coef, np.sqrt(np.diag(correction * bread @ (scores.T @ scores) @ bread)), len(groups) - 1


def measure_transfer(records: list[ExperimentRecord], budget: float) -> MeasuredTransfer | None:
    """The label elasticities of the runs at `budget` that labelled every task and have a finite
    primary metric for each. None where they cannot be identified: fewer than two tasks or three seeds, label
    counts that do not vary independently of the seeds (a sweep of equal_budget alone), or no
    residual degrees of freedom."""
    runs = [r for r in records if float(r.budget) == float(budget)]
    if not runs:
        return None
    tasks = runs[0].tasks
    runs = [r for r in runs if all(r.labels.get(t, 0) > 0 and np.isfinite(r.metrics.get(t, {}).get("primary", np.nan))
                                   for t in tasks)]
    seeds = sorted({r.seed for r in runs})
    if len(tasks) < 2 or len(seeds) < 3:
        return None
    log_labels = np.log([[r.labels[t] for t in tasks] for r in runs])
    design = np.column_stack([log_labels, [[float(r.seed == s) for s in seeds] for r in runs]])
    if len(runs) <= design.shape[1] or np.linalg.matrix_rank(design) < design.shape[1]:
        return None
    clusters = np.array([r.seed for r in runs])
    elasticity, half = np.zeros((len(tasks),) * 2), np.zeros((len(tasks),) * 2)
    for t, task in enumerate(tasks):
        errors = [max(primary_error(r.metrics[task]), 1e-6) for r in runs]  # floored for the log, as TABA's refit
        coef, se, dof = clustered_least_squares(design, np.log(errors), clusters)
        elasticity[:, t], half[:, t] = coef[:len(tasks)], stats.t.ppf(0.975, dof) * se[:len(tasks)]
    return MeasuredTransfer(tuple(tasks), elasticity, half, np.exp(log_labels.mean(0)), len(runs), len(seeds))
