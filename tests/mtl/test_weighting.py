import functools
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from taba_jax.mtl import weighting
from taba_jax.mtl.weighting import CAGrad, DWA, GradNorm, IMTL, PCGrad, Uncertainty

KEY = jax.random.key(0)
BOTH = jnp.array([True, True])


@functools.partial(jax.jit, static_argnums=0)
def _jitted_combine(method, state, losses, grads, present, key):
    return method.combine(state, losses, grads, present, key)


def combine(method, state, losses, grads, present, key=KEY):
    """`method.combine`, compiled once per (method, shapes) across the tests."""
    return _jitted_combine(method, state, jnp.asarray(losses, jnp.float32), jnp.asarray(grads, jnp.float32),
                           jnp.asarray(present, bool), key)


def random_gradients(seed, num_tasks, dim=6):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(num_tasks, dim)), jnp.float32)


# --- PCGrad ------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pcgrad_projects_two_conflicting_gradients(seed):
    # g1.g2 = -1: g1 -> g1 + g2/2 = (0.5, 0.5), g2 -> g2 + g1 = (0, 1), whatever the order.
    grad, weights, _, aux = combine(PCGrad(), PCGrad().init(2), [1.0, 1.0], [[1.0, 0.0], [-1.0, 1.0]], BOTH,
                                    jax.random.key(seed))
    np.testing.assert_allclose(grad, [0.5, 1.5], atol=1e-6)
    np.testing.assert_allclose(weights, [2.0, 1.5], atol=1e-6)
    assert int(aux["pcgrad_conflicts"]) == 2


