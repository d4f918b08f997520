"""Tasks: one small class per kind of target (loss, metrics, trivial baseline) and `TaskSpec`.

| kind              | target (per example)          | loss                 | primary metric        |
|-------------------|-------------------------------|----------------------|-----------------------|
| segmentation      | (H, W) int class, < 0 ignored | cross-entropy        | mIoU (higher)         |
| dense_regression  | (H, W, C) float, NaN invalid  | L1                   | abs_error (lower)     |
| normals           | (H, W, 3) unit, NaN invalid   | 1 - cosine           | mean_angle (lower)    |
| dense_binary      | (H, W, 1) 0/1, NaN invalid    | class-balanced BCE   | f1 (higher)           |
| multilabel        | (K,) 0/1                      | class-balanced BCE   | accuracy (higher)     |
| classification    | () int class, < 0 ignored     | cross-entropy        | accuracy (higher)     |
| distribution      | (K,) class probabilities      | soft cross-entropy   | top1_accuracy (higher)|
| regression        | (C,) float, NaN invalid       | L1                   | abs_error (lower)     |
| segment_grouping  | (H, W) int segment, < 0 ign.  | pairwise same-segment BCE | pair_accuracy (higher) |

Invalid targets (an unlabeled pixel, a depth sensor hole) are encoded in the target itself: a
negative class id, or NaN in a float target. Losses and metrics skip them; an example's label
mask (joint batching) multiplies in. A new kind is one subclass registered with `@register`.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

KINDS: dict[str, "TaskKind"] = {}


def register(cls):
    """Class decorator: makes a TaskKind available under its `name`."""
    KINDS[cls.name] = cls()
    return cls


class TaskKind:
    """How one kind of target is predicted, scored and lost. Stateless; methods are jnp-pure.

    `elements` are what a loss averages over: pixels (H, W) for dense kinds, the example for
    image-level kinds. `prediction` has the head's raw outputs (logits for class kinds).
    """

    name: ClassVar[str]
    dense: ClassVar[bool]
    primary_metric: ClassVar[str]
    higher_is_better: ClassVar[bool]

    def check_outputs(self, outputs: int) -> str | None:
        """An error message if a head of `outputs` channels/classes cannot serve this kind."""
        return None if outputs >= 1 else f"outputs must be at least 1, got {outputs}"

    def valid(self, target: jax.Array) -> jax.Array:
        """(B, *elements) bool: which elements carry a label."""
        finite = jnp.isfinite(target)
        return finite.all(-1) if target.ndim > 1 else finite

    def element_loss(self, prediction: jax.Array, target: jax.Array, valid: jax.Array) -> jax.Array:
        """(B, *elements) loss; `target` is already sanitised (invalid elements hold a legal value)."""
        raise NotImplementedError

    def sanitize(self, target: jax.Array, valid: jax.Array) -> jax.Array:
        """`target` with invalid elements replaced by a legal value (gradients stay finite)."""
        mask = valid.reshape(valid.shape + (1,) * (target.ndim - valid.ndim))
        return jnp.where(mask, target, jnp.zeros_like(target))

    def metric_sums(self, prediction, target, valid, outputs: int) -> dict[str, jax.Array]:
        """Additive statistics of a batch; `finalize` turns their sums over a split into metrics."""
        raise NotImplementedError

    def finalize(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
        raise NotImplementedError

    def trivial_prediction(self, targets: np.ndarray, outputs: int) -> np.ndarray:
        """The predictions of this kind's trivial baseline for `targets` (the split it is scored on)."""
        raise NotImplementedError


def _count(mask) -> jax.Array:
    return mask.sum().astype(jnp.float32)


def _unit(v):
    """v / |v| with a finite gradient at v = 0 (jnp.linalg.norm's is NaN there)."""
    return v * jax.lax.rsqrt((v * v).sum(-1, keepdims=True) + 1e-12)


def _balanced_bce(logits, target, valid):
    """Binary cross-entropy with positives weighted by the batch's negative/positive ratio, so that
    rare positives (edges) weigh as much in total as the negatives (clipped to [1, 50])."""
    weight = valid.astype(jnp.float32)
    positives = (target * weight).sum() / jnp.maximum(weight.sum(), 1.0)
    weight_pos = jnp.clip((1 - positives) / jnp.maximum(positives, 1e-6), 1.0, 50.0)
    weights = jnp.where(target > 0.5, weight_pos, 1.0)
    normaliser = jax.lax.stop_gradient((weights * weight).sum() / jnp.maximum(weight.sum(), 1.0))
    normaliser = jnp.where(weight.sum() > 0, normaliser, 1.0)  # a batch without a valid label: loss 0, not NaN
    return optax.sigmoid_binary_cross_entropy(logits, target) * weights / normaliser


