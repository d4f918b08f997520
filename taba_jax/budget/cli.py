"""Builds the budget problem, information model and allocation that a config describes."""
from __future__ import annotations

from taba_jax import config_utils
from taba_jax.budget.information import InformationModel
from taba_jax.budget.problem import Allocation, BudgetProblem
from taba_jax.budget.strategies import allocate


def problem_from_config(config) -> BudgetProblem:
    names = config_utils.parse_names("tasks", config.tasks)
    return BudgetProblem(names, config_utils.parse_floats("costs", config.costs), config.num_images, config.budget)


def information_from_config(config, num_tasks: int) -> InformationModel:
    """The user-given TABA parameters (affinity, gamma, kappa, weights, curve)."""
    def vector(field):
        return config_utils.parse_task_values(field, config[field], num_tasks)

    return InformationModel(config_utils.parse_matrix("affinity", config.affinity, num_tasks),
                            vector("gamma"), vector("kappa"), vector("weights"), curve=config.curve)


def allocate_from_config(config) -> Allocation:
    problem = problem_from_config(config)
    information = information_from_config(config, problem.num_tasks) if config.strategy == "taba" else None
    return allocate(problem, config.strategy, seed=config.seed, information=information)
