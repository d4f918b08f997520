"""PASCAL VOC 2012 multi-task data as a TFDS ArrayRecord dataset, optionally with the PASCAL-Context
tasks of the PASCAL-MT setting (Maninis et al., CVPR 2019; Vandenhende et al.): human parts, saliency,
surface normals and edges. Every task is optional per image (`<task>_present`), so images without a
label are kept and read back with an all-invalid mask.

Configs (`source`): "segmentation" = VOC ImageSets/Segmentation train/val; "main" = VOC ImageSets/Main
train/val (segmentation where a SegmentationClass PNG exists); "context" = PASCAL-MT ImageSets/Context
train/val with all PASCAL-MT tasks (VOC Annotations used for classes/boxes where found).
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import scipy.io
import tensorflow_datasets as tfds

from taba_jax.data import decoding
from taba_jax.data.builders import common
from taba_jax.data.targets import TargetSpec

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
NUM_SEGMENTATION_CLASSES = 21  # background + 20 VOC classes
SOURCES = ("segmentation", "main", "context")
SPLIT_FILES = {"train": "train.txt", "validation": "val.txt"}
# PASCAL-Part person part names grouped into the 6 parts of the PASCAL-MT setting (0 = background).
HUMAN_PART_GROUPS = {
    1: ("hair", "head", "lear", "lebrow", "leye", "mouth", "nose", "rear", "rebrow", "reye"),  # head
    2: ("neck", "torso"),  # torso
    3: ("luarm", "ruarm"),  # upper arms
    4: ("llarm", "rlarm", "lhand", "rhand"),  # lower arms and hands
    5: ("luleg", "ruleg"),  # upper legs
    6: ("llleg", "rlleg", "lfoot", "rfoot"),  # lower legs and feet
}
HUMAN_PART_IDS = {part: group for group, parts in HUMAN_PART_GROUPS.items() for part in parts}
NUM_HUMAN_PARTS = len(HUMAN_PART_GROUPS) + 1
CONTEXT_TASKS = ("human_parts", "saliency", "normals", "edges")


def targets(features) -> dict[str, TargetSpec]:
    """(kind, outputs, mask semantics) of the tasks of a built dataset."""
    specs = {"segmentation": TargetSpec("segmentation", "segmentation", NUM_SEGMENTATION_CLASSES,
                                        "palette index 255 (boundaries/void); images without a mask"),
             "classes": TargetSpec("classes", "multilabel", len(VOC_CLASSES),
                                   "per class: only 'difficult' objects of it; images without annotation"),
             "human_parts": TargetSpec("human_parts", "segmentation", NUM_HUMAN_PARTS,
                                       "persons without part annotation; images without annotated persons"),
             "saliency": TargetSpec("saliency", "dense_binary", 1, "images without saliency map"),
             "normals": TargetSpec("normals", "normals", 3, "PASCAL-Context classes outside normals_valid_classes"),
             "edges": TargetSpec("edges", "dense_binary", 1, "images without PASCAL-Context labels")}
    return {name: spec for name, spec in specs.items() if name in features}


REQUIRES = {"normals": ("normals_valid",)}


def decode_target(name: str, example: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """(target, mask) of one present task from a stored example."""
    if name in ("segmentation", "human_parts"):
        return decoding.labels_with_ignore(example[name], decoding.VOC_IGNORE)
    if name == "classes":
        labels = example["classes"]
        return (labels == 1).astype(np.float32), labels != -1
    if name == "saliency":
        return decoding.binary_threshold(example["saliency"]), None
    if name == "normals":
        return decoding.normals_from_rgb(example["normals"], example["normals_valid"][..., 0] > 0)
    return example["edges"].astype(np.float32), None


@dataclasses.dataclass(eq=False)
class PascalConfig(tfds.core.BuilderConfig):
    """`source`: which image lists and tasks; `normals_valid_classes`: PASCAL-Context LabelMap ids
    whose pixels have valid distilled normals (PASCAL-MT keeps the classes shared with NYUv2); None =
    all pixels."""

    source: str = "segmentation"
    normals_valid_classes: tuple[int, ...] | None = None


def make_config(manual_dir, source: str = "segmentation", normals_valid_classes=None) -> PascalConfig:
    """A config for `PascalMultitask` from user options (checks that `manual_dir` exists)."""
    common.require_dir(manual_dir, "VOCdevkit/VOC2012 and/or PASCAL_MT (see MANUAL_DOWNLOAD_INSTRUCTIONS)")
    if source not in SOURCES:
        raise ValueError(f"unknown PASCAL source {source!r}; expected one of {SOURCES}")
    if normals_valid_classes is not None and source != "context":
        raise ValueError("normals_valid_classes applies to source='context' only")
    if normals_valid_classes is None:
        return next(c for c in PascalMultitask.BUILDER_CONFIGS if c.source == source)
    classes = tuple(sorted(int(c) for c in normals_valid_classes))
    return PascalConfig(name=f"{source}-{common.options_digest({'normals_valid_classes': classes})}",
                        version=PascalMultitask.VERSION, description=f"PASCAL multi-task, {source} lists",
                        source=source, normals_valid_classes=classes)


class PascalMultitask(common.LocalFilesBuilder):
    """VOC 2012 segmentation, image-level classes and boxes (+ PASCAL-MT tasks with source='context')."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [PascalConfig(name=s, description=f"PASCAL multi-task, {s} lists", source=s) for s in SOURCES]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
