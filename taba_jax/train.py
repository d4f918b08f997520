"""Training on partially labeled data with one pure, jitted, data-parallel step.

Each task has its own labeled subset of the train split. Default step (`batching="per_task"`): one
batch per task from that task's labeled images, one forward pass of the shared model over all task
batches stacked, the weighted sum of each task's loss on its own batch. `batching="joint"`: one
batch from the images with any label, per-task label masks. Tasks without labels are not trained
and reported as such.

The state is a pytree (`TrainState`: step, params, optimizer state, the run's schedule values, a
divergence marker) and `train_step(definition, state, data, indices) -> (state, metrics)` is jitted
once per `StepDefinition` (model, trained tasks, weights, batching): runs that differ only in
learning rate, steps or data share one compilation. The in-memory train split lives on the devices
and each step gathers its batch there from indices that are a pure function of (seed, step), so a
resumed run continues the same data order and nothing waits on the host. A train split that is not
in memory (a `RandomAccessSplit` such as a TFDS data source) is streamed: grain worker processes read
and decode the same indices' images ahead of the step (`taba_jax.data.streaming`), and each process
reads only the columns of the global batch its own devices hold. Batches are sharded along
the `data` axis of a `jax.make_mesh` mesh, parameters replicated: the same code runs on one device
or many, and across hosts after `jax.distributed.initialize()`.

The loop checks finiteness on the device; the host reads it back only at log and checkpoint steps,
so a non-finite loss stops the run there, before anything after it is checkpointed. Checkpointing,
scalar writing and the progress bar are hooks around the loop.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any, Mapping, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import tqdm
from jax.sharding import NamedSharding, PartitionSpec as P

from taba_jax import io_utils, rng
from taba_jax.config import TrainConfig
from taba_jax.data import streaming
from taba_jax.data.dataset import MultiTaskDataset, RandomAccessSplit, Split
from taba_jax.errors import TrainingDivergedError
from taba_jax.models import AdaShareNet, build_model, parameter_counts, shared_parameters
from taba_jax.models.adashare import SELECT, PolicyLearning, discrete_policy
from taba_jax.tasks import TaskSpec

DEVICE_DATA_LIMIT_BYTES = 2 << 30  # train splits up to this size are put on the devices once
POLICY_DIRECTORY = "policy_learning"  # AdaShare's policy phase: its checkpoints, metrics.jsonl and policy.json
POLICY_FILE = "policy.json"


# ----------------------------------------------------------------------------------------------
# State and the pure step
# ----------------------------------------------------------------------------------------------

class TrainState(flax.struct.PyTreeNode):
    """Everything a step reads and writes; checkpointed whole."""

    step: jax.Array  # int32: steps done
    params: Any
    opt_state: Any
    peak_learning_rate: jax.Array
    warmup_steps: jax.Array
    total_steps: jax.Array
    nonfinite_step: jax.Array  # int32: first step whose loss or gradient was not finite, -1 if none
    weighting_state: Any = None  # the multi-task weighting method's state (taba_jax.mtl.weighting)
    weighting_key: Any = None  # its random stream (PCGrad's task order), folded with the step
    policy: Any = None  # AdaShare's policy phase (taba_jax.models.adashare.PolicyState)


@dataclasses.dataclass(frozen=True)
class StepDefinition:
    """The static part of a step (hashable: equal definitions share one compilation)."""

    model: Any  # a flax linen module mapping images to {task: prediction}
    tasks: tuple[TaskSpec, ...]  # the trained tasks, in batch-group order
    weights: tuple[float, ...]  # loss weight per trained task (the plain weighted sum)
    batching: str
    weighting: Any = None  # a taba_jax.mtl.weighting method instead of the plain weighted sum
    policy_learning: Any = None  # AdaShare's policy phase (adashare.PolicyLearning): gates sampled every step


def _optimizer() -> optax.GradientTransformation:
    """AdamW whose learning rate and weight decay live in its state (set per run and per step)."""
    return optax.inject_hyperparams(optax.adamw)(learning_rate=0.0, weight_decay=0.0)


def learning_rate(state: TrainState) -> jax.Array:
    """Linear warm-up to the peak, then cosine decay to 0 at `total_steps`."""
    step = state.step.astype(jnp.float32)
    warmup = jnp.maximum(state.warmup_steps, 1.0)
    decay = jnp.maximum(state.total_steps - warmup, 1.0)
    cosine = 0.5 * (1 + jnp.cos(jnp.pi * jnp.clip((step - warmup) / decay, 0.0, 1.0)))
    return state.peak_learning_rate * jnp.where(step < warmup, step / warmup, cosine)


def init_state(definition: StepDefinition, key: jax.Array, image_shape: tuple[int, ...],
               config: TrainConfig, policy_key: jax.Array | None = None) -> TrainState:
    """Fresh parameters and optimizer state for a run of `config` (pure; jit it or eval_shape it).
    `policy_key`: the Gumbel noise stream of AdaShare's policy phase (needed with `policy_learning`)."""
    return _init_state(definition, key, tuple(image_shape), run_values(config, policy_key))


