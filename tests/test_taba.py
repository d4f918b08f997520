import dataclasses
import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from taba_jax import taba, train
from taba_jax.budget import BudgetProblem, allocate
from taba_jax.config import TabaConfig, TrainConfig
from taba_jax.data import synthetic
from taba_jax.data.dataset import MultiTaskDataset
from taba_jax.data.synthetic import synthetic_dataset
from taba_jax.tasks import TaskSpec


def tiny_train_config(steps=8, widths=(8,)):
    return TrainConfig(num_steps=steps, batch_size=8, widths=widths, checkpoint_every=steps, log_every=steps,
                       warmup_steps=1, learning_rate=1e-2, eval_batch_size=64)


def tiny_taba_config(**overrides):
    return TabaConfig(**{"affinity_every": 2, **overrides})


def test_lookahead_affinity_matches_a_loop_and_moves_only_shared_parameters():
    def task_losses(params, x):
        features = jnp.tanh(x @ params["shared"])
        return jnp.stack([((features @ params[h] - y) ** 2).mean() for h, y in
                          (("head_a", x[:, :1]), ("head_b", x[:, 1:2] * 0.5))])

    key = jax.random.split(jax.random.key(0), 4)
    params = {"shared": jax.random.normal(key[0], (3, 4)), "head_a": jax.random.normal(key[1], (4, 1)),
              "head_b": jax.random.normal(key[2], (4, 1))}
    x = jax.random.normal(key[3], (16, 3))
    shared = {"shared": True, "head_a": False, "head_b": False}
    z = jax.jit(lambda p, x: taba.lookahead_affinity(task_losses, p, x, shared, 0.05))(params, x)
    before = task_losses(params, x)
    for s in range(2):
        grad = jax.grad(lambda p: task_losses(p, x)[s])(params)
        moved = dict(params, shared=params["shared"] - 0.05 * grad["shared"])
        np.testing.assert_allclose(z[s], 1 - task_losses(moved, x) / before, rtol=1e-4, atol=1e-6)


def test_normalized_lookahead_sees_a_rescaled_copy_of_a_task_as_fully_related():
    # Task b is task a with its loss multiplied by 10: the same information, a 10x larger gradient.
    def task_losses(params, x):
        loss = ((jnp.tanh(x @ params["shared"]) @ params["head"] - x[:, :1]) ** 2).mean()
        return jnp.stack([loss, 10.0 * loss])

    key = jax.random.split(jax.random.key(1), 3)
    params = {"shared": jax.random.normal(key[0], (3, 4)), "head": jax.random.normal(key[1], (4, 1))}
    x = jax.random.normal(key[2], (16, 3))
    shared = {"shared": True, "head": False}
    raw = taba.affinity_from_lookahead(taba.lookahead_affinity(task_losses, params, x, shared, 1e-3))
    normalized = taba.affinity_from_lookahead(
        taba.lookahead_affinity(task_losses, params, x, shared, 1e-3, normalize=True))
    # The raw step: b's large gradient looks fully helpful to a, a's only a tenth as helpful to b.
    assert raw[1, 0] == 1.0 and raw[0, 1] == pytest.approx(0.1, abs=0.02)
    np.testing.assert_allclose(normalized, np.ones((2, 2)), atol=0.02)


def test_affinity_from_lookahead_normalises_clips_and_drops_unlearnable_tasks():
    z = np.array([[[0.2, 0.1, 1e-5], [-0.1, 0.4, 1e-5], [0.0, 0.0, 1e-6]]] * 2)
    s = np.asarray(taba.affinity_from_lookahead(z))
    np.testing.assert_allclose(s, [[1, 0.25, 0], [0, 1, 0], [0, 0, 1]], atol=1e-6)


def test_curve_fit_recovers_a_known_slope():
    sizes = np.array([10, 20, 40, 80])
    gamma, a = np.array([0.3, 0.8, 0.05]), np.array([1.0, 0.0, -2.0])
    noise = np.exp(np.random.default_rng(0).normal(0, 0.01, (4, 3)))
    losses = np.exp(a - gamma * np.log(sizes)[:, None]) * noise
    fitted, intercept = taba.fit_learning_curves(sizes, losses, gamma_range=(0.01, 2.0))
    np.testing.assert_allclose(fitted, gamma, atol=0.03)
    np.testing.assert_allclose(intercept, a, atol=0.1)
    clipped, _ = taba.fit_learning_curves(sizes, losses, gamma_range=(0.1, 0.5))
    np.testing.assert_allclose(clipped, [0.3, 0.5, 0.1], atol=0.03)
    with pytest.raises(ValueError, match="at least two distinct"):
        taba.fit_learning_curves([10, 10], losses[:2])


def test_identical_tasks_have_affinity_near_one_and_random_targets_near_zero(tmp_path):
    images, targets = synthetic.generate(200, 16, 0)
    noise = np.random.default_rng(0).normal(size=targets["depth"].shape).astype(np.float32)
    dataset = MultiTaskDataset.from_arrays(
        images, {"a": targets["depth"], "b": targets["depth"].copy(), "random": noise},
        [TaskSpec(n, "dense_regression", 1) for n in ("a", "b", "random")])
    problem = BudgetProblem(["a", "b", "random"], [1.0, 1.0, 1.0], len(dataset.train), 4800.0)
    config = tiny_taba_config(gamma=(0.5,), affinity_every=3)
    estimate = taba.estimate_information(dataset, taba.pilot_allocation(problem, 160, 0), config,
                                         tiny_train_config(150, (8, 16)), 0, str(tmp_path))
    s = np.asarray(estimate.information.affinity)
    # Identical tasks inform each other (measured 0.73 and 0.63; their heads differ, so not 1), noise nothing.
    assert s[0, 1] > 0.5 and s[1, 0] > 0.5, s
    assert np.all(s[2, :2] < 0.1) and np.all(s[:2, 2] < 0.1), s
    assert estimate.lookahead.shape == (25, 3, 3) and estimate.affinity_steps[0] == 78