def test_pcgrad_leaves_agreeing_gradients_alone():
    grad, weights, _, aux = combine(PCGrad(), PCGrad().init(2), [1.0, 1.0], [[1.0, 0.0], [1.0, 1.0]], BOTH)
    np.testing.assert_allclose(grad, [2.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(weights, [1.0, 1.0], atol=1e-6)
    assert int(aux["pcgrad_conflicts"]) == 0


def test_pcgrad_ignores_an_absent_task():
    grad, weights, _, _ = combine(PCGrad(), PCGrad().init(2), [1.0, 5.0], [[1.0, 0.0], [-7.0, 1.0]],
                                  [True, False])
    np.testing.assert_allclose(grad, [1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(weights, [1.0, 0.0])


def test_pcgrad_on_the_gram_matrix_equals_projecting_vectors():
    grads = np.array(random_gradients(3, 4, dim=3), np.float64)  # 4 tasks in 3-D: conflicts are certain
    grad, _, _, _ = combine(PCGrad(), PCGrad().init(4), np.ones(4), grads, np.ones(4, bool), KEY)
    projected = grads.copy()
    for task, task_key in enumerate(jax.random.split(KEY, 4)):
        for other in np.asarray(jax.random.permutation(task_key, 4)):
            dot = projected[task] @ grads[other]
            if other != task and dot < 0:
                projected[task] -= dot / (grads[other] @ grads[other]) * grads[other]
    np.testing.assert_allclose(grad, projected.sum(0), rtol=1e-4, atol=1e-5)


def test_pcgrad_needs_a_key():
    with pytest.raises(ValueError, match="pcgrad.*key"):
        PCGrad().combine(PCGrad().init(2), jnp.ones(2), jnp.eye(2), BOTH, None)


# --- Uncertainty -------------------------------------------------------------------------------

def test_uncertainty_objective_is_stationary_at_log_loss():
    method, losses = Uncertainty(), jnp.array([0.3, 4.0])
    state = method.init(2).replace(log_variances=jnp.log(losses))
    grad = jax.grad(lambda s: method.weighted_loss(state.replace(log_variances=s), losses, BOTH))(
        state.log_variances)
    np.testing.assert_allclose(grad, 0.0, atol=1e-6)
    np.testing.assert_allclose(method.loss_weights(state, BOTH), 1.0 / losses, rtol=1e-6)


def test_uncertainty_learns_log_variance_of_fixed_losses():
    method, losses = Uncertainty(learning_rate=0.05), jnp.array([0.3, 4.0])
    state = jax.lax.fori_loop(0, 1500, lambda _, s: method.update(s, losses, BOTH), method.init(2))
    np.testing.assert_allclose(state.log_variances, np.log(losses), atol=0.02)


def test_uncertainty_absent_task_gets_no_update():
    method = Uncertainty(learning_rate=0.1)
    state = method.update(method.init(2), jnp.array([2.0, 3.0]), BOTH)  # nonzero moments for both tasks
    new = method.update(state, jnp.array([2.0, 0.0]), jnp.array([True, False]))
    assert float(new.log_variances[0]) != float(state.log_variances[0])
    for before, after in zip(jax.tree.leaves(state), jax.tree.leaves(new)):
        np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(method.loss_weights(new, jnp.array([True, False]))[1], 0.0)


# --- DWA ---------------------------------------------------------------------------------------

def test_dwa_weights_are_softmax_of_hand_made_loss_ratios():
    method = DWA(temperature=2.0)
    state = method.init(3).replace(last_mean=jnp.array([0.5, 1.0, 3.0]), previous_mean=jnp.array([1.0, 1.0, 2.0]),
                                   windows_done=jnp.array([2, 2, 2], jnp.int32))
    ratios = np.array([0.5, 1.0, 1.5])
    expected = 3 * np.exp(ratios / 2) / np.exp(ratios / 2).sum()
    np.testing.assert_allclose(method.loss_weights(state, jnp.ones(3, bool)), expected, rtol=1e-5)
    # An absent task drops out of the softmax; the present ones share their count.
    present = jnp.array([True, False, True])
    expected = 2 * np.exp(ratios[[0, 2]] / 2) / np.exp(ratios[[0, 2]] / 2).sum()
    np.testing.assert_allclose(method.loss_weights(state, present), [expected[0], 0.0, expected[1]], rtol=1e-5)


def test_dwa_equal_weights_until_two_windows_then_ratio_of_window_means():
    method = DWA(window=2)
    state = method.init(2)
    grads = jnp.eye(2)
    for losses in [[1.0, 2.0], [3.0, 2.0], [1.0, 2.0], [1.0, 2.0]]:  # window means (2, 2) then (1, 2)
        _, weights, state, _ = combine(method, state, losses, grads, BOTH)
        np.testing.assert_allclose(weights, [1.0, 1.0])
    np.testing.assert_array_equal(state.windows_done, [2, 2])
    ratios = np.array([0.5, 1.0])
    _, weights, state, _ = combine(method, state, [1.0, 2.0], grads, BOTH)
    np.testing.assert_allclose(weights, 2 * np.exp(ratios / 2) / np.exp(ratios / 2).sum(), rtol=1e-6)


def test_dwa_windows_count_present_steps_only():
    method = DWA(window=2)
    state = method.init(2)
    for losses, present in [([1.0, 9.0], [True, True]), ([1.0, 0.0], [True, False]), ([2.0, 0.0], [True, False])]:
        previous = state
        state = method.update(state, jnp.array(losses), jnp.array(present))
        if not present[1]:
            for before, after in zip(jax.tree.leaves(previous), jax.tree.leaves(state)):
                np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(state.windows_done, [1, 0])
    np.testing.assert_array_equal(state.window_steps, [1, 1])
    np.testing.assert_allclose(state.last_mean, [1.0, 0.0])
    np.testing.assert_allclose(state.window_sum, [2.0, 9.0])


# --- GradNorm ----------------------------------------------------------------------------------

def test_gradnorm_moves_weight_to_the_slower_training_task():
    method = GradNorm(alpha=1.5, learning_rate=0.05)
    grads = jnp.eye(2)  # equal gradient norms
    _, weights, state, _ = combine(method, method.init(2), [1.0, 1.0], grads, BOTH)  # records L(0) = (1, 1)
    np.testing.assert_allclose(weights, [1.0, 1.0])
    np.testing.assert_allclose(state.weights, [1.0, 1.0], atol=1e-6)  # equal rates: nothing to correct
    for _ in range(5):  # task 0 stays at its initial loss, task 1 halved its loss
        _, weights, state, _ = combine(method, state, [1.0, 0.5], grads, BOTH)
    assert float(state.weights[0]) > float(state.weights[1]) + 0.1
    np.testing.assert_allclose(state.weights.sum(), 2.0, rtol=1e-6)


def test_gradnorm_records_initial_loss_at_first_present_step():
    method = GradNorm()
    _, _, state, _ = combine(method, method.init(2), [2.0, 0.0], jnp.eye(2), [True, False])
    np.testing.assert_array_equal(state.seen, [True, False])
    np.testing.assert_allclose(state.initial_losses, [2.0, 0.0])
    _, _, state, _ = combine(method, state, [1.5, 3.0], jnp.eye(2), BOTH)
    np.testing.assert_array_equal(state.seen, [True, True])
    np.testing.assert_allclose(state.initial_losses, [2.0, 3.0])


def test_gradnorm_absent_task_keeps_weight_and_optimizer_state():
    method = GradNorm(learning_rate=0.1)
    grads = jnp.array([[1.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0]])
    _, _, state, _ = combine(method, method.init(3), [1.0, 1.0, 1.0], grads, np.ones(3, bool))
    _, weights, new, _ = combine(method, state, [1.0, 0.4, 0.0], grads, [True, True, False])
    assert float(weights[2]) == 0.0
    for before, after in zip(jax.tree.leaves(state), jax.tree.leaves(new)):
        np.testing.assert_array_equal(after[2], before[2])
    assert float(new.weights[0]) != float(state.weights[0])
    np.testing.assert_allclose(new.weights.sum(), 3.0, rtol=1e-6)


# --- CAGrad ------------------------------------------------------------------------------------

def test_cagrad_with_c_zero_is_the_mean_gradient():
    grads = random_gradients(0, 3)
    grad, weights, _, _ = combine(CAGrad(c=0.0), CAGrad().init(3), np.ones(3), grads, np.ones(3, bool))
    np.testing.assert_allclose(grad / 3, grads.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(weights, 1.0, rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_cagrad_lies_on_the_c_ball_and_helps_the_worst_task(seed):
    grads = np.array(random_gradients(seed, 4), np.float64)
    grad, _, _, _ = combine(CAGrad(c=0.4), CAGrad().init(4), np.ones(4), grads, np.ones(4, bool))
    direction, mean = np.asarray(grad, np.float64) / 4, grads.mean(0)
    np.testing.assert_allclose(np.linalg.norm(direction - mean), 0.4 * np.linalg.norm(mean), rtol=1e-4)
    assert (grads @ direction).min() >= (grads @ mean).min() - 1e-6


def test_cagrad_maximises_the_worst_improvement_of_two_tasks():
    grads = np.array([[1.0, 0.2], [-0.6, 1.0]])
    grad, _, _, _ = combine(CAGrad(c=0.5), CAGrad().init(2), np.ones(2), grads, BOTH)
    mean = grads.mean(0)
    angles = np.linspace(0, 2 * np.pi, 20001)
    ball = mean + 0.5 * np.linalg.norm(mean) * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    best_on_grid = (ball @ grads.T).min(axis=1).max()
    assert (grads @ (np.asarray(grad) / 2)).min() >= best_on_grid - 1e-4


def test_cagrad_ignores_an_absent_task():
    grads = random_gradients(4, 3)
    with_absent, weights, _, _ = combine(CAGrad(), CAGrad().init(3), [1.0, 1.0, 0.0],
                                         grads.at[2].set(100.0), [True, True, False])
    without, _, _, _ = combine(CAGrad(), CAGrad().init(2), [1.0, 1.0], grads[:2], BOTH)
    np.testing.assert_allclose(with_absent, without, rtol=1e-4, atol=1e-6)
    assert float(weights[2]) == 0.0


# --- IMTL --------------------------------------------------------------------------------------

def test_imtl_projects_equally_on_every_task_direction():
    grads = random_gradients(5, 4) * jnp.array([[1.0], [10.0], [0.1], [1.0]])  # 100x norm spread
    grad, weights, _, _ = combine(IMTL(), IMTL().init(5), np.ones(5), jnp.concatenate([grads, grads[:1] * 0]),
                                  [True, True, True, True, False])
    units = np.asarray(grads) / np.linalg.norm(grads, axis=1, keepdims=True)
    projections = units @ np.asarray(grad)
    np.testing.assert_allclose(projections, projections[0], rtol=1e-3)
    np.testing.assert_allclose(weights.sum(), 4.0, rtol=1e-5)
    assert float(weights[4]) == 0.0


# --- all methods -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(weighting.METHODS))
def test_weights_are_zero_for_absent_tasks_and_finite_with_100x_rarer_labels(name):
    """Task 1 is labeled in 1 step of 100 (its loss 0 otherwise), task 2 at a 100x larger loss scale."""
    method = weighting.get(name)
    center = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.5, 1.0]])
    scale = jnp.array([1.0, 1.0, 100.0])

    def step(carry, index):
        state, theta = carry
        present = jnp.array([True, index % 100 == 0, True])
        losses = scale * jnp.sum((theta - center) ** 2, axis=1) * present
        task_grads = 2 * scale[:, None] * (theta - center)
        grad, weights, new_state, _ = method.combine(state, losses, task_grads, present,
                                                     jax.random.fold_in(KEY, index))
        return (new_state, theta - 1e-3 * grad), (weights, present)

    (state, theta), (weights, present) = jax.lax.scan(step, (method.init(3), jnp.zeros(3)), jnp.arange(300))
    assert np.isfinite(np.asarray(theta)).all()
    assert all(np.isfinite(np.asarray(leaf, np.float64)).all() for leaf in jax.tree.leaves(state))
    np.testing.assert_array_equal(np.asarray(weights)[~np.asarray(present)], 0.0)


@pytest.mark.parametrize("name", sorted(weighting.METHODS))
def test_state_round_trips_through_flax_serialization(name):
    method = weighting.get(name)
    state = method.init(3)
    for losses in ([1.0, 2.0, 3.0], [0.5, 1.0, 2.5]):
        _, _, state, _ = combine(method, state, losses, random_gradients(6, 3), np.ones(3, bool))
    saved = flax.serialization.to_state_dict(state)
    restored = flax.serialization.from_state_dict(method.init(3), jax.tree.map(np.asarray, saved))
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        np.testing.assert_array_equal(a, b)


# --- registry ----------------------------------------------------------------------------------

def test_get_builds_registered_methods_with_hyperparameters():
    assert weighting.get("gradnorm", alpha=0.5) == GradNorm(alpha=0.5)
    assert weighting.get("dwa").temperature == 2.0
    assert set(weighting.METHODS) == {"equal", "uncertainty", "dwa", "gradnorm", "pcgrad", "cagrad", "imtl"}


@pytest.mark.parametrize("name, hyperparameters, message", [
    ("gradnorn", {}, "config.weighting='gradnorn' is not a known"),
    ("pcgrad", {"c": 0.4}, "config.weighting='pcgrad' has no hyper-parameter 'c'"),
    ("gradnorm", {"alpha": -1.0}, "config.weighting='gradnorm': hyper-parameter alpha=-1.0"),
    ("cagrad", {"c": float("nan")}, "hyper-parameter c=nan"),
    ("dwa", {"window": 0}, "hyper-parameter window=0 must be an integer >= 1"),
    ("dwa", {"window": 2.5}, "window=2.5"),
    ("dwa", {"temperature": "2"}, "temperature='2'"),
    ("uncertainty", {"learning_rate": 0.0}, "learning_rate=0.0 must be a finite number > 0"),
])
def test_get_names_the_bad_value(name, hyperparameters, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        weighting.get(name, **hyperparameters)


def test_bad_shapes_and_task_counts_are_named():
    with pytest.raises(ValueError, match="num_tasks"):
        DWA().init(0)
    with pytest.raises(ValueError, match=r"present must have shape \(2,\)"):
        PCGrad().combine(PCGrad().init(2), jnp.ones(2), jnp.eye(2), jnp.ones(3, bool), KEY)


# --- the trainer's entry point on a tiny two-head Flax model ----------------------------------

class TwoHeadNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        hidden = nn.tanh(nn.Dense(8, name="trunk")(x))
        return nn.Dense(1, name="depth_head")(hidden)[:, 0], nn.Dense(1, name="label_head")(hidden)[:, 0]


MODEL = TwoHeadNet()


def task_losses(params, batch):
    depth, label = MODEL.apply(params, batch["x"])
    return jnp.stack([jnp.mean((depth - batch["depth"]) ** 2), jnp.mean((label - batch["label"]) ** 2)])


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype(np.float32)
    batch = {"x": x, "depth": np.sin(x[:, 0]).astype(np.float32), "label": -np.sin(x[:, 0]).astype(np.float32)}
    params = jax.jit(MODEL.init)(KEY, x)
    shared = jax.tree_util.tree_map_with_path(lambda path, _: "trunk" in jax.tree_util.keystr(path), params)
    return params, batch, shared


def test_vectorised_per_task_gradients_equal_a_loop_of_grad(tiny):
    params, batch, _ = tiny
    losses, grads = jax.jit(lambda p: weighting.per_task_gradients(lambda q: task_losses(q, batch), p))(params)
    np.testing.assert_allclose(losses, task_losses(params, batch), rtol=1e-6)
    for task in range(2):
        expected = jax.jit(jax.grad(lambda p: task_losses(p, batch)[task]))(params)
        for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
            np.testing.assert_allclose(got[task], want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", sorted(weighting.METHODS))
def test_gradients_entry_point_jits_and_trains(tiny, name):
    params, batch, shared = tiny
    method = weighting.get(name)
    step = jax.jit(lambda p, s, present, key: weighting.gradients(method, s, task_losses, p, batch, present,
                                                                   shared, key))
    state, key = method.init(2), KEY
    first = None
    for index in range(30):
        present = jnp.array([True, index % 3 != 0])
        grads, state, info = step(params, state, present, jax.random.fold_in(key, index))
        params = jax.tree.map(lambda p, g: p - 0.05 * g, params, grads)
        first = float(task_losses(params, batch).sum()) if first is None else first
        assert info["losses"].shape == (2,) and info["weights"].shape == (2,)
        assert np.isfinite(float(info["loss"]))
        if not present[1]:
            assert float(info["losses"][1]) == 0.0 and float(info["weights"][1]) == 0.0
            np.testing.assert_array_equal(grads["params"]["label_head"]["kernel"], 0.0)
    assert float(task_losses(params, batch).sum()) < first


@pytest.mark.parametrize("name", ["equal", "pcgrad", "gradnorm"])
def test_gradients_heads_and_backbone(tiny, name):
    params, batch, shared = tiny
    method = weighting.get(name)
    grads, _, info = jax.jit(lambda p: weighting.gradients(method, method.init(2), task_losses, p, batch, BOTH,
                                                           shared, KEY))(params)
    _, per_task = jax.jit(lambda p: weighting.per_task_gradients(lambda q: task_losses(q, batch), p))(params)
    head_weights = info["weights"] if name != "pcgrad" else jnp.ones(2)
    for head, task in (("depth_head", 0), ("label_head", 1)):
        np.testing.assert_allclose(grads["params"][head]["kernel"],
                                   head_weights[task] * per_task["params"][head]["kernel"][task], rtol=1e-5, atol=1e-7)
    trunk = jax.tree.map(lambda g: jnp.tensordot(info["weights"], g, axes=1), per_task["params"]["trunk"])
    np.testing.assert_allclose(grads["params"]["trunk"]["kernel"], trunk["kernel"], rtol=1e-4, atol=1e-6)
    if name == "equal":
        expected = jax.jit(jax.grad(lambda p: task_losses(p, batch).sum()))(params)
        for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def per_task_batch_loss(params, task_batch, task):
    """Loss of `task` on its own images (task_batch["x"]) against the shared targets."""
    depth, label = MODEL.apply(params, task_batch["x"])
    return jnp.stack([jnp.mean((depth - task_batch["depth"]) ** 2), jnp.mean((label - task_batch["label"]) ** 2)])[task]


def stacked_losses(params, batch):
    depth, label = MODEL.apply(params, batch["x"].reshape(-1, 3))
    size = batch["x"].shape[1]
    return jnp.stack([jnp.mean((depth[:size] - batch["depth"]) ** 2), jnp.mean((label[size:] - batch["label"]) ** 2)])


@pytest.mark.parametrize("name", ["equal", "pcgrad", "gradnorm"])
def test_per_task_batches_give_the_same_gradients_as_the_stacked_batch(tiny, name):
    params, batch, shared = tiny
    per_task = {"x": np.stack([batch["x"], -batch["x"]]), "depth": batch["depth"], "label": batch["label"]}
    method = weighting.get(name)
    present = jnp.array([True, True])
    stacked = jax.jit(lambda p: weighting.gradients(method, method.init(2), stacked_losses, p, per_task, present,
                                                    shared, KEY))(params)
    split = jax.jit(lambda p: weighting.gradients(method, method.init(2), per_task_batch_loss, p, per_task, present,
                                                  shared, KEY, task_batch_axes={"x": 0, "depth": None, "label": None})
                    )(params)
    np.testing.assert_allclose(split[2]["losses"], stacked[2]["losses"], rtol=1e-6)
    for got, want in zip(jax.tree.leaves(split[0]), jax.tree.leaves(stacked[0])):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_documented_cpu_workaround_gives_correct_per_task_gradients():
    """jaxlib 0.10.2 on CPU mixes the second task's gradient into the first here (jax-ml/jax#39103);
    with the dot-library-rewriter pass disabled the vmapped VJP equals a loop of jax.grad."""
    script = textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np
        from taba_jax.mtl.weighting import per_task_gradients
        rng = np.random.default_rng(0)
        x, t = (jnp.asarray(rng.normal(size=(8192, 3)), jnp.float32) for _ in range(2))
        def losses(v):
            return jnp.stack([(v * (v * v).sum(-1, keepdims=True) * t).sum(-1).mean(), v.sum()])
        _, grads = jax.jit(lambda v: per_task_gradients(losses, v))(x)
        for task in range(2):
            np.testing.assert_allclose(grads[task], jax.grad(lambda v: losses(v)[task])(x), rtol=1e-5, atol=1e-6)
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_disable_hlo_passes=dot-library-rewriter", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
