"""Hard parameter sharing: a ResNet-style encoder-decoder shared by all tasks, one head per task.

`model.apply(params, images) -> {task: prediction}`; dense heads predict at input resolution from
the decoder output and the input pixels, image-level heads from the pooled encoder features (every
stage's mean and the bottleneck's max). GroupNorm keeps the model free
of batch statistics, so per-task batches and any device count give the same function. With
`head_groups` each head predicts only for its task's group of the batch (per-task batching), so no
head computes outputs that no loss reads.
"""
from __future__ import annotations

import functools
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


def grouped_tasks(tasks: Sequence[TaskSpec], head_groups: Mapping[str, int] | None):
    """(task, rows of the batch it predicts for) for each task that predicts: with `head_groups`
    (task name -> group index; the batch is `1 + max(index)` equal groups) the listed tasks, each
    with `lambda a: a's rows of its group`; without, every task with the whole batch."""
    if head_groups is None:
        return [(t, lambda a: a) for t in tasks]
    count = 1 + max(head_groups.values())
    return [(t, functools.partial(group_of, group=head_groups[t.name], num_groups=count))
            for t in tasks if t.name in head_groups]


class TaskHeads(nn.Module):
    """One head per task, each a submodule named after its task. `features` and `pooled` are arrays
    every head sees, or mappings {task: array} when each task has features of its own (AdaShare).
    `head_groups`: see `grouped_tasks` (None: every head predicts for the whole batch)."""

    tasks: Sequence[TaskSpec]
    dense_width: int
    image_width: int

    @nn.compact
    def __call__(self, features, pooled, head_groups: Mapping[str, int] | None = None):
        def own(value, task):
            return value[task.name] if isinstance(value, Mapping) else value

        return {t.name: DenseHead(self.dense_width, t.outputs, name=t.name)(rows(own(features, t))) if t.dense
                else ImageHead(self.image_width, t.outputs, name=t.name)(rows(own(pooled, t)))
                for t, rows in grouped_tasks(self.tasks, head_groups)}


def shared_trunk(images: jax.Array, widths: Sequence[int], blocks: int):
    """The shared encoder-decoder, built in the calling module's scope (call it inside an
    `nn.compact` method). Returns the dense features at input resolution (decoder output and input
    pixels), the pooled features of the image-level heads, and the output of every encoder stage and
    every decoder stage, in order."""
    x = nn.relu(nn.Conv(widths[0], (3, 3))(images))
    skips = []
    for stage, width in enumerate(widths):
        for block in range(blocks):
            x = ResidualBlock(width, strides=2 if stage > 0 and block == 0 else 1)(x)
        skips.append(x)
    pooled = pool_stages(skips)
    decoded = []
    for width, skip in zip(reversed(widths[:-1]), reversed(skips[:-1])):
        x = upsample_to(x, skip)
        x = ResidualBlock(width)(jnp.concatenate([x, skip], axis=-1))
        decoded.append(x)
    x = jnp.concatenate([x, images], axis=-1)  # dense heads also see each pixel's own colour
    return x, pooled, skips, decoded


def pool_stages(stages: Sequence[jax.Array]) -> jax.Array:
    """Image-level heads see every encoder stage mean-pooled, so fine-scale statistics (texture)
    survive, and the bottleneck max-pooled, so a small object anywhere counts."""
    return jnp.concatenate([s.mean(axis=(1, 2)) for s in stages] + [stages[-1].max(axis=(1, 2))], axis=-1)


def upsample_to(x: jax.Array, like: jax.Array) -> jax.Array:
    """`x` brought to the spatial size of `like` (nearest neighbour)."""
    return jax.image.resize(x, (x.shape[0], like.shape[1], like.shape[2], x.shape[3]), "nearest")


class EncoderDecoderFields(nn.Module):
    """The fields every architecture shares: its tasks and the encoder-decoder's shape
    (`len(widths)` resolution stages, `blocks` residual blocks each)."""

    tasks: Sequence[TaskSpec]
    widths: Sequence[int] = (16, 32, 64)
    blocks: int = 1


class MultiTaskNet(EncoderDecoderFields):
    """Shared encoder-decoder with one head per task under `heads`."""

    @nn.compact
    def __call__(self, images: jax.Array, head_groups: Mapping[str, int] | None = None) -> dict[str, jax.Array]:
        features, pooled, _, _ = shared_trunk(images, self.widths, self.blocks)
        return TaskHeads(tuple(self.tasks), self.widths[0], self.widths[-1], name=HEADS)(features, pooled, head_groups)
