"""Trains and evaluates a multi-task model on the labels of an allocation.

    python launch/train.py --config=configs/synthetic.py --workdir=/tmp/taba_synthetic \
        [--config.allocation=/tmp/allocation.npz] [--config.reference=DIR/results.json]
"""
import jax
from absl import flags
from ml_collections import config_flags

from taba_jax import cli, config as cfg, train_job

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics.jsonl, TensorBoard, results.json.")
_MULTIPROCESS = flags.DEFINE_bool("multiprocess", False, "Call jax.distributed.initialize() (multi-host).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    config = cfg.parse(cfg.TrainJobConfig, _CONFIG.value)
    if _MULTIPROCESS.value:
        jax.distributed.initialize()
    results = train_job.run(config, _WORKDIR.value)
    print(train_job.metrics_table(results["metrics"]))
    if "delta_m" in results:
        print(f"Delta_m = {results['delta_m']:+.2f} %")
    print(f"wrote {_WORKDIR.value}/results.json")


if __name__ == "__main__":
    cli.run(main)
