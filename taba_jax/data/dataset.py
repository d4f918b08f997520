"""`MultiTaskDataset`: images plus per-task targets from NumPy arrays, with train/val/test splits."""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from taba_jax import io_utils
from taba_jax.tasks import TaskSpec, synthetic_task_specs

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class Split:
    images: np.ndarray  # (N, H, W, C) float32
    targets: dict[str, np.ndarray]

    def __len__(self):
        return len(self.images)


@dataclasses.dataclass(frozen=True)
class MultiTaskDataset:
    """A multi-task dataset. The train split is the unlabeled pool an allocation buys labels in."""

    tasks: tuple[TaskSpec, ...]
    splits: dict[str, Split]

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
        for field, value in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
            if not 0 <= value < 1:
                raise ValueError(f"{field} must be in [0, 1), got {value}")
        n = len(images)
        num_val, num_test = int(round(n * validation_fraction)), int(round(n * test_fraction))
        if n - num_val - num_test < 1:
            raise ValueError(f"no training images left: {n} images, validation {num_val}, test {num_test}")
        order = np.random.default_rng(seed).permutation(n)
        bounds = {"train": order[: n - num_val - num_test], "validation": order[n - num_val - num_test: n - num_test],
                  "test": order[n - num_test:]}
        splits = {name: Split(images[np.sort(idx)].astype(np.float32),
                              {t: np.asarray(v)[np.sort(idx)] for t, v in targets.items()})
                  for name, idx in bounds.items()}
        return cls(tuple(tasks), splits)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def train(self) -> Split:
        return self.splits["train"]

    def task_specs(self, names) -> list[TaskSpec]:
        """The TaskSpecs of `names`, in that order."""
        by_name = {t.name: t for t in self.tasks}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ValueError(f"unknown tasks {unknown}; the dataset has {self.task_names}")
        return [by_name[n] for n in names]

    def select_tasks(self, names: list[str]) -> "MultiTaskDataset":
        tasks = self.task_specs(names)
        splits = {k: Split(s.images, {n: s.targets[n] for n in names}) for k, s in self.splits.items()}
        return MultiTaskDataset(tuple(tasks), splits)


def synthetic_dataset(num_images: int, image_size: int = 32, seed: int = 0, tasks: list[str] | None = None,
                      cache_dir: str | None = None, **split_kwargs) -> MultiTaskDataset:
    """The embedded synthetic scenes as a MultiTaskDataset (cached as .npz in `cache_dir` if given)."""
    from taba_jax.data import synthetic
    images = targets = None
    cache = None
    if cache_dir:
        cache = os.path.join(cache_dir, f"synthetic_n{num_images}_s{image_size}_seed{seed}.npz")
        if os.path.exists(cache):
            with np.load(cache, allow_pickle=False) as data:
                images = data["images"]
                targets = {name: data[name] for name in synthetic.TASK_NAMES}
    if images is None:
        images, targets = synthetic.generate(num_images, image_size, seed)
        if cache:
            with io_utils.atomic_open(cache, "wb") as f:
                np.savez(f, images=images, **targets)
    dataset = MultiTaskDataset.from_arrays(images, targets, synthetic_task_specs(), seed=seed, **split_kwargs)
    return dataset.select_tasks(tasks) if tasks is not None else dataset
