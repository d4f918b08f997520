import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from taba_jax.budget import BudgetProblem, InformationModel, allocate, strategy_names
from taba_jax.budget.strategies import equal_budget_counts, top_up

problems = st.builds(
    lambda costs, num_images, fraction: BudgetProblem([f"t{i}" for i in range(len(costs))], costs, num_images,
                                                      fraction * num_images * sum(costs)),
    costs=st.lists(st.floats(0.1, 20, allow_nan=False), min_size=1, max_size=4),
    num_images=st.integers(1, 60),
    fraction=st.floats(0, 1.3),
)


def random_initial(problem, seed):
    rng = np.random.default_rng(seed)
    initial = rng.random((problem.num_images, problem.num_tasks)) < 0.1
    while problem.cost_of(initial) > problem.budget and initial.any():
        initial[np.flatnonzero(initial.any(axis=1))[0]] = False
    return initial


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems, seed=st.integers(0, 1000), with_initial=st.booleans())
def test_every_heuristic_is_feasible_contains_initial_and_deterministic(problem, seed, with_initial):
    initial = random_initial(problem, seed) if with_initial else None
    for strategy in strategy_names(problem.task_names)[:-1]:  # taba has its own property test below
        a = allocate(problem, strategy, seed=seed, initial=initial)
        b = allocate(problem, strategy, seed=seed, initial=initial)
        assert problem.is_affordable(a.spent), (strategy, a.spent, problem.budget)
        if initial is not None:
            assert (a.labels >= initial).all(), strategy
        np.testing.assert_array_equal(a.labels, b.labels)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 1000), with_initial=st.booleans(),
       fraction=st.floats(0, 1.3), costs=st.lists(st.floats(0.1, 20), min_size=3, max_size=3))
def test_taba_is_feasible_contains_initial_and_deterministic(seed, with_initial, fraction, costs):
    problem = BudgetProblem(["a", "b", "c"], costs, 40, fraction * 40 * sum(costs))
    model = InformationModel([[1, .2, .5], [.2, 1, 0], [.9, 0, 1]], [0.5, 1.0, 0.3], 10.0)
    initial = random_initial(problem, seed) if with_initial else None
    a = allocate(problem, "taba", seed=seed, information=model, initial=initial)
    b = allocate(problem, "taba", seed=seed, information=model, initial=initial)
    assert problem.is_affordable(a.spent)
    if initial is not None:
        assert (a.labels >= initial).all()
    np.testing.assert_array_equal(a.labels, b.labels)


def test_heuristics_follow_their_definitions():
    problem = BudgetProblem(["seg", "depth", "edge"], [10, 3, 2], 100, 300)
    equal_budget = allocate(problem, "equal_budget", seed=0)
    np.testing.assert_array_equal(equal_budget.counts, [10, 33, 50])  # floor(100 / c_t)
    assert equal_budget.labels.sum(axis=1).max() == 1  # disjoint: 93 labels fit 100 images
    disjoint = allocate(problem, "equal_count_disjoint", seed=0)
    np.testing.assert_array_equal(disjoint.counts, [20, 20, 20])  # floor(300 / 15)
    assert disjoint.labels.sum(axis=1).max() == 1
    shared = allocate(problem, "equal_count_shared", seed=0)
    np.testing.assert_array_equal(shared.counts, [20, 20, 20])
    assert set(shared.labels.sum(axis=1)) == {0, 3}
    single = allocate(problem, "single_task:depth", seed=0)
    np.testing.assert_array_equal(single.counts, [0, 100, 0])  # capped by the pool
    pairs = allocate(problem, "random_pairs", seed=0)
    assert problem.budget - pairs.spent < 2  # spent until no label fits
    assert allocate(problem, "random_pairs", seed=1).labels.tolist() != pairs.labels.tolist()


def test_top_up_keeps_the_initial_labels_reaches_the_counts_on_least_labeled_images():
    problem = BudgetProblem(["seg", "depth", "edge"], [10, 3, 2], 100, 300)
    np.testing.assert_array_equal(equal_budget_counts(problem), [10, 33, 50])
    initial = np.zeros((100, 3), bool)
    initial[:5] = True  # a pilot of 5 fully labeled images
    topped = top_up(problem, initial, [10, 0, 12], seed=0)
    np.testing.assert_array_equal(topped.counts, [10, 5, 12])  # depth keeps its pilot labels
    assert np.all(topped.labels[initial])
    added = topped.labels & ~initial
    assert added[:5].sum() == 0 and added.sum(axis=1).max() == 1  # new labels on unlabeled images, disjoint
    assert top_up(problem, initial, [10, 0, 12], seed=1).labels.tolist() != topped.labels.tolist()


