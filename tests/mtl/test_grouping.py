import itertools

import numpy as np
import pytest

from taba_jax.mtl.grouping import group_values, select_groups


def block_affinity(blocks, inside=0.9, across=0.1, seed=0):
    """Affinity with high values inside the blocks, low across, plus small noise."""
    num_tasks = sum(len(b) for b in blocks)
    rng = np.random.default_rng(seed)
    affinity = np.full((num_tasks, num_tasks), across) + rng.uniform(0, 0.02, (num_tasks, num_tasks))
    for block in blocks:
        affinity[np.ix_(block, block)] = inside + rng.uniform(0, 0.02, (len(block), len(block)))
    np.fill_diagonal(affinity, 1.0)
    return affinity


def brute_force_score(affinity, max_groups):
    """Best score over every choice of at most `max_groups` groups that serves every task."""
    values = group_values(affinity)
    full = 2 ** len(affinity) - 1
    best = -np.inf
    for count in range(1, max_groups + 1):
        for masks in itertools.combinations(range(1, full + 1), count):
            if np.bitwise_or.reduce(masks) == full:
                best = max(best, values[list(masks)].max(axis=0).sum())
    return best


def test_group_values_are_mean_affinity_from_the_other_members():
    affinity = np.array([[1.0, 0.2, 0.4], [0.6, 1.0, 0.8], [0.0, 0.5, 1.0]])
    values = group_values(affinity)
    np.testing.assert_allclose(values[0b011, :2], [0.6, 0.2])  # {0, 1}: S[1, 0], S[0, 1]
    np.testing.assert_allclose(values[0b111], [0.3, 0.35, 0.6])
    np.testing.assert_allclose(values[0b100, 2], 0.0)  # alone: nothing transfers
    assert np.isneginf(values[0b011, 2])


@pytest.mark.parametrize("method", ["exhaustive", "greedy"])
def test_finds_the_blocks_of_a_block_affinity(method):
    blocks = [[0, 3, 5], [1, 2], [4, 6, 7]]
    result = select_groups(block_affinity(blocks), 3, method=method)
    assert sorted(result.groups) == sorted(tuple(b) for b in blocks)
    for task, group in enumerate(result.served_by):
        assert task in result.groups[group]
    assert result.method == method


def test_one_network_serves_every_task_with_the_whole_group():
    affinity = block_affinity([[0, 1], [2, 3]])
    result = select_groups(affinity, 1)
    assert result.groups == ((0, 1, 2, 3),) and result.served_by == (0, 0, 0, 0)
    off_diagonal = affinity - np.diag(np.diag(affinity))
    np.testing.assert_allclose(result.score, (off_diagonal.sum(axis=0) / 3).sum())


def test_as_many_networks_as_tasks_serves_each_task_from_its_best_helper():
    affinity = np.array([[1.0, 0.9, 0.0, 0.0],
                         [0.2, 1.0, 0.0, 0.7],
                         [0.0, 0.0, 1.0, 0.0],
                         [0.0, 0.0, 0.8, 1.0]])
    result = select_groups(affinity, 4)
    best_helper = (affinity - np.eye(4) * 2).max(axis=0)
    np.testing.assert_allclose(result.score, best_helper.sum())
    assert len(result.groups) <= 4
    # More networks than tasks change nothing.
    assert select_groups(affinity, 9) == result


def test_a_task_that_nobody_helps_stays_alone_rather_than_being_hurt():
    affinity = np.array([[1.0, 0.5, -0.5], [0.5, 1.0, -0.5], [-0.5, -0.5, 1.0]])
    result = select_groups(affinity, 2)
    assert result.groups == ((0, 1), (2,))
    np.testing.assert_allclose(result.score, 1.0)


def test_exhaustive_matches_brute_force_and_greedy_never_beats_it():
    rng = np.random.default_rng(1)
    for trial in range(40):
        num_tasks = int(rng.integers(2, 5))
        affinity = rng.normal(size=(num_tasks, num_tasks)) if trial % 2 else rng.uniform(size=(num_tasks, num_tasks))
        for max_groups in range(1, min(num_tasks, 3) + 1):
            exact = select_groups(affinity, max_groups, method="exhaustive")
            np.testing.assert_allclose(exact.score, brute_force_score(affinity, max_groups), rtol=1e-9)
            assert len(exact.groups) <= max_groups
            assert select_groups(affinity, max_groups, method="greedy").score <= exact.score + 1e-9


def test_greedy_can_miss_the_optimum_that_exhaustive_finds():
    """A chain 2 -> 1 -> 0 -> 3 (S[s, t] = 1 on those edges). Greedy starts from the group of all
    four (score 1/3 + 1/3 + 0 + 1/3), adds {0, 1} (task 0 gets 1) and no single swap improves on 5/3;
    the optimum replaces both: {0, 1, 2} serves 0 and 1 at 1/2 each, {0, 3} serves 3 at 1."""
    affinity = np.eye(4)
    affinity[0, 3] = affinity[1, 0] = affinity[2, 1] = 1.0
    exact = select_groups(affinity, 2, method="exhaustive")
    greedy = select_groups(affinity, 2, method="greedy")
    assert exact.groups == ((0, 1, 2), (0, 3)) and exact.served_by == (0, 0, 0, 1)
    np.testing.assert_allclose(exact.score, 2.0)
    np.testing.assert_allclose(greedy.score, 5 / 3)


def test_auto_uses_greedy_beyond_the_exhaustive_limit():
    blocks = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    result = select_groups(block_affinity(blocks), 3)
    assert result.method == "greedy"
    assert sorted(result.groups) == sorted(tuple(b) for b in blocks)
    assert select_groups(block_affinity(blocks[:2]), 2).method == "exhaustive"


@pytest.mark.parametrize("affinity, max_groups, message", [
    (np.ones((2, 3)), 1, r"square \(T, T\) matrix, got shape \(2, 3\)"),
    (np.ones(3), 1, r"got shape \(3,\)"),
    (np.zeros((0, 0)), 1, "non-empty"),
    ([[1.0, np.nan], [0.0, 1.0]], 1, "must be finite"),
    (np.eye(3), 0, "max_groups must be an integer >= 1, got 0"),
    (np.eye(3), 1.5, "got 1.5"),
    (np.eye(17), 2, "17 tasks"),
])
def test_bad_inputs_are_named(affinity, max_groups, message):
    with pytest.raises(ValueError, match=message):
        select_groups(affinity, max_groups)


def test_unknown_method_and_too_large_exhaustive_search_are_named():
    with pytest.raises(ValueError, match="method must be one of .* got 'optimal'"):
        select_groups(np.eye(2), 1, method="optimal")
    with pytest.raises(ValueError, match="'exhaustive' supports at most 12 tasks, got 13"):
        select_groups(np.eye(13), 2, method="exhaustive")
