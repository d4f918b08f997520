"""Allocates a label budget and writes the allocation file.

    python launch/allocate.py --config=configs/allocate.py --out=/tmp/allocation.npz --config.budget=500
"""
from absl import app, flags
from ml_collections import config_flags

from taba_jax.budget import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Allocation config file.", lock_config=True)
_OUT = flags.DEFINE_string("out", None, "Where to write the allocation (.npz).")
flags.mark_flags_as_required(["config", "out"])


def main(argv):
    del argv
    allocation = cli.allocate_from_config(_CONFIG.value)
    allocation.save(_OUT.value)
    print(allocation.summary())
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
