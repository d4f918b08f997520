# python launch/allocate.py --config=configs/allocate.py --out=/tmp/allocation.npz
"""Allocate a label budget over a pool of images.

`configs/allocate.py` (the default, "given"): a pool of `num_images` images and TABA's information
model given here, no images needed. `configs/allocate.py:estimate`: the pool is a dataset's train
split (`--config.dataset=`, the synthetic scenes by default) and TABA buys and trains its pilot there
to estimate the model, as `launch/train.py` would, then allocates (nothing else is trained):

    python launch/allocate.py --config=configs/allocate.py:estimate --out=/tmp/allocation.npz \
        --workdir=/tmp/taba_allocate --config.dataset=taskonomy --config.manual_dir=$HOME/data/taskonomy \
        --config.tasks=segment_semantic,depth_zbuffer,normal,edge_texture

Segmentation is priced 10/3 of the other tasks. `--config.strategy=equal_budget` (or any other
strategy) ignores the TABA fields.
"""
from taba_jax import config as cfg

GIVEN = cfg.TabaConfig(
    affinity=((1.0, 0.5, 0.5, 0.3), (0.5, 1.0, 0.7, 0.3), (0.5, 0.7, 1.0, 0.3), (0.3, 0.3, 0.3, 1.0)),
    gamma=(0.5,),  # one value for all tasks, or one per task
    kappa=(100.0,),
)


def get_config(arg: str = "given"):
    if arg not in ("given", "estimate"):
        raise ValueError(f"configs/allocate.py:<arg>: arg must be 'given' or 'estimate', got {arg!r}")
    estimate = arg == "estimate"
    return cfg.to_config_dict(cfg.AllocateJobConfig(
        tasks=("segment", "depth", "normal", "edge"),
        costs=(10.0, 3.0, 3.0, 3.0),
        dataset="synthetic" if estimate else cfg.NO_DATASET,
        num_images=3000 if estimate else 10_000,
        budget=30_000.0 if not estimate else 3000.0,
        strategy="taba",
        taba=cfg.TabaConfig() if estimate else GIVEN,
    ))
