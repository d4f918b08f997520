# python launch/train.py --config=configs/synthetic.py --workdir=/tmp/taba_synthetic
"""Train a multi-task model on the synthetic scenes with the labels a budget buys.

Every field (see `taba_jax.config.TrainJobConfig`, `TrainConfig`, `TabaConfig`) can be overridden:
`--config.strategy=taba --config.budget=3000 --config.train.num_steps=500 --config.tasks=segment,depth
--config.costs=10,3`.
"""
from taba_jax import config as cfg


def get_config():
    return cfg.to_config_dict(cfg.TrainJobConfig(
        tasks=("segment", "depth", "normal", "edge"),
        costs=(10.0, 3.0, 3.0, 3.0),
        num_images=1500,  # train / validation / test = 80 / 10 / 10 %
        image_size=16,
        budget=4000.0,
        strategy="equal_budget",  # or taba, single_task:<task>, equal_count_shared, ...
        train=cfg.TrainConfig(),  # the default recipe: 750 steps of 12 images per task
    ))