VOC 2012: download VOCtrainval_11-May-2012.tar (http://host.robots.ox.ac.uk/pascal/VOC/voc2012/) and extract it into
<manual_dir>, giving <manual_dir>/VOCdevkit/VOC2012/{JPEGImages/<id>.jpg, SegmentationClass/<id>.png (palette,
255 = void), Annotations/<id>.xml, ImageSets/Segmentation/{train,val}.txt, ImageSets/Main/{train,val}.txt}.
PASCAL-MT (source='context'): download PASCAL_MT.tgz (the PASCAL-Context multi-task data of ASTMT / Multi-Task-
Learning-PyTorch, https://github.com/SimonVandenhende/Multi-Task-Learning-PyTorch) and extract it into <manual_dir>,
giving <manual_dir>/PASCAL_MT/{JPEGImages/<id>.jpg, ImageSets/Context/{train,val}.txt,
semseg/{VOC12,pascal-context}/<id>.png, human_parts/<id>.mat, sal_distill/<id>.png, normals_distill/<id>.png,
pascal-context/trainval/<id>.mat}."""

    def _info(self) -> tfds.core.DatasetInfo:
        def label_map(channels=1):
            return tfds.features.Image(shape=(None, None, channels), encoding_format="png")

        features = {"id": tfds.features.Text(), "image": tfds.features.Image(shape=(None, None, 3)),
                    "segmentation": label_map(), "classes": tfds.features.Tensor(shape=(20,), dtype=np.int8),
                    "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
                    "box_classes": tfds.features.Tensor(shape=(None,), dtype=np.int64),
                    "box_difficult": tfds.features.Tensor(shape=(None,), dtype=np.bool_)}
        if self.builder_config.source == "context":
            features.update({"human_parts": label_map(), "saliency": label_map(), "normals": label_map(3),
                             "normals_valid": label_map(), "edges": label_map()})
        for task in ("segmentation", "classes") + (CONTEXT_TASKS if self.builder_config.source == "context" else ()):
            features[f"{task}_present"] = tfds.features.Scalar(np.bool_)
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features),
                                              homepage="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/")

    def _split_generators(self, dl_manager):
        paths = _Paths(os.fspath(dl_manager.manual_dir), self.builder_config.source)
        return {split: self._generate_examples(paths, split, _read_ids(paths.list_file(split)))
                for split in SPLIT_FILES}

    def _generate_examples(self, paths: "_Paths", split: str, ids: list[str]):
        config = self.builder_config
        yield from common.threaded_map(lambda i: (i, _example(paths, config, i)), ids)


class _Paths:
    """Where each file of an image is, for one source; checks the layout's directories exist."""

    def __init__(self, root: str, source: str):
        self.source = source
        voc = os.path.join(root, "VOCdevkit", "VOC2012")
        if source == "context":
            self.base = common.require_dir(os.path.join(root, "PASCAL_MT"), "the extracted PASCAL_MT.tgz")
            self.lists = common.require_dir(os.path.join(self.base, "ImageSets", "Context"), "train.txt and val.txt")
            annotation_dirs = [os.path.join(self.base, "Annotations"), os.path.join(voc, "Annotations")]
            self.annotations = next((d for d in annotation_dirs if os.path.isdir(d)), None)
        else:
            self.base = common.require_dir(voc, "the extracted VOCtrainval_11-May-2012.tar (VOCdevkit/VOC2012)")
            lists = "Segmentation" if source == "segmentation" else "Main"
            self.lists = common.require_dir(os.path.join(self.base, "ImageSets", lists), "train.txt and val.txt")
            self.annotations = common.require_dir(os.path.join(self.base, "Annotations"), "<id>.xml files")
        common.require_dir(os.path.join(self.base, "JPEGImages"), "<id>.jpg images")

    def list_file(self, split: str) -> str:
        return os.path.join(self.lists, SPLIT_FILES[split])

    def image(self, image_id: str) -> str:
        return os.path.join(self.base, "JPEGImages", f"{image_id}.jpg")

    def segmentation(self, image_id: str) -> str | None:
        if self.source != "context":
            return os.path.join(self.base, "SegmentationClass", f"{image_id}.png")
        candidates = [os.path.join(self.base, "semseg", d, f"{image_id}.png") for d in ("VOC12", "pascal-context")]
        return next((p for p in candidates if os.path.isfile(p)), candidates[0])

    def annotation(self, image_id: str) -> str | None:
        return os.path.join(self.annotations, f"{image_id}.xml") if self.annotations else None

    def context(self, kind: str, image_id: str) -> str:
        folder, ext = {"human_parts": ("human_parts", "mat"), "saliency": ("sal_distill", "png"),
                       "normals": ("normals_distill", "png"), "labels": (os.path.join("pascal-context", "trainval"), "mat")}[kind]
        return os.path.join(self.base, folder, f"{image_id}.{ext}")


def _read_ids(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise common.DataError(path, "image list not found; expected one image id per line")
    ids = [line.split()[0] for line in common.read_lines(path)]
    if not ids:
        raise common.DataError(path, "split has no images; expected one image id per line")
    return ids


def _exists(path: str | None) -> bool:
    return path is not None and os.path.isfile(path)


def _example(paths: _Paths, config: PascalConfig, image_id: str) -> dict:
    """One image with every task it has, validated against the image size."""
    image_path = paths.image(image_id)
    if not os.path.isfile(image_path):
        raise common.DataError(image_path, f"image of listed id {image_id!r} not found")
    image, mode = common.read_image(image_path, ("RGB", "L", "CMYK"))
    height, width = image.shape[:2]
    example = {"id": image_id, "image": image_path if mode == "RGB" else common.png_bytes(_to_rgb(image, mode))}
    segmentation_path = paths.segmentation(image_id)
    example["segmentation_present"] = _exists(segmentation_path)
    example["segmentation"] = (_class_map(segmentation_path, height, width, NUM_SEGMENTATION_CLASSES)
                               if example["segmentation_present"] else common.placeholder_png(1))
    annotation_path = paths.annotation(image_id)
    example["classes_present"] = _exists(annotation_path)
    example.update(_annotation(annotation_path, height, width) if example["classes_present"] else
                   {"classes": np.zeros(len(VOC_CLASSES), np.int8), "boxes": np.zeros((0, 4), np.float32),
                    "box_classes": np.zeros(0, np.int64), "box_difficult": np.zeros(0, np.bool_)})
    if config.source == "context":
        example.update(_context_tasks(paths, config, image_id, height, width))
    return example


def _to_rgb(image: np.ndarray, mode: str) -> np.ndarray:
    if mode == "L":
        return np.repeat(image[..., None], 3, axis=-1)
    from PIL import Image
    return np.asarray(Image.fromarray(image, mode).convert("RGB"))


def _class_map(path: str, height: int, width: int, num_classes: int) -> bytes:
    """A palette/gray class-id PNG with ids < num_classes or 255, as PNG bytes of its indices."""
    labels, _ = common.read_image(path, ("P", "L"))
    common.check_shape(path, labels, height, width)
    bad = (labels >= num_classes) & (labels != decoding.VOC_IGNORE)
    if bad.any():
        raise common.DataError(path, f"class ids {np.unique(labels[bad])[:5]}; expected 0..{num_classes - 1} or 255")
    return common.png_bytes(labels)


def _annotation(path: str, height: int, width: int) -> dict:
    """VOC XML -> image-level labels (1 = object, -1 = only 'difficult' objects, 0 = none) and boxes
    as [ymin, xmin, ymax, xmax] in [0, 1] (1-based inclusive pixel coordinates converted)."""
    root = common.read_xml(path)
    size = (root.findtext("size/height"), root.findtext("size/width"))
    if size != (str(height), str(width)):
        raise common.DataError(path, f"annotated size (height, width) {size} does not match the image {(height, width)}")
    classes = np.zeros(len(VOC_CLASSES), np.int8)
    boxes, box_classes, difficult = [], [], []
    for obj in root.findall("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_CLASSES:
            raise common.DataError(path, f"object class {name!r}; expected one of {VOC_CLASSES}")
        try:
            xmin, ymin, xmax, ymax = (float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            raise common.DataError(path, f"object {name!r} without numeric bndbox xmin/ymin/xmax/ymax") from None
        if not (xmin <= xmax and ymin <= ymax):
            raise common.DataError(path, f"object {name!r} box {(xmin, ymin, xmax, ymax)} has min > max")
        is_difficult = (obj.findtext("difficult") or "0").strip() == "1"
        c = VOC_CLASSES.index(name)
        classes[c] = 1 if not is_difficult else (classes[c] or -1)
        boxes.append(np.clip([(ymin - 1) / height, (xmin - 1) / width, ymax / height, xmax / width], 0.0, 1.0))
        box_classes.append(c)
        difficult.append(is_difficult)
    return {"classes": classes, "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "box_classes": np.asarray(box_classes, np.int64), "box_difficult": np.asarray(difficult, np.bool_)}


def _context_tasks(paths: _Paths, config: PascalConfig, image_id: str, height: int, width: int) -> dict:
    out = {}
    parts = _human_parts(paths.context("human_parts", image_id), height, width)
    out["human_parts_present"] = parts is not None
    out["human_parts"] = common.png_bytes(parts) if parts is not None else common.placeholder_png(1)
    saliency_path = paths.context("saliency", image_id)
    out["saliency_present"] = _exists(saliency_path)
    if out["saliency_present"]:
        saliency, _ = common.read_image(saliency_path, ("L", "P"))
        common.check_shape(saliency_path, saliency, height, width)
        out["saliency"] = common.png_bytes(saliency)
    else:
        out["saliency"] = common.placeholder_png(1)
    labels_path = paths.context("labels", image_id)
    labels = _context_labels(labels_path, height, width) if _exists(labels_path) else None
    out["edges_present"] = labels is not None
    out["edges"] = common.png_bytes(decoding.label_boundaries(labels)) if labels is not None else common.placeholder_png(1)
    normals_path = paths.context("normals", image_id)
    out["normals_present"] = _exists(normals_path) and (labels is not None or config.normals_valid_classes is None)
    if out["normals_present"]:
        normals, _ = common.read_image(normals_path, ("RGB",))
        common.check_shape(normals_path, normals, height, width)
        valid = (np.ones((height, width), bool) if config.normals_valid_classes is None
                 else np.isin(labels, config.normals_valid_classes))
        out["normals"], out["normals_valid"] = common.png_bytes(normals), common.png_bytes(valid.astype(np.uint8))
    else:
        out["normals"], out["normals_valid"] = common.placeholder_png(3), common.placeholder_png(1)
    return out


def _load_mat(path: str) -> dict:
    try:
        return scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except (OSError, ValueError, TypeError) as e:
        raise common.DataError(path, f"unreadable .mat file ({e})") from None


def _context_labels(path: str, height: int, width: int) -> np.ndarray:
    labels = _load_mat(path).get("LabelMap")
    if labels is None or np.ndim(labels) != 2:
        raise common.DataError(path, "expected a 2-D 'LabelMap' (PASCAL-Context class ids)")
    common.check_shape(path, labels, height, width)
    return np.asarray(labels)


def _human_parts(path: str, height: int, width: int) -> np.ndarray | None:
    """PASCAL-Part annotation -> uint8 (H, W) with 0 = background, 1..6 = part groups, 255 = person
    without part annotation; None when the image has no person with annotated parts."""
    if not os.path.isfile(path):
        return None
    try:
        objects = np.atleast_1d(_load_mat(path)["anno"].objects)
    except (KeyError, AttributeError):
        raise common.DataError(path, "expected a PASCAL-Part struct 'anno' with field 'objects'") from None
    target = np.zeros((height, width), np.uint8)
    has_parts = False
    for obj in objects:
        if str(getattr(obj, "class", "")) != "person":
            continue
        mask = np.asarray(obj.mask).astype(bool)
        common.check_shape(path, mask, height, width)
        parts = np.atleast_1d(obj.parts)
        if parts.size == 0:
            target[mask & (target == 0)] = decoding.VOC_IGNORE
            continue
        for part in parts:
            name = str(part.part_name)
            if name not in HUMAN_PART_IDS:
                raise common.DataError(path, f"unknown person part {name!r}; expected one of {sorted(HUMAN_PART_IDS)}")
            part_mask = np.asarray(part.mask).astype(bool)
            common.check_shape(path, part_mask, height, width)
            target[part_mask] = HUMAN_PART_IDS[name]
            has_parts = True
    return target if has_parts else None


BUILDER = PascalMultitask