@pytest.fixture(scope="module")
def dataset():
    return synthetic_dataset(150, 16, seed=0, tasks=["segment", "depth", "classify"])


def run_taba(problem, dataset, config, seed, workdir, steps=8):
    return taba.run(problem, dataset, config, tiny_train_config(steps), seed, workdir)


def test_run_spends_within_budget_contains_the_pilot_and_reuses_its_estimate(dataset, tmp_path, monkeypatch):
    problem = BudgetProblem(dataset.task_names, [10.0, 3.0, 1.0], len(dataset.train), 1400.0)
    allocation, information = run_taba(problem, dataset, tiny_taba_config(), 3, str(tmp_path))
    pilot = taba.pilot_allocation(problem, taba.pilot_size(problem, 0.1), 3)
    assert pilot.labels.sum(axis=0).tolist() == [10, 10, 10]
    assert np.all(allocation.labels[pilot.labels]) and allocation.spent <= problem.budget
    assert problem.budget - allocation.spent < 1  # the greedy spends what it can (cheapest label costs 1)
    estimate = allocation.info["taba"]
    assert estimate["pilot_size"] == 10 and estimate["subset_sizes"] == [2, 5, 10]
    assert np.array(estimate["subset_losses"]).shape == (3, 3)
    errors = np.array(estimate["subset_errors"])  # primary-metric errors: 1 - mIoU, abs. error, 1 - accuracy
    assert errors.shape == (3, 3) and np.all(errors > 0) and np.all(errors[:, [0, 2]] <= 1)
    np.testing.assert_allclose(estimate["information"]["kappa"], 10.0)
    assert np.all((np.array(information.gamma) >= 0.05 - 1e-6) & (np.array(information.gamma) <= 1.5 + 1e-6))

    monkeypatch.setattr(train.Trainer, "train", lambda *a, **k: pytest.fail("the cached estimate was not used"))
    again, _ = run_taba(problem, dataset, tiny_taba_config(), 3, str(tmp_path))
    np.testing.assert_array_equal(again.labels, allocation.labels)


def test_a_variant_reuses_an_estimate_shared_for_its_pilot_only_when_it_estimates_alike(dataset, tmp_path,
                                                                                          monkeypatch):
    problem = BudgetProblem(dataset.task_names, [10.0, 3.0, 1.0], len(dataset.train), 1400.0)
    plain_dir, floor_dir, metric_dir = (str(tmp_path / name) for name in ("plain", "floor", "metric"))
    run_taba(problem, dataset, tiny_taba_config(), 3, plain_dir)
    trainings = []
    real_train = train.Trainer.train
    monkeypatch.setattr(train.Trainer, "train", lambda self, *a, **k: trainings.append(1) or real_train(self, *a, **k))
    taba.run(problem, dataset, tiny_taba_config(flat_slope_floor=True), tiny_train_config(8), 3,
             floor_dir, shared_workdirs=[plain_dir])
    assert trainings == []  # the floor acts after the pilot: the plain run's estimate serves it
    shared = json.loads((tmp_path / "plain" / taba.ESTIMATE_FILE).read_text())
    assert json.loads((tmp_path / "floor" / taba.ESTIMATE_FILE).read_text())["estimate"] == shared["estimate"]
    metric, _ = taba.run(problem, dataset, tiny_taba_config(curve_fit="metric"), tiny_train_config(8), 3, metric_dir,
                         shared_workdirs=[plain_dir])
    assert trainings == []  # another fit of the same measurements: refitted, not retrained
    estimate = metric.info["taba"]
    gamma, _ = taba.fit_learning_curves(estimate["subset_sizes"], np.array(estimate["subset_errors"]))
    np.testing.assert_allclose(estimate["information"]["gamma"], gamma)  # fitted to the errors, not the losses
    assert estimate["subset_errors"] == shared["estimate"]["subset_errors"]
    assert not np.allclose(gamma, shared["estimate"]["information"]["gamma"])
    taba.run(problem, dataset, tiny_taba_config(subset_fractions=(0.5,)), tiny_train_config(8), 3,
             str(tmp_path / "fractions"), shared_workdirs=[plain_dir])
    assert len(trainings) == 2  # other subsets are other measurements: the pilot and its half retrained


def test_a_round_measured_by_another_variant_is_reused_when_only_the_fit_or_the_model_differs(dataset, tmp_path,
                                                                                            monkeypatch):
    problem = BudgetProblem(dataset.task_names, [10.0, 3.0, 1.0], len(dataset.train), 1400.0)
    explore = dict(rounds=2, explore="equal_budget", subset_fractions=(0.5,))
    measured, _ = run_taba(problem, dataset, tiny_taba_config(**explore), 3, str(tmp_path / "explore"))
    monkeypatch.setattr(train.Trainer, "train", lambda *a, **k: pytest.fail("a shared measurement was retrained"))
    floored, _ = taba.run(problem, dataset, tiny_taba_config(**explore, refit_floor=True), tiny_train_config(8), 3,
                          str(tmp_path / "floor"), shared_workdirs=[str(tmp_path / "explore")])
    (first,), (second,) = measured.info["taba"]["rounds"], floored.info["taba"]["rounds"]
    assert first["points"] == second["points"] and (tmp_path / "floor" / "round2" / "points.json").exists()
    assert problem.budget - 1 < floored.spent <= problem.budget
    delta_m = tiny_taba_config(**explore, refit_floor=True, curve_fit="metric", objective="delta_m")
    predicted, _ = taba.run(problem, dataset, delta_m, tiny_train_config(8), 3, str(tmp_path / "delta_m"),
                            shared_workdirs=[str(tmp_path / "explore")])
    (third,) = predicted.info["taba"]["rounds"]
    assert third["points"] == first["points"] and third["information"]["weights"] != second["information"]["weights"]
    # another transfer cap: the same trainings, U recomputed under the asking model (no transfer: own labels)
    uncapped, _ = taba.run(problem, dataset, tiny_taba_config(**explore, transfer_cap=0.0), tiny_train_config(8), 3,
                           str(tmp_path / "cap0"), shared_workdirs=[str(tmp_path / "explore")])
    (fourth,) = uncapped.info["taba"]["rounds"]
    assert fourth["points"]["losses"] == first["points"]["losses"]
    np.testing.assert_allclose(fourth["points"]["information"], fourth["points"]["labels"], rtol=1e-6)


