"""configs/taskonomy.py, configs/pascal.py and npz:PATH run as train jobs on tiny fixture trees (in
this process: the config boundary, the build on first use, streaming or in-memory training, results)."""
import dataclasses
import importlib.util
import json
import os

import numpy as np
import pytest

from taba_jax import config as cfg, train_job
from taba_jax.budget import Allocation
from taba_jax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = {"image_size": 8, "strategy": "equal_count_shared", "train.num_steps": 2, "train.batch_size": 2,
        "train.widths": (8,), "train.checkpoint_every": 2, "train.log_every": 2, "train.input_workers": 0,
        "train.eval_batch_size": 4}


def _module(*path):
    spec = importlib.util.spec_from_file_location(path[-1].removesuffix(".py"), os.path.join(ROOT, *path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _job(config_file, **overrides):
    config = _module("configs", config_file).get_config()
    for dotted, value in {**TINY, **overrides}.items():
        *parents, leaf = dotted.split(".")
        node = config
        for key in parents:
            node = node[key]
        node[leaf] = value
    return cfg.parse(cfg.TrainJobConfig, config)


def test_taskonomy_config_streams_a_fixture_tree(tmp_path):
    _module("tests", "data", "test_builders_taskonomy.py").write_omnidata_tree(str(tmp_path / "raw"))
    default = _job("taskonomy.py", manual_dir=str(tmp_path / "raw"))
    job = _job("taskonomy.py", manual_dir=str(tmp_path / "raw"), tasks=default.tasks + ("segment_unsup2d",),
               costs=default.costs + (3.0,))  # the config's tasks and an unsupervised segment grouping
    results = train_job.run(job, str(tmp_path / "work"), progress=False)
    assert results["allocation"]["labels"] == {t: 3 for t in job.tasks}  # the three train views
    assert set(results["metrics"]) == set(job.tasks) and results["steps"] == 2
    assert json.loads((tmp_path / "work" / "results.json").read_text())["config"]["dataset"] == "taskonomy"
    built = os.listdir(tmp_path / "work" / "tfds" / "taskonomy")
    assert len(built) == 1 and built[0].startswith("tiny-")  # the config's subset, only the job's domains

    # The allocation file records its images' ids, and is refused on a pool that has other images there.
    saved = Allocation.load(tmp_path / "work" / "allocation.npz")
    assert sorted(saved.labeled_ids) == ["alpha/point_0_view_0", "alpha/point_0_view_1", "beta/point_1_view_0"]
    assert set(saved.labeled_id_sets()["depth_zbuffer"]) == set(saved.labeled_ids)
    moved = dataclasses.replace(saved, labeled_ids=saved.labeled_ids[::-1].copy())
    moved.save(tmp_path / "moved.npz")
    with pytest.raises(ConfigError, match=r"config.allocation: .*moved.npz' labels 2 images this pool does not have"):
        train_job.run(dataclasses.replace(job, allocation=str(tmp_path / "moved.npz")), str(tmp_path / "again"),
                      progress=False)


def test_pascal_config_trains_in_memory_on_a_fixture_tree(tmp_path):
    _module("tests", "data", "test_builders_pascal.py").write_voc(str(tmp_path / "raw"))
    job = _job("pascal.py", manual_dir=str(tmp_path / "raw"), data_dir=str(tmp_path / "tfds"))
    results = train_job.run(job, str(tmp_path / "work"), progress=False)
    # VOC: 2 train images (1 carved off for validation), the val list is the test split
    assert results["allocation"]["labels"] == {"segmentation": 1, "classes": 1}
    assert set(results["metrics"]) == {"segmentation", "classes"}


def test_npz_arrays_train_and_bad_files_are_named(tmp_path):
    # the kinds and widths of the PASCAL job's tasks, so that this job reuses its compiled step
    generator = np.random.default_rng(0)
    images = generator.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    path = tmp_path / "arrays.npz"
    np.savez(path, images=images, segmentation=generator.integers(-1, 21, (20, 8, 8)).astype(np.int32),
             segmentation_kind="segmentation", segmentation_outputs=21,
             classes=(generator.random((20, 20)) > 0.8).astype(np.float32), classes_kind="multilabel",
             classes_outputs=20)
    tasks = {"tasks": ("segmentation", "classes"), "costs": (10.0, 1.0)}
    job = _job("synthetic.py", dataset=f"npz:{path}", **tasks)
    results = train_job.run(job, str(tmp_path / "work"), progress=False)
    assert results["allocation"]["labels"] == {"segmentation": 16, "classes": 16}  # 80 % of 20
    with pytest.raises(ConfigError, match=r"config.dataset: .*arrays.npz: task 'edge' needs entries \['edge', "
                                          r"'edge_kind', 'edge_outputs'\]"):
        train_job.run(_job("synthetic.py", dataset=f"npz:{path}", tasks=("classes", "edge"), costs=(3.0, 1.0)),
                      str(tmp_path / "w2"), progress=False)
    with pytest.raises(ConfigError, match=r"config.dataset: .*images are 8x8; set --config.image_size"):
        train_job.run(_job("synthetic.py", dataset=f"npz:{path}", image_size=16, **tasks), str(tmp_path / "w3"),
                      progress=False)
    with pytest.raises(ConfigError, match="config.dataset: no such file: '/nonexistent.npz'"):
        train_job.run(_job("synthetic.py", dataset="npz:/nonexistent.npz"), str(tmp_path / "w4"), progress=False)
