import dataclasses
import fcntl
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from taba_jax import config as cfg
from taba_jax import executors, experiment, io_utils, report, taba
from taba_jax.budget import Allocation
from taba_jax.mtl.grouping import select_groups
from taba_jax.errors import ConfigError
from in_process import run_launcher

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SPEC = importlib.util.spec_from_file_location("experiment_config", os.path.join(ROOT, "configs", "experiment.py"))
experiment_config = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(experiment_config)

TINY = dict(tasks=("segment", "depth"), costs=(10, 3), budgets=(260, 520), seeds=(0, 1), num_images=60, image_size=8,
            strategies=("equal_budget", "single_task:depth", "taba"))
TINY_TRAIN = dict(num_steps=4, batch_size=4, widths=(8,), checkpoint_every=4, log_every=4, warmup_steps=1,
                  eval_batch_size=64)


def tiny_config(**overrides):
    config = experiment_config.get_config("geometry,quick")
    config.update({**TINY, **overrides})
    config.train.update(TINY_TRAIN)
    config.taba.update(affinity_every=1, subset_fractions=(0.5,))
    return cfg.parse(cfg.ExperimentConfig, config)


def flag_args(values: dict, prefix="--config."):
    """Command-line overrides as a user types them (comma-separated lists)."""
    return [f"{prefix}{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in values.items()]


def test_runner_writes_results_report_and_plots_then_skips_finished_runs(tmp_path, monkeypatch):
    records = experiment.run(tiny_config(), str(tmp_path), progress=False)
    assert len(records) == 3 * 2 * 2
    assert {r.key for r in records} == {
        ("geometry", s, b, seed) for s in ("equal_budget", "single_task:depth", "taba") for b in (260.0, 520.0)
        for seed in (0, 1)}
    for r in records:
        assert r.spent <= r.budget and set(r.labels) == {"segment", "depth"}
        assert set(r.metrics) == {"segment", "depth"} and isinstance(r.delta_m, float)
        assert r.money["segment"] == 10 * r.labels["segment"]
        assert all("baseline" in m for m in r.metrics.values())
    taba_records = [r for r in records if r.strategy == "taba"]
    assert all(len(r.taba["affinity"]) == 2 and len(r.taba["gamma"]) == 2 for r in taba_records)
    assert all(r.taba["floored_tasks"] == [] for r in taba_records)  # no floor unless flat_slope_floor
    single = [r for r in records if r.strategy == "single_task:depth"]
    assert all(r.untrained_tasks == ("segment",) and r.labels["segment"] == 0 for r in single)
    assert sorted(os.listdir(tmp_path / "reference")) == ["seed0", "seed1"]
    assert not (tmp_path / "runs" / "taba_b260_s0" / "checkpoints").exists()

    text = (tmp_path / "report.md").read_text()
    assert "| taba |" in text and "best heuristic" in text and "budget TABA needs to match" in text
    assert text.count("**") >= 4  # a best entry marked per budget
    assert "| s \\ t | segment | depth |" in text  # the setting's task order, that of the affinity matrix
    assert all(r.tasks == ("segment", "depth") for r in records)
    assert "Full-supervision reference (every label of the pool), primary metric per task, mean over its 2 seeds: " \
           "segment miou 0." in text
    for plot in report.PLOTS[:3]:
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "oracle_simplex.png").exists()  # two tasks and no share grid: no simplex map

    table = report.settings_markdown({"geometry": records}).splitlines()
    assert len(table) == 4 and all(row.startswith("| geometry |") and row.endswith(" of 3 |") for row in table[2:])

    monkeypatch.setattr(experiment, "train_and_evaluate", lambda *a, **k: pytest.fail("a finished run re-ran"))
    os.remove(tmp_path / "report.md")
    again = experiment.run(tiny_config(), str(tmp_path), progress=False)
    assert again == records and (tmp_path / "report.md").exists()


def test_a_second_runner_on_the_same_workdir_stops_and_records_are_counted_once(tmp_path):
    config = tiny_config(strategies=("equal_budget",), budgets=(260,), seeds=(0,))
    with open(tmp_path / ".runner.lock", "a+") as held:  # another runner holds the workdir
        held.write("4242")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match=r"is in use by another experiment runner \(pid 4242\)"):
            experiment.run(config, str(tmp_path), progress=False)
    assert not (tmp_path / "results.jsonl").exists()

    line = json.dumps(record("equal_budget", 0, -1.0).to_json()) + "\n"
    (tmp_path / "results.jsonl").write_text(line + line)  # as two runners used to leave it
    assert [r.key for r in experiment.read_records(str(tmp_path))] == [("s", "equal_budget", 100.0, 0)]


