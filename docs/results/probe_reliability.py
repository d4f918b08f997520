# python docs/results/probe_reliability.py measure <setting> <workdir> [repeats [smallest|middle|largest]]  (6–11 min a repeat on one core; resumes)
# python docs/results/probe_reliability.py [<workdir>]  (prints markdown from docs/results/probe_reliability/, seconds)
"""How reliable is one transfer probe (`taba.probe_transfer`), and what would make it readable?

At a `full` budget of each setting (the middle one unless asked), one allocation stands in for a
round's (equal_budget at half the budget: the exploration round spends the pilot plus half the rest
that way). For each
training seed (a repeat: initialisation, data order and which labels a cut keeps all change, as they
do between TABA runs), the whole-set model and the probe's T cut models are trained at f = 1/2 (the
variant run) and f = 1/4 (a larger step, so twice the signal against the same training noise), and
S is read from the primary-metric errors (as TABA does) and from the validation losses the refit's
curves are fitted to (the probe keeps both).

Test-retest: per signal and f, the intraclass correlation ICC(1) over the repeats of the
off-diagonal elasticities b[s, t] and of S as TABA reads it (`taba.readable_affinity`, clipped to
[0, 1]): the share of the entries' variance that is theirs rather than the training seed's, per
setting and over the settings' entries together, and by Spearman-Brown the number of repeats
averaged that would reach an ICC of 0.8. A probe TABA can read needs a high ICC; one probe a run
showed per-seed Spearman +0.09 to +0.28 against the runs' implied S (probe_analysis.py). Validity:
the Spearman correlation of one repeat's S, and of the mean of k repeats', with the S the exported
runs of the same cell imply (at the cell's own budget, so at about twice the probe's label counts).
"""
import importlib.util
import itertools
import json
import os
import sys

import numpy as np
from scipy import stats

import transfer_analysis  # the same directory, on the path when run as a script
from taba_jax import config as cfg, io_utils, taba, train_job, transfer
from taba_jax.budget import BudgetProblem, allocate

HERE = os.path.dirname(os.path.abspath(__file__))
EXPORTED = os.path.join(HERE, "probe_reliability")
FRACTIONS = (0.5, 0.25)
SIGNALS = ("error", "loss")
TARGET_RELIABILITY = 0.8
POSITIONS = ("smallest", "middle", "largest")  # a setting's `full` budgets, sorted