def run_values(config: TrainConfig, policy_key: jax.Array | None = None) -> dict:
    """The numbers of a run that live in its state as values, so that runs differing only in them
    share one compiled init and step."""
    values = {"weight_decay": np.float32(config.weight_decay), "peak_learning_rate": np.float32(config.learning_rate),
              "warmup_steps": np.float32(config.warmup_steps),
              "total_steps": np.float32(max(config.num_steps, config.warmup_steps + 1))}
    return values if policy_key is None else {**values, "policy_key": policy_key}


def _init_state(definition: StepDefinition, key: jax.Array, image_shape: tuple[int, ...], values) -> TrainState:
    params = definition.model.init(key, jnp.zeros((1,) + image_shape, jnp.float32))
    opt_state = _optimizer().init(params)
    opt_state.hyperparams["weight_decay"] = jnp.asarray(values["weight_decay"], jnp.float32)
    method, learning = definition.weighting, definition.policy_learning
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
                      peak_learning_rate=values["peak_learning_rate"], warmup_steps=values["warmup_steps"],
                      total_steps=values["total_steps"], nonfinite_step=jnp.full((), -1, jnp.int32),
                      weighting_state=None if method is None else method.init(len(definition.tasks)),
                      weighting_key=None if method is None else jax.random.fold_in(key, 1),
                      policy=None if learning is None else learning.init(len(definition.tasks), values["policy_key"]))


@functools.lru_cache(maxsize=None)
def _compiled_init(sharding: NamedSharding):
    """`_init_state` jitted once per output sharding (and compiled once per definition and shape)."""
    return jax.jit(_init_state, static_argnums=(0, 2), out_shardings=sharding)


def task_losses(definition: StepDefinition, params, batch, gates: jax.Array | None = None) -> dict[str, jax.Array]:
    """Loss of each trained task on its part of `batch` (see `gather_batch`). `gates` (T, L): the
    AdaShare paths' soft gates in the policy phase (None: the model's fixed policy)."""
    images = batch["images"]
    if isinstance(definition.model, AdaShareNet):
        # Each task's batch goes through the task's own path (the joint batch through every path).
        names = [t.name for t in definition.tasks]
        if definition.batching == "joint":
            images = jnp.broadcast_to(images[0], (len(names),) + images.shape[1:])
        predictions = definition.model.apply(params, images, gates=gates, tasks=names, images_per_task=True)
        return {t.name: t.loss(predictions[t.name], batch["targets"][t.name], batch["masks"].get(t.name))
                for t in definition.tasks}
    groups, size = images.shape[:2]
    head_groups = {t.name: 0 if definition.batching == "joint" else g for g, t in enumerate(definition.tasks)}
    predictions = definition.model.apply(params, images.reshape((groups * size,) + images.shape[2:]), head_groups)
    return {t.name: t.loss(predictions[t.name], batch["targets"][t.name], batch["masks"].get(t.name))
            for t in definition.tasks}


