"""NYUv2 multi-task split (795 train / 654 test, 288x384; 13-class segmentation, depth, normals)
as a TFDS ArrayRecord dataset, read from the `.npy` files of the MTAN / LibMTL preprocessing:
`<root>/{train,val}/{image,label,depth,normal}/<i>.npy` (the `val` folder holds the 654 test images).
Arrays are stored losslessly (float32 / int16, zlib) and decoded at read time.
"""
from __future__ import annotations

import os
import re

import numpy as np
import tensorflow_datasets as tfds

from taba_jax.data import decoding
from taba_jax.data.builders import common
from taba_jax.data.targets import TargetSpec

NUM_CLASSES = 13
SPLIT_FOLDERS = {"train": "train", "test": "val"}
FIELDS = ("image", "label", "depth", "normal")
_INDEX = re.compile(r"(\d+)\.npy")
_TOLERANCE = 1e-3  # for image range and normal length checks (the preprocessing interpolated)


def targets(features) -> dict[str, TargetSpec]:
    """(kind, outputs, mask semantics) of the tasks of a built dataset."""
    return {"segmentation": TargetSpec("segmentation", "segmentation", NUM_CLASSES, "label -1"),
            "depth": TargetSpec("depth", "dense_regression", 1, "depth 0 (no measurement)"),
            "normal": TargetSpec("normal", "normals", 3, "all-zero vector")}


REQUIRES: dict[str, tuple[str, ...]] = {}


def decode_target(name: str, example: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """(target, mask) of one task from a stored example."""
    if name == "segmentation":
        return decoding.labels_with_ignore(example["segmentation"], decoding.NYU_IGNORE)
    if name == "depth":
        depth = example["depth"]
        return depth, depth[..., 0] > 0
    return decoding.unit_normals(example["normal"])


def make_config(manual_dir) -> tfds.core.BuilderConfig:
    """The only config (the preprocessing has no options); checks that `manual_dir` exists."""
    common.require_dir(manual_dir, "the preprocessed NYUv2 (see MANUAL_DOWNLOAD_INSTRUCTIONS)")
    return Nyuv2Multitask.BUILDER_CONFIGS[0]


class Nyuv2Multitask(common.LocalFilesBuilder):
    """NYUv2 with 13-class segmentation (-1 ignored), depth (0 invalid) and normals (0 invalid)."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="mtan", description="NYUv2 795/654, 288x384, MTAN/LibMTL preprocessing")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the preprocessed NYUv2 of MTAN (Liu et al., CVPR 2019; https://github.com/lorenmt/mtan, link in its
README, also used by LibMTL examples/nyu) and extract it so that <manual_dir> holds
  train/{image,label,depth,normal}/<i>.npy   (795 images, i = 0..794)
  val/{image,label,depth,normal}/<i>.npy     (654 test images)
image: (288, 384, 3) float in [0, 1]; label: (288, 384) class 0..12 or -1; depth: (288, 384[, 1]) meters,
0 = invalid; normal: (288, 384, 3) unit vectors, all-zero = invalid."""

    def _info(self) -> tfds.core.DatasetInfo:
        def dense(channels, dtype):
            shape = (None, None) if channels is None else (None, None, channels)
            return tfds.features.Tensor(shape=shape, dtype=dtype, encoding="zlib")

        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "id": tfds.features.Text(), "image": dense(3, np.float32), "segmentation": dense(None, np.int16),
                "depth": dense(1, np.float32), "normal": dense(3, np.float32)}),
            homepage="https://cs.nyu.edu/~silberman/datasets/nyu_depth_v2.html")

    def _split_generators(self, dl_manager):
        root = os.fspath(dl_manager.manual_dir)
        return {split: self._generate_examples(root, split, _list_indices(root, folder))
                for split, folder in SPLIT_FOLDERS.items()}

    def _generate_examples(self, root: str, split: str, indices: list[int]):
        folder = os.path.join(root, SPLIT_FOLDERS[split])
        yield from common.threaded_map(lambda i: (f"{split}/{i}", _example(folder, split, i)), indices)


def _list_indices(root: str, folder: str) -> list[int]:
    directory = os.path.join(root, folder)
    for field in FIELDS:
        common.require_dir(os.path.join(directory, field),
                           f"the MTAN layout <root>/{{train,val}}/{{{','.join(FIELDS)}}}/<i>.npy")
    indices = sorted(int(m.group(1)) for e in os.listdir(os.path.join(directory, "image")) if (m := _INDEX.fullmatch(e)))
    if not indices:
        raise common.DataError(os.path.join(directory, "image"), "split has no images; expected <i>.npy files")
    return indices


def _example(folder: str, split: str, index: int) -> dict:
    paths = {field: os.path.join(folder, field, f"{index}.npy") for field in FIELDS}
    for field, path in paths.items():
        if not os.path.isfile(path):
            raise common.DataError(path, f"missing {field} of image {paths['image']}")
    image = _float_array(paths["image"], (3,))
    if image.shape[-1] != 3 or image.min() < -_TOLERANCE or image.max() > 1 + _TOLERANCE:
        raise common.DataError(paths["image"], f"image of shape {image.shape} in [{image.min()}, {image.max()}]; "
                                               "expected (H, W, 3) in [0, 1]")
    height, width = image.shape[:2]
    label = _float_array(paths["label"], (2,))
    common.check_shape(paths["label"], label, height, width)
    valid = (label == np.round(label)) & (((label >= 0) & (label < NUM_CLASSES)) | (label == decoding.NYU_IGNORE))
    if not valid.all():
        raise common.DataError(paths["label"], f"label values {np.unique(label[~valid])[:5]}; expected integers "
                                               f"0..{NUM_CLASSES - 1} or -1")
    depth = _float_array(paths["depth"], (2, 3))
    depth = depth if depth.ndim == 3 else depth[..., None]
    common.check_shape(paths["depth"], depth, height, width)
    if depth.shape[-1] != 1 or depth.min() < 0:
        raise common.DataError(paths["depth"], f"depth of shape {depth.shape}, min {depth.min()}; expected (H, W[, 1]) >= 0")
    normal = _float_array(paths["normal"], (3,))
    common.check_shape(paths["normal"], normal, height, width)
    if normal.shape[-1] != 3 or np.linalg.norm(normal, axis=-1).max() > 1 + 10 * _TOLERANCE:
        raise common.DataError(paths["normal"], f"normals of shape {normal.shape}; expected (H, W, 3) vectors of length <= 1")
    return {"id": f"{split}/{index}", "image": np.clip(image, 0, 1), "segmentation": label.astype(np.int16),
            "depth": depth, "normal": normal}


def _float_array(path: str, ndims: tuple[int, ...]) -> np.ndarray:
    array = common.read_npy(path)
    if array.ndim not in ndims or not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise common.DataError(path, f"array of shape {array.shape} and dtype {array.dtype}; expected "
                                     f"{' or '.join(map(str, ndims))} dimensions of finite numbers")
    return array.astype(np.float32)


BUILDER = Nyuv2Multitask
