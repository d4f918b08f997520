# python launch/train.py --config=configs/synthetic.py --workdir=/tmp/taba_synthetic
"""Train a multi-task model on the synthetic scenes with the labels a budget buys."""
import ml_collections

from taba_jax.train import default_config


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.tasks = "segment,depth,normal,edge"
    config.costs = "10,3,3,3"
    config.num_images = 3000  # train/validation/test = 80/10/10 %
    config.image_size = 32
    config.data_seed = 0
    config.cache_data = True
    config.budget = 6000.0
    config.strategy = "equal_budget"  # or taba, single_task:<task>, equal_count_shared, ...
    config.allocation = ""  # a file from launch/allocate.py; overrides strategy and budget
    config.reference = ""  # results.json of the Delta_m reference (e.g. full supervision)
    config.seed = 0
    config.taba = ml_collections.ConfigDict()  # user-given TABA parameters for strategy=taba
    config.taba.affinity = "1,0.5,0.5,0.3;0.5,1,0.7,0.3;0.5,0.7,1,0.3;0.3,0.3,0.3,1"
    config.taba.gamma = "0.5"
    config.taba.kappa = "100"
    config.taba.weights = "1"
    config.taba.curve = "power"
    config.train = default_config()
    return config
