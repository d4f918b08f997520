"""TFDS builders of real multi-task datasets (no TensorFlow needed), one package per dataset.

Each dataset module defines the builder class (`BUILDER`), `make_config(manual_dir, **options)`,
`targets(features)` (the `TargetSpec` of each task a built dataset serves), `decode_target(name,
example)` and `REQUIRES` (extra stored features a task's decoding reads). Use
`taba_jax.data.tfds_datasets.build` to build and open them.
"""
from __future__ import annotations

import importlib

DATASETS = {
    "taskonomy": "taba_jax.data.builders.taskonomy.taskonomy",
    "nyuv2_multitask": "taba_jax.data.builders.nyuv2_multitask.nyuv2_multitask",
    "pascal_multitask": "taba_jax.data.builders.pascal_multitask.pascal_multitask",
}


def dataset_module(name: str):
    """The module of dataset `name` (imports it, which registers its builder with TFDS)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {sorted(DATASETS)}")
    return importlib.import_module(DATASETS[name])
