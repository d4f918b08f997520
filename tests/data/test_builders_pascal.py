"""PASCAL multi-task builder: VOC2012 and PASCAL-MT fixture trees, built to ArrayRecord and read back."""
import glob
import os
import sys

import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds
from PIL import Image

from taba_jax.data.builders.common import DataError
from taba_jax.data.tfds_datasets import build

tfds.disable_progress_bar()
H, W = 5, 7
IDS = ("2008_000001", "2008_000002", "2008_000003")
COLORS = {IDS[0]: (200, 30, 30), IDS[1]: (30, 200, 30), IDS[2]: (30, 30, 200)}


def _jpeg(path, color):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((H, W, 3), color, np.uint8)).save(path, quality=100)


def _png(path, array, palette=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(array)
    if palette:
        image = image.convert("P") if array.ndim == 3 else Image.fromarray(array, "P")
        image.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    image.save(path)


def _xml(path, objects, size=(H, W)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    body = "".join(f"<object><name>{name}</name><difficult>{int(difficult)}</difficult><bndbox><xmin>{box[0]}</xmin>"
                   f"<ymin>{box[1]}</ymin><xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object>"
                   for name, difficult, box in objects)
    with open(path, "w") as f:
        f.write(f"<annotation><size><width>{size[1]}</width><height>{size[0]}</height><depth>3</depth></size>"
                f"{body}</annotation>")


def _lines(path, ids):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(f"{i}\n" for i in ids))


def segmentation_map():
    seg = np.zeros((H, W), np.uint8)
    seg[1:4, 2:5] = 15  # a person
    seg[1, 1] = 255  # void boundary
    return seg


ANNOTATIONS = {IDS[0]: [("person", False, (3, 2, 5, 4)), ("dog", True, (1, 1, 7, 5))],
               IDS[1]: [("dog", False, (1, 1, 2, 2)), ("dog", True, (2, 2, 3, 3))],
               IDS[2]: [("tvmonitor", False, (1, 1, 7, 5))]}


def write_voc(root):
    voc = os.path.join(root, "VOCdevkit", "VOC2012")
    for image_id in IDS[:2]:
        _jpeg(os.path.join(voc, "JPEGImages", f"{image_id}.jpg"), COLORS[image_id])
    Image.fromarray(np.full((H, W), 90, np.uint8)).save(os.path.join(voc, "JPEGImages", f"{IDS[2]}.jpg"), quality=100)
    for image_id in IDS:
        _xml(os.path.join(voc, "Annotations", f"{image_id}.xml"), ANNOTATIONS[image_id])
    for image_id in IDS[:2]:  # the third image has no segmentation mask
        _png(os.path.join(voc, "SegmentationClass", f"{image_id}.png"), segmentation_map(), palette=True)
    _lines(os.path.join(voc, "ImageSets", "Segmentation", "train.txt"), IDS[:2])
    _lines(os.path.join(voc, "ImageSets", "Segmentation", "val.txt"), IDS[2:])
    _lines(os.path.join(voc, "ImageSets", "Main", "train.txt"), IDS[:1] + IDS[2:])
    _lines(os.path.join(voc, "ImageSets", "Main", "val.txt"), IDS[1:2])
    return voc


def _part(name, rows, cols):
    mask = np.zeros((H, W), np.uint8)
    mask[rows, cols] = 1
    return name, mask


def _person(class_name, mask, parts):
    part_array = np.zeros((1, len(parts)), dtype=[("part_name", "O"), ("mask", "O")])
    for j, (name, part_mask) in enumerate(parts):
        part_array[0, j] = (name, part_mask)
    return class_name, mask, part_array if parts else np.zeros((0, 0))


def _parts_mat(path, objects):
    array = np.zeros((1, len(objects)), dtype=[("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")])
    for k, (class_name, mask, parts) in enumerate(objects):
        array[0, k] = (class_name, 15 if class_name == "person" else 12, mask, parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    scipy.io.savemat(path, {"anno": {"imname": os.path.basename(path)[:-4], "objects": array}})


def write_pascal_mt(root):
    base = os.path.join(root, "PASCAL_MT")
    for image_id in IDS:
        _jpeg(os.path.join(base, "JPEGImages", f"{image_id}.jpg"), COLORS[image_id])
        labels = np.full((H, W), 7, np.uint16)
        labels[:, 4:] = 33
        scipy.io.savemat(os.path.join(_dir(base, "pascal-context", "trainval"), f"{image_id}.mat"), {"LabelMap": labels})
        normals = np.zeros((H, W, 3), np.uint8) + np.array([128, 255, 128], np.uint8)
        _png(os.path.join(base, "normals_distill", f"{image_id}.png"), normals)
    _png(os.path.join(base, "semseg", "VOC12", f"{IDS[0]}.png"), segmentation_map())
    _png(os.path.join(base, "semseg", "pascal-context", f"{IDS[1]}.png"), np.full((H, W), 12, np.uint8))
    saliency = np.zeros((H, W), np.uint8)
    saliency[:, :3] = 200
    saliency[:, 3] = 120
    _png(os.path.join(base, "sal_distill", f"{IDS[0]}.png"), saliency)
    person = np.zeros((H, W), np.uint8)
    person[0:4, 0:3] = 1
    _parts_mat(os.path.join(base, "human_parts", f"{IDS[0]}.mat"), [
        _person("person", person, [_part("head", 0, slice(0, 3)), _part("torso", slice(1, 3), slice(0, 3)),
                                   _part("lfoot", 3, 0)]),
        _person("person", np.pad(np.ones((2, 2), np.uint8), ((3, 0), (5, 0))), []),  # no parts annotated
        _person("dog", np.ones((H, W), np.uint8), [])])
    _parts_mat(os.path.join(base, "human_parts", f"{IDS[1]}.mat"), [_person("dog", np.ones((H, W), np.uint8), [])])
    _lines(os.path.join(base, "ImageSets", "Context", "train.txt"), IDS[:2])
    _lines(os.path.join(base, "ImageSets", "Context", "val.txt"), IDS[2:])
    return base


def _dir(*parts):
    path = os.path.join(*parts)
    os.makedirs(path, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("pascal") / "raw"
    write_voc(str(root))
    write_pascal_mt(str(root))
    return root


def _by_id(reader):
    return {reader[i]["id"]: reader[i] for i in range(len(reader))}


def test_voc_segmentation_classes_and_boxes(raw, tmp_path):
    dataset = build("pascal_multitask", raw, tmp_path / "tfds")
    assert dataset.splits == {"train": 2, "validation": 1}
    assert {n: (t.kind, t.outputs, t.mask) for n, t in dataset.targets.items()} == {
        "segmentation": ("segmentation", 21, "pixel"), "classes": ("multilabel", 20, "class")}
    train = _by_id(dataset.reader("train"))
    e = train[IDS[0]]
    np.testing.assert_allclose(e["image"][2, 3], np.array(COLORS[IDS[0]]) / 255, atol=3 / 255)
    assert e["segmentation"][2, 3] == 15 and e["segmentation"][0, 0] == 0
    assert not e["segmentation_mask"][1, 1] and e["segmentation_mask"].sum() == H * W - 1
    person, dog = 14, 11
    assert e["classes"][person] == 1 and e["classes"].sum() == 1
    assert not e["classes_mask"][dog] and e["classes_mask"].sum() == 19  # only a difficult dog
    assert train[IDS[1]]["classes"][dog] == 1 and train[IDS[1]]["classes_mask"].all()
    val = dataset.reader("validation")[0]
    assert val["id"] == IDS[2] and not val["segmentation_mask"].any() and val["segmentation"].shape == (H, W)
    np.testing.assert_allclose(val["image"], np.full((H, W, 3), 90 / 255), atol=2 / 255)  # a grayscale JPEG
    assert val["classes"][19] == 1
    boxes = dataset.builder.as_data_source("train")
    stored = {boxes[i]["id"].decode(): boxes[i] for i in range(2)}[IDS[0]]
    np.testing.assert_allclose(stored["boxes"][0], [1 / H, 2 / W, 4 / H, 5 / W], rtol=1e-6)
    assert list(stored["box_classes"]) == [person, dog] and list(stored["box_difficult"]) == [False, True]
    assert "tensorflow" not in sys.modules


def test_voc_main_lists_keep_images_without_masks(raw, tmp_path):
    dataset = build("pascal_multitask", raw, tmp_path / "tfds", source="main")
    assert dataset.splits == {"train": 2, "validation": 1}
    train = _by_id(dataset.reader("train", tasks=["segmentation"]))
    assert train[IDS[0]]["segmentation_mask"].any() and not train[IDS[2]]["segmentation_mask"].any()


def test_pascal_mt_tasks(raw, tmp_path):
    dataset = build("pascal_multitask", raw, tmp_path / "tfds", source="context", normals_valid_classes=[33])
    assert dataset.splits == {"train": 2, "validation": 1}
    t = dataset.targets
    assert {n: (s.kind, s.outputs) for n, s in t.items() if n not in ("segmentation", "classes")} == {
        "human_parts": ("segmentation", 7), "saliency": ("dense_binary", 1), "normals": ("normals", 3),
        "edges": ("dense_binary", 1)}
    train = _by_id(dataset.reader("train"))
    e = train[IDS[0]]
    assert e["segmentation"][2, 3] == 15 and not e["segmentation_mask"][1, 1]
    np.testing.assert_array_equal(e["human_parts"][:, 0], [1, 2, 2, 6, 0])
    assert e["human_parts"][3, 1] == 0 and e["human_parts"][0, 2] == 1
    assert not e["human_parts_mask"][3:, 5:].any() and e["human_parts_mask"].sum() == H * W - 4
    np.testing.assert_array_equal(e["saliency"][0, :, 0], [1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(e["edges"][0, :, 0], [0, 0, 0, 1, 0, 0, 0])
    assert e["edges"][..., 0].sum() == H
    np.testing.assert_allclose(e["normals"][0, 5], [0, 1, 0], atol=1e-2)
    np.testing.assert_array_equal(e["normals_mask"][0], [0, 0, 0, 0, 1, 1, 1])
    assert e["classes_mask"].sum() == 19  # classes from VOCdevkit Annotations
    other = train[IDS[1]]
    assert (other["segmentation"] == 12).all() and other["segmentation_mask"].all()
    assert not other["human_parts_mask"].any() and not other["saliency_mask"].any()
    val = dataset.reader("validation")[0]
    assert not val["segmentation_mask"].any() and not val["human_parts_mask"].any() and val["edges_mask"].all()


def _fresh(tmp_path):
    root = tmp_path / "raw"
    voc = write_voc(str(root))
    return root, voc


def _assert_nothing_built(data_dir):
    assert not glob.glob(os.path.join(data_dir, "**", "dataset_info.json"), recursive=True)
    assert not glob.glob(os.path.join(data_dir, "pascal_multitask", "*", "1.0.0"))


@pytest.mark.parametrize("damage, message", [
    ("truncated", "unreadable or truncated image"),
    ("segmentation_size", r"target of shape \(3, 3\) does not match its image of shape \(5, 7\)"),
    ("segmentation_ids", r"class ids \[30\]; expected 0..20 or 255"),
    ("xml_size", r"annotated size \(height, width\) \('9', '7'\) does not match the image \(5, 7\)"),
    ("xml_class", "object class 'unicorn'"),
    ("missing_image", "image of listed id '2008_000002' not found"),
])
def test_bad_input_fails_without_partial_dataset(tmp_path, damage, message):
    root, voc = _fresh(tmp_path)
    image = os.path.join(voc, "JPEGImages", f"{IDS[1]}.jpg")
    segmentation = os.path.join(voc, "SegmentationClass", f"{IDS[1]}.png")
    annotation = os.path.join(voc, "Annotations", f"{IDS[1]}.xml")
    path = {"truncated": image, "segmentation_size": segmentation, "segmentation_ids": segmentation,
            "xml_size": annotation, "xml_class": annotation, "missing_image": image}[damage]
    if damage == "truncated":
        with open(image, "rb") as f:
            data = f.read()
        with open(image, "wb") as f:
            f.write(data[: len(data) // 2])
    elif damage == "segmentation_size":
        _png(segmentation, np.zeros((3, 3), np.uint8), palette=True)
    elif damage == "segmentation_ids":
        _png(segmentation, np.full((H, W), 30, np.uint8), palette=True)
    elif damage == "xml_size":
        _xml(annotation, [], size=(9, W))
    elif damage == "xml_class":
        _xml(annotation, [("unicorn", False, (1, 1, 2, 2))])
    else:
        os.remove(image)
    with pytest.raises(DataError, match=message) as error:
        build("pascal_multitask", root, tmp_path / "tfds")
    assert path in str(error.value)
    _assert_nothing_built(str(tmp_path / "tfds"))


def test_bad_layout_options_and_empty_split(tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(DataError, match="raw: manual_dir is empty; expected:\nVOC 2012: download"):
        build("pascal_multitask", tmp_path / "raw", tmp_path / "tfds")
    (tmp_path / "raw" / "VOC2012").mkdir()
    with pytest.raises(DataError, match="VOCdevkit/VOC2012: directory not found; expected the extracted"):
        build("pascal_multitask", tmp_path / "raw", tmp_path / "tfds")
    with pytest.raises(DataError, match="PASCAL_MT: directory not found"):
        build("pascal_multitask", tmp_path / "raw", tmp_path / "tfds", source="context")
    with pytest.raises(ValueError, match="unknown PASCAL source 'detection'"):
        build("pascal_multitask", tmp_path / "raw", tmp_path / "tfds", source="detection")
    root, voc = _fresh(tmp_path / "empty")
    _lines(os.path.join(voc, "ImageSets", "Segmentation", "val.txt"), [])
    with pytest.raises(DataError, match="val.txt: split has no images"):
        build("pascal_multitask", root, tmp_path / "tfds")
    _assert_nothing_built(str(tmp_path / "tfds"))
