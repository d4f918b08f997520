"""Taskonomy builder package (TFDS requires each builder in its own package folder)."""
from taba_jax.data.builders.taskonomy.taskonomy import DOMAINS, Taskonomy, TaskonomyConfig, make_config

__all__ = ["DOMAINS", "Taskonomy", "TaskonomyConfig", "make_config"]