def _binary_sums(prediction, target, valid):
    predicted, truth = prediction > 0, target > 0.5
    return {"tp": _count(predicted & truth & valid), "fp": _count(predicted & ~truth & valid),
            "fn": _count(~predicted & truth & valid), "correct": _count((predicted == truth) & valid),
            "values": _count(valid)}


def _binary_finalize(s):
    return {"f1": float(2 * s["tp"] / max(2 * s["tp"] + s["fp"] + s["fn"], 1.0)),
            "accuracy": float(s["correct"] / max(s["values"], 1.0))}


def _one_hot_logits(classes: np.ndarray, outputs: int) -> np.ndarray:
    return np.where(np.arange(outputs) == classes[..., None], 10.0, -10.0).astype(np.float32)


class _ClassIds(TaskKind):
    """Targets that are class ids (negative = unlabeled), scored by cross-entropy on logits."""

    def valid(self, target):
        return target >= 0

    def sanitize(self, target, valid):
        return jnp.where(valid, target, 0).astype(jnp.int32)

    def element_loss(self, prediction, target, valid):
        return optax.softmax_cross_entropy_with_integer_labels(prediction, target)


@register
class Segmentation(_ClassIds):
    name, dense, primary_metric, higher_is_better = "segmentation", True, "miou", True

    def metric_sums(self, prediction, target, valid, outputs):
        predicted = prediction.argmax(-1)
        classes = jnp.arange(outputs)
        p = (predicted[..., None] == classes) & valid[..., None]
        t = (target[..., None] == classes) & valid[..., None]
        axes = tuple(range(p.ndim - 1))
        return {"intersection": (p & t).sum(axes).astype(jnp.float32), "union": (p | t).sum(axes).astype(jnp.float32),
                "correct": _count((predicted == target) & valid), "pixels": _count(valid)}

    def finalize(self, s):
        present = s["union"] > 0
        return {"miou": float((s["intersection"][present] / s["union"][present]).mean()) if present.any() else 0.0,
                "pixel_accuracy": float(s["correct"] / max(s["pixels"], 1.0))}

    def trivial_prediction(self, targets, outputs):
        """Every pixel the most frequent class of the split (the background in most scenes)."""
        labeled = targets[targets >= 0]
        majority = np.bincount(labeled.ravel(), minlength=outputs).argmax() if labeled.size else 0
        return _one_hot_logits(np.full(targets.shape, majority), outputs)


@register
class DenseRegression(TaskKind):
    name, dense, primary_metric, higher_is_better = "dense_regression", True, "abs_error", False

    def element_loss(self, prediction, target, valid):
        return jnp.abs(prediction - target).mean(-1)

    def metric_sums(self, prediction, target, valid, outputs):
        error = jnp.where(valid[..., None], jnp.abs(prediction - target), 0.0)
        relative = error / jnp.maximum(jnp.abs(target), 1e-3)
        return {"abs_error": error.sum(), "rel_error": relative.sum(), "values": _count(valid) * target.shape[-1]}

    def finalize(self, s):
        values = max(s["values"], 1.0)
        return {"abs_error": float(s["abs_error"] / values), "rel_error": float(s["rel_error"] / values)}

    def trivial_prediction(self, targets, outputs):
        """Each image's own median value: the scale of a scene for free, no structure."""
        median = np.nanmedian(targets.reshape(len(targets), -1, targets.shape[-1]), axis=1)
        return np.broadcast_to(median[:, None, None, :], targets.shape).astype(np.float32)


@register
class Normals(TaskKind):
    name, dense, primary_metric, higher_is_better = "normals", True, "mean_angle", False

    def check_outputs(self, outputs):
        return None if outputs == 3 else f"normals need outputs=3, got {outputs}"

    def element_loss(self, prediction, target, valid):
        return 1.0 - (_unit(prediction) * target).sum(-1)

    def metric_sums(self, prediction, target, valid, outputs):
        angle = jnp.degrees(jnp.arccos(jnp.clip((_unit(prediction) * target).sum(-1), -1.0, 1.0)))
        weight = valid.astype(jnp.float32)
        return {"angle": (angle * weight).sum(), "within_11.25": _count((angle < 11.25) & valid),
                "within_22.5": _count((angle < 22.5) & valid), "within_30": _count((angle < 30) & valid),
                "pixels": weight.sum(),
                "histogram": jnp.histogram(angle, bins=180, range=(0.0, 180.0), weights=weight)[0]}

    def finalize(self, s):
        pixels = max(s["pixels"], 1.0)
        cumulative = np.cumsum(s["histogram"])
        median = float(np.searchsorted(cumulative, cumulative[-1] / 2)) + 0.5
        return {"mean_angle": float(s["angle"] / pixels), "median_angle": median,
                "within_11.25": float(s["within_11.25"] / pixels), "within_22.5": float(s["within_22.5"] / pixels),
                "within_30": float(s["within_30"] / pixels)}

    def trivial_prediction(self, targets, outputs):
        """One constant normal: the normalised mean of the split's valid normals."""
        mean = np.nanmean(targets.reshape(-1, 3), axis=0)
        return np.broadcast_to(mean / max(np.linalg.norm(mean), 1e-12), targets.shape).astype(np.float32)


