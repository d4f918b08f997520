"""Multi-task loss weighting and gradient combination for partially labeled training.

Every method maps one step's per-task losses (T,) (and, for gradient methods, the per-task
gradients of the shared parameters) to task weights (T,): the shared parameters descend
`sum_t weights[t] * grad L_t`. Weights are on the scale of the plain sum of losses (`equal` gives 1
per present task), so one learning rate suits every method; the papers' mean-scaled directions
(CAGrad, IMTL) are multiplied by the number of present tasks.

Partial labels: `present` (T,) bool marks the tasks with a batch this step. An absent task gets
weight 0, its loss and gradient are ignored, and its entries of the method's state are left
exactly as they were (per-task optimizer states included).

Methods are frozen dataclasses (hashable: usable as static jit arguments) with
`init(num_tasks) -> state` and
`combine(state, losses, task_grads, present, key) -> (shared_grad, weights, new_state, aux)`;
states are flax struct dataclasses (pytrees that `flax.serialization` and orbax save and restore).
Loss-only methods (`equal`, `uncertainty`, `dwa`) also offer `loss_weights`, `weighted_loss` and
`update`, so a step needs one backward pass instead of T. `gradients(...)` is the per-step entry
point for a trainer.

Learnable method parameters (uncertainty's log-variances, GradNorm's weights) live in the method
state and are trained inside `update`/`combine` by their own small optax Adam, vmapped over tasks so
that each task has its own moments and step count: GradNorm's weights follow a different loss than
the model, the model optimizer's weight decay and warm-up would bias and freeze them, and the model's
parameter tree and checkpoints stay the same whatever the method.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, ClassVar

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

HIGHEST = jax.lax.Precision.HIGHEST


@flax.struct.dataclass
class Stateless:
    """State of the methods that keep none."""


@flax.struct.dataclass
class UncertaintyState:
    log_variances: jax.Array  # (T,) s_t = log sigma_t^2
    optimizer: optax.OptState  # Adam state per task (leading axis T)


@flax.struct.dataclass
class DWAState:
    window_sum: jax.Array  # (T,) sum of the task's losses in its current window
    window_steps: jax.Array  # (T,) int32, present steps in the current window
    last_mean: jax.Array  # (T,) mean loss of the task's last completed window
    previous_mean: jax.Array  # (T,) mean loss of the window before
    windows_done: jax.Array  # (T,) int32, completed windows, capped at 2


@flax.struct.dataclass
class GradNormState:
    weights: jax.Array  # (T,) learned loss weights, summing to T
    optimizer: optax.OptState  # Adam state per task (leading axis T)
    initial_losses: jax.Array  # (T,) loss at the task's first present step
    seen: jax.Array  # (T,) bool, the task has been present


def _check_hyperparameter(method: str, field: str, value, *, minimum: float, exclusive: bool = False,
                          integer: bool = False) -> None:
    kind = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    ok = isinstance(value, kind) and not isinstance(value, bool) and np.isfinite(value)
    ok = ok and (value > minimum if exclusive else value >= minimum)
    if not ok:
        requirement = f"{'an integer' if integer else 'a finite number'} {'>' if exclusive else '>='} {minimum}"
        raise ValueError(f"config.weighting={method!r}: hyper-parameter {field}={value!r} must be {requirement}")


def _check_inputs(losses: jax.Array, present: jax.Array) -> None:
    """Static shape checks (shapes are known under jit): one loss and one flag per task."""
    if losses.ndim != 1:
        raise ValueError(f"losses must have shape (T,) (one per task), got {losses.shape}")
    if present.shape != losses.shape:
        raise ValueError(f"present must have shape {losses.shape} (one bool per task), got {present.shape}")


def _check_num_tasks(num_tasks) -> None:
    if not isinstance(num_tasks, (int, np.integer)) or isinstance(num_tasks, bool) or num_tasks < 1:
        raise ValueError(f"num_tasks must be a positive integer, got {num_tasks!r}")


def _where_present(present: jax.Array, new, old):
    """Per-task select over pytrees whose leaves have a leading task axis."""
    def select(n, o):
        return jnp.where(present.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)
    return jax.tree.map(select, new, old)


def _zero_absent(task_grads, present: jax.Array):
    """Absent tasks' rows set to 0 (whatever their loss produced)."""
    return _where_present(present, task_grads, jax.tree.map(jnp.zeros_like, task_grads))


