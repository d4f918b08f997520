"""Task descriptions with their losses and metrics (pure jnp functions).

Each kind fixes the head shape, the loss, the metrics and the primary metric (METHOD section 6):

| kind              | target                       | loss                       | primary metric          |
|-------------------|------------------------------|----------------------------|-------------------------|
| segmentation      | (H, W) int class             | cross-entropy              | mIoU (higher)           |
| dense_regression  | (H, W, C) float              | L1                         | abs_error (lower)       |
| normals           | (H, W, 3) unit vectors       | 1 - cosine                 | mean_angle (lower)      |
| dense_binary      | (H, W, 1) 0/1                | class-balanced BCE         | f1 (higher)             |
| multilabel        | (K,) 0/1                     | class-balanced BCE         | accuracy (higher)       |
| classification    | () int class                 | cross-entropy              | accuracy (higher)       |
| regression        | (C,) float                   | L1                         | abs_error (lower)       |
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

KINDS = ("segmentation", "dense_regression", "normals", "dense_binary", "multilabel", "classification",
         "regression")
DENSE_KINDS = ("segmentation", "dense_regression", "normals", "dense_binary")
_PRIMARY = {"segmentation": ("miou", True), "dense_regression": ("abs_error", False),
            "normals": ("mean_angle", False), "dense_binary": ("f1", True), "multilabel": ("accuracy", True),
            "classification": ("accuracy", True), "regression": ("abs_error", False)}


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task: `outputs` is the number of classes (segmentation, classification, multilabel)
    or channels (regression kinds, normals = 3, dense_binary = 1)."""

    name: str
    kind: str
    outputs: int

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if int(self.outputs) < 1 or (self.kind == "normals" and self.outputs != 3):
            raise ValueError(f"task {self.name!r}: invalid outputs={self.outputs} for kind {self.kind!r}")

    @property
    def dense(self) -> bool:
        return self.kind in DENSE_KINDS

    @property
    def primary_metric(self) -> str:
        return _PRIMARY[self.kind][0]

    @property
    def higher_is_better(self) -> bool:
        return _PRIMARY[self.kind][1]

    def loss(self, prediction: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """Mean loss over the examples where `mask` (B,) is 1 (all examples if None)."""
        per_example = _per_example_loss(self.kind, prediction, target)
        if mask is None:
            return per_example.mean()
        mask = mask.astype(per_example.dtype)
        return (per_example * mask).sum() / jnp.maximum(mask.sum(), 1.0)

    def metric_sums(self, prediction: jax.Array, target: jax.Array) -> dict[str, jax.Array]:
        """Additive statistics of a batch; `finalize_metrics` turns their sums into metrics."""
        return _metric_sums(self.kind, self.outputs, prediction, target)

    def finalize_metrics(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
        return _finalize(self.kind, {k: np.asarray(v, np.float64) for k, v in sums.items()})


def _unit(v):
    """v / |v| with a finite gradient at v = 0 (jnp.linalg.norm's is NaN there)."""
    return v * jax.lax.rsqrt((v * v).sum(-1, keepdims=True) + 1e-12)


def _balanced_bce(logits, target):
    """Binary cross-entropy with positives weighted by the batch's negative/positive ratio."""
    positives = target.mean()
    weight_pos = jnp.clip((1 - positives) / jnp.maximum(positives, 1e-6), 1.0, 50.0)
    losses = optax.sigmoid_binary_cross_entropy(logits, target)
    weights = jnp.where(target > 0.5, weight_pos, 1.0)
    return (losses * weights) / jax.lax.stop_gradient(weights.mean())


def _per_example_loss(kind, prediction, target):
    axes = tuple(range(1, prediction.ndim))
    if kind in ("segmentation", "classification"):
        ce = optax.softmax_cross_entropy_with_integer_labels(prediction, target.astype(jnp.int32))
        return ce.reshape(ce.shape[0], -1).mean(-1)
    if kind in ("dense_regression", "regression"):
        return jnp.abs(prediction - target).mean(axes)
    if kind == "normals":
        unit = _unit(prediction)
        return (1.0 - (unit * target).sum(-1)).reshape(prediction.shape[0], -1).mean(-1)
    return _balanced_bce(prediction, target).mean(axes)  # dense_binary, multilabel


def _metric_sums(kind, outputs, prediction, target):
    n = jnp.asarray(prediction.shape[0], jnp.float32)
    if kind == "segmentation":
        predicted = prediction.argmax(-1)
        target = target.astype(jnp.int32)
        classes = jnp.arange(outputs)
        p = predicted[..., None] == classes
        t = target[..., None] == classes
        axes = tuple(range(p.ndim - 1))
        return {"intersection": (p & t).sum(axes).astype(jnp.float32), "union": (p | t).sum(axes).astype(jnp.float32),
                "correct": (predicted == target).sum().astype(jnp.float32), "pixels": jnp.float32(target.size)}
    if kind in ("dense_regression", "regression"):
        error = jnp.abs(prediction - target)
        return {"abs_error": error.sum(), "rel_error": (error / jnp.maximum(jnp.abs(target), 1e-3)).sum(),
                "values": jnp.float32(target.size)}
    if kind == "normals":
        unit = _unit(prediction)
        angle = jnp.degrees(jnp.arccos(jnp.clip((unit * target).sum(-1), -1.0, 1.0)))
        return {"angle": angle.sum(), "within_11.25": (angle < 11.25).sum().astype(jnp.float32),
                "within_22.5": (angle < 22.5).sum().astype(jnp.float32),
                "within_30": (angle < 30).sum().astype(jnp.float32), "pixels": jnp.float32(angle.size),
                "histogram": jnp.histogram(angle, bins=180, range=(0.0, 180.0))[0].astype(jnp.float32)}
    if kind in ("dense_binary", "multilabel"):
        predicted = prediction > 0
        target = target > 0.5
        return {"tp": (predicted & target).sum().astype(jnp.float32),
                "fp": (predicted & ~target).sum().astype(jnp.float32),
                "fn": (~predicted & target).sum().astype(jnp.float32),
                "correct": (predicted == target).sum().astype(jnp.float32), "values": jnp.float32(target.size)}
    return {"correct": (prediction.argmax(-1) == target.astype(jnp.int32)).sum().astype(jnp.float32),
            "examples": n}


def _finalize(kind, s):
    if kind == "segmentation":
        present = s["union"] > 0
        return {"miou": float((s["intersection"][present] / s["union"][present]).mean()),
                "pixel_accuracy": float(s["correct"] / s["pixels"])}
    if kind in ("dense_regression", "regression"):
        return {"abs_error": float(s["abs_error"] / s["values"]), "rel_error": float(s["rel_error"] / s["values"])}
    if kind == "normals":
        cumulative = np.cumsum(s["histogram"])
        median = float(np.searchsorted(cumulative, cumulative[-1] / 2)) + 0.5
        return {"mean_angle": float(s["angle"] / s["pixels"]), "median_angle": median,
                "within_11.25": float(s["within_11.25"] / s["pixels"]),
                "within_22.5": float(s["within_22.5"] / s["pixels"]), "within_30": float(s["within_30"] / s["pixels"])}
    if kind in ("dense_binary", "multilabel"):
        f1 = 2 * s["tp"] / max(2 * s["tp"] + s["fp"] + s["fn"], 1.0)
        return {"f1": float(f1), "accuracy": float(s["correct"] / s["values"])}
    return {"accuracy": float(s["correct"] / s["examples"])}


def delta_m(results: dict[str, float], reference: dict[str, float], tasks: list[TaskSpec]) -> float:
    """Multi-task score in percent (METHOD section 6): mean signed relative change of each task's
    primary metric against the reference; 0 = as good as the reference, negative = worse."""
    total = 0.0
    for task in tasks:
        sign = 1.0 if task.higher_is_better else -1.0
        ref = reference[task.name]
        if ref == 0:
            raise ValueError(f"reference primary metric of task {task.name!r} is 0; Delta_m is undefined")
        total += sign * (results[task.name] - ref) / abs(ref)
    return 100.0 * total / len(tasks)


def synthetic_task_specs(names=None) -> list[TaskSpec]:
    """The tasks of the embedded synthetic scenes (taba_jax.data.synthetic)."""
    from taba_jax.data import synthetic
    specs = {"segment": TaskSpec("segment", "segmentation", synthetic.NUM_CLASSES + 1),
             "depth": TaskSpec("depth", "dense_regression", 1), "normal": TaskSpec("normal", "normals", 3),
             "edge": TaskSpec("edge", "dense_binary", 1),
             "classify": TaskSpec("classify", "multilabel", synthetic.NUM_CLASSES),
             "texture": TaskSpec("texture", "regression", 1)}
    names = list(specs) if names is None else list(names)
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise ValueError(f"unknown synthetic tasks {unknown}; available: {list(specs)}")
    return [specs[n] for n in names]
