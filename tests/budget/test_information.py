import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from taba_jax.budget import information as info_lib
from taba_jax.budget.information import InformationModel

import reference_greedy


def two_task_model(affinity, gamma=(0.5, 0.5), kappa=(10.0, 10.0)):
    return InformationModel([[1.0, affinity], [affinity, 1.0]], gamma, kappa)


@pytest.mark.parametrize("affinity", [0.0, 0.5, 1.0])
def test_objective_hand_worked_two_tasks(affinity):
    # 3 images: image 0 labels task 0 only; image 1 labels both; image 2 nothing.
    labels = np.array([[1, 0], [1, 1], [0, 0]], bool)
    # u(image 0) = (1, a); u(image 1) = (1, 1); u(image 2) = (0, 0)  ->  U = (2, 1 + a)
    expected_u = np.array([2.0, 1.0 + affinity])
    model = two_task_model(affinity)
    u = info_lib.task_information(labels, model.affinity)
    np.testing.assert_allclose(u, expected_u, rtol=1e-6)
    expected_f = np.mean(1 - (1 + expected_u / 10.0) ** -0.5)
    np.testing.assert_allclose(info_lib.objective(model, u), expected_f, rtol=1e-6)


def test_noisy_or_second_related_label_adds_little():
    # Two related labels on one image: 1 - (1 - 0.5)^2 = 0.75 for the third task, not 1.0.
    model = InformationModel([[1, 0, .5], [0, 1, .5], [.5, .5, 1]], 1.0, 1.0)
    u = info_lib.pattern_information(jnp.array([[1, 1, 0]]), model.affinity)
    np.testing.assert_allclose(u, [[1.0, 1.0, 0.75]], rtol=1e-6)


@pytest.mark.parametrize("cap, expected", [(None, [10.5, 6.0]), (1.0, [10.5, 2.0]), (0.0, [10.0, 1.0])])
def test_transfer_cap_bounds_what_other_tasks_labels_give_by_the_tasks_own_count(cap, expected):
    # Ten images label task 0, one labels task 1: D = (10, 1); through S = 0.5, X = (0.5, 5).
    labels = np.array([[1, 0]] * 10 + [[0, 1]], bool)
    model = two_task_model(0.5).replace(transfer_cap=cap)
    np.testing.assert_allclose(info_lib.model_information(model, labels), expected, rtol=1e-6)
    patterns, counts = info_lib.unique_patterns(labels)
    np.testing.assert_allclose(info_lib.model_information(model, patterns, counts), expected, rtol=1e-6)


def test_effective_number_curve_matches_formula():
    model = InformationModel(np.eye(2), [0.5, 2.0], [10.0, 4.0], weights=[1.0, 3.0], curve="effective_number")
    u = jnp.array([3.0, 7.0])
    beta = np.exp(-np.array([0.5, 2.0]) / np.array([10.0, 4.0]))
    expected = ((1 - beta[0] ** 3.0) * 1 + (1 - beta[1] ** 7.0) * 3) / 4
    np.testing.assert_allclose(info_lib.objective(model, u), expected, rtol=1e-6)


def test_pattern_counts_equal_full_matrix():
    rng = np.random.default_rng(0)
    labels = rng.random((200, 4)) < 0.3
    model = InformationModel(np.clip(rng.random((4, 4)), 0, 1) * (1 - np.eye(4)) + np.eye(4), 0.4, 20.0)
    patterns, counts = info_lib.unique_patterns(labels)
    np.testing.assert_allclose(info_lib.task_information(patterns, model.affinity, counts),
                               info_lib.task_information(labels, model.affinity), rtol=1e-5)
    assert counts.sum() == 200 and len(np.unique(patterns, axis=0)) == len(patterns)


@settings(max_examples=25, deadline=None)
@given(num_tasks=st.integers(1, 4), seed=st.integers(0, 2**31 - 1), curve=st.sampled_from(info_lib.CURVES),
       transfer_cap=st.sampled_from([None, 0.0, 0.3, 1.0]))
