# python launch/experiment.py --config=configs/experiment.py:geometry,quick --workdir=/tmp/taba_geometry
"""TABA against the heuristics on one synthetic setting: every strategy x budget x seed.

The argument is `<setting>[,<preset>]`: settings below, presets `quick` (the default) and `full`.
Every field (`taba_jax.config.ExperimentConfig`) can be overridden, e.g. `--config.tasks=segment,depth
--config.costs=10,3 --config.budgets=800,2000`, so a new setting needs no code.
"""
from taba_jax import config as cfg

# Budgets are money; labelling every task on every image of the pool costs pool size x sum of costs.
SETTINGS = {
    # dense geometry tasks, segmentation priced 10/3 of the others (the paper author's public setting)
    "geometry": dict(tasks=("segment", "depth", "normal", "edge"), costs=(10.0, 3.0, 3.0, 3.0),
                     quick=(1500.0, 4000.0), full=(1500.0, 4000.0, 10000.0)),
    # a cheap image-level task beside expensive dense ones
    "tag": dict(tasks=("segment", "classify", "depth"), costs=(10.0, 1.0, 3.0),
                quick=(1000.0, 3000.0), full=(1000.0, 3000.0, 8000.0)),
    # a weakly related task (background texture frequency) beside two geometry tasks
    "weak": dict(tasks=("segment", "depth", "texture"), costs=(10.0, 3.0, 3.0),
                 quick=(1000.0, 3000.0), full=(1000.0, 3000.0, 8000.0)),
}
PRESETS = {  # sized for a 2-core CPU; on a GPU raise image_size, widths and num_steps
    "quick": dict(seeds=(0, 1), num_images=1500, image_size=16,
                  train=cfg.TrainConfig(widths=(8, 16), num_steps=100, batch_size=16, checkpoint_every=100,
                                        log_every=50)),
    "full": dict(seeds=(0, 1, 2), num_images=1500, image_size=16,
                 train=cfg.TrainConfig(widths=(8, 16, 32), num_steps=150, batch_size=16, checkpoint_every=150,
                                       log_every=50)),
}


def get_config(arg: str = "geometry"):
    setting, _, preset = arg.partition(",")
    preset = preset or "quick"
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; choose one of {sorted(SETTINGS)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    s, p = SETTINGS[setting], PRESETS[preset]
    return cfg.to_config_dict(cfg.ExperimentConfig(
        setting=setting, preset=preset, tasks=s["tasks"], costs=s["costs"], budgets=s[preset], **p))
