"""Taskonomy builder: a fixture tree in the release layouts, built to ArrayRecord and read back."""
import glob
import json
import math
import os
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from taba_jax.data.builders.common import DataError
from taba_jax.data.builders.taskonomy import DOMAINS as KNOWN_DOMAINS, make_config
from taba_jax.data.tfds_datasets import build, open_dataset

tfds.disable_progress_bar()
H, W = 4, 6
VIEWS = {"alpha": [(0, 0), (0, 1)], "beta": [(1, 0)], "gamma": [(2, 0)], "delta": [(3, 0)]}
SPLIT_CSV = "id,train,val,test\ralpha,1,0,0\rbeta,1,0,0\romega,1,0,0\rgamma,0,1,0\rdelta,0,0,1\r"
DOMAINS = ["depth_zbuffer", "normal", "segment_semantic", "edge_texture", "keypoints2d", "principal_curvature",
           "reshading", "segment_unsup2d", "class_object", "class_scene", "room_layout", "vanishing_point"]
POINT_INFO = {"camera_rotation_final": [math.pi / 2, 0.0, 0.0], "camera_location": [0.0, 0.0, 0.0],
              "bounding_box_ranges": {"x": [1.0, 3.0], "y": [-1.0, 2.0], "z": [0.0, 2.0]},
              "vanishing_points_gaussian_sphere": {"x": [1, 0, 0], "y": [0, 1, 0], "z": [0, 0.6, 0.8]}}


