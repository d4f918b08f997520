"""Hard parameter sharing: a ResNet-style encoder-decoder shared by all tasks, one head per task.

`model.apply(params, images) -> {task: prediction}`; dense heads predict at input resolution from
the decoder output and the input pixels, image-level heads from the pooled encoder features (every
stage's mean and the bottleneck's max). With `head_groups` each head predicts only for its task's
group of the batch (per-task batching), so no head computes outputs that no loss reads. GroupNorm keeps the model free
of batch statistics, so per-task batches and any device count give the same function.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from taba_jax.tasks import TaskSpec

HEADS = "heads"  # the parameter subtree holding every task head


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


class DenseHead(nn.Module):
    """A 3x3 conv and a 1x1 conv on the decoder's full-resolution features."""

    width: int
    outputs: int

    @nn.compact
    def __call__(self, features):
        return nn.Conv(self.outputs, (1, 1))(nn.relu(nn.Conv(self.width, (3, 3))(features)))


class ImageHead(nn.Module):
    """A hidden dense layer and an output layer on the pooled bottleneck."""

    width: int
    outputs: int

    @nn.compact
    def __call__(self, pooled):
        return nn.Dense(self.outputs)(nn.relu(nn.Dense(self.width)(pooled)))


def group_of(array: jax.Array, group: int, num_groups: int) -> jax.Array:
    """Rows of group `group` when the batch axis of `array` holds `num_groups` equal groups."""
    return array.reshape((num_groups, -1) + array.shape[1:])[group]


class TaskHeads(nn.Module):
    """One head per task, each a submodule named after its task.

    `head_groups` (task name -> group index): the batch is `1 + max(index)` equal groups and each
    listed task's head sees only its group; tasks not listed get no prediction. None: every head
    predicts for the whole batch."""

    tasks: Sequence[TaskSpec]
    dense_width: int
    image_width: int

    @nn.compact
    def __call__(self, features, pooled, head_groups: Mapping[str, int] | None = None):
        outputs = {}
        for t in self.tasks:
            head = (DenseHead(self.dense_width, t.outputs, name=t.name) if t.dense
                    else ImageHead(self.image_width, t.outputs, name=t.name))
            inputs = features if t.dense else pooled
            if head_groups is None:
                outputs[t.name] = head(inputs)
            elif t.name in head_groups:
                outputs[t.name] = head(group_of(inputs, head_groups[t.name], 1 + max(head_groups.values())))
        return outputs


class MultiTaskNet(nn.Module):
    """Shared encoder-decoder with `len(widths)` resolution stages and `blocks` residual blocks each."""

    tasks: Sequence[TaskSpec]
    widths: Sequence[int] = (16, 32, 64)
    blocks: int = 1

    @nn.compact
    def __call__(self, images: jax.Array, head_groups: Mapping[str, int] | None = None) -> dict[str, jax.Array]:
        x = nn.relu(nn.Conv(self.widths[0], (3, 3))(images))
        skips = []
        for stage, width in enumerate(self.widths):
            for block in range(self.blocks):
                x = ResidualBlock(width, strides=2 if stage > 0 and block == 0 else 1)(x)
            skips.append(x)
        # Image-level heads see every encoder stage mean-pooled, so fine-scale statistics (texture)
        # survive, and the bottleneck max-pooled, so a small object anywhere counts.
        pooled = jnp.concatenate([skip.mean(axis=(1, 2)) for skip in skips] + [x.max(axis=(1, 2))], axis=-1)
        for width, skip in zip(reversed(self.widths[:-1]), reversed(skips[:-1])):
            x = jax.image.resize(x, (x.shape[0], skip.shape[1], skip.shape[2], x.shape[3]), "nearest")
            x = ResidualBlock(width)(jnp.concatenate([x, skip], axis=-1))
        x = jnp.concatenate([x, images], axis=-1)  # dense heads also see each pixel's own colour
        return TaskHeads(tuple(self.tasks), self.widths[0], self.widths[-1], name=HEADS)(x, pooled, head_groups)


def build_model(tasks: Sequence[TaskSpec], config) -> MultiTaskNet:
    """The model a TrainConfig describes, with a head for each of `tasks`."""
    return MultiTaskNet(tuple(tasks), widths=tuple(config.widths), blocks=config.blocks)


def shared_parameters(params) -> dict:
    """Pytree of bools like `params`: True for the shared backbone, False inside `heads`."""
    def is_shared(path, _):
        return not any(getattr(k, "key", None) == HEADS for k in path)
    return jax.tree_util.tree_map_with_path(is_shared, params)
