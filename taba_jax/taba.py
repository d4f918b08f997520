"""TABA end to end: pilot, task affinity, learning curves, greedy allocation.

1. A pilot set of fully labeled images costing a fraction `rho` of the budget.
2. The pilot model is trained; every `affinity_every` steps of its second half the lookahead affinity
   of Fifty et al. (2021), `Z[s->t] = 1 - L_t(theta_s') / L_t(theta)` with `theta_s'` one gradient step
   of task s on the shared parameters, is computed for all sources at once (vmap over s) on a batch
   of pilot images; the average gives `S[s, t] = clip(Z[s->t] / Z[t->t], 0, 1)`.
3. Models trained on nested subsets of the pilot set give validation losses (and primary-metric
   errors) per size; a least-squares fit of `log L_t = a_t - gamma_t log n` gives the learning-curve
   slopes (`config.curve_fit="metric"` fits the errors of the metrics Delta_m is made of instead).
4. `allocate(problem, "taba", information, initial=pilot)`: the pilot is part of the allocation and
   its cost is inside the budget.

Six measured deviations from METHOD.md, all off by default (README, "TABA in rounds", "A floor
for tasks the pilot cannot read" and "Floor, exploration and a floor in the refit"):
- `config.rounds = R > 1` spends the budget after the pilot in R equal rounds. Before each round but
  the first, models are trained on everything bought so far and on its nested subsets, and every
  task's learning curve is refitted on those points (its information U_t under S, its validation
  value): the slopes then come from the label counts the allocation actually reached, not only from
  the pilot's few images.
- `config.objective = "delta_m"` weights each task by how many Delta_m points a full reduction of its
  error is worth, `w_t = E_t(0) / M_t(ref)`, with both read off the task's fitted metric-error curve
  (M_t(ref) extrapolated to the whole pool): the greedy then maximizes the predicted Delta_m, which
  normalises by the reference metric, instead of the mean relative loss reduction.
- `config.explore = "<heuristic>"` (with rounds > 1) spends the first round by that heuristic, so
  that the refit sees every task beyond the pilot before the greedy spends the rest.
- `config.flat_slope_floor` gives every task whose pilot slope sits at the lower clip at least
  equal_budget's labels before the greedy: a flat pilot curve may be a task that learns late.
- `config.refit_floor` (with rounds > 1) fits each refitted curve with an irreducible floor and
  weights the task by what labels can still remove (relative, or in Delta_m points with "delta_m").
- `config.transfer_probe` (with rounds > 1) replaces S at each refit by the transfer measured there:
  one more model per task with that task's labels cut, S from the label elasticities of every
  task's error (README, "Transfer probed at the refit"); `config.transfer_probe_repeats` averages S
  over that many probes with their own training seeds.

Measurements (the pilot's, a round's) are cached under a key of what measures them and refitted
under whichever config asks (`FIT_FIELDS`, `MODEL_FIELDS`), so variants share them.

`run` is what "taba" means everywhere (launchers, experiments); it skips the estimation only when
affinity, gamma and kappa are all given.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np

from taba_jax import io_utils, rng, train
from taba_jax.budget import Allocation, BudgetProblem, InformationModel, allocate, strategies
from taba_jax.budget.information import curve_values, model_information
from taba_jax.config import TabaConfig, TrainConfig, task_values, to_json
from taba_jax.data.dataset import MultiTaskDataset
from taba_jax.models import build_model, shared_parameters
from taba_jax.tasks import TaskSpec

ESTIMATE_FILE = "estimate.json"
# TabaConfig fields that act only on measurements already taken (how the curves are fitted and what is
# bought next): the measurement caches leave them out of their keys, so that variants differing only in
# them share one pilot estimate and one round's curve points.
FIT_FIELDS = ("curve_fit", "objective", "local_points", "local_mix", "gamma_range", "gamma_shrinkage", "weights",
              "flat_slope_floor", "refit_floor", "rounds", "explore")
# Fields that shape the information model built on the measurements: left out of the keys as well (a
# round's U is recomputed from its subsets under the asking model; the transfer probe's own trainings
# are keyed by its fraction and each repeat's seed).
MODEL_FIELDS = ("curve", "kappa", "transfer_cap", "transfer_probe", "transfer_probe_repeats")


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
    subset_errors: np.ndarray  # (sizes, T) validation error of the primary metric per subset size

    def to_json(self) -> dict:
        return {"information": self.information.to_json(), "pilot_size": self.pilot_size,
                "affinity_steps": self.affinity_steps, "lookahead": self.lookahead.tolist(),
                "subset_sizes": self.subset_sizes, "subset_losses": self.subset_losses.tolist(),
                "intercept": self.intercept.tolist(), "subset_errors": self.subset_errors.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> "Estimate":
        information = InformationModel.from_json(data["information"])
        return cls(information, int(data["pilot_size"]), list(data["affinity_steps"]),
                   np.asarray(data["lookahead"], np.float64).reshape(-1, information.num_tasks, information.num_tasks),
                   list(data["subset_sizes"]), np.asarray(data["subset_losses"], np.float64),
                   np.asarray(data["intercept"], np.float64), np.asarray(data["subset_errors"], np.float64))


@dataclasses.dataclass(frozen=True)
class CurvePoints:
    """Models trained on nested subsets of one allocation: per subset and task, the labels, the
    information U_t under the affinity and the validation loss and primary-metric error."""

    labels: np.ndarray  # (K, T)
    information: np.ndarray  # (K, T)
    losses: np.ndarray  # (K, T)
    errors: np.ndarray  # (K, T)

    def to_json(self) -> dict:
        return {k: getattr(self, k).tolist() for k in ("labels", "information", "losses", "errors")}

    @classmethod
    def from_json(cls, data: dict) -> "CurvePoints":
        return cls(*(np.asarray(data[k], np.float64) for k in ("labels", "information", "losses", "errors")))


def primary_error(metrics: dict) -> float:
    """A task's primary metric as an error that falls towards 0 as the task is learned: the metric
    itself where lower is better (abs. error, mean angle), 1 - metric where higher is better (mIoU,
    F1, accuracy, all in [0, 1])."""
    return metrics["primary"] if not metrics["higher_is_better"] else 1.0 - metrics["primary"]


def lookahead_affinity(task_losses, params, inputs, shared, learning_rate: float,
                       normalize: bool = False) -> jax.Array:
    """`Z[s, t] = 1 - L_t(theta - lr * grad_shared L_s) / L_t(theta)` for all (s, t) in one call.

    `task_losses(params, inputs) -> (T,)`; `shared` is a pytree of Python bools like `params`
    marking the shared parameters, the only ones the lookahead step moves (task heads stay put, as
    in Fifty et al.). With `normalize`, every source gradient is rescaled to the mean norm of the T
    gradients before the step, so all steps have one length: to first order Z[s, t] / Z[t, t] is
    then the cosine between the two tasks' gradients, not inflated by a source task whose gradient
    is merely larger. The T source gradients come from one vmapped VJP and the T lookahead
    evaluations from one vmap over s. Pure and jittable (close over `task_losses` and `shared`).
    """
    losses, vjp = jax.vjp(lambda p: task_losses(p, inputs), params)
    (grads,) = jax.vmap(vjp)(jnp.eye(losses.shape[0], dtype=losses.dtype))
    grads = jax.tree.map(lambda g, keep: g if keep else jnp.zeros_like(g), grads, shared)
    if normalize:
        norms = jnp.sqrt(sum(jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1) for g in jax.tree.leaves(grads)))
        scale = jnp.where(norms > 0, norms.mean() / jnp.where(norms > 0, norms, 1.0), 0.0)
        grads = jax.tree.map(lambda g: g * scale.reshape((-1,) + (1,) * (g.ndim - 1)), grads)

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

    `sizes` (K,) with at least two distinct values, `losses` (K, T) positive. For sizes that differ
    per task (the information U_t of each subset) see `refit_learning_curves`.
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


def shrink_slopes(gamma, intercept, size: float, shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
    """Each slope pulled toward the tasks' mean, `(1 - s) gamma_t + s mean(gamma)`, and each intercept
    moved so that the curve still passes through its fitted value at `size` images (the pilot's):
    only the extrapolation beyond the pilot changes (`config.taba.gamma_shrinkage`)."""
    gamma, intercept = np.asarray(gamma, np.float64), np.asarray(intercept, np.float64)
    shrunk = (1.0 - shrinkage) * gamma + shrinkage * gamma.mean()
    return shrunk, intercept + (shrunk - gamma) * np.log(size)


def refit_learning_curves(points: CurvePoints, values: np.ndarray, gamma: np.ndarray, intercept: np.ndarray,
                          gamma_range=(0.05, 1.5)) -> tuple[np.ndarray, np.ndarray]:
    """Per task, `log v_t = a_t - gamma_t log U_t` fitted on the subsets where the task had labels of
    its own; a task with fewer than two distinct such U_t keeps its `gamma` and `intercept`.

    `values` (K, T) is `points.losses` or `points.errors`."""
    gamma, intercept = np.array(gamma, np.float64), np.array(intercept, np.float64)
    for t in range(values.shape[1]):
        own = points.labels[:, t] > 0
        x, y = points.information[own, t], values[own, t]
        if len(np.unique(x)) >= 2:
            (g,), (a,) = fit_learning_curves(x, y[:, None], gamma_range)
            gamma[t], intercept[t] = g, a
    return gamma, intercept


def delta_m_weights(gamma, intercept, kappa, pool_size: int, higher_is_better, error_map=None) -> np.ndarray:
    """Task weights that make TABA's objective the predicted Delta_m (`config.objective="delta_m"`).

    A task's fitted curve `v_t(U) = exp(a_t) U^-gamma_t` is read as METHOD's power law
    `v_t(0) (1 + U/kappa_t)^-gamma_t` (equal for U >> kappa_t), so `v_t(0) = exp(a_t) kappa_t^-gamma_t`.
    With a curve of metric errors, `E_t = v_t`; with a curve of losses, `error_map` (`metric_error_map`'s
    alpha, beta and smallest error) gives `E_t = alpha_t + beta_t v_t`. The reference metric is the error at the
    whole pool, `M_t(ref) = E_t(N)` for an error (lower is better) and `1 - E_t(N)` for a score in
    [0, 1] (at least 0.05). Delta_m's term of task t is `(E_t(U) - E_t(ref)) / M_t(ref)` up to sign, so
    `w_t = beta_t v_t(0) / M_t(ref)` makes `sum_t w_t g_t(U_t)` Delta_m up to a constant. Returned
    normalised to mean 1; equal weights when every task's is 0 (no metric the curves can move), as the
    refit does."""
    weights = _power_law_sensitivity(gamma, intercept, kappa, pool_size, higher_is_better, error_map)
    return _objective_weights(weights)


def metric_error_map(values, errors, rows=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per task, the least-squares line `E = alpha + beta v` from the learning-curve values `v` (K, T)
    (losses) to the primary-metric errors measured at the same points, over the rows where `rows`
    (K, T) holds (all by default): how Delta_m's metric moves with the curve TABA fits. Returns
    (alpha, beta, smallest error measured), each (T,). `beta` is at least 0 (a metric that does not
    improve as the loss falls is worth nothing more); a task with fewer than two distinct values gets
    the line through the origin and its last point, one with no rows the identity."""
    values, errors = np.asarray(values, np.float64), np.asarray(errors, np.float64)
    rows = np.ones(values.shape, bool) if rows is None else np.asarray(rows, bool)
    alpha, beta, smallest = np.zeros(values.shape[1]), np.ones(values.shape[1]), np.ones(values.shape[1])
    for t in range(values.shape[1]):
        v, e = values[rows[:, t], t], errors[rows[:, t], t]
        if len(v) == 0:
            continue
        smallest[t] = e.min()
        if len(np.unique(v)) >= 2:
            beta[t], alpha[t] = np.polyfit(v, e, 1)
            if beta[t] < 0:
                alpha[t], beta[t] = e.mean(), 0.0
        else:
            alpha[t], beta[t] = 0.0, e[-1] / v[-1]
    return alpha, beta, smallest


def _power_law_sensitivity(gamma, intercept, kappa, pool_size: int, higher_is_better, error_map=None) -> np.ndarray:
    """`_delta_m_sensitivity` of the power law `exp(a_t) U^-gamma_t` (unnormalised `delta_m_weights`)."""
    gamma, intercept, kappa = (np.asarray(v, np.float64) for v in (gamma, intercept, kappa))
    return _delta_m_sensitivity(np.exp(intercept) * kappa ** -gamma, np.exp(intercept) * float(pool_size) ** -gamma,
                                higher_is_better, error_map)


def _delta_m_sensitivity(reducible, at_pool, higher_is_better, error_map=None) -> np.ndarray:
    """Delta_m points per unit of a task's learning-curve gain g_t: the error labels can remove over
    the reference metric, which the curve's error at the whole pool (`at_pool`) stands for. With an
    `error_map` (alpha, beta, smallest) the curve's values are losses, mapped to errors first; an error
    reference extrapolated that way is held at a tenth of the smallest error measured or more (a line
    can cross 0 where an error cannot)."""
    reducible, at_pool = np.asarray(reducible, np.float64), np.asarray(at_pool, np.float64)
    lowest = 0.0
    if error_map is not None:
        alpha, beta, smallest = error_map
        reducible, at_pool, lowest = beta * reducible, alpha + beta * at_pool, 0.1 * np.asarray(smallest)
    reference = np.where(np.asarray(higher_is_better, bool), np.clip(1.0 - at_pool, 0.05, 1.0),
                         np.maximum(at_pool, lowest))
    return reducible / reference


def pilot_size(problem: BudgetProblem, rho: float) -> int:
    """Images in the fully labeled pilot: `floor(rho * budget / sum_t c_t)`, at least 2."""
    size = int(np.floor(rho * problem.budget / problem.costs.sum() + 1e-9))
    if size < 2:
        raise ValueError(f"config.taba.rho={rho} of budget {problem.budget:g} buys {size} fully labeled pilot "
                         f"images (one costs {problem.costs.sum():g}); TABA needs at least 2: raise rho or the budget")
    return min(size, problem.num_images)


def pilot_allocation(problem: BudgetProblem, size: int, seed: int) -> Allocation:
    """`size` random images (the seed's `pilot` stream) with every task labeled."""
    labels = np.zeros((problem.num_images, problem.num_tasks), bool)
    labels[rng.numpy_rng(seed, "pilot").permutation(problem.num_images)[:size]] = True
    return Allocation(labels, problem, "taba_pilot", seed)


def information_model(config: TabaConfig, num_tasks: int, affinity=None, gamma=None,
                      default_kappa: float | None = None, task_names=None) -> InformationModel:
    """The InformationModel of `config`: its given affinity, gamma and kappa where set, else the
    estimated `affinity`, `gamma` and `default_kappa` (the pilot size)."""
    affinity = config.affinity if config.affinity is not None else affinity
    gamma = task_values(config.gamma, num_tasks, "gamma") or gamma
    kappa = task_values(config.kappa, num_tasks, "kappa", default=default_kappa)
    weights = task_values(config.weights, num_tasks, "weights", default=1.0)
    return InformationModel(affinity, gamma, kappa, weights, curve=config.curve, task_names=task_names,
                            transfer_cap=config.transfer_cap)


def _estimation_train_config(train_config: TrainConfig) -> TrainConfig:
    """AdaShare's policy learned on a pilot or a round would not be the final one: estimate with all
    blocks shared."""
    return dataclasses.replace(train_config, model="hard_sharing") if train_config.model == "adashare" else train_config


def _with_delta_m_weights(information: InformationModel, intercept, pool_size: int,
                          tasks: list[TaskSpec], error_map=None) -> InformationModel:
    weights = delta_m_weights(information.gamma, intercept, information.kappa, pool_size,
                              [t.higher_is_better for t in tasks], error_map)
    return information.replace(weights=weights)


def validation_curves(dataset: MultiTaskDataset, tasks: list[TaskSpec], subsets: list[dict], train_config: TrainConfig,
                      seed: int, directories: list[str], last_hooks: list, progress: bool):
    """One model per labeled-set dict of `subsets`, trained in its directory (`last_hooks` on the
    last); returns their validation losses and primary-metric errors, (K, T) each."""
    names = [t.name for t in tasks]
    losses, errors = [], []
    for index, (labeled, directory) in enumerate(zip(subsets, directories)):
        # A torn estimation restarts its trainings: the affinity measurements are not checkpointed.
        shutil.rmtree(directory, ignore_errors=True)
        trainer = train.Trainer(dataset, labeled, train_config, directory, seed, tasks=names)
        hooks = last_hooks if index == len(subsets) - 1 else []
        params = trainer.train(progress=progress, hooks=hooks).params
        metrics = train.evaluate(trainer.model, params, tasks, dataset.splits["validation"],
                                 train_config.eval_batch_size, with_loss=True, input_workers=train_config.input_workers)
        losses.append([max(metrics[t]["loss"], 1e-12) for t in names])
        errors.append([max(primary_error(metrics[t]), 1e-6) for t in names])
    return np.array(losses, np.float64), np.array(errors, np.float64)


def estimate_information(dataset: MultiTaskDataset, pilot: Allocation, config: TabaConfig, train_config: TrainConfig,
                         seed: int, workdir: str, progress: bool = False, shared_workdirs=()) -> Estimate:
    """Trains the pilot models and estimates S and gamma (skipping what `config` already gives).

    The measurements are cached as `<workdir>/estimate.json` under a key of what measures them (the
    pilot, the seed, the training and the measuring fields of `config`, not `FIT_FIELDS` or
    `MODEL_FIELDS`): a cache for that key, here or in a folder of `shared_workdirs` (other TABA
    variants', copied here), is refitted under `config` instead of retrained.
    """
    tasks = dataset.task_specs(pilot.problem.task_names)
    names = [t.name for t in tasks]
    pilot_images = np.flatnonzero(pilot.labels.all(axis=1))
    if len(pilot_images) < 2 or pilot.labels.sum() != len(pilot_images) * len(tasks):
        raise ValueError("the pilot must label every task on the same images (at least 2)")
    cache = os.path.join(workdir, ESTIMATE_FILE)
    key = _measurement_key(config, FIT_FIELDS + MODEL_FIELDS, pilot_images=pilot_images.tolist(), seed=seed,
                           train=to_json(train_config))
    saved = _shared_cache(cache, key, [os.path.join(folder, ESTIMATE_FILE) for folder in shared_workdirs])
    if saved is not None:
        measured = Estimate.from_json(saved["estimate"])
        return fit_estimate(config, tasks, pilot.problem.num_images, measured.pilot_size, measured.affinity_steps,
                            measured.lookahead, measured.subset_sizes, measured.subset_losses, measured.subset_errors)
    n = len(pilot_images)
    fractions = config.subset_fractions if config.gamma is None else ()
    sizes = sorted({max(1, int(round(f * n))) for f in fractions} - {n})
    if config.gamma is None and not sizes:
        raise ValueError(f"config.taba.subset_fractions={config.subset_fractions!r} gives no subset smaller than "
                         f"the pilot ({n} images); the curve fit needs two sizes")

    order = rng.numpy_rng(seed, "pilot_subsets").permutation(pilot_images)  # nested subsets: prefixes of one order
    train_config = _estimation_train_config(train_config)
    probe = None if config.affinity is not None else _AffinityProbe(dataset, tasks, order, config, train_config, seed)
    subsets = [{t: np.sort(order[:size]) for t in names} for size in sizes + [n]]
    subset_sizes = sizes + [n]
    subset_losses, subset_errors = validation_curves(
        dataset, tasks, subsets, train_config, seed, [os.path.join(workdir, f"pilot_{size}") for size in subset_sizes],
        [train.CallbackHook(probe, config.affinity_every)] if probe else [], progress)
    if probe is not None and not probe.values:
        raise ValueError(f"no affinity measurement in {train_config.num_steps} pilot steps with "
                         f"config.taba.affinity_every={config.affinity_every} and "
                         f"config.taba.affinity_start={config.affinity_start}")
    lookahead = np.array(probe.values) if probe else np.zeros((0, len(tasks), len(tasks)))
    estimate = fit_estimate(config, tasks, pilot.problem.num_images, n, probe.steps if probe else [], lookahead,
                            subset_sizes, subset_losses, subset_errors)
    io_utils.write_json(cache, {"key": key, "estimate": estimate.to_json()})
    return estimate


def fit_estimate(config: TabaConfig, tasks: list[TaskSpec], pool_size: int, pilot_size: int, affinity_steps,
                 lookahead: np.ndarray, subset_sizes, subset_losses: np.ndarray,
                 subset_errors: np.ndarray) -> Estimate:
    """The Estimate that `config` fits to a pilot's measurements: S from the lookahead (unless given),
    the learning curves from the subsets' losses or errors (`curve_fit`), kappa = the pilot size
    unless given, and the delta_m weights for a pool of `pool_size` images where asked."""
    curve = subset_losses if config.curve_fit == "loss" else subset_errors
    if config.gamma is not None:
        gamma = np.array(task_values(config.gamma, len(tasks), "gamma"))
        intercept = np.log(curve[-1]) + gamma * np.log(pilot_size)
    else:
        gamma, intercept = shrink_slopes(*fit_learning_curves(subset_sizes, curve, config.gamma_range), pilot_size,
                                         config.gamma_shrinkage)
    affinity = np.asarray(affinity_from_lookahead(lookahead), np.float64) if len(lookahead) else None
    information = information_model(config, len(tasks), affinity, gamma, default_kappa=float(pilot_size),
                                    task_names=[t.name for t in tasks])
    if config.objective == "delta_m":
        error_map = metric_error_map(subset_losses, subset_errors) if config.curve_fit == "loss" else None
        information = _with_delta_m_weights(information, intercept, pool_size, tasks, error_map)
    return Estimate(information, pilot_size, list(affinity_steps), lookahead, list(subset_sizes), subset_losses,
                    intercept, subset_errors)


def _measurement_key(config: TabaConfig, left_out, **measured) -> dict:
    """A measurement cache's key: `measured` and the fields of `config` but `left_out`, as JSON values."""
    fields = {name: value for name, value in to_json(config).items() if name not in left_out}
    return json.loads(json.dumps({**measured, "taba": fields}))


def _cached(path: str, key: dict) -> dict | None:
    """The JSON cache at `path` if it exists and was written for `key`, else None."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        saved = json.load(f)
    return saved if saved.get("key") == key else None


def _shared_cache(path: str, key: dict, shared_paths) -> dict | None:
    """The cache at `path` for `key`, else the first of `shared_paths` written for `key` (copied to
    `path`), else None. A shared path that is `path` itself (a variant's own folder) is read once."""
    for candidate in dict.fromkeys([os.path.normpath(p) for p in (path, *shared_paths)]):
        saved = _cached(candidate, key)
        if saved is not None:
            if candidate != os.path.normpath(path):
                io_utils.write_json(path, saved)
            return saved
    return None


def pilot_estimate(problem: BudgetProblem, dataset: MultiTaskDataset, config: TabaConfig, train_config: TrainConfig,
                   seed: int, workdir: str, progress: bool = False,
                   shared_workdirs=()) -> tuple[Allocation, Estimate]:
    """TABA's pilot for `problem` and the estimate trained on it (cached in `workdir`, or reused from
    the cache of a folder of `shared_workdirs`): where `run` starts, and what anything else that
    needs the measured affinity reads (the same cache)."""
    pilot = pilot_allocation(problem, pilot_size(problem, config.rho), seed)
    return pilot, estimate_information(dataset, pilot, config, train_config, seed, workdir, progress, shared_workdirs)


def run(problem: BudgetProblem, dataset: MultiTaskDataset | None, config: TabaConfig, train_config: TrainConfig,
        seed: int, workdir: str, progress: bool = False,
        shared_workdirs=()) -> tuple[Allocation, InformationModel]:
    """Pilot -> estimate -> greedy. Returns the allocation (pilot included, within budget) and the
    information model; `allocation.info["taba"]` holds the estimate's measurements. A pilot estimate
    or a round's curve points cached in a folder of `shared_workdirs` (other variants' `workdir`s) for
    the same labels and measuring config are reused: variants that differ only after a measurement
    share it.

    With affinity, gamma and kappa all given nothing is estimated, no pilot is bought and no
    dataset is needed.
    """
    config.check_tasks(problem.num_tasks)
    if config.known:
        information = information_model(config, problem.num_tasks, task_names=problem.task_names)
        return allocate(problem, "taba", information=information, seed=seed), information
    if dataset is None:
        raise ValueError("TABA needs images to estimate its information model: give a dataset, or all of "
                         "config.taba.affinity, config.taba.gamma and config.taba.kappa")
    pilot, estimate = pilot_estimate(problem, dataset, config, train_config, seed, workdir, progress, shared_workdirs)
    information, allocation, rounds, floored = estimate.information, pilot, [], []
    if config.flat_slope_floor:
        allocation, floored = floor_flat_tasks(problem, pilot, information.gamma, config.gamma_range, seed)
    intercept, pilot_cost = estimate.intercept, problem.cost_of(pilot.labels)
    for index in range(config.rounds):
        if index:
            round_folder = f"round{index + 1}"
            round_workdir = os.path.join(workdir, round_folder)
            round_shared = [os.path.join(folder, round_folder) for folder in shared_workdirs]
            measure = functools.partial(measure_curve_points, dataset, allocation, config=config,
                                        train_config=train_config, seed=seed, workdir=round_workdir,
                                        progress=progress, shared_workdirs=round_shared)
            points, probe = measure(information=information), None
            if config.transfer_probe is not None:
                probes = transfer_probes(dataset, allocation, points, config, train_config, seed, round_workdir,
                                         progress, round_shared)
                information = information.replace(affinity=probed_affinity(probes))
                points = measure(information=information)  # cached trainings, U under the probed S
                probe = [p.to_json() for p in probes]
            information, intercept = refit_information(information, intercept, points, config,
                                                       dataset.task_specs(problem.task_names), problem.num_images)
            rounds.append({"spent": allocation.spent, "points": points.to_json(), "transfer_probe": probe,
                           "information": information.to_json(), "intercept": intercept.tolist()})
        last = index == config.rounds - 1
        # A round whose share the floor has already spent buys nothing more.
        stage = problem if last else BudgetProblem(
            problem.task_names, problem.costs, problem.num_images,
            max(pilot_cost + (problem.budget - pilot_cost) * (index + 1) / config.rounds, allocation.spent))
        explore = index == 0 and config.explore is not None
        allocation = allocate(stage, config.explore if explore else "taba", information=information,
                              initial=allocation, seed=seed)
    allocation = dataclasses.replace(allocation, info={**allocation.info, "taba": {
        **estimate.to_json(), "rounds": rounds, "floored_tasks": floored}})
    return allocation, information


def floor_flat_tasks(problem: BudgetProblem, allocation: Allocation, gamma, gamma_range,
                     seed: int) -> tuple[Allocation, list[str]]:
    """`allocation` topped up so that every task whose slope sits at the lower clip of `gamma_range`
    holds at least equal_budget's label count (`config.taba.flat_slope_floor`); returns it and the
    names of those tasks. The greedy then spends the rest from there."""
    flat = np.asarray(gamma, np.float64) <= gamma_range[0] * (1 + 1e-6)
    counts = np.where(flat, strategies.equal_budget_counts(problem), 0)
    return (strategies.top_up(problem, allocation, counts, seed=seed),
            [name for name, is_flat in zip(problem.task_names, flat) if is_flat])


def measure_curve_points(dataset: MultiTaskDataset, allocation: Allocation, information: InformationModel,
                         config: TabaConfig, train_config: TrainConfig, seed: int, workdir: str,
                         progress: bool = False, shared_workdirs=()) -> CurvePoints:
    """Trains models on `allocation` and on its nested subsets (each task's labeled images cut to
    `config.subset_fractions` of their number, prefixes of one seeded order per task) and returns
    their learning-curve points, with U under `information`. The validation losses and errors are
    cached as `<workdir>/points.json` for the same allocation and measuring config (or reused from
    `<shared>/points.json` of a folder of `shared_workdirs`); U is recomputed from the subsets for
    whichever information model asks, so variants that differ in `MODEL_FIELDS` share a round too."""
    tasks = dataset.task_specs(allocation.problem.task_names)
    names = [t.name for t in tasks]
    orders = _round_orders(allocation, seed)
    fractions = sorted(set(config.subset_fractions)) + [1.0]
    subsets = [{t: np.sort(order[:int(round(f * len(order)))]) for t, order in orders.items()} for f in fractions]
    labels = np.zeros((len(subsets), len(names)), np.float64)
    information_values = np.zeros_like(labels)
    for k, labeled in enumerate(subsets):
        matrix = np.zeros_like(allocation.labels)
        for index, t in enumerate(names):
            matrix[labeled[t], index] = True
        labels[k] = matrix.sum(axis=0)
        information_values[k] = np.asarray(model_information(information, matrix))
    cache, key, saved = _round_cache("points.json", workdir, shared_workdirs, allocation, config, train_config, seed)
    if saved is not None:
        measured = CurvePoints.from_json(saved["points"])
        return dataclasses.replace(measured, information=information_values)
    losses, errors = validation_curves(dataset, tasks, subsets, _estimation_train_config(train_config), seed,
                                       [os.path.join(workdir, f"subset_{f:g}") for f in fractions], [], progress)
    points = CurvePoints(labels, information_values, losses, errors)
    io_utils.write_json(cache, {"key": key, "points": points.to_json()})
    return points


def _round_cache(name: str, workdir: str, shared_workdirs, allocation: Allocation, config: TabaConfig,
                 train_config: TrainConfig, seed: int, **measured) -> tuple[str, dict, dict | None]:
    """A round measurement's cache `<workdir>/<name>`, its key (the allocation's labels, the seed, the
    training, the measuring fields of `config` and `measured`) and what is saved for that key there
    or in `<shared>/<name>` of a folder of `shared_workdirs` (None)."""
    cache = os.path.join(workdir, name)
    key = _measurement_key(config, FIT_FIELDS + MODEL_FIELDS, labels=allocation.metadata()["labels_sha256"],
                           seed=seed, train=to_json(train_config), **measured)
    return cache, key, _shared_cache(cache, key, [os.path.join(folder, name) for folder in shared_workdirs])


def _round_orders(allocation: Allocation, seed: int) -> dict[str, np.ndarray]:
    """Per task, its labeled images of `allocation` in one seeded order: a round's subsets cut them to
    prefixes of it."""
    return {t: rng.numpy_rng(seed, "round_subsets", index).permutation(allocation.labeled_indices(index))
            for index, t in enumerate(allocation.problem.task_names)}


@dataclasses.dataclass(frozen=True)
class TransferProbe:
    """One transfer probe at a round's allocation, all its models trained with one training seed: the
    whole-set model's label counts, validation losses and primary-metric errors (T,) and those of the
    T cut models (T, T), row s = task s cut (`probe_transfer`)."""

    seed: int
    labels: np.ndarray
    losses: np.ndarray
    errors: np.ndarray
    cut_labels: np.ndarray
    cut_losses: np.ndarray
    cut_errors: np.ndarray

    def affinity(self) -> np.ndarray:
        """S as this probe reads it: `readable_affinity` of the errors' `probe_elasticity`. (The
        losses' elasticities repeat less across training seeds: docs/results/probe_reliability.py.)"""
        return readable_affinity(probe_elasticity(self.labels, self.errors, self.cut_labels, self.cut_errors),
                                 self.labels)

    def to_json(self) -> dict:
        return {field.name: np.asarray(getattr(self, field.name)).tolist() for field in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: dict) -> TransferProbe:
        return cls(int(data["seed"]), *(np.asarray(data[field.name], np.float64)
                                         for field in dataclasses.fields(cls)[1:]))


def probe_seed(seed: int, repeat: int) -> int:
    """The training seed of the transfer probe's `repeat` (0: the run's own `seed`)."""
    return seed if repeat == 0 else int(rng.numpy_rng(seed, "probe_repeat", repeat).integers(2**31 - 1))


def transfer_probes(dataset: MultiTaskDataset, allocation: Allocation, points: CurvePoints, config: TabaConfig,
                    train_config: TrainConfig, seed: int, workdir: str, progress: bool = False,
                    shared_workdirs=()) -> list[TransferProbe]:
    """`config.transfer_probe_repeats` transfer probes at a round's `allocation`: the first with the
    run's `seed` against the round's whole-set model (the last of `points`), its cuts in `workdir`;
    each further one with its own training seed (`probe_seed`: initialisation, data order and which
    labels a cut keeps all change), its whole-set model and cuts in `<workdir>/probe_repeat<r>`,
    cached like the cuts."""
    probes = []
    for repeat in range(config.transfer_probe_repeats):
        repeat_seed = probe_seed(seed, repeat)
        folder, shared = workdir, list(shared_workdirs)
        if repeat:
            folder = os.path.join(workdir, f"probe_repeat{repeat}")
            shared = [os.path.join(other, f"probe_repeat{repeat}") for other in shared_workdirs]
            whole = whole_set_validation(dataset, allocation, config, train_config, repeat_seed, folder, progress,
                                         shared)
        else:
            whole = points.labels[-1], points.losses[-1], points.errors[-1]
        cuts = probe_transfer(dataset, allocation, config, train_config, repeat_seed, folder, progress, shared)
        probes.append(TransferProbe(repeat_seed, *whole, *cuts))
    return probes


def whole_set_validation(dataset: MultiTaskDataset, allocation: Allocation, config: TabaConfig,
                         train_config: TrainConfig, seed: int, workdir: str, progress: bool = False,
                         shared_workdirs=()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One model trained on all of `allocation` with `seed`, as a round's largest curve point is:
    its label counts, validation losses and primary-metric errors (T,) each. Cached as
    `<workdir>/whole.json` like the round's points."""
    (losses,), (errors,) = _cached_validation("whole.json", dataset, allocation, [allocation.labeled_sets()],
                                              ["whole"], config, train_config, seed, workdir, progress,
                                              shared_workdirs)
    return allocation.labels.sum(axis=0).astype(np.float64), losses, errors


def _cached_validation(name: str, dataset: MultiTaskDataset, allocation: Allocation, subsets: list[dict],
                       folders: list[str], config: TabaConfig, train_config: TrainConfig, seed: int, workdir: str,
                       progress: bool, shared_workdirs, **measured) -> tuple[np.ndarray, np.ndarray]:
    """`validation_curves` of models trained on `subsets` of a round's `allocation` (in `<workdir>/<folder>`),
    cached as `<workdir>/<name>` under `_round_cache`'s key (with `measured`), or read from there or
    from a folder of `shared_workdirs`: their validation losses and primary-metric errors, (K, T) each.
    A cache of one model may hold them as (T,) (how `whole_set_validation` wrote them before)."""
    cache, key, saved = _round_cache(name, workdir, shared_workdirs, allocation, config, train_config, seed,
                                     **measured, values=("losses", "errors"))
    if saved is not None:
        return tuple(np.asarray(saved[field], np.float64).reshape(len(subsets), -1)
                     for field in ("losses", "errors"))
    losses, errors = validation_curves(dataset, dataset.task_specs(allocation.problem.task_names), subsets,
                                       _estimation_train_config(train_config), seed,
                                       [os.path.join(workdir, folder) for folder in folders], [], progress)
    io_utils.write_json(cache, {"key": key, "losses": losses.tolist(), "errors": errors.tolist()})
    return losses, errors


def probe_transfer(dataset: MultiTaskDataset, allocation: Allocation, config: TabaConfig, train_config: TrainConfig,
                   seed: int, workdir: str, progress: bool = False,
                   shared_workdirs=()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`config.transfer_probe`: T models trained on `allocation`, model s with task s's labeled images
    cut to the fraction `config.transfer_probe` (a prefix of the round's order) and every other task's
    kept. Returns their label counts, validation losses and primary-metric errors, (T, T) each, row s =
    the task cut. Cached as `<workdir>/transfer_probe.json` like `measure_curve_points`' points."""
    names = allocation.problem.task_names
    orders = _round_orders(allocation, seed)
    subsets = [{t: np.sort(order[:int(round(config.transfer_probe * len(order)))] if t == cut else order)
                for t, order in orders.items()} for cut in names]
    labels = np.array([[len(subset[t]) for t in names] for subset in subsets], np.float64)
    losses, errors = _cached_validation("transfer_probe.json", dataset, allocation, subsets,
                                        [f"cut_{t}" for t in names], config, train_config, seed, workdir, progress,
                                        shared_workdirs, transfer_probe=config.transfer_probe)
    return labels, losses, errors


def probe_elasticity(labels, errors, cut_labels, cut_errors) -> np.ndarray:
    """(T, T) b[s, t] = d log e_t / d log n_s from one model on `labels` (T,) with errors `errors` (T,)
    and the models of `probe_transfer` (row s: task s cut): the finite difference of log e_t between
    the two over that of log n_s. Negative where s's labels help t; NaN in row s where the cut removed
    none of s's labels or left none."""
    labels, errors = np.asarray(labels, np.float64), np.asarray(errors, np.float64)
    cut_labels, cut_errors = np.asarray(cut_labels, np.float64), np.asarray(cut_errors, np.float64)
    removed = np.log(np.maximum(np.diag(cut_labels), 1e-12)) - np.log(np.maximum(labels, 1e-12))
    step = np.where((np.diag(cut_labels) > 0) & (removed < 0), removed, np.nan)
    return (np.log(cut_errors) - np.log(errors)[None, :]) / step[:, None]


def affinity_from_elasticity(elasticity, labels, usable) -> np.ndarray:
    """METHOD's unit for measured transfer: an s label gives t the share S[s, t] of a t label, so the
    two label derivatives of log e_t are in the ratio S[s, t]: S = b[s, t] / b[t, t] * n_t / n_s
    (negative where s's labels hurt t), 1 on the diagonal; NaN in every column whose `usable` (T,) is
    False (its own elasticity is not a measured gain: no unit to measure transfer in)."""
    elasticity, labels = np.asarray(elasticity, np.float64), np.asarray(labels, np.float64)
    usable = np.asarray(usable, bool)
    own = np.where(usable, np.diag(elasticity), 1.0)
    implied = np.where(usable[None, :], elasticity / own[None, :] * labels[None, :] / labels[:, None], np.nan)
    np.fill_diagonal(implied, np.where(usable, 1.0, np.nan))
    return implied


def probed_affinity(probes: list[TransferProbe]) -> np.ndarray:
    """The affinity S the information model takes from a round's transfer probes: the mean of their
    readings (`TransferProbe.affinity`)."""
    return np.mean([probe.affinity() for probe in probes], axis=0)


def readable_affinity(elasticity, labels) -> np.ndarray:
    """S as the information model reads it from label elasticities b (T, T) at `labels` (T,):
    `affinity_from_elasticity` in every column whose own labels measurably lowered its error
    (b[t, t] < 0), clipped to [0, 1] (METHOD's range: harm is read as none); 0 off the diagonal where
    nothing was measured."""
    own = np.diag(np.asarray(elasticity, np.float64))
    implied = affinity_from_elasticity(elasticity, labels, np.isfinite(own) & (own < 0))
    affinity = np.clip(np.nan_to_num(implied, nan=0.0), 0.0, 1.0)
    np.fill_diagonal(affinity, 1.0)
    return affinity


def fit_floored_curve(sizes, values, kappa: float, gamma_range=(0.05, 1.5),
                      grid: int = 64) -> tuple[float, float, float, float]:
    """`v = f + b n^-gamma` with an irreducible floor `0 <= f <= min v` and `b >= 0`, fitted by
    least squares of the relative residuals over a geometric grid of `grid` slopes in `gamma_range`
    (f and b are linear given gamma). Returns (gamma, f, b, reducible share at n = 0): the curve read
    as METHOD's `f + b kappa^-gamma (1 + n/kappa)^-gamma`, the share is `b kappa^-gamma / (f + b
    kappa^-gamma)` — the part of the untrained loss that labels can remove. Needs three distinct
    sizes (three parameters)."""
    sizes, values = np.asarray(sizes, np.float64), np.asarray(values, np.float64)
    if sizes.ndim != 1 or len(np.unique(sizes)) < 3 or (sizes <= 0).any():
        raise ValueError(f"sizes must hold at least three distinct positive values, got {sizes.tolist()}")
    if values.shape != sizes.shape or not (values > 0).all():
        raise ValueError(f"values must be positive with shape {sizes.shape}, got {values.tolist()}")
    best = None
    for gamma in np.geomspace(*gamma_range, grid):
        z = sizes ** -gamma
        design = np.stack([np.ones_like(z), z], axis=1) / values[:, None]  # relative residuals
        (floor, scale), *_ = np.linalg.lstsq(design, np.ones_like(values), rcond=None)
        floor = float(np.clip(floor, 0.0, values.min()))
        scale = max(float(z @ ((values - floor) / values ** 2) / (z @ (z / values ** 2))), 0.0)
        error = float(np.sum(((floor + scale * z) / values - 1.0) ** 2))
        if best is None or error < best[0]:
            best = (error, float(gamma), floor, scale)
    _, gamma, floor, scale = best
    reducible = scale * kappa ** -gamma
    return gamma, floor, scale, reducible / (floor + reducible)


def refit_information(information: InformationModel, intercept, points: CurvePoints, config: TabaConfig,
                      tasks: list[TaskSpec], pool_size: int) -> tuple[InformationModel, np.ndarray]:
    """The information model with every task's curve refitted on `points` (`refit_learning_curves`;
    given gamma stay) and, for `objective="delta_m"`, the weights recomputed for a pool of
    `pool_size` images; S and kappa stay. U is in effective images (a fully labeled image gives 1).

    With `config.refit_floor` (and no given gamma), every task with three or more own points is fitted
    with an irreducible floor (`fit_floored_curve`) and weighted by what labels can still remove: its
    reducible share of the untrained value (objective "relative"), or that reducible error over the
    reference metric the floored curve reaches at the whole pool (objective "delta_m"). A task whose
    curve has flattened at its floor (learned) stops drawing money, which a power law without a
    floor, falling forever, cannot express."""
    gamma = np.asarray(information.gamma, np.float64)
    values = points.losses if config.curve_fit == "loss" else points.errors
    error_map = (metric_error_map(values, points.errors, points.labels > 0)
                 if config.objective == "delta_m" and config.curve_fit == "loss" else None)
    if config.gamma is None:
        gamma, intercept = refit_learning_curves(points, values, gamma, intercept, config.gamma_range)
    refitted = information.replace(gamma=gamma)
    if config.refit_floor and config.gamma is None:
        higher_is_better = [t.higher_is_better for t in tasks]
        gamma, intercept = np.array(gamma, np.float64), np.array(intercept, np.float64)
        kappa = np.asarray(information.kappa, np.float64)
        # Tasks left on the power law (fewer than three own points) keep its weight.
        weights = (np.ones_like(gamma) if config.objective != "delta_m"
                   else _power_law_sensitivity(gamma, intercept, kappa, pool_size, higher_is_better, error_map))
        for t in range(values.shape[1]):
            own = points.labels[:, t] > 0
            if len(np.unique(points.information[own, t])) >= 3:
                gamma[t], floor, scale, share = fit_floored_curve(points.information[own, t], values[own, t],
                                                                  kappa[t], config.gamma_range)
                intercept[t] = np.log(max(scale, 1e-12))
                weights[t] = share if config.objective != "delta_m" else _delta_m_sensitivity(
                    scale * kappa[t] ** -gamma[t], floor + scale * float(pool_size) ** -gamma[t], higher_is_better[t],
                    None if error_map is None else tuple(m[t] for m in error_map))
        if config.objective == "delta_m_local":
            local = local_delta_m_weights(points, refitted.replace(gamma=gamma), higher_is_better, weights,
                                          config.local_points)
            weights = (local if config.local_mix == 1 else
                       config.local_mix * _mean_one(local) + (1.0 - config.local_mix) * _mean_one(weights))
        if weights.sum() <= 0 or config.objective != "relative":
            weights = _objective_weights(weights)  # as delta_m_weights
        refitted = information.replace(gamma=gamma, weights=weights)
    elif config.objective == "delta_m":
        refitted = _with_delta_m_weights(refitted, intercept, pool_size, tasks, error_map)
    return refitted, np.asarray(intercept, np.float64)


def _mean_one(weights: np.ndarray) -> np.ndarray:
    """`weights` scaled to mean 1 (all 0 stay 0): the greedy reads only their ratios."""
    mean = float(np.mean(weights))
    return weights / mean if mean > 0 else weights


def _objective_weights(weights: np.ndarray) -> np.ndarray:
    """Task weights for the greedy's objective: scaled to mean 1, or equal where every task's is 0
    (no task's metric can move, so none is preferred); a NaN weight stays NaN, not hidden."""
    return np.ones_like(weights) if weights.sum() <= 0 else _mean_one(weights)


def local_delta_m_weights(points: CurvePoints, information: InformationModel, higher_is_better,
                          default, local_points: int | None = None) -> np.ndarray:
    """Per task, the weight that scales `information`'s curve to the Delta_m its primary metric measured
    over the task's `local_points` largest own points of `points` (None: all of them;
    `objective="delta_m_local"`): minus the least-squares slope of `E_k / M` against the curve's value
    (the relative loss reduction, rising with labels) at each point, with M the metric at the largest
    point (1 - E for a score), never below 0. One weighted unit of curve then buys one Delta_m point
    where it was measured, not extrapolated to a reference. Tasks with fewer than two distinct own
    points keep `default`."""
    weights = np.array(default, np.float64)
    curve = np.asarray(curve_values(information, points.information), np.float64)  # (K, T)
    for t, higher in enumerate(higher_is_better):
        own = np.flatnonzero(points.labels[:, t] > 0)
        own = own[np.argsort(points.information[own, t], kind="stable")][-(local_points or len(own)):]
        if len(np.unique(points.information[own, t])) < 2:
            continue
        metric = 1.0 - points.errors[own[-1], t] if higher else points.errors[own[-1], t]
        x = curve[own, t] - curve[own, t].mean()
        y = points.errors[own, t] / max(metric, 1e-6)
        spread = float(x @ x)
        weights[t] = max(-float(x @ y) / spread, 0.0) if spread > 0 else 0.0
    return weights


class _AffinityProbe:
    """Training callback: every `affinity_every` steps after `affinity_start`, Z on a pilot batch."""

    def __init__(self, dataset: MultiTaskDataset, tasks: list[TaskSpec], pilot_images, config: TabaConfig,
                 train_config: TrainConfig, seed: int):
        self.dataset, self.tasks, self.images, self.seed = dataset, tuple(tasks), np.sort(pilot_images), seed
        self.batch_size, self.lr = config.affinity_batch_size, config.affinity_lr
        self.normalize = config.affinity_step == "normalized"
        self.start = int(config.affinity_start * train_config.num_steps)
        self.model = build_model(tasks, train_config)
        self.values, self.steps = [], []

    def __call__(self, step: int, state) -> None:
        if step <= self.start:
            return
        generator = rng.numpy_rng(self.seed, "affinity_batch", step)
        idx = np.sort(generator.choice(self.images, self.batch_size, replace=len(self.images) < self.batch_size))
        images, targets = self.dataset.train.batch(idx, [t.name for t in self.tasks])
        z = _lookahead(self.model, self.tasks, self.lr, self.normalize, state.params, images, targets)
        self.values.append(np.asarray(z, np.float64))
        self.steps.append(step)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _lookahead(model, tasks: tuple[TaskSpec, ...], learning_rate: float, normalize: bool, params, images,
               targets) -> jax.Array:
    """`lookahead_affinity` of a multi-task model's task losses on one batch, backbone moved only."""
    def losses(p, inputs):
        predictions = model.apply(p, inputs[0])
        return jnp.stack([t.loss(predictions[t.name], inputs[1][t.name]) for t in tasks])

    return lookahead_affinity(losses, params, (images, targets), shared_parameters(params), learning_rate, normalize)