def _save(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def _files(point, view):
    """{domain: (extension, content)} of one view with known values."""
    depth = np.full((H, W), 1024, np.uint16)  # 2 m
    depth[0, 0] = 65535
    normal = np.zeros((H, W, 3), np.uint8) + np.array([128, 128, 255], np.uint8)
    normal[1, 1] = 128  # gray fill: no normal
    semantic = np.ones((H, W), np.uint8)
    semantic[0, 1], semantic[2, :] = 0, 5
    edge = np.zeros((H, W), np.uint8)
    edge[:, 0] = 255  # 8-bit edges are rescaled to 16 bits
    keypoints = np.full((H, W), 65535 // 5, np.uint16)
    curvature = np.zeros((H, W, 3), np.uint8) + np.array([127, 254, 9], np.uint8)
    curvature[3, 5] = 0
    segments = np.zeros((H, W, 3), np.uint8)
    segments[:, 3:] = [200, 10, 3]
    return {"rgb": ("png", np.full((H, W, 3), 10 * point + view, np.uint8)), "depth_zbuffer": ("png", depth),
            "normal": ("png", normal), "segment_semantic": ("png", semantic), "edge_texture": ("png", edge),
            "keypoints2d": ("png", keypoints), "principal_curvature": ("png", curvature),
            "reshading": ("png", np.full((H, W), 51, np.uint8)), "segment_unsup2d": ("png", segments),
            "class_object": ("npy", np.arange(5, dtype=np.float32)), "class_scene": ("npy", np.array([0.2, 0.3, 0.5])),
            "point_info": ("json", POINT_INFO)}


def write_omnidata_tree(root, views=VIEWS):
    for building, building_views in views.items():
        for point, view in building_views:
            for domain, (ext, content) in _files(point, view).items():
                path = os.path.join(root, domain, "taskonomy", building,
                                    f"point_{point}_view_{view}_domain_{domain}.{ext}")
                _write(path, ext, content)
    if (0, 1) in views.get("alpha", []):  # this view lacks its depth and class_object labels
        os.remove(os.path.join(root, "depth_zbuffer", "taskonomy", "alpha", "point_0_view_1_domain_depth_zbuffer.png"))
        os.remove(os.path.join(root, "class_object", "taskonomy", "alpha", "point_0_view_1_domain_class_object.npy"))
    with open(os.path.join(root, "train_val_test_tiny.csv"), "w", newline="") as f:
        f.write(SPLIT_CSV)


def _write(path, ext, content):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if ext == "png":
        _save(path, content)
    elif ext == "npy":
        np.save(path, content)
    else:
        with open(path, "w") as f:
            json.dump(content, f)


OPTIONS = dict(subset="tiny", domains=DOMAINS, class_object_classes=5, class_scene_classes=3)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("taskonomy")
    write_omnidata_tree(str(root / "raw"))
    return root


@pytest.fixture(scope="module")
def built(root):
    return build("taskonomy", root / "raw", root / "tfds", **OPTIONS)


def _by_id(reader):
    return {reader[i]["id"]: reader[i] for i in range(len(reader))}


def test_splits_follow_the_split_file_and_skip_missing_buildings(built):
    assert built.splits == {"train": 3, "validation": 1, "test": 1}
    assert sorted(_by_id(built.reader("train", tasks=[]))) == [
        "alpha/point_0_view_0", "alpha/point_0_view_1", "beta/point_1_view_0"]
    assert "tensorflow" not in sys.modules


def test_targets_table(built):
    t = built.targets
    assert sorted(t) == sorted(DOMAINS)
    assert (t["depth_zbuffer"].kind, t["depth_zbuffer"].outputs) == ("dense_regression", 1)
    assert (t["normal"].kind, t["segment_semantic"].kind, t["segment_semantic"].outputs) == ("normals", "segmentation", 17)
    assert (t["class_object"].kind, t["class_object"].outputs, t["class_scene"].outputs) == ("distribution", 5, 3)
    assert (t["segment_unsup2d"].kind, t["principal_curvature"].outputs) == ("segment_grouping", 2)
    assert (t["room_layout"].kind, t["room_layout"].outputs, t["room_layout"].mask) == ("regression", 9, "example")


def test_decoded_values_and_masks(built):
    e = _by_id(built.reader("train"))["alpha/point_0_view_0"]
    np.testing.assert_allclose(e["image"], np.full((H, W, 3), 0.0))
    assert e["image"].dtype == np.float32 and e["image"].shape == (H, W, 3)
    assert e["depth_zbuffer"].shape == (H, W, 1)
    np.testing.assert_allclose(e["depth_zbuffer"][..., 0][e["depth_zbuffer_mask"]], 2.0)
    assert not e["depth_zbuffer_mask"][0, 0] and e["depth_zbuffer_mask"].sum() == H * W - 1
    # Normals: unit vectors; invalid at the gray pixel and where the depth is invalid.
    np.testing.assert_allclose(np.linalg.norm(e["normal"][e["normal_mask"]], axis=-1), 1.0, atol=1e-5)
    assert e["normal"][2, 2, 2] > 0.99
    assert not e["normal_mask"][1, 1] and not e["normal_mask"][0, 0] and e["normal_mask"].sum() == H * W - 2
    # Semantic: raw 0 (uncertain) masked, raw 1 -> class 0, raw 5 -> class 4.
    assert not e["segment_semantic_mask"][0, 1] and e["segment_semantic_mask"].sum() == H * W - 1
    assert e["segment_semantic"][0, 0] == 0 and (e["segment_semantic"][2] == 4).all()
    np.testing.assert_allclose(e["edge_texture"][:, 0, 0], 1.0)
    np.testing.assert_allclose(e["edge_texture"][:, 1:], 0.0)
    np.testing.assert_allclose(e["keypoints2d"], 0.2, atol=1e-4)
    np.testing.assert_allclose(e["principal_curvature"][0, 0], [0.0, 1.0], atol=1e-6)
    assert not e["principal_curvature_mask"][3, 5] and e["principal_curvature_mask"].sum() == H * W - 1
    np.testing.assert_allclose(e["reshading"], 0.2, atol=1e-6)
    assert set(np.unique(e["segment_unsup2d"])) == {0, 1} and e["segment_unsup2d"][0, 0] != e["segment_unsup2d"][0, 5]
    logits = np.arange(5.0)
    np.testing.assert_allclose(e["class_object"], np.exp(logits) / np.exp(logits).sum(), rtol=1e-5)
    np.testing.assert_allclose(e["class_scene"], [0.2, 0.3, 0.5], rtol=1e-5)
    assert e["class_object_mask"] and e["class_object_mask"].shape == ()
    np.testing.assert_allclose(e["vanishing_point"], [1, 0, 0, 0, 1, 0, 0, 0.6, 0.8], atol=1e-6)
    np.testing.assert_allclose(e["room_layout"], [0.5, 1, -2, math.pi / 2, 0, -math.pi / 2, 2, 3, 2], atol=1e-5)


def test_missing_domain_file_is_a_per_view_mask(built):
    e = _by_id(built.reader("train"))["alpha/point_0_view_1"]
    np.testing.assert_allclose(e["image"], np.full((H, W, 3), 1 / 255), rtol=1e-6)
    assert e["depth_zbuffer"].shape == (H, W, 1) and not e["depth_zbuffer_mask"].any()
    assert not e["class_object_mask"] and e["class_object"].shape == (5,)
    # Without depth the normals are masked by their own validity only.
    assert e["normal_mask"].sum() == H * W - 1 and e["segment_semantic_mask"].sum() == H * W - 1


def test_task_selection_and_batch(built):
    reader = built.reader("train", tasks=["segment_semantic", "class_scene"])
    batch = reader.batch([0, 1, 2], size=(2, 3))
    assert sorted(batch) == ["class_scene", "class_scene_mask", "id", "image", "segment_semantic",
                             "segment_semantic_mask"]
    assert batch["image"].shape == (3, 2, 3, 3) and batch["segment_semantic"].shape == (3, 2, 3)
    assert batch["class_scene"].shape == (3, 3) and batch["class_scene_mask"].shape == (3,)
    with pytest.raises(ValueError, match="no task 'depth'"):
        built.reader("train", tasks=["depth"])


def test_rebuild_reuses_the_complete_dataset(root, built, tmp_path):
    raw = root / "raw"
    info = os.path.join(built.path, "dataset_info.json")
    written = os.stat(info).st_mtime_ns
    again = build("taskonomy", raw, root / "tfds", **OPTIONS)
    assert again.path == built.path and again.splits == built.splits
    assert os.stat(info).st_mtime_ns == written
    other = build("taskonomy", raw, tmp_path, **dict(OPTIONS, domains=["depth_zbuffer"]))
    assert os.path.basename(os.path.dirname(other.path)) != os.path.basename(os.path.dirname(built.path))
    assert sorted(other.targets) == ["depth_zbuffer"]


def test_original_per_building_layout(tmp_path):
    raw = tmp_path / "raw"
    for building, building_views in {"alpha": [(0, 0)], "gamma": [(2, 0)]}.items():
        for point, view in building_views:
            for domain, (ext, content) in _files(point, view).items():
                folder, file_domain = ("points", "fixatedpose") if domain == "point_info" else (domain, domain)
                _write(str(raw / building / folder / f"point_{point}_view_{view}_domain_{file_domain}.{ext}"), ext, content)
    dataset = build("taskonomy", raw, tmp_path / "tfds", buildings={"train": ["alpha"], "test": ["gamma"]},
                    domains=["depth_zbuffer", "vanishing_point"])
    assert dataset.splits == {"train": 1, "test": 1}
    e = dataset.reader("test")[0]
    assert e["id"] == "gamma/point_2_view_0" and e["depth_zbuffer_mask"].sum() == H * W - 1
    np.testing.assert_allclose(e["vanishing_point"][6:], [0, 0.6, 0.8], atol=1e-6)


def test_default_domains_are_those_on_disk(tmp_path):
    raw = tmp_path / "raw"
    write_omnidata_tree(str(raw), {"alpha": [(0, 0)], "beta": [(1, 0)], "gamma": [(2, 0)], "delta": [(3, 0)]})
    config = make_config(raw, subset="tiny")
    assert config.domains == tuple(d for d in KNOWN_DOMAINS if d in DOMAINS)


# ---- bad input: a clear error naming the path, and no dataset left behind ----

def _assert_nothing_built(data_dir):
    assert not glob.glob(os.path.join(data_dir, "taskonomy", "*", "1.0.0"))
    assert not glob.glob(os.path.join(data_dir, "**", "dataset_info.json"), recursive=True)


def _small_tree(root):
    write_omnidata_tree(str(root), {"alpha": [(0, 0)], "beta": [(1, 0)], "gamma": [(2, 0)], "delta": [(3, 0)]})
    return root


def test_missing_manual_dir(tmp_path):
    with pytest.raises(DataError, match="nowhere.*manual_dir not found"):
        build("taskonomy", tmp_path / "nowhere", tmp_path / "tfds")


def test_wrong_layout(tmp_path):
    (tmp_path / "raw" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match="wrong layout: expected .*rgb/taskonomy"):
        build("taskonomy", tmp_path / "raw", tmp_path / "tfds", subset="tiny")


def test_unknown_domain_and_option(tmp_path):
    raw = _small_tree(tmp_path / "raw")
    with pytest.raises(ValueError, match=r"unknown Taskonomy domains \['surface'\]"):
        build("taskonomy", raw, tmp_path / "tfds", domains=["surface"])
    with pytest.raises(ValueError, match=r"unknown options \['resolution'\]"):
        build("taskonomy", raw, tmp_path / "tfds", resolution=256)
    with pytest.raises(DataError, match="split file for subset 'medium' not found"):
        build("taskonomy", raw, tmp_path / "tfds", subset="medium")


@pytest.mark.parametrize("damage, message", [
    ("truncate", "unreadable or truncated image"),
    ("resize", r"target of shape \(2, 3\) does not match its image of shape \(4, 6\)"),
    ("8bit", "image mode 'L', expected one of"),
    ("semantic", "class id 18 > 17"),
    ("classes", "class_object: 4 values"),
])
def test_bad_files_fail_without_partial_dataset(tmp_path, damage, message):
    raw = _small_tree(tmp_path / "raw")
    depth = raw / "depth_zbuffer" / "taskonomy" / "beta" / "point_1_view_0_domain_depth_zbuffer.png"
    target = depth
    if damage == "truncate":
        data = depth.read_bytes()
        depth.write_bytes(data[: len(data) // 2])
    elif damage == "resize":
        _save(str(depth), np.zeros((2, 3), np.uint16))
    elif damage == "8bit":
        _save(str(depth), np.zeros((H, W), np.uint8))
    elif damage == "semantic":
        target = raw / "segment_semantic" / "taskonomy" / "beta" / "point_1_view_0_domain_segment_semantic.png"
        _save(str(target), np.full((H, W), 18, np.uint8))
    else:
        target = raw / "class_object" / "taskonomy" / "beta" / "point_1_view_0_domain_class_object.npy"
        np.save(target, np.zeros(4, np.float32))
    with pytest.raises(DataError, match=message) as error:
        build("taskonomy", raw, tmp_path / "tfds", **OPTIONS)
    assert str(target) in str(error.value)
    _assert_nothing_built(str(tmp_path / "tfds"))
    with pytest.raises(DataError, match="not a complete built dataset"):
        open_dataset(tmp_path / "tfds" / "taskonomy" / make_config(raw, **OPTIONS).name / "1.0.0")


def test_split_with_no_images(tmp_path):
    raw = _small_tree(tmp_path / "raw")
    with pytest.raises(DataError, match="split 'test' has no images.*'nobody'"):
        build("taskonomy", raw, tmp_path / "tfds", buildings={"train": ["alpha"], "test": ["nobody"]},
              domains=["depth_zbuffer"])
    _assert_nothing_built(str(tmp_path / "tfds"))
