# python launch/allocate.py --config=configs/allocate.py --out=/tmp/allocation.npz
"""Allocate a label budget over a pool of images with known TABA parameters (no images needed).

Segmentation is priced 10/3 of the other tasks. `--config.strategy=equal_budget` (or any other
strategy) ignores the TABA fields; TABA's own estimation needs images: use launch/train.py.
"""
from taba_jax import config as cfg


def get_config():
    return cfg.to_config_dict(cfg.AllocateJobConfig(
        tasks=("segment", "depth", "normal", "edge"),
        costs=(10.0, 3.0, 3.0, 3.0),
        num_images=10_000,
        budget=30_000.0,
        strategy="taba",
        taba=cfg.TabaConfig(
            affinity=((1.0, 0.5, 0.5, 0.3), (0.5, 1.0, 0.7, 0.3), (0.5, 0.7, 1.0, 0.3), (0.3, 0.3, 0.3, 1.0)),
            gamma=(0.5,),  # one value for all tasks, or one per task
            kappa=(100.0,),
        ),
    ))
