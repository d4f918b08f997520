"""Taskonomy (Zamir et al., CVPR 2018) as a TFDS ArrayRecord dataset, one example per view.

Reads the Omnidata release layout `<root>/<domain>/taskonomy/<building>/point_<p>_view_<v>_domain_<domain>.<ext>`
or the original per-building layout `<root>/<building>/<domain>/point_<p>_view_<v>_domain_<domain>.<ext>`.
Labels are stored in canonical encodings (16-bit ones as zlib tensors, 8-bit ones as PNG) and decoded
by `taba_jax.data.decoding` at read time; a label file missing for a view is stored as absent
(`<domain>_present` False) and read back as an all-invalid mask.
"""
from __future__ import annotations

import csv
import dataclasses
import importlib.util
import os
import re

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from taba_jax.data import decoding
from taba_jax.data.builders import common
from taba_jax.data.targets import TargetSpec

SPLITS = ("train", "validation", "test")
_CSV_COLUMNS = {"train": "train", "val": "validation", "test": "test"}
_VIEW = re.compile(r"point_(\d+)_view_(\d+)_domain_rgb\.png")


@dataclasses.dataclass(frozen=True)
class Domain:
    """How one Taskonomy domain is read (`storage`) and which file holds it."""

    storage: str  # depth | fraction16 | normal | curvature | reshading | semantic | segments | classes | point_info
    folder: str  # directory name in the release (point_info is `points` in the original layout)
    ext: str = "png"


DOMAINS = {
    "depth_zbuffer": Domain("depth", "depth_zbuffer"),
    "depth_euclidean": Domain("depth", "depth_euclidean"),
    "normal": Domain("normal", "normal"),
    "edge_texture": Domain("fraction16", "edge_texture"),
    "edge_occlusion": Domain("fraction16", "edge_occlusion"),
    "keypoints2d": Domain("fraction16", "keypoints2d"),
    "keypoints3d": Domain("fraction16", "keypoints3d"),
    "principal_curvature": Domain("curvature", "principal_curvature"),
    "reshading": Domain("reshading", "reshading"),
    "segment_semantic": Domain("semantic", "segment_semantic"),
    "segment_unsup2d": Domain("segments", "segment_unsup2d"),
    "segment_unsup25d": Domain("segments", "segment_unsup25d"),
    "class_object": Domain("classes", "class_object", "npy"),
    "class_scene": Domain("classes", "class_scene", "npy"),
    "room_layout": Domain("point_info", "point_info", "json"),
    "vanishing_point": Domain("point_info", "point_info", "json"),
}
# The original per-building release names the point_info folder/domain differently.
_ORIGINAL_NAMES = {"point_info": ("points", "fixatedpose")}

_MODES_16BIT = ("I;16", "I;16B", "I;16L", "I")
_MODES = {"depth": _MODES_16BIT, "fraction16": ("L",) + _MODES_16BIT, "normal": ("RGB",), "curvature": ("RGB",),
          "reshading": ("L", "RGB"), "semantic": ("L", "P", "RGB"), "segments": ("L", "P", "RGB") + _MODES_16BIT}


_TARGETS = {  # domain: (kind, outputs (None = the stored vector's length), what the mask removes)
    "depth_zbuffer": ("dense_regression", 1, "raw 65535 (no geometry)"),
    "depth_euclidean": ("dense_regression", 1, "raw 65535 (no geometry)"),
    "normal": ("normals", 3, "decoded norm < 0.5 (gray fill) or built depth invalid"),
    "edge_texture": ("dense_regression", 1, ""),
    "edge_occlusion": ("dense_regression", 1, ""),
    "keypoints2d": ("dense_regression", 1, ""),
    "keypoints3d": ("dense_regression", 1, ""),
    "principal_curvature": ("dense_regression", 2, "both channels 0"),
    "reshading": ("dense_regression", 1, ""),
    "segment_semantic": ("segmentation", decoding.TASKONOMY_SEMANTIC_CLASSES, "raw id 0 (uncertain)"),
    "segment_unsup2d": ("segment_grouping", 64, ""),  # 64: Taskonomy's embedding width
    "segment_unsup25d": ("segment_grouping", 64, ""),
    "class_object": ("distribution", None, ""),
    "class_scene": ("distribution", None, ""),
    "room_layout": ("regression", 9, "no bounding_box_ranges in point_info"),
    "vanishing_point": ("regression", 9, "no vanishing_points_gaussian_sphere in point_info"),
}


