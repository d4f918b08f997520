# python launch/experiment.py --config=configs/experiment.py:geometry,quick --workdir=/tmp/taba_geometry
"""TABA against the heuristics on one synthetic setting: every strategy x budget x seed.

The argument is `<setting>[,<preset>]`: settings `geometry`, `tag`, `weak` (below), presets `quick`
(2 budgets x 2 seeds, small model, under 15 minutes on a 2-core CPU; the default) and `full`
(3 budgets x 3 seeds, a wider model). Every field can be overridden, e.g. `--config.tasks=segment,depth
--config.costs=10,3 --config.budgets=800,2000`, so a new setting needs no code.
"""
import ml_collections

from taba_jax import taba
from taba_jax.train import default_config as train_config

# Budgets are money; labelling every task on every image of the pool costs pool size x sum of costs.
SETTINGS = {
    # dense geometry tasks, segmentation priced 10/3 of the others (the paper author's public setting)
    "geometry": dict(tasks="segment,depth,normal,edge", costs="10,3,3,3", quick="1500,4000",
                     full="1500,4000,10000"),
    # a cheap image-level task beside expensive dense ones
    "tag": dict(tasks="segment,classify,depth", costs="10,1,3", quick="1000,3000", full="1000,3000,8000"),
    # a weakly related task (background texture frequency) beside two geometry tasks
    "weak": dict(tasks="segment,depth,texture", costs="10,3,3", quick="1000,3000", full="1000,3000,8000"),
}
PRESETS = {  # sized for this project's 2-core CPU; on a GPU raise image_size, widths and num_steps
    "quick": dict(seeds="0,1", num_images=1500, image_size=16, widths="8,16", num_steps=100, batch_size=16),
    "full": dict(seeds="0,1,2", num_images=1500, image_size=16, widths="8,16,32", num_steps=150, batch_size=16),
}


def get_config(arg: str = "geometry"):
    setting, _, preset = arg.partition(",")
    preset = preset or "quick"
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; choose one of {sorted(SETTINGS)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    s, p = SETTINGS[setting], PRESETS[preset]
    config = ml_collections.ConfigDict()
    config.setting = setting
    config.preset = preset
    config.tasks = s["tasks"]
    config.costs = s["costs"]
    config.budgets = s[preset]
    config.strategies = ""  # comma-separated; empty = every single_task:<t>, the heuristics and taba
    config.seeds = p["seeds"]
    config.num_images = p["num_images"]  # pool = 80 %, validation 10 %, test 10 %
    config.image_size = p["image_size"]
    config.data_seed = 0
    config.keep_checkpoints = False  # delete each finished run's checkpoints (results stay)
    config.train = train_config()
    config.train.update(widths=p["widths"], num_steps=p["num_steps"], batch_size=p["batch_size"],
                        checkpoint_every=p["num_steps"], log_every=50)
    config.taba = taba.default_config()
    config.taba.train = config.train  # the pilot models train like the runs (one object: overrides apply to both)
    return config
