"""Test metrics of the default recipe against labels per task, beside each task's trivial baseline.

    python benchmarks/learning_curves.py --settings=geometry,tag,weak \
        --labels=25,50,100,200,400,800,0 --seeds=0,1,2 --out=docs/recipes/learning_curves.jsonl

For every setting (a task list from configs/experiment.py, or `all` for every synthetic task),
number of labels and seed: labels the same N random train images for every task of the setting
(N = 0: the whole pool, i.e. full supervision; the subsets are nested in N and drawn per seed),
trains with `taba_jax.train.train_and_evaluate` (per-task batching, the default `TrainConfig` plus
any `--set` overrides) and evaluates on the test split. Prints each task's primary metric, its
trivial baseline on the same test split (`TaskSpec.baseline_metrics`) and their ratio, and appends
one JSON line per run to `--out` with the wall and CPU seconds of the run and the 1-minute load
average before it (the machine may be shared).

`--generator_revision=REV` renders the scenes with `taba_jax/data/synthetic.py` as of git revision
REV instead (before/after comparisons of the generator). `--summarize=PATH` prints the runs of a
JSON-lines file as Markdown tables (mean and range over seeds) and trains nothing.
"""
import argparse
import collections
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
import types

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from configs.experiment import SETTINGS  # noqa: E402
from taba_jax import io_utils  # noqa: E402
from taba_jax.config import TrainConfig  # noqa: E402
from taba_jax.data import synthetic  # noqa: E402
from taba_jax.data.dataset import MultiTaskDataset  # noqa: E402
from taba_jax.train import train_and_evaluate  # noqa: E402

