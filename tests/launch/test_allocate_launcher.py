import importlib.util
import os

import numpy as np

from taba_jax.budget import Allocation
from in_process import run_launcher as run_script

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_launcher(*args):
    return run_script("launch/allocate.py", "--config=configs/allocate.py", *args)


def test_allocate_writes_file_and_prints_summary_and_the_information_model(tmp_path):
    out = tmp_path / "alloc.npz"
    result = run_launcher(f"--out={out}", "--config.num_images=500", "--config.budget=900")
    assert result.returncode == 0, result.stderr
    assert "unspent budget" in result.stdout and "images with k labels" in result.stdout
    assert "InformationModel(tasks=['segment', 'depth', 'normal', 'edge']" in result.stdout
    allocation = Allocation.load(out)
    assert allocation.strategy == "taba" and allocation.spent <= 900
    assert allocation.labels.shape == (500, 4)


def test_tuple_overrides_comma_separated_or_as_literals(tmp_path):
    out = tmp_path / "alloc.npz"
    for tasks in ("segment,depth", "('segment','depth')"):
        result = run_launcher(f"--out={out}", "--config.strategy=equal_count_shared", f"--config.tasks={tasks}",
                              "--config.costs=10,3", "--config.num_images=100", "--config.budget=130")
        assert result.returncode == 0, result.stderr
        allocation = Allocation.load(out)
        assert allocation.problem.task_names == ("segment", "depth")
        np.testing.assert_array_equal(allocation.counts, [10, 10])


def test_bad_values_fail_with_one_line_and_write_nothing(tmp_path):
    bad = tmp_path / "bad.npz"
    result = run_launcher(f"--out={bad}", "--config.costs=10,-3,3,3")
    assert result.returncode == 1 and result.stderr == "error: config.costs: cost of 'depth' must be positive, got -3.0\n"
    result = run_launcher(f"--out={tmp_path}")
    assert result.returncode == 1 and f"error: --out: {str(tmp_path)!r} is a directory" in result.stderr
    result = run_launcher(f"--out={bad}", "--config.taba.gamma=0.5,0.4")
    assert result.returncode == 1
    assert result.stderr == "error: config.taba.gamma: needs one value or one per task (4), got 2: (0.5, 0.4)\n"
    assert not bad.exists()


def test_allocate_on_a_tfds_dataset_writes_the_ids_of_the_images_to_label(tmp_path):
    spec = importlib.util.spec_from_file_location("taskonomy_fixture",
                                                  os.path.join(ROOT, "tests", "data", "test_builders_taskonomy.py"))
    fixture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixture)
    fixture.write_omnidata_tree(str(tmp_path / "raw"))
    out = tmp_path / "alloc.npz"
    result = run_launcher(f"--out={out}", "--config.dataset=taskonomy", f"--config.manual_dir={tmp_path / 'raw'}",
                          f"--config.data_dir={tmp_path / 'tfds'}", f"--workdir={tmp_path / 'work'}",
                          "--config.strategy=equal_count_shared", "--config.tasks=segment_semantic,depth_zbuffer",
                          "--config.costs=10,3", "--config.budget=26")
    assert result.returncode == 0, result.stderr
    allocation = Allocation.load(out)
    assert allocation.problem.num_images == 3  # the fixture's train views
    ids = allocation.labeled_id_sets()
    assert len(ids["segment_semantic"]) == 2 and list(ids["segment_semantic"]) == list(ids["depth_zbuffer"])
    assert set(ids["depth_zbuffer"]) <= {"alpha/point_0_view_0", "alpha/point_0_view_1", "beta/point_1_view_0"}
    assert "taskonomy" in os.listdir(tmp_path / "tfds") and not (tmp_path / "work" / "tfds").exists()
