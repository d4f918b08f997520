"""Random-access reader of one split of a built TFDS dataset: decoded images, targets and masks.

`reader[i]` -> {"id": str, "image": float32 (H, W, 3) in [0, 1], "<task>": target, "<task>_mask": mask}
with the target/mask shapes of `taba_jax.data.targets`; `reader.batch(indices, size=...)` stacks
examples, resizing or cropping them to one size first. Records are in TFDS's storage order (a hash
of the example key), not the order of the source files: use "id" to identify an example.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from taba_jax.data import decoding
from taba_jax.data.targets import TargetSpec

FITS = ("resize", "crop")


class SplitReader:
    """Reads split `split` of a built dataset for the tasks `tasks` (names, or objects with `name`,
    `kind` and `outputs` such as `TargetSpec` / `taba_jax.tasks.TaskSpec`, checked against the
    dataset's targets; None = all). `targets`, `decode_target` and `requires` come from the
    dataset's builder module."""

    def __init__(self, builder, split: str, targets: Mapping[str, TargetSpec],
                 decode_target: Callable[[str, dict], tuple], requires: Mapping[str, Sequence[str]], tasks=None):
        splits = builder.info.splits
        if split not in splits:
            raise ValueError(f"{builder.info.name}: unknown split {split!r}; available: {sorted(splits)}")
        self.dataset = builder.info.name
        self.split = split
        self.tasks = _resolve_tasks(self.dataset, tasks, targets)
        self._decode_target = decode_target
        features = builder.info.features
        needed = {"id", "image"}
        for spec in self.tasks:
            needed |= {spec.name, f"{spec.name}_present", *requires.get(spec.name, ())}
        skip = {key: tfds.decode.SkipDecoding() for key in features.keys() if key not in needed}
        self._source = builder.as_data_source(split=split, decoders=skip)
        self._id_source = builder.as_data_source(
            split=split, decoders={key: tfds.decode.SkipDecoding() for key in features.keys() if key != "id"})

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {self.dataset}/{self.split} of {len(self)} examples")
        return self._decode(self._source[int(index) % len(self)])

    def ids(self, indices: Sequence[int]) -> np.ndarray:
        """The "id" (str) of the examples at `indices`, decoding no image or target."""
        return np.array([self._id_source[int(i)]["id"].decode() for i in indices], dtype=str)

    def batch(self, indices: Sequence[int], size: tuple[int, int] | None = None, fit: str = "resize") -> dict:
        """Stacked examples: "id" (B,) str and each field with a leading batch axis. With `size`
        (height, width) every example is first brought to that size: fit="resize" stretches,
        fit="crop" scales to cover the size (keeping the aspect ratio) and crops the centre. Images
        are interpolated bilinearly, targets and masks by nearest neighbour. Without `size` all
        examples must already have the same size."""
        if fit not in FITS:
            raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
        examples = [self[i] for i in indices]
        if not examples:
            raise ValueError("batch of no indices")
        if size is not None:
            examples = [self._fit(e, tuple(size), fit) for e in examples]
        shapes = {e["image"].shape for e in examples}
        if len(shapes) > 1:
            raise ValueError(f"{self.dataset}/{self.split}: examples of different sizes {sorted(shapes)}; give size=")
        return {key: np.stack([e[key] for e in examples]) for key in examples[0]}

    def _decode(self, example: dict) -> dict:
        image = decoding.image_to_float(example["image"])
        height, width = image.shape[:2]
        out = {"id": example["id"].decode(), "image": image}
        for spec in self.tasks:
            if example.get(f"{spec.name}_present", True):
                target, mask = self._decode_target(spec.name, example)
                if mask is None:
                    mask = np.ones(_mask_shape(spec, height, width), bool)
            else:
                target, mask = _absent(spec, height, width)
            out[spec.name], out[f"{spec.name}_mask"] = target, mask
        return out

    def _fit(self, example: dict, size: tuple[int, int], fit: str) -> dict:
        height, width = example["image"].shape[:2]
        ys, xs = _sample_grid(height, width, size, fit)
        out = {"id": example["id"], "image": _bilinear(example["image"], ys, xs)}
        for spec in self.tasks:
            for key in (spec.name, f"{spec.name}_mask"):
                value = example[key]
                out[key] = _nearest(value, ys, xs) if spec.dense else value
        return out


def _resolve_tasks(dataset: str, tasks, targets: Mapping[str, TargetSpec]) -> tuple[TargetSpec, ...]:
    if tasks is None:
        return tuple(targets.values())
    resolved = []
    for task in tasks:
        name = task if isinstance(task, str) else task.name
        if name not in targets:
            raise ValueError(f"{dataset}: no task {name!r}; available: {sorted(targets)}")
        spec = targets[name]
        if not isinstance(task, str) and (task.kind, int(task.outputs)) != (spec.kind, spec.outputs):
            raise ValueError(f"{dataset}: task {name!r} is served as kind {spec.kind!r} with {spec.outputs} outputs, "
                             f"requested kind {task.kind!r} with {task.outputs}")
        resolved.append(spec)
    return tuple(resolved)


def _mask_shape(spec: TargetSpec, height: int, width: int) -> tuple[int, ...]:
    return {"pixel": (height, width), "class": (spec.outputs,), "example": ()}[spec.mask]


def _absent(spec: TargetSpec, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero target and all-False mask of a task an example has no label for."""
    if spec.kind in ("segmentation", "segment_grouping"):
        target = np.zeros((height, width), np.int32)
    elif spec.dense:
        target = np.zeros((height, width, spec.outputs), np.float32)
    else:
        target = np.zeros((spec.outputs,), np.float32)
    return target, np.zeros(_mask_shape(spec, height, width), bool)


def _sample_grid(height: int, width: int, size: tuple[int, int], fit: str) -> tuple[np.ndarray, np.ndarray]:
    """Source coordinates (pixel-centre convention) of the output pixels' centres."""
    out_h, out_w = size
    if fit == "resize":
        scale_y, scale_x, offset_y, offset_x = height / out_h, width / out_w, 0.0, 0.0
    else:
        scale_y = scale_x = min(height / out_h, width / out_w)
        offset_y, offset_x = (height - out_h * scale_y) / 2, (width - out_w * scale_x) / 2
    ys = offset_y + (np.arange(out_h) + 0.5) * scale_y - 0.5
    xs = offset_x + (np.arange(out_w) + 0.5) * scale_x - 0.5
    return ys, xs


def _nearest(array: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    rows = np.clip(np.floor(ys + 0.5).astype(int), 0, array.shape[0] - 1)
    cols = np.clip(np.floor(xs + 0.5).astype(int), 0, array.shape[1] - 1)
    return array[rows[:, None], cols[None, :]]


def _bilinear(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    ys = np.clip(ys, 0, image.shape[0] - 1)
    xs = np.clip(xs, 0, image.shape[1] - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, image.shape[0] - 1), np.minimum(x0 + 1, image.shape[1] - 1)
    wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = image[y0][:, x0] * (1 - wx) + image[y0][:, x1] * wx
    bottom = image[y1][:, x0] * (1 - wx) + image[y1][:, x1] * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)