RECIPE_FIELDS = ("num_steps", "batch_size", "learning_rate", "warmup_steps", "weight_decay", "widths", "blocks")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", default="geometry,tag,weak",
                        help=f"Comma-separated: {', '.join(SETTINGS)} or all (every synthetic task).")
    parser.add_argument("--labels", default="25,50,100,200,400,800,0",
                        help="Labeled images per task, comma-separated; 0 = the whole pool.")
    parser.add_argument("--seeds", default="0,1", help="Training seeds, comma-separated.")
    parser.add_argument("--num_images", type=int, default=1500, help="Images generated (80 %% train pool).")
    parser.add_argument("--image_size", type=int, default=16)
    parser.add_argument("--data_seed", type=int, default=0)
    parser.add_argument("--out", default="", help="Append one JSON line per run here.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="Override a TrainConfig field, e.g. --set num_steps=500 (widths: --set widths=8,16).")
    parser.add_argument("--generator_revision", default="", help="Git revision of the scene generator to use.")
    parser.add_argument("--summarize", default="", help="Print this JSON-lines file as tables and stop.")
    return parser.parse_args(argv)


def generator_at(revision: str):
    """taba_jax/data/synthetic.py as of git `revision`, as a module."""
    source = subprocess.check_output(["git", "show", f"{revision}:taba_jax/data/synthetic.py"], cwd=ROOT, text=True)
    module = types.ModuleType(f"synthetic_at_{revision}")
    exec(compile(source, f"{revision}:taba_jax/data/synthetic.py", "exec"), module.__dict__)  # noqa: S102
    return module


def recipe(overrides) -> TrainConfig:
    """The default TrainConfig with `KEY=VALUE` overrides, typed like the field's default."""
    config = TrainConfig()
    changes = {}
    for item in overrides:
        key, value = item.split("=", 1)
        default = getattr(config, key)
        changes[key] = tuple(type(default[0])(v) for v in value.split(",")) if isinstance(default, tuple) \
            else type(default)(value)
    changes["checkpoint_every"] = changes["log_every"] = changes.get("num_steps", config.num_steps)
    return dataclasses.replace(config, **changes)


def setting_tasks(setting: str) -> list[str]:
    return list(synthetic.TASK_NAMES) if setting == "all" else list(SETTINGS[setting]["tasks"])


def shared_labels(task_names, pool_size: int, labels: int, seed: int) -> dict[str, np.ndarray]:
    """Every task labeled on the same `labels` images (all if 0): a prefix of a seeded permutation,
    so that larger label sets contain the smaller ones."""
    count = labels or pool_size
    if count > pool_size:
        raise ValueError(f"{count} labels per task, but the pool has {pool_size} images")
    chosen = np.sort(np.random.default_rng(seed).permutation(pool_size)[:count])
    return {name: chosen for name in task_names}


def summarize(path: str) -> None:
    """Markdown tables: per setting, each task's metric (mean [min, max] over seeds) per label count."""
    runs = collections.defaultdict(list)
    for record in io_utils.read_jsonl(path):
        runs[record["setting"], record["labels_per_task"]].append(record)
    for setting in dict.fromkeys(s for s, _ in runs):
        rows = sorted((n, records) for (s, n), records in runs.items() if s == setting)
        tasks = rows[0][1][0]["tasks"]
        print(f"\n{setting}: primary metric, mean [min, max] over seeds; baseline on the test split in the header")
        print("| labels per task | seeds | " + " | ".join(
            f"{t} ({rows[0][1][0]['baselines'][t]:.3g})" for t in tasks) + " | wall s |")
        print("|---" * (len(tasks) + 3) + "|")
        for labels, records in rows:
            cells = []
            for task in tasks:
                values = np.array([r["metrics"][task] for r in records])
                cells.append(f"{values.mean():.3g} [{values.min():.3g}, {values.max():.3g}]")
            walls = [r["wall_seconds"] for r in records]
            print(f"| {labels} | {len(records)} | " + " | ".join(cells) + f" | {min(walls):.0f}-{max(walls):.0f} |")


def main(argv=None):
    args = parse_args(argv)
    if args.summarize:
        summarize(args.summarize)
        return
    generator = generator_at(args.generator_revision) if args.generator_revision else synthetic
    config = recipe(args.set)
    for setting in args.settings.split(","):
        tasks = setting_tasks(setting)
        images, targets = generator.generate(args.num_images, args.image_size, seed=args.data_seed)
        dataset = MultiTaskDataset.from_arrays(images, targets, synthetic.task_specs(),
                                               seed=args.data_seed).select_tasks(tasks)
        first_run = True  # later runs of the setting reuse its compiled step
        for labels in [int(n) for n in args.labels.split(",")]:
            for seed in [int(s) for s in args.seeds.split(",")]:
                labeled = shared_labels(tasks, len(dataset.train), labels, seed)
                start, cpu_start, load = time.perf_counter(), time.process_time(), os.getloadavg()[0]
                with tempfile.TemporaryDirectory() as workdir:
                    results = train_and_evaluate(dataset, labeled, config, workdir, seed=seed, progress=False)
                wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
                includes_compilation, first_run = first_run, False
                metrics = {name: results["metrics"][name]["primary"] for name in tasks}
                baselines = {name: results["metrics"][name]["baseline"] for name in tasks}
                count = len(labeled[tasks[0]])
                print(f"{setting} labels={count} seed={seed}: wall {wall:.1f} s, cpu {cpu:.1f} s, load {load:.1f}",
                      flush=True)
                for name in tasks:
                    print(f"  {name:9s} {metrics[name]:8.4f}  baseline {baselines[name]:8.4f}  "
                          f"ratio {metrics[name] / baselines[name]:6.3f}", flush=True)
                if args.out:
                    io_utils.append_jsonl(args.out, {
                        "setting": setting, "tasks": tasks, "generator_revision": args.generator_revision,
                        "generator_version": getattr(generator, "GENERATOR_VERSION", None),
                        "labels_per_task": count, "pool": len(dataset.train), "seed": seed,
                        "data_seed": args.data_seed, "image_size": args.image_size, "num_images": args.num_images,
                        "recipe": {k: getattr(config, k) for k in RECIPE_FIELDS},
                        "metrics": metrics, "baselines": baselines,
                        "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
                        "load_average": round(load, 2), "includes_compilation": includes_compilation})


if __name__ == "__main__":
    main()
