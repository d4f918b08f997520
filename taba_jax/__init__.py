"""taba_jax: spend a labeling budget across the tasks of a multi-task model, then train on it."""

__version__ = "0.1.0"