@register
class DenseBinary(TaskKind):
    name, dense, primary_metric, higher_is_better = "dense_binary", True, "f1", True

    def element_loss(self, prediction, target, valid):
        return _balanced_bce(prediction, target, valid[..., None]).mean(-1)

    def metric_sums(self, prediction, target, valid, outputs):
        return _binary_sums(prediction, target, valid[..., None] & jnp.ones(target.shape, bool))

    def finalize(self, s):
        return _binary_finalize(s)

    def trivial_prediction(self, targets, outputs):
        """Every pixel positive (the best constant F1 when positives are rare)."""
        return np.full(targets.shape, 10.0, np.float32)


@register
class Multilabel(DenseBinary):
    """Image-level binary labels (K per example): the loss and metrics of dense_binary over them."""

    name, dense, primary_metric = "multilabel", False, "accuracy"

    def trivial_prediction(self, targets, outputs):
        """Each label's majority value over the split."""
        majority = np.nanmean(targets, axis=0) > 0.5
        return np.broadcast_to(np.where(majority, 10.0, -10.0), targets.shape).astype(np.float32)


@register
class SegmentGrouping(_ClassIds):
    """Unsupervised segments (Taskonomy segment_unsup2d/25d): ids are arbitrary, only whether two
    pixels share a segment counts, so the loss and metric are invariant to relabeling. The head
    predicts a D-dim embedding per pixel; a pixel pair's logit is `PAIR_SCALE * cos(e_i, e_j)`,
    trained by BCE against "same segment" over the pairs (pixel, pixel shifted by each of
    `PAIR_OFFSETS`, wrapping around), a fixed sample of near and far pairs."""

    name, dense, primary_metric, higher_is_better = "segment_grouping", True, "pair_accuracy", True
    PAIR_OFFSETS: ClassVar[tuple[tuple[int, int], ...]] = ((0, 1), (1, 0), (0, 5), (5, 0), (7, 3), (3, -7))
    PAIR_SCALE: ClassVar[float] = 5.0

    def _pairs(self, prediction, target, valid):
        """(same, logit, both valid) of every sampled pair, stacked on a leading offset axis."""
        unit = _unit(prediction)
        same, logits, both = [], [], []
        for dy, dx in self.PAIR_OFFSETS:
            shift = lambda a: jnp.roll(a, (dy, dx), axis=(1, 2))  # noqa: E731
            same.append((target == shift(target)).astype(jnp.float32))
            logits.append(self.PAIR_SCALE * (unit * shift(unit)).sum(-1))
            both.append(valid & shift(valid))
        return jnp.stack(same), jnp.stack(logits), jnp.stack(both)

    def element_loss(self, prediction, target, valid):
        same, logits, both = self._pairs(prediction, target, valid)
        weight = both.astype(jnp.float32)
        losses = optax.sigmoid_binary_cross_entropy(logits, same) * weight
        return losses.sum(0) / jnp.maximum(weight.sum(0), 1.0)

    def metric_sums(self, prediction, target, valid, outputs):
        same, logits, both = self._pairs(prediction, target, valid)
        return {"correct": _count(((logits > 0) == (same > 0.5)) & both), "pairs": _count(both)}

    def finalize(self, s):
        return {"pair_accuracy": float(s["correct"] / max(s["pairs"], 1.0))}

    def trivial_prediction(self, targets, outputs):
        """One embedding for every pixel: every pair predicted to share a segment."""
        return np.ones(targets.shape + (outputs,), np.float32)


@register
class Classification(_ClassIds):
    name, dense, primary_metric, higher_is_better = "classification", False, "accuracy", True

    def metric_sums(self, prediction, target, valid, outputs):
        return {"correct": _count((prediction.argmax(-1) == target) & valid), "examples": _count(valid)}

    def finalize(self, s):
        return {"accuracy": float(s["correct"] / max(s["examples"], 1.0))}

    def trivial_prediction(self, targets, outputs):
        """The majority class of the split."""
        labeled = targets[targets >= 0]
        majority = np.bincount(labeled, minlength=outputs).argmax() if labeled.size else 0
        return _one_hot_logits(np.full(targets.shape, majority), outputs)