def test_vectorized_gains_equal_loop(num_tasks, seed, curve, transfer_cap):
    rng = np.random.default_rng(seed)
    affinity = rng.random((num_tasks, num_tasks))
    np.fill_diagonal(affinity, 1.0)
    model = InformationModel(affinity, rng.uniform(0.1, 2, num_tasks), rng.uniform(1, 50, num_tasks),
                             rng.uniform(0, 2, num_tasks) + 0.01, curve=curve, transfer_cap=transfer_cap)
    patterns = rng.random((6, num_tasks)) < 0.5
    counts = rng.integers(0, 40, 6)
    sizes = rng.integers(0, 10, (6, num_tasks)).astype(float)
    gains = np.asarray(info_lib.candidate_gains(model, patterns, counts, sizes))
    params = (np.asarray(model.affinity, float), np.asarray(model.gamma, float), np.asarray(model.kappa, float),
              np.asarray(model.weights, float))
    base = reference_greedy.objective(*params, patterns, counts, curve, transfer_cap)
    for p in range(6):
        for t in range(num_tasks):
            expected = 0.0
            if not patterns[p, t]:
                target = patterns[p].copy()
                target[t] = True
                moved = np.vstack([patterns, target])
                new_counts = np.append(counts, sizes[p, t])
                new_counts[p] -= sizes[p, t]
                expected = reference_greedy.objective(*params, moved, new_counts, curve, transfer_cap) - base
            np.testing.assert_allclose(gains[p, t], expected, rtol=2e-4, atol=1e-7)


def test_gain_of_one_label_in_a_huge_pool_is_positive():
    model = InformationModel(np.eye(2), 0.5, 100.0)
    gains = info_lib.candidate_gains(model, np.array([[False, False], [True, False]]),
                                     np.array([4_000_000, 500_000]), np.ones((2, 2)))
    assert gains[0, 0] > 0 and gains[0, 1] > 0 and gains[1, 1] > 0


def test_information_model_is_a_pytree_through_jit_and_vmap():
    model = two_task_model(0.3)
    f = jax.jit(lambda m, u: info_lib.objective(m, u))
    us = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    batched = jax.vmap(f, in_axes=(None, 0))(model, us)
    np.testing.assert_allclose(batched, [f(model, us[0]), f(model, us[1])], rtol=1e-6)
    leaves, treedef = jax.tree_util.tree_flatten(model)
    assert jax.tree_util.tree_unflatten(treedef, leaves).curve == "power"
    capped = model.replace(transfer_cap=0.5)
    assert jax.jit(lambda m: m)(capped).transfer_cap == 0.5
    assert InformationModel.from_json(capped.to_json()).transfer_cap == 0.5


@pytest.mark.parametrize("kwargs, field", [
    (dict(affinity=np.ones((2, 3))), "affinity"),
    (dict(affinity=np.ones((3, 3))), "gamma"),  # 3 tasks, but gamma has 2 entries
    (dict(affinity=[[1, 1.5], [0, 1]]), "affinity"),
    (dict(affinity=[[1, np.nan], [0, 1]]), "affinity"),
    (dict(affinity=[[0.5, 0], [0, 1]]), "affinity"),
    (dict(gamma=[0.5, 0.0]), "gamma"),
    (dict(kappa=[-1.0, 1.0]), "kappa"),
    (dict(weights=[-1.0, 1.0]), "weights"),
    (dict(gamma=[0.5, np.inf]), "gamma"),
    (dict(curve="linear"), "curve"),
    (dict(transfer_cap=-1.0), "transfer_cap"),
])
def test_bad_information_model_is_refused(kwargs, field):
    args = dict(affinity=np.eye(2), gamma=[0.5, 0.5], kappa=[1.0, 1.0])
    args.update(kwargs)
    with pytest.raises(ValueError, match=field):
        InformationModel(**args)