def test_unknown_strategy_is_rejected_before_any_work():
    with pytest.raises(ConfigError, match=r"config.strategies: must be one of .*, got 'greedy_magic'"):
        tiny_config(strategies=("equal_budget", "greedy_magic"))


def test_rerun_with_another_training_config_is_refused(tmp_path):
    config = tiny_config(strategies=("equal_budget",), budgets=(260,), seeds=(0,))
    assert len(experiment.run(config, str(tmp_path), progress=False)) == 1
    more_seeds = dataclasses.replace(config, seeds=(0, 1))  # allowed: runs only the new one
    assert len(experiment.run(more_seeds, str(tmp_path), progress=False)) == 2
    other = dataclasses.replace(more_seeds, train=dataclasses.replace(config.train, num_steps=5))
    with pytest.raises(ConfigError, match=r"holds runs of another config: config.train differ"):
        experiment.run(other, str(tmp_path), progress=False)
    assert len(io_utils.read_jsonl(tmp_path / "results.jsonl")) == 2


def test_taba_variants_run_beside_taba_on_its_pilot_and_are_paired_with_it(tmp_path):
    variants = {"rounds2": {"rounds": 2}}
    config = tiny_config(strategies=("equal_budget", "taba", "taba:rounds2"), budgets=(520,), taba_variants=variants)
    assert config.taba_config("taba:rounds2") == dataclasses.replace(config.taba, rounds=2)
    records = {(r.strategy, r.seed): r for r in experiment.run(config, str(tmp_path), progress=False)}
    assert len(records) == 6
    for seed in (0, 1):
        plain, rounds = records["taba", seed], records["taba:rounds2", seed]
        assert rounds.spent <= 520 and plain.taba["round_spent"] == [] and len(rounds.taba["round_spent"]) == 1
        assert plain.taba["subset_losses"] == rounds.taba["subset_losses"]  # the same pilot, trained alike
    assert (tmp_path / "taba" / "rounds2" / "b520_s0" / "round2" / "points.json").exists()
    assert not list((tmp_path / "taba" / "rounds2" / "b520_s0").glob("pilot_*"))  # plain TABA's estimate reused
    text = (tmp_path / "report.md").read_text()
    assert "| 520 | taba:rounds2 | equal_budget |" in text and "| 520 | taba:rounds2 | taba |" in text
    assert "| 520 | taba | equal_budget |" in text

    more = dataclasses.replace(config, strategies=("equal_budget", "taba:m"),
                               taba_variants={**variants, "m": {"curve_fit": "metric"}})
    assert len(experiment.run(more, str(tmp_path), progress=False)) == 8  # a variant may be added
    assert not list((tmp_path / "taba" / "m" / "b520_s0").glob("pilot_*"))  # another fit: the same pilot refitted
    changed = dataclasses.replace(more, taba_variants={**more.taba_variants, "rounds2": {"rounds": 3}})
    with pytest.raises(ConfigError, match=r"holds runs of another config: config.taba_variants.rounds2 differ"):
        experiment.run(changed, str(tmp_path), progress=False)


def test_a_workdir_saved_before_a_field_existed_reads_it_as_its_default(tmp_path):
    config = tiny_config()
    experiment._check_same_config(config, str(tmp_path))
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["taba"]["explore"]  # as an older version wrote it
    (tmp_path / "config.json").write_text(json.dumps(saved))
    experiment._check_same_config(config, str(tmp_path))
    saved["taba"]["rho"] = 0.3
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match=r"holds runs of another config: config.taba differ"):
        experiment._check_same_config(config, str(tmp_path))


def test_a_workdir_saved_before_the_transfer_cap_existed_ran_uncapped_and_is_not_resumed_capped(tmp_path):
    config = tiny_config()
    assert config.taba.transfer_cap == 1.0
    experiment._check_same_config(config, str(tmp_path))
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["taba"]["transfer_cap"]  # written before the cap existed: its runs were uncapped
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match=r"holds runs of another config: config.taba differ"):
        experiment._check_same_config(config, str(tmp_path))
    experiment._check_same_config(dataclasses.replace(config, taba=dataclasses.replace(config.taba, transfer_cap=None)),
                                  str(tmp_path))


