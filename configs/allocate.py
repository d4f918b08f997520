# python launch/allocate.py --config=configs/allocate.py --out=/tmp/allocation.npz
"""Allocate a label budget on the synthetic-scene tasks (segmentation priced 10/3 of the others)."""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.tasks = "segment,depth,normal,edge"
    config.costs = "10,3,3,3"
    config.num_images = 10_000
    config.budget = 30_000.0
    config.strategy = "taba"  # or single_task:<task>, equal_budget, equal_count_disjoint, ...
    config.seed = 0
    # TABA's information model (used by strategy=taba). Rows of the affinity S[s, t] separated by ';'.
    config.affinity = "1,0.5,0.5,0.3;0.5,1,0.7,0.3;0.5,0.7,1,0.3;0.3,0.3,0.3,1"
    config.gamma = "0.5"  # one value for all tasks, or one per task
    config.kappa = "100"
    config.weights = "1"
    config.curve = "power"  # or effective_number
    return config
