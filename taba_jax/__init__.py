"""taba_jax: spend a labeling budget across the tasks of a multi-task model, then train on it."""
import os

__version__ = "0.1.0"

# jaxlib 0.10.2 on CPU miscompiles some large batched reductions under jit in its
# dot-library-rewriter pass (per-task gradients of vmapped VJPs came out wrong by up to 100 %,
# eager mode was right; tests/mtl/test_weighting.py reproduces it). Disabling the pass fixes it.
# Effective when taba_jax is imported before JAX starts its backend, as the launchers do.
_WORKAROUND = "--xla_disable_hlo_passes=dot-library-rewriter"
if "xla_disable_hlo_passes" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_WORKAROUND}".strip()