def test_taba_variants_are_checked_as_taba_configs():
    with pytest.raises(ConfigError, match=r"config.strategies: 'taba:fast' names no entry of config.taba_variants "
                                          r"\(\[.*'slow'.*\]\)"):
        tiny_config(strategies=("taba:fast",), taba_variants={"slow": {"rounds": 2}})
    with pytest.raises(ConfigError, match=r"config.taba_variants.slow.rounds: must be a positive integer, got 0"):
        tiny_config(strategies=("taba:slow",), taba_variants={"slow": {"rounds": 0}})
    with pytest.raises(ConfigError, match=r"config.taba_variants.slow.round: unknown field; did you mean 'rounds'"):
        tiny_config(strategies=("all",), taba_variants={"slow": {"round": 2}})
    with pytest.raises(ConfigError, match=r"config.taba_variants.slow.gamma: needs one value or one per task"):
        tiny_config(strategies=("taba:slow",), taba_variants={"slow": {"gamma": (0.5, 0.4, 0.3)}})
    every = tiny_config(strategies=("all",), taba_variants={"slow": {"rounds": 2}}).strategy_list
    variants = sorted({*experiment_config.TABA_VARIANTS, "slow"})
    assert "slow" not in experiment_config.TABA_VARIANTS
    assert every[every.index("taba"):] == ["taba"] + [f"taba:{name}" for name in variants]


def test_killed_runner_leaves_no_torn_line_and_resumes(tmp_path):
    args = [sys.executable, "launch/experiment.py", "--config=configs/experiment.py:geometry,quick",
            f"--workdir={tmp_path}", "--noprogress",
            *flag_args({**TINY, "strategies": "equal_budget", "seeds": (0, 1, 2)}),
            *flag_args(TINY_TRAIN, "--config.train.")]
    results = tmp_path / "results.jsonl"
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and (not results.exists() or results.read_text().count("\n") < 2):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    lines = [json.dumps(r, sort_keys=True) for r in io_utils.read_jsonl(results)]  # whole lines only
    assert 2 <= len(lines) < 6
    with open(results, "a") as f:
        f.write('{"setting": "geometry", "strat')  # as if the kill had torn the next line
    finished = run_launcher(*args[1:])  # resumed in this process: only the kill needed a process of its own
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert f"{len(lines)} already finished" in finished.stdout and "cut off a torn last line" in finished.stdout
    records = io_utils.read_jsonl(results)
    assert len(records) == 6 and len({experiment.ExperimentRecord.from_json(r).key for r in records}) == 6
    assert [json.dumps(r, sort_keys=True) for r in records[:len(lines)]] == lines
    assert results.read_text().count("\n") == 6
    summary = run_launcher("launch/summarize.py", f"--workdirs={tmp_path}", f"--out={tmp_path / 'summary.md'}")
    assert summary.returncode == 0, summary.stderr
    assert "| geometry | 260 | equal_budget |" in (tmp_path / "summary.md").read_text()


def test_report_budget_to_match_interpolates():
    assert report.budget_to_match([100, 200, 400], [-20.0, -10.0, -5.0], -15.0) == 150.0
    assert report.budget_to_match([100, 200, 400], [-20.0, -10.0, -5.0], -7.5) == 300.0
    assert report.budget_to_match([100, 200, 400], [-20.0, -10.0, -5.0], -25.0) == 100.0
    assert report.budget_to_match([100, 200, 400], [-20.0, -10.0, -5.0], -1.0) is None


def test_experiment_config_rejects_unknown_setting():
    with pytest.raises(ValueError, match="unknown setting 'space'"):
        experiment_config.get_config("space")
    assert experiment_config.get_config("tag,full").budgets == (1000.0, 3000.0, 8000.0)


def record(strategy, seed, delta, budget=100.0):
    return experiment.ExperimentRecord(
        setting="s", tasks=("a",), strategy=strategy, budget=budget, seed=seed, labels={"a": 1}, money={"a": 1.0},
        spent=1.0, metrics={}, delta_m=delta, untrained_tasks=(), wall_seconds=1.0)


