"""Allocates a label budget and writes the allocation file.

    python launch/allocate.py --config=configs/allocate.py --out=/tmp/allocation.npz --config.budget=500
"""
from absl import flags
from ml_collections import config_flags

from taba_jax import cli, config as cfg, taba, train_job
from taba_jax.budget import BudgetProblem, allocate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Allocation config file.", lock_config=True)
_OUT = flags.DEFINE_string("out", None, "Where to write the allocation (.npz).")
flags.mark_flags_as_required(["config", "out"])


def main(argv):
    del argv
    config = cfg.parse(cfg.AllocateJobConfig, _CONFIG.value)
    train_job.check_output_file(_OUT.value, "--out")
    problem = BudgetProblem(config.tasks, config.costs, config.num_images, config.budget)
    if config.strategy == "taba":
        allocation, information = taba.run(problem, None, config.taba, None, config.seed, workdir="")
        print(information)
    else:
        allocation = allocate(problem, config.strategy, seed=config.seed)
    allocation.save(_OUT.value)
    print(allocation.summary())
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    cli.run(main)
