"""Streaming through grain: the streamed path draws the same batches and trains like the device path,
each process reads only its columns, and a pool readable only by index is never read whole."""
import dataclasses
import importlib.util
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from taba_jax import taba, train
from taba_jax.budget import BudgetProblem
from taba_jax.config import TabaConfig, TrainConfig
from taba_jax.data import streaming
from taba_jax.data.dataset import MultiTaskDataset, Split
from taba_jax.tasks import TaskSpec

HERE = os.path.dirname(os.path.abspath(__file__))
TASKS = [TaskSpec("segment", "segmentation", 3), TaskSpec("depth", "dense_regression", 1)]
READ_LIMIT = 32  # IndexOnlySplit refuses to read more examples than this at once


@dataclasses.dataclass(frozen=True)
class IndexOnlySplit:
    """A split whose images can only be read by index, a few at a time (a stand-in for a pool too
    large for memory); records every index read."""

    arrays: Split
    reads: list = dataclasses.field(default_factory=list)

    def __len__(self):
        return len(self.arrays)

    @property
    def image_shape(self):
        return self.arrays.image_shape

    def batch(self, indices, tasks):
        indices = np.asarray(indices)
        if len(indices) > READ_LIMIT:
            raise MemoryError(f"asked for {len(indices)} examples at once")
        self.reads.append(indices.copy())
        return self.arrays.batch(indices, tasks)

    def select_tasks(self, names):
        return IndexOnlySplit(self.arrays.select_tasks(names), self.reads)


def _arrays(count=60, size=8, seed=0):
    generator = np.random.default_rng(seed)
    images = generator.random((count, size, size, 3), np.float32)
    segment = (images[..., 0] > 0.5).astype(np.int32) + (images[..., 1] > 0.7)
    depth = images[..., 2:3] * 2.0
    return MultiTaskDataset.from_arrays(images, {"segment": segment, "depth": depth}, TASKS, seed=seed)


def _index_only(dataset):
    return MultiTaskDataset(dataset.tasks, {k: IndexOnlySplit(s) for k, s in dataset.splits.items()})


def _config(**overrides):
    values = dict(num_steps=4, batch_size=4, widths=(8,), checkpoint_every=2, log_every=2, learning_rate=1e-2,
                  warmup_steps=1, eval_batch_size=16, input_workers=0, prefetch_batches=2)
    return TrainConfig(**{**values, **overrides})