def _per_task_adam_init(optimizer: optax.GradientTransformation, values: jax.Array) -> optax.OptState:
    return jax.vmap(optimizer.init)(values)


def _per_task_adam_step(optimizer, values, opt_state, grads, present):
    """One Adam step per present task; absent tasks keep their values and moments untouched."""
    updates, new_state = jax.vmap(optimizer.update)(grads, opt_state)
    return (jnp.where(present, values + updates, values), _where_present(present, new_state, opt_state))


def combine_rows(weights: jax.Array, task_grads) -> Any:
    """`sum_t weights[t] * task_grads[t]` for every leaf (leading axis T)."""
    return jax.tree.map(lambda g: jnp.tensordot(weights.astype(g.dtype), g, axes=1, precision=HIGHEST), task_grads)


def gram_matrix(task_grads) -> jax.Array:
    """(T, T) inner products of the per-task gradients, summed over leaves, in float32."""
    flat = [g.reshape(g.shape[0], -1).astype(jnp.float32) for g in jax.tree.leaves(task_grads)]
    return sum(jnp.matmul(f, f.T, precision=HIGHEST) for f in flat)


def per_task_gradients(task_loss_fn: Callable[[Any], jax.Array], params) -> tuple[jax.Array, Any]:
    """Losses (T,) and the gradient of each task's loss (pytree, leaves with a leading T axis).

    One forward pass and one vmapped VJP over the rows of the identity: the T backward passes
    are batched by XLA instead of run one after another (as `taba.lookahead_affinity` does).
    """
    losses, vjp = jax.vjp(task_loss_fn, params)
    (grads,) = jax.vmap(vjp)(jnp.eye(losses.shape[0], dtype=losses.dtype))
    return losses, grads


class _Method(abc.ABC):
    """Interface of every method: `init` and `combine` (see the module docstring)."""

    name: ClassVar[str]
    uses_task_gradients: ClassVar[bool]

    def init(self, num_tasks: int):
        """The state before the first step; this default is for methods that keep none."""
        _check_num_tasks(num_tasks)
        return Stateless()

    @abc.abstractmethod
    def combine(self, state, losses: jax.Array, task_grads, present: jax.Array, key: jax.Array | None = None):
        """(shared gradient `sum_t weights[t] task_grads[t]`, weights (T,), new state, aux dict).

        `task_grads`: the shared parameters' per-task gradients (leaves with a leading T axis).
        """


class _LossWeighting(_Method):
    """A method that only reweights losses: weights come from the state, not from gradients."""

    uses_task_gradients: ClassVar[bool] = False

    @abc.abstractmethod
    def loss_weights(self, state, present: jax.Array) -> jax.Array:
        """Weights (T,) of this step; 0 for absent tasks."""

    def weighted_loss(self, state, losses: jax.Array, present: jax.Array) -> jax.Array:
        """The scalar objective of this step (differentiable in `losses`)."""
        return jnp.sum(self.loss_weights(state, present) * jnp.where(present, losses, 0.0))

    def update(self, state, losses: jax.Array, present: jax.Array):
        """State after a step with these (gradient-free) losses; absent tasks' entries unchanged."""
        return state

    def combine(self, state, losses, task_grads, present, key=None):
        losses, present = jnp.asarray(losses), jnp.asarray(present, bool)
        _check_inputs(losses, present)
        weights = self.loss_weights(state, present)
        return (combine_rows(weights, _zero_absent(task_grads, present)), weights, self.update(state, losses, present),
                {})