def known_probe(labels, elasticity, seed=0):
    """A TransferProbe whose errors follow e_t = prod_s n_s^b[s, t] exactly, each task's labels halved in its cut."""
    labels = np.asarray(labels, np.float64)
    cut_labels = np.where(np.eye(len(labels), dtype=bool), labels / 2, labels)  # row s: task s's labels halved
    errors, cut_errors = np.exp(np.log(labels) @ elasticity), np.exp(np.log(cut_labels) @ elasticity)
    return taba.TransferProbe(seed, labels, np.ones_like(labels), errors, cut_labels, np.ones_like(cut_labels),
                              cut_errors)


def test_a_transfer_probe_recovers_known_elasticities_and_their_affinity():
    elasticity = np.array([[-0.4, -0.1, 0.05], [0.0, -0.3, -0.2], [-0.05, 0.0, -0.5]])  # b[s, t]
    probe = known_probe([100.0, 200.0, 400.0], elasticity)
    labels, errors, cut_labels = probe.labels, probe.errors, probe.cut_labels
    np.testing.assert_allclose(taba.probe_elasticity(labels, errors, cut_labels, probe.cut_errors), elasticity,
                               atol=1e-12)
    # S[s, t] = b[s, t] / b[t, t] * n_t / n_s, harm (b > 0) read as none, 1 on the diagonal
    expected = np.array([[1.0, 0.1 / 0.3 * 2, 0.0], [0.0, 1.0, 0.2 / 0.5 * 2], [0.05 / 0.4 / 4, 0.0, 1.0]])
    np.testing.assert_allclose(taba.probed_affinity([probe]), expected, atol=1e-12)
    assert taba.TransferProbe.from_json(json.loads(json.dumps(probe.to_json()))).to_json() == probe.to_json()
    # a task whose own labels did not lower its error gives no unit: its column stays 0 off the diagonal
    flat = elasticity.copy()
    flat[2, 2] = 0.02
    np.testing.assert_array_equal(known_probe(labels, flat).affinity()[:, 2], [0.0, 0.0, 1.0])
    # repeats: S is the mean of the probes' readings, each read at its own whole-set model
    other = known_probe(labels, elasticity * 1.5, seed=1)  # the same transfer, steeper: the same S
    weaker = known_probe(labels, elasticity * np.where(np.eye(3), 1.0, 0.5), seed=2)  # half the cross-elasticities
    np.testing.assert_allclose(taba.probed_affinity([probe, other]), expected, atol=1e-12)
    np.testing.assert_allclose(taba.probed_affinity([probe, weaker]), (expected + weaker.affinity()) / 2, atol=1e-12)
    np.testing.assert_allclose(weaker.affinity(), np.where(np.eye(3), 1.0, expected / 2), atol=1e-12)
    # a cut that removed none of the task's labels, or left none, measures nothing
    for kept in (labels[1], 0.0):
        cut = cut_labels.copy()
        cut[1, 1] = kept
        measured = taba.probe_elasticity(labels, errors, cut, probe.cut_errors)
        assert np.isnan(measured[1]).all() and np.isfinite(np.delete(measured, 1, axis=0)).all()