def experiment_config(setting: str) -> cfg.ExperimentConfig:
    spec = importlib.util.spec_from_file_location("experiment_configs", os.path.join(HERE, "..", "..", "configs",
                                                                                        "experiment.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return cfg.parse(cfg.ExperimentConfig, module.get_config(f"{setting},full"))


def measure(setting: str, workdir: str, repeats: int, position: str = "middle") -> None:
    """Trains what is missing for `repeats` seeds at the setting's `position` budget; one JSON per
    seed in `workdir`."""
    config = experiment_config(setting)
    dataset = train_job.load_dataset(config, workdir)
    budget = sorted(config.budgets)[POSITIONS.index(position)]
    problem = BudgetProblem(config.tasks, config.costs, len(dataset.train), budget / 2)
    allocation = allocate(problem, "equal_budget", seed=0)
    for seed in range(repeats):
        name = f"{setting}_b{budget:g}_seed{seed}"
        path = os.path.join(workdir, f"{name}.json")
        if os.path.exists(path):
            continue
        run_dir = os.path.join(workdir, name)
        # the whole-set model, trained and read as TABA's round reads its own (`taba.validation_curves`)
        (losses,), (errors,) = taba.validation_curves(dataset, dataset.task_specs(config.tasks),
                                                      [allocation.labeled_sets()], config.train, seed,
                                                      [os.path.join(run_dir, "whole")], [], False)
        record = {"setting": setting, "budget": budget, "position": position, "seed": seed, "tasks": list(config.tasks),
                  "labels": allocation.labels.sum(axis=0).tolist(), "losses": losses.tolist(),
                  "errors": errors.tolist(), "cuts": {}}
        for fraction in FRACTIONS:
            probe_config = cfg.TabaConfig(rounds=2, transfer_probe=fraction)
            cut_labels, cut_losses, cut_errors = taba.probe_transfer(dataset, allocation, probe_config, config.train,
                                                                     seed, os.path.join(run_dir, f"f{fraction:g}"))
            record["cuts"][f"{fraction:g}"] = {"labels": cut_labels.tolist(), "losses": cut_losses.tolist(),
                                               "errors": cut_errors.tolist()}
        io_utils.write_json(path, record)
        print(f"{setting} seed {seed} done", flush=True)


def probe_elasticity(record: dict, fraction: str, signal: str) -> np.ndarray:
    """b (T, T) of one repeat from one cut fraction's models (`taba.probe_elasticity`). (A least-squares
    slope over the whole set and both cuts would be the 1/4 cut's alone: equally spaced in log n, the
    middle point has no leverage.)"""
    values = "errors" if signal == "error" else "losses"
    cut = record["cuts"][fraction]
    return taba.probe_elasticity(record["labels"], record[values], cut["labels"], cut[values])


def probe_reading(record: dict, fraction: str, signal: str) -> tuple[np.ndarray, np.ndarray]:
    """(elasticities b, S as TABA reads them: `taba.readable_affinity`) of one repeat, both (T, T)."""
    elasticity = probe_elasticity(record, fraction, signal)
    return elasticity, taba.readable_affinity(elasticity, record["labels"])


def off_diagonal(matrix: np.ndarray) -> np.ndarray:
    return matrix[~np.eye(len(matrix), dtype=bool)]


def intraclass(values: np.ndarray) -> float:
    """ICC(1) of `values` (repeats, entries): the share of an entry's variance over repeats that is
    the entries' own (one-way random effects); columns with a NaN left out."""
    values = values[:, np.isfinite(values).all(axis=0)]
    repeats = len(values)
    between = repeats * values.mean(axis=0).var(ddof=1)
    within = values.var(axis=0, ddof=1).mean()
    return float((between - within) / (between + (repeats - 1) * within))


def intraclass_interval(values: np.ndarray, resamples: int = 2000) -> tuple[float, float]:
    """95 % percentile interval of `intraclass` over the entries (columns) resampled with replacement."""
    values = values[:, np.isfinite(values).all(axis=0)]
    generator = np.random.default_rng(0)
    draws = [intraclass(values[:, generator.integers(0, values.shape[1], values.shape[1])]) for _ in range(resamples)]
    return tuple(np.nanpercentile(draws, [2.5, 97.5]))


def repeats_needed(reliability: float) -> float:
    """Spearman-Brown: how many repeats averaged reach TARGET_RELIABILITY from one repeat's."""
    if not reliability > 0:
        return np.inf
    return TARGET_RELIABILITY * (1 - reliability) / (reliability * (1 - TARGET_RELIABILITY))


def readings(records: list[dict], fraction: str, signal: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Over the repeats (rows): own elasticities (R, T), off-diagonal b and clipped S (R, T(T-1))."""
    read = [probe_reading(r, fraction, signal) for r in sorted(records, key=lambda r: r["seed"])]
    return (np.array([np.diag(b) for b, _ in read]), np.array([off_diagonal(b) for b, _ in read]),
            np.array([off_diagonal(s) for _, s in read]))


def report(folder: str) -> None:
    records = [json.load(open(os.path.join(folder, name))) for name in sorted(os.listdir(folder))
               if name.endswith(".json")]
    for position in POSITIONS:
        chosen = [r for r in records if r["position"] == position]
        if chosen:
            print(f"\n## at each setting's {position} `full` budget\n")
            report_cells(chosen)


def report_cells(records: list[dict]) -> None:
    """The tables for one budget position: per setting, pooled over the settings, and validity."""
    settings = sorted({r["setting"] for r in records})
    repeats = min(sum(r["setting"] == s for r in records) for s in settings)
    records = [r for r in records if r["seed"] < repeats]  # the same repeats in every setting
    print("| setting | budget | repeats | cut to | signal | own elasticity b[t, t], mean ± sd over repeats "
          "| ICC of b[s, t] | ICC of S |")
    print("|---|---:|---:|---:|---|---|---:|---:|")
    pooled = {}
    for setting in settings:
        mine = [r for r in records if r["setting"] == setting]
        for fraction, signal in itertools.product(map("{:g}".format, FRACTIONS), SIGNALS):
            own, b, s = readings(mine, fraction, signal)
            elasticities, affinities = pooled.setdefault((fraction, signal), ([], []))
            elasticities.append(b)
            affinities.append(s)
            owns = ", ".join(f"{t} {m:+.2f} ± {d:.2f}" for t, m, d in
                             zip(mine[0]["tasks"], own.mean(axis=0), own.std(axis=0, ddof=1)))
            print(f"| {setting} | {mine[0]['budget']:g} | {len(mine)} | {fraction} | {signal} | {owns} "
                  f"| {intraclass(b):+.2f} | {intraclass(s):+.2f} |")
    print(f"\nover the {len(settings)} settings' off-diagonal entries together: ICC of one probe, and the "
          f"repeats averaged that Spearman-Brown asks for an ICC of {TARGET_RELIABILITY}:\n")
    print("| cut to | signal | entries | ICC of b [95 % over entries] | repeats | ICC of S [95 %] | repeats |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for (fraction, signal), (b, s) in pooled.items():
        b, s = np.concatenate(b, axis=1), np.concatenate(s, axis=1)
        cells = [f"{intraclass(v):+.2f} [{low:+.2f}, {high:+.2f}] | {repeats_needed(intraclass(v)):.1f}"
                 for v in (b, s) for low, high in [intraclass_interval(v)]]
        print(f"| {fraction} | {signal} | {b.shape[1]} | {cells[0]} | {cells[1]} |")
    print("\nvalidity: Spearman ρ of the probe's S with the S implied by the exported runs of the same cell:\n")
    validity(records)


def validity(records: list[dict]) -> None:
    """Spearman rho of the probe's S, one repeat's or the mean of k, with the S the exported runs of
    the same cell imply (`transfer.measure_transfer`, docs/results/transfer_analysis.py), over the
    pairs whose runs resolve the target's own elasticity."""
    by_cell = {}
    for record in records:
        by_cell.setdefault((record["setting"], record["budget"]), []).append(record)
    for fraction, signal in itertools.product(map("{:g}".format, FRACTIONS), SIGNALS):
        probed, implied = [], []  # per pair: the repeats' S; the runs' S
        for (setting, budget), mine in sorted(by_cell.items()):
            runs = transfer.measure_transfer(transfer_analysis.load(setting), budget).implied_affinity()
            read = np.array([probe_reading(r, fraction, signal)[1] for r in sorted(mine, key=lambda r: r["seed"])])
            resolved = np.isfinite(runs) & ~np.eye(len(runs), dtype=bool)
            probed.extend(read[:, resolved].T)
            implied.extend(runs[resolved])
        probed = np.array(probed)
        line = [f"mean of {k}: {stats.spearmanr(probed[:, :k].mean(axis=1), implied)[0]:+.2f}"
                for k in range(2, probed.shape[1] + 1)]
        one = [stats.spearmanr(probed[:, k], implied)[0] for k in range(probed.shape[1])]
        print(f"- cut to {fraction}, {signal} ({len(implied)} pairs): one repeat median {np.median(one):+.2f} "
              f"[{min(one):+.2f}, {max(one):+.2f}]; " + ", ".join(line))


def main(argv):
    if len(argv) > 1 and argv[1] == "measure":
        position = argv[5] if len(argv) > 5 else "middle"
        if position not in POSITIONS:
            sys.exit(f"error: budget position must be one of {', '.join(POSITIONS)}, got {position!r}")
        measure(argv[2], argv[3], int(argv[4]) if len(argv) > 4 else 3, position)
    else:
        report(argv[1] if len(argv) > 1 else EXPORTED)


if __name__ == "__main__":
    main(sys.argv)