class _GradientWeighting(_Method):
    """A method that needs the per-task gradients of the shared parameters (through their Gram matrix).

    `reweights_heads`: whether task heads get `weights[t] * grad L_t` (methods that reweight losses)
    or their plain gradient (gradient-surgery methods, whose combination concerns the shared
    parameters only).
    """

    uses_task_gradients: ClassVar[bool] = True
    reweights_heads: ClassVar[bool] = False

    @abc.abstractmethod
    def weights_from_gram(self, state, losses, gram, present, key):
        """(weights (T,), new_state, aux) from the losses and the (T, T) Gram matrix."""

    def combine(self, state, losses, task_grads, present, key=None):
        losses, present = jnp.asarray(losses), jnp.asarray(present, bool)
        _check_inputs(losses, present)
        task_grads = _zero_absent(task_grads, present)
        weights, state, aux = self.weights_from_gram(state, jnp.where(present, losses, 0.0),
                                                     gram_matrix(task_grads), present, key)
        return combine_rows(weights, task_grads), weights, state, aux


@dataclasses.dataclass(frozen=True)
class Equal(_LossWeighting):
    """The plain sum of the present tasks' losses."""

    name: ClassVar[str] = "equal"

    def loss_weights(self, state, present):
        return jnp.asarray(present, jnp.float32)


@dataclasses.dataclass(frozen=True)
class Uncertainty(_LossWeighting):
    """Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018).

    Objective `sum_t exp(-s_t) L_t + s_t` with learned log-variances `s_t = log sigma_t^2`, one form
    for every task kind: twice the paper's regression form `L / (2 sigma^2) + log sigma` (the
    classification form halves the regulariser instead). For fixed losses the optimum is
    `s* = log L`, i.e. weight `exp(-s*) = 1 / L`. s starts at 0 (weight 1) and follows the
    gradient of the objective by its own Adam; an absent task's s gets no gradient.
    """

    learning_rate: float = 0.01
    name: ClassVar[str] = "uncertainty"

    def __post_init__(self):
        _check_hyperparameter(self.name, "learning_rate", self.learning_rate, minimum=0.0, exclusive=True)

    def init(self, num_tasks: int) -> UncertaintyState:
        _check_num_tasks(num_tasks)
        log_variances = jnp.zeros(num_tasks, jnp.float32)
        return UncertaintyState(log_variances, _per_task_adam_init(optax.adam(self.learning_rate), log_variances))

    def loss_weights(self, state, present):
        return jnp.where(present, jnp.exp(-state.log_variances), 0.0)

    def weighted_loss(self, state, losses, present):
        terms = jnp.exp(-state.log_variances) * losses + state.log_variances
        return jnp.sum(jnp.where(present, terms, 0.0))

    def update(self, state, losses, present):
        losses = jax.lax.stop_gradient(losses)
        grads = jax.grad(lambda s: self.weighted_loss(state.replace(log_variances=s), losses, present))(
            state.log_variances)
        log_variances, optimizer = _per_task_adam_step(optax.adam(self.learning_rate), state.log_variances, state.optimizer,
                                                       grads, present)
        return UncertaintyState(log_variances, optimizer)


@dataclasses.dataclass(frozen=True)
class DWA(_LossWeighting):
    """Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019, MTAN).

    `w_t = n * softmax_t(r_t / temperature)` over the n present tasks, with `r_t` the ratio of the
    task's mean loss over its last two completed windows. The paper's window is an epoch; here a
    task's window is `window` of its own present steps, so every window mean averages the same
    number of batches however rarely the task is labeled, and an absent step leaves the task's
    state untouched. Tasks with fewer than two completed windows (or a zero mean loss) have ratio 1:
    all weights are equal during the first two windows, as in the paper's first two epochs.
    """

    temperature: float = 2.0
    window: int = 50
    name: ClassVar[str] = "dwa"

    def __post_init__(self):
        _check_hyperparameter(self.name, "temperature", self.temperature, minimum=0.0, exclusive=True)
        _check_hyperparameter(self.name, "window", self.window, minimum=1, integer=True)

    def init(self, num_tasks: int) -> DWAState:
        _check_num_tasks(num_tasks)
        zeros = jnp.zeros(num_tasks, jnp.float32)
        counts = jnp.zeros(num_tasks, jnp.int32)
        return DWAState(zeros, counts, zeros, zeros, counts)

    def loss_weights(self, state, present):
        defined = (state.windows_done >= 2) & (state.previous_mean > 0)
        ratio = jnp.where(defined, state.last_mean / jnp.where(defined, state.previous_mean, 1.0), 1.0)
        logits = ratio / self.temperature
        logits = logits - jnp.max(jnp.where(present, logits, jnp.min(logits)))
        scores = jnp.where(present, jnp.exp(logits), 0.0)
        return jnp.sum(present) * scores / jnp.maximum(jnp.sum(scores), jnp.finfo(jnp.float32).tiny)

    def update(self, state, losses, present):
        window_sum = state.window_sum + jnp.where(present, jax.lax.stop_gradient(losses), 0.0)
        window_steps = state.window_steps + present
        complete = window_steps >= self.window
        return DWAState(window_sum=jnp.where(complete, 0.0, window_sum),
                        window_steps=jnp.where(complete, 0, window_steps),
                        last_mean=jnp.where(complete, window_sum / self.window, state.last_mean),
                        previous_mean=jnp.where(complete, state.last_mean, state.previous_mean),
                        windows_done=jnp.minimum(state.windows_done + complete, 2))


