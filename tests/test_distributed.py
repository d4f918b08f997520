"""Multi-process training for real: two JAX processes on localhost (gloo CPU collectives) against one."""
import dataclasses
import importlib.util
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from taba_jax import config as cfg, distributed, experiment, train_job
from taba_jax.budget import Allocation
from taba_jax.train import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module(*path):
    """A Python file of the repository (a config, a test's fixtures) as a module."""
    spec = importlib.util.spec_from_file_location(path[-1].removesuffix(".py"), os.path.join(ROOT, *path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


experiment_config = _module("configs", "experiment.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _environment():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    # one CPU device per process; the suite's other XLA flags (conftest.py) stay
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f)
    return env


def _trainer(workdir, config):
    """The job's trainer in this (one-device) process, on the allocation the job saved."""
    dataset = train_job.load_dataset(config, str(workdir))
    allocation = Allocation.load(str(workdir / "allocation.npz"))
    return Trainer(dataset, allocation.labeled_sets(), config.train, str(workdir), config.seed)


def _last_losses(workdir):
    with open(workdir / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    return {k: v for k, v in rows[-1].items() if k.startswith("loss")}


STREAMED = {"image_size": 8, "strategy": "equal_count_shared", "train.num_steps": 4, "train.batch_size": 2,
            "train.widths": "8", "train.checkpoint_every": 2, "train.log_every": 2, "train.warmup_steps": 1,
            "train.input_workers": 0, "train.eval_batch_size": 2}


def test_two_processes_build_stream_and_train_a_taskonomy_tree_like_one_and_their_checkpoint_restores_in_one(
        tmp_path):
    _module("tests", "data", "test_builders_taskonomy.py").write_omnidata_tree(str(tmp_path / "raw"))
    port = _free_port()
    flags = [f"--config.{k}={v}" for k, v in {**STREAMED, "manual_dir": tmp_path / "raw",
                                               "data_dir": tmp_path / "tfds_two"}.items()]
    processes = [subprocess.Popen(
        [sys.executable, "launch/train.py", "--config=configs/taskonomy.py", f"--workdir={tmp_path / 'two'}", *flags,
         f"--jax_coordinator_address=127.0.0.1:{port}", "--jax_num_processes=2", f"--jax_process_id={rank}"],
        cwd=ROOT, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in range(2)]  # neither finds the dataset built: process 0 builds it, then both read it
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n\n".join(o[-3000:] for o in outputs)
    assert "wrote" in outputs[0] and "wrote" not in outputs[1]  # only process 0 reports
    assert len(os.listdir(tmp_path / "tfds_two" / "taskonomy")) == 1  # one complete build, nothing left over

    config = _module("configs", "taskonomy.py").get_config()
    config.manual_dir, config.data_dir = str(tmp_path / "raw"), str(tmp_path / "tfds_one")
    for dotted, value in STREAMED.items():
        *parents, leaf = dotted.split(".")
        (config[parents[0]] if parents else config)[leaf] = (8,) if leaf == "widths" else value
    job = cfg.parse(cfg.TrainJobConfig, config)
    assert jax.process_count() == 1
    one = train_job.run(job, str(tmp_path / "one"), progress=False)  # the same job in one process, one device
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert (two["processes"], two["devices"]) == (2, 2) and two["steps"] == one["steps"] == 4
    assert two["allocation"]["labels"] == one["allocation"]["labels"]
    for task, metrics in one["metrics"].items():  # each process streamed only its own batch columns
        assert two["metrics"][task]["primary"] == pytest.approx(metrics["primary"], rel=1e-3, abs=1e-4)
    two_losses, one_losses = _last_losses(tmp_path / "two"), _last_losses(tmp_path / "one")
    assert two_losses.keys() == one_losses.keys() and two_losses
    for key, value in one_losses.items():
        assert two_losses[key] == pytest.approx(value, rel=1e-4)

    # The checkpoint the two processes wrote restores in this one-process run, as the trained parameters.
    trainers = [_trainer(tmp_path / "two", dataclasses.replace(job, data_dir=str(tmp_path / "tfds_two"))),
                _trainer(tmp_path / "one", job)]
    initial = jax.tree.leaves(trainers[0].init_state().params)
    two_params, one_params = (jax.tree.leaves(t.train(progress=False).params) for t in trainers)  # restored at the end
    for a, b in zip(two_params, one_params, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    assert not all(np.allclose(a, b) for a, b in zip(two_params, initial))


def test_bad_process_ids_are_refused_before_joining():
    with pytest.raises(ValueError, match=r"--jax_process_id must be in \[0, 2\), got 2"):
        distributed.initialize("127.0.0.1:1", 2, 2)
    with pytest.raises(ValueError, match="--jax_num_processes must be positive, got 0"):
        distributed.initialize("127.0.0.1:1", 0, 0)


def test_two_process_sweep_writes_the_records_of_one_process(tmp_path):
    sweep = ["launch/experiment.py", "--config=configs/experiment.py:tag,quick", "--noprogress",
             "--config.tasks=segment,depth", "--config.costs=10,3", "--config.num_images=60", "--config.image_size=8",
             "--config.budgets=300", "--config.seeds=0", "--config.strategies=equal_budget,taba",
             "--config.train.num_steps=4", "--config.train.batch_size=4", "--config.train.widths=8",
             "--config.train.checkpoint_every=4", "--config.train.log_every=4", "--config.taba.affinity_every=1",
             "--config.taba.subset_fractions=0.5"]
    port = _free_port()
    processes = [subprocess.Popen(
        [sys.executable, *sweep, f"--workdir={tmp_path / 'two'}", f"--jax_coordinator_address=127.0.0.1:{port}",
         "--jax_num_processes=2", f"--jax_process_id={rank}"],
        cwd=ROOT, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n\n".join(o[-3000:] for o in outputs)
    assert "[2/2]" in outputs[0] and "[1/2]" not in outputs[1]  # process 0 alone reports
    config = experiment_config.get_config("tag,quick")  # the sweep above, in this one-process run
    config.update(tasks=("segment", "depth"), costs=(10.0, 3.0), num_images=60, image_size=8, budgets=(300.0,),
                  seeds=(0,), strategies=("equal_budget", "taba"))
    config.train.update(num_steps=4, batch_size=4, widths=(8,), checkpoint_every=4, log_every=4)
    config.taba.update(affinity_every=1, subset_fractions=(0.5,))
    experiment.run(cfg.parse(cfg.ExperimentConfig, config), str(tmp_path / "one"), progress=False)
    two, one = ({r["strategy"]: r for r in map(json.loads, (tmp_path / d / "results.jsonl").read_text().splitlines())}
                for d in ("two", "one"))
    assert set(two) == set(one) == {"equal_budget", "taba"}  # each run written once, by process 0
    assert two["equal_budget"]["labels"] == one["equal_budget"]["labels"]
    assert two["equal_budget"]["delta_m"] == pytest.approx(one["equal_budget"]["delta_m"], rel=1e-3, abs=1e-3)
    # TABA's estimate from a pilot trained across two processes: the same up to summation order
    np.testing.assert_allclose(two["taba"]["taba"]["affinity"], one["taba"]["taba"]["affinity"], rtol=1e-3, atol=1e-4)
    for task, count in one["taba"]["labels"].items():
        assert two["taba"]["labels"][task] == pytest.approx(count, rel=0.02, abs=2)
