"""Runs every strategy x budget x seed of one setting, then writes report.md and plots.

    python launch/experiment.py --config=configs/experiment.py:geometry,quick --workdir=/tmp/taba_geometry

Re-running the same command skips finished runs (results.jsonl), so a killed experiment resumes.
Runs execute in this process (default), in `--config.workers` local processes, or as Ray tasks
(`--config.executor=ray [--config.ray_address=auto] [--config.gpus_per_run=1]`); failed runs are
retried `--config.max_retries` times, then listed in failures.jsonl.
"""
from absl import flags

from taba_jax import cli, config as cfg, distributed, experiment

_CONFIG, _WORKDIR, _DISTRIBUTED = cli.define_job_flags(
    "Experiment config file.", "results.jsonl, report.md, plots, runs/, reference/.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar per training run.")


def main(argv):
    del argv
    config = cfg.parse(cfg.ExperimentConfig, _CONFIG.value)
    distributed.initialize_from_flags(_DISTRIBUTED)  # every run trained across the job's processes
    records = experiment.run(config, _WORKDIR.value, progress=_PROGRESS.value)
    if distributed.is_lead():
        print(f"{len(records)} runs of setting {config.setting!r}; report: {_WORKDIR.value}/report.md")


if __name__ == "__main__":
    cli.run(main)