@dataclasses.dataclass(frozen=True)
class GradNorm(_GradientWeighting):
    """GradNorm (Chen et al., ICML 2018): learned loss weights that equalise training rates.

    With `G_t = ||w_t grad L_t||`, `Ḡ` their mean and `r_t = (L_t / L_t(0)) / mean(L / L(0))` the
    relative inverse training rate, the weights descend `sum_t |G_t - Ḡ r_t^alpha|` (target held
    constant) by their own Adam, then are renormalised so the weights keep summing to T. Gradient
    norms are taken over all shared parameters, not the paper's last shared layer: the per-task
    gradients of all of them are computed anyway, and an encoder-decoder with skip connections and
    pooled heads has no single last shared layer. Partial labels: `L_t(0)` is the loss at the
    task's first present step; means run over present tasks; absent tasks' weights and Adam state
    are left unchanged, and renormalisation rescales the present weights to their previous sum.
    Weights are used for the heads too (GradNorm reweights the losses).
    """

    alpha: float = 1.5
    learning_rate: float = 0.025
    name: ClassVar[str] = "gradnorm"
    reweights_heads: ClassVar[bool] = True
    min_weight: ClassVar[float] = 1e-3  # keeps weights positive when a step overshoots

    def __post_init__(self):
        _check_hyperparameter(self.name, "alpha", self.alpha, minimum=0.0)
        _check_hyperparameter(self.name, "learning_rate", self.learning_rate, minimum=0.0, exclusive=True)

    def init(self, num_tasks: int) -> GradNormState:
        _check_num_tasks(num_tasks)
        weights = jnp.ones(num_tasks, jnp.float32)
        return GradNormState(weights, _per_task_adam_init(optax.adam(self.learning_rate), weights),
                             jnp.zeros(num_tasks, jnp.float32), jnp.zeros(num_tasks, bool))

    def weights_from_gram(self, state, losses, gram, present, key):
        tiny = jnp.finfo(jnp.float32).tiny
        count = jnp.maximum(jnp.sum(present), 1)
        grad_norms = jnp.sqrt(jnp.maximum(jnp.diag(gram), 0.0))
        first = present & ~state.seen
        initial_losses = jnp.where(first, losses, state.initial_losses)
        inverse_rate = jnp.where(present, losses / jnp.maximum(initial_losses, tiny), 0.0)
        relative_rate = inverse_rate / jnp.maximum(jnp.sum(inverse_rate) / count, tiny)
        mean_norm = jnp.sum(jnp.where(present, state.weights * grad_norms, 0.0)) / count
        target = mean_norm * relative_rate ** self.alpha  # held constant (not differentiated), as in the paper

        gap = state.weights * grad_norms - target
        loss = jnp.sum(jnp.where(present, jnp.abs(gap), 0.0))
        grads = jnp.where(present, jnp.sign(gap) * grad_norms, 0.0)  # d loss / d w_t (sign(0) = 0: on target)
        stepped, optimizer = _per_task_adam_step(optax.adam(self.learning_rate), state.weights, state.optimizer, grads, present)
        stepped = jnp.where(present, jnp.maximum(stepped, self.min_weight), stepped)
        scale = (jnp.sum(jnp.where(present, state.weights, 0.0))
                 / jnp.maximum(jnp.sum(jnp.where(present, stepped, 0.0)), tiny))
        new_weights = jnp.where(present, stepped * scale, state.weights)
        new_state = GradNormState(new_weights, optimizer, initial_losses, state.seen | present)
        return jnp.where(present, state.weights, 0.0), new_state, {"gradnorm_loss": loss}


