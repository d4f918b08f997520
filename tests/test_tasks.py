import jax
import jax.numpy as jnp
import numpy as np
import pytest

from taba_jax import tasks
from taba_jax.tasks import TaskSpec, delta_m, delta_m_terms


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


def test_balanced_bce_weighs_each_positive_by_the_negative_to_positive_ratio():
    task = TaskSpec("edge", "dense_binary", 1)
    target = jnp.array([[[[1.0], [0.0], [0.0], [0.0]]]])  # 1 positive, 3 negatives: weight 3 : 1
    correct, wrong = 20.0, 0.0  # a logit 20 on the right side costs ~0; logit 0 costs log 2 either way
    miss_positive = task.loss(jnp.array([[[[wrong], [-correct], [-correct], [-correct]]]]), target)
    miss_negative = task.loss(jnp.array([[[[correct], [wrong], [-correct], [-correct]]]]), target)
    np.testing.assert_allclose(miss_positive / miss_negative, 3.0, rtol=1e-4)
    # The weights are normalised to mean 1 over the batch: (3 + 1 + 1 + 1) / 4 = 1.5.
    np.testing.assert_allclose(miss_negative, np.log(2) / 4 / 1.5, rtol=1e-4)


def test_delta_m_signs():
    tasks = [TaskSpec("seg", "segmentation", 3), TaskSpec("depth", "dense_regression", 1)]
    assert delta_m({"seg": 0.5, "depth": 1.0}, {"seg": 0.5, "depth": 1.0}, tasks) == 0.0
    # seg 10 % worse (higher is better), depth 10 % worse (error up): -10 %
    assert delta_m({"seg": 0.45, "depth": 1.1}, {"seg": 0.5, "depth": 1.0}, tasks) == pytest.approx(-10.0)


def test_delta_m_terms_are_each_tasks_share_and_sum_to_delta_m():
    results, reference = {"seg": 0.6, "depth": 0.8}, {"seg": 0.5, "depth": 1.0}
    terms = delta_m_terms(results, reference, {"seg": True, "depth": False})
    # seg 20 % better, depth's error 20 % lower: +10 points each, of 2 tasks
    assert terms == pytest.approx({"seg": 10.0, "depth": 10.0})
    tasks = [TaskSpec("seg", "segmentation", 3), TaskSpec("depth", "dense_regression", 1)]
    assert sum(terms.values()) == pytest.approx(delta_m(results, reference, tasks))
    with pytest.raises(ValueError, match="reference primary metric of task 'depth' is 0"):
        delta_m_terms(results, {"seg": 0.5, "depth": 0.0}, {"seg": True, "depth": False})


def test_bad_task_spec():
    with pytest.raises(ValueError, match="kind must be one of"):
        TaskSpec("x", "detection", 2)
    with pytest.raises(ValueError, match="normals need outputs=3, got 2"):
        TaskSpec("x", "normals", 2)
    with pytest.raises(ValueError, match="outputs must be at least 1, got 0"):
        TaskSpec("x", "classification", 0)


def test_invalid_targets_are_skipped_by_losses_and_metrics():
    seg = TaskSpec("seg", "segmentation", 2)
    logits = jnp.array([[[[5.0, 0.0], [0.0, 5.0]]]])  # predicts class 0, then class 1
    ignored = jnp.array([[[0, -1]]])  # the second pixel is unlabeled
    np.testing.assert_allclose(seg.loss(logits, ignored), np.log1p(np.exp(-5.0)), rtol=1e-5)
    assert seg.finalize_metrics(seg.metric_sums(logits, ignored)) == {"miou": 1.0, "pixel_accuracy": 1.0}

    depth = TaskSpec("depth", "dense_regression", 1)
    pred = jnp.array([[[[1.0], [100.0]]]])
    target = jnp.array([[[[2.0], [np.nan]]]])  # a sensor hole
    np.testing.assert_allclose(depth.loss(pred, target), 1.0)
    grad = jax.grad(lambda p: depth.loss(p, target))(pred)
    assert np.isfinite(np.asarray(grad)).all() and float(grad[0, 0, 1, 0]) == 0.0
    assert depth.finalize_metrics(depth.metric_sums(pred, target))["abs_error"] == pytest.approx(1.0)

    normal = TaskSpec("normal", "normals", 3)
    target = jnp.array([[[[1.0, 0, 0], [np.nan, np.nan, np.nan]]]])
    metrics = normal.finalize_metrics(normal.metric_sums(jnp.array([[[[1.0, 0, 0], [0, 1.0, 0]]]]), target))
    assert metrics["mean_angle"] == pytest.approx(0.0, abs=1e-3) and metrics["within_11.25"] == 1.0


