"""Allocates a label budget and writes the allocation file.

    python launch/allocate.py --config=configs/allocate.py --out=/tmp/allocation.npz --config.budget=500

With `--config.dataset=` (synthetic, taskonomy, ... as in launch/train.py) the pool is that
dataset's train split: TABA runs its pilot and estimation there (in --workdir) unless its
information model is given, and a TFDS pool's image ids are written with the allocation
(`Allocation.labeled_id_sets()`: the images to have labelled, per task).
"""
import contextlib
import os
import tempfile

from absl import flags
from ml_collections import config_flags

from taba_jax import cli, config as cfg, taba, train_job
from taba_jax.budget import BudgetProblem, allocate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Allocation config file.", lock_config=True)
_OUT = flags.DEFINE_string("out", None, "Where to write the allocation (.npz).")
_WORKDIR = flags.DEFINE_string("workdir", None, "With a dataset: TABA's pilot and the built TFDS dataset "
                               "(unless config.data_dir) go here; default: a temporary folder, deleted after.")
flags.mark_flags_as_required(["config", "out"])


def main(argv):
    del argv
    config = cfg.parse(cfg.AllocateJobConfig, _CONFIG.value)
    train_job.check_output_file(_OUT.value, "--out")
    if config.dataset == cfg.NO_DATASET:
        allocate_and_save(config, BudgetProblem(config.tasks, config.costs, config.num_images, config.budget))
        return
    train_job.check_tasks(config)
    with (contextlib.nullcontext(_WORKDIR.value) if _WORKDIR.value else
          tempfile.TemporaryDirectory(prefix="taba_allocate_")) as workdir:
        train_job.make_workdir(workdir)
        dataset = train_job.load_dataset(config, workdir)
        allocate_and_save(config, BudgetProblem(config.tasks, config.costs, len(dataset.train), config.budget),
                          dataset, workdir)


def allocate_and_save(config, problem, dataset=None, workdir=""):
    """The strategy's allocation of `problem` (TABA estimating on `dataset` unless its model is
    given), with the pool's image ids where it has them, written to --out."""
    if config.strategy == "taba":
        allocation, information = taba.run(problem, dataset, config.taba, config.train, config.seed,
                                           workdir=os.path.join(workdir, "taba") if workdir else "")
        print(information)
    else:
        allocation = allocate(problem, config.strategy, seed=config.seed)
    if dataset is not None:
        allocation = train_job.with_ids(allocation, dataset.train)
    allocation.save(_OUT.value)
    print(allocation.summary())
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    cli.run(main)