@dataclasses.dataclass(frozen=True)
class PCGrad(_GradientWeighting):
    """Projecting Conflicting Gradients (Yu et al., NeurIPS 2020).

    Each present task's gradient is projected, in a random order of the other present tasks (one
    order per task, from `key`), onto the normal plane of every task gradient it conflicts with
    (negative inner product), and the projected gradients are summed. Done on coefficients over the
    original gradients through their Gram matrix, so the result is reported as effective weights.
    Heads get their plain gradients.
    """

    name: ClassVar[str] = "pcgrad"

    def weights_from_gram(self, state, losses, gram, present, key):
        if key is None:
            raise ValueError("config.weighting='pcgrad' needs a PRNG key (it shuffles the task order)")
        num_tasks = gram.shape[0]

        def project(task, task_key):
            order = jax.random.permutation(task_key, num_tasks)

            def step(position, carry):
                row, conflicts = carry
                other = order[position]
                dot = row @ gram[:, other]  # <projected g_task, g_other>
                conflict = present[task] & present[other] & (other != task) & (dot < 0)
                coefficient = jnp.where(conflict, dot / jnp.where(conflict, gram[other, other], 1.0), 0.0)
                return row.at[other].add(-coefficient), conflicts + conflict

            start = jnp.where(present[task], jax.nn.one_hot(task, num_tasks, dtype=gram.dtype), 0.0)
            return jax.lax.fori_loop(0, num_tasks, step, (start, jnp.int32(0)))

        rows, conflicts = jax.vmap(project)(jnp.arange(num_tasks), jax.random.split(key, num_tasks))
        return rows.sum(axis=0), state, {"pcgrad_conflicts": conflicts.sum()}


