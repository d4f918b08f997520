"""AdaShare (Sun, Panda, Feris and Saenko, NeurIPS 2020): one encoder-decoder whose residual blocks
each task either runs (select) or skips, by a policy learned per task.

`AdaShareNet` is hard sharing's encoder-decoder with select-or-skip blocks: a skipped block passes
its input through its shortcut (identity, or the 1x1 projection where the shape changes, as in the
paper's code), a selected one computes `relu(body(x) + shortcut(x))`; a soft gate g in [0, 1] mixes
the two, `g * selected + (1 - g) * skipped`. Every task runs its own path through the shared blocks.
With `gates` (T, L) the paths follow them (the policy-learning phase); without, they follow the
module's fixed `policy` (re-training and inference), where a skipped block is not computed at all
and a block no task selects has no parameters.

`PolicyLearning` is the policy phase: logits (T, L, 2) for (select, skip) per task and block,
Gumbel-softmax samples whose temperature anneals exponentially, a sparsity regulariser (mean log
select-probability: pushes blocks towards skipping) and a sharing regulariser (mean |difference|
of select-probabilities between tasks, weighted (L - l) / L so lower blocks are pushed hardest to
be shared), and the paper's curriculum: after an all-select warm-up only the last block's policy is
learned, then one more block at a time from the top until all are. The policy has its own Adam; the
trainer (taba_jax.train) runs this phase, fixes each task's argmax policy and re-trains the
network from scratch on it.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from taba_jax.models.hard_sharing import HEADS, EncoderDecoderFields, TaskHeads, pool_stages, upsample_to

SELECT, SKIP = 0, 1  # the two choices of a block, in the logits' last axis


def num_blocks(widths: Sequence[int], blocks: int) -> int:
    """Residual blocks of the encoder-decoder, the policy's length: `blocks` per encoder stage and
    one per decoder stage."""
    return len(widths) * blocks + len(widths) - 1


class SelectOrSkipBlock(nn.Module):
    """A residual block that a gate selects (True), skips (False) or mixes (an array in [0, 1])."""

    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x, gate):
        shortcut = x
        if x.shape[-1] != self.features or self.strides != 1:
            shortcut = nn.Conv(self.features, (1, 1), self.strides, use_bias=False, name="shortcut")(x)
        if gate is False:
            return shortcut
        y = nn.Conv(self.features, (3, 3), self.strides, use_bias=False)(x)
        y = nn.relu(nn.GroupNorm(num_groups=min(8, self.features))(y))
        y = nn.GroupNorm(num_groups=min(8, self.features))(nn.Conv(self.features, (3, 3), use_bias=False)(y))
        selected = nn.relu(y + shortcut)
        return selected if gate is True else gate * selected + (1 - gate) * shortcut


class SelectOrSkipBackbone(nn.Module):
    """Hard sharing's encoder-decoder, every residual block a SelectOrSkipBlock."""

    widths: Sequence[int]
    blocks: int

    @nn.compact
    def __call__(self, images, gates: Sequence):
        """`gates`: one per block (bool or scalar array). Returns (dense features, pooled features)."""
        gates = iter(gates)
        x = nn.relu(nn.Conv(self.widths[0], (3, 3))(images))
        skips = []
        for stage, width in enumerate(self.widths):
            for block in range(self.blocks):
                x = SelectOrSkipBlock(width, strides=2 if stage > 0 and block == 0 else 1)(x, next(gates))
            skips.append(x)
        pooled = pool_stages(skips)
        for width, skip in zip(reversed(self.widths[:-1]), reversed(skips[:-1])):
            x = SelectOrSkipBlock(width)(jnp.concatenate([upsample_to(x, skip), skip], axis=-1), next(gates))
        return jnp.concatenate([x, images], axis=-1), pooled


class AdaShareNet(EncoderDecoderFields):
    """Select-or-skip encoder-decoder (`backbone`, shared) with one head per task under `heads`."""
    policy: tuple[tuple[bool, ...], ...] | None = None  # per task (model order), per block: selected

    @property
    def num_blocks(self) -> int:
        return num_blocks(self.widths, self.blocks)

    def task_policy(self, task: str) -> tuple[bool, ...]:
        """The fixed select (True) / skip of each block on `task`'s path."""
        if self.policy is None:
            return (True,) * self.num_blocks
        return self.policy[[t.name for t in self.tasks].index(task)]

    @nn.compact
    def __call__(self, images: jax.Array, gates: jax.Array | None = None, tasks: Sequence[str] | None = None,
                 images_per_task: bool = False) -> dict[str, jax.Array]:
        """{task: prediction} for `tasks` (default: all), each on its own path.

        `images` (N, H, W, C) go through every task's path, or with `images_per_task` (len(tasks),
        N, H, W, C) row k through task k's path only. `gates` (len(tasks), L) in [0, 1]: the paths'
        soft gates; None: the fixed `policy`.
        """
        names = [t.name for t in self.tasks] if tasks is None else list(tasks)
        backbone = SelectOrSkipBackbone(tuple(self.widths), self.blocks, name="backbone")
        features, pooled = {}, {}
        for row, name in enumerate(names):
            path = self.task_policy(name) if gates is None else [gates[row, block] for block in range(self.num_blocks)]
            features[name], pooled[name] = backbone(images[row] if images_per_task else images, path)
        heads = tuple(next(t for t in self.tasks if t.name == name) for name in names)
        return TaskHeads(heads, self.widths[0], self.widths[-1], name=HEADS)(features, pooled)


