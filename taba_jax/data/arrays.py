"""A user's own arrays as a dataset (`--config.dataset=npz:PATH`).

The .npz file holds `images` (N, H, W, C): uint8 in 0..255 or floats in [0, 1], and for every task
`<task>` its targets (N, ...) in the encoding of `taba_jax.tasks` (invalid entries -1 / NaN),
`<task>_kind` (a kind name, e.g. "segmentation") and `<task>_outputs` (classes or channels):

    np.savez("arrays.npz", images=images, depth=depth, depth_kind="dense_regression", depth_outputs=1)

The images are split train / validation / test = 80 / 10 / 10 % with the seed's `split` stream and
held in memory.
"""
from __future__ import annotations

import os
import zipfile

import numpy as np

from taba_jax.data.dataset import MultiTaskDataset
from taba_jax.tasks import TaskSpec


class ArraysError(ValueError):
    """A malformed arrays file; the message names the file and the entry."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")


def load_npz(path: str, tasks, image_size: int, seed: int = 0) -> MultiTaskDataset:
    """The arrays of `tasks` in the .npz at `path` as a MultiTaskDataset; its images must be
    `image_size` x `image_size`."""
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise ArraysError(path, "no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ArraysError(path, f"not a readable .npz file ({e})") from None
    images = _images(path, arrays, image_size)
    specs, targets = [], {}
    for name in tasks:
        missing = [key for key in (name, f"{name}_kind", f"{name}_outputs") if key not in arrays]
        if missing:
            raise ArraysError(path, f"task {name!r} needs entries {missing}; the file has {sorted(arrays)}")
        try:
            spec = TaskSpec(name, str(arrays[f"{name}_kind"]), int(arrays[f"{name}_outputs"]))
        except (TypeError, ValueError) as e:
            raise ArraysError(path, f"{name}_kind / {name}_outputs: {e}") from None
        target = arrays[name]
        if len(target) != len(images):
            raise ArraysError(path, f"{name!r} has {len(target)} rows, images has {len(images)}")
        if spec.dense and target.shape[1:3] != images.shape[1:3]:
            raise ArraysError(path, f"{name!r} is a dense task of shape {target.shape[1:]}, images are "
                                    f"{images.shape[1]}x{images.shape[2]}")
        specs.append(spec)
        targets[name] = target
    try:
        return MultiTaskDataset.from_arrays(images, targets, specs, seed=seed)
    except ValueError as e:
        raise ArraysError(path, str(e)) from None


def _images(path: str, arrays: dict, image_size: int) -> np.ndarray:
    if "images" not in arrays:
        raise ArraysError(path, f"no 'images' entry; the file has {sorted(arrays)}")
    images = arrays["images"]
    if images.ndim != 4:
        raise ArraysError(path, f"images must have shape (N, H, W, C), got {images.shape}")
    if images.shape[1:3] != (image_size, image_size):
        raise ArraysError(path, f"images are {images.shape[1]}x{images.shape[2]}; set --config.image_size to their "
                                f"size (square images only), now {image_size}")
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    images = images.astype(np.float32)
    if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise ArraysError(path, "float images must be finite and in [0, 1]")
    return images
