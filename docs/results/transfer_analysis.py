# python docs/results/transfer_analysis.py  (from the repository root; prints markdown, a few seconds)
"""How much do one task's labels move another task's metric, measured on the `full` runs, and does
the affinity S that TABA's pilot measures say the same?

Every exported `full` run of a setting (docs/results/full_* and confirm_*: heuristics, TABA variants
and the oracle's grid points, seeds 0-27) at one budget is a point (labels per task, metric per
task). Per budget and target task t, a least-squares fit with one intercept per seed (same
initialisation and data order):

    log e_t = a_seed + sum_s b[s -> t] log n_s

with e_t the primary metric's error (1 - metric where higher is better) and n_s task s's labels, so
b[s -> t] is the elasticity of t's error in s's labels — negative where s's labels help t. Intervals
are 95 %, from standard errors clustered by seed (runs of a seed share more than their intercept).
The allocations vary together (a budget moves money between tasks), so these are partial effects
within the mix of allocations the sweeps ran, not a controlled experiment.

S[s, t] claims that a task-s label on an image gives task t the share S[s, t] of the information of
a task-t label (METHOD: u[n, t] = 1 - prod_s (1 - S[s, t]) ** A[n, s]), so per label, not per log
label, the two derivatives of t's error are in the ratio S[s, t]: the measured counterpart is
b[s -> t] / b[t -> t] * n_t / n_s (the "implied S", with each task's geometric-mean label count in
the cell). It is set beside the mean S of the no_transfer pilots at that budget wherever t's own
elasticity is resolved (its interval below 0). Where s's labels sit on images already labeled for
t (shared images) METHOD gives them no transfer at all, so on allocations with shared images the
implied S understates what S means.
"""
import collections
import os

import numpy as np
from scipy import stats

from taba_jax import experiment

ROOT = os.path.dirname(os.path.abspath(__file__))
SETTINGS = ("tag", "weak", "geometry")
PILOT_STRATEGY = "taba:explore_floor_refit_floor_no_transfer"  # whose records carry the pilot's S


def load(setting):
    return [r for kind in ("full", "confirm") for r in experiment.read_records(os.path.join(ROOT, f"{kind}_{setting}"))
            if r.setting == setting]


def error(record, task):
    metric = record.metrics[task]
    return 1.0 - metric["primary"] if metric["higher_is_better"] else metric["primary"]


def clustered_fit(design, target, clusters):
    """Least-squares coefficients and their cluster-robust (CR1) standard errors and t quantile."""
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    residual = target - design @ coef
    bread = np.linalg.pinv(design.T @ design)
    groups = np.unique(clusters)
    meat = sum(np.outer(design[clusters == g].T @ residual[clusters == g], design[clusters == g].T @ residual[clusters == g])
               for g in groups)
    n, k = design.shape
    correction = len(groups) / (len(groups) - 1) * (n - 1) / (n - k)
    se = np.sqrt(np.diag(correction * bread @ meat @ bread))
    return coef, se, stats.t.ppf(0.975, len(groups) - 1)


def elasticities(records, tasks):
    """(b, half-width of its interval) as (T, T) arrays indexed [source, target], each task's
    geometric-mean label count, and the numbers of runs and seeds."""
    runs = [r for r in records if all(r.labels[t] > 0 for t in tasks)]
    seeds = sorted({r.seed for r in runs})
    design = np.array([[np.log(r.labels[t]) for t in tasks] + [float(r.seed == s) for s in seeds] for r in runs])
    clusters = np.array([r.seed for r in runs])
    b, half = np.zeros((len(tasks), len(tasks))), np.zeros((len(tasks), len(tasks)))
    for target, task in enumerate(tasks):
        coef, se, quantile = clustered_fit(design, np.log([max(error(r, task), 1e-6) for r in runs]), clusters)
        b[:, target], half[:, target] = coef[:len(tasks)], quantile * se[:len(tasks)]
    counts = np.exp(np.log([[r.labels[t] for t in tasks] for r in runs]).mean(0))
    return b, half, counts, len(runs), len(seeds)


def main():
    pairs = []  # (pilots' S, implied S, resolved sign) over every compared (setting, budget, s, t)
    for setting in SETTINGS:
        records = load(setting)
        tasks = records[0].tasks
        for budget in sorted({r.budget for r in records}):
            cell = [r for r in records if r.budget == budget]
            b, half, counts, runs, seeds = elasticities(cell, tasks)
            pilots = [np.array(r.taba["affinity"]) for r in cell if r.strategy == PILOT_STRATEGY and r.taba]
            affinity = np.mean(pilots, axis=0) if pilots else None
            print(f"\n**{setting} {budget:.0f}** ({runs} runs, {seeds} seeds; geometric-mean labels "
                  + ", ".join(f"{t} {n:.0f}" for t, n in zip(tasks, counts)) + "; rows: labels of, columns: error of)\n")
            print("| labels of | " + " | ".join(tasks) + " |")
            print("|---|" + "---:|" * len(tasks))
            for s, source in enumerate(tasks):
                cells = []
                for t in range(len(tasks)):
                    text = f"{b[s, t]:+.3f} ± {half[s, t]:.3f}"
                    resolved_own = b[t, t] + half[t, t] < 0
                    if s != t and affinity is not None and resolved_own:
                        implied = b[s, t] / b[t, t] * counts[t] / counts[s]
                        text += f" (implied S {implied:+.2f}, pilots' {affinity[s, t]:.2f})"
                        sign = 0 if abs(b[s, t]) < half[s, t] else int(np.sign(-b[s, t]))
                        pairs.append((affinity[s, t], implied, sign))
                    cells.append(text)
                print(f"| {source} | " + " | ".join(cells) + " |")
    s_values, relative, signs = (np.array(v) for v in zip(*pairs))
    rho, p = stats.spearmanr(s_values, relative)
    counts = collections.Counter(signs.tolist())
    print(f"\nOver the {len(pairs)} off-diagonal pairs whose target's own elasticity is resolved: Spearman ρ between "
          f"the pilots' S and the implied S {rho:+.2f} (p {p:.3f}); measured transfer real and "
          f"helping in {counts[1]}, real and hurting in {counts[-1]}, not resolved in {counts[0]}; "
          f"S ≥ 0.1 in {int((s_values >= 0.1).sum())} pairs, of which {int(((s_values >= 0.1) & (signs == 1)).sum())} "
          f"measured helping and {int(((s_values >= 0.1) & (signs == -1)).sum())} hurting.")


if __name__ == "__main__":
    main()