def test_transfer_probe_cuts_each_task_once_takes_the_round_s_affinity_from_it_and_repeats_average_it(dataset, tmp_path,
                                                                                                        monkeypatch):
    problem = BudgetProblem(dataset.task_names, [10.0, 3.0, 1.0], len(dataset.train), 1400.0)
    explore = dict(rounds=2, explore="equal_budget", subset_fractions=(0.5,))
    run_taba(problem, dataset, tiny_taba_config(**explore), 3, str(tmp_path / "explore"))
    trainings = []
    real_train = train.Trainer.train
    monkeypatch.setattr(train.Trainer, "train", lambda self, *a, **k: trainings.append(1) or real_train(self, *a, **k))
    config = tiny_taba_config(**explore, transfer_probe=0.5)
    probed, information = taba.run(problem, dataset, config, tiny_train_config(8), 3, str(tmp_path / "probe"),
                                   shared_workdirs=[str(tmp_path / "explore")])
    assert len(trainings) == 3  # the pilot and the round's subsets shared: one model per task cut
    (round2,) = probed.info["taba"]["rounds"]
    points = taba.CurvePoints.from_json(round2["points"])
    (probe,) = (taba.TransferProbe.from_json(p) for p in round2["transfer_probe"])
    assert probe.seed == 3 and probe.cut_losses.shape == (3, 3) and not np.allclose(probe.cut_losses, probe.cut_errors)
    np.testing.assert_array_equal(probe.errors, points.errors[-1])  # read against the round's whole-set model
    np.testing.assert_array_equal(np.diag(probe.cut_labels), np.round(points.labels[-1] / 2))
    off = ~np.eye(3, dtype=bool)
    np.testing.assert_array_equal(probe.cut_labels[off], np.broadcast_to(points.labels[-1], (3, 3))[off])
    np.testing.assert_allclose(information.affinity, probe.affinity(), atol=1e-6)
    # the round's U is that of the probed S (the explored set's cached points, U under the asking model)
    pilot = taba.pilot_allocation(problem, taba.pilot_size(problem, 0.1), 3)
    pilot_cost = problem.cost_of(pilot.labels)
    halfway = BudgetProblem(problem.task_names, problem.costs, problem.num_images,
                            pilot_cost + (problem.budget - pilot_cost) / 2)
    explored = allocate(halfway, "equal_budget", initial=pilot, seed=3)
    under_probed_s = taba.measure_curve_points(dataset, explored, information, config, tiny_train_config(8), 3,
                                               str(tmp_path / "probe" / "round2"))
    np.testing.assert_allclose(points.information, under_probed_s.information, rtol=1e-6)
    assert len(trainings) == 3 and problem.budget - 1 < probed.spent <= problem.budget

    # two repeats: the first shared with the single probe, the second trains its own whole set and cuts
    repeated, repeated_information = taba.run(problem, dataset, dataclasses.replace(config, transfer_probe_repeats=2),
                                              tiny_train_config(8), 3, str(tmp_path / "repeats"),
                                              shared_workdirs=[str(tmp_path / "explore"), str(tmp_path / "probe")])
    assert len(trainings) == 3 + 4
    first, second = (taba.TransferProbe.from_json(p) for p in repeated.info["taba"]["rounds"][0]["transfer_probe"])
    assert first.to_json() == probe.to_json() and second.seed == taba.probe_seed(3, 1) != 3
    np.testing.assert_array_equal(second.labels, points.labels[-1])
    assert not np.allclose(second.errors, probe.errors) and not np.allclose(second.cut_errors, probe.cut_errors)
    np.testing.assert_allclose(repeated_information.affinity, (probe.affinity() + second.affinity()) / 2, atol=1e-6)

    monkeypatch.setattr(train.Trainer, "train", lambda *a, **k: pytest.fail("the probe's trainings were not cached"))
    again, _ = taba.run(problem, dataset, config, tiny_train_config(8), 3, str(tmp_path / "probe"))
    np.testing.assert_array_equal(again.labels, probed.labels)
    # a whole-set cache in the one-model layout, (T,) per value as the sweeps' caches hold it, reads the same
    whole_cache = tmp_path / "repeats" / "round2" / "probe_repeat1" / "whole.json"
    saved = json.loads(whole_cache.read_text())
    assert np.shape(saved["losses"]) == (1, 3)
    whole_cache.write_text(json.dumps({**saved, "losses": saved["losses"][0], "errors": saved["errors"][0]}))
    again, _ = taba.run(problem, dataset, dataclasses.replace(config, transfer_probe_repeats=2), tiny_train_config(8),
                        3, str(tmp_path / "repeats"))
    np.testing.assert_array_equal(again.labels, repeated.labels)
    assert again.info["taba"]["rounds"][0]["transfer_probe"] == repeated.info["taba"]["rounds"][0]["transfer_probe"]


def test_rounds_refit_on_the_labels_reached_stay_within_budget_and_reuse_their_trainings(dataset, tmp_path,
                                                                                          monkeypatch):
    problem = BudgetProblem(dataset.task_names, [10.0, 3.0, 1.0], len(dataset.train), 1400.0)
    config = tiny_taba_config(rounds=2, curve_fit="metric", objective="delta_m", subset_fractions=(0.5,))
    allocation, information = run_taba(problem, dataset, config, 3, str(tmp_path))
    pilot = taba.pilot_allocation(problem, taba.pilot_size(problem, 0.1), 3)
    assert np.all(allocation.labels[pilot.labels]) and problem.budget - 1 < allocation.spent <= problem.budget
    (round2,) = allocation.info["taba"]["rounds"]
    pilot_cost = problem.cost_of(pilot.labels)
    halfway = pilot_cost + (problem.budget - pilot_cost) / 2
    assert halfway - 1 < round2["spent"] <= halfway  # round 1 spent half of what the pilot left
    points = taba.CurvePoints.from_json(round2["points"])
    assert points.labels.shape == (2, 3) and np.all(points.labels[1] >= 10)  # the whole round-1 set, pilot in it
    np.testing.assert_array_equal(points.labels[0], np.round(points.labels[1] / 2))
    assert np.all(points.information >= points.labels - 1e-4)  # each own label gives U_t = 1, others add
    np.testing.assert_allclose(np.mean(information.weights), 1.0, rtol=1e-6)  # delta_m weights, recomputed
    np.testing.assert_allclose(round2["information"]["weights"], information.weights, rtol=1e-6)

    monkeypatch.setattr(train.Trainer, "train", lambda *a, **k: pytest.fail("the cached trainings were not used"))
    again, _ = run_taba(problem, dataset, config, 3, str(tmp_path))
    np.testing.assert_array_equal(again.labels, allocation.labels)


def test_explore_spends_the_first_round_by_the_heuristic_then_the_greedy_spends_the_rest(dataset, tmp_path):
    problem = BudgetProblem(dataset.task_names, [10.0, 3.0, 1.0], len(dataset.train), 1400.0)
    config = tiny_taba_config(rounds=2, explore="equal_budget", subset_fractions=(0.5,))
    allocation, _ = run_taba(problem, dataset, config, 3, str(tmp_path))
    pilot = taba.pilot_allocation(problem, taba.pilot_size(problem, 0.1), 3)
    pilot_cost = problem.cost_of(pilot.labels)
    halfway = BudgetProblem(problem.task_names, problem.costs, problem.num_images,
                            pilot_cost + (problem.budget - pilot_cost) / 2)
    explored = allocate(halfway, "equal_budget", initial=pilot, seed=3)
    (round2,) = allocation.info["taba"]["rounds"]
    assert round2["spent"] == pytest.approx(explored.spent)
    points = taba.CurvePoints.from_json(round2["points"])
    np.testing.assert_array_equal(points.labels[1], explored.labels.sum(axis=0))  # refit on the explored set
    assert np.all(allocation.labels[explored.labels]) and problem.budget - 1 < allocation.spent <= problem.budget