def apply_gradients(state: TrainState, grads, loss: jax.Array, weighting_state=None, policy=None) -> TrainState:
    """One AdamW update (and the weighting method's or AdaShare policy's new state); a non-finite
    loss or gradient leaves the state as it was and marks the step, and once marked, the state stays
    frozen (the loop stops at its next check)."""
    opt_state = state.opt_state._replace(
        hyperparams={**state.opt_state.hyperparams, "learning_rate": learning_rate(state)})
    updates, opt_state = _optimizer().update(grads, opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(loss) & jnp.all(jnp.stack([jnp.isfinite(g).all() for g in jax.tree.leaves(grads)]))
    ok = finite & (state.nonfinite_step < 0)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
    return state.replace(step=state.step + 1, params=keep(params, state.params),
                         opt_state=keep(opt_state, state.opt_state),
                         weighting_state=keep(weighting_state, state.weighting_state),
                         policy=keep(policy, state.policy),
                         nonfinite_step=jnp.where(ok | (state.nonfinite_step >= 0), state.nonfinite_step,
                                                  state.step + 1))


def gather_batch(definition: StepDefinition, data, indices: jax.Array) -> dict:
    """The step's batch from the device-resident split: `indices` (G, B) into it, one row per
    trained task (per_task) or a single row (joint)."""
    images = data["images"][indices]
    if definition.batching == "joint":
        rows = indices[0]
        targets = {t.name: data["targets"][t.name][rows] for t in definition.tasks}
        masks = {t.name: data["labeled"][rows, g].astype(jnp.float32) for g, t in enumerate(definition.tasks)}
    else:
        targets = {t.name: data["targets"][t.name][indices[g]] for g, t in enumerate(definition.tasks)}
        masks = {}
    return {"images": images, "targets": targets, "masks": masks}


def _step_on_batch(definition: StepDefinition, state: TrainState, batch) -> tuple[TrainState, dict]:
    if definition.policy_learning is not None:
        return _policy_step(definition, state, batch)
    if definition.weighting is not None:
        return _weighted_step(definition, state, batch)

    def total_loss(params):
        losses = task_losses(definition, params, batch)
        return sum(w * losses[t.name] for t, w in zip(definition.tasks, definition.weights)), losses

    (loss, losses), grads = jax.value_and_grad(total_loss, has_aux=True)(state.params)
    metrics = {"loss": loss, "learning_rate": learning_rate(state), **{f"loss/{k}": v for k, v in losses.items()}}
    return apply_gradients(state, grads, loss), metrics


def _weighted_step(definition: StepDefinition, state: TrainState, batch) -> tuple[TrainState, dict]:
    """A step whose gradient a multi-task method combines from the per-task losses or gradients
    (taba_jax.mtl.weighting); a task without a labeled example in the batch is absent."""
    from taba_jax.mtl import weighting

    names = [t.name for t in definition.tasks]

    def loss_vector(params, batch):
        losses = task_losses(definition, params, batch)
        return jnp.stack([losses[n] for n in names])

    if definition.batching == "joint":
        present = jnp.stack([batch["masks"][n].sum() > 0 for n in names])
    else:
        present = jnp.ones(len(names), bool)
    key = jax.random.fold_in(state.weighting_key, state.step)
    grads, weighting_state, info = weighting.gradients(definition.weighting, state.weighting_state, loss_vector,
                                                       state.params, batch, present, shared_parameters(state.params),
                                                       key)
    metrics = {"loss": info["loss"], "learning_rate": learning_rate(state),
               **{f"loss/{n}": info["losses"][i] for i, n in enumerate(names)},
               **{f"weight/{n}": info["weights"][i] for i, n in enumerate(names)}}
    return apply_gradients(state, grads, info["loss"], weighting_state), metrics


def _policy_step(definition: StepDefinition, state: TrainState, batch) -> tuple[TrainState, dict]:
    """AdaShare's policy phase: the network and the policy logits descend the weighted task losses
    on one Gumbel-softmax sample of every task's gates (temperature and learned blocks set by the
    step, noise by the policy stream folded with the step) plus the sparsity and sharing terms."""
    learning = definition.policy_learning
    key = jax.random.fold_in(state.policy.key, state.step)

    def objective(params, logits):
        losses = task_losses(definition, params, batch, learning.gates(logits, state.step, key))
        task_loss = sum(w * losses[t.name] for t, w in zip(definition.tasks, definition.weights))
        penalties = learning.regularisers(logits, state.step)
        return task_loss + penalties["sparsity"] + penalties["sharing"], (task_loss, losses, penalties)

    (_, (loss, losses, penalties)), (grads, logit_grads) = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)(
        state.params, state.policy.logits)
    policy = learning.update(state.policy, logit_grads, state.step)
    metrics = {"loss": loss, "learning_rate": learning_rate(state), "temperature": learning.temperature(state.step),
               **penalties, "select_probability": jax.nn.softmax(policy.logits)[..., SELECT].mean(),
               **{f"loss/{k}": v for k, v in losses.items()}}
    return apply_gradients(state, grads, loss, policy=policy), metrics


@functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
def train_step(definition: StepDefinition, state: TrainState, data, indices: jax.Array) -> tuple[TrainState, dict]:
    """One step on the batch at `indices` of the device-resident `data` (see `gather_batch`)."""
    return _step_on_batch(definition, state, gather_batch(definition, data, indices))


@functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
def train_step_on_batch(definition: StepDefinition, state: TrainState, batch) -> tuple[TrainState, dict]:
    """One step on a batch assembled on the host (datasets too large to keep on the devices)."""
    return _step_on_batch(definition, state, batch)


def sample_batch_indices(labeled: Mapping[str, np.ndarray], batch_size: int, seed: int, step: int,
                         batching: str) -> np.ndarray:
    """Indices into the train split for `step` (a pure function of seed and step): (T, B), row t
    from task t's labeled images (per_task), or (1, B) from the images with any label (joint).
    Without replacement unless a task has fewer labeled images than the batch."""
    generator = rng.numpy_rng(seed, "batches", step)
    pools = [np.unique(np.concatenate(list(labeled.values())))] if batching == "joint" else list(labeled.values())
    return np.stack([np.sort(generator.choice(pool, batch_size, replace=len(pool) < batch_size))
                     for pool in pools]).astype(np.int32)