def test_paired_difference_cancels_seed_noise_and_says_when_it_is_real():
    # Seeds move both strategies alike (+-5 points); TABA is 1 point better on every seed.
    noise = [5.0, -5.0, 2.0, -3.0]
    records = [record("taba", s, n + 1.0) for s, n in enumerate(noise)]
    records += [record("equal_budget", s, n) for s, n in enumerate(noise)]
    records += [record("random_pairs", s, n + (1.0 if s % 2 else 0.0)) for s, n in enumerate(noise)]
    diff = report.paired_difference(records, "taba", "equal_budget", 100.0)
    assert diff.mean == pytest.approx(1.0) and diff.real and diff.low == pytest.approx(1.0)
    mixed = report.paired_difference(records, "taba", "random_pairs", 100.0)
    # differences 1, 0, 1, 0: mean 0.5, sd 0.577, t(0.975, 3) = 3.182 -> half width 0.919
    assert mixed.mean == pytest.approx(0.5) and not mixed.real
    assert mixed.high - mixed.mean == pytest.approx(3.182 * 0.5774 / 2, rel=1e-3)
    assert mixed.seeds_to_resolve == 6  # (1.96 * 0.577 / 0.5) ** 2 = 5.1
    assert report.paired_difference(records[:1] + records[4:5], "taba", "equal_budget", 100.0) is None
    text = report.markdown(records, "t", ["a"])
    assert "| 100 | taba | equal_budget | +1.00 | [+1.00, +1.00] | 4 | **real**: taba better |" in text
    assert "| 100 | taba | random_pairs | +0.50 |" in text and "not resolved (≈ 6 seeds needed)" in text


def test_mean_interval_widens_with_confidence_and_rejects_a_level_outside_0_1():
    values = [1.0, 2.0, 3.0, 4.0]  # mean 2.5, sd 1.291, n 4
    mean, low, high = report.mean_interval(values)
    assert mean == pytest.approx(2.5) and high - mean == pytest.approx(3.182 * 1.291 / 2, rel=1e-3)
    _, low_strict, high_strict = report.mean_interval(values, 0.975)
    assert high_strict - mean == pytest.approx(4.177 * 1.291 / 2, rel=1e-3) and low_strict < low
    with pytest.raises(ValueError, match="confidence"):
        report.mean_interval(values, 95)


def test_a_difference_of_about_zero_says_more_than_a_thousand_seeds_instead_of_a_huge_count():
    # Differences +1, -1, +1, -1 + 1e-9: the mean is 2.5e-10, so (1.96 sd / mean)^2 is about 1e19.
    records = [record("taba", s, d) for s, d in enumerate([1.0, -1.0, 1.0, -1.0 + 1e-9])]
    records += [record("equal_budget", s, 0.0) for s in range(4)]
    assert report.paired_difference(records, "taba", "equal_budget", 100.0).seeds_to_resolve > 10**15
    text = report.markdown(records, "t", ["a"])
    assert f"not resolved (> {report.MAX_SEEDS_SHOWN} seeds needed)" in text


def test_taba_is_set_against_the_best_heuristic_on_the_seeds_taba_ran():
    # equal_budget also ran seed 2, where it did badly: that seed must not make TABA look better.
    records = [record("taba", s, -5.0) for s in (0, 1)] + [record("equal_budget", s, -4.0) for s in (0, 1)]
    records += [record("equal_budget", 2, -40.0), record("random_pairs", 2, -1.0)]
    text = report.markdown(records, "t", ["a"])
    assert "| 100 | equal_budget | -4.00 | -5.00 | -1.00 |" in text


def test_the_labels_table_lists_each_strategys_budgets_together_in_ascending_order():
    # Runs finish out of order when they run side by side.
    records = [record("taba", 0, -1.0, 300.0), record("equal_budget", 0, -2.0, 100.0),
               record("taba", 0, -3.0, 100.0), record("equal_budget", 0, -4.0, 300.0)]
    text = report.markdown(records, "t", ["a"])
    rows = [line.split(" | ")[:2] for line in text.splitlines()[text.splitlines().index(
        "Labels bought per task (mean over seeds):") + 4:] if line.startswith("| ")]
    assert rows == [["| taba", "100"], ["| taba", "300"], ["| equal_budget", "100"], ["| equal_budget", "300"]]