def test_refit_fits_each_task_on_its_own_information_and_keeps_tasks_without_own_labels():
    information = np.array([[10.0, 3.0], [20.0, 6.0], [40.0, 12.0]])
    errors = np.stack([2.0 * information[:, 0] ** -0.4, 0.5 * information[:, 1] ** -0.8], axis=1)
    labels = np.array([[10, 0], [20, 0], [40, 5]], np.float64)  # task 1 has own labels in one subset only
    points = taba.CurvePoints(labels, information, errors * 3, errors)
    gamma, intercept = taba.refit_learning_curves(points, points.errors, [0.1, 0.1], [0.0, 0.0], (0.01, 2.0))
    np.testing.assert_allclose([gamma[0], intercept[0]], [0.4, np.log(2.0)], rtol=1e-6)
    assert (gamma[1], intercept[1]) == (0.1, 0.0)
    both = taba.CurvePoints(np.ones_like(labels), information, errors, errors)
    gamma, intercept = taba.refit_learning_curves(both, both.errors, [0.1, 0.1], [0.0, 0.0], (0.01, 2.0))
    np.testing.assert_allclose(gamma, [0.4, 0.8], rtol=1e-6)
    np.testing.assert_allclose(intercept, np.log([2.0, 0.5]), rtol=1e-6)


def test_floored_curve_fit_recovers_a_known_floor_and_a_pure_power_law_has_none():
    sizes = np.array([10.0, 40.0, 160.0])
    gamma, floor, scale, share = taba.fit_floored_curve(sizes, 0.2 + 3.0 * sizes ** -0.5, kappa=10.0)
    np.testing.assert_allclose([gamma, floor, scale], [0.5, 0.2, 3.0], rtol=0.05)  # within the slope grid's step
    np.testing.assert_allclose(share, scale * 10 ** -gamma / (floor + scale * 10 ** -gamma), rtol=1e-9)
    gamma, floor, _, share = taba.fit_floored_curve(sizes, 2.0 * sizes ** -0.8, kappa=10.0)
    assert floor < 0.1 * (2.0 * 160 ** -0.8) and share > 0.95 and abs(gamma - 0.8) < 0.1
    with pytest.raises(ValueError, match="at least three distinct"):
        taba.fit_floored_curve([10.0, 20.0, 20.0], [1.0, 0.5, 0.5], kappa=10.0)


def test_refit_floor_weights_a_flattened_task_below_one_still_falling():
    information = np.array([[100.0, 100.0, 5.0], [200.0, 200.0, 5.0], [400.0, 400.0, 5.0]])
    losses = np.stack([0.1 + 5.0 * information[:, 0] ** -1.0,  # flattened near its floor 0.1
                       3.0 * information[:, 1] ** -0.5, np.full(3, 0.7)], axis=1)  # still falling; no own labels
    labels = np.array([[100, 100, 0], [200, 200, 0], [400, 400, 0]], np.float64)
    points = taba.CurvePoints(labels, information, losses, losses)
    model = taba.information_model(tiny_taba_config(), 3, np.eye(3), [0.3, 0.3, 0.3], default_kappa=20.0)
    config = tiny_taba_config(rounds=2, refit_floor=True)
    refitted, _ = taba.refit_information(model, np.zeros(3), points, config, [], pool_size=1000)
    weights, gamma = np.asarray(refitted.weights), np.asarray(refitted.gamma)
    np.testing.assert_allclose(gamma[:2], [1.0, 0.5], rtol=0.05)
    assert weights[0] < 0.9 < 0.99 < weights[1] and weights[2] == 1.0 and gamma[2] == pytest.approx(0.3)
    plain, _ = taba.refit_information(model, np.zeros(3), points, tiny_taba_config(rounds=2), [], pool_size=1000)
    np.testing.assert_allclose(plain.weights, 1.0)  # without the option: METHOD's unweighted power law


def test_refit_floor_with_delta_m_weights_each_task_by_its_removable_error_over_its_floored_reference():
    gamma = np.geomspace(0.05, 1.5, 64)[45]  # a slope on the fit's grid (about 0.54): recovered exactly
    information = np.array([[50.0] * 3, [100.0] * 3, [200.0] * 3])
    errors = np.stack([0.1 + 2.0 * information[:, 0] ** -gamma,  # abs. error with a floor of 0.1
                       1.0 * information[:, 1] ** -gamma,  # abs. error with no floor
                       0.3 + 1.0 * information[:, 2] ** -gamma], axis=1)  # 1 - mIoU, floor 0.3
    points = taba.CurvePoints(information, information, errors, errors)
    tasks = [types.SimpleNamespace(higher_is_better=h) for h in (False, False, True)]
    kappa, pool = 16.0, 10_000
    model = taba.information_model(tiny_taba_config(), 3, np.eye(3), [0.3] * 3, default_kappa=kappa)
    config = tiny_taba_config(rounds=2, refit_floor=True, curve_fit="metric", objective="delta_m")
    refitted, _ = taba.refit_information(model, np.zeros(3), points, config, tasks, pool_size=pool)
    removable = np.array([2.0, 1.0, 1.0]) * kappa ** -gamma  # b kappa^-gamma
    at_pool = np.array([0.1, 0.0, 0.3]) + np.array([2.0, 1.0, 1.0]) * pool ** -gamma
    expected = removable / np.array([at_pool[0], at_pool[1], 1.0 - at_pool[2]])  # Delta_m points per unit gain
    np.testing.assert_allclose(refitted.weights, expected / expected.mean(), rtol=1e-6)
    np.testing.assert_allclose(refitted.gamma, gamma, rtol=1e-6)


