"""TABA end to end (METHOD section 4): pilot, task affinity, learning curves, greedy allocation.

1. A pilot set of fully labeled images costing a fraction `rho` of the budget.
2. The pilot model is trained; every `affinity_every` steps of its second half the lookahead affinity of Fifty et al.
   (2021), `Z[s->t] = 1 - L_t(theta_s') / L_t(theta)` with `theta_s'` one gradient step of task s on
   the shared parameters, is computed for all sources at once (vmap over s) on a batch of pilot
   images; the average gives `S[s, t] = clip(Z[s->t] / Z[t->t], 0, 1)`.
3. Models trained on nested subsets of the pilot set give validation losses per size; a least-squares
   fit of `log L_t = a_t - gamma_t log n` gives the learning-curve slopes.
4. `allocate(problem, "taba", information, initial=pilot)`: the pilot is part of the allocation and
   its cost is inside the budget.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from taba_jax import config_utils, io_utils, train
from taba_jax.budget import Allocation, BudgetProblem, InformationModel, allocate
from taba_jax.data.dataset import MultiTaskDataset
from taba_jax.tasks import TaskSpec

ESTIMATE_FILE = "estimate.json"


def default_config() -> ml_collections.ConfigDict:
    """TABA's estimation settings (the `taba` block of an experiment config)."""
    c = ml_collections.ConfigDict()
    c.rho = 0.1  # budget fraction spent on the fully labeled pilot set
    c.affinity_every = 5  # pilot steps between lookahead measurements
    c.affinity_start = 0.5  # fraction of the pilot steps before measuring (heads still random; see README)
    c.affinity_batch_size = 32
    c.affinity_lr = 0.01  # lookahead step size (small enough for the first-order regime: Z linear in it)
    c.subset_fractions = "0.25,0.5"  # nested pilot subsets trained besides the whole pilot set
    c.gamma_range = "0.05,1.5"  # fitted slopes are clipped to this range
    c.kappa = ""  # learning-curve scale per task; empty = the pilot size
    c.weights = ""  # task weights; empty = all 1
    c.curve = "power"
    c.affinity = ""  # a known S ("1,0.5;0.5,1"): skips the affinity measurement
    c.gamma = ""  # known slopes: skip the subset trainings
    c.train = train.default_config()  # pilot training
    return c


