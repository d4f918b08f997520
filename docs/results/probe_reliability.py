# python docs/results/probe_reliability.py measure <setting> <workdir> [repeats]  (≈ 25 min a setting on 2 cores; resumes)
# python docs/results/probe_reliability.py  (prints markdown from docs/results/probe_reliability/, seconds)
"""How reliable is one transfer probe (`taba.probe_transfer`), and what would make it readable?

At the middle `full` budget of each setting, one allocation stands in for a round's (equal_budget at
half the budget: the exploration round spends the pilot plus half the rest that way). For each
training seed (a repeat: initialisation, data order and which labels a cut keeps all change, as they
do between TABA runs), the whole-set model and the probe's T cut models are trained at f = 1/2 (the
variant run) and f = 1/4 (a larger step, so twice the signal against the same training noise), and
S is read from the primary-metric errors and from the validation losses (`transfer_probe_signal`).

Test-retest: per signal and f, the Pearson and Spearman correlations of the unclipped off-diagonal S
(and of the elasticities b[s, t]) between every two repeats, their mean over the repeat pairs and
settings, and by Spearman-Brown the number of repeats averaged that would reach a reliability of 0.8.
A probe TABA can read needs a high test-retest correlation; its one-seed probe showed per-seed
Spearman +0.10 to +0.28 against the runs' implied S (probe_analysis.py).
"""
import importlib.util
import itertools
import json
import os
import sys

import numpy as np
from scipy import stats

from taba_jax import config as cfg, io_utils, taba, train, train_job
from taba_jax.budget import BudgetProblem, allocate

HERE = os.path.dirname(os.path.abspath(__file__))
EXPORTED = os.path.join(HERE, "probe_reliability")
FRACTIONS = (0.5, 0.25)
SIGNALS = ("error", "loss")
TARGET_RELIABILITY = 0.8


