"""Multi-process (multi-host) JAX: joining the job before anything touches a device.

Every process runs the same launcher; `jax.distributed.initialize` connects them, after which
`jax.devices()` lists the devices of all processes, the trainer's mesh spans them, each process
supplies only the shards of the global batch its own devices hold, orbax writes checkpoints
collectively and only process 0 writes results and metrics. On CPU the processes exchange
gradients through gloo.

    python launch/train.py --config=configs/synthetic.py --workdir=/shared/run \
        --jax_coordinator_address=10.0.0.1:1234 --jax_num_processes=2 --jax_process_id=0   # and =1 on the other host

Under SLURM (and other schedulers JAX recognises) `--multiprocess` alone is enough: JAX reads the
coordinator, process count and id from the scheduler's environment.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import jax
from jax.experimental import multihost_utils
from absl import flags

T = TypeVar("T")

ENVIRONMENT = {"coordinator_address": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
               "process_id": "JAX_PROCESS_ID"}


def define_flags() -> dict[str, flags.FlagHolder]:
    """The launchers' --multiprocess and --jax_* flags (defaults from the JAX_* environment variables)."""
    env = os.environ
    return {
        "multiprocess": flags.DEFINE_bool(
            "multiprocess", False, "Join a multi-process JAX job whose coordinator, size and rank the cluster "
            "scheduler's environment gives (SLURM, Open MPI, ...); implied by --jax_coordinator_address."),
        "coordinator_address": flags.DEFINE_string(
            "jax_coordinator_address", env.get(ENVIRONMENT["coordinator_address"]),
            "host:port of process 0's coordinator service (env JAX_COORDINATOR_ADDRESS)."),
        "num_processes": flags.DEFINE_integer(
            "jax_num_processes", _int_env(ENVIRONMENT["num_processes"]), "Processes in the job (env JAX_NUM_PROCESSES)."),
        "process_id": flags.DEFINE_integer(
            "jax_process_id", _int_env(ENVIRONMENT["process_id"]), "This process's rank, 0-based (env JAX_PROCESS_ID)."),
    }


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def initialize_from_flags(holders: dict[str, flags.FlagHolder]) -> bool:
    """Joins the job when --multiprocess or --jax_coordinator_address asks for it; True if joined."""
    address = holders["coordinator_address"].value
    if not (holders["multiprocess"].value or address):
        return False
    initialize(address, holders["num_processes"].value, holders["process_id"].value)
    return True


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """`jax.distributed.initialize` with CPU collectives through gloo (GPUs and TPUs use their own);
    arguments left None come from the cluster scheduler's environment."""
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"--jax_num_processes must be positive, got {num_processes}")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"--jax_process_id must be in [0, {num_processes}), got {process_id}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)


def is_lead() -> bool:
    """Process 0: the one that writes results, metrics and reports."""
    return jax.process_index() == 0


def lead_first(work: Callable[[], T], name: str) -> T:
    """`work()` on process 0, then on the others once it has finished: for a step that writes
    shared files (a dataset built into a shared `data_dir`) which the others then only read."""
    if jax.process_count() == 1:
        return work()
    if is_lead():
        try:
            return work()
        finally:  # a failure releases the others too: they then fail on their own attempt
            multihost_utils.sync_global_devices(name)
    multihost_utils.sync_global_devices(name)
    return work()
