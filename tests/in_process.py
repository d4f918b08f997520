"""Runs a launcher's command line inside the test process, as `python launch/<script> args...` would.

A launcher in a subprocess pays Python's and JAX's start-up and compiles its programs afresh (about
3 s for a launcher that fails at its first check); in the test process it reuses what earlier tests
compiled. The script runs as `__main__` through its own `cli.run`, with its output captured and its
exit status (or an uncaught exception's traceback and status 1) returned like a process's. The
flags the launcher defines (in the script, through taba_jax, and its config's overrides) are
removed and absl's flags reset afterwards, so launchers can run one after another; flags of
libraries it imported stay, with their modules. Tests that need a real process (several processes,
an environment of their own, a signal) keep `subprocess`.
"""
import contextlib
import io
import os
import runpy
import subprocess
import sys
import traceback

from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_launcher(script: str, *args: str) -> subprocess.CompletedProcess:
    """`python <script> <args>` in the repository root, in this process."""
    def launcher_flags():  # the script's and taba_jax's flags, and config_flags' `--config.<field>` overrides
        own = {flag.name for module, defined in flags.FLAGS.flags_by_module_dict().items()
               if module == script or module.startswith("taba_jax.") for flag in defined}
        return {name for name in flags.FLAGS if name.split(".")[0] in own}

    defined_before = launcher_flags()
    stdout, stderr = io.StringIO(), io.StringIO()
    saved_argv, saved_cwd = sys.argv, os.getcwd()
    returncode = 0
    try:
        os.chdir(ROOT)
        sys.argv = [script, *map(str, args)]
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                runpy.run_path(script, run_name="__main__")
            except SystemExit as e:
                returncode = e.code if isinstance(e.code, int) else int(e.code is not None)
            except Exception:  # what the interpreter does with an uncaught exception
                traceback.print_exc()
                returncode = 1
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        for name in launcher_flags() - defined_before:
            delattr(flags.FLAGS, name)
        flags.FLAGS.unparse_flags()  # absl's own flags (--verbosity) back to their defaults
    return subprocess.CompletedProcess([script, *args], returncode, stdout.getvalue(), stderr.getvalue())