def test_oracle_is_the_best_fixed_share_allocation_and_fractions_of_its_gain():
    records = [record("equal_budget", s, -10.0) for s in (0, 1)] + [record("taba", s, -4.0) for s in (0, 1)]
    records += [record("random_pairs", s, -12.0) for s in (0, 1)]
    records += [record("shares:2/0:shared", s, -2.0) for s in (0, 1)] + [record("shares:1/1:shared", s, -10.0)
                                                                          for s in (0, 1)]
    summary = report.summarize(records + [record("equal_budget", 2, -16.0), record("taba", 3, -1.0, budget=300.0)])
    assert summary["equal_budget", 100.0] == pytest.approx((-12.0, np.sqrt(12.0), 3))  # the sample std
    assert summary["taba", 300.0] == (-1.0, 0.0, 1)
    summary = report.summarize(records)
    assert report.oracle(summary, 100.0) == ("shares:2/0:shared", -2.0)
    assert report.best_heuristic(summary, 100.0) == ("equal_budget", -10.0)  # the grid is no heuristic
    assert report.oracle_fraction(-4.0, -10.0, -2.0) == pytest.approx(0.75)
    text = report.markdown(records, "t", ["a"])
    assert "the best of 2 fixed-share allocations is `shares:2/0:shared`" in text
    assert "| taba | -4.00 | 75% | -2.00 |" in text and "| random_pairs | -12.00 | -25% | -10.00 |" in text
    assert "| shares:" not in text.split("Oracle at budget")[0]  # the main table lists no grid points


def test_oracle_fractions_use_only_the_seeds_the_grid_ran():
    # The grid ran seeds 0 and 1; seed 2 (where equal_budget did badly) must not count for anyone.
    records = [record("equal_budget", 0, -10.0), record("equal_budget", 1, -10.0), record("equal_budget", 2, -40.0)]
    records += [record("taba", 0, -6.0), record("taba", 1, -6.0), record("taba", 2, -6.0)]
    records += [record("shares:2/0:shared", s, -2.0) for s in (0, 1)]
    text = report.markdown(records, "t", ["a"])
    assert "Oracle at budget 100, over seeds 0, 1: the best of 1 fixed-share allocations" in text
    assert "equal_budget -10.00" in text and "| taba | -6.00 | 50% |" in text


