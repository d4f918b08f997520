# python launch/train.py --config=configs/taskonomy.py --workdir=/tmp/taba_taskonomy --config.manual_dir=$HOME/data/taskonomy
"""Train a multi-task model on Taskonomy (streamed) with the labels a budget buys.

Prepare the data first (README "Real datasets"): the Omnidata release of the chosen subset with the
domains below in `--config.manual_dir`; the TFDS dataset is built on first use into
`--config.data_dir` (default `<workdir>/tfds`). Task names are Taskonomy domain names; any of
`taba_jax.data.builders.taskonomy.DOMAINS` whose kind can be trained works, e.g.
`--config.tasks=segment_semantic,depth_zbuffer,normal,edge_texture,reshading --config.costs=10,3,3,3,3`.
The pool is the train split of `--config.taskonomy_subset` (its train buildings); it is read by
index and streamed through grain workers (`--config.train.input_workers`), never loaded whole.
"""
from taba_jax import config as cfg


def get_config():
    config = cfg.to_config_dict(cfg.TrainJobConfig(
        tasks=("segment_semantic", "depth_zbuffer", "normal", "edge_texture"),
        costs=(10.0, 3.0, 3.0, 3.0),  # a segmentation mask priced 10/3 of a geometry label
        image_size=64,  # 256 x 256 views resized to 64 x 64
        taskonomy_subset="tiny",
        budget=190_000.0,  # the price of 10 000 fully labeled views
        strategy="equal_budget",  # or taba, single_task:<task>, equal_count_shared, ...
        train=cfg.TrainConfig(num_steps=20_000, batch_size=32, warmup_steps=500, learning_rate=2e-3,
                              checkpoint_every=1000, log_every=100, input_workers=8),
    ))
    config.dataset = "taskonomy"  # set last: a TFDS dataset needs --config.manual_dir, which has no default
    return config
