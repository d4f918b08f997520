"""The scheduler and its executors: dependencies, retries, dead workers, on every executor kind."""
import os

import pytest
from executor_jobs import die_on_first_attempt, fail_if_negative, square

import executor_jobs
from taba_jax import executors
from taba_jax.executors import Job


def test_dependencies_run_first_and_a_failure_skips_only_its_dependents():
    jobs = [Job("b", fail_if_negative, 2, after=("a",)), Job("a", fail_if_negative, 1),
            Job("bad", fail_if_negative, -1), Job("after_bad", fail_if_negative, 3, after=("bad",)),
            Job("after_external", fail_if_negative, 4, after=("finished_earlier",))]
    outcomes = list(executors.run_jobs(executors.InProcess(), jobs, max_retries=0))
    order = [o.job.key for o in outcomes]
    assert order.index("a") < order.index("b")
    by_key = {o.job.key: o for o in outcomes}
    assert by_key["b"].result == 2 and by_key["after_external"].result == 4
    assert not by_key["bad"].ok and "ValueError: negative input -1" in by_key["bad"].error
    assert by_key["after_bad"].attempts == 0 and "not run: ['bad'] failed" in by_key["after_bad"].error


def test_a_sweep_whose_last_jobs_depend_on_a_failed_one_ends_with_them_not_run():
    jobs = [Job("bad", fail_if_negative, -1), Job("after_bad", fail_if_negative, 1, after=("bad",)),
            Job("after_after_bad", fail_if_negative, 2, after=("after_bad",))]
    outcomes = list(executors.run_jobs(executors.InProcess(), jobs))
    assert [(o.job.key, o.attempts) for o in outcomes] == [("bad", 1), ("after_bad", 0), ("after_after_bad", 0)]


def test_a_raising_job_is_retried_then_reported_and_the_sweep_goes_on():
    retries = []
    outcomes = list(executors.run_jobs(executors.InProcess(), [Job("bad", fail_if_negative, -1),
                                                               Job("good", square, 3)],
                                       max_retries=2, on_retry=lambda job, n, error: retries.append((job.key, n))))
    by_key = {o.job.key: o for o in outcomes}
    assert retries == [("bad", 1), ("bad", 2)] and by_key["bad"].attempts == 3 and not by_key["bad"].ok
    assert by_key["good"].result == 9 and by_key["good"].attempts == 1


def test_jobs_added_from_an_outcome_join_the_sweep_with_their_dependencies():
    def more(outcome):  # each square of a number below 100 is squared again, after a job "gate"
        if outcome.job.key == "gate" or outcome.result >= 100:
            return []
        return [Job(f"square {outcome.result}", square, outcome.result, after=("gate",))]

    outcomes = list(executors.run_jobs(executors.InProcess(), [Job("start", square, 3), Job("gate", square, 0)],
                                       more_jobs=more))
    order = [o.job.key for o in outcomes]
    assert {o.job.key: o.result for o in outcomes} == {"start": 9, "gate": 0, "square 9": 81, "square 81": 6561}
    assert order.index("gate") < order.index("square 9") < order.index("square 81")
    with pytest.raises(ValueError, match="repeated"):
        list(executors.run_jobs(executors.InProcess(), [Job("a", square, 1)],
                                more_jobs=lambda outcome: [Job("a", square, 2)]))


def test_dependency_cycles_and_repeated_keys_are_refused():
    with pytest.raises(ValueError, match="dependency cycle"):
        list(executors.run_jobs(executors.InProcess(), [Job("a", square, 1, after=("b",)),
                                                        Job("b", square, 1, after=("a",))]))
    with pytest.raises(ValueError, match="repeated"):
        list(executors.run_jobs(executors.InProcess(), [Job("a", square, 1), Job("a", square, 2)]))


def test_worker_processes_retry_the_calls_of_a_killed_worker(tmp_path):
    jobs = [Job("crash", die_on_first_attempt, str(tmp_path / "marker")), Job("x", square, 2), Job("y", square, 3)]
    outcomes = {o.job.key: o for o in executors.run_jobs(executors.WorkerProcesses(2), jobs, max_retries=2)}
    assert all(o.ok for o in outcomes.values()), [o.error for o in outcomes.values()]
    assert outcomes["crash"].attempts == 2 and outcomes["crash"].result != os.getpid()
    assert outcomes["x"].result == 4 and outcomes["y"].result == 9

    with pytest.raises(ValueError, match="workers and threads must be positive"):
        executors.WorkerProcesses(0)


def test_ray_tasks_run_the_same_jobs_and_retry_a_killed_worker(tmp_path):
    ray = pytest.importorskip("ray")
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(executor_jobs)  # Ray's workers do not see tests/
    jobs = [Job("crash", die_on_first_attempt, str(tmp_path / "marker")),
            Job("square", square, 7, after=("crash",)), Job("bad", fail_if_negative, -2)]
    executor = executors.make_executor("ray", workers=2)
    try:
        outcomes = {o.job.key: o for o in executors.run_jobs(executor, jobs, max_retries=1)}
    finally:
        executor.close()
    assert not ray.is_initialized()  # the Ray it started is shut down
    assert outcomes["crash"].ok and outcomes["crash"].attempts == 2, outcomes["crash"].error
    assert outcomes["square"].result == 49
    assert outcomes["bad"].attempts == 2 and "negative input -2" in outcomes["bad"].error


def test_unknown_executor_is_refused():
    with pytest.raises(ValueError, match="unknown executor 'slurm'"):
        executors.make_executor("slurm")
