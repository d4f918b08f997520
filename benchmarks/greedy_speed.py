"""Times TABA's jitted greedy against the plain NumPy reference (tests/reference_greedy.py).

    python benchmarks/greedy_speed.py [--sizes=10000,100000,1000000,4500000] [--tasks=5,26]

For each pool size and task count it prints: first call (with compilation), the median of repeated
calls (search plus the final label matrix), greedy steps, and the reference's time and speed-up
where the reference finishes within --reference_limit seconds (it is timed on a budget scaled so
that it does; its per-label cost is then extrapolated linearly, which flatters it).
"""
import os
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import reference_greedy  # noqa: E402

from taba_jax.budget import BudgetProblem, InformationModel, greedy_allocate  # noqa: E402

_SIZES = flags.DEFINE_list("sizes", ["10000", "100000", "1000000", "4500000"], "Pool sizes.")
_TASKS = flags.DEFINE_list("tasks", ["5", "26"], "Task counts.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats after the first call.")
_REFERENCE_LIMIT = flags.DEFINE_float("reference_limit", 150.0, "Skip the reference beyond this estimate (s).")


def instance(num_images: int, num_tasks: int):
    rng = np.random.default_rng(num_tasks)
    affinity = rng.uniform(0, 0.8, (num_tasks, num_tasks))
    np.fill_diagonal(affinity, 1.0)
    costs = rng.choice([1.0, 3.0, 10.0], num_tasks)
    budget = 0.3 * num_images * costs.sum() / 2
    problem = BudgetProblem([f"task{i}" for i in range(num_tasks)], costs, num_images, budget)
    model = InformationModel(affinity, rng.uniform(0.2, 1.0, num_tasks), 0.01 * num_images)
    return problem, model


def reference_seconds_per_label(problem, model):
    """Times the reference on a budget of a few hundred labels, returns seconds per label."""
    budget = 200 * problem.costs.mean()
    args = (np.asarray(model.affinity, float), np.asarray(model.gamma, float), np.asarray(model.kappa, float),
            np.asarray(model.weights, float), problem.costs, problem.num_images, budget)
    start = time.perf_counter()
    state = reference_greedy.greedy(*args)
    labels = sum(c * sum(p) for p, c in state.items())
    return (time.perf_counter() - start) / max(labels, 1)


def main(argv):
    del argv
    print(f"{'images':>9} {'tasks':>5} {'first (s)':>10} {'repeat (s)':>11} {'labels':>9} {'F':>7} "
          f"{'reference (s)':>14} {'speed-up':>9}")
    for num_tasks in map(int, _TASKS.value):
        for num_images in map(int, _SIZES.value):
            problem, model = instance(num_images, num_tasks)
            start = time.perf_counter()
            allocation = greedy_allocate(problem, model)
            first = time.perf_counter() - start
            times = []
            for _ in range(_REPEATS.value):
                start = time.perf_counter()
                greedy_allocate(problem, model)
                times.append(time.perf_counter() - start)
            repeat = float(np.median(times))
            labels = int(allocation.counts.sum())
            reference, ratio = "-", "-"
            per_label = reference_seconds_per_label(problem, model) if num_images <= 100_000 else None
            if per_label is not None and per_label * labels <= _REFERENCE_LIMIT.value:
                start = time.perf_counter()
                reference_greedy.greedy(np.asarray(model.affinity, float), np.asarray(model.gamma, float),
                                        np.asarray(model.kappa, float), np.asarray(model.weights, float),
                                        problem.costs, problem.num_images, problem.budget)
                measured = time.perf_counter() - start
                reference, ratio = f"{measured:.1f}", f"{measured / repeat:.0f}x"
            elif per_label is not None:
                estimate = per_label * labels
                reference, ratio = f"~{estimate:.0f} (est.)", f"~{estimate / repeat:.0f}x"
            print(f"{num_images:>9} {num_tasks:>5} {first:>10.2f} {repeat:>11.2f} {labels:>9} "
                  f"{allocation.info['objective']:>7.4f} {reference:>14} {ratio:>9}", flush=True)


if __name__ == "__main__":
    app.run(main)
