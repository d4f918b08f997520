"""Training on partially labeled data (METHOD section 5) with data-parallel jitted steps.

Default step: one batch per task drawn from that task's own labeled images, one forward pass of the
shared model over all task batches stacked, the weighted sum of each task's loss on its batch.
Option `batching="joint"`: one batch from the images with any label, per-task label masks.
Batches are sharded along the `data` axis of a `jax.make_mesh` mesh, parameters replicated; the
same code runs on one device or many, and across hosts after `jax.distributed.initialize()`.
Batch indices are a pure function of (seed, step), so a resumed run continues the same data order.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import tqdm
from jax.sharding import NamedSharding, PartitionSpec as P

from taba_jax import io_utils
from taba_jax.budget import Allocation
from taba_jax.data.dataset import MultiTaskDataset, Split
from taba_jax.models import MultiTaskNet
from taba_jax.tasks import TaskSpec, delta_m

BATCHINGS = ("per_task", "joint")


@dataclasses.dataclass
class TrainResult:
    params: Any
    trained_tasks: list[str]
    untrained_tasks: list[str]
    final_losses: dict[str, float]
    steps: int


def default_config() -> ml_collections.ConfigDict:
    """Training hyper-parameters (the `train` block of configs/synthetic.py)."""
    c = ml_collections.ConfigDict()
    c.num_steps = 300
    c.batch_size = 32  # per task (per_task batching) or in total (joint)
    c.batching = "per_task"
    c.learning_rate = 3e-3
    c.warmup_steps = 20
    c.weight_decay = 1e-4
    c.widths = "16,32,64"
    c.blocks = 1
    c.task_weights = ""  # comma-separated, one per task; empty = all 1
    c.checkpoint_every = 100
    c.log_every = 25
    c.eval_batch_size = 256
    return c


def make_model(tasks: list[TaskSpec], config) -> MultiTaskNet:
    widths = tuple(int(w) for w in str(config.widths).split(","))
    return MultiTaskNet(tuple(tasks), widths=widths, blocks=int(config.blocks))


def make_optimizer(config) -> optax.GradientTransformation:
    """AdamW with a linear warm-up and cosine decay over `config.num_steps`."""
    schedule = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, max(config.warmup_steps, 1),
                                                  max(config.num_steps, config.warmup_steps + 1))
    return optax.adamw(schedule, weight_decay=config.weight_decay)


def data_mesh() -> jax.sharding.Mesh:
    """A 1-D mesh over every device; XLA propagates the batch sharding through the model (Auto axes)."""
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def sample_batch_indices(labeled: dict[str, np.ndarray], batch_size: int, seed: int, step: int,
                         batching: str) -> dict[str, np.ndarray]:
    """Indices into the train split for `step`: per task from its labeled images, or one joint set."""
    rng = np.random.default_rng([seed, step])
    if batching == "joint":
        pool = np.unique(np.concatenate(list(labeled.values())))
        chosen = rng.choice(pool, batch_size, replace=len(pool) < batch_size)
        return {"joint": np.sort(chosen)}
    return {task: np.sort(rng.choice(idx, batch_size, replace=len(idx) < batch_size)) for task, idx in labeled.items()}


def make_loss_fn(model: MultiTaskNet, tasks: list[TaskSpec], weights: dict[str, float], batching: str):
    """loss(params, images (G, B, H, W, C), targets, masks) -> (total, per-task losses).

    Per-task batching: group g holds task g's batch. Joint: one group, `masks[task]` (B,) marks
    which images carry that task's label.
    """
    def loss_fn(params, images, targets, masks):
        groups, batch = images.shape[:2]
        predictions = model.apply(params, images.reshape((groups * batch,) + images.shape[2:]))
        losses = {}
        for g, task in enumerate(tasks):
            group = 0 if batching == "joint" else g
            prediction = predictions[task.name].reshape((groups, batch) + predictions[task.name].shape[1:])[group]
            losses[task.name] = task.loss(prediction, targets[task.name], masks.get(task.name))
        total = sum(weights[t.name] * losses[t.name] for t in tasks)
        return total, losses
    return loss_fn


def make_train_step(model, tasks, weights, batching, optimizer):
    """A pure step: (params, opt_state, images, targets, masks) -> (params, opt_state, loss, losses)."""
    loss_fn = make_loss_fn(model, tasks, weights, batching)

    def step(params, opt_state, images, targets, masks):
        (loss, losses), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, images, targets, masks)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, losses
    return step


def _optimizer_key(config) -> tuple:
    return tuple((k, config[k]) for k in ("learning_rate", "warmup_steps", "num_steps", "weight_decay"))


@functools.lru_cache(maxsize=32)
def _compiled_step(model, tasks, weights, batching, optimizer_key):
    """One jitted step per (model, trained tasks, weights, batching, optimizer): the many short runs of
    an experiment share compilations instead of tracing a fresh closure each."""
    optimizer = make_optimizer(ml_collections.ConfigDict(dict(optimizer_key)))
    return jax.jit(make_train_step(model, list(tasks), dict(weights), batching, optimizer), donate_argnums=(0, 1))


@functools.lru_cache(maxsize=32)
def _compiled_init(model, optimizer_key, sharding):
    """Jitted (key, images) -> (params, optimizer state), replicated; shared like `_compiled_step`."""
    optimizer = make_optimizer(ml_collections.ConfigDict(dict(optimizer_key)))

    def init(key, images):
        params = model.init(key, images)
        return params, optimizer.init(params)
    return jax.jit(init, out_shardings=sharding)


class Trainer:
    """Trains a MultiTaskNet on the labels of an allocation; checkpoints with orbax and resumes."""

    def __init__(self, dataset: MultiTaskDataset, allocation: Allocation, config, workdir: str, seed: int = 0):
        if allocation.problem.num_images != len(dataset.train):
            raise ValueError(f"allocation pool has {allocation.problem.num_images} images, the train split "
                             f"{len(dataset.train)}")
        missing = [t for t in allocation.problem.task_names if t not in dataset.task_names]
        if missing:
            raise ValueError(f"allocation tasks {missing} are not in the dataset {dataset.task_names}")
        if config.batching not in BATCHINGS:
            raise ValueError(f"config.batching must be one of {BATCHINGS}, got {config.batching!r}")
        self.config, self.workdir, self.seed, self.dataset = config, workdir, seed, dataset
        self.all_tasks = dataset.task_specs(allocation.problem.task_names)
        self.labeled = {t.name: allocation.labeled_indices(t.name) for t in self.all_tasks}
        self.tasks = [t for t in self.all_tasks if len(self.labeled[t.name])]
        self.untrained = [t.name for t in self.all_tasks if not len(self.labeled[t.name])]
        self.labeled = {t.name: self.labeled[t.name] for t in self.tasks}
        weights = [float(w) for w in str(config.task_weights).split(",")] if config.task_weights else []
        if weights and len(weights) != len(self.all_tasks):
            raise ValueError(f"config.task_weights has {len(weights)} entries for {len(self.all_tasks)} tasks")
        self.weights = dict(zip([t.name for t in self.all_tasks], weights or [1.0] * len(self.all_tasks)))
        self.model = make_model(self.all_tasks, config)
        self.mesh = data_mesh()
        if config.batch_size % jax.device_count():
            raise ValueError(f"config.batch_size={config.batch_size} must be divisible by the "
                             f"{jax.device_count()} devices")
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P(None, "data"))
        self.target_sharding = NamedSharding(self.mesh, P("data"))
        if self.tasks:
            self._step = _compiled_step(self.model, tuple(self.tasks), tuple(sorted(self.weights.items())),
                                        config.batching, _optimizer_key(config))

    def init_params(self):
        images = jnp.zeros((1,) + self.dataset.train.images.shape[1:], jnp.float32)
        return _compiled_init(self.model, _optimizer_key(self.config), self.replicated)(jax.random.key(self.seed), images)

    def batch(self, step: int):
        """Device arrays for `step`: images (G, B, H, W, C), targets {task: (B, ...)}, masks."""
        split = self.dataset.train
        indices = sample_batch_indices(self.labeled, self.config.batch_size, self.seed, step, self.config.batching)
        if self.config.batching == "joint":
            idx = indices["joint"]
            images = split.images[idx][None]
            targets = {t.name: split.targets[t.name][idx] for t in self.tasks}
            masks = {t.name: np.isin(idx, self.labeled[t.name]).astype(np.float32) for t in self.tasks}
        else:
            images = np.stack([split.images[indices[t.name]] for t in self.tasks])
            targets = {t.name: split.targets[t.name][indices[t.name]] for t in self.tasks}
            masks = {}
        put = lambda x, s: jax.make_array_from_process_local_data(s, _process_slice(x, s))  # noqa: E731
        return (put(images, self.batch_sharding), {k: put(v, self.target_sharding) for k, v in targets.items()},
                {k: put(v, self.target_sharding) for k, v in masks.items()})

    def train(self, progress: bool = True, until_step: int | None = None,
              callback: Callable[[int, Any], None] | None = None) -> TrainResult:
        """Trains from the latest checkpoint (if any) to `config.num_steps`, or stops after
        `until_step` (a pre-emption point; a later call resumes). `callback(step, params)` runs after
        every step with the updated parameters (valid only during the call: the next step donates them)."""
        os.makedirs(self.workdir, exist_ok=True)
        params, opt_state = self.init_params()
        if not self.tasks:
            return TrainResult(params, [], self.untrained, {}, 0)
        manager = ocp.CheckpointManager(
            os.path.abspath(os.path.join(self.workdir, "checkpoints")),
            options=ocp.CheckpointManagerOptions(max_to_keep=2, save_interval_steps=self.config.checkpoint_every))
        start = 0
        if manager.latest_step() is not None:
            start = manager.latest_step()
            restored = manager.restore(start, args=ocp.args.StandardRestore({"params": params, "opt_state": opt_state}))
            params, opt_state = restored["params"], restored["opt_state"]
        from tensorboardX import SummaryWriter
        writer = SummaryWriter(os.path.join(self.workdir, "tensorboard")) if jax.process_index() == 0 else None
        losses = {}
        end = self.config.num_steps if until_step is None else min(until_step, self.config.num_steps)
        bar = tqdm.tqdm(range(start, end), initial=start, total=self.config.num_steps,
                        disable=not progress or jax.process_index() != 0, unit="step")
        window_start, window_steps = time.perf_counter(), 0
        for step in bar:
            params, opt_state, loss, losses = self._step(params, opt_state, *self.batch(step))
            loss = float(loss)
            if not np.isfinite(loss):
                manager.wait_until_finished()
                raise FloatingPointError(
                    f"non-finite training loss {loss} at step {step + 1} (task losses "
                    f"{ {k: float(v) for k, v in losses.items()} }); the last good checkpoint, step "
                    f"{manager.latest_step()}, is kept in {self.workdir}/checkpoints")
            window_steps += 1
            done = step + 1
            if callback is not None:
                callback(done, params)
            if done % self.config.checkpoint_every == 0 or done == self.config.num_steps:
                manager.save(done, args=ocp.args.StandardSave({"params": params, "opt_state": opt_state}),
                             force=done == self.config.num_steps)
            if done % self.config.log_every == 0 or done == self.config.num_steps:
                rate = window_steps / (time.perf_counter() - window_start)
                record = {"step": done, "loss": loss, "steps_per_second": rate,
                          **{f"loss/{k}": float(v) for k, v in losses.items()}}
                bar.set_postfix(loss=f"{loss:.4f}")
                if writer is not None:
                    for key, value in record.items():
                        if key != "step":
                            writer.add_scalar(key, value, done)
                    with open(os.path.join(self.workdir, "metrics.jsonl"), "a") as f:
                        f.write(json.dumps(record) + "\n")
                window_start, window_steps = time.perf_counter(), 0
        manager.wait_until_finished()
        manager.close()
        if writer is not None:
            writer.close()
        return TrainResult(params, [t.name for t in self.tasks], self.untrained,
                           {k: float(v) for k, v in losses.items()}, end)


def _process_slice(array: np.ndarray, sharding: NamedSharding) -> np.ndarray:
    """This process's rows of a global batch (the whole batch on a single host)."""
    if jax.process_count() == 1:
        return array
    axis = list(sharding.spec).index("data")
    size = array.shape[axis] // jax.process_count()
    return np.take(array, np.arange(size) + jax.process_index() * size, axis=axis)