# ----------------------------------------------------------------------------------------------
# Hooks around the loop
# ----------------------------------------------------------------------------------------------

class Hook:
    """Runs every `every` steps and at the last step. `reads_values`: it needs the step's metrics
    on the host (the loop then reads them back, and checks finiteness first)."""

    reads_values = True

    def __init__(self, every: int):
        self.every = every

    def due(self, step: int, last: int) -> bool:
        return step % self.every == 0 or step == last

    def __call__(self, step: int, state: TrainState, values: dict[str, float]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class CheckpointHook(Hook):
    """Saves the whole TrainState with orbax (asynchronously), keeping the last two."""

    def __init__(self, directory: str, every: int):
        super().__init__(every)
        self.manager = ocp.CheckpointManager(os.path.abspath(directory),
                                             options=ocp.CheckpointManagerOptions(max_to_keep=2))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, abstract_state: TrainState) -> TrainState:
        return self.manager.restore(self.latest_step(), args=ocp.args.StandardRestore(abstract_state))

    def __call__(self, step, state, values):
        self.manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()


class ScalarsHook(Hook):
    """Appends the step's scalars to `<workdir>/metrics.jsonl` (one whole line each) and TensorBoard,
    with the steps per second since the previous write."""

    def __init__(self, workdir: str, every: int, tensorboard: bool = True):
        super().__init__(every)
        self.path = os.path.join(workdir, "metrics.jsonl")
        io_utils.repair_jsonl(self.path)
        self.writer = None
        if tensorboard:
            from tensorboardX import SummaryWriter
            self.writer = SummaryWriter(os.path.join(workdir, "tensorboard"))
        self.last_time, self.last_step = time.perf_counter(), None

    def __call__(self, step, state, values):
        now = time.perf_counter()
        record = {"step": step, **values}
        if self.last_step is not None:
            record["steps_per_second"] = (step - self.last_step) / (now - self.last_time)
        self.last_time, self.last_step = now, step
        io_utils.append_jsonl(self.path, record)
        if self.writer is not None:
            for key, value in record.items():
                if key != "step":
                    self.writer.add_scalar(key, value, step)

    def close(self):
        if self.writer is not None:
            self.writer.close()


class ProgressHook(Hook):
    """A tqdm bar with rate and ETA; shows the loss whenever another hook has read it back."""

    reads_values = False

    def __init__(self, start: int, total: int, enabled: bool = True):
        super().__init__(1)
        self.bar = tqdm.tqdm(initial=start, total=total, disable=not enabled, unit="step")

    def __call__(self, step, state, values):
        self.bar.update(1)
        if "loss" in values:
            self.bar.set_postfix(loss=f"{values['loss']:.4f}", refresh=False)

    def close(self):
        self.bar.close()


class CallbackHook(Hook):
    """Calls `fn(step, state)` every `every` steps (e.g. TABA's affinity probe)."""

    reads_values = False

    def __init__(self, fn, every: int):
        super().__init__(every)
        self.fn = fn

    def due(self, step, last):
        return step % self.every == 0

    def __call__(self, step, state, values):
        self.fn(step, state)


# ----------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class TrainResult:
    params: Any
    trained_tasks: list[str]
    untrained_tasks: list[str]
    final_losses: dict[str, float]
    steps: int
    seconds: float


