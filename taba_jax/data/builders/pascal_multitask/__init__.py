"""PASCAL multi-task builder package (TFDS requires each builder in its own package folder)."""
from taba_jax.data.builders.pascal_multitask.pascal_multitask import PascalConfig, PascalMultitask, make_config

__all__ = ["PascalConfig", "PascalMultitask", "make_config"]
