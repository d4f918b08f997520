import importlib.util
import json
import os

import numpy as np
import pytest

from taba_jax.budget import Allocation
from taba_jax.mtl.grouping import select_groups
from in_process import run_launcher as run_script

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--config.num_images=100", "--config.image_size=16", "--config.train.num_steps=4",
        "--config.train.batch_size=4", "--config.train.widths=8", "--config.train.checkpoint_every=4",
        "--config.train.log_every=2", "--config.cache_data=False"]


def run_launcher(workdir, *args, tiny=True):
    return run_script("launch/train.py", "--config=configs/synthetic.py", f"--workdir={workdir}",
                      *(TINY if tiny else []), *args)


def test_strategy_then_allocation_file_with_reference(tmp_path):
    first = tmp_path / "first"
    result = run_launcher(first, "--config.budget=300", "--config.strategy=equal_count_shared")
    assert result.returncode == 0, result.stderr
    results = json.loads((first / "results.json").read_text())
    labels = {t: 15 for t in ("segment", "depth", "normal", "edge")}
    assert results["allocation"]["labels"] == labels and results["allocation"]["strategy"] == "equal_count_shared"
    assert results["config"]["train"]["num_steps"] == 4 and results["config"]["tasks"] == list(labels)
    assert all(isinstance(m["baseline"], float) for m in results["metrics"].values())
    assert "segment: miou =" in result.stdout and "trivial baseline" in result.stdout
    assert "Delta_m" not in result.stdout
    counts = results["num_parameters"]
    assert counts["total"] == counts["shared"] + counts["task_specific"] and counts["task_specific"] > 0
    assert f"parameters: {counts['total']:,} ({counts['shared']:,} shared" in result.stdout
    assert Allocation.load(first / "allocation.npz").spent == 285
    assert (first / "metrics.jsonl").read_text().count("\n") == 2

    second = tmp_path / "second"
    result = run_launcher(second, f"--config.allocation={first / 'allocation.npz'}",
                          f"--config.reference={first / 'results.json'}")
    assert result.returncode == 0, result.stderr
    results = json.loads((second / "results.json").read_text())
    assert results["delta_m"] == 0.0  # same labels, same seed: the same model as the reference
    assert "Delta_m = +0.00 %" in result.stdout


def test_strategy_taba_runs_the_pilot_estimation_and_greedy_and_groups_by_the_measured_affinity(tmp_path):
    result = run_launcher(tmp_path, "--config.strategy=taba", "--config.budget=600", "--config.tasks=segment,depth",
                          "--config.costs=10,3", "--config.taba.affinity_every=1", "--config.taba.subset_fractions=0.5",
                          "--config.train.groups=auto:2")
    assert result.returncode == 0, result.stderr
    estimate = json.loads((tmp_path / "taba" / "estimate.json").read_text())["estimate"]
    allocation = Allocation.load(tmp_path / "allocation.npz")
    assert allocation.strategy == "taba" and allocation.spent <= 600
    assert allocation.info["taba"]["pilot_size"] == 4  # 10 % of 600 buys 4 fully labeled images at 13 each
    grouping = select_groups(np.asarray(estimate["information"]["affinity"]), 2)
    results = json.loads((tmp_path / "results.json").read_text())
    assert [g["tasks"] for g in results["groups"]] == [[("segment", "depth")[t] for t in g] for g in grouping.groups]