def test_trivial_baselines_by_hand():
    seg = TaskSpec("seg", "segmentation", 3)
    target = np.array([[[0, 0, 0, 2]]])  # background everywhere but one pixel
    # all-background: class 0 IoU 3/4, class 2 IoU 0 (class 1 absent) -> mIoU 3/8
    assert seg.baseline_metrics(target)["miou"] == pytest.approx(3 / 8)

    depth = TaskSpec("depth", "dense_regression", 1)
    target = np.array([[[[1.0], [2.0], [6.0]]], [[[10.0], [10.0], [13.0]]]])
    # per-image medians 2 and 10: errors (1, 0, 4) and (0, 0, 3)
    assert depth.baseline_metrics(target)["abs_error"] == pytest.approx(8 / 6)

    normal = TaskSpec("normal", "normals", 3)
    target = np.array([[[[1.0, 0, 0], [0, 1.0, 0]]]])  # mean direction at 45 degrees to both
    assert normal.baseline_metrics(target)["mean_angle"] == pytest.approx(45.0, abs=1e-3)

    edge = TaskSpec("edge", "dense_binary", 1)
    target = np.array([[[[1.0], [0.0], [0.0], [0.0]]]])  # all-positive: tp 1, fp 3 -> F1 2/5
    assert edge.baseline_metrics(target)["f1"] == pytest.approx(0.4)

    cls = TaskSpec("cls", "classification", 3)
    assert cls.baseline_metrics(np.array([2, 2, 1, 0]))["accuracy"] == 0.5
    tags = TaskSpec("tags", "multilabel", 2)
    assert tags.baseline_metrics(np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]))["accuracy"] == pytest.approx(4 / 6)
    texture = TaskSpec("texture", "regression", 1)
    assert texture.baseline_metrics(np.array([[0.0], [1.0], [5.0]]))["abs_error"] == pytest.approx(5 / 3)


def test_distribution_kind_soft_cross_entropy_and_top1():
    task = TaskSpec("scene", "distribution", 3)
    target = jnp.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    logits = jnp.log(jnp.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]]))
    entropy = -(target[0] * jnp.log(target[0])).sum()
    cross = -(target[1] * logits[1]).sum()
    np.testing.assert_allclose(task.loss(logits, target), (entropy + cross) / 2, rtol=1e-5)
    metrics = task.finalize_metrics(task.metric_sums(logits, target))
    assert metrics["top1_accuracy"] == 0.5 and metrics["kl"] == pytest.approx(float(cross - entropy_of(target[1])) / 2,
                                                                              rel=1e-4)


def entropy_of(p):
    return float(-(p * jnp.log(p)).sum())


class _OnePairOffset(tasks.SegmentGrouping):
    PAIR_OFFSETS = ((0, 1),)  # each pixel paired with its left neighbour (wrapping), for a hand-worked case


def test_segment_grouping_pairwise_loss_and_accuracy_by_hand():
    kind = _OnePairOffset()
    target = jnp.array([[[0, 0, 1]]])  # one image of 1 x 3 pixels: segments {0, 1} and {2}
    valid = jnp.ones((1, 1, 3), bool)
    # pairs (pixel j, pixel j - 1 wrapped): (0, 2) different, (1, 0) same, (2, 1) different
    right = jnp.array([[[[1.0, 0.0], [2.0, 0.0], [-1.0, 0.0]]]])  # cosines -1, 1, -1: all pairs right
    small = np.log1p(np.exp(-5.0))  # BCE of a right pair at |logit| = PAIR_SCALE = 5
    np.testing.assert_allclose(kind.element_loss(right, target, valid), [[[small, small, small]]], rtol=1e-5)
    assert kind.finalize(jax.device_get(kind.metric_sums(right, target, valid, 2))) == {"pair_accuracy": 1.0}
    relabeled = jnp.array([[[7, 7, 3]]])  # only equality counts
    np.testing.assert_allclose(kind.element_loss(right, relabeled, valid), kind.element_loss(right, target, valid))
    one_group = jnp.ones((1, 1, 3, 2))  # every pair predicted the same segment: 1 of 3 right
    np.testing.assert_allclose(kind.element_loss(one_group, target, valid),
                               [[[5 + small, small, 5 + small]]], rtol=1e-5)
    assert kind.finalize(jax.device_get(kind.metric_sums(one_group, target, valid, 2)))["pair_accuracy"] == \
        pytest.approx(1 / 3)
    # pixel 2 unlabeled: only the pair (1, 0) is left
    sums = jax.device_get(kind.metric_sums(one_group, jnp.array([[[0, 0, -1]]]), jnp.array([[[True, True, False]]]), 2))
    assert (sums["correct"], sums["pairs"]) == (1.0, 1.0)
    spec = tasks.TaskSpec("segment_unsup2d", "segment_grouping", 2)
    assert spec.baseline_metrics(np.array([[[0, 0, 1]]]))["pair_accuracy"] == pytest.approx(
        spec.finalize_metrics(jax.device_get(spec.metric_sums(one_group, target)))["pair_accuracy"])
    np.testing.assert_allclose(spec.loss(right, target), spec.loss(right, relabeled))
