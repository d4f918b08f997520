"""One XLA compilation cache for the whole test session, shared with the launcher subprocesses.

Most of a tiny training run's time on a CPU is compiling (a fresh process compiles the model's init,
step and evaluation again); with JAX's persistent cache in a session-private directory, the many
launcher and worker processes of the suite compile each distinct program once. Results are the
same with or without it.
"""
import atexit
import os
import shutil
import tempfile

_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ... under pytest-xdist
if _WORKER.startswith("gw") and hasattr(os, "sched_setaffinity"):
    # One core per xdist worker (and the subprocesses it starts), set before jax sizes its thread
    # pools: workers whose XLA threads all fought for every core made the suite slower.
    _CORES = sorted(os.sched_getaffinity(0))
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) <= len(_CORES):
        os.sched_setaffinity(0, {_CORES[int(_WORKER[2:]) % len(_CORES)]})

# The suite compiles hundreds of small programs and runs each for a few steps, so XLA's backend
# optimisation (LLVM at -O2) is much of its time; level 1 compiles a tiny train job in about 75 %
# of the time with the same results. (Level 0 is not safe: jaxlib 0.10.2 miscompiles a training
# step there, non-finite at step 3 of a run that is finite at levels 1 and 2.) Launchers and users
# keep XLA's default.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=1".strip()

import jax  # noqa: E402
from hypothesis import settings  # noqa: E402

# Property tests draw the same examples on every machine and run, so a CI result can be reproduced;
# `HYPOTHESIS_PROFILE=explore pytest tests/budget` draws new random examples to hunt for bugs.
settings.register_profile("deterministic", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="taba_jax_tests_xla_cache_")
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE  # inherited by subprocesses and spawned workers
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


# The longest tests (one subprocess-heavy job each) start first, so that the workers' queues end on
# short tests instead of one worker finishing a two-minute test alone (longest-first scheduling).
LONG_FIRST = (
    "test_readme.py::test_readme_commands_and_code_run_in_order",
    "test_experiment.py::test_parallel_workers_and_ray_write_the_same_records_as_one_process",
    "test_distributed.py::test_two_processes_build_stream_and_train_a_taskonomy_tree_like_one_and_their_checkpoint_"
    "restores_in_one",
    "test_train.py::test_four_devices_match_one_device",
    "test_distributed.py::test_two_process_sweep_writes_the_records_of_one_process",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.rsplit("/", 1)[-1], len(rank)))  # stable: others keep order