def test_simplex_map_of_the_oracle_grid_for_three_tasks(tmp_path):
    def three_task_record(strategy, seed, delta, money):
        return dataclasses.replace(record(strategy, seed, delta), tasks=("a", "b", "c"),
                                   money=dict(zip("abc", money)), labels=dict(zip("abc", money)))
    records = [three_task_record("shares:2/0/0:shared", s, -30.0, (100, 0, 0)) for s in (0, 1)]
    records += [three_task_record("shares:1/1/0:shared", s, -5.0 - s, (50, 50, 0)) for s in (0, 1)]
    records += [three_task_record("shares:0/1/1:disjoint", s, -8.0, (0, 50, 50)) for s in (0, 1)]
    records += [three_task_record("taba", s, -6.0, (60, 30, 10)) for s in (0, 1)]
    points = report.simplex_points(records, ["a", "b", "c"])
    assert sorted(points) == [(100.0, "disjoint"), (100.0, "shared")]
    shared = sorted((tuple(f), m) for f, m in points[100.0, "shared"])
    assert shared == [((0.5, 0.5, 0.0), -5.5), ((1.0, 0.0, 0.0), -30.0)]  # money fractions, mean over seeds
    assert report.simplex_points(records, ["a", "b"]) == {}  # only three tasks map onto a triangle

    report.write(records, str(tmp_path), "t", ["a", "b", "c"])
    assert (tmp_path / "oracle_simplex.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![oracle_simplex.png](oracle_simplex.png)" in (tmp_path / "report.md").read_text()


def test_plan_adds_the_share_grid_at_the_oracle_budgets():
    config = tiny_config(oracle_budgets=(520,), oracle_resolution=2, strategies=("equal_budget",), seeds=(0,))
    runs = experiment.plan(config)
    assert [r.strategy for r in runs if r.budget == 260] == ["equal_budget"]
    assert sorted(r.strategy for r in runs if r.budget == 520) == sorted(
        ["equal_budget", "shares:2/0:shared", "shares:1/1:shared", "shares:0/2:shared", "shares:2/0:disjoint",
         "shares:1/1:disjoint", "shares:0/2:disjoint"])
    with pytest.raises(ConfigError, match=r"config.oracle_budgets: must be among config.budgets"):
        tiny_config(oracle_budgets=(999,))


def test_the_oracle_grid_may_keep_to_its_interior_and_to_some_seeds():
    config = tiny_config(oracle_budgets=(520,), oracle_resolution=3, oracle_interior=True, oracle_seeds=(1,),
                         strategies=("equal_budget",), seeds=(0, 1))
    runs = {(r.strategy, r.budget, r.seed) for r in experiment.plan(config)}
    grid = {("shares:2/1:shared", 520, 1), ("shares:1/2:shared", 520, 1), ("shares:2/1:disjoint", 520, 1),
            ("shares:1/2:disjoint", 520, 1)}
    assert runs == grid | {("equal_budget", b, s) for b in config.budgets for s in (0, 1)}
    with pytest.raises(ConfigError, match=r"config.oracle_seeds: must be among config.seeds \(0, 1\), got \(2,\)"):
        tiny_config(oracle_budgets=(520,), oracle_seeds=(2,), seeds=(0, 1))
    with pytest.raises(ConfigError, match=r"config.oracle_resolution: with oracle_interior every task needs a part: "
                                          r"must be >= 2 tasks, got 1"):
        tiny_config(oracle_budgets=(520,), oracle_resolution=1, oracle_interior=True)


def test_the_best_grid_point_runs_on_the_held_out_seeds_once_the_grid_has_finished():
    config = tiny_config(oracle_budgets=(520,), oracle_resolution=2, oracle_interior=True, oracle_seeds=(0,),
                         oracle_holdout=True, strategies=("equal_budget",), seeds=(0, 1, 2))
    grid = ["shares:1/1:shared", "shares:1/1:disjoint"]
    base = {(r.strategy, r.budget, r.seed) for r in experiment.plan(config)}
    assert base == {(s, 520, 0) for s in grid} | {("equal_budget", b, s) for b in config.budgets for s in (0, 1, 2)}

    def grid_record(strategy, seed, delta):
        return dataclasses.replace(record(strategy, seed, delta, budget=520.0), setting=config.setting)

    finished = [grid_record("shares:1/1:shared", 0, -5.0), grid_record("equal_budget", 0, -9.0)]
    assert {(r.strategy, r.budget, r.seed) for r in experiment.plan(config, finished)} == base  # half the grid: no pick
    # the pick is on seed 0 only: a better mean of the other point on seed 1 does not change it
    finished += [grid_record("shares:1/1:disjoint", 0, -7.0), grid_record("shares:1/1:disjoint", 1, 50.0)]
    assert experiment.holdout_runs(config, finished) == [experiment.RunSpec("shares:1/1:shared", 520, seed)
                                                         for seed in (1, 2)]
    assert len(experiment.plan(config, finished)) == len(base) + 2
    assert experiment.holdout_runs(dataclasses.replace(config, oracle_holdout=False), finished) == []
    with pytest.raises(ConfigError, match=r"config.oracle_holdout: needs config.oracle_seeds to leave some of "
                                          r"config.seeds \(0, 1\) out, got oracle_seeds=\(0, 1\)"):
        tiny_config(oracle_budgets=(520,), oracle_seeds=(0, 1), oracle_holdout=True)
    with pytest.raises(ConfigError, match=r"config.oracle_holdout: .* got oracle_seeds=\(\)"):
        tiny_config(oracle_budgets=(520,), oracle_holdout=True)
    # without an oracle, its seeds and hold-out have no effect: no error (a preset's stay valid), no runs
    without_oracle = tiny_config(oracle_budgets=(), oracle_seeds=(0, 1, 2), oracle_holdout=True, seeds=(5, 6))
    assert experiment.holdout_runs(without_oracle, finished) == []


def test_the_runner_runs_the_held_out_oracle_after_its_grid_and_a_rerun_runs_nothing(tmp_path):
    config = tiny_config(budgets=(520,), seeds=(0, 1), strategies=("equal_budget",), oracle_budgets=(520,),
                         oracle_resolution=2, oracle_interior=True, oracle_seeds=(0,), oracle_holdout=True)
    records = experiment.run(config, str(tmp_path), progress=False)
    grid = {r.strategy: r.delta_m for r in records if r.seed == 0 and report.is_oracle_grid(r.strategy)}
    best = max(grid, key=grid.get)
    assert sorted((r.strategy, r.seed) for r in records) == sorted(
        [("equal_budget", 0), ("equal_budget", 1), *((s, 0) for s in grid), (best, 1)])
    assert f"Held out at budget 520: `{best}`, picked on seeds 0, run on seeds 1" in (tmp_path / "report.md").read_text()
    lines = (tmp_path / "results.jsonl").read_text()
    experiment.run(config, str(tmp_path), progress=False)
    assert (tmp_path / "results.jsonl").read_text() == lines


def test_the_report_measures_the_oracle_on_its_held_out_seeds():
    # Picked on seeds 0, 1, where it gains 8 points; on seeds 2, 3 it gains only 4, and taba 2 of them.
    records = [record("shares:2/0:shared", s, -2.0) for s in (0, 1)] + [record("shares:1/1:shared", s, -10.0)
                                                                         for s in (0, 1)]
    records += [record("shares:2/0:shared", s, d) for s, d in ((2, -6.0), (3, -8.0))]
    records += [record("equal_budget", s, -10.0 - (s == 3)) for s in (0, 1, 2, 3)]
    records += [record("taba", s, d) for s, d in ((0, -4.0), (1, -4.0), (2, -8.0), (3, -9.0))]
    records += [record("random_pairs", s, -12.0) for s in (0, 1, 2)]  # not run on seed 3
    text = report.markdown(records, "t", ["a"])
    picked, held_out = text.split("Oracle at budget 100")[1].split("Held out at budget 100")
    held_out = held_out.split("\n\n")[0] + held_out.split("\n\n")[1]  # its caption and table
    assert "| taba | -4.00 | 75% | -2.00 |" in picked and "| random_pairs | -12.00 | -25% | -10.00 |" in picked
    assert held_out.startswith(": `shares:2/0:shared`, picked on seeds 0, 1, run on seeds 2, 3 (Δm -7.00; "
                               "equal_budget -10.50, paired difference [")
    assert "| taba | -8.50 | 57% | -1.50 |" in held_out and "random_pairs" not in held_out


def test_chosen_grid_points_run_as_named_strategies_at_every_budget():
    """A sweep may run part of the grid (say its interior at a finer step) without the whole oracle."""
    config = tiny_config(strategies=("equal_budget", "shares:3/1:disjoint"), seeds=(0,))
    assert {(r.strategy, r.budget) for r in experiment.plan(config)} == {
        (s, b) for s in ("equal_budget", "shares:3/1:disjoint") for b in config.budgets}
    with pytest.raises(ConfigError, match=r"config.strategies: strategy 'shares:1/1/1:shared' needs 2 non-negative"):
        tiny_config(strategies=("shares:1/1/1:shared",))
    with pytest.raises(ConfigError, match=r"config.strategies: 'equal budget' is not a valid name"):
        tiny_config(strategies=("equal budget",))


def test_parallel_workers_and_ray_write_the_same_records_as_one_process(tmp_path):
    config = tiny_config(strategies=("equal_budget", "single_task:depth", "equal_count_shared"), budgets=(260,),
                         seeds=(0,))
    sequential = experiment.run(config, str(tmp_path / "one"), progress=False, executor=executors.InProcess())
    by_key = {r.key: r for r in sequential}
    elsewhere = {"two": dataclasses.replace(config, workers=2)}
    if importlib.util.find_spec("ray") is not None:
        elsewhere["ray"] = dataclasses.replace(config, workers=2, executor="ray")
    for name, other in elsewhere.items():
        parallel = experiment.run(other, str(tmp_path / name), progress=False)
        assert len(parallel) == 3 and {r.key for r in parallel} == set(by_key), name
        for r in parallel:
            assert r.labels == by_key[r.key].labels
            assert r.delta_m == pytest.approx(by_key[r.key].delta_m, rel=1e-5, abs=1e-6), name
            for task, metrics in r.metrics.items():
                assert metrics["primary"] == pytest.approx(by_key[r.key].metrics[task]["primary"], rel=1e-5, abs=1e-6)
        lines = (tmp_path / name / "results.jsonl").read_text().splitlines()
        assert len(lines) == 3 and all(json.loads(line) for line in lines)


def test_a_failing_run_is_retried_recorded_and_tried_again_on_rerun(tmp_path, monkeypatch, capsys):
    config = tiny_config(strategies=("equal_budget", "single_task:depth"), budgets=(260,), seeds=(0,), max_retries=1)
    real = experiment._run_one
    attempts = []

    def flaky(dataset, spec, *args):
        attempts.append(spec.strategy)
        if spec.strategy == "single_task:depth":
            raise RuntimeError("the labelling service is down")
        return real(dataset, spec, *args)

    monkeypatch.setattr(experiment, "_run_one", flaky)
    records = experiment.run(config, str(tmp_path), progress=False)
    assert [r.strategy for r in records] == ["equal_budget"] and attempts.count("single_task:depth") == 2
    [failure] = experiment.failures(str(tmp_path))
    assert failure["strategy"] == "single_task:depth" and failure["attempts"] == 2
    assert "RuntimeError: the labelling service is down" in failure["error"]
    out = capsys.readouterr().out
    assert "retrying" in out and "[2/2]" in out and "1 failed" in out and "ETA" in out
    assert "1 of 2 runs failed" in out

    monkeypatch.setattr(experiment, "_run_one", real)
    assert len(experiment.run(config, str(tmp_path), progress=False)) == 2  # the failed run only is run again
    assert experiment.failures(str(tmp_path)) == []


def test_auto_groups_without_an_affinity_come_from_each_pilots_measured_affinity(tmp_path, monkeypatch):
    config = tiny_config(strategies=("equal_budget", "taba"), seeds=(0,), budgets=(260, 520))
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, groups=("auto:2",)))
    pilot_trainings = []
    real = taba.validation_curves
    monkeypatch.setattr(taba, "validation_curves", lambda *a, **k: pilot_trainings.append(1) or real(*a, **k))
    records = experiment.run(config, str(tmp_path), progress=False)
    assert len(records) == 4 and len(pilot_trainings) == 2  # one pilot per budget, reused by its taba run

    def chosen(budget):
        estimate = json.loads((tmp_path / "taba" / f"b{budget}_s0" / "estimate.json").read_text())["estimate"]
        grouping = select_groups(np.asarray(estimate["information"]["affinity"]), 2)
        return [[config.tasks[t] for t in group] for group in grouping.groups]

    for record in records:
        groups = chosen(int(record.budget))
        run = tmp_path / "runs" / f"{record.strategy}_b{record.budget:g}_s0"
        assert sorted(p.name for p in run.glob("group*")) == [f"group{g}" for g in range(len(groups))]
        assert all(task in groups[m["group"]] for task, m in record.metrics.items())
    reference = json.loads((tmp_path / "reference" / "seed0" / "results.json").read_text())
    assert [g["tasks"] for g in reference["groups"]] == chosen(520)  # the largest budget's pilot