def targets(features) -> dict[str, TargetSpec]:
    """(kind, outputs, mask semantics) of every domain a built dataset holds."""
    return {name: TargetSpec(name, kind, outputs or features[name].shape[0], invalid)
            for name, (kind, outputs, invalid) in _TARGETS.items() if name in features}


# Normals are masked where the view's depth is invalid, so their decoding reads a depth domain.
REQUIRES = {"normal": tuple(f"{d}{suffix}" for d in ("depth_zbuffer", "depth_euclidean") for suffix in ("", "_present"))}


def decode_target(name: str, example: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """(target, mask or None = all valid) of a present domain from a stored example."""
    storage = DOMAINS[name].storage
    raw = example[name]
    if storage == "depth":
        return decoding.depth_from_uint16(raw)
    if storage == "normal":
        valid = None
        for depth in ("depth_zbuffer", "depth_euclidean"):
            if example.get(f"{depth}_present", False):
                valid = decoding.depth_from_uint16(example[depth])[1]
                break
        return decoding.normals_from_rgb(raw, valid)
    if storage == "fraction16":
        return decoding.uint16_fraction(raw), None
    if storage == "curvature":
        return decoding.principal_curvature(raw)
    if storage == "reshading":
        return decoding.uint8_fraction(raw), None
    if storage == "semantic":
        return decoding.taskonomy_semantic(raw)
    if storage == "segments":
        return raw[..., 0].astype(np.int32), None
    if storage == "classes":
        return decoding.class_distribution(raw), None
    return raw.astype(np.float32), None  # point_info vectors, decoded at build time


@dataclasses.dataclass(eq=False)
class TaskonomyConfig(tfds.core.BuilderConfig):
    """Which domains and buildings to build. `buildings` is ((split, (building, ...)), ...)."""

    domains: tuple[str, ...] = ()
    buildings: tuple[tuple[str, tuple[str, ...]], ...] = ()
    class_object_classes: int = 1000  # ImageNet classes of class_object
    class_scene_classes: int = 365  # Places365 classes of class_scene


def make_config(manual_dir, subset: str = "tiny", domains=None, buildings: dict | None = None,
                split_file=None, class_object_classes: int = 1000, class_scene_classes: int = 365) -> TaskonomyConfig:
    """A config for `Taskonomy` from user options.

    Buildings per split come from `buildings` ({split: [building, ...]}, splits train/validation/test),
    else from the release's split file `train_val_test_<subset>.csv` (columns id,train,val,test):
    `split_file` if given, else `<manual_dir>/train_val_test_<subset>.csv`, else the copy inside an
    installed `omnidata_tools` package. `domains` defaults to every known domain found on disk.
    """
    root = common.require_dir(manual_dir, "the Taskonomy data (see MANUAL_DOWNLOAD_INSTRUCTIONS)")
    layout = detect_layout(root)
    if buildings is not None:
        unknown = sorted(set(buildings) - set(SPLITS))
        if unknown:
            raise ValueError(f"buildings: unknown splits {unknown}; expected some of {SPLITS}")
        per_split = {split: tuple(buildings.get(split, ())) for split in SPLITS}
        label = "custom"
    else:
        per_split = read_split_file(split_file or find_split_file(root, subset))
        label = subset
    if domains is None:
        domains = [d for d in DOMAINS if _domain_on_disk(root, layout, d, per_split)]
        if not domains:
            raise common.DataError(root, f"no label domains found; expected folders of {sorted(DOMAINS)}")
    domains = tuple(dict.fromkeys(domains))
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown:
        raise ValueError(f"unknown Taskonomy domains {unknown}; known: {sorted(DOMAINS)} (rgb is always read)")
    options = {"domains": domains, "buildings": per_split, "class_object_classes": class_object_classes,
               "class_scene_classes": class_scene_classes}
    return TaskonomyConfig(name=f"{label}-{common.options_digest(options)}", version=Taskonomy.VERSION,
                           description=f"Taskonomy {label}: domains {', '.join(domains)}", domains=domains,
                           buildings=tuple((s, tuple(b)) for s, b in per_split.items() if b),
                           class_object_classes=class_object_classes, class_scene_classes=class_scene_classes)


def detect_layout(root: str) -> str:
    """'omnidata' for <root>/rgb/taskonomy/<building>/..., 'original' for <root>/<building>/rgb/..."""
    if os.path.isdir(os.path.join(root, "rgb", "taskonomy")):
        return "omnidata"
    if any(os.path.isdir(os.path.join(root, entry, "rgb")) for entry in os.listdir(root)):
        return "original"
    raise common.DataError(root, "wrong layout: expected <root>/rgb/taskonomy/<building>/point_<p>_view_<v>_domain_rgb.png"
                                 " (Omnidata release) or <root>/<building>/rgb/point_<p>_view_<v>_domain_rgb.png")


def find_split_file(root: str, subset: str) -> str:
    """The release's `train_val_test_<subset>.csv` in `root` or in an installed omnidata_tools."""
    name = f"train_val_test_{subset}.csv"
    candidates = [os.path.join(root, name)]
    spec = importlib.util.find_spec("omnidata_tools")
    if spec is not None and spec.submodule_search_locations:
        candidates.append(os.path.join(list(spec.submodule_search_locations)[0], "dataset", "starter_dataset",
                                       "component_datasets", "taskonomy", name))
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise common.DataError(candidates[0], f"split file for subset {subset!r} not found; give split_file= (the "
                                          f"release's {name}, columns id,train,val,test) or buildings={{split: [...]}}")


def read_split_file(path) -> dict[str, tuple[str, ...]]:
    """{split: buildings} from a release split CSV (id,train,val,test with 0/1 flags; any newlines)."""
    try:
        with open(path, newline="") as f:
            rows = [row for row in csv.reader(f) if row]
    except OSError as e:
        raise common.DataError(path, f"unreadable split file ({e})") from None
    if not rows or [c.strip() for c in rows[0]] != ["id", "train", "val", "test"]:
        raise common.DataError(path, f"split file header {rows[:1]}, expected ['id', 'train', 'val', 'test']")
    per_split = {split: [] for split in SPLITS}
    for row in rows[1:]:
        if len(row) != 4 or any(flag.strip() not in ("0", "1") for flag in row[1:]):
            raise common.DataError(path, f"bad split row {row}; expected building,0|1,0|1,0|1")
        for column, flag in zip(("train", "val", "test"), row[1:]):
            if flag.strip() == "1":
                per_split[_CSV_COLUMNS[column]].append(row[0].strip())
    return {split: tuple(b) for split, b in per_split.items()}


def _folder_and_file_domain(layout: str, name: str) -> tuple[str, str]:
    folder = DOMAINS[name].folder if name in DOMAINS else name
    if layout == "original" and folder in _ORIGINAL_NAMES:
        return _ORIGINAL_NAMES[folder]
    return folder, folder


def _domain_dir(root: str, layout: str, name: str, building: str) -> str:
    folder, _ = _folder_and_file_domain(layout, name)
    if layout == "omnidata":
        return os.path.join(root, folder, "taskonomy", building)
    return os.path.join(root, building, folder)


def _domain_path(root: str, layout: str, name: str, building: str, point: int, view: int) -> str:
    _, file_domain = _folder_and_file_domain(layout, name)
    ext = DOMAINS[name].ext if name in DOMAINS else "png"
    return os.path.join(_domain_dir(root, layout, name, building),
                        f"point_{point}_view_{view}_domain_{file_domain}.{ext}")


def _domain_on_disk(root: str, layout: str, name: str, per_split: dict) -> bool:
    if layout == "omnidata":
        return os.path.isdir(os.path.join(root, _folder_and_file_domain(layout, name)[0], "taskonomy"))
    return any(os.path.isdir(_domain_dir(root, layout, name, b)) for bs in per_split.values() for b in bs)


class Taskonomy(common.LocalFilesBuilder):
    """Taskonomy views with the configured label domains; splits by building."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = []  # configs come from `make_config` (options decide domains and buildings)
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download Taskonomy with the Omnidata tool (https://github.com/EPFL-VILAB/omnidata, `pip install omnidata-tools`):
  omnitools.download rgb depth_zbuffer normal segment_semantic ... --components taskonomy --subset tiny \\
      --dest <manual_dir> --name NAME --email EMAIL --agree_all
which gives <manual_dir>/<domain>/taskonomy/<building>/point_<p>_view_<v>_domain_<domain>.png (.npy for
class_object/class_scene, point_info/.../domain_point_info.json for room_layout and vanishing_point).
The original per-building layout <manual_dir>/<building>/<domain>/point_<p>_view_<v>_domain_<domain>.png
(points/..._domain_fixatedpose.json) is read too. Buildings per split: put the release's
train_val_test_<subset>.csv (from omnidata_tools or StanfordVL/taskonomy data/assets/splits_taskonomy.zip)
into <manual_dir>, or pass split_file= or buildings={split: [...]}. rgb is required for every view."""

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        features = {"id": tfds.features.Text(), "building": tfds.features.Text(),
                    "point": tfds.features.Scalar(np.int32), "view": tfds.features.Scalar(np.int32),
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png")}
        for name in config.domains:
            features[name] = _feature(name, config)
            features[f"{name}_present"] = tfds.features.Scalar(np.bool_)
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features),
                                              homepage="http://taskonomy.stanford.edu/")

    def _split_generators(self, dl_manager):
        root = os.fspath(dl_manager.manual_dir)
        layout = detect_layout(root)
        splits = {}
        for split, buildings in self.builder_config.buildings:
            views = _list_views(root, layout, split, buildings)
            splits[split] = self._generate_examples(root, layout, views)
        return splits

    def _generate_examples(self, root: str, layout: str, views: list[tuple[str, int, int]]):
        config = self.builder_config
        for key, example in common.threaded_map(lambda v: _example(root, layout, config, *v), views):
            yield key, example


