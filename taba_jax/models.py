"""Multi-task model: a shared ResNet-style encoder-decoder (Flax linen) and one head per task.

`model.apply(params, images) -> {task: prediction}`; dense heads predict at input resolution from
the decoder, image-level heads from the pooled encoder bottleneck. GroupNorm keeps the model free
of batch statistics, so per-task batches and any device count give the same function.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from taba_jax.tasks import TaskSpec


class ResidualBlock(nn.Module):
    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x):
        residual = x
        y = nn.Conv(self.features, (3, 3), self.strides, use_bias=False)(x)
        y = nn.relu(nn.GroupNorm(num_groups=min(8, self.features))(y))
        y = nn.Conv(self.features, (3, 3), use_bias=False)(y)
        y = nn.GroupNorm(num_groups=min(8, self.features))(y)
        if residual.shape != y.shape:
            residual = nn.Conv(self.features, (1, 1), self.strides, use_bias=False)(residual)
        return nn.relu(y + residual)


class MultiTaskNet(nn.Module):
    """Shared encoder-decoder with `len(widths)` resolution stages and `blocks` residual blocks each."""

    tasks: Sequence[TaskSpec]
    widths: Sequence[int] = (16, 32, 64)
    blocks: int = 1

    @nn.compact
    def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
        x = nn.relu(nn.Conv(self.widths[0], (3, 3))(images))
        skips = []
        for stage, width in enumerate(self.widths):
            for block in range(self.blocks):
                x = ResidualBlock(width, strides=2 if stage > 0 and block == 0 else 1)(x)
            skips.append(x)
        pooled = x.mean(axis=(1, 2))
        for width, skip in zip(reversed(self.widths[:-1]), reversed(skips[:-1])):
            x = jax.image.resize(x, (x.shape[0], skip.shape[1], skip.shape[2], x.shape[3]), "nearest")
            x = ResidualBlock(width)(jnp.concatenate([x, skip], axis=-1))
        outputs = {}
        for task in self.tasks:
            if task.dense:
                hidden = nn.relu(nn.Conv(self.widths[0], (3, 3), name=f"{task.name}_hidden")(x))
                outputs[task.name] = nn.Conv(task.outputs, (1, 1), name=f"{task.name}_head")(hidden)
            else:
                hidden = nn.relu(nn.Dense(self.widths[-1], name=f"{task.name}_hidden")(pooled))
                outputs[task.name] = nn.Dense(task.outputs, name=f"{task.name}_head")(hidden)
        return outputs
