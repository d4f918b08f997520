"""Every multi-task method under the budget strategies: Delta_m of equal_budget and TABA allocations
for each (architecture, weighting) pair, at one budget of one synthetic setting, side by side.

    python benchmarks/mtl_methods.py --workdir=/tmp/taba/mtl_methods --out=docs/results/mtl_methods

Each pair is one experiment workdir (`launch/experiment.py`'s runner, so a killed run resumes) with
the strategies equal_budget and taba at `--budget`. Every Delta_m is against one common reference:
the full-supervision hard_sharing / equal-weighting model of the same seed (trained by the first
pair and shared by the others), so the numbers are comparable across methods. TABA's information
model is estimated once, not per method: the mean over seeds of the estimates TABA made with
`--estimate_from` (a results.jsonl with TABA records of this setting at this budget), given to
every pair as `config.taba.affinity / gamma / kappa`, so the allocation is the same for all methods.
`--taba_caps=1` adds a column per value: TABA with that cap on transferred information
(`config.taba.transfer_cap`), run as the variant `taba:cap<value>` on the same given estimate, so one
table shows the uncapped and the capped allocation side by side.
`--resume_from=<out>/results.jsonl` seeds each pair's empty workdir with that pair's committed
records, so a lost workdir is rebuilt without re-running them (the references retrain; CPU runs are
deterministic, so their Delta_m is unchanged).
Writes `<out>/README.md` (the table), `<out>/results.jsonl` (every record) and `<out>/timings.json`
(not with --tabulate_only).
"""
import json
import os
import shutil
import time

import jax
import numpy as np
from absl import flags

from taba_jax import cli, config as cfg, experiment, io_utils, report

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/taba/mtl_methods", "One experiment folder per method pair below it.")
_OUT = flags.DEFINE_string("out", None, "Where README.md, results.jsonl and timings.json go.")
_SETTING = flags.DEFINE_string("setting", "tag", "Setting and preset of configs/experiment.py.")
_PRESET = flags.DEFINE_string("preset", "quick", "Preset of configs/experiment.py.")
_BUDGET = flags.DEFINE_float("budget", 1000.0, "The one budget every pair runs at.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
_PAIRS = flags.DEFINE_list(
    "pairs", ["hard_sharing/equal", "hard_sharing/uncertainty", "hard_sharing/dwa", "hard_sharing/gradnorm",
              "hard_sharing/pcgrad", "hard_sharing/cagrad", "hard_sharing/imtl", "mtan/equal", "mtan/dwa",
              "adashare/equal"],
    "architecture/weighting pairs; the first one trains the common reference.")
_ESTIMATE_FROM = flags.DEFINE_string("estimate_from", "docs/results/quick_tag/results.jsonl",
                                     "results.jsonl whose TABA records give the information model.")
_ESTIMATE_STRATEGY = flags.DEFINE_string("estimate_strategy", "taba[rho 0.3]",
                                         "Strategy name of those TABA records.")
_TRANSFER_CAP = flags.DEFINE_string(
    "transfer_cap", "1.0", "TABA's cap on transferred information (config.taba.transfer_cap); 'none' is METHOD.md's "
    "uncapped sum, which the tables in docs/results/mtl_methods* were run with.")
_TABA_CAPS = flags.DEFINE_list("taba_caps", [], "Extra TABA columns, one per transfer_cap value (strategy "
                                "taba:cap<value>), beside the base `taba` of --transfer_cap.")
_RESUME_FROM = flags.DEFINE_string("resume_from", None, "A results.jsonl this benchmark wrote: each pair's workdir "
                                   "without results starts from that pair's records there.")
_TABULATE_ONLY = flags.DEFINE_bool("tabulate_only", False, "Only tabulate the records already in the workdirs "
                                   "(a run not done shows as –); trains nothing.")
_WORKERS = flags.DEFINE_integer("workers", 1, "Runs of a pair in parallel worker processes (config.workers).")
_THREADS = flags.DEFINE_integer("threads_per_worker", 1, "Intra-op threads of each worker (with --workers > 1).")
EXPERIMENT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "experiment.py")


def mean_estimate(path: str, strategy: str, setting: str, budget: float) -> dict:
    """Affinity, gamma and kappa averaged over the seeds of the TABA records at `budget`."""
    records = [r for r in experiment.read_records(os.path.dirname(path))
               if r.strategy == strategy and r.setting == setting and float(r.budget) == budget and r.taba]
    if not records:
        raise SystemExit(f"{path}: no records of strategy {strategy!r} at budget {budget:g} with a TABA estimate")
    mean = lambda key: np.mean([np.asarray(r.taba[key], np.float64) for r in records], axis=0)  # noqa: E731
    return {"affinity": tuple(map(tuple, mean("affinity").round(4).tolist())),
            "gamma": tuple(mean("gamma").round(4).tolist()), "kappa": tuple(mean("kappa").round(2).tolist()),
            "seeds": sorted(r.seed for r in records)}


def cap_variants() -> dict:
    """{variant name: TABA overrides} of --taba_caps, e.g. "1" -> {"cap1": {"transfer_cap": 1.0}}."""
    return {"cap" + f"{float(v):g}".replace(".", ""): {"transfer_cap": float(v)} for v in _TABA_CAPS.value}


def strategies() -> tuple[str, ...]:
    return ("equal_budget", "taba") + tuple(f"taba:{name}" for name in cap_variants())


def seed_workdir(pair: str, workdir: str) -> None:
    """Writes the --resume_from records of `pair` into `workdir`'s results.jsonl if it has none."""
    path = os.path.join(workdir, experiment.RESULTS_FILE)
    if not _RESUME_FROM.value or os.path.exists(path):
        return
    lines = [{k: v for k, v in r.items() if k != "pair"} for r in io_utils.read_jsonl(_RESUME_FROM.value)
             if r.get("pair") == pair]
    os.makedirs(workdir, exist_ok=True)
    for line in lines:
        io_utils.append_jsonl(path, line)


