# python docs/results/probe_analysis.py [averaged]  (from the repository root; prints markdown, a few seconds)
"""TABA with transfer probed at the refit (`transfer_probe`) against the half mix it extends.

The two variants share the pilot, the exploration round and its refit trainings at every (budget,
seed); the probed one also trains one model per task with that task's labels halved and replaces S by
the transfer those models measure (`taba.probed_affinity`), with the default cap of one own label's
worth (the half mix gives no credit at all). Per cell: the paired Delta_m differences against the half
mix and the pre-registered heuristic (docs/results/confirm_*), the labels each bought, and the probed
S of the pairs beside the pilots' lookahead S and the S implied by all the exported runs of the cell
(docs/results/transfer_analysis.py).

With `averaged`: the same for the variant whose probe cuts to a quarter and averages S over four
probes with their own training seeds (`transfer_probe_repeats`), also against the single probe.
"""
import collections
import sys

import numpy as np
from scipy import stats

import transfer_analysis  # the same directory, on the path when run as a script
from confirm_analysis import BUDGETS, CONFIRMATION, by_seed, differences, heuristic, interval, load, mean_over_cells
from taba_jax import transfer

SINGLE, AVERAGED = transfer_analysis.LATER  # the variants read here; transfer_analysis leaves them out
HALF_MIX = CONFIRMATION["variant"]


def main(argv):
    probed_variant = AVERAGED if argv[1:] == ["averaged"] else SINGLE
    confirm = {s: [r for r in load("confirm", s) if r.seed in transfer_analysis.SEEDS] for s in BUDGETS}
    cells = [(s, b) for s, budgets in BUDGETS.items() for b in budgets]
    others = {"half mix": HALF_MIX, **({"single probe": SINGLE} if probed_variant == AVERAGED else {})}
    versus = {name: {} for name in (*others, "heuristic")}
    print(f"| setting | budget | seeds | probed Δm | {' | '.join(f'− {name}' for name in versus)} "
          "| labels (probed / half mix) |")
    print(f"|---|---:|---|---:|{'---:|' * len(versus)}---|")
    for setting, budget in cells:
        compared = {**others, "heuristic": heuristic(setting, budget)}
        runs = by_seed(confirm[setting], budget, (probed_variant, *compared.values()))
        if not runs:
            continue
        for name, other in compared.items():
            versus[name][setting, budget] = differences(confirm[setting], budget, probed_variant, other)
        seeds = sorted(runs)
        probed = [r[probed_variant].delta_m for r in runs.values()]
        tasks = runs[seeds[0]][probed_variant].tasks
        labels = ", ".join(f"{t} {np.mean([r[probed_variant].labels[t] for r in runs.values()]):.0f} / "
                           f"{np.mean([r[HALF_MIX].labels[t] for r in runs.values()]):.0f}" for t in tasks)
        paired = " | ".join(interval([versus[name][setting, budget][s] for s in seeds]) for name in versus)
        print(f"| {setting} | {budget} | {seeds[0]}–{seeds[-1]} ({len(seeds)}) | {np.mean(probed):.2f} "
              f"| {paired} | {labels} |")
    for name, per_cell in versus.items():
        for label, chosen in (("all", BUDGETS), ("tag and geometry", CONFIRMATION["settings"])):
            diffs = [d for (setting, _), d in per_cell.items() if setting in chosen]
            if diffs:
                seeds, mean = mean_over_cells(diffs)
                print(f"\nmean over {label} {len(diffs)} cells, probed − {name}, seeds {seeds}: {mean}")

    print("\nprobed S (mean over seeds, [min, max]) against the pilots' S and the S implied by all exported runs "
          "(— where the target's own elasticity is not resolved):\n")
    print("| cell | labels of → error of | probed S | pilots' S | implied S (runs) |")
    print("|---|---|---:|---:|---:|")
    probed_all, pilots_all, implied_all = [], [], []
    per_seed = collections.defaultdict(list)  # seed -> [(its probed S, implied S)]: what one run's greedy read
    single_per_seed = collections.defaultdict(list)  # the same for the single probe, on the same cells and seeds
    for setting, budget in cells:
        records = [r for r in confirm[setting] if r.budget == budget and r.strategy == probed_variant and r.taba]
        if not records:
            continue
        single = {r.seed: np.array(r.taba["affinity"]) for r in confirm[setting] if probed_variant != SINGLE
                  and r.budget == budget and r.strategy == SINGLE and r.taba}
        tasks = records[0].tasks
        probed = np.array([r.taba["affinity"] for r in records])
        seeds = [r.seed for r in records]
        pilots = np.mean([r.taba["affinity"] for r in confirm[setting]
                          if r.budget == budget and r.strategy == transfer_analysis.PILOT_STRATEGY and r.taba], axis=0)
        implied = transfer.measure_transfer(transfer_analysis.load(setting), budget).implied_affinity()
        for s, source in enumerate(tasks):
            for t, target in enumerate(tasks):
                if s == t:
                    continue
                values = probed[:, s, t]
                if np.isfinite(implied[s, t]):
                    probed_all.append(values.mean())
                    pilots_all.append(pilots[s, t])
                    implied_all.append(implied[s, t])
                    for seed, value in zip(seeds, values):
                        per_seed[seed].append((value, implied[s, t]))
                        if seed in single:
                            single_per_seed[seed].append((single[seed][s, t], implied[s, t]))
                if values.max() == 0 and not (np.isfinite(implied[s, t]) and abs(implied[s, t]) >= 0.1):
                    continue  # nothing probed and nothing measured: left out of the table
                print(f"| {setting} {budget} | {source} → {target} | {values.mean():.2f} [{values.min():.2f}, "
                      f"{values.max():.2f}] | {pilots[s, t]:.2f} | "
                      + (f"{implied[s, t]:+.2f}" if np.isfinite(implied[s, t]) else "—") + " |")
    if len(probed_all) > 2:
        print(f"\nover the {len(probed_all)} pairs whose runs resolve the target's own elasticity, Spearman ρ with the "
              "implied S: " + "; ".join(f"{name} {rho:+.2f} (p {p:.3f})" for name, (rho, p) in (
                  ("mean probed S", stats.spearmanr(probed_all, implied_all)),
                  ("pilots' S", stats.spearmanr(pilots_all, implied_all)))))
        for name, pairs_of in (("", per_seed), (" (the single probe on the same cells and seeds)", single_per_seed)):
            rhos = [stats.spearmanr(*zip(*pairs))[0] for seed, pairs in sorted(pairs_of.items()) if len(pairs) > 2]
            if rhos:
                print(f"one seed's probed S (what its greedy read){name}, Spearman ρ with the implied S per seed: "
                      f"median {np.median(rhos):+.2f}, range [{min(rhos):+.2f}, {max(rhos):+.2f}] over "
                      f"{len(rhos)} seeds")


if __name__ == "__main__":
    main(sys.argv)
