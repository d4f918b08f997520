"""NYUv2 builder: the MTAN/LibMTL .npy layout, built to ArrayRecord and read back; reader resizing."""
import glob
import os
import pickle
import sys
import tempfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from taba_jax.data.builders.common import DataError
from taba_jax.data.tfds_datasets import build
from taba_jax.tasks import TaskSpec

tfds.disable_progress_bar()
H, W = 6, 8


def write_tree(root, sizes=(("train", 3), ("val", 2))):
    for folder, count in sizes:
        for field in ("image", "label", "depth", "normal"):
            os.makedirs(os.path.join(root, folder, field), exist_ok=True)
        for i in range(count):
            base = 0.1 * i + (0.5 if folder == "val" else 0.0)
            image = np.zeros((H, W, 3), np.float32)
            image[..., 0] = base
            image[:, W // 2:, 1] = 1.0  # right half green
            label = np.full((H, W), i, np.float32)
            label[0, 0] = -1
            label[-1] = 12
            depth = np.full((H, W, 1), 1.5 + i, np.float32)
            depth[1, 2] = 0
            normal = np.zeros((H, W, 3), np.float32)
            normal[..., 1] = -1
            normal[2, 3] = 0
            for field, array in (("image", image), ("label", label), ("depth", depth), ("normal", normal)):
                np.save(os.path.join(root, folder, field, f"{i}.npy"), array)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("nyu")
    write_tree(str(root / "raw"))
    return build("nyuv2_multitask", root / "raw", root / "tfds")


def test_splits_and_targets(built):
    assert built.splits == {"train": 3, "test": 2}
    t = built.targets
    assert [(s.name, s.kind, s.outputs, s.mask) for s in t.values()] == [
        ("segmentation", "segmentation", 13, "pixel"), ("depth", "dense_regression", 1, "pixel"),
        ("normal", "normals", 3, "pixel")]
    assert "tensorflow" not in sys.modules


def test_decoded_values_and_masks(built):
    reader = built.reader("train")
    examples = {reader[i]["id"]: reader[i] for i in range(len(reader))}
    assert sorted(examples) == ["train/0", "train/1", "train/2"]
    e = examples["train/1"]
    np.testing.assert_allclose(e["image"][0, 0], [0.1, 0, 0], atol=1e-7)
    np.testing.assert_allclose(e["image"][0, -1], [0.1, 1, 0], atol=1e-7)
    assert e["segmentation"].dtype == np.int32 and e["segmentation"][1, 1] == 1 and (e["segmentation"][-1] == 12).all()
    assert not e["segmentation_mask"][0, 0] and e["segmentation"][0, 0] == 0 and e["segmentation_mask"].sum() == H * W - 1
    np.testing.assert_allclose(e["depth"][..., 0][e["depth_mask"]], 2.5)
    assert not e["depth_mask"][1, 2] and e["depth_mask"].sum() == H * W - 1
    np.testing.assert_allclose(e["normal"][0, 0], [0, -1, 0])
    assert not e["normal_mask"][2, 3] and e["normal_mask"].sum() == H * W - 1
    test = built.reader("test")
    np.testing.assert_allclose(sorted(test[i]["image"][0, 0, 0] for i in range(2)), [0.5, 0.6], atol=1e-6)


def test_reader_accepts_task_specs_and_checks_them(built):
    reader = built.reader("train", tasks=[TaskSpec("depth", "dense_regression", 1)])
    assert [t.name for t in reader.tasks] == ["depth"]
    with pytest.raises(ValueError, match="served as kind 'segmentation' with 13 outputs, requested kind 'segmentation' with 40"):
        built.reader("train", tasks=[TaskSpec("segmentation", "segmentation", 40)])
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        built.reader("validation")
    with pytest.raises(IndexError):
        reader[3]


def test_reader_pickles_for_worker_processes(built):
    reader = built.reader("test", tasks=["depth"])
    copy = pickle.loads(pickle.dumps(reader))
    assert len(copy) == 2 and copy[1]["id"] == reader[1]["id"]
    np.testing.assert_array_equal(copy[1]["depth"], reader[1]["depth"])


def test_batch_resize_and_crop(built):
    reader = built.reader("train")
    full = reader.batch([2, 0, 1])
    assert full["image"].shape == (3, H, W, 3) and full["depth_mask"].shape == (3, H, W) and full["id"].shape == (3,)
    assert list(full["id"]) == [reader[i]["id"] for i in (2, 0, 1)]
    half = reader.batch([0, 1], size=(H // 2, W // 2))  # full holds them at rows 1, 2
    assert half["image"].shape == (2, H // 2, W // 2, 3) and half["segmentation"].shape == (2, H // 2, W // 2)
    # Bilinear halving averages 2x2 blocks, which never straddle the green edge at W / 2.
    np.testing.assert_allclose(half["image"][:, :, : W // 4, 1], 0.0, atol=1e-6)
    np.testing.assert_allclose(half["image"][:, :, W // 4:, 1], 1.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(half["normal"][half["normal_mask"]], axis=-1), 1.0, atol=1e-6)
    # Nearest neighbour picks the lower-right pixel of each 2x2 block (pixel-centre convention).
    for key in ("segmentation", "segmentation_mask", "depth", "depth_mask"):
        np.testing.assert_array_equal(half[key], full[key][[1, 2]][:, 1::2, 1::2])
    # Cropping to a square keeps the aspect ratio: the centre H x H of the 6 x 8 image.
    square = reader.batch([0], size=(H, H), fit="crop")
    assert square["image"].shape == (1, H, H, 3)
    np.testing.assert_allclose(square["image"][0, :, : H // 2 - 1, 1], 0.0, atol=1e-6)
    np.testing.assert_allclose(square["image"][0, :, H // 2 + 1:, 1], 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="fit must be one of"):
        reader.batch([0], size=(2, 2), fit="pad")


def _damage(raw, kind):
    path = os.path.join(raw, "val", {"shape": "depth", "label": "label", "missing": "normal", "range": "image",
                                    "truncated": "depth"}[kind], "1.npy")
    if kind == "shape":
        np.save(path, np.ones((H, W + 1, 1), np.float32))
    elif kind == "label":
        label = np.zeros((H, W), np.float32)
        label[0, 0] = 13
        np.save(path, label)
    elif kind == "missing":
        os.remove(path)
    elif kind == "range":
        np.save(path, np.full((H, W, 3), 255.0, np.float32))
    else:
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[:100])
    return path


@pytest.mark.parametrize("kind, message", [
    ("shape", r"target of shape \(6, 9\) does not match its image of shape \(6, 8\)"),
    ("label", r"label values \[13.\]; expected integers 0..12 or -1"),
    ("missing", "missing normal of image"),
    ("range", r"expected \(H, W, 3\) in \[0, 1\]"),
    ("truncated", "unreadable .npy file"),
])
def test_bad_input_fails_without_partial_dataset(tmp_path, kind, message):
    raw = str(tmp_path / "raw")
    write_tree(raw)
    path = _damage(raw, kind)
    with pytest.raises(DataError, match=message) as error:
        build("nyuv2_multitask", raw, tmp_path / "tfds")
    assert path in str(error.value)
    assert not glob.glob(str(tmp_path / "tfds" / "**" / "dataset_info.json"), recursive=True)
    assert not os.path.exists(tmp_path / "tfds" / "nyuv2_multitask" / "mtan" / "1.0.0")


def test_wrong_layout_and_empty_split(tmp_path):
    with pytest.raises(DataError, match="manual_dir not found"):
        build("nyuv2_multitask", tmp_path / "absent", tmp_path / "tfds")
    (tmp_path / "flat").mkdir()
    np.save(tmp_path / "flat" / "0.npy", np.zeros(3))
    with pytest.raises(DataError, match=r"flat/train/image: directory not found; expected the MTAN layout"):
        build("nyuv2_multitask", tmp_path / "flat", tmp_path / "tfds")
    raw = str(tmp_path / "raw")
    write_tree(raw, (("train", 2), ("val", 0)))
    with pytest.raises(DataError, match="val/image: split has no images"):
        build("nyuv2_multitask", raw, tmp_path / "tfds")
    assert not os.path.exists(tmp_path / "tfds" / "nyuv2_multitask" / "mtan" / "1.0.0")


def test_building_leaves_nothing_in_the_temporary_directory(tmp_path, monkeypatch):
    """TFDS looks up metadata on its GCS bucket for a builder not yet prepared, leaving an empty
    `tmp*tfds` folder in the temporary directory every time; these builders skip it."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    write_tree(str(tmp_path / "raw"))
    assert build("nyuv2_multitask", tmp_path / "raw", tmp_path / "tfds").splits == {"train": 3, "test": 2}
    assert os.listdir(scratch) == []
