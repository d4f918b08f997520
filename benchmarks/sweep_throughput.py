"""Runs per hour of one small sweep under different splits of the CPU into worker processes.

    python benchmarks/sweep_throughput.py [--splits=in_process,1x2,2x1,ray:2x1] [--runs=8] [--steps=100]

Each split runs the same sweep (equal_budget and random_pairs at several budgets, one seed, the
full-supervision reference excluded) in a fresh workdir: `in_process` is the runner's default (this
process, every core), `WxT` is W worker processes with T XLA intra-op threads each. Printed side by
side in one run: wall seconds, runs per hour, and the ratio to the first split.
"""
import dataclasses
import tempfile
import time

from absl import flags

from taba_jax import config as cfg
from taba_jax import cli, executors, experiment

_SPLITS = flags.DEFINE_list("splits", ["in_process", "1x2", "2x1", "ray:2x1"],
                            "in_process, WORKERSxTHREADS (local processes) or ray:WORKERSxTHREADS (a local Ray).")
_RUNS = flags.DEFINE_integer("runs", 8, "Runs per sweep (two strategies x runs/2 budgets).")
_STEPS = flags.DEFINE_integer("steps", 100, "Training steps per run.")


def sweep_config(runs: int, steps: int) -> cfg.ExperimentConfig:
    budgets = tuple(400.0 + 200.0 * i for i in range(runs // 2))
    return cfg.ExperimentConfig(
        setting="sweep", tasks=("segment", "depth", "normal", "edge"), costs=(10.0, 3.0, 3.0, 3.0), budgets=budgets,
        strategies=("equal_budget", "random_pairs"), seeds=(0,), num_images=1500, image_size=16,
        train=cfg.TrainConfig(widths=(8, 16, 32), num_steps=steps, batch_size=16, checkpoint_every=steps,
                              log_every=steps))


def executor_for(split: str) -> executors.Executor:
    if split == "in_process":
        return executors.InProcess()
    kind, _, split = split.rpartition(":")
    workers, threads = (int(x) for x in split.split("x"))
    if kind == "ray":
        return executors.make_executor("ray", workers, threads, cpus_per_run=threads)
    return executors.WorkerProcesses(workers, threads)


def main(argv):
    del argv
    config = sweep_config(_RUNS.value, _STEPS.value)
    print(f"{len(experiment.plan(config))} runs of {_STEPS.value} steps (batch 16 per task, 4 tasks, 16x16)")
    print(f"{'split':>12} {'seconds':>9} {'runs/hour':>10} {'vs first':>9}")
    first = None
    for split in _SPLITS.value:
        with tempfile.TemporaryDirectory() as workdir:
            # The references are trained first (not timed): the sweep's runs are what is compared.
            experiment.run(dataclasses.replace(config, strategies=("equal_budget",), budgets=config.budgets[:1]),
                           workdir, progress=False)
            start = time.perf_counter()
            experiment.run(config, workdir, progress=False, executor=executor_for(split))
            seconds = time.perf_counter() - start
        rate = (len(experiment.plan(config)) - 1) * 3600 / seconds  # the one run done above is skipped
        first = first or rate
        print(f"{split:>12} {seconds:>9.1f} {rate:>10.1f} {rate / first:>9.2f}", flush=True)


if __name__ == "__main__":
    cli.run(main)  # absl app, orbax's per-checkpoint INFO lines off unless --verbosity
