"""Named random streams derived from one seed, so that no two uses of randomness can coincide.

Every consumer names its stream; a stream's integer tag is fixed in `STREAMS` (never reorder,
only append) and the stream's generator is the child `spawn_key=(tag, *path)` of the seed's
`np.random.SeedSequence`, exactly what `SeedSequence.spawn` would derive. JAX keys fold the same
tag into `jax.random.key(seed)`. Each stream is always used with the same number of path integers.
"""
from __future__ import annotations

import jax
import numpy as np

STREAMS = {
    "split": 0,             # train / validation / test split of a dataset
    "heuristic": 1,         # image choice of the heuristic strategies
    "greedy_assign": 2,     # TABA: which images of a pattern group get the bought labels
    "pilot": 3,             # TABA: the fully labeled pilot images
    "pilot_subsets": 4,     # TABA: order of the nested pilot subsets
    "affinity_batch": 5,    # TABA: the pilot batch of each lookahead measurement (path: step)
    "batches": 6,           # training batch indices (path: step)
    "init": 7,              # model initialisation (JAX key)
    "scenes": 8,            # the synthetic scene generator
    "weighting": 9,         # multi-task weighting methods (JAX key; path: step)
    "adashare_policy": 10,  # AdaShare's Gumbel-softmax policy samples (JAX key, folded with the step)
    "round_subsets": 11,    # TABA in rounds: order of a round's nested per-task subsets (path: task)
    "top_up": 12,           # TABA's floor for flat tasks: which images get the added labels
    "probe_repeat": 13,     # TABA's transfer probe: the training seed of each repeat after the first (path: repeat)
}


def _tag(stream: str) -> int:
    if stream not in STREAMS:
        raise KeyError(f"unknown random stream {stream!r}; known: {sorted(STREAMS)}")
    return STREAMS[stream]


def seed_sequence(seed: int, stream: str, *path: int) -> np.random.SeedSequence:
    """The SeedSequence of `stream` (and `path`, e.g. a step number) under `seed`."""
    return np.random.SeedSequence(int(seed), spawn_key=(_tag(stream), *(int(p) for p in path)))


def numpy_rng(seed: int, stream: str, *path: int) -> np.random.Generator:
    """A NumPy generator for `stream` under `seed`."""
    return np.random.default_rng(seed_sequence(seed, stream, *path))


def jax_key(seed: int, stream: str) -> jax.Array:
    """A JAX key for `stream` under `seed` (fold in a step with `jax.random.fold_in`)."""
    return jax.random.fold_in(jax.random.key(int(seed)), _tag(stream))
