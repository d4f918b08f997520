"""Multi-task models: Flax linen modules `images -> {task: prediction}` with the task heads in the
`heads` subtree of the parameters, so that "shared parameters" is everything outside it."""
from taba_jax.models.hard_sharing import MultiTaskNet, build_model, shared_parameters

__all__ = ["MultiTaskNet", "build_model", "shared_parameters"]
