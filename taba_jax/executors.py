"""Where the runs of a sweep execute — this process, local worker processes, or a Ray cluster — and
the scheduler that feeds them a dependency graph of jobs.

An executor only starts a call and hands back a `concurrent.futures.Future`; `run_jobs` decides
what to submit when (a run after its seed's reference), retries failures, and yields each outcome
as it finishes so that the caller — the only writer of results — appends it at once. On the
2-core CPU this was built on, one run at a time in this process (sharing compilations, every core
per run) trained 1.5x more runs per hour than two single-threaded worker processes
(`benchmarks/sweep_throughput.py`); worker processes and Ray pay off with more cores, GPUs or hosts.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import multiprocessing
import os
import traceback
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Hashable, Iterable, Iterator, Protocol


class Executor(Protocol):
    capacity: int | None  # calls worth having in flight at once (None: as many as are ready)

    def submit(self, fn: Callable[[Any], Any], arg: Any) -> concurrent.futures.Future:
        """Starts fn(arg); the future holds its result or the exception that ended it."""

    def close(self) -> None:
        """Stops the workers (calls still running are abandoned)."""


class InProcess:
    """Runs each call here, when it is submitted (the default; shares compilations between runs)."""

    capacity = 1

    def submit(self, fn, arg):
        future = concurrent.futures.Future()
        try:
            future.set_result(fn(arg))
        except Exception as error:  # a KeyboardInterrupt still stops the sweep
            future.set_exception(error)
        return future

    def close(self):
        pass


def thread_environment(threads: int, environ: dict | None = None) -> dict[str, str]:
    """Environment variables that give a fresh process's XLA CPU client `threads` intra-op threads."""
    flags = (os.environ if environ is None else environ).get("XLA_FLAGS", "")
    if threads == 1:
        flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    else:
        flags += f" intra_op_parallelism_threads={threads}"
    return {"XLA_FLAGS": flags.strip(), **{name: str(threads) for name in
                                           ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}


def _limit_threads(threads: int) -> None:
    """Runs in a fresh worker before JAX starts."""
    os.environ.update(thread_environment(threads))


class WorkerProcesses:
    """`workers` spawned processes with `threads` intra-op threads each. A worker that dies (killed,
    out of memory) breaks Python's process pool and fails every call in flight; the next submit
    starts a fresh pool, so `run_jobs` retries those calls."""

    def __init__(self, workers: int, threads: int = 1):
        if workers < 1 or threads < 1:
            raise ValueError(f"workers and threads must be positive, got {workers} and {threads}")
        self.capacity, self.threads = workers, threads
        self._pool = self._new_pool()

    def _new_pool(self):
        context = multiprocessing.get_context("spawn")  # a clean JAX in each worker, never a forked one
        return concurrent.futures.ProcessPoolExecutor(self.capacity, mp_context=context, initializer=_limit_threads,
                                                      initargs=(self.threads,))

    def submit(self, fn, arg):
        try:
            return self._pool.submit(fn, arg)
        except BrokenProcessPool:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            return self._pool.submit(fn, arg)

    def close(self):
        self._pool.shutdown(wait=False, cancel_futures=True)


def _call(fn, arg):
    return fn(arg)


class RayTasks:
    """Each call a Ray task with `cpus` CPUs and `gpus` GPUs, so a cluster schedules one run per GPU.

    `address`: "" starts a local Ray instance on demand (with `local_cpus` CPUs, bound to the loopback
    address), "auto" joins the cluster this machine belongs to, else the address of its head. Ray's
    own retries are off: `run_jobs` retries every failure, a dead worker (`WorkerCrashedError`) included.
    """

    capacity = None

    def __init__(self, address: str = "", cpus: float = 1.0, gpus: float = 0.0, local_cpus: int | None = None,
                 threads: int = 1):
        import ray  # an optional extra: pip install -e ".[ray]"

        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            runtime_env = {"env_vars": thread_environment(threads)}
            if address:
                ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
            else:
                ray.init(num_cpus=local_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                         runtime_env=runtime_env, log_to_driver=False)
        self._task = ray.remote(_call).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
        self._refs = []

    def submit(self, fn, arg):
        ref = self._task.remote(fn, arg)
        self._refs.append(ref)
        return ref.future()

    def close(self):
        refs, self._refs = self._refs, []
        for ref in refs:
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # already finished, or its worker already gone
                pass
        if self._started:
            self._ray.shutdown()
            self._started = False


def make_executor(kind: str = "local", workers: int = 1, threads: int = 1, ray_address: str = "",
                  cpus_per_run: float = 1.0, gpus_per_run: float = 0.0) -> Executor:
    """`local`: `InProcess` for one worker, else `WorkerProcesses`; `ray`: `RayTasks` (a local Ray
    started on demand has `workers * threads` CPUs)."""
    if kind == "ray":
        return RayTasks(ray_address, cpus_per_run, gpus_per_run, local_cpus=workers * threads, threads=threads)
    if kind != "local":
        raise ValueError(f"unknown executor {kind!r}; choose local or ray")
    return InProcess() if workers <= 1 else WorkerProcesses(workers, threads)


# ----------------------------------------------------------------------------------------------
# The scheduler
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Job:
    """fn(arg) (both picklable), started once every job named in `after` has succeeded."""

    key: Hashable
    fn: Callable[[Any], Any]
    arg: Any
    after: tuple[Hashable, ...] = ()


@dataclasses.dataclass(frozen=True)
class Outcome:
    job: Job
    result: Any = None
    error: str | None = None  # the last attempt's traceback when every attempt failed, or why it never ran
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None


def _describe(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)).strip()


