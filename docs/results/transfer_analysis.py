# python docs/results/transfer_analysis.py  (from the repository root; prints markdown, a few seconds)
"""How much do one task's labels move another task's metric, measured on the `full` runs, and does
the affinity S that TABA's pilot measures say the same?

Every exported `full` run of a setting (docs/results/full_* and confirm_*: heuristics, TABA variants
and the oracle's grid points, seeds 0-27) at one budget enters `taba_jax.transfer.measure_transfer`
(log error on log labels, one intercept per seed, seed-clustered 95 % intervals; see its module
docstring for the implied affinity). Each resolved target column's implied affinity is set beside
the mean S of the no_transfer pilots at that budget, and over every such pair the two are compared.
"""
import collections
import os

import numpy as np
from scipy import stats

from taba_jax import experiment, transfer

ROOT = os.path.dirname(os.path.abspath(__file__))
SETTINGS = ("tag", "weak", "geometry")
PILOT_STRATEGY = "taba:explore_floor_refit_floor_no_transfer"  # whose records carry the pilot's S
# run after this analysis with an S of its own (docs/results/probe_analysis.py): left out, so that the
# implied S that variant's S is compared with is measured on other runs
LATER = ("taba:explore_floor_refit_floor_probed_transfer_delta_m_half_local",
         "taba:explore_floor_refit_floor_probed_quarter_x4_delta_m_half_local")

# the seeds exported when this analysis was run; the confirmation's extension (28-35) came later
SEEDS = range(28)


def load(setting):
    return [r for kind in ("full", "confirm") for r in experiment.read_records(os.path.join(ROOT, f"{kind}_{setting}"))
            if r.setting == setting and r.strategy not in LATER and r.seed in SEEDS]


def main():
    pairs = []  # (pilots' S, implied S, resolved sign) over every compared (setting, budget, s, t)
    for setting in SETTINGS:
        records = load(setting)
        for budget in sorted({r.budget for r in records}):
            cell = [r for r in records if r.budget == budget]
            measured = transfer.measure_transfer(cell, budget)
            tasks, b, half, implied = measured.tasks, measured.elasticity, measured.half_width, measured.implied_affinity()
            affinity = np.mean([r.taba["affinity"] for r in cell if r.strategy == PILOT_STRATEGY and r.taba], axis=0)
            print(f"\n**{setting} {budget:.0f}** ({measured.runs} runs, {measured.seeds} seeds; geometric-mean labels "
                  + ", ".join(f"{t} {n:.0f}" for t, n in zip(tasks, measured.labels)) + "; rows: labels of, columns: error of)\n")
            print("| labels of | " + " | ".join(tasks) + " |")
            print("|---|" + "---:|" * len(tasks))
            for s, source in enumerate(tasks):
                cells = []
                for t in range(len(tasks)):
                    text = f"{b[s, t]:+.3f} ± {half[s, t]:.3f}"
                    if s != t and np.isfinite(implied[s, t]):
                        text += f" (implied S {implied[s, t]:+.2f}, pilots' {affinity[s, t]:.2f})"
                        sign = int(np.sign(-b[s, t])) if measured.resolved[s, t] else 0
                        pairs.append((affinity[s, t], implied[s, t], sign))
                    cells.append(text)
                print(f"| {source} | " + " | ".join(cells) + " |")
    s_values, implied_values, signs = (np.array(v) for v in zip(*pairs))
    rho, p = stats.spearmanr(s_values, implied_values)
    counts = collections.Counter(signs.tolist())
    print(f"\nOver the {len(pairs)} off-diagonal pairs whose target's own elasticity is resolved: Spearman ρ between "
          f"the pilots' S and the implied S {rho:+.2f} (p {p:.3f}); measured transfer real and helping in {counts[1]}, "
          f"real and hurting in {counts[-1]}, not resolved in {counts[0]}; S ≥ 0.1 in {int((s_values >= 0.1).sum())} "
          f"pairs, of which {int(((s_values >= 0.1) & (signs == 1)).sum())} measured helping and "
          f"{int(((s_values >= 0.1) & (signs == -1)).sum())} hurting.")


if __name__ == "__main__":
    main()
