import dataclasses

import numpy as np
import pytest

from taba_jax import experiment, report, transfer

TASKS = ("a", "b", "c")
# b[s, t]: a's labels help b, c's labels hurt a, b's labels do nothing for the others
TRUE = np.array([[-0.40, -0.20, 0.00],
                 [0.00, -0.30, 0.00],
                 [0.15, 0.00, -0.25]])


def sweep(num_seeds=6, runs_per_seed=30, noise=0.02, seed=0):
    """Records whose errors follow log e_t = a_seed,t + sum_s TRUE[s, t] log n_s + noise, on
    allocations drawn at random; `a` is a higher-is-better metric, `b` and `c` errors."""
    rng = np.random.default_rng(seed)
    records = []
    for s in range(num_seeds):
        offset = rng.normal(0, 0.3, len(TASKS))
        for run in range(runs_per_seed):
            labels = np.round(np.exp(rng.uniform(np.log(20), np.log(800), len(TASKS)))).astype(int)
            log_error = offset + np.log(labels) @ TRUE + rng.normal(0, noise, len(TASKS))
            error = np.exp(log_error - 2.0)
            metrics = {"a": {"primary": 1.0 - error[0], "higher_is_better": True},
                       "b": {"primary": error[1], "higher_is_better": False},
                       "c": {"primary": error[2], "higher_is_better": False}}
            records.append(experiment.ExperimentRecord(
                setting="s", tasks=TASKS, strategy=f"run{run}", budget=100.0, seed=s,
                labels=dict(zip(TASKS, labels.tolist())), money={t: 1.0 for t in TASKS}, spent=1.0,
                metrics=metrics, delta_m=0.0, untrained_tasks=(), wall_seconds=1.0))
    return records


def test_measure_transfer_recovers_the_elasticities_and_their_signs():
    measured = transfer.measure_transfer(sweep(), 100.0)
    assert measured.tasks == TASKS and measured.runs == 180 and measured.seeds == 6
    np.testing.assert_allclose(measured.elasticity, TRUE, atol=0.02)
    assert (measured.half_width < 0.02).all()
    assert measured.resolved.tolist() == (TRUE != 0).tolist()


def test_intervals_widen_with_noise_and_still_cover_the_truth():
    quiet = transfer.measure_transfer(sweep(noise=0.02, seed=1), 100.0)
    measured = transfer.measure_transfer(sweep(noise=0.3, seed=1), 100.0)
    assert (measured.half_width > 5 * quiet.half_width).all()
    assert (np.abs(measured.elasticity - TRUE) < measured.half_width).mean() >= 0.75


def test_implied_affinity_is_the_per_label_ratio_to_the_targets_own_labels():
    measured = transfer.MeasuredTransfer(
        TASKS, elasticity=TRUE.copy(), half_width=np.full((3, 3), 0.05), labels=np.array([100.0, 400.0, 50.0]),
        runs=10, seeds=3)
    implied = measured.implied_affinity()
    # a label of a moves b's error by -0.20 / 100 per label; b's own label by -0.30 / 400: ratio 8/3
    assert implied[0, 1] == pytest.approx(0.20 / 0.30 * 400 / 100)
    assert implied[2, 0] == pytest.approx(0.15 / -0.40 * 100 / 50)  # negative: c's labels hurt a
    np.testing.assert_array_equal(np.diag(implied), 1.0)
    unresolved_own = dataclasses.replace(measured, half_width=np.array([[0.05] * 3, [0.05] * 3, [0.05, 0.05, 0.5]]))
    assert np.isnan(unresolved_own.implied_affinity()[:, 2]).all()  # c's own elasticity is within noise
    assert np.isfinite(unresolved_own.implied_affinity()[:, :2]).all()


def test_clustered_standard_errors_with_one_run_per_cluster_are_hc1():
    rng = np.random.default_rng(3)
    design = np.column_stack([rng.normal(size=40), np.ones(40)])
    target = design @ np.array([0.5, 1.0]) + rng.normal(size=40) * (1 + np.abs(design[:, 0]))
    coef, se, dof = transfer.clustered_least_squares(design, target, np.arange(40))
    residual = target - design @ coef
    bread = np.linalg.inv(design.T @ design)
    hc1 = 40 / (40 - 2) * bread @ (design.T * residual ** 2) @ design @ bread  # White's estimator, small-sample scaled
    np.testing.assert_allclose(se, np.sqrt(np.diag(hc1)), rtol=1e-9)
    assert dof == 39


def test_measure_transfer_is_none_where_the_runs_cannot_identify_it():
    records = sweep()
    same_shares = [dataclasses.replace(r, labels={"a": 33, "b": 333, "c": 111}) for r in records]
    assert transfer.measure_transfer(same_shares, 100.0) is None  # equal_budget alone: no variation
    assert transfer.measure_transfer([r for r in records if r.seed < 2], 100.0) is None  # two seeds
    assert transfer.measure_transfer(records, 200.0) is None  # no run at that budget
    one_task = [dataclasses.replace(r, tasks=("a",)) for r in records]
    assert transfer.measure_transfer(one_task, 100.0) is None
    unlabelled = [dataclasses.replace(r, labels={**r.labels, "c": 0}) if i % 2 else r for i, r in enumerate(records)]
    assert transfer.measure_transfer(unlabelled, 100.0).runs == 90  # runs that gave a task no label drop out
    diverged = [dataclasses.replace(r, metrics={**r.metrics, "b": {"primary": float("nan"), "higher_is_better": False}})
                if i % 3 == 0 else r for i, r in enumerate(records)]
    assert transfer.measure_transfer(diverged, 100.0).runs == 120  # and so do runs without a finite metric


def test_report_shows_the_measured_transfer_beside_tabas_affinity():
    records = sweep(runs_per_seed=10)
    affinity = [[1.0, 0.3, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    records += [dataclasses.replace(r, strategy="taba", taba={"affinity": affinity, "gamma": [0.3] * 3})
                for r in sweep(runs_per_seed=1, seed=9)]
    text = report.markdown(records, "t", list(TASKS))
    assert "Transfer measured on the runs at budget 100 (66 runs, 6 seeds" in text
    section = text.split("Transfer measured on the runs")[1]
    row = next(line for line in section.splitlines() if line.startswith("| a | "))
    assert "S 0.30)" in row.split(" | ")[2]  # a -> b: the implied affinity and the pilots' S side by side
