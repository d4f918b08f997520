"""Where the runs of a sweep execute: in this process, or in parallel worker processes.

An executor maps a picklable function over picklable items and yields `(item, result)` as each
finishes, so that the caller — the only writer of results — can append them at once. On a CPU,
several single-threaded models side by side train more runs per hour than one model using every
core (`benchmarks/sweep_throughput.py` measures the split); batching runs with `jax.vmap` was
measured slower on this CPU.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from typing import Callable, Iterable, Iterator, Protocol, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Executor(Protocol):
    def map_unordered(self, fn: Callable[[Item], Result], items: Iterable[Item]) -> Iterator[tuple[Item, Result]]:
        """Yields (item, fn(item)) in the order the calls finish; an exception of fn propagates."""


class InProcess:
    """Runs every call here, one after another (the default; shares compilations between runs)."""

    def map_unordered(self, fn, items):
        for item in items:
            yield item, fn(item)


def _limit_threads(threads: int) -> None:
    """Runs in a fresh worker before JAX starts: XLA's CPU thread pool of `threads` threads."""
    flags = os.environ.get("XLA_FLAGS", "")
    if threads == 1:
        flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    else:
        flags += f" intra_op_parallelism_threads={threads}"
    os.environ["XLA_FLAGS"] = flags.strip()
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)


class WorkerProcesses:
    """`workers` spawned processes with `threads` intra-op threads each."""

    def __init__(self, workers: int, threads: int = 1):
        if workers < 1 or threads < 1:
            raise ValueError(f"workers and threads must be positive, got {workers} and {threads}")
        self.workers, self.threads = workers, threads

    def map_unordered(self, fn, items):
        context = multiprocessing.get_context("spawn")  # a clean JAX in each worker, never a forked one
        with concurrent.futures.ProcessPoolExecutor(self.workers, mp_context=context, initializer=_limit_threads,
                                                    initargs=(self.threads,)) as pool:
            futures = {pool.submit(fn, item): item for item in items}
            try:
                for future in concurrent.futures.as_completed(futures):
                    yield futures[future], future.result()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise


def make_executor(workers: int, threads: int = 1) -> Executor:
    """`InProcess` for one worker, else `WorkerProcesses`."""
    return InProcess() if workers <= 1 else WorkerProcesses(workers, threads)