def test_local_delta_m_scales_each_floored_curve_to_the_delta_m_its_metric_measured_along_it():
    """Three tasks with the same loss curve: a metric error linear in the curve gets the weight that
    makes one unit of curve one Delta_m point (its slope over the metric at the largest subset), so the
    weights stand in exactly that ratio; a noisy point moves the weight by the least-squares line through
    all points, or through the last doubling alone with local_points=2; a metric that got worse gives 0,
    or, with local_mix, that share of its weight plus the rest of its floored curve's reducible share."""
    information = np.array([[25.0] * 3, [50.0] * 3, [100.0] * 3, [200.0] * 3])
    losses = np.stack([0.1 + 2.0 * information[:, 0] ** -0.5] * 3, axis=1)
    tasks = [types.SimpleNamespace(higher_is_better=h) for h in (True, False, True)]
    model = taba.information_model(tiny_taba_config(), 3, np.eye(3), [0.3] * 3, default_kappa=16.0)

    def refit(errors, local_points=None, losses=losses, **fields):
        config = tiny_taba_config(rounds=2, refit_floor=True, local_points=local_points,
                                  **{"objective": "delta_m_local", **fields})
        points = taba.CurvePoints(information, information, losses, errors)
        refitted, _ = taba.refit_information(model, np.zeros(3), points, config, tasks, pool_size=1000)
        return np.asarray(refitted.weights), np.asarray(taba.curve_values(refitted, information))[:, 0]

    _, curve = refit(np.full((4, 3), 0.3))  # the curve is fitted on the losses: errors leave it alone
    slope = np.array([0.5, 0.2, -0.1])  # 1 - mIoU, an absolute error, 1 - F1 (rising: got worse)
    errors = 0.05 + slope * (curve[-1] - curve)[:, None]  # the curve (loss reduction) rises with labels
    assert (np.diff(errors[:, :2], axis=0) < 0).all() and (np.diff(errors[:, 2]) > 0).all()
    metric = np.array([1 - errors[-1, 0], errors[-1, 1]])
    weights, _ = refit(errors)
    assert weights[2] == 0.0 and weights.mean() == pytest.approx(1.0)
    assert weights[1] / weights[0] == pytest.approx((slope[1] / metric[1]) / (slope[0] / metric[0]), rel=1e-6)

    noisy = errors.copy()
    noisy[2, 0] += 0.02  # one measurement off the line
    noisy_weights, _ = refit(noisy)
    line = -np.polyfit(curve, noisy[:, 0] / metric[0], 1)[0]
    assert noisy_weights[1] / noisy_weights[0] == pytest.approx((slope[1] / metric[1]) / line, rel=1e-6)
    last_doubling, _ = refit(noisy, local_points=2)  # through the two largest points only
    difference = (noisy[2, 0] - noisy[3, 0]) / metric[0] / (curve[3] - curve[2])
    assert last_doubling[1] / last_doubling[0] == pytest.approx((slope[1] / metric[1]) / difference, rel=1e-6)

    floors = 0.1 + 2.0 * information[:, :1] ** -0.5 + np.array([0.0, 0.5, 2.0])  # other floors, other shares
    shares, _ = refit(errors, losses=floors, objective="relative")  # each floored curve's reducible share
    assert shares[0] > 2 * shares[2] > 0
    calibrated, _ = refit(errors, losses=floors)
    mixed, _ = refit(errors, losses=floors, local_mix=0.5)
    np.testing.assert_allclose(mixed, 0.5 * calibrated + 0.5 * shares / shares.mean(), rtol=1e-6)
    assert calibrated[2] == 0.0 and mixed[2] > 0  # a metric that got worse keeps half its share
    with pytest.raises(ValueError, match="'delta_m_local' weights the refit's floored curves: it needs refit_floor"):
        tiny_taba_config(rounds=2, objective="delta_m_local")


def test_refit_floor_with_delta_m_on_losses_maps_each_loss_to_its_metric_error_by_a_line():
    gamma = np.geomspace(0.05, 1.5, 64)[45]  # on the fit's grid: recovered exactly
    information = np.array([[50.0] * 3, [100.0] * 3, [200.0] * 3])
    losses = np.stack([0.1 + 2.0 * information[:, t] ** -gamma for t in range(3)], axis=1)
    alpha, beta = np.array([0.05, -0.105, 0.2]), np.array([0.5, 1.0, 0.1])  # error = alpha + beta * loss
    errors = alpha + beta * losses
    points = taba.CurvePoints(information, information, losses, errors)
    tasks = [types.SimpleNamespace(higher_is_better=h) for h in (False, False, True)]
    kappa, pool = 16.0, 10_000
    model = taba.information_model(tiny_taba_config(), 3, np.eye(3), [0.3] * 3, default_kappa=kappa)
    config = tiny_taba_config(rounds=2, refit_floor=True, objective="delta_m")
    refitted, _ = taba.refit_information(model, np.zeros(3), points, config, tasks, pool_size=pool)
    loss_at_pool = 0.1 + 2.0 * pool ** -gamma
    reference = alpha + beta * loss_at_pool
    # task 1's line crosses 0 before the pool: its reference is held at a tenth of its smallest error
    assert reference[1] < 0.1 * errors[:, 1].min()
    reference = np.array([reference[0], 0.1 * errors[:, 1].min(), 1.0 - reference[2]])
    expected = beta * 2.0 * kappa ** -gamma / reference
    np.testing.assert_allclose(refitted.weights, expected / expected.mean(), rtol=1e-6)
    np.testing.assert_allclose(refitted.gamma, gamma, rtol=1e-6)


def test_metric_error_map_fits_a_line_per_task_over_its_own_points():
    values = np.array([[4.0, 1.0, 2.0], [2.0, 1.0, 1.0], [1.0, 9.0, 0.5]])
    errors = np.array([[0.9, 0.2, 0.1], [0.5, 0.3, 0.2], [0.3, 0.4, 0.3]])
    rows = np.array([[True, True, True], [True, True, True], [True, False, True]])
    alpha, beta, smallest = taba.metric_error_map(values, errors, rows)
    slope, intercept = np.polyfit(values[:, 0], errors[:, 0], 1)
    np.testing.assert_allclose([alpha[0], beta[0]], [intercept, slope])
    # task 1: one distinct value among its own rows: the line through the origin and its last point
    np.testing.assert_allclose([alpha[1], beta[1]], [0.0, 0.3])
    # task 2: the error rises as the loss falls: worth nothing more (beta 0, the mean error)
    np.testing.assert_allclose([alpha[2], beta[2]], [0.2, 0.0])
    np.testing.assert_allclose(smallest, [0.3, 0.2, 0.1])