def _feature(name: str, config: TaskonomyConfig):
    storage = DOMAINS[name].storage
    if storage in ("depth", "fraction16", "segments"):
        return tfds.features.Tensor(shape=(None, None, 1), dtype=np.uint16, encoding="zlib")
    if storage in ("normal", "curvature"):
        return tfds.features.Image(shape=(None, None, 3), encoding_format="png")
    if storage in ("reshading", "semantic"):
        return tfds.features.Image(shape=(None, None, 1), encoding_format="png")
    width = {"class_object": config.class_object_classes, "class_scene": config.class_scene_classes}.get(name, 9)
    return tfds.features.Tensor(shape=(width,), dtype=np.float32)


def _list_views(root: str, layout: str, split: str, buildings) -> list[tuple[str, int, int]]:
    views, missing = [], []
    for building in buildings:
        directory = _domain_dir(root, layout, "rgb", building)
        if not os.path.isdir(directory):
            missing.append(building)
            continue
        for entry in sorted(os.listdir(directory)):
            match = _VIEW.fullmatch(entry)
            if match:
                views.append((building, int(match.group(1)), int(match.group(2))))
    if missing:
        logging.warning("Taskonomy %s: %d buildings have no rgb folder and are skipped: %s", split, len(missing),
                        ", ".join(missing))
    if not views:
        raise common.DataError(_domain_dir(root, layout, "rgb", "<building>"),
                               f"split {split!r} has no images: expected point_<p>_view_<v>_domain_rgb.png files for "
                               f"buildings {list(buildings)}")
    return views


