"""What each built dataset serves: one `TargetSpec` per task, with its kind, width and mask shape.

Kinds extend those of `taba_jax.tasks` with two that the data needs:

| kind             | target                          | mask          | meaning                                   |
|------------------|---------------------------------|---------------|-------------------------------------------|
| segmentation     | (H, W) int32 class              | pixel (H, W)  | ignored/unlabeled pixels are masked       |
| dense_regression | (H, W, C) float32               | pixel (H, W)  | invalid measurements are masked           |
| normals          | (H, W, 3) float32 unit vectors  | pixel (H, W)  | missing geometry is masked                |
| dense_binary     | (H, W, 1) float32 0/1           | pixel (H, W)  |                                           |
| segment_grouping | (H, W) int32 segment id         | pixel (H, W)  | ids are arbitrary: only equality counts   |
| multilabel       | (K,) float32 0/1                | class (K,)    | per-class: VOC difficult-only is masked   |
| distribution     | (K,) float32 probabilities      | example ()    | soft labels (KL / soft cross-entropy)     |
| regression       | (C,) float32                    | example ()    |                                           |

Every task also has a per-example validity: a view/image without that label has an all-False mask.
Targets are 0 wherever the mask is False.
"""
from __future__ import annotations

import dataclasses

KINDS = ("segmentation", "dense_regression", "normals", "dense_binary", "segment_grouping", "multilabel",
         "distribution", "regression")
DENSE_KINDS = ("segmentation", "dense_regression", "normals", "dense_binary", "segment_grouping")
MASKS = {"segmentation": "pixel", "dense_regression": "pixel", "normals": "pixel", "dense_binary": "pixel",
         "segment_grouping": "pixel", "multilabel": "class", "distribution": "example", "regression": "example"}


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    """One task a dataset serves. `outputs`: classes (segmentation, multilabel, distribution),
    channels (dense_regression, regression, normals = 3, dense_binary = 1) or, for
    segment_grouping, the suggested embedding width. `invalid` says what the mask removes."""

    name: str
    kind: str
    outputs: int
    invalid: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"target {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if int(self.outputs) < 1:
            raise ValueError(f"target {self.name!r}: outputs must be >= 1, got {self.outputs}")

    @property
    def dense(self) -> bool:
        return self.kind in DENSE_KINDS

    @property
    def mask(self) -> str:
        """'pixel' (H, W), 'class' (K,) or 'example' ()."""
        return MASKS[self.kind]
