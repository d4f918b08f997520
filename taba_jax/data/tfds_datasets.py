"""Build real datasets on first use and open them for reading, through TFDS without TensorFlow.

    dataset = build("nyuv2_multitask", manual_dir="~/data/nyuv2", data_dir="~/tfds")
    train = dataset.reader("train", tasks=["segmentation", "depth"])
    batch = train.batch(range(8), size=(288, 384))

`build` writes an ArrayRecord dataset into `<data_dir>/<name>/<config>/<version>` through TFDS, which
generates into a temporary directory and renames it only when complete: a failed build leaves no
dataset behind, and a complete one is reused.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Mapping

import numpy as np
import tensorflow_datasets as tfds

from taba_jax import rng
from taba_jax.data import builders
from taba_jax.data.builders.common import DataError
from taba_jax.data.dataset import MultiTaskDataset, Split
from taba_jax.data.reader import SplitReader
from taba_jax.data.targets import TargetSpec
from taba_jax.tasks import KINDS, TaskSpec


@dataclasses.dataclass(frozen=True)
class BuiltDataset:
    """A complete dataset on disk: its TFDS read-only builder, tasks and splits."""

    path: str
    builder: tfds.core.DatasetBuilder

    @property
    def name(self) -> str:
        return self.builder.info.name

    @property
    def targets(self) -> dict[str, TargetSpec]:
        """Every task the dataset serves, with its kind, outputs and mask semantics."""
        return builders.dataset_module(self.name).targets(self.builder.info.features)

    @property
    def splits(self) -> dict[str, int]:
        """Split name -> number of examples."""
        return {name: split.num_examples for name, split in self.builder.info.splits.items()}

    def reader(self, split: str, tasks=None) -> SplitReader:
        """Random-access reader of `split` for `tasks` (names or task specs; None = all)."""
        module = builders.dataset_module(self.name)
        return SplitReader(self.builder, split, self.targets, module.decode_target, module.REQUIRES, tasks)


def open_dataset(path) -> BuiltDataset:
    """Opens a complete built dataset directory (`<data_dir>/<name>/<config>/<version>`)."""
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(os.path.join(path, "dataset_info.json")):
        raise DataError(path, "not a complete built dataset (no dataset_info.json)")
    builder = tfds.builder_from_directory(path)
    builders.dataset_module(builder.info.name)  # unknown datasets fail here, not at read time
    return BuiltDataset(path, builder)


def build(name: str, manual_dir, data_dir, **options) -> BuiltDataset:
    """Builds dataset `name` from the files in `manual_dir` into `data_dir` unless a complete copy
    built with the same options is there already, and opens it. `options` go to the dataset's
    `make_config` (e.g. Taskonomy: subset, domains, buildings, split_file; PASCAL: source,
    normals_valid_classes)."""
    module = builders.dataset_module(name)
    manual_dir = os.path.expanduser(os.fspath(manual_dir))
    if not os.path.isdir(manual_dir) or not os.listdir(manual_dir):
        problem = "manual_dir is empty" if os.path.isdir(manual_dir) else "manual_dir not found"
        raise DataError(manual_dir, f"{problem}; expected:\n{module.BUILDER.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    accepted = [p for p in inspect.signature(module.make_config).parameters if p != "manual_dir"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"{name}: unknown options {unknown}; accepted: {accepted}")
    config = module.make_config(manual_dir, **options)
    builder = module.BUILDER(data_dir=os.path.expanduser(os.fspath(data_dir)), config=config)
    builder.download_and_prepare(file_format="array_record",
                                 download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return open_dataset(builder.data_dir)


def _encode_invalid(target: np.ndarray, mask: np.ndarray, kind: str) -> np.ndarray:
    """A reader's (target, mask) as one array in the encoding of `taba_jax.tasks`: masked class ids
    become -1, masked float values NaN (a per-class multilabel mask invalidates its example)."""
    if kind in ("segmentation", "segment_grouping"):
        return np.where(mask, target, -1).astype(np.int32)
    mask = np.asarray(mask, bool)
    if kind == "multilabel":
        mask = mask.all(axis=-1)
    mask = mask.reshape(mask.shape + (1,) * (target.ndim - mask.ndim))
    return np.where(mask, target, np.nan).astype(np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class SourceSplit:
    """One split of a built dataset read by index (a `RandomAccessSplit`): examples are decoded,
    brought to `image_size`², and their invalid targets encoded as -1/NaN when asked for. Only the
    examples asked for are read; picklable, so grain worker processes read it in parallel.

    `readers` maps a tuple of task names to a reader of those tasks (one per task and one of all:
    a per-task batch decodes only its task's label); `rows` are the readers' records in this split."""

    readers: Mapping[tuple[str, ...], SplitReader]
    kinds: Mapping[str, str]
    image_size: int
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, 3)

    def batch(self, indices, tasks) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        tasks = tuple(tasks)
        unknown = [t for t in tasks if t not in self.kinds]
        if unknown:
            raise ValueError(f"split serves tasks {list(self.kinds)}, asked for {unknown}")
        reader = self.readers[tasks] if tasks in self.readers else self.readers[tuple(self.kinds)]
        rows = self.rows[np.asarray(indices, np.int64)]
        batch = reader.batch(rows, size=(self.image_size, self.image_size))
        return (batch["image"].astype(np.float32),
                {t: _encode_invalid(batch[t], batch[f"{t}_mask"], self.kinds[t]) for t in tasks})

    def ids(self, indices) -> np.ndarray:
        """The dataset's ids (str) of the examples at `indices`: what identifies an image across
        builds, where a position is only valid in this one."""
        return self.readers[tuple(self.kinds)].ids(self.rows[np.asarray(indices, np.int64)])

    def select_tasks(self, names) -> "SourceSplit":
        names = tuple(names)
        readers = {k: r for k, r in self.readers.items() if set(k) <= set(names)}
        readers.setdefault(names, self.readers[tuple(self.kinds)])  # decodes more tasks, returns these
        return SourceSplit(readers, {n: self.kinds[n] for n in names}, self.image_size, self.rows)


def open_splits(dataset: BuiltDataset, tasks, image_size: int, validation_fraction: float = 0.1,
                seed: int = 0) -> MultiTaskDataset:
    """The built dataset as a MultiTaskDataset of `SourceSplit`s read by index (nothing is loaded):
    its train split is the pool an allocation buys labels in. A dataset without a test split (PASCAL
    VOC) is tested on its validation split; one without a validation split (then) gets one carved
    from train with the seed's `split` stream."""
    targets = dataset.targets
    unknown = [t for t in tasks if t not in targets]
    if unknown:
        raise ValueError(f"{dataset.name} has no tasks {unknown}; it serves {list(targets)}")
    unsupported = [t for t in tasks if targets[t].kind not in KINDS]
    if unsupported:
        raise ValueError(f"tasks {unsupported} of kind {[targets[t].kind for t in unsupported]} cannot be trained yet")
    specs = [TaskSpec(t, targets[t].kind, targets[t].outputs) for t in tasks]
    kinds = {t: targets[t].kind for t in tasks}

    def split(name, rows=None):
        readers = {(t,): dataset.reader(name, [t]) for t in tasks}
        readers[tuple(tasks)] = dataset.reader(name, list(tasks))
        rows = np.arange(dataset.splits[name]) if rows is None else rows
        return SourceSplit(readers, kinds, image_size, rows)

    splits = {name: split(name) for name in ("train", "validation", "test") if name in dataset.splits}
    if "test" not in splits:
        splits["test"] = splits.pop("validation")
    if "validation" not in splits:
        size = dataset.splits["train"]
        order = rng.numpy_rng(seed, "split").permutation(size)
        count = max(1, int(round(validation_fraction * size)))
        splits["validation"] = split("train", np.sort(order[:count]))
        splits["train"] = split("train", np.sort(order[count:]))
    return MultiTaskDataset(tuple(specs), splits)


def to_memory(dataset: BuiltDataset, tasks, image_size: int, validation_fraction: float = 0.1,
              seed: int = 0) -> MultiTaskDataset:
    """`open_splits`, then every split read into memory (for datasets that fit, e.g. NYUv2, PASCAL):
    training then gathers its batches on the devices."""
    streamed = open_splits(dataset, tasks, image_size, validation_fraction, seed)
    splits = {name: Split(*split.batch(np.arange(len(split)), list(tasks))) for name, split in streamed.splits.items()}
    return MultiTaskDataset(streamed.tasks, splits)
