"""Trains and evaluates a multi-task model on the labels of an allocation.

    python launch/train.py --config=configs/synthetic.py --workdir=/tmp/taba_synthetic \
        [--config.allocation=/tmp/allocation.npz] [--config.reference=DIR/results.json]
"""
import jax
from absl import app, flags, logging
from ml_collections import config_flags

from taba_jax import pipeline

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics.jsonl, TensorBoard, results.json.")
_MULTIPROCESS = flags.DEFINE_bool("multiprocess", False, "Call jax.distributed.initialize() (multi-host).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint at INFO
    if _MULTIPROCESS.value:
        jax.distributed.initialize()
    results = pipeline.run(_CONFIG.value, _WORKDIR.value)
    for task, metrics in results["metrics"].items():
        print(f"{task:>10}: {metrics['primary_metric']} = {metrics['primary']:.4f}")
    if "delta_m" in results:
        print(f"Delta_m = {results['delta_m']:+.2f} %")


if __name__ == "__main__":
    app.run(main)
