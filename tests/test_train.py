import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from taba_jax import train
from taba_jax.config import TrainConfig
from taba_jax.data.dataset import MultiTaskDataset
from taba_jax.data.synthetic import synthetic_dataset
from taba_jax.errors import TrainingDivergedError
from taba_jax.tasks import TaskSpec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


ONE_STAGE = {"widths": (8,)}  # for tests whose claim does not depend on the model's depth: smaller programs


def tiny_config(**overrides):
    values = dict(num_steps=6, batch_size=8, widths=(8, 16), checkpoint_every=3, log_every=3, learning_rate=1e-2,
                  warmup_steps=1, eval_batch_size=32)
    return TrainConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def dataset():
    return synthetic_dataset(120, 16, seed=0)


PAIR = ("segment", "depth")  # the tasks of most tests here: they share one compiled init and step


@pytest.fixture(scope="module")
def pair(dataset):
    return dataset.select_tasks(list(PAIR))


def labeled_sets(dataset):
    """The first 40 train images labeled for every task."""
    return {t: np.arange(40) for t in dataset.task_names}


def test_per_task_batches_draw_only_labeled_images_and_depend_only_on_seed_and_step():
    labeled = {"a": np.array([3, 7, 9]), "b": np.arange(50, 100)}
    for step in range(5):
        batch = train.sample_batch_indices(labeled, 16, seed=0, step=step, batching="per_task")
        assert batch.shape == (2, 16) and set(batch[0]) <= {3, 7, 9} and set(batch[1]) <= set(range(50, 100))
        assert len(set(batch[1])) == 16  # without replacement when the pool allows
        joint = train.sample_batch_indices(labeled, 16, seed=0, step=step, batching="joint")
        assert joint.shape == (1, 16) and set(joint[0]) <= {3, 7, 9} | set(range(50, 100))
    again = train.sample_batch_indices(labeled, 16, seed=0, step=4, batching="per_task")
    np.testing.assert_array_equal(again, batch)
    other_seed = train.sample_batch_indices(labeled, 16, seed=1, step=4, batching="per_task")
    assert not np.array_equal(other_seed[1], batch[1])


def test_task_with_zero_labels_is_reported_untrained(dataset, tmp_path):
    data = dataset.select_tasks(["segment", "depth"])
    results = train.train_and_evaluate(data, {"depth": np.arange(30)}, tiny_config(), str(tmp_path), progress=False)
    assert results["untrained_tasks"] == ["segment"] and results["trained_tasks"] == ["depth"]
    assert results["metrics"]["segment"]["untrained"] is True and results["labels"] == {"segment": 0, "depth": 30}


def held_out_losses(trainer, params, steps):
    """Mean loss of each trained task over fixed batches (the same before and after training)."""
    data = trainer._device_data(trainer.dataset.train)
    losses = jax.jit(train.task_losses, static_argnums=0)
    batches = [train.gather_batch(trainer.definition, data, trainer.indices(step)) for step in steps]
    return {t.name: np.mean([float(losses(trainer.definition, params, b)[t.name]) for b in batches])
            for t in trainer.tasks}