def test_delta_m_on_losses_from_the_pilot_maps_its_subsets_losses_to_errors():
    sizes, losses = [5, 10, 20], np.array([[2.0, 1.0], [1.0, 0.7], [0.5, 0.49]])
    errors = np.stack([0.1 + 0.2 * losses[:, 0], 0.5 * losses[:, 1]], axis=1)
    tasks = [types.SimpleNamespace(name=n, higher_is_better=False) for n in ("a", "b")]
    config = tiny_taba_config(objective="delta_m")
    estimate = taba.fit_estimate(config, tasks, 1000, 20, [10], np.ones((1, 2, 2)), sizes, losses, errors)
    gamma, intercept = taba.fit_learning_curves(sizes, losses)
    expected = taba.delta_m_weights(gamma, intercept, [20.0, 20.0], 1000, [False, False],
                                    taba.metric_error_map(losses, errors))
    np.testing.assert_allclose(estimate.information.weights, expected, rtol=1e-6)
    unmapped = taba.delta_m_weights(gamma, intercept, [20.0, 20.0], 1000, [False, False])
    assert not np.allclose(expected, unmapped)


def test_delta_m_weights_by_hand():
    # Both curves E(U) = U^-0.5: E(0) = kappa^-0.5 = 0.5, E(pool of 100) = 0.1. An error (lower is better)
    # has reference metric 0.1, a score 1 - 0.1 = 0.9: weights 0.5/0.1 = 5 and 0.5/0.9, normalised to mean 1.
    weights = taba.delta_m_weights([0.5, 0.5], [0.0, 0.0], [4.0, 4.0], 100, [False, True])
    np.testing.assert_allclose(weights, np.array([5.0, 5.0 / 9.0]) / ((5.0 + 5.0 / 9.0) / 2), rtol=1e-9)
    # A score whose curve predicts more than 0.95 at the whole pool is held at a reference of 0.05.
    at_pool = 10.0 ** -0.01  # 0.977: a score of 0.023
    weights = taba.delta_m_weights([0.01, 0.01], [0.0, 0.0], [1.0, 1.0], 10, [True, False])
    np.testing.assert_allclose(weights / weights[1], [at_pool / 0.05, 1.0], rtol=1e-9)
    # Losses that the metric does not follow (beta 0 for every task): equal weights, not 0/0.
    flat = (np.array([0.3, 0.2]), np.zeros(2), np.array([0.3, 0.2]))
    np.testing.assert_array_equal(taba.delta_m_weights([0.5, 0.5], [0.0, 0.0], [4.0, 4.0], 100, [False, True], flat),
                                  [1.0, 1.0])