def test_launcher_prints_one_line_errors_and_a_traceback_only_when_verbose(tmp_path):
    result = run_launcher(tmp_path / "w", "--config.train.batch_size=0")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: config.train.batch_size: must be positive, got 0"
    verbose = run_launcher(tmp_path / "w", "--config.train.batch_size=0", "--verbosity=1")
    assert verbose.returncode != 0 and "Traceback" in verbose.stderr and "ConfigError" in verbose.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("args, message", [
    (["--config.train.num_steps=0"], "config.train.num_steps: must be positive, got 0"),
    (["--config.train.learning_rate=nan"], "config.train.learning_rate: must be a finite number, got nan"),
    (["--config.train.lr=0.1"],
     "--config.train.lr: config.train has no field 'lr'; fields: adashare_curriculum_fraction,"),
    (["--config.trian.num_steps=3"], "--config.trian.num_steps: config has no field 'trian'; did you mean 'train'?"),
    (["--config.tasks=segment,depth"], "config.costs: needs one cost per task (2: segment, depth), got (10.0, 3.0, 3.0, 3.0)"),
    (["--config.tasks=segment,sky", "--config.costs=10,3"], "config.tasks: unknown synthetic tasks ['sky']"),
    (["--config.strategy=single_task:sky"], "config.strategy: must be one of single_task:segment,"),
    (["--config.train.model=mtan", "--config.train.groups=segment+depth,normal"],
     "config.train.groups: must put every task in a group; ['edge'] in none of ('segment+depth', 'normal')"),
    (["--config.reference=/nonexistent/results.json"], "config.reference: no such file: '/nonexistent/results.json'"),
    (["--config.allocation=/nonexistent/allocation.npz"], "config.allocation: no such file"),
    (["--config.allocation=README.md"], "config.allocation: 'README.md' is not an allocation file"),
    (["--config.reference=README.md"], "config.reference: 'README.md' is not a results.json with a primary metric"),
])
def test_bad_input_fails_at_start_with_one_line_naming_the_field(tmp_path, args, message):
    result = run_launcher(tmp_path / "w", *args)
    assert result.returncode == 1 and result.stderr.startswith(f"error: {message}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists()  # nothing generated, nothing written


def test_workdir_that_is_a_file_or_cannot_be_made(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    result = run_launcher(a_file)
    assert result.returncode == 1 and result.stderr == f"error: --workdir: {str(a_file)!r} is a file, not a directory\n"
    result = run_launcher(a_file / "below")
    assert result.returncode == 1 and "is a file, not a directory" in result.stderr


def test_allocation_of_another_pool_or_tasks_is_refused(tmp_path):
    allocate = run_script("launch/allocate.py", "--config=configs/allocate.py", f"--out={tmp_path / 'a.npz'}",
                          "--config.strategy=equal_budget", "--config.num_images=500")
    assert allocate.returncode == 0, allocate.stderr
    result = run_launcher(tmp_path / "w", f"--config.allocation={tmp_path / 'a.npz'}")
    assert result.returncode == 1 and "allocates a pool of 500 images, the train split has 80" in result.stderr
    result = run_launcher(tmp_path / "w", f"--config.allocation={tmp_path / 'a.npz'}", "--config.tasks=segment,depth",
                          "--config.costs=10,3")
    assert result.returncode == 1 and "has tasks ['segment', 'depth', 'normal', 'edge'], config.tasks is" in result.stderr


def test_train_on_a_tfds_dataset_built_from_its_raw_files(tmp_path):
    """NYUv2 in the MTAN/LibMTL .npy layout (a fixture tree), built on first use and trained on."""
    spec = importlib.util.spec_from_file_location("nyu_fixture", os.path.join(ROOT, "tests", "data",
                                                                             "test_builders_nyuv2.py"))
    fixture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixture)
    fixture.write_tree(str(tmp_path / "raw"), sizes=(("train", 6), ("val", 2)))
    args = ["--config.dataset=nyuv2_multitask", f"--config.manual_dir={tmp_path / 'raw'}",
            "--config.tasks=segmentation,depth,normal", "--config.costs=10,3,3", "--config.image_size=8",
            "--config.strategy=equal_count_shared", "--config.budget=1e9", "--config.train.num_steps=2",
            "--config.train.batch_size=2", "--config.train.widths=8"]
    result = run_launcher(tmp_path / "w", *args, tiny=False)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "w" / "results.json").read_text())
    assert results["allocation"]["labels"] == {"segmentation": 5, "depth": 5, "normal": 5}  # 6 train, 1 validation
    assert set(results["metrics"]) == {"segmentation", "depth", "normal"}
    assert (tmp_path / "w" / "tfds" / "nyuv2_multitask").is_dir()
    missing = run_launcher(tmp_path / "w2", *args[:1], f"--config.manual_dir={tmp_path / 'none'}", *args[2:],
                           tiny=False)
    assert missing.returncode == 1 and "config.manual_dir: no such directory" in missing.stderr
    wrong = run_launcher(tmp_path / "w3", *args[:2], "--config.tasks=segmentation,sky", "--config.costs=10,3",
                         *args[4:], tiny=False)
    assert wrong.returncode == 1 and "nyuv2_multitask has no tasks ['sky']" in wrong.stderr