@pytest.mark.parametrize("batching, steps", [("per_task", 50), ("joint", 100)])
def test_short_training_lowers_every_dense_task_loss_by_a_clear_margin(dataset, tmp_path, batching, steps):
    """A short training cuts every dense task's loss on held-out batches to at most 0.85x (measured on
    the v2 scenes: joint batching, 100 steps, 0.10-0.60x, edges the slowest; per-task batching, one
    batch per task each step, 50 steps, 0.10-0.62x)."""
    dense = ("segment", "depth", "normal", "edge")
    dataset = dataset.select_tasks(list(dense))
    labeled = {t: np.arange(i * 6, i * 6 + 60) for i, t in enumerate(dense)}  # overlapping sets
    trainer = train.Trainer(dataset, labeled, tiny_config(num_steps=steps, batching=batching, learning_rate=1e-2,
                                                              checkpoint_every=steps, log_every=steps // 2),
                            str(tmp_path))
    held = range(10_000, 10_004)
    before = held_out_losses(trainer, trainer.init_state().params, held)
    after = held_out_losses(trainer, trainer.train(progress=False).params, held)
    for task in dense:
        assert after[task] < 0.85 * before[task], (task, before[task], after[task])


def test_classification_task_is_learned(tmp_path):
    """An image-level class that a CNN sees at once (the dominant colour channel) is learned to
    near-perfect accuracy in 60 steps, far above the majority class."""
    generator = np.random.default_rng(0)
    classes = generator.integers(0, 3, 400)
    images = generator.uniform(0, 0.5, (400, 16, 16, 3)).astype(np.float32)
    images[np.arange(400), :, :, classes] += 0.4
    task = TaskSpec("colour", "classification", 3)
    data = MultiTaskDataset.from_arrays(images, {"colour": classes}, [task], seed=0)
    results = train.train_and_evaluate(data, {"colour": np.arange(len(data.train))},
                                       tiny_config(num_steps=60, batch_size=16, checkpoint_every=60, log_every=30),
                                       str(tmp_path), progress=False)
    metrics = results["metrics"]["colour"]
    assert metrics["baseline"] < 0.5 and metrics["accuracy"] > 0.9, metrics


def test_resume_after_kill_gives_identical_parameters(pair, tmp_path):
    labeled = labeled_sets(pair)
    full = train.Trainer(pair, labeled, tiny_config(), str(tmp_path / "full")).train(progress=False)
    # Pre-empted after step 4, then restarted with the same workdir: restores step 4, trains 5 and 6.
    train.Trainer(pair, labeled, tiny_config(), str(tmp_path / "resumed")).train(progress=False, until_step=4)
    resumed = train.Trainer(pair, labeled, tiny_config(), str(tmp_path / "resumed")).train(progress=False)
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [3, 4, 6]


def test_runs_differing_in_learning_rate_and_length_share_one_compiled_step(pair, tmp_path):
    labeled = labeled_sets(pair)
    train.Trainer(pair, labeled, tiny_config(num_steps=2), str(tmp_path / "a")).train(progress=False)
    compiled = train.train_step._cache_size()
    train.Trainer(pair, labeled, tiny_config(num_steps=3, learning_rate=1e-3, warmup_steps=2, weight_decay=0.0),
                  str(tmp_path / "b")).train(progress=False)
    assert train.train_step._cache_size() == compiled


def test_non_finite_loss_stops_before_anything_non_finite_is_checkpointed(pair, tmp_path):
    trainer = train.Trainer(pair, labeled_sets(pair), tiny_config(learning_rate=1e30, num_steps=40,
                                                                        checkpoint_every=2, log_every=2),
                            str(tmp_path))
    with pytest.raises(TrainingDivergedError, match=r"non-finite training loss or gradient at step (\d+)") as error:
        trainer.train(progress=False)
    bad_step = int(error.value.args[0].split("at step ")[1].split(":")[0])
    checkpoints = train.CheckpointHook(str(tmp_path / "checkpoints"), 2)
    last = checkpoints.latest_step()
    assert last is not None and last < bad_step and f"last good checkpoint, step {last}" in str(error.value)
    restored = checkpoints.restore(trainer.abstract_state())
    checkpoints.close()
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(restored.params))
    assert int(restored.nonfinite_step) == -1


def test_scalars_hook_appends_whole_lines_and_cuts_a_torn_one(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')  # a writer killed mid-line
    hook = train.ScalarsHook(str(tmp_path), every=1, tensorboard=False)
    hook(3, None, {"loss": 1.5})
    hook(4, None, {"loss": 1.0})
    hook.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 3, 4] and "steps_per_second" in records[2]


def test_hooks_run_when_due():
    hook = train.CallbackHook(lambda step, state: None, every=5)
    assert [s for s in range(1, 13) if hook.due(s, 12)] == [5, 10]
    assert [s for s in range(1, 13) if train.Hook(5).due(s, 12)] == [5, 10, 12]  # and at the last step