def data_mesh() -> jax.sharding.Mesh:
    """A 1-D mesh over every device; XLA propagates the batch sharding through the model."""
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def _global_array(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """`array` (identical on every process) laid out by `sharding`; each process supplies only the
    shards its devices hold."""
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def _from_process_columns(local: np.ndarray, columns: np.ndarray, batch_size: int, sharding: NamedSharding,
                          axis: int) -> jax.Array:
    """The global array whose batch `axis` (of `batch_size`) this process holds only at `columns`
    (sorted): `local` has those columns in that order, and each device's shard is cut from it."""
    shape = local.shape[:axis] + (batch_size,) + local.shape[axis + 1:]

    def shard(index):
        rows = np.arange(batch_size)[index[axis]]
        return local[index[:axis] + (np.searchsorted(columns, rows),) + index[axis + 1:]]

    return jax.make_array_from_callback(shape, sharding, shard)


class Trainer:
    """Trains a multi-task model on the labeled images of each task; checkpoints with orbax and resumes.

    `labeled` maps each task to the indices of its labeled images in the train split (tasks of the
    dataset that are missing or empty are not trained). `tasks` (names) picks the model's heads;
    default: the dataset's tasks.

    AdaShare (`config.model="adashare"`) trains in two phases, each resumable: the policy phase
    (`config.adashare_policy_steps`, in `<workdir>/policy_learning`, which ends by writing each
    task's argmax policy to policy.json there), then `config.num_steps` of re-training the network
    from scratch on that fixed policy, after which `self.model` and `self.policy` hold it. Step
    numbers (`until_step`, `TrainResult.steps`) count both phases.
    """

    def __init__(self, dataset: MultiTaskDataset, labeled: Mapping[str, np.ndarray], config: TrainConfig,
                 workdir: str, seed: int = 0, tasks: Sequence[str] | None = None):
        self.dataset, self.config, self.workdir, self.seed = dataset, config, workdir, seed
        self.all_tasks = dataset.task_specs(dataset.task_names if tasks is None else tasks)
        names = [t.name for t in self.all_tasks]
        unknown = sorted(set(labeled) - set(names))
        if unknown:
            raise ValueError(f"labeled images given for tasks {unknown} that the model has no head for ({names})")
        pool = len(dataset.train)
        self.labeled = {}
        for name in names:
            indices = np.unique(np.asarray(labeled.get(name, []), np.int64))
            if len(indices) and (indices[0] < 0 or indices[-1] >= pool):
                raise ValueError(f"labeled images of task {name!r} must index the train split of {pool} images")
            if len(indices):
                self.labeled[name] = indices
        self.tasks = [t for t in self.all_tasks if t.name in self.labeled]
        self.untrained = [t.name for t in self.all_tasks if t.name not in self.labeled]
        weights = config.weights_for(names)
        self.model = build_model(self.all_tasks, config)
        self.definition = StepDefinition(self.model, tuple(self.tasks), tuple(weights[t.name] for t in self.tasks),
                                         config.batching, config.weighting_method())
        self.mesh = data_mesh()
        if config.batch_size % jax.device_count():
            raise ValueError(f"config.train.batch_size={config.batch_size} must be divisible by the "
                             f"{jax.device_count()} devices")
        self.replicated = NamedSharding(self.mesh, P())
        self.index_sharding = NamedSharding(self.mesh, P(None, "data"))
        self.policy = None  # AdaShare: {task: selected per block} once the policy is learned

    # -- state --------------------------------------------------------------------------------

    def _run_values(self, definition: StepDefinition, config: TrainConfig) -> dict:
        policy_key = None if definition.policy_learning is None else rng.jax_key(self.seed, "adashare_policy")
        return run_values(config, policy_key)

    def init_state(self, definition: StepDefinition | None = None, config: TrainConfig | None = None) -> TrainState:
        """Fresh state (of this trainer's step definition and config, or the ones given) from the
        seed's `init` stream, replicated on the mesh."""
        definition, config = definition or self.definition, config or self.config
        image_shape = tuple(self.dataset.train.image_shape)
        return _compiled_init(self.replicated)(definition, rng.jax_key(self.seed, "init"), image_shape,
                                               self._run_values(definition, config))

    def abstract_state(self, definition: StepDefinition | None = None,
                       config: TrainConfig | None = None) -> TrainState:
        """Shapes, dtypes and shardings of the state, without computing it (restore target)."""
        definition, config = definition or self.definition, config or self.config
        image_shape = tuple(self.dataset.train.image_shape)
        shapes = jax.eval_shape(lambda key, values: _init_state(definition, key, image_shape, values),
                                rng.jax_key(self.seed, "init"), self._run_values(definition, config))
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self.replicated), shapes)

    # -- data ---------------------------------------------------------------------------------

    def _device_data(self, split: Split):
        """The train split and the label masks of the trained tasks, replicated on the devices."""
        labeled = np.zeros((len(split), max(len(self.tasks), 1)), bool)
        for g, task in enumerate(self.tasks):
            labeled[self.labeled[task.name], g] = True
        arrays = {"images": split.images, "targets": {t.name: split.targets[t.name] for t in self.tasks},
                  "labeled": labeled}
        return jax.tree.map(lambda a: _global_array(np.asarray(a), self.replicated), arrays)

    def indices(self, step: int) -> np.ndarray:
        return sample_batch_indices(self.labeled, self.config.batch_size, self.seed, step, self.config.batching)

    def batch_reader(self) -> streaming.StepBatchReader:
        """step -> this process's columns of the step's batch, read from the train split on the host."""
        indices_of_step = functools.partial(sample_batch_indices, self.labeled, self.config.batch_size, self.seed,
                                            batching=self.config.batching)
        groups = 1 if self.config.batching == "joint" else len(self.tasks)
        index_map = self.index_sharding.addressable_devices_indices_map((groups, self.config.batch_size))
        return streaming.StepBatchReader(self.dataset.train, tuple(t.name for t in self.tasks), self.labeled,
                                         self.config.batching, indices_of_step,
                                         streaming.process_columns(index_map, self.config.batch_size))

    def global_batch(self, local: dict, columns: np.ndarray) -> dict:
        """A host batch holding only `columns` of the global batch laid out on the mesh; each process
        gives the columns its devices hold."""
        shapes = {"images": (self.index_sharding, 1), "targets": (NamedSharding(self.mesh, P("data")), 0),
                  "masks": (NamedSharding(self.mesh, P("data")), 0)}
        return {key: jax.tree.map(lambda a: _from_process_columns(a, columns, self.config.batch_size, *shapes[key]),
                                  local[key]) for key in shapes}

    def streamed_batches(self, start: int, end: int):
        """The laid-out batches of steps start..end-1, read and decoded ahead by grain workers."""
        reader = self.batch_reader()
        batches = streaming.step_batches(reader, start, end, self.config.input_workers, self.config.prefetch_batches)
        for step in range(start, end):
            local = next(batches)
            got = int(local.pop("step"))
            if got != step:
                raise RuntimeError(f"input pipeline out of order: expected step {step}, got {got}")
            yield self.global_batch(local, reader.columns)
        batches.close()  # stops the workers; a run stopped early stops them when the generator is dropped

    def _step_function(self, definition: StepDefinition, start: int, end: int, step_offset: int = 0):
        """step(state, step_number) -> (state, metrics) for the steps start..end-1: on device-resident
        data when the split is in memory and fits, else on host batches (streamed through grain
        unless the split is in memory). The batch of a step is that of `step_offset + step_number`
        (AdaShare's re-training continues the data order of its policy phase)."""
        split = self.dataset.train
        if isinstance(split, Split) and split.nbytes <= DEVICE_DATA_LIMIT_BYTES:
            data = self._device_data(split)
            return lambda state, step: train_step(definition, state, data,
                                                  _global_array(self.indices(step_offset + step), self.index_sharding))
        if isinstance(split, Split):
            reader = self.batch_reader()
            return lambda state, step: train_step_on_batch(
                definition, state, self.global_batch(reader(step_offset + step), reader.columns))
        batches = self.streamed_batches(step_offset + start, step_offset + end)

        def streamed_step(state, step):
            result = train_step_on_batch(definition, state, next(batches))
            if step == end - 1:
                batches.close()
            return result
        return streamed_step

    # -- the loop -----------------------------------------------------------------------------

    def train(self, progress: bool = True, until_step: int | None = None, hooks: Sequence[Hook] = ()) -> TrainResult:
        """Trains from the latest checkpoint (if any) to `config.num_steps`, or stops after
        `until_step` (a pre-emption point; a later call resumes). `hooks` run beside the built-in
        checkpoint, scalar and progress hooks."""
        started = time.perf_counter()
        os.makedirs(self.workdir, exist_ok=True)
        if not self.tasks:
            return TrainResult(self.init_state().params, [], self.untrained, {}, 0, time.perf_counter() - started)
        policy_steps = 0
        if self.config.model == "adashare":
            policy_steps = self.config.adashare_policy_steps
            stopped = self._learn_policy(progress, until_step)
            if stopped is not None:  # pre-empted in the policy phase
                state, values, end = stopped
                return self._result(state, values, end, started)
            until_step = None if until_step is None else until_step - policy_steps
        state, values, end = self._run(self.definition, self.config, self.workdir, progress, until_step, hooks,
                                       step_offset=policy_steps)
        return self._result(state, values, policy_steps + end, started)

    def _result(self, state: TrainState, values: dict, steps: int, started: float) -> TrainResult:
        losses = {k.split("/", 1)[1]: v for k, v in values.items() if k.startswith("loss/")}
        return TrainResult(state.params, [t.name for t in self.tasks], self.untrained, losses, steps,
                           time.perf_counter() - started)

    def _learn_policy(self, progress: bool, until_step: int | None):
        """AdaShare's policy phase, then the model fixed to its argmax policy; returns (state,
        values, steps) instead if `until_step` stops the phase first."""
        directory = os.path.join(self.workdir, POLICY_DIRECTORY)
        path = os.path.join(directory, POLICY_FILE)
        if os.path.exists(path):
            with open(path) as f:
                logits = np.asarray(json.load(f)["logits"], np.float32)
        else:
            learning = PolicyLearning.from_config(self.config, self.model.num_blocks)
            definition = dataclasses.replace(self.definition, weighting=None, policy_learning=learning)
            config = dataclasses.replace(self.config, num_steps=self.config.adashare_policy_steps)
            state, values, end = self._run(definition, config, directory, progress, until_step, ())
            if end < config.num_steps:
                return state, values, end
            logits = np.asarray(jax.device_get(state.policy.logits), np.float32)
            if jax.process_index() == 0:
                io_utils.write_json(path, {"tasks": [t.name for t in self.tasks], "logits": logits.tolist()})
        learned = dict(zip([t.name for t in self.tasks], discrete_policy(logits)))
        self.policy = {t.name: learned.get(t.name, (True,) * self.model.num_blocks) for t in self.all_tasks}
        self.model = build_model(self.all_tasks, self.config, policy=tuple(self.policy.values()))
        self.definition = dataclasses.replace(self.definition, model=self.model)
        return None

    def _run(self, definition: StepDefinition, config: TrainConfig, workdir: str, progress: bool,
             until_step: int | None, hooks: Sequence[Hook], step_offset: int = 0) -> tuple[TrainState, dict, int]:
        """The loop of one training (from its latest checkpoint in `workdir`) to `config.num_steps`
        or `until_step`; returns the state, the last values read back and the steps done."""
        checkpoints = CheckpointHook(os.path.join(workdir, "checkpoints"), config.checkpoint_every)
        if checkpoints.latest_step() is not None:
            state = checkpoints.restore(self.abstract_state(definition, config))
        else:
            state = self.init_state(definition, config)
        start = int(jax.device_get(state.step))
        end = config.num_steps if until_step is None else max(min(until_step, config.num_steps), start)
        lead = jax.process_index() == 0
        all_hooks = [checkpoints, ProgressHook(start, config.num_steps, progress and lead), *hooks]
        if lead:
            all_hooks.insert(1, ScalarsHook(workdir, config.log_every))
        step_fn = self._step_function(definition, start, end, step_offset)
        values = {}
        try:
            for step in range(start, end):
                state, metrics = step_fn(state, step)
                done = step + 1
                due = [h for h in all_hooks if h.due(done, end)]
                values = {}
                if any(h.reads_values for h in due):
                    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    self._check_finite(state, checkpoints, workdir)
                for hook in due:
                    hook(done, state, values)
        finally:
            for hook in all_hooks:
                hook.close()
        return state, values, end

    def _check_finite(self, state: TrainState, checkpoints: CheckpointHook, workdir: str) -> None:
        bad = int(jax.device_get(state.nonfinite_step))
        if bad >= 0:
            checkpoints.manager.wait_until_finished()
            last = checkpoints.latest_step()
            kept = f"the last good checkpoint, step {last}, is kept in" if last is not None else \
                "no checkpoint was written before it; nothing is kept in"
            raise TrainingDivergedError(
                f"non-finite training loss or gradient at step {bad}: lower config.train.learning_rate "
                f"(now {self.config.learning_rate:g}); {kept} {workdir}/checkpoints")


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _batch_sums(model, tasks: tuple[TaskSpec, ...], with_loss: bool, params, images, targets):
    """Per-batch sums of each task's metric statistics (and example-weighted loss), one forward pass."""
    predictions = model.apply(params, images)
    sums = {"metrics": {t.name: t.metric_sums(predictions[t.name], targets[t.name]) for t in tasks}}
    if with_loss:
        sums["losses"] = {t.name: t.loss(predictions[t.name], targets[t.name]) * images.shape[0] for t in tasks}
    return sums