def test_top_up_stops_where_the_budget_does():
    problem = BudgetProblem(["seg", "depth"], [10, 3], 100, 100)
    topped = top_up(problem, None, [8, 30], seed=0)
    np.testing.assert_array_equal(topped.counts, [8, 6])  # 80 on seg leaves 20: six depth labels
    assert topped.spent <= problem.budget
    with pytest.raises(ValueError, match="counts must be 2 non-negative"):
        top_up(problem, None, [1, -1])


def test_cost_of_a_third_fits_exactly():
    problem = BudgetProblem(["a"], [10 / 3], 10, 10.0)
    assert allocate(problem, "single_task:a").counts[0] == 3


def test_equal_budget_overlaps_only_when_the_pool_is_short():
    problem = BudgetProblem(["a", "b"], [1, 1], 10, 16)
    allocation = allocate(problem, "equal_budget", seed=3)
    np.testing.assert_array_equal(allocation.counts, [8, 8])
    assert (allocation.labels.sum(axis=1) == 2).sum() == 6  # 16 labels on 10 images: 6 overlaps, no more


def test_information_adds_predicted_objective():
    problem = BudgetProblem(["a", "b"], [1, 1], 10, 5)
    model = InformationModel(np.eye(2), 0.5, 5.0)
    assert 0 < allocate(problem, "equal_budget", information=model).info["objective"] < 1


@pytest.mark.parametrize("strategy, kwargs, message", [
    ("greedy", {}, "unknown strategy 'greedy'"),
    ("single_task:normal", {}, "unknown task 'normal'"),
    ("taba", {}, "requires an information model"),
    ("taba", {"information": InformationModel(np.eye(3), 1.0, 1.0)}, "information has 3 tasks"),
    ("equal_budget", {"initial": np.zeros((5, 2), bool)}, r"initial has shape \(5, 2\)"),
    ("equal_budget", {"initial": np.ones((10, 2), bool)}, "initial allocation costs 20.0, which exceeds"),
    ("equal_budget", {"max_chunk": 1}, "apply only to strategy 'taba'"),
])
def test_bad_arguments_are_refused(strategy, kwargs, message):
    problem = BudgetProblem(["a", "b"], [1, 1], 10, 5)
    with pytest.raises((ValueError, TypeError), match=message):
        allocate(problem, strategy, **kwargs)


def test_share_grid_covers_the_simplex_and_fixed_shares_buy_their_fractions():
    from taba_jax.budget.strategies import share_strategies
    grid = share_strategies(3, 4)
    assert len(grid) == 2 * 15 and "shares:2/1/1:shared" in grid and "shares:0/0/4:disjoint" in grid
    interior = share_strategies(3, 4, interior=True)  # every task at least a quarter: 2/1/1 and its permutations
    assert sorted(interior) == sorted(f"shares:{w}:{m}" for m in ("shared", "disjoint")
                                      for w in ("2/1/1", "1/2/1", "1/1/2"))
    assert len(share_strategies(4, 6, interior=True)) == 2 * 10 and share_strategies(3, 2, interior=True) == []
    problem = BudgetProblem(["a", "b", "c"], [10.0, 3.0, 3.0], 200, 1200.0)
    shared = allocate(problem, "shares:2/1/1:shared", seed=0)
    disjoint = allocate(problem, "shares:2/1/1:disjoint", seed=0)
    for allocation in (shared, disjoint):
        np.testing.assert_array_equal(allocation.counts, [60, 100, 100])  # 600 / 10, 300 / 3, 300 / 3
    # shared: the 60 images of a are among the 100 of b and c, which are the same images
    assert (shared.labels[:, 0] <= shared.labels[:, 1]).all() and (shared.labels[:, 1] == shared.labels[:, 2]).all()
    assert disjoint.labels.sum(axis=1).max() == 2  # 260 labels over 200 images: as few per image as possible
    with pytest.raises(ValueError, match="needs 3 non-negative weights"):
        allocate(problem, "shares:1/1:shared")
