"""Multi-task models: Flax linen modules `images -> {task: prediction}` with everything task-specific
in the `heads` subtree of the parameters (`heads/<task>`: the task's head, and for MTAN its
attention modules), so that "shared parameters" is everything outside it.

`config.train.model` picks one: `hard_sharing` (MultiTaskNet), `mtan` (MTAN) or `adashare`
(AdaShareNet); `build_model(tasks, config)` builds it.
"""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from taba_jax.models.adashare import AdaShareNet
from taba_jax.models.hard_sharing import HEADS, MultiTaskNet
from taba_jax.models.mtan import MTAN
from taba_jax.tasks import TaskSpec

MODELS = ("hard_sharing", "mtan", "adashare")


def build_model(tasks: Sequence[TaskSpec], config, policy: tuple[tuple[bool, ...], ...] | None = None):
    """The model `config.model` names (a TrainConfig), with a head for each of `tasks`. `policy`:
    AdaShare's fixed select (True) or skip per task and block (None: every block selected)."""
    tasks, widths = tuple(tasks), tuple(config.widths)
    if config.model == "hard_sharing":
        return MultiTaskNet(tasks, widths=widths, blocks=config.blocks)
    if config.model == "mtan":
        return MTAN(tasks, widths=widths, blocks=config.blocks)
    if config.model == "adashare":
        return AdaShareNet(tasks, widths=widths, blocks=config.blocks, policy=policy)
    raise ValueError(f"config.train.model must be one of {MODELS}, got {config.model!r}")


def shared_parameters(params) -> dict:
    """Pytree of bools like `params`: True for the shared backbone, False inside `heads`."""
    def is_shared(path, _):
        return not any(getattr(k, "key", None) == HEADS for k in path)
    return jax.tree_util.tree_map_with_path(is_shared, params)


def parameter_counts(params) -> dict[str, int]:
    """Numbers of parameters: `total`, `shared` (outside `heads`) and `task_specific` (inside)."""
    sizes = [int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params)]
    shared = sum(size for size, is_shared in zip(sizes, jax.tree.leaves(shared_parameters(params))) if is_shared)
    total = sum(sizes)
    return {"total": total, "shared": shared, "task_specific": total - shared}


__all__ = ["AdaShareNet", "MODELS", "MTAN", "MultiTaskNet", "build_model", "parameter_counts", "shared_parameters"]