BASELINE_EXAMPLES = 4096  # the trivial baselines are computed on the first this many examples of a split


def evaluate(model, params, tasks: Sequence[TaskSpec], split: RandomAccessSplit, batch_size: int = 256,
             with_loss: bool = False, input_workers: int = 0) -> dict:
    """Per-task metrics on a split, each task's primary metric under "primary", and the same
    metric of the task's trivial baseline (e.g. all-background mIoU, on the first
    `BASELINE_EXAMPLES` examples) under "baseline"; with `with_loss`, also the task's mean training
    loss under "loss" (from the same forward passes). A split not in memory is read through grain
    with `input_workers` worker processes."""
    total, baseline_targets, seen = None, {t.name: [] for t in tasks}, 0
    for images, targets in streaming.split_batches(split, [t.name for t in tasks], batch_size, input_workers):
        batch = jax.device_get(_batch_sums(model, tuple(tasks), with_loss, params, images, targets))
        total = batch if total is None else jax.tree.map(np.add, total, batch)
        if seen < BASELINE_EXAMPLES:
            for name, target in targets.items():
                baseline_targets[name].append(target[:BASELINE_EXAMPLES - seen])
            seen += len(images)
    metrics = {}
    for task in tasks:
        values = task.finalize_metrics(total["metrics"][task.name])
        baseline = task.baseline_metrics(np.concatenate(baseline_targets[task.name]))[task.primary_metric]
        metrics[task.name] = {**values, "primary": values[task.primary_metric], "primary_metric": task.primary_metric,
                              "higher_is_better": task.higher_is_better, "baseline": baseline}
        if with_loss:
            metrics[task.name]["loss"] = float(total["losses"][task.name] / len(split))
    return metrics


