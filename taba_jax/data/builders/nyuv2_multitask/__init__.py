"""NYUv2 multi-task builder package (TFDS requires each builder in its own package folder)."""
from taba_jax.data.builders.nyuv2_multitask.nyuv2_multitask import Nyuv2Multitask, make_config

__all__ = ["Nyuv2Multitask", "make_config"]
