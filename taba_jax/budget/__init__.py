"""Label budget allocation: the problem, heuristic strategies and TABA's greedy search."""
from taba_jax.budget.greedy import greedy_allocate
from taba_jax.budget.information import (
    InformationModel,
    addition_deltas,
    allocation_objective,
    candidate_gains,
    change_deltas,
    model_information,
    objective,
    objective_gains,
    pattern_information,
    task_information,
)
from taba_jax.budget.problem import Allocation, BudgetProblem
from taba_jax.budget.strategies import HEURISTICS, STRATEGIES, allocate, strategy_names

__all__ = [
    "Allocation", "BudgetProblem", "HEURISTICS", "InformationModel", "STRATEGIES", "addition_deltas",
    "allocate", "allocation_objective", "candidate_gains", "change_deltas", "greedy_allocate", "model_information",
    "objective", "objective_gains", "pattern_information", "strategy_names", "task_information",
]