def _assert_same_params(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batching", ["joint", "per_task"])
def test_streamed_batches_are_the_device_paths_and_a_resumed_run_continues_them(tmp_path, batching):
    dataset = _arrays()
    labeled = {"segment": np.arange(10), "depth": np.arange(5, 40)}
    config = _config(batching=batching)
    device = train.Trainer(dataset, labeled, config, str(tmp_path / "device"))
    streamed = train.Trainer(_index_only(dataset), labeled, config, str(tmp_path / "streamed"))
    reader = streamed.batch_reader()
    for step in range(4):
        indices = device.indices(step)
        batch = reader(step)
        np.testing.assert_array_equal(batch["images"], dataset.train.images[indices])
        for g, task in enumerate(streamed.tasks):
            rows = indices[0] if batching == "joint" else indices[g]
            np.testing.assert_array_equal(batch["targets"][task.name], dataset.train.targets[task.name][rows])
            if batching == "joint":
                np.testing.assert_array_equal(batch["masks"][task.name], np.isin(rows, labeled[task.name]))
    if batching == "joint":
        return  # the joint step on these batches is tested against the device path in tests/test_train.py
    reference = device.train(progress=False)
    streamed.train(progress=False, until_step=2)  # pre-empted, then resumed from its checkpoint
    resumed = streamed.train(progress=False)
    assert resumed.steps == 4
    _assert_same_params(reference.params, resumed.params)


def test_each_process_reads_only_the_columns_its_devices_hold():
    dataset = _arrays()
    split = IndexOnlySplit(dataset.train)
    labeled = {"segment": np.arange(20), "depth": np.arange(20, 45)}
    of_step = lambda step: train.sample_batch_indices(labeled, 8, 3, step, "per_task")  # noqa: E731
    whole = streaming.StepBatchReader(split, ("segment", "depth"), labeled, "per_task", of_step, np.arange(8))(5)
    split.reads.clear()
    halves = [streaming.StepBatchReader(split, ("segment", "depth"), labeled, "per_task", of_step, columns)(5)
              for columns in (np.arange(4), np.arange(4, 8))]
    read = np.concatenate(split.reads)
    assert len(read) == 16 and sorted(read) == sorted(of_step(5).ravel())  # every image read once, by one process
    np.testing.assert_array_equal(np.concatenate([h["images"] for h in halves], axis=1), whole["images"])
    np.testing.assert_array_equal(np.concatenate([h["targets"]["depth"] for h in halves]), whole["targets"]["depth"])
    # two devices, one per process: process 1 holds batch columns 4..7
    index_map = {"device 2": (slice(None), slice(4, 8)), "device 3": (slice(None), slice(4, 8))}
    np.testing.assert_array_equal(streaming.process_columns(index_map, 8), np.arange(4, 8))


def test_training_tabas_pilot_and_evaluation_never_read_the_pool_whole(tmp_path):
    dataset = _index_only(_arrays(count=80))
    config = _config(num_steps=3, checkpoint_every=3, log_every=3)
    problem = BudgetProblem(["segment", "depth"], [2.0, 1.0], len(dataset.train), 120.0)
    taba_config = TabaConfig(rho=0.3, affinity_every=1, affinity_start=0.0, affinity_batch_size=8,
                             gamma=(0.5, 0.5))  # the pilot training only (its affinity probe reads the pool too)
    allocation, _ = taba.run(problem, dataset, taba_config, config, 0, str(tmp_path / "taba"))
    results = train.train_and_evaluate(dataset, allocation.labeled_sets(), config, str(tmp_path / "run"),
                                       progress=False)
    assert set(results["metrics"]) == {"segment", "depth"} and results["steps"] == 3
    reads = [len(r) for s in dataset.splits.values() for r in s.reads]
    assert reads and max(reads) <= READ_LIMIT


def _nyu_fixture():
    spec = importlib.util.spec_from_file_location("nyu_fixture", os.path.join(HERE, "test_builders_nyuv2.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tfds_source_splits_stream_through_grain_worker_processes(tmp_path):
    from taba_jax.data import tfds_datasets

    _nyu_fixture().write_tree(str(tmp_path / "raw"), sizes=(("train", 8), ("val", 3)))
    built = tfds_datasets.build("nyuv2_multitask", tmp_path / "raw", tmp_path / "tfds")
    tasks = ["segmentation", "depth"]
    streamed = tfds_datasets.open_splits(built, tasks, image_size=8)
    memory = tfds_datasets.to_memory(built, tasks, image_size=8)
    assert {k: len(s) for k, s in streamed.splits.items()} == {"train": 7, "validation": 1, "test": 3}
    images, targets = streamed.train.batch([6, 0, 2], tasks)
    np.testing.assert_array_equal(images, memory.train.images[[6, 0, 2]])
    np.testing.assert_array_equal(targets["depth"], memory.train.targets["depth"][[6, 0, 2]])
    assert (targets["segmentation"] == -1).any() and np.isnan(targets["depth"]).any()  # invalid pixels encoded
    labeled = {"segmentation": np.arange(7), "depth": np.arange(3, 7)}
    trainer = train.Trainer(streamed, labeled, _config(num_steps=3, checkpoint_every=3, log_every=3, input_workers=2),
                            str(tmp_path / "streamed"))
    batches = list(trainer.streamed_batches(0, 3))  # built in two worker processes
    for step, batch in enumerate(batches):
        indices = trainer.indices(step)
        np.testing.assert_array_equal(np.asarray(batch["images"]), memory.train.images[indices])
        np.testing.assert_array_equal(np.asarray(batch["targets"]["depth"]), memory.train.targets["depth"][indices[1]])
    params = trainer.init_state().params
    streamed_metrics = train.evaluate(trainer.model, params, trainer.tasks, streamed.splits["test"], input_workers=2)
    memory_metrics = train.evaluate(trainer.model, params, trainer.tasks, memory.splits["test"])
    assert streamed_metrics == memory_metrics


LEAK_CHECK = """
import sys
sys.path.insert(0, {here!r})
from test_streaming import _arrays, _index_only
from taba_jax.data import streaming

split = _index_only(_arrays(count=12)).train  # read through grain (an in-memory split is sliced here)
batches = streaming.split_batches(split, ["segment", "depth"], 2, workers=1)
first = next(batches)
batches.close()  # stopped early
*_, last = streaming.split_batches(split, ["segment", "depth"], 2, workers=1)  # read to the end
print(type(first[0]).__name__, type(last[1]["depth"]).__name__)  # both kept to the exit
"""


def test_streamed_batches_leave_no_shared_memory_behind_in_a_process_that_exits_holding_them():
    """An experiment worker exits right after its last run: the batches grain's workers handed over
    in shared memory must be freed by then (the resource tracker warns about leaked ones)."""
    done = subprocess.run([sys.executable, "-c", LEAK_CHECK.format(here=HERE)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ndarray", "ndarray"]  # copied out of shared memory
    assert "leaked shared_memory" not in done.stderr, done.stderr