def train_and_evaluate(dataset: MultiTaskDataset, labeled: Mapping[str, np.ndarray], config: TrainConfig,
                       workdir: str, seed: int = 0, progress: bool = True) -> dict:
    """Trains on the labeled images of each task and evaluates every task on the test split; with
    `config.groups`, one network per group (`train_and_evaluate_groups`)."""
    if config.groups:
        return train_and_evaluate_groups(dataset, labeled, config, workdir, seed, progress)
    return _train_and_evaluate_network(dataset, labeled, config, workdir, seed, progress)[0]


def _train_and_evaluate_network(dataset: MultiTaskDataset, labeled: Mapping[str, np.ndarray], config: TrainConfig,
                                workdir: str, seed: int, progress: bool, tasks: Sequence[str] | None = None):
    """One network's results (test metrics, labels, steps, parameter counts, AdaShare's policy),
    its model and its parameters."""
    trainer = Trainer(dataset, labeled, config, workdir, seed, tasks=tasks)
    result = trainer.train(progress=progress)
    metrics = evaluate(trainer.model, result.params, trainer.all_tasks, dataset.splits["test"],
                       config.eval_batch_size, input_workers=config.input_workers)
    for name in result.untrained_tasks:
        metrics[name]["untrained"] = True
    results = {"metrics": metrics, "trained_tasks": result.trained_tasks, "untrained_tasks": result.untrained_tasks,
               "labels": {t.name: len(trainer.labeled.get(t.name, ())) for t in trainer.all_tasks},
               "seed": seed, "steps": result.steps, "train_seconds": result.seconds,
               "final_losses": result.final_losses, "num_parameters": parameter_counts(result.params)}
    if trainer.policy is not None:
        results["adashare_policy"] = {task: list(selected) for task, selected in trainer.policy.items()}
    return results, trainer.model, result.params


