"""MTAN (Liu, Johns and Davison, CVPR 2019): the shared encoder-decoder of hard sharing, plus per
task a chain of soft-attention modules over the shared features of every stage.

At stage j a task's attention module computes a mask in [0, 1] from the shared stage output and
the task's attended features of the stage before (brought to this stage's width and resolution by
a 3x3 conv and a 2x max-pool or nearest upsampling), `mask = sigmoid(norm(conv1x1(relu(norm(
conv1x1([shared_j, previous]))))))`, and the task's features are `mask * shared_j`. Dense tasks
chain through the encoder and decoder stages and predict from the last, with the input pixels;
image-level tasks chain through the encoder stages and pool them as hard sharing does.

Every attention module belongs to its task: it lives with the task's head under `heads/<task>`,
so `shared_parameters` (TABA's affinity, gradient-surgery methods) is the encoder-decoder alone.
The masks are sown to the `intermediates` collection (`mutable=["intermediates"]`), one per stage.
GroupNorm replaces the paper's BatchNorm, as everywhere in this package.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from taba_jax.models.hard_sharing import (HEADS, DenseHead, EncoderDecoderFields, ImageHead, grouped_tasks,
                                          pool_stages, shared_trunk, upsample_to)
from taba_jax.tasks import TaskSpec


class AttentionModule(nn.Module):
    """One stage's soft attention: `mask * shared`, the mask computed from `shared` and `previous`."""

    features: int

    @nn.compact
    def __call__(self, shared: jax.Array, previous: jax.Array | None) -> jax.Array:
        x = shared if previous is None else jnp.concatenate([shared, previous], axis=-1)
        x = nn.relu(nn.GroupNorm(num_groups=min(8, self.features))(nn.Conv(self.features, (1, 1))(x)))
        mask = nn.sigmoid(nn.GroupNorm(num_groups=min(8, self.features))(nn.Conv(self.features, (1, 1))(x)))
        self.sow("intermediates", "mask", mask)
        return mask * shared


class StageTransition(nn.Module):
    """The attended features of one stage, brought to the next stage's width and resolution."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array, like: jax.Array) -> jax.Array:
        x = nn.relu(nn.GroupNorm(num_groups=min(8, self.features))(
            nn.Conv(self.features, (3, 3), use_bias=False)(x)))
        if x.shape[1] > like.shape[1]:
            return nn.max_pool(x, (2, 2), (2, 2), padding="SAME")
        return upsample_to(x, like) if x.shape[1] < like.shape[1] else x


class TaskAttentionBranch(nn.Module):
    """One task's attention chain over the shared stages, then its head."""

    task: TaskSpec
    dense_width: int
    image_width: int

    @nn.compact
    def __call__(self, images, encoder_stages, decoder_stages):
        stages = list(encoder_stages) + (list(decoder_stages) if self.task.dense else [])
        attended = []
        for shared in stages:
            previous = StageTransition(shared.shape[-1])(attended[-1], shared) if attended else None
            attended.append(AttentionModule(shared.shape[-1])(shared, previous))
        if self.task.dense:
            return DenseHead(self.dense_width, self.task.outputs)(jnp.concatenate([attended[-1], images], axis=-1))
        return ImageHead(self.image_width, self.task.outputs)(pool_stages(attended[:len(encoder_stages)]))


class MTAN(EncoderDecoderFields):
    """Shared encoder-decoder (as MultiTaskNet) with a soft-attention branch per task under `heads`."""

    @nn.compact
    def __call__(self, images: jax.Array, head_groups: Mapping[str, int] | None = None) -> dict[str, jax.Array]:
        """{task: prediction}; with `head_groups` a task's branch runs on its group of the batch only
        (see hard_sharing.grouped_tasks)."""
        _, _, encoder_stages, decoder_stages = shared_trunk(images, self.widths, self.blocks)
        return MTANHeads(tuple(self.tasks), self.widths[0], self.widths[-1], name=HEADS)(
            images, encoder_stages, decoder_stages, head_groups)


class MTANHeads(nn.Module):
    """Every task's attention branch, each a submodule named after its task."""

    tasks: Sequence[TaskSpec]
    dense_width: int
    image_width: int

    @nn.compact
    def __call__(self, images, encoder_stages, decoder_stages, head_groups: Mapping[str, int] | None = None):
        return {t.name: TaskAttentionBranch(t, self.dense_width, self.image_width, name=t.name)(
            rows(images), [rows(s) for s in encoder_stages], [rows(s) for s in decoder_stages])
            for t, rows in grouped_tasks(self.tasks, head_groups)}
