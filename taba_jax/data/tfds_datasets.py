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

import tensorflow_datasets as tfds

from taba_jax.data import builders
from taba_jax.data.builders.common import DataError
from taba_jax.data.reader import SplitReader
from taba_jax.data.targets import TargetSpec


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