def _example(root: str, layout: str, config: TaskonomyConfig, building: str, point: int, view: int):
    """(key, example) of one view, reading and validating every configured domain."""
    rgb_path = _domain_path(root, layout, "rgb", building, point, view)
    rgb, _ = common.read_image(rgb_path, ("RGB",))
    height, width = rgb.shape[:2]
    key = f"{building}/point_{point}_view_{view}"
    example = {"id": key, "building": building, "point": point, "view": view, "image": rgb_path}
    point_info = None
    for name in config.domains:
        path = _domain_path(root, layout, name, building, point, view)
        storage = DOMAINS[name].storage
        value = None
        if os.path.isfile(path) and os.path.getsize(path) > 0:
            if storage == "classes":
                value = _read_classes(path, config, name)
            elif storage == "point_info":
                point_info = point_info if point_info is not None else common.read_json(path)
                value = _point_info_vector(path, point_info, name)
            else:
                value = _read_dense(path, storage, height, width)
        example[f"{name}_present"] = value is not None
        example[name] = value if value is not None else _placeholder(name, config)
    return key, example


def _read_dense(path: str, storage: str, height: int, width: int):
    array, mode = common.read_image(path, _MODES[storage])
    common.check_shape(path, array, height, width)
    if storage == "depth":
        return array[..., None]
    if storage == "fraction16":
        return (array.astype(np.uint16) * 257 if mode == "L" else array)[..., None]
    if storage == "segments":
        ids = decoding.relabel_segments(array)
        if ids.max(initial=0) > decoding.UINT16_MAX:
            raise common.DataError(path, f"{ids.max() + 1} segments, at most 65536 supported")
        return ids.astype(np.uint16)[..., None]
    if storage in ("normal", "curvature"):
        return common.png_bytes(array)
    if storage == "semantic" and array.ndim == 3 and not (array == array[..., :1]).all():
        raise common.DataError(path, "RGB semantic labels with differing channels; expected one class id per pixel")
    channel = array[..., :1] if array.ndim == 3 else array[..., None]
    if storage == "semantic" and channel.max(initial=0) > decoding.TASKONOMY_SEMANTIC_CLASSES:
        raise common.DataError(path, f"class id {channel.max()} > {decoding.TASKONOMY_SEMANTIC_CLASSES}; expected "
                                     "0 (uncertain), 1 (background) or 2..17")
    return common.png_bytes(channel)


