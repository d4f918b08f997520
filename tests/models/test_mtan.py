import functools

import jax
import numpy as np

from taba_jax.data.synthetic import task_specs
from taba_jax.models import MTAN, MultiTaskNet, parameter_counts, shared_parameters


def random_params(model, images, seed=0):
    """Parameters of `model` drawn with NumPy: no compiled init (slow to compile on a CPU)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), images)
    generator = np.random.default_rng(seed)
    return jax.tree.map(lambda s: generator.normal(0.0, 0.5, s.shape).astype(s.dtype), shapes)


def test_every_task_gets_the_shape_of_hard_sharing():
    tasks = tuple(task_specs())
    images = np.zeros((3, 16, 16, 3), np.float32)
    model, hard = MTAN(tasks, widths=(8, 16)), MultiTaskNet(tasks, widths=(8, 16))
    params = jax.eval_shape(model.init, jax.random.key(0), images)  # shapes only: nothing to compile
    outputs = jax.eval_shape(model.apply, params, images)
    expected = jax.eval_shape(hard.apply, jax.eval_shape(hard.init, jax.random.key(0), images), images)
    assert {k: v.shape for k, v in outputs.items()} == {k: v.shape for k, v in expected.items()}
    assert sorted(params["params"]["heads"]) == sorted(t.name for t in tasks)


def test_attention_masks_lie_in_zero_one_one_per_stage_and_task():
    tasks = tuple(task_specs(["depth", "classify"]))
    images = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32) * 3
    model = MTAN(tasks, widths=(8, 16))
    params = random_params(model, images)
    _, state = jax.jit(functools.partial(model.apply, mutable=["intermediates"]))(params, images)
    masks = state["intermediates"]["heads"]
    # depth (dense) attends to both encoder stages and the decoder stage, classify to the encoder stages
    assert sorted(masks["depth"]) == ["AttentionModule_0", "AttentionModule_1", "AttentionModule_2"]
    assert sorted(masks["classify"]) == ["AttentionModule_0", "AttentionModule_1"]
    values = [np.asarray(m) for m in jax.tree.leaves(masks)]
    assert all(v.min() >= 0.0 and v.max() <= 1.0 for v in values)
    assert np.std(np.concatenate([v.ravel() for v in values])) > 0.01  # masks, not a constant


def test_attention_modules_are_task_specific_not_shared():
    """MTAN's shared parameters are exactly hard sharing's backbone; its attention is counted per task."""
    tasks = tuple(task_specs(["segment", "depth"]))
    images = np.zeros((1, 16, 16, 3), np.float32)
    mtan = jax.eval_shape(MTAN(tasks, widths=(8, 16)).init, jax.random.key(0), images)
    hard = jax.eval_shape(MultiTaskNet(tasks, widths=(8, 16)).init, jax.random.key(0), images)
    mtan_counts, hard_counts = parameter_counts(mtan), parameter_counts(hard)
    assert mtan_counts["shared"] == hard_counts["shared"]
    assert mtan_counts["task_specific"] > hard_counts["task_specific"]
    attention = [path for path, shared in jax.tree_util.tree_flatten_with_path(shared_parameters(mtan))[0]
                 if any("AttentionModule" in str(getattr(k, "key", "")) for k in path)]
    assert attention and not any(shared for path, shared in jax.tree_util.tree_flatten_with_path(
        shared_parameters(mtan))[0] if path in attention)


def test_mtan_trains_on_partial_labels_and_reports_its_parameter_counts(tmp_path):
    from taba_jax import train
    from taba_jax.data.synthetic import synthetic_dataset
    from test_train import held_out_losses, tiny_config

    dataset = synthetic_dataset(120, 16, seed=0).select_tasks(["segment", "depth"])
    labeled = {"segment": np.arange(10), "depth": np.arange(90)}  # label counts differ 9x
    trainer = train.Trainer(dataset, labeled, tiny_config(model="mtan", widths=(8,), num_steps=30,
                                                          checkpoint_every=30, log_every=30), str(tmp_path))
    held = range(10_000, 10_004)
    before = held_out_losses(trainer, trainer.init_state().params, held)
    result = trainer.train(progress=False)
    after = held_out_losses(trainer, result.params, held)
    assert after["depth"] < 0.8 * before["depth"], (before, after)
    counts = parameter_counts(result.params)
    assert counts["shared"] + counts["task_specific"] == counts["total"] == sum(
        leaf.size for leaf in jax.tree.leaves(result.params))


def test_head_groups_run_each_task_branch_on_its_group_only():
    model = MTAN(tuple(task_specs(["segment", "classify"])), widths=(8,))
    images = np.random.default_rng(1).random((4, 8, 8, 3), np.float32)  # 2 groups of 2 images
    params = random_params(model, images)
    whole = model.apply(params, images)
    grouped = model.apply(params, images, {"classify": 1, "segment": 0})
    np.testing.assert_allclose(grouped["segment"], whole["segment"][:2], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grouped["classify"], whole["classify"][2:], rtol=1e-4, atol=1e-5)
