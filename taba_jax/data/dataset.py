"""`MultiTaskDataset`: images plus per-task targets with train/validation/test splits.

The train split is the unlabeled pool an allocation buys labels in; validation serves TABA's
learning curves, test the reported metrics. Invalid targets are encoded in the arrays themselves
(see `taba_jax.tasks`).

A split is anything with the `RandomAccessSplit` interface: its size, its image shape, and the images
and targets at given indices. `Split` holds arrays in memory (the synthetic scenes, a user's arrays);
`taba_jax.data.tfds_datasets.SourceSplit` reads a TFDS ArrayRecord data source by index, so a pool of
millions of images is never in memory. The trainer, TABA and the evaluation read splits only through it.
"""
from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence

import numpy as np

from taba_jax import rng
from taba_jax.tasks import TaskSpec

SPLITS = ("train", "validation", "test")


class RandomAccessSplit(Protocol):
    """One split read by index: the only way the trainer, TABA and the evaluation read images.
    A split may also have `ids(indices) -> (B,) str`, the examples' stable ids (a TFDS split's),
    which allocation files record beside the positions."""

    def __len__(self) -> int: ...

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image the split serves."""

    def batch(self, indices: np.ndarray, tasks: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Images (B, H, W, C) float32 and the targets of `tasks` at `indices` (invalid entries -1/NaN)."""

    def select_tasks(self, names: Sequence[str]) -> "RandomAccessSplit":
        """The same split serving only the tasks `names`."""


@dataclasses.dataclass(frozen=True)
class Split:
    """In-memory arrays of one split: images (N, H, W, C) float32 and targets {task: (N, ...)}."""

    images: np.ndarray
    targets: dict[str, np.ndarray]

    def __len__(self):
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    @property
    def nbytes(self) -> int:
        return self.images.nbytes + sum(t.nbytes for t in self.targets.values())

    def batch(self, indices: np.ndarray, tasks) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Images and the targets of `tasks` (names) at `indices`."""
        return self.images[indices], {t: self.targets[t][indices] for t in tasks}

    def select_tasks(self, names) -> "Split":
        return Split(self.images, {n: self.targets[n] for n in names})


def split_sizes(num_images: int, validation_fraction: float = 0.1, test_fraction: float = 0.1) -> dict[str, int]:
    """Images per split of `from_arrays` (known before any data exists, e.g. to check an allocation)."""
    for field, value in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"{field} must be in [0, 1), got {value}")
    num_val, num_test = int(round(num_images * validation_fraction)), int(round(num_images * test_fraction))
    if num_images - num_val - num_test < 1:
        raise ValueError(f"no training images left: {num_images} images, validation {num_val}, test {num_test}")
    return {"train": num_images - num_val - num_test, "validation": num_val, "test": num_test}


@dataclasses.dataclass(frozen=True)
class MultiTaskDataset:
    """A multi-task dataset: the task specifications and the splits."""

    tasks: tuple[TaskSpec, ...]
    splits: dict[str, RandomAccessSplit]

    @classmethod
    def from_arrays(cls, images: np.ndarray, targets: dict[str, np.ndarray], tasks: list[TaskSpec], *,
                    validation_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0) -> "MultiTaskDataset":
        """Splits N images (N, H, W, C) and their targets (N, ...) per task at random (seeded)."""
        images = np.asarray(images)
        if images.ndim != 4:
            raise ValueError(f"images must have shape (N, H, W, C), got {images.shape}")
        names = [t.name for t in tasks]
        if sorted(names) != sorted(targets):
            raise ValueError(f"targets has tasks {sorted(targets)}, the task list {sorted(names)}")
        for name, target in targets.items():
            if len(target) != len(images):
                raise ValueError(f"targets[{name!r}] has {len(target)} rows, images has {len(images)}")
        sizes = split_sizes(len(images), validation_fraction, test_fraction)
        order = rng.numpy_rng(seed, "split").permutation(len(images))
        bounds = np.cumsum([0] + [sizes[s] for s in SPLITS])
        splits = {}
        for name, start, stop in zip(SPLITS, bounds[:-1], bounds[1:]):
            idx = np.sort(order[start:stop])
            splits[name] = Split(images[idx].astype(np.float32), {t: np.asarray(v)[idx] for t, v in targets.items()})
        return cls(tuple(tasks), splits)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def train(self) -> RandomAccessSplit:
        return self.splits["train"]

    def task_specs(self, names) -> list[TaskSpec]:
        """The TaskSpecs of `names`, in that order."""
        by_name = {t.name: t for t in self.tasks}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ValueError(f"unknown tasks {unknown}; the dataset has {self.task_names}")
        return [by_name[n] for n in names]

    def select_tasks(self, names) -> "MultiTaskDataset":
        tasks = self.task_specs(names)
        return MultiTaskDataset(tuple(tasks), {k: s.select_tasks(names) for k, s in self.splits.items()})
