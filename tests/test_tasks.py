import jax.numpy as jnp
import numpy as np
import pytest

from taba_jax.tasks import TaskSpec, delta_m


def test_segmentation_loss_and_miou_by_hand():
    task = TaskSpec("seg", "segmentation", 2)
    logits = jnp.array([[[[2.0, 0.0], [0.0, 2.0]]]])  # (1, 1, 2, 2): pixel 0 -> class 0, pixel 1 -> class 1
    target = jnp.array([[[0, 0]]])
    expected_loss = np.mean([np.log(1 + np.exp(-2.0)), np.log(1 + np.exp(2.0))])
    np.testing.assert_allclose(task.loss(logits, target), expected_loss, rtol=1e-6)
    metrics = task.finalize_metrics(task.metric_sums(logits, target))
    # class 0: intersection 1, union 2; class 1: intersection 0, union 1 -> mIoU = (0.5 + 0) / 2
    assert metrics["miou"] == pytest.approx(0.25) and metrics["pixel_accuracy"] == pytest.approx(0.5)


def test_regression_normals_binary_classification_by_hand():
    depth = TaskSpec("depth", "dense_regression", 1)
    pred, target = jnp.array([[[[1.0]], [[3.0]]]]), jnp.array([[[[2.0]], [[3.0]]]])
    np.testing.assert_allclose(depth.loss(pred, target), 0.5)
    assert depth.finalize_metrics(depth.metric_sums(pred, target))["abs_error"] == pytest.approx(0.5)

    normal = TaskSpec("normal", "normals", 3)
    pred = jnp.array([[[[2.0, 0, 0], [0, 1.0, 0]]]])  # unnormalised x, and y
    target = jnp.array([[[[1.0, 0, 0], [1.0, 0, 0]]]])
    np.testing.assert_allclose(normal.loss(pred, target), 0.5, rtol=1e-6)  # 1 - cos: 0 and 1
    metrics = normal.finalize_metrics(normal.metric_sums(pred, target))
    assert metrics["mean_angle"] == pytest.approx(45.0, abs=1e-3) and metrics["within_11.25"] == 0.5

    edge = TaskSpec("edge", "dense_binary", 1)
    logits = jnp.array([[[[5.0], [-5.0], [5.0], [-5.0]]]])
    target = jnp.array([[[[1.0], [1.0], [0.0], [0.0]]]])
    m = edge.finalize_metrics(edge.metric_sums(logits, target))
    assert m["f1"] == pytest.approx(0.5) and m["accuracy"] == pytest.approx(0.5)  # tp 1, fp 1, fn 1

    cls = TaskSpec("cls", "classification", 3)
    logits = jnp.array([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]])
    assert cls.finalize_metrics(cls.metric_sums(logits, jnp.array([1, 2])))["accuracy"] == 0.5
    masked = cls.loss(logits, jnp.array([1, 2]), mask=jnp.array([1.0, 0.0]))
    np.testing.assert_allclose(masked, -np.log(np.exp(1) / (np.exp(1) + 2)), rtol=1e-6)


def test_balanced_bce_weights_rare_positives():
    task = TaskSpec("edge", "dense_binary", 1)
    target = jnp.array([[[[1.0], [0.0], [0.0], [0.0]]]])
    miss_positive = task.loss(jnp.array([[[[-3.0], [-3.0], [-3.0], [-3.0]]]]), target)
    miss_negative = task.loss(jnp.array([[[[3.0], [3.0], [-3.0], [-3.0]]]]), target)
    assert miss_positive > 0.5 * miss_negative  # one missed positive weighs like three negatives


def test_delta_m_signs():
    tasks = [TaskSpec("seg", "segmentation", 3), TaskSpec("depth", "dense_regression", 1)]
    assert delta_m({"seg": 0.5, "depth": 1.0}, {"seg": 0.5, "depth": 1.0}, tasks) == 0.0
    # seg 10 % worse (higher is better), depth 10 % worse (error up): -10 %
    assert delta_m({"seg": 0.45, "depth": 1.1}, {"seg": 0.5, "depth": 1.0}, tasks) == pytest.approx(-10.0)


def test_bad_task_spec():
    with pytest.raises(ValueError, match="kind must be one of"):
        TaskSpec("x", "detection", 2)
    with pytest.raises(ValueError, match="outputs=2 for kind 'normals'"):
        TaskSpec("x", "normals", 2)
