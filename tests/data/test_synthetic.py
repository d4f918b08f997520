import numpy as np
import pytest

from taba_jax.data import synthetic
from taba_jax.data.dataset import MultiTaskDataset
from taba_jax.data.synthetic import synthetic_dataset
from taba_jax.data.synthetic import task_specs as synthetic_task_specs


@pytest.fixture(scope="module")
def scenes16():
    return synthetic.generate(300, 16, seed=2)


def test_deterministic_per_seed():
    a_images, a_targets = synthetic.generate(20, 16, seed=3)
    b_images, b_targets = synthetic.generate(20, 16, seed=3)
    c_images, _ = synthetic.generate(20, 16, seed=4)
    np.testing.assert_array_equal(a_images, b_images)
    for name in synthetic.TASK_NAMES:
        np.testing.assert_array_equal(a_targets[name], b_targets[name])
    assert not np.array_equal(a_images, c_images)


def test_shapes_and_dtypes_match_the_task_specs():
    images, t = synthetic.generate(5, 16)
    assert images.shape == (5, 16, 16, 3) and images.dtype == np.float32
    expected = {"segment": ((5, 16, 16), np.int32), "depth": ((5, 16, 16, 1), np.float32),
                "normal": ((5, 16, 16, 3), np.float32), "edge": ((5, 16, 16, 1), np.float32),
                "classify": ((5, synthetic.NUM_CLASSES), np.float32), "texture": ((5, 1), np.float32)}
    assert {k: (v.shape, v.dtype) for k, v in t.items()} == expected
    specs = {s.name: s for s in synthetic_task_specs()}
    assert specs["segment"].outputs == synthetic.NUM_CLASSES + 1 and specs["classify"].outputs == synthetic.NUM_CLASSES


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_images must be positive"):
        synthetic.generate(0)
    with pytest.raises(ValueError, match="image_size must be at least 8"):
        synthetic.generate(2, 4)


@pytest.mark.parametrize("size", [16, 32, 64])
def test_targets_are_consistent(size):
    images, t = synthetic.generate(12, size, seed=1)
    assert images.shape == (12, size, size, 3) and 0 <= images.min() and images.max() <= 1
    np.testing.assert_allclose(np.linalg.norm(t["normal"], axis=-1), 1.0, atol=1e-4)
    coords = (np.arange(size) + 0.5) / size * 2 - 1
    x, y = np.meshgrid(coords, -coords)
    rays = np.stack([x, y, np.full_like(x, synthetic.FOCAL)], -1)
    assert ((t["normal"] * rays).sum(-1) < 1e-4).all()  # every visible surface faces the camera
    assert (t["depth"] > 0).all()
    seg = t["segment"]
    # Edges lie exactly where the visible surface changes: every segment change is an edge...
    seg_change = np.zeros_like(seg, bool)
    seg_change[:, :, 1:] |= seg[:, :, 1:] != seg[:, :, :-1]
    seg_change[:, 1:, :] |= seg[:, 1:, :] != seg[:, :-1, :]
    assert t["edge"][..., 0][seg_change].all()
    # ...and edge pixels sit on depth discontinuities much larger than depth changes elsewhere.
    depth = t["depth"][..., 0]
    jump = np.zeros_like(depth)
    jump[:, :, 1:] = np.maximum(jump[:, :, 1:], np.abs(np.diff(depth, axis=2)))
    jump[:, :, :-1] = np.maximum(jump[:, :, :-1], np.abs(np.diff(depth, axis=2)))
    edges = t["edge"][..., 0] > 0
    assert np.median(jump[edges]) > 5 * np.median(jump[~edges])
    present = np.stack([(seg == c).any(axis=(1, 2)) for c in range(1, synthetic.NUM_CLASSES + 1)], 1)
    np.testing.assert_array_equal(t["classify"] > 0, present)
    assert ((0 <= t["texture"]) & (t["texture"] <= 1)).all()


