import numpy as np
import pytest

from taba_jax.data import synthetic
from taba_jax.data.dataset import MultiTaskDataset
from taba_jax.data.synthetic import synthetic_dataset
from taba_jax.data.synthetic import task_specs as synthetic_task_specs


def test_deterministic_per_seed():
    a_images, a_targets = synthetic.generate(20, 16, seed=3)
    b_images, b_targets = synthetic.generate(20, 16, seed=3)
    c_images, _ = synthetic.generate(20, 16, seed=4)
    np.testing.assert_array_equal(a_images, b_images)
    for name in synthetic.TASK_NAMES:
        np.testing.assert_array_equal(a_targets[name], b_targets[name])
    assert not np.array_equal(a_images, c_images)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_targets_are_consistent(size):
    images, t = synthetic.generate(12, size, seed=1)
    assert images.shape == (12, size, size, 3) and 0 <= images.min() and images.max() <= 1
    np.testing.assert_allclose(np.linalg.norm(t["normal"], axis=-1), 1.0, atol=1e-4)
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