def _project_to_simplex(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Euclidean projection onto {w >= 0, sum w = 1, w = 0 outside mask} (sort-based, Duchi et al. 2008)."""
    # Entries outside the mask sit 2 below the smallest value: the threshold exceeds max - 1, so they project to 0.
    values = jnp.where(mask, values, jnp.min(values) - 2.0)
    ordered = jnp.sort(values)[::-1]
    cumulative = jnp.cumsum(ordered)
    ranks = jnp.arange(1, values.shape[0] + 1, dtype=values.dtype)
    support = jnp.max(jnp.where(ordered - (cumulative - 1.0) / ranks > 0, jnp.arange(values.shape[0]), 0))
    threshold = (cumulative[support] - 1.0) / (support + 1)
    return jnp.where(mask, jnp.maximum(values - threshold, 0.0), 0.0)


@dataclasses.dataclass(frozen=True)
class CAGrad(_GradientWeighting):
    """Conflict-Averse Gradient descent (Liu et al., NeurIPS 2021).

    The update `d` maximises the worst task's first-order improvement `min_t <g_t, d>` within the
    ball `||d - g0|| <= c ||g0||` around the mean gradient g0 of the present tasks. Its dual,
    `min_{w in simplex} <g_w, g0> + c ||g0|| ||g_w||` with `g_w = sum_t w_t g_t`, is solved on the
    Gram matrix by `solver_steps` accelerated projected-gradient steps (FISTA with adaptive restart;
    the step uses the curvature of the majorising quadratic at the current `||g_w||`; the best
    iterate is kept); then `d = g0 + c ||g0|| g_w / ||g_w||`. `d` always lies on the c-ball, c=0
    gives the mean gradient. No rescaling (the official code optionally divides by 1 + c^2): the
    step is up to (1 + c) times the mean's length. Reported weights are `d`'s coefficients times the
    number of present tasks (the sum-of-losses scale). Heads get their plain gradients.
    """

    c: float = 0.4
    solver_steps: int = 200
    name: ClassVar[str] = "cagrad"

    def __post_init__(self):
        _check_hyperparameter(self.name, "c", self.c, minimum=0.0)
        _check_hyperparameter(self.name, "solver_steps", self.solver_steps, minimum=1, integer=True)

    def weights_from_gram(self, state, losses, gram, present, key):
        count = jnp.sum(present)
        pair = present[:, None] & present[None, :]
        # The dual's minimiser is invariant to the scale of the gradients: normalise to mean squared norm 1.
        gram = jnp.where(pair, gram, 0.0)
        gram = gram / jnp.maximum(jnp.trace(gram) / jnp.maximum(count, 1), jnp.finfo(jnp.float32).tiny)
        mean_weights = present / jnp.maximum(count, 1)
        gram_mean = gram @ mean_weights  # <g_t, g0>
        radius = self.c * jnp.sqrt(jnp.maximum(mean_weights @ gram_mean, 0.0))  # c ||g0||
        lipschitz = jnp.linalg.norm(gram)  # >= the largest eigenvalue
        floor = 1e-12

        def objective(w):
            return w @ gram_mean + radius * jnp.sqrt(jnp.maximum(w @ gram @ w, 0.0))

        def step(_, carry):
            w, extrapolated, momentum, best, best_value = carry
            norm = jnp.sqrt(jnp.maximum(extrapolated @ gram @ extrapolated, floor))
            gradient = gram_mean + radius * (gram @ extrapolated) / norm
            new_w = _project_to_simplex(extrapolated - gradient / (radius * lipschitz / norm + floor), present)
            restart = gradient @ (new_w - w) > 0
            new_momentum = jnp.where(restart, 1.0, (1.0 + jnp.sqrt(1.0 + 4.0 * momentum ** 2)) / 2.0)
            new_extrapolated = jnp.where(restart, new_w, new_w + (momentum - 1.0) / new_momentum * (new_w - w))
            value = objective(new_w)
            better = value < best_value
            return (new_w, new_extrapolated, new_momentum, jnp.where(better, new_w, best),
                    jnp.where(better, value, best_value))

        start = (mean_weights, mean_weights, jnp.float32(1.0), mean_weights, objective(mean_weights))
        w = jax.lax.fori_loop(0, self.solver_steps, step, start)[3]
        squared_norm = w @ gram @ w
        scale = jnp.where(squared_norm > floor, radius / jnp.sqrt(jnp.maximum(squared_norm, floor)), 0.0)
        return count * (mean_weights + scale * w), state, {}


@dataclasses.dataclass(frozen=True)
class IMTL(_GradientWeighting):
    """Impartial MTL, gradient part IMTL-G (Liu et al., ICLR 2021).

    The combination `g = sum_t alpha_t g_t` (sum alpha = 1) whose projections onto every present
    task's unit gradient are equal, in closed form: with the first present task as anchor a,
    `alpha_rest = (g_a U^T)(D U^T)^+` where rows of D are `g_a - g_t` and of U `u_a - u_t`
    (pseudo-inverse for collinear gradients). IMTL-L (learned loss scales) is not included.
    Weights are alpha times the number of present tasks. Heads get their plain gradients.
    """

    name: ClassVar[str] = "imtl"

    def weights_from_gram(self, state, losses, gram, present, key):
        num_tasks = gram.shape[0]
        norms = jnp.sqrt(jnp.maximum(jnp.diag(gram), 0.0))
        projections = gram * jnp.where(norms > 0, 1.0 / jnp.where(norms > 0, norms, 1.0), 0.0)[None, :]  # <g_i, u_j>
        anchor = jnp.argmax(present)
        others = present & (jnp.arange(num_tasks) != anchor)
        rhs = projections[anchor, anchor] - projections[anchor, :]  # <g_a, u_a - u_s>
        # system[t, s] = <g_a - g_t, u_a - u_s>
        system = (projections[anchor, anchor] - projections[anchor, None, :] - projections[:, anchor, None]
                  + projections)
        system = jnp.where(others[:, None] & others[None, :], system, jnp.eye(num_tasks, dtype=gram.dtype))
        alpha = jnp.where(others, jnp.linalg.pinv(system.T) @ jnp.where(others, rhs, 0.0), 0.0)
        alpha = alpha.at[anchor].set(jnp.where(jnp.any(present), 1.0 - jnp.sum(alpha), 0.0))
        return jnp.sum(present) * alpha, state, {}


METHODS = {method.name: method for method in (Equal, Uncertainty, DWA, GradNorm, PCGrad, CAGrad, IMTL)}


def get(name: str, **hyperparameters):
    """The method registered as `name` (the value of `config.weighting`) with these hyper-parameters."""
    if name not in METHODS:
        raise ValueError(f"config.weighting={name!r} is not a known weighting method; choose one of "
                         f"{sorted(METHODS)}")
    method = METHODS[name]
    known = [f.name for f in dataclasses.fields(method)]
    unknown = sorted(set(hyperparameters) - set(known))
    if unknown:
        raise ValueError(f"config.weighting={name!r} has no hyper-parameter {', '.join(map(repr, unknown))}; "
                         f"it takes {known or 'none'}")
    return method(**hyperparameters)


def gradients(method, method_state, task_loss_fn: Callable[..., jax.Array], params, batch, present, shared_mask,
              key: jax.Array | None = None, task_batch_axes=None):
    """One step's gradients for every parameter under `method`. Pure and jittable.

    `task_loss_fn(params, batch) -> (T,)` per-task losses (an absent task's loss must be finite,
    e.g. 0); `present` (T,) bool; `shared_mask` a pytree like `params` of bools (Python or array),
    True for shared (backbone) parameters; `key` a PRNG key (needed by pcgrad).

    With `task_batch_axes` (a `jax.vmap` in_axes for `batch`, e.g. `(0, None)` for images stacked
    per task and targets shared), `task_loss_fn(params, task_batch, task) -> scalar` is instead the
    loss of task `task` (an int array) on its own slice of the batch, and the per-task gradients are
    vmapped over tasks: each task's backward pass covers only its own batch, T times less work than
    the VJP of all losses through the whole stacked batch when every task brings its own images.

    Shared parameters get `sum_t weights[t] grad L_t`. Task-specific parameters get the gradient of
    `sum_t head_weights[t] L_t`, where head_weights = weights for loss-reweighting methods and 1 per
    present task for gradient-surgery methods (pcgrad, cagrad, imtl). Loss-only methods need one
    backward pass of the weighted loss (shared_mask unused); gradient methods T, vectorised.

    Returns (grads, new_method_state, info) with info = {"loss": the weighted objective,
    "losses": (T,) with absent tasks at 0, "weights": (T,), plus the method's own diagnostics}.
    """
    present = jnp.asarray(present, bool)
    tasks = jnp.arange(present.shape[0])
    if task_batch_axes is None:
        def all_losses(p):
            return task_loss_fn(p, batch)
    else:
        def all_losses(p):
            return jax.vmap(task_loss_fn, in_axes=(None, task_batch_axes, 0))(p, batch, tasks)

    if not method.uses_task_gradients:
        def objective(p):
            losses = all_losses(p)
            _check_inputs(losses, present)
            losses = jnp.where(present, losses, 0.0)
            return method.weighted_loss(method_state, losses, present), losses

        (loss, losses), grads = jax.value_and_grad(objective, has_aux=True)(params)
        weights = method.loss_weights(method_state, present)
        return grads, method.update(method_state, losses, present), {"loss": loss, "losses": losses,
                                                                      "weights": weights}

    if task_batch_axes is None:
        losses, task_grads = per_task_gradients(all_losses, params)
    else:
        losses, task_grads = jax.vmap(jax.value_and_grad(task_loss_fn), in_axes=(None, task_batch_axes, 0))(
            params, batch, tasks)
    _check_inputs(losses, present)
    losses = jnp.where(present, losses, 0.0)
    task_grads = _zero_absent(task_grads, present)
    shared_grads = jax.tree.map(lambda g, shared: jnp.where(shared, g, 0), task_grads, shared_mask)
    weights, new_state, aux = method.weights_from_gram(method_state, losses, gram_matrix(shared_grads), present,
                                                       key)
    head_weights = weights if method.reweights_heads else present.astype(weights.dtype)
    grads = jax.tree.map(lambda shared, head, is_shared: jnp.where(is_shared, shared, head),
                         combine_rows(weights, task_grads), combine_rows(head_weights, task_grads), shared_mask)
    return grads, new_state, {"loss": jnp.sum(weights * losses), "losses": losses, "weights": weights, **aux}
