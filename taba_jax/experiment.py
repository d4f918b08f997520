"""The benchmark of METHOD section 7: every strategy x budget x seed on one setting, against a
full-supervision reference per seed, with results appended to `results.jsonl` (resumable), then a
report and plots (`taba_jax.report`).
"""
from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np

from taba_jax import config_utils, io_utils, report, taba
from taba_jax.budget import Allocation, BudgetProblem, allocate, strategy_names
from taba_jax.data.dataset import synthetic_dataset
from taba_jax.train import train_and_evaluate

RESULTS_FILE = "results.jsonl"


def run_key(record: dict) -> tuple:
    return record["setting"], record["strategy"], float(record["budget"]), int(record["seed"])


# Fields that may change between invocations on one workdir: they select runs, not how a run is done.
RUN_SELECTION_FIELDS = ("budgets", "seeds", "strategies", "keep_checkpoints")


def plan(config, problem_for) -> list[tuple[str, float, int]]:
    """(strategy, budget, seed) of every run, budgets outermost."""
    budgets = config_utils.parse_floats("budgets", config.budgets)
    seed_values = config_utils.parse_floats("seeds", config.seeds)
    if any(s != int(s) for s in seed_values):
        raise ValueError(f"config.seeds must be integers, got {config.seeds!r}")
    seeds = [int(s) for s in seed_values]
    runs = []
    for budget in budgets:
        problem = problem_for(budget)
        applicable = strategy_names(problem)
        strategies = config_utils.parse_names("strategies", config.strategies) if config.strategies else applicable
        unknown = [s for s in strategies if s not in applicable]
        if unknown:
            raise ValueError(f"config.strategies has unknown {unknown}; choose from {applicable}")
        runs += [(strategy, budget, seed) for seed in seeds for strategy in strategies]
    return runs


def run(config, workdir: str, progress: bool = True) -> list[dict]:
    """Runs every unfinished (strategy, budget, seed) of `config`, then writes the report and plots.

    Returns all records of this setting. Killing and re-running resumes: finished runs are skipped
    (their line is in results.jsonl), a half-finished one restarts from its last checkpoint.
    """
    tasks = config_utils.parse_names("tasks", config.tasks)
    costs = config_utils.parse_floats("costs", config.costs)
    os.makedirs(workdir, exist_ok=True)
    dataset = synthetic_dataset(config.num_images, config.image_size, config.data_seed, tasks=tasks,
                                cache_dir=os.path.join(workdir, "data_cache"))
    pool = len(dataset.train)
    problem_for = lambda budget: BudgetProblem(tasks, costs, pool, budget)  # noqa: E731
    runs = plan(config, problem_for)
    _check_same_config(config, workdir)
    results_path = os.path.join(workdir, RESULTS_FILE)
    done = {run_key(r) for r in io_utils.read_jsonl(results_path)}
    todo = [r for r in runs if (config.setting, *r) not in done]
    print(f"setting {config.setting!r}: {len(runs)} runs, {len(runs) - len(todo)} already finished")
    for number, (strategy, budget, seed) in enumerate(todo, 1):
        print(f"[{number}/{len(todo)}] {strategy} budget {budget:g} seed {seed}", flush=True)
        reference = _reference(dataset, tasks, costs, config, seed, workdir, progress)
        record = _run_one(dataset, problem_for(budget), strategy, seed, reference, config, workdir, progress)
        io_utils.append_jsonl(results_path, record)
    records = [r for r in io_utils.read_jsonl(results_path) if r["setting"] == config.setting]
    references = []
    for seed in sorted({r["seed"] for r in records}):
        with open(os.path.join(workdir, "reference", f"seed{seed}", "results.json")) as f:
            references.append(json.load(f))
    report.write(records, workdir, title=f"Setting `{config.setting}`: tasks {config.tasks}, costs {config.costs}, "
                                         f"pool {pool} images, {config.image_size}x{config.image_size}", tasks=tasks,
                 references=references)
    return records


def _check_same_config(config, workdir: str) -> None:
    """Refuses to mix runs of different configs in one workdir (only RUN_SELECTION_FIELDS may change)."""
    current = json.loads(json.dumps({k: v for k, v in config.to_dict().items() if k not in RUN_SELECTION_FIELDS}))
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        io_utils.write_json(path, current)
        return
    with open(path) as f:
        saved = json.load(f)
    differing = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if differing:
        raise ValueError(f"workdir {workdir!r} holds runs of another config: config.{', config.'.join(differing)} "
                         f"differ from {path} (only {', '.join(RUN_SELECTION_FIELDS)} may change); use a new workdir")


def _reference(dataset, tasks, costs, config, seed: int, workdir: str, progress: bool) -> str:
    """results.json of the full-supervision model for `seed` (trained once, then cached)."""
    directory = os.path.join(workdir, "reference", f"seed{seed}")
    path = os.path.join(directory, "results.json")
    if not os.path.exists(path):
        pool = len(dataset.train)
        problem = BudgetProblem(tasks, costs, pool, pool * float(np.sum(costs)))
        full = Allocation(np.ones((pool, len(tasks)), bool), problem, "full_supervision", seed)
        print(f"training the full-supervision reference for seed {seed}", flush=True)
        train_and_evaluate(dataset, full, config.train, directory, seed=seed, progress=progress)
        _drop_checkpoints(directory, config)
    return path


def _run_one(dataset, problem: BudgetProblem, strategy: str, seed: int, reference: str, config, workdir: str,
             progress: bool) -> dict:
    start = time.perf_counter()
    name = f"{strategy.replace(':', '-')}_b{problem.budget:g}_s{seed}"
    if strategy == "taba":
        allocation, information = taba.run(problem, dataset, config.taba, seed,
                                           os.path.join(workdir, "taba", f"b{problem.budget:g}_s{seed}"), progress)
    else:
        allocation, information = allocate(problem, strategy, seed=seed), None
    directory = os.path.join(workdir, "runs", name)
    allocation.save(os.path.join(directory, "allocation.npz"))
    results = train_and_evaluate(dataset, allocation, config.train, directory, seed=seed, reference=reference,
                                 progress=progress)
    _drop_checkpoints(directory, config)
    record = {"setting": config.setting, "tasks": list(problem.task_names), "strategy": strategy,
              "budget": problem.budget, "seed": seed, "labels": results["labels"], "money": dict(zip(problem.task_names, allocation.spent_per_task.tolist())),
              "spent": allocation.spent, "metrics": results["metrics"], "delta_m": results["delta_m"],
              "untrained_tasks": results["untrained_tasks"], "wall_seconds": time.perf_counter() - start}
    if information is not None:
        estimate = allocation.info.get("taba", {})
        record["taba"] = {"affinity": np.asarray(information.affinity).tolist(),
                          "gamma": np.asarray(information.gamma).tolist(),
                          "kappa": np.asarray(information.kappa).tolist(),
                          "predicted_objective": allocation.info["objective"],
                          "pilot_size": estimate.get("pilot_size", 0),
                          "subset_sizes": estimate.get("subset_sizes", []),
                          "subset_losses": estimate.get("subset_losses", [])}
    return record


def _drop_checkpoints(directory: str, config) -> None:
    if not config.keep_checkpoints:
        shutil.rmtree(os.path.join(directory, "checkpoints"), ignore_errors=True)
