# python docs/recipes/texture_init_lottery.py  (from the repository root; about 1 min on 2 cores)
"""Is `weak`'s texture lottery decided at initialisation? For every seed of the exported `weak`
sweeps (docs/results/full_weak, confirm_weak), how well a ridge regression reads texture off the
pooled features of the *initial* network (every strategy of a seed starts from the same one),
against the fraction of that seed's runs whose texture head learned (test error below 0.8x the
mean predictor's), per budget, with Spearman's rank correlation.
"""
import collections
import os

import numpy as np
from scipy import stats

from taba_jax import experiment
from taba_jax.budget import BudgetProblem, allocate
from taba_jax.config import TrainConfig
from taba_jax.data import synthetic
from taba_jax.models.hard_sharing import ImageHead
from taba_jax.train import Trainer
from texture_feature_probe import COSTS, NUM_IMAGES, RIDGE, TASKS, module_values  # same directory
from texture_linear_probe import ridge_error

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "results")
SWEEPS = ("full_weak", "confirm_weak")
LEARNED = 0.8


def learned_fractions():
    """(seed, budget) -> fraction of the runs whose texture head learned."""
    learned = collections.defaultdict(list)
    for sweep in SWEEPS:
        for record in experiment.read_records(os.path.join(RESULTS, sweep)):  # each run once
            texture = record.metrics["texture"]
            learned[record.seed, int(record.budget)].append(texture["primary"] < LEARNED * texture["baseline"])
    return {key: (float(np.mean(v)), len(v)) for key, v in learned.items()}


def initial_readability(seed, dataset):
    """Test error of a ridge on the initial network's pooled features, fitted with every train label."""
    problem = BudgetProblem(TASKS, COSTS, len(dataset.train), 1000.0)
    trainer = Trainer(dataset, allocate(problem, "equal_budget", seed=seed).labeled_sets(), TrainConfig(),
                      "/nonexistent-unused", seed)  # only its model and initial state are used
    params = trainer.init_state().params

    def pooled(images):
        return module_values(trainer.model, params, images, lambda m: "input" if isinstance(m, ImageHead) else None)[0]

    test = dataset.splits["test"]
    return ridge_error(pooled(dataset.train.images), dataset.train.targets["texture"][:, 0],
                       pooled(test.images), test.targets["texture"][:, 0], RIDGE)


def main():
    fractions = learned_fractions()
    seeds = sorted({seed for seed, _ in fractions})
    dataset = synthetic.synthetic_dataset(NUM_IMAGES, 16, 0, tasks=TASKS)
    readability = {seed: initial_readability(seed, dataset) for seed in seeds}
    print("| budget | seeds | runs per seed | Spearman ρ (initial ridge error vs learned fraction) | p |")
    print("|---:|---:|---:|---:|---:|")
    for budget in sorted({b for _, b in fractions}):
        common = [s for s in seeds if (s, budget) in fractions]
        rho, p = stats.spearmanr([readability[s] for s in common], [fractions[s, budget][0] for s in common])
        counts = [fractions[s, budget][1] for s in common]
        print(f"| {budget} | {len(common)} | {min(counts)}–{max(counts)} | {rho:+.2f} | {p:.3f} |")
    print("\nseed: initial ridge error, learned fraction at each budget")
    for seed in sorted(seeds, key=readability.get):
        print(f"- {seed}: {readability[seed]:.3f} | " + ", ".join(
            f"{b} {fractions[seed, b][0]:.2f}" for b in sorted({b for _, b in fractions}) if (seed, b) in fractions))


if __name__ == "__main__":
    main()
