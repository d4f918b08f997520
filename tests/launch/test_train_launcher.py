import json
import os
import subprocess
import sys

from taba_jax.budget import Allocation

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--config.num_images=100", "--config.image_size=16", "--config.train.num_steps=4",
        "--config.train.batch_size=4", "--config.train.widths=8", "--config.train.checkpoint_every=4",
        "--config.train.log_every=2", "--config.cache_data=False"]


def run_launcher(workdir, *args):
    return subprocess.run([sys.executable, "launch/train.py", "--config=configs/synthetic.py",
                           f"--workdir={workdir}", *TINY, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_train_launcher_strategy_then_allocation_file_with_reference(tmp_path):
    first = tmp_path / "first"
    result = run_launcher(first, "--config.budget=300", "--config.strategy=equal_count_shared")
    assert result.returncode == 0, result.stderr
    results = json.loads((first / "results.json").read_text())
    assert results["strategy"] == "equal_count_shared" and results["labels"] == {t: 15 for t in
                                                                                  ("segment", "depth", "normal", "edge")}
    assert "segment: miou =" in result.stdout and "Delta_m" not in result.stdout
    assert Allocation.load(first / "allocation.npz").spent == 285
    assert (first / "metrics.jsonl").read_text().count("\n") == 2

    second = tmp_path / "second"
    result = run_launcher(second, f"--config.allocation={first / 'allocation.npz'}",
                          f"--config.reference={first / 'results.json'}")
    assert result.returncode == 0, result.stderr
    results = json.loads((second / "results.json").read_text())
    assert results["delta_m"] == 0.0  # same labels, same seed: the same model as the reference
    assert "Delta_m = +0.00 %" in result.stdout


def test_train_launcher_rejects_bad_field(tmp_path):
    result = run_launcher(tmp_path / "bad", "--config.train.batching=sideways")
    assert result.returncode != 0
    assert "config.batching must be one of ('per_task', 'joint'), got 'sideways'" in result.stderr
    assert not (tmp_path / "bad" / "results.json").exists()