class PolicyState(flax.struct.PyTreeNode):
    """The policy phase's learned part (in the TrainState, checkpointed with it)."""

    logits: jax.Array  # (T, L, 2): (select, skip) per trained task and block
    opt_state: optax.OptState
    key: jax.Array  # Gumbel noise stream, folded with the step


@dataclasses.dataclass(frozen=True)
class PolicyLearning:
    """AdaShare's policy-learning phase (hashable: part of a StepDefinition)."""

    num_blocks: int
    steps: int  # length of the phase
    warmup_steps: int  # all blocks selected, nothing learned
    curriculum_fraction: float  # of the steps after warm-up over which learned blocks grow to all
    initial_temperature: float
    final_temperature: float
    sparsity_weight: float
    sharing_weight: float
    learning_rate: float  # the policy's Adam

    @classmethod
    def from_config(cls, config, num_blocks: int) -> "PolicyLearning":
        """The phase a TrainConfig's `adashare_*` fields describe."""
        return cls(num_blocks, config.adashare_policy_steps, config.adashare_warmup_steps,
                   config.adashare_curriculum_fraction, config.adashare_initial_temperature,
                   config.adashare_final_temperature, config.adashare_sparsity_weight,
                   config.adashare_sharing_weight, config.adashare_policy_learning_rate)

    def optimizer(self) -> optax.GradientTransformation:
        return optax.adam(self.learning_rate)

    def init(self, num_tasks: int, key: jax.Array) -> PolicyState:
        """Even odds of select and skip everywhere, as in the paper."""
        logits = jnp.zeros((num_tasks, self.num_blocks, 2), jnp.float32)
        return PolicyState(logits=logits, opt_state=self.optimizer().init(logits), key=key)

    def temperature(self, step: jax.Array) -> jax.Array:
        """Exponential annealing from the initial to the final temperature over the phase."""
        progress = jnp.clip(step.astype(jnp.float32) / max(self.steps - 1, 1), 0.0, 1.0)
        return self.initial_temperature * (self.final_temperature / self.initial_temperature) ** progress

    def learned_blocks(self, step: jax.Array) -> jax.Array:
        """(L,) bool: the blocks whose policy is learned at `step` (the curriculum: the last ones)."""
        after_warmup = step.astype(jnp.float32) - self.warmup_steps
        span = max(self.curriculum_fraction * (self.steps - self.warmup_steps), 1.0)
        count = jnp.where(after_warmup < 0, 0,
                          jnp.minimum(self.num_blocks, 1 + jnp.floor(after_warmup * self.num_blocks / span)))
        return jnp.arange(self.num_blocks) >= self.num_blocks - count

    def gates(self, logits: jax.Array, step: jax.Array, key: jax.Array) -> jax.Array:
        """(T, L) soft select gates: Gumbel-softmax samples on the learned blocks, 1 elsewhere."""
        noise = jax.random.gumbel(key, logits.shape, logits.dtype)
        sample = jax.nn.softmax((logits + noise) / self.temperature(step), axis=-1)[..., SELECT]
        return jnp.where(self.learned_blocks(step), sample, 1.0)

    def regularisers(self, logits: jax.Array, step: jax.Array) -> dict[str, jax.Array]:
        """Weighted sparsity and sharing terms over the learned blocks (0 before any is learned)."""
        learned = self.learned_blocks(step)
        select = jax.nn.softmax(logits, axis=-1)[..., SELECT]  # (T, L)
        blocks = jnp.maximum(jnp.sum(learned), 1)
        sparsity = jnp.sum(jnp.where(learned, jnp.log(select), 0.0)) / (blocks * logits.shape[0])
        depth = (self.num_blocks - jnp.arange(self.num_blocks)) / self.num_blocks  # lower blocks weigh more
        differences = jnp.abs(select[:, None, :] - select[None, :, :])  # (T, T, L), each pair twice
        pairs = max(logits.shape[0] * (logits.shape[0] - 1), 1)
        sharing = jnp.sum(jnp.where(learned, depth * differences, 0.0)) / (blocks * pairs)
        return {"sparsity": self.sparsity_weight * sparsity, "sharing": self.sharing_weight * sharing}

    def update(self, state: PolicyState, grads: jax.Array, step: jax.Array) -> PolicyState:
        """One Adam step on the learned blocks' logits; the others stay as they are."""
        grads = jnp.where(self.learned_blocks(step)[:, None], grads, 0.0)
        updates, opt_state = self.optimizer().update(grads, state.opt_state, state.logits)
        return state.replace(logits=optax.apply_updates(state.logits, updates), opt_state=opt_state)


def discrete_policy(logits) -> tuple[tuple[bool, ...], ...]:
    """Each task's argmax policy: True where a block is selected (ties select)."""
    logits = np.asarray(logits)
    return tuple(tuple(bool(b) for b in row) for row in logits[..., SELECT] >= logits[..., SKIP])
