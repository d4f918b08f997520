import os
import subprocess
import sys

import numpy as np

from taba_jax.budget import Allocation

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_launcher(*args):
    return subprocess.run([sys.executable, "launch/allocate.py", "--config=configs/allocate.py", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_allocate_writes_file_and_prints_summary(tmp_path):
    out = tmp_path / "alloc.npz"
    result = run_launcher(f"--out={out}", "--config.num_images=500", "--config.budget=900")
    assert result.returncode == 0, result.stderr
    assert "unspent budget" in result.stdout and "images with k labels" in result.stdout
    allocation = Allocation.load(out)
    assert allocation.strategy == "taba" and allocation.spent <= 900
    assert allocation.labels.shape == (500, 4)


def test_overrides_and_bad_values(tmp_path):
    out = tmp_path / "alloc.npz"
    result = run_launcher(f"--out={out}", "--config.strategy=equal_count_shared", "--config.tasks=segment,depth",
                          "--config.costs=10,3", "--config.num_images=100", "--config.budget=130")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(Allocation.load(out).counts, [10, 10])
    bad = tmp_path / "bad.npz"
    result = run_launcher(f"--out={bad}", "--config.costs=10,-3,3,3")
    assert result.returncode != 0 and "costs['depth'] must be positive and finite, got -3.0" in result.stderr
    assert not bad.exists()
