"""Batches of a `RandomAccessSplit` read through grain: decoded in worker processes, prefetched.

Training: `step_batches(reader, start, end, workers, prefetch)` yields the host batch of every step
in order. `StepBatchReader(step)` builds one: the step's indices (the trainer's pure function of seed
and step, so a resumed run continues the same order and the in-memory path draws the same images),
then only the columns of the global batch this process's devices hold (`process_columns`), read by
index from the split. Evaluation: `split_batches(split, tasks, batch_size, workers)` yields
consecutive batches of a split in order. With `workers=0` grain reads in threads of this process.

No JAX computation here: the map functions run in grain's worker processes (they must pickle).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
from absl import flags

from taba_jax.data.dataset import RandomAccessSplit, Split

_NO_SHARED_MEMORY = 2**62  # grain's min_shm_size: arrays smaller than this are pickled


def assemble_batch(split: RandomAccessSplit, tasks: Sequence[str], labeled: Mapping[str, np.ndarray],
                   indices: np.ndarray, batching: str) -> dict:
    """The training batch at `indices` (G, B) of `split`: {"images": (G, B, H, W, C), "targets":
    {task: (B, ...)}, "masks": {task: (B,)} (joint only)}. Per-task batching reads row g for task g
    only; joint reads row 0 for every task and masks the images a task has no label on."""
    if batching == "joint":
        images, targets = split.batch(indices[0], tasks)
        masks = {t: np.isin(indices[0], labeled[t]).astype(np.float32) for t in tasks}
        return {"images": images[None], "targets": targets, "masks": masks}
    groups = [split.batch(row, [task]) for row, task in zip(indices, tasks)]
    return {"images": np.stack([images for images, _ in groups]),
            "targets": {task: targets[task] for (_, targets), task in zip(groups, tasks)}, "masks": {}}


@dataclasses.dataclass(frozen=True)
class StepBatchReader:
    """step -> this process's part of that step's training batch (a grain map function; picklable).

    `indices_of_step(step)` gives the global (G, B) index matrix; `columns` are the batch columns
    this process reads (all of them in a one-process job)."""

    split: RandomAccessSplit
    tasks: tuple[str, ...]
    labeled: Mapping[str, np.ndarray]
    batching: str
    indices_of_step: Callable[[int], np.ndarray]
    columns: np.ndarray

    def __call__(self, step) -> dict:
        indices = self.indices_of_step(int(step))[:, self.columns]
        return {"step": np.int64(step), **assemble_batch(self.split, self.tasks, self.labeled, indices,
                                                         self.batching)}


def process_columns(index_map: Mapping, batch_size: int, axis: int = 1) -> np.ndarray:
    """The batch columns held by this process's devices, from a sharding's
    `addressable_devices_indices_map(shape)` (device -> index tuple) with the batch along `axis`."""
    columns = set()
    for index in index_map.values():
        columns.update(range(*index[axis].indices(batch_size)))
    return np.array(sorted(columns), np.int64)


def step_batches(reader: StepBatchReader, start: int, end: int, workers: int, prefetch: int) -> Iterator[dict]:
    """The batches of steps start..end-1 in order, built by `reader` in `workers` grain worker
    processes (0: threads of this process), each keeping `prefetch` batches ready."""
    import grain

    return _prefetched(grain.MapDataset.range(start, end).map(reader), workers, prefetch)


@dataclasses.dataclass(frozen=True)
class _SliceReader:
    """Batch number -> (images, targets) of consecutive examples (a grain map function)."""

    split: RandomAccessSplit
    tasks: tuple[str, ...]
    batch_size: int

    def __call__(self, number) -> tuple[np.ndarray, dict]:
        start = int(number) * self.batch_size
        return self.split.batch(np.arange(start, min(start + self.batch_size, len(self.split))), self.tasks)


def split_batches(split: RandomAccessSplit, tasks: Sequence[str], batch_size: int,
                  workers: int = 0, prefetch: int = 2) -> Iterator[tuple[np.ndarray, dict]]:
    """(images, targets) of consecutive batches of `split`, in order (the last may be short). An
    in-memory `Split` is sliced directly; other splits are read through grain."""
    count = -(-len(split) // batch_size)
    reader = _SliceReader(split, tuple(tasks), batch_size)
    if isinstance(split, Split):
        return (reader(number) for number in range(count))
    import grain

    return _prefetched(grain.MapDataset.range(count).map(reader), workers, prefetch)


def _prefetched(dataset, workers: int, prefetch: int) -> Iterator:
    """`dataset` (a grain MapDataset) iterated in order with `prefetch` elements read ahead, by
    `workers` processes (round-robin, so the order is kept) or, with 0, by threads here. The workers
    stop when the iterator is exhausted, closed or dropped.

    Worker processes send each element pickled, not in shared memory: grain frees a shared-memory
    element on a background thread once it is dropped, which a short-lived process (an experiment
    worker exiting after its last run) does not wait for, so the last ones leaked. Pickling costs
    nothing measurable here (README, input pipeline benchmark)."""
    import grain

    if workers == 0:
        iterable = dataset.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=prefetch))
    else:
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()  # grain reads its absl flags; outside an absl app they keep their defaults
        iterable = grain.experimental.WithOptionsIterDataset(
            dataset.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=prefetch)),
            grain.experimental.DatasetOptions(min_shm_size=_NO_SHARED_MEMORY),
        ).mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=prefetch))
    iterator = iter(iterable)
    try:
        yield from iterator
    finally:
        iterator.close()
