import json
import zipfile

import numpy as np
import pytest

from taba_jax.budget import Allocation, BudgetProblem, allocate


@pytest.mark.parametrize("args, message", [
    ((["a", "b"], [1, 0], 10, 5), "costs\\['b'\\] must be positive and finite, got 0.0"),
    ((["a", "b"], [1, -2], 10, 5), "costs\\['b'\\] must be positive"),
    ((["a", "b"], [1, np.nan], 10, 5), "costs\\['b'\\] must be positive and finite, got nan"),
    ((["a", "b"], [1, np.inf], 10, 5), "got inf"),
    ((["a", "b"], [1, 1], 10, -1), "budget must be finite and non-negative, got -1.0"),
    ((["a", "b"], [1, 1], 10, np.nan), "budget must be finite and non-negative, got nan"),
    ((["a", "b"], [1, 1], 0, 5), "num_images must be positive, got 0"),
    ((["a", "b"], [1, 1], -3, 5), "num_images must be positive, got -3"),
    (([], [], 10, 5), "task_names must not be empty"),
    ((["a", "a"], [1, 1], 10, 5), "task_names has duplicates: \\['a'\\]"),
    ((["a", ""], [1, 1], 10, 5), "task_names contains an invalid name ''"),
    ((["a", "b"], [1, 1, 1], 10, 5), "costs has 3 entries but task_names has 2"),
])
def test_bad_problems_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        BudgetProblem(*args)


def test_problem_types_are_checked():
    with pytest.raises(TypeError, match="num_images must be an integer"):
        BudgetProblem(["a"], [1], 2.5, 5)
    with pytest.raises(TypeError, match="task_names must be a sequence"):
        BudgetProblem("ab", [1, 1], 2, 5)


def test_summary_lists_tasks_money_and_label_histogram():
    problem = BudgetProblem(["seg", "depth"], [10, 3], 20, 60)
    allocation = allocate(problem, "equal_count_shared")
    text = allocation.summary()
    assert "seg" in text and "depth" in text and "unspent budget: 8" in text
    assert "images with k labels: 0: 16, 1: 0, 2: 4" in text


@pytest.fixture
def saved(tmp_path):
    problem = BudgetProblem(["seg", "depth", "edge"], [10 / 3, 1, 1], 50, 40)
    allocation = allocate(problem, "random_pairs", seed=4)
    path = tmp_path / "alloc.npz"
    allocation.save(path)
    return allocation, path


def test_round_trip_is_exact(saved):
    allocation, path = saved
    loaded = Allocation.load(path)
    np.testing.assert_array_equal(loaded.labels, allocation.labels)
    assert loaded.problem.task_names == allocation.problem.task_names
    np.testing.assert_array_equal(loaded.problem.costs, allocation.problem.costs)
    assert (loaded.strategy, loaded.seed, loaded.spent) == (allocation.strategy, 4, allocation.spent)
    assert not list(path.parent.glob(".tmp-*"))  # the temp file was renamed away


def test_the_ids_of_the_labeled_images_round_trip_and_map_to_each_tasks_labels(saved, tmp_path):
    import dataclasses

    allocation, _ = saved
    ids = np.array([f"building_{n}" for n in allocation.labeled_images])
    with_ids = dataclasses.replace(allocation, labeled_ids=ids)
    with_ids.save(tmp_path / "with_ids.npz")
    loaded = Allocation.load(tmp_path / "with_ids.npz")
    np.testing.assert_array_equal(loaded.labeled_ids, ids)
    for task, id_set in loaded.labeled_id_sets().items():
        assert list(id_set) == [f"building_{n}" for n in allocation.labeled_indices(task)]
    with pytest.raises(ValueError, match="has no labeled_ids"):
        allocation.labeled_id_sets()
    with pytest.raises(ValueError, match=f"labeled_ids must be {len(ids)} strings"):
        dataclasses.replace(allocation, labeled_ids=ids[:-1])
    with np.load(tmp_path / "with_ids.npz") as data:
        arrays = dict(data)
    np.savez(tmp_path / "extra.npz", **arrays, notes=np.array("x"))
    with pytest.raises(ValueError, match="optionally 'labeled_ids', found"):
        Allocation.load(tmp_path / "extra.npz")


def _rewrite(path, labels=None, meta_update=None, drop_metadata=False):
    with np.load(path) as data:
        stored_labels, meta = data["labels"], json.loads(str(data["metadata"]))
    meta.update(meta_update or {})
    arrays = {"labels": stored_labels if labels is None else labels}
    if not drop_metadata:
        arrays["metadata"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)


@pytest.mark.parametrize("tamper, message", [
    (lambda p, a: _rewrite(p, labels=~a.labels), "checksum"),
    (lambda p, a: _rewrite(p, labels=a.labels[:10]), "checksum|shape"),
    (lambda p, a: _rewrite(p, labels=a.labels.astype(np.uint8)), "2-D bool"),
    (lambda p, a: _rewrite(p, meta_update={"spent": 1.0}), "spent is 1.0"),
    (lambda p, a: _rewrite(p, meta_update={"format_version": 99}), "format_version"),
    (lambda p, a: _rewrite(p, drop_metadata=True), "expected arrays"),
    (lambda p, a: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "is not an allocation file"),
    (lambda p, a: p.write_bytes(b"not a zip"), "is not an allocation file"),
])
def test_corrupted_files_are_refused(saved, tamper, message):
    allocation, path = saved
    tamper(path, allocation)
    with pytest.raises(ValueError, match=message):
        Allocation.load(path)


def test_pickled_object_arrays_are_never_loaded(saved):
    _, path = saved
    with zipfile.ZipFile(path, "w") as z:
        with z.open("labels.npy", "w") as f:
            np.lib.format.write_array(f, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
        with z.open("metadata.npy", "w") as f:
            np.lib.format.write_array(f, np.array("{}"))
    with pytest.raises(ValueError, match="unreadable or corrupted"):
        Allocation.load(path)


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    problem = BudgetProblem(["a"], [1], 5, 2)
    allocation = allocate(problem, "single_task:a")
    monkeypatch.setattr(np, "savez_compressed", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        allocation.save(tmp_path / "x.npz")
    assert list(tmp_path.iterdir()) == []
