"""TABA's information estimator (METHOD section 3) as pure, jittable, vmappable JAX functions.

    u[n, t] = 1 - prod_s (1 - S[s, t]) ** A[n, s]          information image n carries for task t
    U_t     = sum_n u[n, t]                                 per-task information
    F(U)    = sum_t w_t * g_t(U_t) / sum_t w_t              predicted mean relative loss reduction

Optionally (`transfer_cap` c, a measured deviation from METHOD.md, docs/method.md) the part of U_t
that comes through other tasks' labels is bounded by c times task t's own label count:
`U_t = D_t + min(X_t, c * D_t)`, with D_t the images labeled for t and X_t the sum of u[n, t] over
the others. A head learns only from its own labels; related labels sharpen the shared features it
reads, they do not stand in for its supervision. c = None is METHOD's unbounded sum.

with the diminishing-returns curve g_t either the power law `1 - (1 + U/kappa) ** -gamma` or the
normalised effective number of samples of Cui et al. (2019), `1 - beta ** U` with
`beta = exp(-gamma / kappa)` (same initial slope gamma / kappa as the power law).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

CURVES = ("power", "effective_number")


@jax.tree_util.register_pytree_node_class
class InformationModel:
    """Parameters of the estimator: affinity S (T x T), curve slope gamma, scale kappa, weights w.

    A JAX pytree: it passes through `jit` and `vmap`. Concrete inputs are validated on construction.
    `task_names` (optional) only labels the printed and saved model.
    """

    def __init__(self, affinity, gamma, kappa, weights=None, curve: str = "power", task_names=None,
                 transfer_cap: float | None = None):
        affinity = np.asarray(affinity, dtype=np.float64)
        if affinity.ndim != 2 or affinity.shape[0] != affinity.shape[1]:
            raise ValueError(f"affinity must be a square matrix, got shape {affinity.shape}")
        num_tasks = affinity.shape[0]
        if np.isnan(affinity).any():
            raise ValueError(f"affinity contains NaN: {affinity.tolist()}")
        if (affinity < 0).any() or (affinity > 1).any():
            bad = affinity[(affinity < 0) | (affinity > 1)]
            raise ValueError(f"affinity entries must lie in [0, 1], got {bad.tolist()}")
        if not np.allclose(np.diag(affinity), 1.0):
            raise ValueError(f"affinity diagonal must be 1 (S[t, t] = 1), got {np.diag(affinity).tolist()}")
        gamma = _task_vector("gamma", gamma, num_tasks)
        kappa = _task_vector("kappa", kappa, num_tasks)
        weights = _task_vector("weights", np.ones(num_tasks) if weights is None else weights, num_tasks)
        if (gamma <= 0).any():
            raise ValueError(f"gamma must be positive, got {gamma.tolist()}")
        if (kappa <= 0).any():
            raise ValueError(f"kappa must be positive, got {kappa.tolist()}")
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"weights must be non-negative and not all zero, got {weights.tolist()}")
        if curve not in CURVES:
            raise ValueError(f"curve must be one of {CURVES}, got {curve!r}")
        if transfer_cap is not None and not (np.isfinite(transfer_cap) and transfer_cap >= 0):
            raise ValueError(f"transfer_cap must be None or a finite number >= 0, got {transfer_cap!r}")
        if task_names is not None and len(task_names) != num_tasks:
            raise ValueError(f"task_names has {len(task_names)} names for {num_tasks} tasks: {list(task_names)}")
        self.affinity = jnp.asarray(affinity, jnp.float32)
        self.gamma = jnp.asarray(gamma, jnp.float32)
        self.kappa = jnp.asarray(kappa, jnp.float32)
        self.weights = jnp.asarray(weights, jnp.float32)
        self.curve = curve
        self.task_names = None if task_names is None else tuple(task_names)
        self.transfer_cap = None if transfer_cap is None else float(transfer_cap)

    def replace(self, **changes) -> "InformationModel":
        """A validated copy with some fields changed (e.g. refitted gamma or new weights)."""
        fields = {name: getattr(self, name) for name in ("affinity", "gamma", "kappa", "weights", "curve",
                                                          "task_names", "transfer_cap")}
        return InformationModel(**{**fields, **changes})

    @property
    def num_tasks(self) -> int:
        return self.affinity.shape[-1]

    def tree_flatten(self):
        # The cap is a leaf, not static: a sweep over caps compiles the greedy once. Whether there is
        # a cap at all changes the computation, and None is a leafless node, so that part stays static.
        leaves = (self.affinity, self.gamma, self.kappa, self.weights, self.transfer_cap)
        return leaves, (self.curve, self.task_names)

    @classmethod
    def tree_unflatten(cls, aux, children):
        model = object.__new__(cls)  # no validation: children may be tracers
        model.affinity, model.gamma, model.kappa, model.weights, model.transfer_cap = children
        model.curve, model.task_names = aux
        return model

    def __repr__(self):
        def rounded(values):  # 3 significant digits: no float32 noise such as 0.38199999928474426
            return np.vectorize(lambda v: float(f"{v:.3g}"), otypes=[float])(np.asarray(values)).tolist()

        names = self.task_names or tuple(f"task{t}" for t in range(self.num_tasks))
        rows = ", ".join(f"{n}: {r}" for n, r in zip(names, rounded(self.affinity)))
        cap = "" if self.transfer_cap is None else f", transfer_cap={float(self.transfer_cap):.3g}"
        return (f"InformationModel(tasks={list(names)}, curve={self.curve!r}{cap},\n"
                f"  affinity S[s][t] (row s helps column t) = {{{rows}}},\n"
                f"  gamma={rounded(self.gamma)}, kappa={rounded(self.kappa)}, weights={rounded(self.weights)})")

    def to_json(self) -> dict:
        return {"affinity": np.asarray(self.affinity).tolist(), "gamma": np.asarray(self.gamma).tolist(),
                "kappa": np.asarray(self.kappa).tolist(), "weights": np.asarray(self.weights).tolist(),
                "curve": self.curve, "task_names": None if self.task_names is None else list(self.task_names),
                "transfer_cap": None if self.transfer_cap is None else float(self.transfer_cap)}

    @classmethod
    def from_json(cls, data: dict) -> "InformationModel":
        return cls(data["affinity"], data["gamma"], data["kappa"], data["weights"], data["curve"],
                   data.get("task_names"), data.get("transfer_cap"))


def _task_vector(field: str, value, num_tasks: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(num_tasks, float(arr))
    if arr.shape != (num_tasks,):
        raise ValueError(f"{field} must have one entry per task ({num_tasks}), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{field} must be finite, got {arr.tolist()}")
    return arr


def pattern_information(patterns: jax.Array, affinity: jax.Array) -> jax.Array:
    """u for label patterns: (..., T) 0/1 rows -> (..., T) information per task (noisy-OR)."""
    patterns = jnp.asarray(patterns, jnp.float32)
    # prod_s (1 - A_s * S[s, t]); A_s in {0, 1} makes this (1 - S[s, t]) ** A_s.
    remaining = jnp.prod(1.0 - patterns[..., :, None] * affinity, axis=-2)
    return 1.0 - remaining


def task_information(labels: jax.Array, affinity: jax.Array, counts: jax.Array | None = None,
                     transfer_cap: float | None = None) -> jax.Array:
    """U_t: information per task of an allocation.

    `labels` is either the full (N, T) allocation, or (P, T) distinct label patterns with `counts` (P,)
    images each (the sufficient statistics the greedy search works on). `transfer_cap`: see the module.
    """
    labels = jnp.asarray(labels, jnp.float32)
    u = pattern_information(labels, affinity)

    def total(per_image):  # (..., P, T) -> (..., T), each row counted `counts` times
        return per_image.sum(axis=-2) if counts is None else jnp.asarray(counts, jnp.float32) @ per_image

    if transfer_cap is None:
        return total(u)
    return _capped(total(labels), total(u * (1.0 - labels)), transfer_cap)


def _capped(direct: jax.Array, transferred: jax.Array, transfer_cap: float) -> jax.Array:
    return direct + jnp.minimum(transferred, transfer_cap * direct)


def model_information(model: InformationModel, patterns: jax.Array, counts: jax.Array | None = None) -> jax.Array:
    """U of an allocation (or of patterns with counts) under `model`, its transfer cap included."""
    return task_information(patterns, model.affinity, counts, model.transfer_cap)


def change_deltas(model: InformationModel, patterns: jax.Array, counts: jax.Array, new_patterns: jax.Array,
                  sizes: jax.Array) -> jax.Array:
    """U(after) - U(before) for moving `sizes` images of pattern row p to `new_patterns` (..., P, T), each
    move on its own: patterns (P, T), counts (P,), new_patterns and sizes broadcast as (..., P, T) / (..., P).

    Without a cap this is `sizes * (u(new) - u(old))`, exact in float32 even beside a large U.
    """
    patterns = jnp.asarray(patterns, jnp.float32)
    new_patterns = jnp.asarray(new_patterns, jnp.float32)
    sizes = jnp.asarray(sizes, jnp.float32)[..., None]
    u_old = pattern_information(patterns, model.affinity)
    u_new = pattern_information(new_patterns, model.affinity)
    if model.transfer_cap is None:
        return sizes * (u_new - u_old)
    counts = jnp.asarray(counts, jnp.float32)
    direct = counts @ patterns
    transferred = counts @ (u_old * (1.0 - patterns))
    new_direct = direct + sizes * (new_patterns - patterns)
    new_transferred = transferred + sizes * (u_new * (1.0 - new_patterns) - u_old * (1.0 - patterns))
    cap = model.transfer_cap
    return _capped(new_direct, new_transferred, cap) - _capped(direct, transferred, cap)


def curve_values(model: InformationModel, information: jax.Array) -> jax.Array:
    """g_t(U_t), the predicted relative loss reduction per task, in [0, 1)."""
    if model.curve == "power":
        return -jnp.expm1(-model.gamma * jnp.log1p(information / model.kappa))
    return -jnp.expm1(-model.gamma / model.kappa * information)


def objective(model: InformationModel, information: jax.Array) -> jax.Array:
    """F(U): weighted mean of the per-task relative loss reductions."""
    return curve_values(model, information) @ model.weights / model.weights.sum()


def objective_gains(model: InformationModel, information: jax.Array, deltas: jax.Array) -> jax.Array:
    """F(U + delta) - F(U) for a batch of information increments `deltas` (..., T) at once.

    Written without the difference of two nearly equal numbers, so a single label added to a
    pool of millions still gets an accurate (non-zero) gain in float32.
    """
    if model.curve == "power":
        scale = model.kappa + information  # g(U+d) - g(U) = (1+U/k)^-g * (1 - (1 + d/(k+U))^-g)
        base = jnp.exp(-model.gamma * jnp.log1p(information / model.kappa))
        per_task = base * -jnp.expm1(-model.gamma * jnp.log1p(deltas / scale))
    else:
        rate = model.gamma / model.kappa
        per_task = jnp.exp(-rate * information) * -jnp.expm1(-rate * deltas)
    return per_task @ model.weights / model.weights.sum()


def addition_deltas(patterns: jax.Array, affinity: jax.Array) -> jax.Array:
    """Information added per image by labelling task s on an image with pattern p: (P, T) -> (P, T_s, T).

    u(p + s)_t - u(p)_t = (1 - u(p)_t) * S[s, t]; zero where p already has s.
    """
    patterns = jnp.asarray(patterns, jnp.float32)
    missing = 1.0 - pattern_information(patterns, affinity)
    return (1.0 - patterns)[..., :, None] * missing[..., None, :] * affinity


def candidate_gains(model: InformationModel, patterns: jax.Array, counts: jax.Array,
                    sizes: jax.Array) -> jax.Array:
    """Objective gain of every candidate "label task s on sizes[p, s] more images of pattern p".

    patterns (P, T), counts (P,), sizes (P, T) -> gains (P, T), all in one vectorized call.
    """
    information = model_information(model, patterns, counts)
    if model.transfer_cap is None:
        deltas = jnp.asarray(sizes, jnp.float32)[..., None] * addition_deltas(patterns, model.affinity)
    else:
        num_tasks = patterns.shape[-1]
        added = jnp.asarray(patterns, bool)[None, :, :] | jnp.eye(num_tasks, dtype=bool)[:, None, :]  # (T_s, P, T)
        deltas = jnp.moveaxis(change_deltas(model, patterns, counts, added, jnp.asarray(sizes).T), 0, 1)
    return objective_gains(model, information, deltas)


def allocation_objective(model: InformationModel, labels: np.ndarray | jax.Array) -> float:
    """F of a full (N, T) allocation, as a Python float (host convenience)."""
    labels = np.asarray(labels, dtype=bool)
    patterns, counts = unique_patterns(labels)
    return float(objective(model, model_information(model, patterns, counts)))


def unique_patterns(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of a bool (N, T) matrix: (patterns (P, T), counts (P,)).

    Rows are packed into bytes first, so this is a 1-D sort even for millions of images.
    """
    patterns, counts, _ = unique_patterns_with_inverse(labels)
    return patterns, counts


def unique_patterns_with_inverse(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like `unique_patterns`, also returning which pattern each image carries (N,)."""
    labels = np.asarray(labels, dtype=bool)
    packed = np.packbits(labels, axis=1)
    width = packed.shape[1]
    padded = np.zeros((labels.shape[0], -(-width // 8) * 8), np.uint8)
    padded[:, :width] = packed
    keys = padded.view(np.uint64)  # (N, words)
    if keys.shape[1] == 1:
        keys = keys[:, 0]
    else:  # more than 64 tasks: compare rows of words as structured scalars
        keys = np.ascontiguousarray(keys).view([("", np.uint64)] * keys.shape[1]).reshape(-1)
    _, first, inverse, counts = np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
    return labels[first], counts, inverse.reshape(-1)

