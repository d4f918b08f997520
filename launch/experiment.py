"""Runs every strategy x budget x seed of one setting, then writes report.md and plots.

    python launch/experiment.py --config=configs/experiment.py:geometry,quick --workdir=/tmp/taba_geometry

Re-running the same command skips finished runs (results.jsonl), so a killed experiment resumes.
"""
from absl import app, flags, logging
from ml_collections import config_flags

from taba_jax import experiment

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "results.jsonl, report.md, plots, runs/, reference/.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar per training run.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint at INFO
    records = experiment.run(_CONFIG.value, _WORKDIR.value, progress=_PROGRESS.value)
    print(f"{len(records)} runs of setting {_CONFIG.value.setting!r}; report: {_WORKDIR.value}/report.md")


if __name__ == "__main__":
    app.run(main)