def run_jobs(executor: Executor, jobs: Iterable[Job], max_retries: int = 0,
             on_retry: Callable[[Job, int, str], None] | None = None,
             more_jobs: Callable[[Outcome], Iterable[Job]] | None = None) -> Iterator[Outcome]:
    """Runs `jobs` on `executor`, each after its dependencies (keys of `jobs`; other keys count as
    done), independent ones side by side; yields each `Outcome` as it finishes. A job that fails
    (raises, or its worker dies) is retried up to `max_retries` times, `on_retry(job, attempt, error)`
    told each time; one that fails every attempt is yielded with its error, and the jobs that depend
    on it are yielded as not run. The sweep goes on either way. `more_jobs(outcome)`, called after
    each outcome is yielded, returns jobs that join the sweep (work that depends on results, not
    only on other jobs having finished)."""
    pending, keys = [], collections.Counter()

    def add(new_jobs):
        new_jobs = list(new_jobs)
        keys.update(job.key for job in new_jobs)
        if any(count > 1 for count in keys.values()):
            raise ValueError(f"job keys must be unique, repeated: {[k for k, c in keys.items() if c > 1]}")
        pending.extend(new_jobs)

    def follow_up(outcome):
        if more_jobs is not None:
            add(more_jobs(outcome))

    add(jobs)
    succeeded, failed = set(), set()
    running: dict[concurrent.futures.Future, tuple[Job, int]] = {}
    try:
        while pending or running:
            while skipped := [j for j in pending if any(d in failed for d in j.after)]:  # dependents' dependents too
                for job in skipped:
                    pending.remove(job)
                    failed.add(job.key)
                    outcome = Outcome(job, error=f"not run: {[d for d in job.after if d in failed]} failed", attempts=0)
                    yield outcome
                    follow_up(outcome)
            ready = [j for j in pending if all(d in succeeded or d not in keys for d in j.after)]
            room = len(ready) if executor.capacity is None else max(executor.capacity - len(running), 0)
            for job in ready[:room]:
                pending.remove(job)
                running[executor.submit(job.fn, job.arg)] = (job, 1)
            if not running:
                if not pending:  # the last jobs were dependents of a failed one
                    break
                raise ValueError(f"jobs {[j.key for j in pending]} wait on each other (a dependency cycle)")
            finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in finished:
                job, attempt = running.pop(future)
                error = future.exception()
                if error is None:
                    succeeded.add(job.key)
                    outcome = Outcome(job, future.result(), attempts=attempt)
                    yield outcome
                    follow_up(outcome)
                elif attempt <= max_retries:
                    if on_retry is not None:
                        on_retry(job, attempt, _describe(error))
                    running[executor.submit(job.fn, job.arg)] = (job, attempt + 1)
                else:
                    failed.add(job.key)
                    outcome = Outcome(job, error=_describe(error), attempts=attempt)
                    yield outcome
                    follow_up(outcome)
    finally:
        executor.close()