def pair_config(pair: str, estimate: dict) -> cfg.ExperimentConfig:
    model, weighting = pair.split("/")
    config = cli.load_config_file(f"{EXPERIMENT_CONFIG}:{_SETTING.value},{_PRESET.value}")
    config.budgets = (_BUDGET.value,)
    config.strategies = strategies()
    config.taba_variants = {**config.taba_variants.to_dict(), **cap_variants()}
    config.workers, config.threads_per_worker = _WORKERS.value, _THREADS.value
    config.seeds = tuple(int(s) for s in _SEEDS.value)
    config.train.model, config.train.weighting = model, weighting
    config.taba.affinity, config.taba.gamma, config.taba.kappa = estimate["affinity"], estimate["gamma"], estimate["kappa"]
    config.taba.transfer_cap = None if _TRANSFER_CAP.value.lower() == "none" else float(_TRANSFER_CAP.value)
    return cfg.parse(cfg.ExperimentConfig, config)


def run_pairs(estimate: dict) -> tuple[dict, dict]:
    """Runs (or resumes) every pair; returns {pair: records} and {pair: wall seconds of this call}."""
    records, seconds = {}, {}
    reference_dir = os.path.join(_WORKDIR.value, _PAIRS.value[0].replace("/", "-"), "reference")
    for pair in _PAIRS.value:
        workdir = os.path.join(_WORKDIR.value, pair.replace("/", "-"))
        seed_workdir(pair, workdir)
        if _TABULATE_ONLY.value:
            records[pair] = [r for r in experiment.read_records(workdir) if r.setting == _SETTING.value]
            continue
        if pair != _PAIRS.value[0]:  # the common reference: copied, so this pair's runner does not retrain it
            for seed in _SEEDS.value:
                source = os.path.join(reference_dir, f"seed{seed}", "results.json")
                target = os.path.join(workdir, "reference", f"seed{seed}", "results.json")
                if not os.path.exists(target):
                    if not os.path.exists(source):
                        raise SystemExit(f"{source}: the common reference was not trained (pair {_PAIRS.value[0]} "
                                         "had no run left to do); delete that pair's results.jsonl to train it")
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    shutil.copyfile(source, target)
        start = time.perf_counter()
        records[pair] = experiment.run(pair_config(pair, estimate), workdir, progress=False)
        seconds[pair] = time.perf_counter() - start
        print(f"{pair}: {len(records[pair])} runs in {seconds[pair]:.0f} s", flush=True)
        # Every pair compiles its own programs; kept for the whole call they exhausted the process's
        # memory maps after 15 pairs ("LLVM compilation error: Cannot allocate memory", then a crash).
        jax.clear_caches()
    return records, seconds


def summary(values) -> str:
    """mean ± std (ddof 1) over seeds; – where no run is done."""
    if not values:
        return "–"
    return f"{np.mean(values):+.2f} ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else f"{values[0]:+.2f}"


def table(records: dict) -> str:
    """Markdown: per pair, Delta_m of equal_budget and of each TABA strategy, each TABA strategy minus
    equal_budget paired (with the better one where the 95 % interval excludes 0), and the wall time of
    the pair's runs."""
    tabas = strategies()[1:]
    header = ["architecture", "weighting", "equal_budget Δm"]
    for s in tabas:
        header += [f"{s} Δm", f"{s} − equal_budget (paired, 95 %)", "better"]
    lines = ["| " + " | ".join(header + ["run time (s)"]) + " |",
             "|---|---|---:|" + "---:|---:|---|" * len(tabas) + "---:|"]
    for pair, rs in records.items():
        by = {s: [r.delta_m for r in sorted(rs, key=lambda r: r.seed) if r.strategy == s] for s in strategies()}
        cells = [*pair.split("/"), summary(by["equal_budget"])]
        for s in tabas:
            paired = report.paired_difference(rs, s, "equal_budget", _BUDGET.value)
            interval = f"{paired.mean:+.2f} [{paired.low:+.2f}, {paired.high:+.2f}]" if paired else "–"
            better = (s if paired.low > 0 else "equal_budget" if paired.high < 0 else "tie") if paired else "–"
            cells += [summary(by[s]), interval, better]
        lines.append("| " + " | ".join(cells + [f"{sum(r.wall_seconds for r in rs):.0f}"]) + " |")
    return "\n".join(lines)


def main(argv):
    del argv
    estimate = mean_estimate(_ESTIMATE_FROM.value, _ESTIMATE_STRATEGY.value, _SETTING.value, _BUDGET.value)
    print(f"information model (mean of seeds {estimate['seeds']}): {estimate}", flush=True)
    records, timings = run_pairs(estimate)
    text = table(records)
    print(text)
    if _OUT.value:
        os.makedirs(_OUT.value, exist_ok=True)
        with io_utils.atomic_open(os.path.join(_OUT.value, "README.md"), "w") as f:
            f.write(text + "\n")
        with io_utils.atomic_open(os.path.join(_OUT.value, "results.jsonl"), "w") as f:
            for pair, rs in records.items():
                for r in rs:
                    f.write(json.dumps({"pair": pair, **r.to_json()}) + "\n")
        if not _TABULATE_ONLY.value:  # a tabulation times nothing: it keeps the timings of the last run
            with io_utils.atomic_open(os.path.join(_OUT.value, "timings.json"), "w") as f:
                json.dump({"estimate": estimate, "seconds_this_call": timings}, f, indent=1)


if __name__ == "__main__":
    cli.run(main)  # absl app, orbax's per-checkpoint INFO lines off unless --verbosity