def experiment_config(setting: str) -> cfg.ExperimentConfig:
    spec = importlib.util.spec_from_file_location("experiment_configs", os.path.join(HERE, "..", "..", "configs",
                                                                                        "experiment.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return cfg.parse(cfg.ExperimentConfig, module.get_config(f"{setting},full"))


def whole_set_values(dataset, allocation, train_config, seed: int, directory: str) -> tuple[list, list]:
    """Validation losses and primary-metric errors of the model trained on all of `allocation`."""
    tasks = dataset.task_specs(allocation.problem.task_names)
    trainer = train.Trainer(dataset, allocation.labeled_sets(), train_config, directory, seed,
                            tasks=[t.name for t in tasks])
    params = trainer.train(progress=False).params
    metrics = train.evaluate(trainer.model, params, tasks, dataset.splits["validation"], train_config.eval_batch_size,
                             with_loss=True, input_workers=train_config.input_workers)
    return [metrics[t.name]["loss"] for t in tasks], [taba.primary_error(metrics[t.name]) for t in tasks]


def measure(setting: str, workdir: str, repeats: int) -> None:
    """Trains what is missing for `repeats` seeds; one JSON per seed in `workdir`."""
    config = experiment_config(setting)
    dataset = train_job.load_dataset(config, workdir)
    budget = sorted(config.budgets)[len(config.budgets) // 2]
    problem = BudgetProblem(config.tasks, config.costs, len(dataset.train), budget / 2)
    allocation = allocate(problem, "equal_budget", seed=0)
    for seed in range(repeats):
        path = os.path.join(workdir, f"{setting}_seed{seed}.json")
        if os.path.exists(path):
            continue
        run_dir = os.path.join(workdir, f"{setting}_seed{seed}")
        losses, errors = whole_set_values(dataset, allocation, config.train, seed, os.path.join(run_dir, "whole"))
        record = {"setting": setting, "budget": budget, "seed": seed, "tasks": list(config.tasks),
                  "labels": allocation.labels.sum(axis=0).tolist(), "losses": losses, "errors": errors, "cuts": {}}
        for fraction in FRACTIONS:
            probe_config = cfg.TabaConfig(rounds=2, transfer_probe=fraction)
            cut_labels, cut_losses, cut_errors = taba.probe_transfer(dataset, allocation, probe_config, config.train,
                                                                     seed, os.path.join(run_dir, f"f{fraction:g}"))
            record["cuts"][f"{fraction:g}"] = {"labels": cut_labels.tolist(), "losses": cut_losses.tolist(),
                                               "errors": cut_errors.tolist()}
        io_utils.write_json(path, record)
        print(f"{setting} seed {seed} done", flush=True)


def probe_reading(record: dict, fraction: str, signal: str) -> tuple[np.ndarray, np.ndarray]:
    """(elasticities b, unclipped S) of one repeat, both (T, T)."""
    cut = record["cuts"][fraction]
    whole, cut_values = (record["errors"], cut["errors"]) if signal == "error" else (record["losses"], cut["losses"])
    elasticity = taba.probe_elasticity(record["labels"], whole, cut["labels"], cut_values)
    own = np.diag(elasticity)
    return elasticity, taba.affinity_from_elasticity(elasticity, record["labels"], np.isfinite(own) & (own < 0))


def off_diagonal(matrix: np.ndarray) -> np.ndarray:
    return matrix[~np.eye(len(matrix), dtype=bool)]


def test_retest(records: list[dict], fraction: str, signal: str, quantity: int) -> dict:
    """Mean Pearson and Spearman correlation of one quantity (0: b, 1: S) over every two repeats."""
    pearson, spearman = [], []
    for first, second in itertools.combinations(records, 2):
        a = off_diagonal(probe_reading(first, fraction, signal)[quantity])
        b = off_diagonal(probe_reading(second, fraction, signal)[quantity])
        both = np.isfinite(a) & np.isfinite(b)
        if both.sum() >= 3:
            pearson.append(stats.pearsonr(a[both], b[both])[0])
            spearman.append(stats.spearmanr(a[both], b[both])[0])
    return {"pearson": float(np.mean(pearson)) if pearson else np.nan,
            "spearman": float(np.mean(spearman)) if spearman else np.nan, "pairs": len(pearson)}


def repeats_needed(reliability: float) -> float:
    """Spearman-Brown: how many repeats averaged reach TARGET_RELIABILITY from one repeat's."""
    if not reliability > 0:
        return np.inf
    return TARGET_RELIABILITY * (1 - reliability) / (reliability * (1 - TARGET_RELIABILITY))


def report(folder: str) -> None:
    records = [json.load(open(os.path.join(folder, name))) for name in sorted(os.listdir(folder))
               if name.endswith(".json")]
    settings = sorted({r["setting"] for r in records})
    print("| setting | budget | repeats | f | signal | own elasticities b[t, t] (mean ± sd over repeats) "
          "| test-retest r of b (Pearson / Spearman) | of S | repeats for r = 0.8 (S, Pearson) |")
    print("|---|---:|---:|---:|---|---|---:|---:|---:|")
    pooled = {}
    for setting in settings:
        mine = [r for r in records if r["setting"] == setting]
        for fraction, signal in itertools.product(map("{:g}".format, FRACTIONS), SIGNALS):
            own = np.array([np.diag(probe_reading(r, fraction, signal)[0]) for r in mine])
            b = test_retest(mine, fraction, signal, 0)
            s = test_retest(mine, fraction, signal, 1)
            pooled.setdefault((fraction, signal), []).append(s["pearson"])
            owns = ", ".join(f"{t} {m:+.2f} ± {d:.2f}" for t, m, d in
                             zip(mine[0]["tasks"], own.mean(axis=0), own.std(axis=0, ddof=1)))
            print(f"| {setting} | {mine[0]['budget']:g} | {len(mine)} | {fraction} | {signal} | {owns} "
                  f"| {b['pearson']:+.2f} / {b['spearman']:+.2f} | {s['pearson']:+.2f} / {s['spearman']:+.2f} "
                  f"| {repeats_needed(s['pearson']):.1f} |")
    print("\nmean test-retest Pearson r of S over settings, and the repeats Spearman-Brown asks for r = 0.8:")
    for (fraction, signal), values in pooled.items():
        mean = float(np.nanmean(values))
        print(f"- f = {fraction}, {signal}: r = {mean:+.2f}, repeats {repeats_needed(mean):.1f}")


def main(argv):
    if len(argv) > 1 and argv[1] == "measure":
        measure(argv[2], argv[3], int(argv[4]) if len(argv) > 4 else 3)
    else:
        report(EXPORTED)


if __name__ == "__main__":
    main(sys.argv)