def evaluate(model: MultiTaskNet, params, tasks: list[TaskSpec], split: Split, batch_size: int = 256) -> dict:
    """Per-task metrics on a split, with each task's primary metric under "primary"."""
    total = _split_sums(_batch_sums_fn(model, tuple(tasks), "metrics"), params, tasks, split, batch_size)
    metrics = {}
    for task in tasks:
        values = task.finalize_metrics(total[task.name])
        metrics[task.name] = {**values, "primary": values[task.primary_metric], "primary_metric": task.primary_metric,
                              "higher_is_better": task.higher_is_better}
    return metrics


def evaluate_losses(model: MultiTaskNet, params, tasks: list[TaskSpec], split: Split,
                    batch_size: int = 256) -> dict[str, float]:
    """Mean training loss of each task over a split (all examples labeled)."""
    total = _split_sums(_batch_sums_fn(model, tuple(tasks), "losses"), params, tasks, split, batch_size)
    return {t.name: float(total[t.name] / len(split)) for t in tasks}


def _split_sums(batch_sums, params, tasks, split: Split, batch_size: int):
    """Sums `batch_sums(params, images, targets)` over a split in batches."""
    total = None
    for start in range(0, len(split), batch_size):
        targets = {t.name: split.targets[t.name][start: start + batch_size] for t in tasks}
        batch = jax.tree.map(np.asarray, batch_sums(params, split.images[start: start + batch_size], targets))
        total = batch if total is None else jax.tree.map(np.add, total, batch)
    return total