def test_four_devices_match_one_device(pair, tmp_path):
    """Device-resident data and host batches (each device's shard cut from the process's columns)."""
    script = textwrap.dedent(f"""
        import sys, numpy as np, jax
        sys.path.insert(0, {os.path.join(ROOT, 'tests')!r})
        from test_train import ONE_STAGE, tiny_config, labeled_sets
        from taba_jax import train
        from taba_jax.data.synthetic import synthetic_dataset
        from taba_jax.train import Trainer
        dataset = synthetic_dataset(120, 16, seed=0).select_tasks({list(PAIR)!r})
        config = tiny_config(num_steps=2, **ONE_STAGE)
        result = Trainer(dataset, labeled_sets(dataset), config, sys.argv[1]).train(progress=False)
        np.savez(sys.argv[2], **{{str(i): np.asarray(x) for i, x in enumerate(jax.tree.leaves(result.params))}},
                 **{{"loss_" + k: v for k, v in result.final_losses.items()}})
        train.DEVICE_DATA_LIMIT_BYTES = 0
        host = Trainer(dataset, labeled_sets(dataset), config, sys.argv[1] + "h").train(progress=False)
        np.savez(sys.argv[2] + ".host.npz", **{{str(i): np.asarray(x) for i, x in enumerate(jax.tree.leaves(host.params))}},
                 **{{"loss_" + k: v for k, v in host.final_losses.items()}})
        print(jax.device_count())
    """)
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "w4"), str(tmp_path / "4.npz")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("4")
    four = dict(np.load(tmp_path / "4.npz"))
    assert jax.device_count() == 1  # this process: the one-device run
    one = train.Trainer(pair, labeled_sets(pair), tiny_config(num_steps=2, **ONE_STAGE), str(tmp_path / "w1")).train(
        progress=False)
    one = {**{str(i): np.asarray(x) for i, x in enumerate(jax.tree.leaves(one.params))},
           **{"loss_" + k: v for k, v in one.final_losses.items()}}
    assert one.keys() == four.keys()
    for key in one:
        np.testing.assert_allclose(one[key], four[key], rtol=1e-4, atol=1e-5)
    four_host = dict(np.load(tmp_path / "4.npz.host.npz"))
    for key in one:
        np.testing.assert_allclose(one[key], four_host[key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("weighting", ["uncertainty", "pcgrad"])
def test_multi_task_weighting_trains_and_resumes_with_its_state(pair, tmp_path, weighting):
    labeled = {"segment": np.arange(10), "depth": np.arange(90)}  # label counts differ 9x
    config = tiny_config(weighting=weighting, **ONE_STAGE)
    full = train.Trainer(pair, labeled, config, str(tmp_path / "full")).train(progress=False)
    train.Trainer(pair, labeled, config, str(tmp_path / "resumed")).train(progress=False, until_step=4)
    resumed = train.Trainer(pair, labeled, config, str(tmp_path / "resumed")).train(progress=False)
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert all(np.isfinite(v) for v in full.final_losses.values())
    scalars = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert {"weight/segment", "weight/depth"} <= set(scalars[-1])


def test_evaluate_with_loss_adds_each_tasks_mean_training_loss(dataset, tmp_path):
    trainer = train.Trainer(dataset, labeled_sets(dataset), tiny_config(**ONE_STAGE), str(tmp_path))
    params = trainer.init_state().params
    split, tasks = dataset.splits["validation"], trainer.all_tasks
    images, targets = split.batch(slice(0, len(split)), [t.name for t in tasks])
    predictions = jax.jit(trainer.model.apply)(params, images)  # one program, not one per operation
    expected = {t.name: float(jax.jit(t.loss)(predictions[t.name], targets[t.name])) for t in tasks}
    whole = train.evaluate(trainer.model, params, tasks, split, batch_size=len(split), with_loss=True)
    batched = train.evaluate(trainer.model, params, tasks, split, batch_size=5, with_loss=True)  # uneven last batch
    for task in tasks:
        assert whole[task.name]["loss"] == pytest.approx(expected[task.name], rel=1e-4)
        if task.name != "edge":  # class-balanced BCE weighs by each batch's own positives
            assert batched[task.name]["loss"] == pytest.approx(expected[task.name], rel=1e-4)
        assert batched[task.name]["primary"] == pytest.approx(whole[task.name]["primary"], rel=1e-4)
    assert all("loss" not in m for m in train.evaluate(trainer.model, params, tasks, split).values())


def test_groups_train_one_network_each_and_serve_a_shared_task_from_its_best_group(dataset, tmp_path):
    data = dataset.select_tasks(["segment", "depth", "normal"])
    labeled = {"segment": np.arange(40), "depth": np.arange(40)}  # normal has no labels
    config = tiny_config(num_steps=4, groups=("segment+depth", "depth+normal"))  # group 0 compiles as other tests
    results = train.train_and_evaluate(data, labeled, config, str(tmp_path), progress=False)
    assert (tmp_path / "group0" / "checkpoints").is_dir() and (tmp_path / "group1" / "checkpoints").is_dir()
    metrics, groups = results["metrics"], results["groups"]
    assert metrics["segment"]["group"] == 0 and metrics["normal"]["group"] == 1
    assert metrics["normal"]["untrained"] is True and results["untrained_tasks"] == ["normal"]
    # depth (lower error is better) is held by both: served by the lower validation error
    scores = [groups[0]["validation"]["depth"], groups[1]["validation"]["depth"]]
    assert scores[0] != scores[1] and metrics["depth"]["group"] == int(np.argmin(scores))
    assert groups[0]["tasks"] == ["segment", "depth"] and "depth" in groups[metrics["depth"]["group"]]["serves"]
    assert results["num_parameters"] == {k: groups[0]["num_parameters"][k] + groups[1]["num_parameters"][k]
                                         for k in ("total", "shared", "task_specific")}
    assert results["labels"] == {"segment": 40, "depth": 40, "normal": 0}
