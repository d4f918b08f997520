"""The train job (`launch/train.py`): dataset -> allocation (a strategy or a file) -> training ->
`results.json`. Every input is checked before any data is generated or any step is trained."""
from __future__ import annotations

import dataclasses
import json
import math
import os

import jax
import numpy as np

from taba_jax import distributed, io_utils, taba
from taba_jax.budget import Allocation, BudgetProblem, allocate
from taba_jax.config import TrainJobConfig, to_json
from taba_jax.data import synthetic
from taba_jax.data.dataset import MultiTaskDataset, split_sizes
from taba_jax.errors import ConfigError
from taba_jax.mtl.grouping import select_groups
from taba_jax.tasks import TaskSpec, delta_m
from taba_jax.train import train_and_evaluate


def check_workdir(workdir: str, flag: str = "--workdir") -> None:
    """`workdir` is a writable directory or can be made one (nothing is created here); raises
    ConfigError naming `flag` otherwise."""
    path = os.path.abspath(workdir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(flag, f"{workdir!r} is a file, not a directory")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(flag, f"cannot create {workdir!r}: {existing!r} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(flag, f"cannot create or write {workdir!r}: {existing!r} is not writable")


def make_workdir(workdir: str, flag: str = "--workdir") -> None:
    """Creates `workdir` (checked first), with a ConfigError naming `flag` if the system refuses."""
    check_workdir(workdir, flag)
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise ConfigError(flag, f"cannot create directory {workdir!r}: {e.strerror}") from None


def check_output_file(path: str, flag: str) -> None:
    """`path` names a file that can be written (not a directory, its folder can be created)."""
    if os.path.isdir(path):
        raise ConfigError(flag, f"{path!r} is a directory; give a file path such as {os.path.join(path, 'out.npz')!r}")
    check_workdir(os.path.dirname(os.path.abspath(path)), flag)


def load_allocation(path: str, tasks, pool: int, field: str = "config.allocation") -> Allocation:
    """The allocation file at `path`, checked against the job's tasks and train-split size."""
    if not os.path.isfile(path):
        raise ConfigError(field, f"no such file: {path!r}")
    try:
        allocation = Allocation.load(path)
    except ValueError as e:
        raise ConfigError(field, str(e)) from None
    if list(allocation.problem.task_names) != list(tasks):
        raise ConfigError(field, f"{path!r} has tasks {list(allocation.problem.task_names)}, config.tasks is "
                                 f"{list(tasks)}")
    if allocation.problem.num_images != pool:
        raise ConfigError(field, f"{path!r} allocates a pool of {allocation.problem.num_images} images, the train "
                                 f"split has {pool} (config.num_images={pool} train + validation + test?)")
    return allocation


def load_reference(path: str, tasks: list[str], field: str = "config.reference") -> dict[str, float]:
    """Primary metric per task from a results.json written by this job (the Delta_m reference)."""
    if not os.path.isfile(path):
        raise ConfigError(field, f"no such file: {path!r}")
    try:
        with open(path) as f:
            metrics = json.load(f)["metrics"]
        reference = {t: float(metrics[t]["primary"]) for t in tasks}
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(field, f"{path!r} is not a results.json with a primary metric for every task of "
                                 f"{list(tasks)} ({type(e).__name__}: {e})") from None
    bad = {t: v for t, v in reference.items() if not math.isfinite(v) or v == 0}
    if bad:
        raise ConfigError(field, f"{path!r} has primary metrics {bad}; Delta_m needs finite, non-zero ones")
    return reference


NPZ_PREFIX = "npz:"


def dataset_options(config) -> dict:
    """The builder options a job config gives its TFDS dataset (Taskonomy: only the job's domains)."""
    if config.dataset == "taskonomy":
        return {"subset": config.taskonomy_subset, "domains": list(config.tasks)}
    if config.dataset == "pascal_multitask":
        return {"source": config.pascal_source}
    return {}


def load_dataset(config, workdir: str) -> MultiTaskDataset:
    """The dataset a job config names, restricted to its tasks: the synthetic scenes, a user's
    arrays (npz:PATH), or a TFDS dataset built from `config.manual_dir` on first use, read by index
    (streamed while training) or, with `config.in_memory`, loaded whole."""
    if config.dataset == "synthetic":
        return synthetic.synthetic_dataset(config.num_images, config.image_size, config.data_seed,
                                           tasks=config.tasks,
                                           cache_dir=os.path.join(workdir, "data_cache") if config.cache_data else None)
    if config.dataset.startswith(NPZ_PREFIX):
        from taba_jax.data import arrays
        try:
            return arrays.load_npz(config.dataset[len(NPZ_PREFIX):], config.tasks, config.image_size,
                                   seed=config.data_seed)
        except arrays.ArraysError as e:
            raise ConfigError("config.dataset", str(e)) from None
    from taba_jax.data import tfds_datasets
    from taba_jax.data.builders.common import DataError
    data_dir = config.data_dir or os.path.join(workdir, "tfds")
    try:
        built = distributed.lead_first(  # process 0 builds; the others open its complete copy
            lambda: tfds_datasets.build(config.dataset, config.manual_dir, data_dir, **dataset_options(config)),
            f"taba_jax: build {config.dataset}")
        load = tfds_datasets.to_memory if config.in_memory else tfds_datasets.open_splits
        return load(built, config.tasks, config.image_size, seed=config.data_seed)
    except (DataError, ValueError) as e:
        raise ConfigError("config.dataset", f"{config.dataset}: {e}") from None


def with_ids(allocation: Allocation, pool) -> Allocation:
    """The allocation with the pool's ids of the images it labels, where the pool has ids (TFDS)."""
    if not hasattr(pool, "ids"):
        return allocation
    return dataclasses.replace(allocation, labeled_ids=pool.ids(allocation.labeled_images))


def check_ids(allocation: Allocation, pool, path: str, field: str = "config.allocation") -> None:
    """An allocation file that records its images' ids must name the same images in this pool
    (positions change when a dataset is built with other buildings, domains or versions)."""
    if allocation.labeled_ids is None or not hasattr(pool, "ids"):
        return
    here = pool.ids(allocation.labeled_images)
    wrong = np.flatnonzero(here != allocation.labeled_ids)
    if len(wrong):
        n = wrong[0]
        raise ConfigError(field, f"{path!r} labels {len(wrong)} images this pool does not have at those positions, "
                                 f"e.g. position {allocation.labeled_images[n]} is {here[n]!r} here and "
                                 f"{allocation.labeled_ids[n]!r} in the file: it was made on another build of the dataset")


def check_tasks(config) -> list[TaskSpec] | None:
    """The task specs of the job's tasks where they are known before any data is read (the
    synthetic scenes); None for a user's arrays or a TFDS dataset (checked when read or built)."""
    if config.dataset.startswith(NPZ_PREFIX):
        path = config.dataset[len(NPZ_PREFIX):]
        if not os.path.isfile(os.path.expanduser(path)):
            raise ConfigError("config.dataset", f"no such file: {path!r}")
        return None
    if config.dataset != "synthetic":
        if not os.path.isdir(config.manual_dir):
            raise ConfigError("config.manual_dir", f"no such directory: {config.manual_dir!r}")
        return None
    try:
        return synthetic.task_specs(config.tasks)
    except ValueError as e:
        raise ConfigError("config.tasks", str(e)) from None


def choose_groups(config, affinity=None):
    """The job config (TrainJobConfig or ExperimentConfig) with `config.train.groups=("auto:<k>",)`
    replaced by the at most k groups `taba_jax.mtl.grouping.select_groups` picks from `affinity`
    (default `config.taba.affinity`); other configs, or auto without any affinity, as they are."""
    affinity = config.taba.affinity if affinity is None else affinity
    if not config.train.chooses_groups or affinity is None:
        return config
    grouping = select_groups(np.asarray(affinity), int(config.train.groups[0][len("auto:"):]))
    groups = tuple("+".join(config.tasks[t] for t in group) for group in grouping.groups)
    return dataclasses.replace(config, train=dataclasses.replace(config.train, groups=groups))


def run(config: TrainJobConfig, workdir: str, progress: bool = True) -> dict:
    """Runs the job; returns what it writes to `<workdir>/results.json`."""
    check_tasks(config)
    check_workdir(workdir)
    config = choose_groups(config)
    synthetic_pool = split_sizes(config.num_images)["train"] if config.dataset == "synthetic" else None
    if config.allocation and synthetic_pool is not None:
        load_allocation(config.allocation, config.tasks, synthetic_pool)  # checked before any data exists
    reference = load_reference(config.reference, config.tasks) if config.reference else None

    make_workdir(workdir)
    dataset = load_dataset(config, workdir)
    tasks = dataset.task_specs(config.tasks)
    pool = len(dataset.train)
    allocation = load_allocation(config.allocation, config.tasks, pool) if config.allocation else None
    if allocation is not None:
        check_ids(allocation, dataset.train, config.allocation)
    else:
        problem = BudgetProblem(config.tasks, config.costs, pool, config.budget)
        if config.strategy == "taba":
            allocation, information = taba.run(problem, dataset, config.taba, config.train, config.seed,
                                               os.path.join(workdir, "taba"), progress)
            config = choose_groups(config, information.affinity)  # "auto:<k>": from the measured S
        else:
            allocation = allocate(problem, config.strategy, seed=config.seed)
        allocation = with_ids(allocation, dataset.train)
    if jax.process_index() == 0:
        allocation.save(os.path.join(workdir, "allocation.npz"))
        print(allocation.summary(), flush=True)
    results = train_and_evaluate(dataset, allocation.labeled_sets(), config.train, workdir, seed=config.seed,
                                 progress=progress)
    results.update(config=to_json(config), allocation=allocation.to_json(), processes=jax.process_count(),
                   devices=jax.device_count())
    if reference is not None:
        results["delta_m"] = delta_m({t: m["primary"] for t, m in results["metrics"].items()}, reference, tasks)
        results["reference"] = os.path.abspath(config.reference)
    if jax.process_index() == 0:
        io_utils.write_json(os.path.join(workdir, "results.json"), results)
    return results


def metrics_table(metrics: dict) -> str:
    """One line per task: primary metric, its trivial baseline, and whether it was trained."""
    lines = []
    for task, m in metrics.items():
        note = "  (untrained: no labels)" if m.get("untrained") else ""
        lines.append(f"{task:>10}: {m['primary_metric']} = {m['primary']:.4f}   "
                     f"(trivial baseline {np.round(m['baseline'], 4):.4f}, "
                     f"{'higher' if m['higher_is_better'] else 'lower'} is better){note}")
    return "\n".join(lines)