def test_known_affinity_and_curves_skip_the_pilot(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(train.Trainer, "train", lambda *a, **k: pytest.fail("nothing should be trained"))
    problem = BudgetProblem(dataset.task_names, [10.0, 3.0, 1.0], len(dataset.train), 500.0)
    config = tiny_taba_config(affinity=((1, 0.5, 0), (0.5, 1, 0), (0, 0, 1)), gamma=(0.5, 0.4, 0.2), kappa=(20,))
    allocation, information = run_taba(problem, None, config, 0, str(tmp_path))
    assert allocation.spent <= 500 and "taba" not in allocation.info
    np.testing.assert_allclose(information.gamma, [0.5, 0.4, 0.2])


def test_metric_curve_fit_takes_the_slopes_of_the_primary_metric_errors(dataset, tmp_path):
    problem = BudgetProblem(dataset.task_names, [10.0, 3.0, 1.0], len(dataset.train), 1400.0)
    config = tiny_taba_config(curve_fit="metric", gamma_range=(0.001, 5.0))
    _, information = run_taba(problem, dataset, config, 3, str(tmp_path))
    estimate = taba.Estimate.from_json(json.loads((tmp_path / taba.ESTIMATE_FILE).read_text())["estimate"])
    by_errors, _ = taba.fit_learning_curves(estimate.subset_sizes, estimate.subset_errors, (0.001, 5.0))
    by_losses, _ = taba.fit_learning_curves(estimate.subset_sizes, estimate.subset_losses, (0.001, 5.0))
    np.testing.assert_allclose(information.gamma, by_errors, rtol=1e-6)
    assert not np.allclose(by_errors, by_losses)


def test_shrunk_slopes_move_toward_their_mean_and_keep_each_curve_at_the_pilot_size():
    gamma, intercept = np.array([0.1, 0.5, 0.3]), np.array([1.0, 2.0, -0.5])
    shrunk, moved = taba.shrink_slopes(gamma, intercept, 10.0, 0.5)
    np.testing.assert_allclose(shrunk, [0.2, 0.4, 0.3])
    np.testing.assert_allclose(moved - shrunk * np.log(10.0), intercept - gamma * np.log(10.0))  # same value at 10
    np.testing.assert_allclose(taba.shrink_slopes(gamma, intercept, 10.0, 0.0)[0], gamma)
    np.testing.assert_allclose(taba.shrink_slopes(gamma, intercept, 10.0, 1.0)[0], [0.3, 0.3, 0.3])


def test_pilot_slopes_are_shrunk_toward_their_mean(dataset, tmp_path):
    problem = BudgetProblem(dataset.task_names, [10.0, 3.0, 1.0], len(dataset.train), 1400.0)
    config = tiny_taba_config(gamma_shrinkage=0.5, gamma_range=(0.001, 5.0))
    _, information = run_taba(problem, dataset, config, 3, str(tmp_path))
    estimate = taba.Estimate.from_json(json.loads((tmp_path / taba.ESTIMATE_FILE).read_text())["estimate"])
    fitted, _ = taba.fit_learning_curves(estimate.subset_sizes, estimate.subset_losses, (0.001, 5.0))
    np.testing.assert_allclose(information.gamma, 0.5 * fitted + 0.5 * fitted.mean(), rtol=1e-6)
    assert not np.allclose(fitted, fitted.mean())  # the shrinkage was not vacuous


def test_floor_tops_up_only_the_tasks_at_the_lower_clip():
    problem = BudgetProblem(["seg", "depth", "edge"], [10.0, 3.0, 2.0], 400, 1500.0)
    pilot = taba.pilot_allocation(problem, 10, seed=0)
    floored, names = taba.floor_flat_tasks(problem, pilot, [0.05, 0.4, 0.05], (0.05, 1.5), seed=0)
    assert names == ["seg", "edge"]
    np.testing.assert_array_equal(floored.counts, [50, 10, 250])  # equal_budget's 50 and 250; depth keeps the pilot's
    assert np.all(floored.labels[pilot.labels])


def test_flat_slope_floor_runs_the_greedy_from_the_floor_on_the_same_estimate(dataset, tmp_path, monkeypatch):
    problem = BudgetProblem(dataset.task_names, [10.0, 3.0, 1.0], len(dataset.train), 1400.0)
    plain, information = run_taba(problem, dataset, tiny_taba_config(gamma_range=(1.0, 1.5)), 3, str(tmp_path))
    assert np.allclose(information.gamma, 1.0), "the tiny pilot's slopes were expected far below the clip"
    monkeypatch.setattr(train.Trainer, "train", lambda *a, **k: pytest.fail("the floor re-estimated the pilot"))
    floored, _ = run_taba(problem, dataset, tiny_taba_config(gamma_range=(1.0, 1.5), flat_slope_floor=True), 3,
                          str(tmp_path))
    assert floored.info["taba"]["floored_tasks"] == list(problem.task_names)
    assert plain.info["taba"]["floored_tasks"] == []
    pilot = taba.pilot_allocation(problem, taba.pilot_size(problem, 0.1), 3)
    start, _ = taba.floor_flat_tasks(problem, pilot, information.gamma, (1.0, 1.5), seed=3)
    assert np.all(floored.labels[start.labels])  # the greedy spent the rest from the floor
    assert np.all(floored.counts >= allocate(problem, "equal_budget").counts)
    assert problem.budget - 1 < floored.spent <= problem.budget


def test_a_floor_beyond_the_first_rounds_share_leaves_that_round_nothing_to_buy(dataset, tmp_path):
    problem = BudgetProblem(dataset.task_names, [10.0, 3.0, 1.0], len(dataset.train), 1400.0)
    config = tiny_taba_config(gamma_range=(1.0, 1.5), flat_slope_floor=True, rounds=2, explore="equal_budget")
    allocation, _ = run_taba(problem, dataset, config, 3, str(tmp_path))
    pilot = taba.pilot_allocation(problem, taba.pilot_size(problem, 0.1), 3)
    floor, _ = taba.floor_flat_tasks(problem, pilot, [1.0, 1.0, 1.0], (1.0, 1.5), seed=3)
    first_share = pilot.spent + (problem.budget - pilot.spent) / 2
    assert floor.spent > first_share, "every task floored was expected to spend past the first round's share"
    rounds = allocation.info["taba"]["rounds"]
    assert allocation.info["taba"]["floored_tasks"] == list(problem.task_names)
    assert len(rounds) == 1 and rounds[0]["spent"] == floor.spent  # the exploration round bought nothing
    assert np.all(allocation.labels[floor.labels]) and allocation.spent <= problem.budget


def test_primary_error_falls_as_the_task_is_learned():
    assert taba.primary_error({"primary": 0.8, "higher_is_better": True}) == pytest.approx(0.2)
    assert taba.primary_error({"primary": 0.3, "higher_is_better": False}) == 0.3


def test_no_affinity_measurement_is_a_clear_error(dataset, tmp_path):
    problem = BudgetProblem(dataset.task_names, [10.0, 3.0, 1.0], len(dataset.train), 1400.0)
    config = tiny_taba_config(affinity_every=5, gamma=(0.5,))
    with pytest.raises(ValueError, match="no affinity measurement in 4 pilot steps with config.taba.affinity_every=5"):
        run_taba(problem, dataset, config, 0, str(tmp_path), steps=4)


def test_pilot_too_small_is_a_clear_error():
    problem = BudgetProblem(["a", "b"], [10.0, 10.0], 100, 300.0)
    with pytest.raises(ValueError, match=r"config.taba.rho=0.1 of budget 300 buys 1 fully labeled pilot images"):
        taba.pilot_size(problem, 0.1)


def test_same_seed_gives_the_same_estimate_and_allocation(dataset, tmp_path):
    problem = BudgetProblem(dataset.task_names, [10.0, 3.0, 1.0], len(dataset.train), 1400.0)
    config = tiny_taba_config(gamma=(0.5,))
    first, _ = run_taba(problem, dataset, config, 5, str(tmp_path / "a"))
    second, _ = run_taba(problem, dataset, config, 5, str(tmp_path / "b"))
    np.testing.assert_array_equal(first.labels, second.labels)
    assert first.info["taba"]["lookahead"] == second.info["taba"]["lookahead"]


def test_information_model_takes_given_values_over_estimates():
    config = tiny_taba_config(gamma=(0.3,), weights=(1, 2))
    model = taba.information_model(config, 2, affinity=np.eye(2), gamma=np.array([0.9, 0.9]), default_kappa=40.0,
                                   task_names=["a", "b"])
    np.testing.assert_allclose(model.gamma, [0.3, 0.3])
    np.testing.assert_allclose(model.kappa, [40.0, 40.0])
    np.testing.assert_allclose(model.weights, [1.0, 2.0])
    assert model.task_names == ("a", "b") and "tasks=['a', 'b']" in repr(model)


def test_estimation_without_images_is_a_clear_error(tmp_path):
    problem = BudgetProblem(["a", "b"], [1.0, 1.0], 100, 50.0)
    with pytest.raises(ValueError, match="TABA needs images to estimate"):
        run_taba(problem, None, tiny_taba_config(gamma=(0.5,)), 0, str(tmp_path))