@dataclasses.dataclass(frozen=True)
class Estimate:
    """The information model and the raw measurements behind it (for plots and reports)."""

    information: InformationModel
    pilot_size: int
    affinity_steps: list[int]  # pilot steps at which Z was measured
    lookahead: np.ndarray  # (steps, T, T) Z[s->t] per measurement
    subset_sizes: list[int]  # images per nested subset, ascending, the last = the pilot
    subset_losses: np.ndarray  # (sizes, T) validation loss per subset size
    intercept: np.ndarray  # (T,) fitted a_t

    def to_json(self) -> dict:
        return {"information": self.information.to_json(), "pilot_size": self.pilot_size,
                "affinity_steps": self.affinity_steps, "lookahead": self.lookahead.tolist(),
                "subset_sizes": self.subset_sizes, "subset_losses": self.subset_losses.tolist(),
                "intercept": self.intercept.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> "Estimate":
        info = data["information"]
        information = InformationModel(info["affinity"], info["gamma"], info["kappa"], info["weights"], info["curve"])
        return cls(information, int(data["pilot_size"]), list(data["affinity_steps"]),
                   np.asarray(data["lookahead"], np.float64).reshape(-1, information.num_tasks, information.num_tasks),
                   list(data["subset_sizes"]), np.asarray(data["subset_losses"], np.float64),
                   np.asarray(data["intercept"], np.float64))


def lookahead_affinity(task_losses, params, inputs, shared, learning_rate: float) -> jax.Array:
    """`Z[s, t] = 1 - L_t(theta - lr * grad_shared L_s) / L_t(theta)` for all (s, t) in one call.

    `task_losses(params, inputs) -> (T,)`; `shared` is a pytree of Python bools like `params`
    marking the shared parameters, the only ones the lookahead step moves (task heads stay put, as
    in Fifty et al.). The T source gradients come from one vmapped VJP and the T lookahead
    evaluations from one vmap over s. Pure and jittable (close over `task_losses` and `shared`).
    """
    losses, vjp = jax.vjp(lambda p: task_losses(p, inputs), params)
    (grads,) = jax.vmap(vjp)(jnp.eye(losses.shape[0], dtype=losses.dtype))
    grads = jax.tree.map(lambda g, keep: g if keep else jnp.zeros_like(g), grads, shared)

    def after_step(grad):
        return task_losses(jax.tree.map(lambda p, g: p - learning_rate * g, params, grad), inputs)

    return 1.0 - jax.vmap(after_step)(grads) / losses[None, :]


def affinity_from_lookahead(lookahead: jax.Array, min_own: float = 0.01) -> jax.Array:
    """`S[s, t] = clip(Z[s->t] / Z[t->t], 0, 1)` with `S[t, t] = 1` from Z averaged over
    measurements (..., T, T). A task whose own step lowers its loss by less than `min_own` times the
    largest own reduction (nothing the backbone learns helps it, e.g. random targets) gets
    S[s, t] = 0: the ratio of two near-zero numbers is noise."""
    z = jnp.asarray(lookahead).reshape((-1,) + jnp.shape(lookahead)[-2:]).mean(0)
    own = jnp.diag(z)
    learnable = own > min_own * jnp.maximum(own.max(), 0.0)
    ratio = jnp.where(learnable[None, :], z / jnp.where(learnable, own, 1.0)[None, :], 0.0)
    return jnp.where(jnp.eye(z.shape[0], dtype=bool), 1.0, jnp.clip(ratio, 0.0, 1.0))


def fit_learning_curves(sizes, losses, gamma_range=(0.05, 1.5)) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares fit of `log L_t = a_t - gamma_t log n` per task; returns (gamma clipped, a).

    `sizes` (K,) with at least two distinct values, `losses` (K, T) positive.
    """
    sizes = np.asarray(sizes, np.float64)
    losses = np.asarray(losses, np.float64)
    if sizes.ndim != 1 or len(np.unique(sizes)) < 2 or (sizes <= 0).any():
        raise ValueError(f"sizes must hold at least two distinct positive values, got {sizes.tolist()}")
    if losses.shape[:1] != sizes.shape or losses.ndim != 2 or not (losses > 0).all():
        raise ValueError(f"losses must be positive with shape ({len(sizes)}, T), got {losses.tolist()}")
    design = np.stack([np.ones_like(sizes), -np.log(sizes)], axis=1)
    (intercept, slope), *_ = np.linalg.lstsq(design, np.log(losses), rcond=None)
    return np.clip(slope, *gamma_range), intercept


def shared_parameters(params, task_names) -> dict:
    """Pytree of bools: True for the backbone, False inside a task's head modules (`<task>_...`)."""
    def is_shared(path, _):
        names = [getattr(k, "key", "") for k in path]
        return not any(str(n).startswith(f"{t}_") for n in names for t in task_names)
    return jax.tree_util.tree_map_with_path(is_shared, params)


def pilot_size(problem: BudgetProblem, rho: float) -> int:
    """Images in the fully labeled pilot: `floor(rho * budget / sum_t c_t)`, at least 2."""
    if not 0 < rho < 1:
        raise ValueError(f"config.rho must be in (0, 1), got {rho}")
    size = int(np.floor(rho * problem.budget / problem.costs.sum() + 1e-9))
    if size < 2:
        raise ValueError(f"config.rho={rho} of budget {problem.budget:g} buys {size} fully labeled pilot images "
                         f"(one costs {problem.costs.sum():g}); TABA needs at least 2: raise rho or the budget")
    return min(size, problem.num_images)


def pilot_allocation(problem: BudgetProblem, size: int, seed: int) -> Allocation:
    """`size` random images with every task labeled."""
    labels = np.zeros((problem.num_images, problem.num_tasks), bool)
    labels[np.random.default_rng([seed, 1]).permutation(problem.num_images)[:size]] = True
    return Allocation(labels, problem, "taba_pilot", seed)


def estimate_information(dataset: MultiTaskDataset, pilot: Allocation, config, seed: int, workdir: str,
                         progress: bool = False) -> Estimate:
    """Trains the pilot models and estimates S and gamma (skipping what `config` already gives).

    Cached as `<workdir>/estimate.json`: an existing estimate for the same pilot is returned as is.
    """
    tasks = dataset.task_specs(pilot.problem.task_names)
    names = [t.name for t in tasks]
    pilot_images = np.flatnonzero(pilot.labels.all(axis=1))
    if len(pilot_images) < 2 or pilot.labels.sum() != len(pilot_images) * len(tasks):
        raise ValueError("the pilot must label every task on the same images (at least 2)")
    cache = os.path.join(workdir, ESTIMATE_FILE)
    key = {"pilot_images": pilot_images.tolist(), "seed": seed, "config": config.to_dict()}
    if os.path.exists(cache):
        with open(cache) as f:
            saved = json.load(f)
        if saved.get("key") == key:
            return Estimate.from_json(saved["estimate"])
    n = len(pilot_images)
    given_affinity = config_utils.parse_matrix("affinity", config.affinity, len(tasks)) if config.affinity else None
    fractions = config_utils.parse_floats("subset_fractions", config.subset_fractions) if not config.gamma else []
    for f in fractions:
        if not 0 < f < 1:
            raise ValueError(f"config.subset_fractions entries must be in (0, 1), got {f}")
    sizes = sorted({max(1, int(round(f * n))) for f in fractions} - {n})
    if not config.gamma and not sizes:
        raise ValueError(f"config.subset_fractions={config.subset_fractions!r} gives no subset smaller than the "
                         f"pilot ({n} images); the curve fit needs two sizes")

    order = np.random.default_rng([seed, 2]).permutation(pilot_images)  # nested subsets: prefixes of one order
    measure = None if given_affinity is not None else _AffinityProbe(dataset, tasks, order, config, seed)
    losses = {}
    for size in sizes + [n]:
        # A torn estimation restarts its trainings: the affinity measurements are not checkpointed.
        shutil.rmtree(os.path.join(workdir, f"pilot_{size}"), ignore_errors=True)
        model, params = _train_subset(dataset, pilot, np.sort(order[:size]), config.train, seed,
                                      os.path.join(workdir, f"pilot_{size}"), progress,
                                      measure if size == n else None)
        validation = train.evaluate_losses(model, params, tasks, dataset.splits["validation"],
                                           config.train.eval_batch_size)
        losses[size] = [max(validation[t], 1e-12) for t in names]
    subset_sizes = sizes + [n]
    subset_losses = np.array([losses[s] for s in subset_sizes])
    if config.gamma:
        gamma = config_utils.parse_task_values("gamma", config.gamma, len(tasks))
        intercept = np.log(subset_losses[-1]) + gamma * np.log(n)
    else:
        gamma, intercept = fit_learning_curves(subset_sizes, subset_losses,
                                               config_utils.parse_floats("gamma_range", config.gamma_range))
    if given_affinity is not None:
        affinity, lookahead, steps = given_affinity, np.zeros((0, len(tasks), len(tasks))), []
    else:
        if not measure.values:
            raise ValueError(f"no affinity measurement in {config.train.num_steps} pilot steps with "
                             f"config.affinity_every={config.affinity_every} and "
                             f"config.affinity_start={config.affinity_start}")
        lookahead, steps = np.array(measure.values), measure.steps
        affinity = np.asarray(affinity_from_lookahead(lookahead), np.float64)
    information = _information_model(config, affinity, gamma, default_kappa=float(n))
    estimate = Estimate(information, n, steps, lookahead, subset_sizes, subset_losses, intercept)
    io_utils.write_json(cache, {"key": key, "estimate": estimate.to_json()})
    return estimate


def run(problem: BudgetProblem, dataset: MultiTaskDataset, config, seed: int, workdir: str,
        progress: bool = False) -> tuple[Allocation, InformationModel]:
    """Pilot -> estimate -> greedy. Returns the allocation (pilot included, within budget) and the
    information model; `allocation.info["taba"]` holds the estimate's measurements.

    With both `config.affinity` and `config.gamma` given nothing is estimated and no pilot is bought.
    """
    if config.affinity and config.gamma:
        if not config.kappa:
            raise ValueError("config.kappa is required when affinity and gamma are given (no pilot to size it)")
        information = _information_model(
            config, config_utils.parse_matrix("affinity", config.affinity, problem.num_tasks),
            config_utils.parse_task_values("gamma", config.gamma, problem.num_tasks), default_kappa=None)
        return allocate(problem, "taba", information=information, seed=seed), information
    pilot = pilot_allocation(problem, pilot_size(problem, config.rho), seed)
    estimate = estimate_information(dataset, pilot, config, seed, workdir, progress)
    allocation = allocate(problem, "taba", information=estimate.information, initial=pilot, seed=seed)
    allocation = dataclasses.replace(allocation, info={**allocation.info, "taba": estimate.to_json()})
    return allocation, estimate.information


class _AffinityProbe:
    """Training callback: every `affinity_every` steps, Z on a batch of pilot images."""

    def __init__(self, dataset: MultiTaskDataset, tasks: list[TaskSpec], pilot_images, config, seed: int):
        self.dataset, self.tasks, self.images, self.seed = dataset, tasks, np.sort(pilot_images), seed
        self.every, self.batch_size = int(config.affinity_every), int(config.affinity_batch_size)
        if not 0 <= config.affinity_start < 1:
            raise ValueError(f"config.affinity_start must be in [0, 1), got {config.affinity_start}")
        self.start = int(config.affinity_start * config.train.num_steps)
        self.model = train.make_model(tasks, config.train)
        self.lr = float(config.affinity_lr)
        self.values, self.steps = [], []
        self._fn = None

    def __call__(self, step: int, params) -> None:
        if step % self.every or step <= self.start:
            return
        if self._fn is None:
            self._fn = _lookahead_fn(self.model, tuple(self.tasks), self.lr,
                                     jax.tree_util.tree_structure(params),
                                     tuple(jax.tree.leaves(shared_parameters(params, [t.name for t in self.tasks]))))
        rng = np.random.default_rng([self.seed, 3, step])
        idx = np.sort(rng.choice(self.images, self.batch_size, replace=len(self.images) < self.batch_size))
        split = self.dataset.train
        z = self._fn(params, split.images[idx], {t.name: split.targets[t.name][idx] for t in self.tasks})
        self.values.append(np.asarray(z, np.float64))
        self.steps.append(step)


@functools.lru_cache(maxsize=16)
def _lookahead_fn(model, tasks, learning_rate, treedef, shared_leaves):
    def task_losses(params, inputs):
        images, targets = inputs
        predictions = model.apply(params, images)
        return jnp.stack([t.loss(predictions[t.name], targets[t.name]) for t in tasks])

    shared = jax.tree_util.tree_unflatten(treedef, shared_leaves)
    fn = jax.jit(lambda params, images, targets: lookahead_affinity(task_losses, params, (images, targets), shared,
                                                                    learning_rate))
    return fn


def _train_subset(dataset, pilot: Allocation, images, train_config, seed, workdir, progress, callback):
    labels = np.zeros_like(pilot.labels)
    labels[images] = True
    subset = Allocation(labels, pilot.problem, "taba_pilot_subset", seed)
    trainer = train.Trainer(dataset, subset, train_config, workdir, seed)
    result = trainer.train(progress=progress, callback=callback)
    return trainer.model, result.params


def _information_model(config, affinity, gamma, default_kappa) -> InformationModel:
    """S and gamma (estimated or given) with the config's kappa (else `default_kappa`), weights and curve."""
    num_tasks = len(affinity)
    kappa = config_utils.parse_task_values("kappa", config.kappa, num_tasks) if config.kappa else default_kappa
    weights = config_utils.parse_task_values("weights", config.weights, num_tasks) if config.weights else None
    return InformationModel(affinity, gamma, kappa, weights, curve=config.curve)
