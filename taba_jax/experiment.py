"""The benchmark: every strategy x budget x seed of one setting, against a full-supervision
reference per seed, with each finished run appended to `results.jsonl` (resumable), then a report
and plots (`taba_jax.report`).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import fcntl
import functools
import json
import os
import shutil
import time

import jax
import numpy as np

from taba_jax import distributed, executors, io_utils, report, taba, train_job
from taba_jax.budget import BudgetProblem, allocate
from taba_jax.config import ExperimentConfig, parse, runs_taba, taba_variant, to_json
from taba_jax.data.dataset import MultiTaskDataset
from taba_jax.errors import ConfigError
from taba_jax.records import ExperimentRecord
from taba_jax.tasks import delta_m
from taba_jax.train import train_and_evaluate

RESULTS_FILE = "results.jsonl"
FAILURES_FILE = "failures.jsonl"  # runs that failed every attempt, with their errors
# Fields that may change between invocations on one workdir: they select runs, not how a run is done.
RUN_SELECTION_FIELDS = ("budgets", "seeds", "strategies", "oracle_budgets", "oracle_resolution", "oracle_interior",
                        "oracle_seeds", "oracle_holdout", "keep_checkpoints", "workers", "threads_per_worker",
                        "executor", "ray_address", "gpus_per_run", "max_retries")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    strategy: str
    budget: float
    seed: int

    def key(self, setting: str) -> tuple[str, str, float, int]:
        """The key its record will have (`ExperimentRecord.key`)."""
        return setting, self.strategy, float(self.budget), int(self.seed)

    @property
    def name(self) -> str:
        return f"{self.strategy.replace(':', '-').replace('/', '-')}_b{self.budget:g}_s{self.seed}"


def plan(config: ExperimentConfig, records: list[ExperimentRecord] = ()) -> list[RunSpec]:
    """Every run of the config, budgets outermost, then seeds, then strategies; then the oracle's
    held-out runs that `records` already determine (`holdout_runs`)."""
    return [RunSpec(strategy, budget, seed) for budget in config.budgets for seed in config.seeds
            for strategy in config.strategies_at(budget, seed)] + holdout_runs(config, records)


def holdout_runs(config: ExperimentConfig, records: list[ExperimentRecord]) -> list[RunSpec]:
    """With `config.oracle_holdout`: at each oracle budget whose grid has finished on
    `config.oracle_seeds` in `records`, its best point there run on the other seeds."""
    runs, records = [], [r for r in records if r.setting == config.setting]
    done = {r.key for r in records}
    for budget in config.oracle_budgets if config.holdout_seeds else ():
        grid = [s for s in config.strategies_at(budget, config.oracle_seeds[0]) if report.is_oracle_grid(s)]
        if all(RunSpec(s, budget, seed).key(config.setting) in done for s in grid for seed in config.oracle_seeds):
            name, _ = report.best_grid_point(records, budget, config.oracle_seeds, grid)
            runs += [RunSpec(name, budget, seed) for seed in config.holdout_seeds]
    return runs


def read_records(workdir: str) -> list[ExperimentRecord]:
    """The records of results.jsonl, the first of each run key only (a run is never counted twice)."""
    records = {}
    for data in io_utils.read_jsonl(os.path.join(workdir, RESULTS_FILE)):
        record = ExperimentRecord.from_json(data)
        records.setdefault(record.key, record)
    return list(records.values())


@contextlib.contextmanager
def _exclusive(workdir: str):
    """Holds an advisory lock on `<workdir>/.runner.lock` for the whole sweep: a second runner on the
    same workdir (which would run the same runs again and write them twice) stops at once."""
    with open(os.path.join(workdir, ".runner.lock"), "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise ConfigError("--workdir", f"{workdir!r} is in use by another experiment runner "
                                           f"(pid {lock.read().strip() or '?'}); wait for it or use another workdir")
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        yield


def run(config: ExperimentConfig, workdir: str, progress: bool = True,
        executor: executors.Executor | None = None) -> list[ExperimentRecord]:
    """Runs every unfinished run of `config`, then writes the report and plots; returns all records
    of this setting. Runs execute on `executor` (default: the one `config.executor` names), each after
    its seed's full-supervision reference; this process is the only writer of results.jsonl and
    appends each run as it finishes. A run that fails is retried up to `config.max_retries` times,
    then appended to failures.jsonl with its error while the sweep goes on. Killing and re-running
    resumes: finished runs are skipped, failed ones tried again, a half-finished one restarts from
    its last checkpoint. In a multi-process JAX job (`taba_jax.distributed`) every process runs the
    same runs one after another, each trained across all of them; process 0 writes and reports."""
    train_job.check_tasks(config)
    train_job.make_workdir(workdir)
    if jax.process_count() > 1 and (config.executor != "local" or config.workers > 1 or
                                    not isinstance(executor, (executors.InProcess, type(None)))):
        raise ConfigError("config.executor", f"a multi-process job ({jax.process_count()} processes) trains each run "
                                             "across every process: use executor=local with workers=1, got "
                                             f"executor={config.executor!r}, workers={config.workers}")
    with _exclusive(workdir) if distributed.is_lead() else contextlib.nullcontext():
        _check_same_config(config, workdir)
        return _run_locked(train_job.choose_groups(config), workdir, progress, executor)


def failures(workdir: str) -> list[dict]:
    """The runs of failures.jsonl that have not succeeded since (each with its error)."""
    done = {r.key for r in read_records(workdir)}
    return [f for f in io_utils.read_jsonl(os.path.join(workdir, FAILURES_FILE))
            if (f["setting"], f["strategy"], f["budget"], f["seed"]) not in done]


class SweepProgress:
    """One line per finished run: runs done / total, failures so far, and the time left at the
    rate so far (runs run side by side, so the rate is measured, not summed)."""

    def __init__(self, total: int):
        self.total, self.done, self.failed, self.started = total, 0, 0, time.perf_counter()

    def line(self, outcome: executors.Outcome) -> str:
        self.done += 1
        self.failed += not outcome.ok
        elapsed = time.perf_counter() - self.started
        eta = elapsed / self.done * (self.total - self.done)
        spec = outcome.job.arg
        what = f"{spec.strategy} budget {spec.budget:g} seed {spec.seed}"
        if outcome.ok:
            what += f": Δm {outcome.result['delta_m']:+.2f} in {outcome.result['wall_seconds']:.0f} s"
        else:
            what += f": FAILED after {outcome.attempts} attempt(s): {outcome.error.splitlines()[-1]}"
        return (f"[{self.done}/{self.total}] {what} | {self.failed} failed | "
                f"elapsed {_clock(elapsed)}, ETA {_clock(eta)}")


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"


def _run_locked(config: ExperimentConfig, workdir: str, progress: bool,
                executor: executors.Executor | None) -> list[ExperimentRecord]:
    lead = distributed.is_lead()
    say = print if lead else (lambda *args, **kwargs: None)
    results_path = os.path.join(workdir, RESULTS_FILE)
    if lead and io_utils.repair_jsonl(results_path):
        say(f"{results_path}: cut off a torn last line left by a killed run")
    if lead:
        io_utils.repair_jsonl(os.path.join(workdir, FAILURES_FILE))
    records = read_records(workdir)
    done = {r.key for r in records}
    runs = plan(config, records)
    todo = [r for r in runs if r.key(config.setting) not in done]
    say(f"setting {config.setting!r}: {len(runs)} runs, {len(runs) - len(todo)} already finished", flush=True)
    dataset = train_job.load_dataset(config, workdir)  # generated once; workers read its cache
    if executor is None:
        executor = executors.make_executor(config.executor, config.workers, config.threads_per_worker,
                                           config.ray_address, config.threads_per_worker, config.gpus_per_run)
    in_process = isinstance(executor, executors.InProcess)
    shared = (dataset, progress) if in_process else (None, False)  # workers load the cached dataset
    # The oracle's held-out runs are planned as its grid finishes (`more_runs`).
    later = {(budget, seed) for budget in config.oracle_budgets for seed in config.holdout_seeds}
    seeds = sorted({seed for _, seed in later} | {r.seed for r in todo})
    seeds = [seed for seed in seeds if not os.path.exists(_reference_path(workdir, seed))]
    # Groups chosen from a measured affinity: the pilots are trained first, one job each, so that no
    # two runs train the same pilot at once; a seed's reference takes the largest budget's pilot.
    pilots = (sorted({(r.budget, r.seed) for r in todo} | later | {(max(config.budgets), s) for s in seeds})
              if config.train.chooses_groups else [])
    pilot_jobs = [executors.Job(("pilot",) + key, functools.partial(_pilot_job, config, workdir, *shared), key)
                  for key in pilots]

    def pilot_of(budget, seed):  # the dependency on a pilot job, where there are any
        return (("pilot", budget, seed),) if pilots else ()

    references = [executors.Job(("reference", seed), functools.partial(_reference_job, config, workdir, *shared), seed,
                                after=pilot_of(max(config.budgets), seed)) for seed in seeds]
    job = functools.partial(_run_job, config, workdir, *shared)

    def jobs_of(specs):
        return [executors.Job(spec, job, spec, after=(("reference", spec.seed), *pilot_of(spec.budget, spec.seed)))
                for spec in specs]

    sweep, planned = SweepProgress(len(todo)), set(runs)

    def more_runs(outcome):  # the oracle's held-out runs, once its grid has finished
        if not (isinstance(outcome.job.arg, RunSpec) and outcome.ok and config.holdout_seeds):
            return []
        records.append(ExperimentRecord.from_json(outcome.result))
        done = {r.key for r in records}
        new = [spec for spec in holdout_runs(config, records)
               if spec not in planned and spec.key(config.setting) not in done]
        planned.update(new)
        sweep.total += len(new)
        if new:
            say(f"oracle at budget {new[0].budget:g}: {new[0].strategy} is the best point on seeds "
                f"{config.oracle_seeds}; it also runs on held-out seeds {config.holdout_seeds}", flush=True)
        return jobs_of(new)

    def retrying(job, attempt, error):
        say(f"{job.key} failed (attempt {attempt} of {config.max_retries + 1}), retrying: "
              f"{error.splitlines()[-1]}", flush=True)

    for outcome in executors.run_jobs(executor, pilot_jobs + references + jobs_of(todo), config.max_retries,
                                      retrying, more_runs):
        if isinstance(outcome.job.arg, RunSpec):
            if not lead:
                continue
            if outcome.ok:
                io_utils.append_jsonl(results_path, outcome.result)
            else:
                spec = outcome.job.arg
                io_utils.append_jsonl(os.path.join(workdir, FAILURES_FILE), {
                    "setting": config.setting, "strategy": spec.strategy, "budget": spec.budget, "seed": spec.seed,
                    "attempts": outcome.attempts, "error": outcome.error})
            say(sweep.line(outcome), flush=True)
        elif outcome.job.key[0] == "pilot":
            budget, seed = outcome.job.arg
            say(f"pilot of budget {budget:g}, seed {seed} " + ("trained" if outcome.ok else f"FAILED; its runs "
                f"are not run:\n{outcome.error}"), flush=True)
        elif outcome.ok:
            say(f"full-supervision reference of seed {outcome.job.arg} trained", flush=True)
        else:
            say(f"full-supervision reference of seed {outcome.job.arg} FAILED; its runs are not run:\n"
                  f"{outcome.error}", flush=True)
    records = [r for r in read_records(workdir) if r.setting == config.setting]
    if not lead:
        return records
    references = [_load_json(_reference_path(workdir, seed)) for seed in sorted({r.seed for r in records})]
    report.write(records, workdir, title=f"Setting `{config.setting}`: tasks {', '.join(config.tasks)}, costs "
                 f"{', '.join(f'{c:g}' for c in config.costs)}, pool {len(dataset.train)} images, "
                 f"{config.image_size}x{config.image_size}", tasks=list(config.tasks), references=references)
    if sweep.failed:
        print(f"{sweep.failed} of {len(todo)} runs failed: {os.path.join(workdir, FAILURES_FILE)}; "
              "re-run the same command to try them again", flush=True)
    return records


def _job_dataset(config: ExperimentConfig, workdir: str, dataset: MultiTaskDataset | None) -> MultiTaskDataset:
    return dataset if dataset is not None else train_job.load_dataset(config, workdir)


def _pilot_estimate(config: ExperimentConfig, workdir: str, dataset: MultiTaskDataset, budget: float, seed: int,
                    progress: bool) -> taba.Estimate:
    """The estimate on TABA's pilot at (budget, seed), in plain `taba`'s folder (so its run reuses it)."""
    problem = BudgetProblem(config.tasks, config.costs, len(dataset.train), budget)
    return taba.pilot_estimate(problem, dataset, config.taba, config.train, seed,
                               _taba_folder(workdir, "taba", budget, seed), progress)[1]


def _pilot_job(config: ExperimentConfig, workdir: str, dataset: MultiTaskDataset | None, progress: bool,
               budget_seed: tuple[float, int]) -> None:
    _pilot_estimate(config, workdir, _job_dataset(config, workdir, dataset), *budget_seed, progress)


def _train_config(config: ExperimentConfig, workdir: str, dataset: MultiTaskDataset, budget: float, seed: int):
    """config.train, with "auto:<k>" groups (no affinity given) chosen from the affinity the pilot at
    (budget, seed) measured (trained by its pilot job before)."""
    if not config.train.chooses_groups:
        return config.train
    affinity = _pilot_estimate(config, workdir, dataset, budget, seed, False).information.affinity
    return train_job.choose_groups(config, affinity).train


def _taba_folder(workdir: str, strategy: str, budget: float, seed: int) -> str:
    """Where TABA's estimate and rounds of one run live; a variant's own pilot estimate is in its folder."""
    return os.path.join(workdir, "taba", taba_variant(strategy) or "", f"b{budget:g}_s{seed}")


def _reference_job(config: ExperimentConfig, workdir: str, dataset: MultiTaskDataset | None, progress: bool,
                   seed: int) -> str:
    """Trains the full-supervision reference of `seed`; returns its results.json path."""
    dataset = _job_dataset(config, workdir, dataset)
    path = _reference_path(workdir, seed)
    directory = os.path.dirname(path)
    everything = {t: np.arange(len(dataset.train)) for t in config.tasks}
    train_config = _train_config(config, workdir, dataset, max(config.budgets), seed)
    results = train_and_evaluate(dataset, everything, train_config, directory, seed=seed, progress=progress)
    _drop_checkpoints(directory, config)
    io_utils.write_json(path, results)
    return path


def _run_job(config: ExperimentConfig, workdir: str, dataset: MultiTaskDataset | None, progress: bool,
             spec: RunSpec) -> dict:
    """One run, as the JSON of its record (what a worker sends back)."""
    reference = {t: m["primary"] for t, m in _load_json(_reference_path(workdir, spec.seed))["metrics"].items()}
    return _run_one(_job_dataset(config, workdir, dataset), spec, reference, config, workdir, progress).to_json()


def _load_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _check_same_config(config: ExperimentConfig, workdir: str) -> None:
    """Refuses to mix runs of different configs in one workdir (only RUN_SELECTION_FIELDS may change)."""
    current = json.loads(json.dumps({k: v for k, v in to_json(config).items() if k not in RUN_SELECTION_FIELDS}))
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        io_utils.write_json(path, current)
        return
    saved = _as_read_now(_load_json(path), config)
    # TABA variants may be added to a workdir; one already there must keep its definition.
    saved_variants, variants = saved.pop("taba_variants", {}), current.pop("taba_variants")
    differing = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    differing += [f"taba_variants.{n}" for n in sorted(set(saved_variants) & set(variants))
                  if saved_variants[n] != variants[n]]
    if differing:
        raise ConfigError("--workdir", f"{workdir!r} holds runs of another config: config.{', config.'.join(differing)} "
                                       f"differ from {path} (only {', '.join(RUN_SELECTION_FIELDS)} may change, and "
                                       "taba_variants be added); use a new workdir")
    if set(variants) - set(saved_variants):
        io_utils.write_json(path, {**current, "taba_variants": {**saved_variants, **variants}})


# Fields added after a workdir could have been written whose default changed what runs compute: a
# saved config without one ran with the value here, not with today's default.
VALUES_BEFORE_FIELDS_EXISTED = {("taba", "transfer_cap"): None}


def _as_read_now(saved: dict, config: ExperimentConfig) -> dict:
    """A workdir's saved config as this version reads it: fields added since it was written take
    their defaults, or the values they had before they existed (VALUES_BEFORE_FIELDS_EXISTED); a
    saved config this version cannot read is compared as it is."""
    selection = {k: v for k, v in to_json(config).items() if k in RUN_SELECTION_FIELDS}
    saved = copy.deepcopy(saved)
    for (section, field), value in VALUES_BEFORE_FIELDS_EXISTED.items():
        if isinstance(saved.get(section), dict):
            saved[section].setdefault(field, value)
    try:
        parsed = parse(ExperimentConfig, {**saved, **selection,
                                          "taba_variants": {**saved.get("taba_variants", {}), **config.taba_variants}})
    except (ConfigError, TypeError, ValueError):
        return saved
    read = json.loads(json.dumps({k: v for k, v in to_json(parsed).items() if k not in RUN_SELECTION_FIELDS}))
    return {**read, "taba_variants": saved.get("taba_variants", {})}


def _reference_path(workdir: str, seed: int) -> str:
    return os.path.join(workdir, "reference", f"seed{seed}", "results.json")


def _run_one(dataset: MultiTaskDataset, spec: RunSpec, reference: dict, config: ExperimentConfig, workdir: str,
             progress: bool) -> ExperimentRecord:
    start = time.perf_counter()
    problem = BudgetProblem(config.tasks, config.costs, len(dataset.train), spec.budget)
    estimate = None
    if runs_taba(spec.strategy):
        # Variants share the pilot (same seed and rho): a pilot estimate or a round's curve points that
        # another variant of this (budget, seed) measured alike is reused, else measured in its own folder.
        folders = [_taba_folder(workdir, name, spec.budget, spec.seed)
                   for name in ["taba", *(f"taba:{variant}" for variant in config.taba_variants)]]
        allocation, information = taba.run(problem, dataset, config.taba_config(spec.strategy), config.train,
                                           spec.seed, _taba_folder(workdir, spec.strategy, spec.budget, spec.seed),
                                           progress, shared_workdirs=folders)
        found = allocation.info.get("taba", {})
        estimate = {**information.to_json(), "predicted_objective": allocation.info["objective"],
                    **{k: found.get(k) for k in ("pilot_size", "subset_sizes", "subset_losses", "subset_errors",
                                                 "floored_tasks")},
                    "round_spent": [r["spent"] for r in found.get("rounds", [])]}
    else:
        allocation = allocate(problem, spec.strategy, seed=spec.seed)
    directory = os.path.join(workdir, "runs", spec.name)
    train_job.with_ids(allocation, dataset.train).save(os.path.join(directory, "allocation.npz"))
    results = train_and_evaluate(dataset, allocation.labeled_sets(),
                                 _train_config(config, workdir, dataset, spec.budget, spec.seed), directory,
                                 seed=spec.seed, progress=progress)
    _drop_checkpoints(directory, config)
    tasks = dataset.task_specs(config.tasks)
    summary = allocation.to_json()
    return ExperimentRecord(
        setting=config.setting, tasks=tuple(config.tasks), strategy=spec.strategy, budget=spec.budget, seed=spec.seed,
        labels=summary["labels"], money=summary["money"], spent=allocation.spent, metrics=results["metrics"],
        delta_m=delta_m({t: m["primary"] for t, m in results["metrics"].items()}, reference, tasks),
        untrained_tasks=tuple(results["untrained_tasks"]), wall_seconds=time.perf_counter() - start, taba=estimate)


def _drop_checkpoints(directory: str, config: ExperimentConfig) -> None:
    """Deletes every `checkpoints` folder of a finished run (AdaShare's policy phase and each group's
    network have their own) unless config.keep_checkpoints."""
    if config.keep_checkpoints:
        return
    for folder, subfolders, _ in os.walk(directory):
        if "checkpoints" in subfolders:
            shutil.rmtree(os.path.join(folder, "checkpoints"), ignore_errors=True)
            subfolders.remove("checkpoints")