def test_background_is_a_plane_through_the_fixed_point(scenes16):
    """Background pixels have one normal n per image, and their 3-D points p satisfy
    n . p = n . (0, 0, PLANE_DISTANCE): depth and normal targets describe the same plane."""
    _, t = scenes16
    size = 16
    coords = (np.arange(size) + 0.5) / size * 2 - 1
    x, y = np.meshgrid(coords, -coords)
    for i in range(20):
        background = t["segment"][i] == 0
        normals = t["normal"][i][background]
        np.testing.assert_allclose(normals, np.broadcast_to(normals[0], normals.shape), atol=1e-5)
        depth = t["depth"][i, ..., 0][background]
        points = np.stack([x[background] / synthetic.FOCAL * depth, y[background] / synthetic.FOCAL * depth, depth], -1)
        np.testing.assert_allclose(points @ normals[0], normals[0, 2] * synthetic.PLANE_DISTANCE, rtol=1e-4)
    tilt = np.degrees(np.arccos(-t["normal"][t["segment"] == 0][:, 2]))
    assert tilt.max() <= synthetic.MAX_TILT_DEGREES + 1e-3 and np.percentile(tilt, 90) > 25


def test_every_class_appears_large_enough_at_16px(scenes16):
    _, t = scenes16
    seg = t["segment"]
    for c in range(1, synthetic.NUM_CLASSES + 1):
        images_with_c = (seg == c).any(axis=(1, 2))
        assert images_with_c.mean() > 0.2
        # mean visible area in images showing the class: several pixels across, not a speck
        assert (seg == c).sum(axis=(1, 2))[images_with_c].mean() > 15
    assert 0.15 < (seg > 0).mean() < 0.5  # objects cover a fair share of the view, not all of it
    counts = t["classify"].sum(axis=1)
    assert counts.min() >= 1 and counts.max() <= synthetic.MAX_OBJECTS


def test_background_colour_reveals_its_orientation(scenes16):
    """The lamps make the grey plane's chromaticity a function of its normal: a linear map from
    chromaticity predicts the normal's x and y components well (R^2 > 0.8 each)."""
    images, t = scenes16
    background = (t["segment"] == 0) & (t["edge"][..., 0] == 0)
    colour = images[background].astype(np.float64)
    chroma = colour / colour.sum(axis=1, keepdims=True)
    features = np.concatenate([chroma, chroma ** 2, np.ones((len(chroma), 1))], axis=1)
    normal_xy = t["normal"][background][:, :2].astype(np.float64)
    fit, *_ = np.linalg.lstsq(features, normal_xy, rcond=None)
    residual = normal_xy - features @ fit
    r2 = 1 - residual.var(axis=0) / normal_xy.var(axis=0)
    assert (r2 > 0.8).all(), r2


def test_texture_spans_its_range_and_ignores_the_geometry(scenes16):
    _, t = scenes16
    texture = t["texture"][:, 0]
    assert texture.min() < 0.1 and texture.max() > 0.9
    tilt = np.arccos(-t["normal"][:, 0, 0, 2])  # a corner pixel: background in most images
    depth = t["depth"][..., 0].mean(axis=(1, 2))
    for geometry in (tilt, depth, t["classify"].sum(axis=1)):
        assert abs(np.corrcoef(texture, geometry)[0, 1]) < 0.2


def test_dataset_splits_and_cache(tmp_path):
    dataset = synthetic_dataset(50, 16, seed=0, cache_dir=str(tmp_path))
    assert [len(dataset.splits[s]) for s in ("train", "validation", "test")] == [40, 5, 5]
    again = synthetic_dataset(50, 16, seed=0, cache_dir=str(tmp_path))
    np.testing.assert_array_equal(dataset.train.images, again.train.images)
    assert len(list(tmp_path.glob("*.npz"))) == 1


def test_from_arrays_validates_fields():
    images, targets = synthetic.generate(10, 16)
    tasks = synthetic_task_specs()
    with pytest.raises(ValueError, match=r"targets\['depth'\] has 9 rows"):
        MultiTaskDataset.from_arrays(images, {**targets, "depth": targets["depth"][:9]}, tasks)
    with pytest.raises(ValueError, match="validation_fraction must be in"):
        MultiTaskDataset.from_arrays(images, targets, tasks, validation_fraction=1.5)