def _read_classes(path: str, config: TaskonomyConfig, name: str) -> np.ndarray:
    values = common.read_npy(path)
    expected = config.class_object_classes if name == "class_object" else config.class_scene_classes
    if values.size != expected or not np.issubdtype(values.dtype, np.number) or not np.isfinite(values).all():
        raise common.DataError(path, f"{name}: {values.size} values of {values.dtype}, expected {expected} finite "
                                     "numbers (logits or probabilities)")
    return values.reshape(-1).astype(np.float32)


def _point_info_vector(path: str, point_info: dict, name: str):
    try:
        vector = decoding.room_layout(point_info) if name == "room_layout" else decoding.vanishing_point(point_info)
    except (KeyError, TypeError, ValueError) as e:
        raise common.DataError(path, f"{name}: malformed point_info ({type(e).__name__}: {e})") from None
    if vector is not None and not np.isfinite(vector).all():
        raise common.DataError(path, f"{name}: non-finite values {vector}")
    return vector


def _placeholder(name: str, config: TaskonomyConfig):
    storage = DOMAINS[name].storage
    if storage in ("depth", "fraction16", "segments"):
        return np.zeros((1, 1, 1), np.uint16)
    if storage in ("normal", "curvature"):
        return common.placeholder_png(3)
    if storage in ("reshading", "semantic"):
        return common.placeholder_png(1)
    return np.zeros(_feature(name, config).shape, np.float32)


BUILDER = Taskonomy