@register
class Distribution(TaskKind):
    """Soft class distributions (e.g. Taskonomy's class_object): soft cross-entropy, top-1 agreement."""

    name, dense, primary_metric, higher_is_better = "distribution", False, "top1_accuracy", True

    def element_loss(self, prediction, target, valid):
        return optax.softmax_cross_entropy(prediction, target)

    def metric_sums(self, prediction, target, valid, outputs):
        log_p = jax.nn.log_softmax(prediction)
        kl = (target * (jnp.log(jnp.maximum(target, 1e-12)) - log_p)).sum(-1)
        return {"agree": _count((prediction.argmax(-1) == target.argmax(-1)) & valid),
                "kl": jnp.where(valid, kl, 0.0).sum(), "examples": _count(valid)}

    def finalize(self, s):
        examples = max(s["examples"], 1.0)
        return {"top1_accuracy": float(s["agree"] / examples), "kl": float(s["kl"] / examples)}

    def trivial_prediction(self, targets, outputs):
        """The split's mean distribution for every example."""
        mean = np.nanmean(targets, axis=0)
        return np.broadcast_to(np.log(np.maximum(mean, 1e-12)), targets.shape).astype(np.float32)


@register
class Regression(DenseRegression):
    """Image-level regression: the loss and metrics of dense regression over one value per example."""

    name, dense = "regression", False

    def trivial_prediction(self, targets, outputs):
        """The split's median (the best constant under L1)."""
        return np.broadcast_to(np.nanmedian(targets, axis=0), targets.shape).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task: `outputs` is the number of classes (segmentation, classification, multilabel,
    distribution) or channels (regression kinds; normals 3; dense_binary 1)."""

    name: str
    kind: str
    outputs: int

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {tuple(KINDS)}, got {self.kind!r}")
        problem = KINDS[self.kind].check_outputs(int(self.outputs))
        if problem:
            raise ValueError(f"task {self.name!r}: {problem}")

    @property
    def implementation(self) -> TaskKind:
        return KINDS[self.kind]

    @property
    def dense(self) -> bool:
        return self.implementation.dense

    @property
    def primary_metric(self) -> str:
        return self.implementation.primary_metric

    @property
    def higher_is_better(self) -> bool:
        return self.implementation.higher_is_better

    def loss(self, prediction: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """Mean loss over the labeled elements of the examples where `mask` (B,) is 1 (all if None)."""
        kind = self.implementation
        valid = kind.valid(target)
        if mask is not None:
            valid = valid & (mask.reshape(mask.shape + (1,) * (valid.ndim - 1)) > 0)
        losses = kind.element_loss(prediction, kind.sanitize(target, valid), valid)
        weight = valid.astype(losses.dtype)
        return (losses * weight).sum() / jnp.maximum(weight.sum(), 1.0)

    def metric_sums(self, prediction: jax.Array, target: jax.Array) -> dict[str, jax.Array]:
        kind = self.implementation
        valid = kind.valid(target)
        return kind.metric_sums(prediction, kind.sanitize(target, valid), valid, self.outputs)

    def finalize_metrics(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
        return self.implementation.finalize({k: np.asarray(v, np.float64) for k, v in sums.items()})

    def baseline_metrics(self, targets: np.ndarray) -> dict[str, float]:
        """Metrics of the kind's trivial predictor on `targets` (e.g. all-background mIoU)."""
        prediction = self.implementation.trivial_prediction(np.asarray(targets), self.outputs)
        return self.finalize_metrics(jax.device_get(_jitted_metric_sums(self, prediction, targets)))


# One compiled program per task and shape (op-by-op dispatch compiled each of the metric's many ops).
_jitted_metric_sums = jax.jit(TaskSpec.metric_sums, static_argnums=0)


def delta_m_terms(results: dict[str, float], reference: dict[str, float],
                  higher_is_better: dict[str, bool]) -> dict[str, float]:
    """Each task's share of Delta_m, in points: its signed relative change of the primary metric
    against the reference, over the number of tasks (the terms sum to `delta_m`). Takes the metric
    directions by task name, so that exported results (JSON, no TaskSpec) can be split too."""
    terms = {}
    for name, higher in higher_is_better.items():
        ref = reference[name]
        if ref == 0:
            raise ValueError(f"reference primary metric of task {name!r} is 0; Delta_m is undefined")
        terms[name] = 100.0 * (1.0 if higher else -1.0) * (results[name] - ref) / abs(ref) / len(higher_is_better)
    return terms


def delta_m(results: dict[str, float], reference: dict[str, float], tasks: list[TaskSpec]) -> float:
    """Multi-task score in percent: the mean signed relative change of each task's primary metric
    against the reference; 0 = as good as the reference, negative = worse."""
    return sum(delta_m_terms(results, reference, {t.name: t.higher_is_better for t in tasks}).values())