def test_runner_trains_the_groups_chosen_from_the_affinity(tmp_path):
    config = tiny_config(strategies=("equal_budget",), seeds=(0,), budgets=(260,))
    config = dataclasses.replace(config, taba=dataclasses.replace(config.taba, affinity=((1.0, 0.5), (0.5, 1.0))),
                                 train=dataclasses.replace(config.train, groups=("auto:2",)))
    (record,) = experiment.run(config, str(tmp_path), progress=False)
    assert json.loads((tmp_path / "config.json").read_text())["train"]["groups"] == ["auto:2"]
    reference = json.loads((tmp_path / "reference" / "seed0" / "results.json").read_text())
    # two tasks that help each other share one network: with at most 2 allowed, select_groups takes 1
    assert [g["tasks"] for g in reference["groups"]] == [["segment", "depth"]]
    run = tmp_path / "runs" / "equal_budget_b260_s0"
    assert (run / "group0").is_dir() and not (run / "group0" / "checkpoints").exists()
    assert {m["group"] for m in record.metrics.values()} == {0} and isinstance(record.delta_m, float)


def test_an_experiment_streams_a_tfds_pool_and_its_allocation_files_name_the_images(tmp_path):
    spec = importlib.util.spec_from_file_location("taskonomy_fixture",
                                                  os.path.join(ROOT, "tests", "data", "test_builders_taskonomy.py"))
    fixture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixture)
    views = {"alpha": [(0, v) for v in range(6)], "beta": [(1, 0)], "gamma": [(2, 0)], "delta": [(3, 0)]}
    fixture.write_omnidata_tree(str(tmp_path / "raw"), views)
    config = experiment_config.get_config("taskonomy")
    config.update(manual_dir=str(tmp_path / "raw"), image_size=8, tasks=("segment_semantic", "depth_zbuffer"),
                  costs=(10.0, 3.0), budgets=(30.0,), seeds=(0,), strategies=("equal_budget",))
    config.train.update(TINY_TRAIN, input_workers=0)
    [record] = experiment.run(cfg.parse(cfg.ExperimentConfig, config), str(tmp_path / "work"), progress=False)
    assert record.labels == {"segment_semantic": 1, "depth_zbuffer": 5}  # 15 of the 30 per task
    allocation = Allocation.load(tmp_path / "work" / "runs" / "equal_budget_b30_s0" / "allocation.npz")
    pool = {f"alpha/point_0_view_{v}" for v in range(6)} | {"beta/point_1_view_0"}  # the train buildings' views
    ids = allocation.labeled_id_sets()
    assert {t: len(set(i)) for t, i in ids.items()} == record.labels and set(allocation.labeled_ids) <= pool