@functools.lru_cache(maxsize=64)
def _batch_sums_fn(model, tasks, statistic: str):
    """Jitted per-batch sums for `_split_sums`: metric statistics or example-weighted losses."""
    @jax.jit
    def sums(params, images, targets):
        predictions = model.apply(params, images)
        if statistic == "metrics":
            return {t.name: t.metric_sums(predictions[t.name], targets[t.name]) for t in tasks}
        return {t.name: t.loss(predictions[t.name], targets[t.name]) * images.shape[0] for t in tasks}
    return sums


def load_reference(path: str, tasks: list[TaskSpec]) -> dict[str, float]:
    """Primary metric per task from a results.json written by `train_and_evaluate`."""
    with open(path) as f:
        results = json.load(f)
    try:
        return {t.name: float(results["metrics"][t.name]["primary"]) for t in tasks}
    except KeyError as e:
        raise ValueError(f"reference {path!r} has no primary metric for task {e}") from None


def train_and_evaluate(dataset: MultiTaskDataset, allocation: Allocation, config, workdir: str, seed: int = 0,
                       reference: str | None = None, progress: bool = True) -> dict:
    """Trains on `allocation`'s labels, evaluates on the test split, writes `<workdir>/results.json`."""
    trainer = Trainer(dataset, allocation, config, workdir, seed)
    start = time.perf_counter()
    result = trainer.train(progress=progress)
    metrics = evaluate(trainer.model, result.params, trainer.all_tasks, dataset.splits["test"],
                       config.eval_batch_size)
    for name in result.untrained_tasks:
        metrics[name]["untrained"] = True
    results = {"metrics": metrics, "trained_tasks": result.trained_tasks, "untrained_tasks": result.untrained_tasks,
               "labels": dict(zip(allocation.problem.task_names, allocation.counts.tolist())),
               "spent": allocation.spent, "strategy": allocation.strategy, "seed": seed, "steps": result.steps,
               "train_seconds": time.perf_counter() - start, "final_losses": result.final_losses}
    if reference:
        ref = load_reference(reference, trainer.all_tasks)
        results["delta_m"] = delta_m({t: m["primary"] for t, m in metrics.items()}, ref, trainer.all_tasks)
        results["reference"] = os.path.abspath(reference)
    if jax.process_index() == 0:
        io_utils.write_json(os.path.join(workdir, "results.json"), results)
    return results