def train_and_evaluate_groups(dataset: MultiTaskDataset, labeled: Mapping[str, np.ndarray], config: TrainConfig,
                              workdir: str, seed: int = 0, progress: bool = True) -> dict:
    """One network per group of `config.groups` (trained in `<workdir>/group<i>` on its tasks'
    labels), every task's metrics from the group serving it: the one group that holds it, or of
    several the one whose network scores it best on the validation split (first on ties). Parameter
    counts add up over the networks; `groups` lists each group's tasks, served tasks, counts, the
    validation scores (primary metric) of its tasks that other groups hold too, and AdaShare's policy."""
    names = dataset.task_names
    groups = config.task_groups
    weights = config.weights_for(names)
    runs = []
    for index, members in enumerate(groups):
        group_config = dataclasses.replace(config, groups=(), task_weights=None if config.task_weights is None
                                           else tuple(weights[t] for t in members))
        runs.append(_train_and_evaluate_network(dataset, {t: labeled[t] for t in members if t in labeled},
                                                group_config, os.path.join(workdir, f"group{index}"), seed,
                                                progress, tasks=members))
    holders = {t: [i for i, members in enumerate(groups) if t in members] for t in names}
    validation = []
    for i, members in enumerate(groups):
        shared = [t for t in members if len(holders[t]) > 1]
        # all of the group's tasks, as on the test split: the same compiled evaluation
        scores = evaluate(runs[i][1], runs[i][2], dataset.task_specs(members), dataset.splits["validation"],
                          config.eval_batch_size) if shared else {}
        validation.append({t: scores[t]["primary"] for t in shared})
    served = {}
    for task in dataset.task_specs(names):
        sign = 1.0 if task.higher_is_better else -1.0
        served[task.name] = max(holders[task.name], key=lambda i: sign * validation[i].get(task.name, 0.0))
    metrics = {t: {**runs[served[t]][0]["metrics"][t], "group": served[t]} for t in names}
    counts = [run[0]["num_parameters"] for run in runs]
    return {"metrics": metrics, "trained_tasks": [t for t in names if not metrics[t].get("untrained")],
            "untrained_tasks": [t for t in names if metrics[t].get("untrained")],
            "labels": {t: runs[served[t]][0]["labels"][t] for t in names}, "seed": seed,
            "steps": max(run[0]["steps"] for run in runs),
            "train_seconds": sum(run[0]["train_seconds"] for run in runs),
            "final_losses": {t: runs[served[t]][0]["final_losses"][t] for t in names
                             if t in runs[served[t]][0]["final_losses"]},
            "num_parameters": {k: sum(c[k] for c in counts) for k in counts[0]},
            "groups": [{"tasks": list(members), "serves": [t for t in names if served[t] == i],
                        "num_parameters": counts[i], "validation": validation[i],
                        **{k: v for k, v in runs[i][0].items() if k == "adashare_policy"}}
                       for i, members in enumerate(groups)]}
