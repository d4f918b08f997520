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

import jax

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="taba_jax_tests_xla_cache_")
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE  # inherited by subprocesses and spawned workers
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.2"
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
