"""The main job: synthetic dataset -> allocation (file or strategy) -> training -> results.json."""
from __future__ import annotations

import os

from taba_jax import config_utils
from taba_jax.budget import Allocation, BudgetProblem, allocate
from taba_jax.budget.cli import information_from_config
from taba_jax.data.dataset import synthetic_dataset
from taba_jax.train import train_and_evaluate


def run(config, workdir: str, progress: bool = True) -> dict:
    tasks = config_utils.parse_names("tasks", config.tasks)
    dataset = synthetic_dataset(config.num_images, config.image_size, config.data_seed, tasks=tasks,
                                cache_dir=os.path.join(workdir, "data_cache") if config.cache_data else None)
    if config.allocation:
        allocation = Allocation.load(config.allocation)
        if list(allocation.problem.task_names) != tasks:
            raise ValueError(f"allocation {config.allocation!r} has tasks {list(allocation.problem.task_names)}, "
                             f"config.tasks is {tasks}")
    else:
        problem = BudgetProblem(tasks, config_utils.parse_floats("costs", config.costs), len(dataset.train),
                                config.budget)
        information = information_from_config(config.taba, len(tasks)) if config.strategy == "taba" else None
        allocation = allocate(problem, config.strategy, seed=config.seed, information=information)
    os.makedirs(workdir, exist_ok=True)
    allocation.save(os.path.join(workdir, "allocation.npz"))
    print(allocation.summary())
    return train_and_evaluate(dataset, allocation, config.train, workdir, seed=config.seed,
                              reference=config.reference or None, progress=progress)
