# python docs/results/weak_recipe_analysis.py  (from the repository root; prints markdown)
"""`weak` under two recipes on the same seeds: the default (equal task weights, docs/results/confirm_weak)
and uncertainty weighting (docs/results/weak_uncertainty), to see whether the second makes texture's
head learn steadily enough for the strategies' paired differences to resolve.

Per budget: in how many runs texture was learned (test error below 0.8x the mean predictor's), the
references' texture error, each strategy's Delta_m, and the TABA variants' paired differences against
equal_budget (the heuristic fixed before these seeds ran) and against the best heuristic of the cell
in hindsight where that is another one; then the mean over the three budgets per seed. Delta_m is against each recipe's own
full-supervision references, so absolute Delta_m is not comparable between recipes; the metrics of
equal_budget's runs (the same allocations under both recipes) are.
"""
import collections
import json
import os

import numpy as np

from confirm_analysis import interval, texture_learned  # the same directory, on the path when run as a script
from taba_jax import experiment

ROOT = os.path.dirname(os.path.abspath(__file__))
RECIPES = {"default": "confirm_weak", "uncertainty": "weak_uncertainty"}
SEEDS = (10, 11, 12, 13, 20, 21, 22, 23)
BUDGETS = (1000, 3000, 8000)
HEURISTICS = ("equal_budget", "equal_count_shared", "equal_count_disjoint", "random_pairs")
NO_TRANSFER = "taba:explore_floor_refit_floor_no_transfer"
VARIANTS = (NO_TRANSFER, NO_TRANSFER + "_delta_m_half_local", NO_TRANSFER + "_delta_m_last_doubling")


def load(folder):
    """(budget, seed) -> strategy -> record, on SEEDS."""
    cells = collections.defaultdict(dict)
    for r in experiment.read_records(os.path.join(ROOT, folder)):
        if r.seed in SEEDS:
            cells[int(r.budget), r.seed][r.strategy] = r
    return cells


def reference_texture(folder):
    with open(os.path.join(ROOT, folder, "references.json")) as f:
        references = json.load(f)
    return [references[f"seed{s}"]["metrics"]["texture"]["primary"] for s in SEEDS]


def best_heuristic(cells, budget):
    """The heuristic with the best mean Delta_m over SEEDS at `budget` (None if any seed lacks one)."""
    means = {h: np.mean([cells[budget, s][h].delta_m for s in SEEDS]) for h in HEURISTICS
             if all(h in cells[budget, s] for s in SEEDS)}
    return max(means, key=means.get) if means else None


def recipe_tables(name, folder):
    cells = load(folder)
    print(f"## Recipe `{name}` ({folder}; seeds {', '.join(map(str, SEEDS))})\n")
    print(f"References' texture error: {', '.join(f'{v:.3f}' for v in reference_texture(folder))}\n")
    print("| budget | strategy | Δm mean ± std | texture learned | − equal_budget | − best heuristic |")
    print("|---:|---|---:|---:|---:|---:|")
    per_seed = collections.defaultdict(lambda: collections.defaultdict(list))  # (variant, role) -> seed -> diffs
    for budget in BUDGETS:
        if not all((budget, s) in cells for s in SEEDS):
            continue
        best = best_heuristic(cells, budget)
        strategies = [k for k in HEURISTICS + VARIANTS if all(k in cells[budget, s] for s in SEEDS)]
        for k in strategies:
            runs = [cells[budget, s][k] for s in SEEDS]
            values = [r.delta_m for r in runs]
            learned = sum(texture_learned(r) for r in runs)
            against = {}
            roles = [("equal_budget", "equal_budget")] + ([("best heuristic", best)] if best != "equal_budget" else [])
            for role, other in roles:
                if k in VARIANTS and other is not None:
                    diffs = [cells[budget, s][k].delta_m - cells[budget, s][other].delta_m for s in SEEDS]
                    against[role] = interval(diffs)
                    for s, d in zip(SEEDS, diffs):
                        per_seed[k, role][s].append(d)
            label = f"{k} (best)" if k == best else k
            print(f"| {budget} | {label} | {np.mean(values):.2f} ± {np.std(values, ddof=1):.2f} | {learned}/{len(runs)} "
                  f"| {against.get('equal_budget', '')} | {against.get('best heuristic', '')} |")
    print()
    for (variant, role), seeds in sorted(per_seed.items()):
        if all(len(v) == len(BUDGETS) for v in seeds.values()):
            print(f"- mean over the three budgets, {variant} − {role}: {interval([np.mean(v) for v in seeds.values()])}")
    print()
    return cells


def same_allocations(by_recipe):
    """equal_budget's metrics under each recipe: the allocations are the same, so these compare."""
    print("## equal_budget's test metrics under each recipe (same allocations, same seeds)\n")
    print("| budget | recipe | segment mIoU | depth abs. error | texture abs. error | texture learned |")
    print("|---:|---|---:|---:|---:|---:|")
    for budget in BUDGETS:
        for name, cells in by_recipe.items():
            runs = [cells[budget, s]["equal_budget"] for s in SEEDS if "equal_budget" in cells.get((budget, s), {})]
            if len(runs) < len(SEEDS):
                continue
            metric = {t: np.mean([r.metrics[t]["primary"] for r in runs]) for t in ("segment", "depth", "texture")}
            print(f"| {budget} | {name} | {metric['segment']:.3f} | {metric['depth']:.3f} | {metric['texture']:.3f} "
                  f"| {sum(texture_learned(r) for r in runs)}/{len(runs)} |")
    print()


def main():
    by_recipe = {name: recipe_tables(name, folder) for name, folder in RECIPES.items()
                 if os.path.isdir(os.path.join(ROOT, folder))}
    same_allocations(by_recipe)


if __name__ == "__main__":
    main()
