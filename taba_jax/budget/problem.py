"""The budget allocation problem and its result, with a safe on-disk format."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import zipfile
from typing import Any, Sequence

import numpy as np

from taba_jax import io_utils

FORMAT_VERSION = 1
_COST_RTOL = 1e-9  # float64 slack when comparing a spend against the budget


@dataclasses.dataclass(frozen=True)
class BudgetProblem:
    """T tasks with per-label costs, a pool of `num_images` images, and a budget.

    An allocation is a boolean (num_images, num_tasks) matrix; it is feasible when
    `sum_nt labels[n, t] * costs[t] <= budget` (METHOD section 1).
    """

    task_names: tuple[str, ...]
    costs: np.ndarray
    num_images: int
    budget: float

    def __init__(self, task_names: Sequence[str], costs: Sequence[float], num_images: int, budget: float):
        if isinstance(task_names, str):
            raise TypeError(f"task_names must be a sequence of names, got the string {task_names!r}")
        names = tuple(task_names)
        if not names:
            raise ValueError("task_names must not be empty")
        for name in names:
            if not isinstance(name, str) or not name or name != name.strip():
                raise ValueError(f"task_names contains an invalid name {name!r}")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"task_names has duplicates: {duplicates}")
        costs_arr = np.asarray(costs, dtype=np.float64).reshape(-1)
        if costs_arr.shape[0] != len(names):
            raise ValueError(f"costs has {costs_arr.shape[0]} entries but task_names has {len(names)}")
        for name, cost in zip(names, costs_arr):
            if not np.isfinite(cost) or cost <= 0:
                raise ValueError(f"costs[{name!r}] must be positive and finite, got {cost}")
        if isinstance(num_images, bool) or int(num_images) != num_images:
            raise TypeError(f"num_images must be an integer, got {num_images!r}")
        if num_images <= 0:
            raise ValueError(f"num_images must be positive, got {num_images}")
        budget = float(budget)
        if math.isnan(budget) or budget < 0 or math.isinf(budget):
            raise ValueError(f"budget must be finite and non-negative, got {budget}")
        costs_arr.setflags(write=False)
        object.__setattr__(self, "task_names", names)
        object.__setattr__(self, "costs", costs_arr)
        object.__setattr__(self, "num_images", int(num_images))
        object.__setattr__(self, "budget", budget)

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    def task_index(self, name: str) -> int:
        if name not in self.task_names:
            raise ValueError(f"unknown task {name!r}; known tasks: {list(self.task_names)}")
        return self.task_names.index(name)

    def cost_of(self, labels: np.ndarray) -> float:
        """Money spent by a (num_images, num_tasks) label matrix."""
        return float(np.asarray(labels, dtype=bool).sum(axis=0, dtype=np.int64) @ self.costs)

    def is_affordable(self, spent: float) -> bool:
        return spent <= self.budget * (1 + _COST_RTOL)

    def check_labels(self, labels: Any, field: str) -> np.ndarray:
        """Returns `labels` as a bool matrix of this problem's shape, or raises naming `field`."""
        if isinstance(labels, Allocation):
            if labels.problem.task_names != self.task_names:
                raise ValueError(
                    f"{field} has tasks {list(labels.problem.task_names)}, expected {list(self.task_names)}")
            labels = labels.labels
        arr = np.asarray(labels)
        if arr.shape != (self.num_images, self.num_tasks):
            raise ValueError(f"{field} has shape {arr.shape}, expected {(self.num_images, self.num_tasks)}")
        if arr.dtype != np.bool_:
            if not np.isin(arr, (0, 1)).all():
                raise ValueError(f"{field} must be boolean (0/1), got values outside {{0, 1}}")
            arr = arr.astype(bool)
        return arr

    def to_json(self) -> dict:
        return {"task_names": list(self.task_names), "costs": self.costs.tolist(),
                "num_images": self.num_images, "budget": self.budget}


@dataclasses.dataclass(frozen=True)
class Allocation:
    """Which (image, task) labels to buy: `labels[n, t]` means pay `costs[t]` to label task t on image n."""

    labels: np.ndarray
    problem: BudgetProblem
    strategy: str
    seed: int
    info: dict = dataclasses.field(default_factory=dict)  # JSON-able extras, e.g. the predicted objective
    # The pool's ids (str) of `labeled_images`, where the pool has ids (a TFDS split): a position
    # only means an image within one build of a dataset, an id in any.
    labeled_ids: np.ndarray | None = None

    def __post_init__(self):
        labels = self.problem.check_labels(self.labels, "labels")
        labels.setflags(write=False)
        object.__setattr__(self, "labels", labels)
        if self.labeled_ids is not None:
            ids = np.array(self.labeled_ids)  # a copy, made read-only
            labeled = int(labels.any(axis=1).sum())
            if ids.dtype.kind != "U" or ids.shape != (labeled,):
                raise ValueError(f"labeled_ids must be {labeled} strings (one per labeled image), got "
                                 f"{ids.dtype} with shape {ids.shape}")
            ids.setflags(write=False)
            object.__setattr__(self, "labeled_ids", ids)

    @property
    def counts(self) -> np.ndarray:
        """Labels bought per task, shape (num_tasks,)."""
        return self.labels.sum(axis=0, dtype=np.int64)

    @property
    def spent_per_task(self) -> np.ndarray:
        return self.counts * self.problem.costs

    @property
    def spent(self) -> float:
        return float(self.spent_per_task.sum())

    @property
    def unspent(self) -> float:
        return self.problem.budget - self.spent

    def labeled_indices(self, task: str | int) -> np.ndarray:
        """Indices of the images labeled for `task` (a name or an index), ascending."""
        t = self.problem.task_index(task) if isinstance(task, str) else int(task)
        return np.flatnonzero(self.labels[:, t])

    def labeled_sets(self) -> dict[str, np.ndarray]:
        """Indices of the labeled images of every task (what a trainer needs of an allocation)."""
        return {name: self.labeled_indices(t) for t, name in enumerate(self.problem.task_names)}

    @property
    def labeled_images(self) -> np.ndarray:
        """Pool positions of the images with at least one label, ascending."""
        return np.flatnonzero(self.labels.any(axis=1))

    def labeled_id_sets(self) -> dict[str, np.ndarray]:
        """The ids of the labeled images of every task (what a labelling service is sent)."""
        if self.labeled_ids is None:
            raise ValueError("this allocation has no labeled_ids (its pool has no ids, e.g. the synthetic scenes)")
        return {name: self.labeled_ids[np.searchsorted(self.labeled_images, indices)]
                for name, indices in self.labeled_sets().items()}

    def summary(self) -> str:
        """A readable table: labels and money per task, images by label count, unspent budget."""
        p = self.problem
        width = max(8, *(len(n) for n in p.task_names))
        lines = [f"Allocation '{self.strategy}' (seed {self.seed}): {p.num_images} images, "
                 f"{p.num_tasks} tasks, budget {p.budget:g}",
                 f"{'task':<{width}} {'cost':>9} {'labels':>10} {'money':>12} {'share':>7}"]
        spent = self.spent
        for name, cost, count, money in zip(p.task_names, p.costs, self.counts, self.spent_per_task):
            share = money / spent if spent > 0 else 0.0
            lines.append(f"{name:<{width}} {cost:>9.4g} {count:>10d} {money:>12.6g} {share:>7.1%}")
        lines.append(f"{'total':<{width}} {'':>9} {int(self.counts.sum()):>10d} {spent:>12.6g}")
        per_image = np.bincount(self.labels.sum(axis=1), minlength=p.num_tasks + 1)
        lines.append("images with k labels: " + ", ".join(f"{k}: {c}" for k, c in enumerate(per_image)))
        lines.append(f"unspent budget: {self.unspent:.6g}")
        if spent == 0 and p.budget < p.costs.min():
            lines.append(f"budget {p.budget:g} is smaller than the cheapest label ({p.costs.min():g}): "
                         "nothing was bought")
        return "\n".join(lines)

    def to_json(self) -> dict:
        """What a results file records of the allocation: strategy, labels and money per task, summary."""
        names = self.problem.task_names
        return {"strategy": self.strategy, "seed": int(self.seed), "budget": self.problem.budget,
                "spent": self.spent, "pool": self.problem.num_images,
                "labels": dict(zip(names, self.counts.tolist())),
                "money": dict(zip(names, self.spent_per_task.tolist())), "summary": self.summary()}

    def metadata(self) -> dict:
        return {"format_version": FORMAT_VERSION, "problem": self.problem.to_json(),
                "strategy": self.strategy, "seed": int(self.seed), "spent": self.spent,
                "labels_sha256": _labels_digest(self.labels), "info": self.info}

    def save(self, path: str | os.PathLike) -> None:
        """Writes labels and JSON metadata to a `.npz` file, atomically."""
        buffer = io.BytesIO()
        ids = {} if self.labeled_ids is None else {"labeled_ids": self.labeled_ids}
        np.savez_compressed(buffer, labels=self.labels, metadata=np.array(json.dumps(self.metadata())), **ids)
        with io_utils.atomic_open(path, "wb") as f:
            f.write(buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Allocation":
        """Reads a file written by `save`, refusing anything inconsistent (never unpickles)."""
        path = os.fspath(path)
        if os.path.exists(path) and not os.path.isdir(path) and not zipfile.is_zipfile(path):
            raise ValueError(f"{path!r} is not an allocation file (the .npz that Allocation.save, "
                             "launch/allocate.py and launch/train.py write)")
        try:
            with np.load(path, allow_pickle=False) as data:
                if not {"labels", "metadata"} <= set(data.files) <= {"labels", "metadata", "labeled_ids"}:
                    raise ValueError(f"expected arrays ['labels', 'metadata'] and optionally 'labeled_ids', "
                                     f"found {sorted(data.files)}")
                labels = data["labels"]
                meta = json.loads(str(data["metadata"]))
                ids = data["labeled_ids"] if "labeled_ids" in data.files else None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            if isinstance(e, FileNotFoundError):
                raise
            raise ValueError(f"allocation file {path!r} is unreadable or corrupted: {e}") from e
        try:
            if meta.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format_version is {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
            if labels.dtype != np.bool_ or labels.ndim != 2:
                raise ValueError(f"labels must be a 2-D bool array, got {labels.dtype} with shape {labels.shape}")
            problem = BudgetProblem(**meta["problem"])
            if _labels_digest(labels) != meta["labels_sha256"]:
                raise ValueError("labels do not match their recorded checksum (labels_sha256)")
            allocation = cls(labels, problem, str(meta["strategy"]), int(meta["seed"]), dict(meta["info"]), ids)
            if not math.isclose(allocation.spent, float(meta["spent"]), rel_tol=1e-9, abs_tol=1e-9):
                raise ValueError(f"spent is {meta['spent']} in the metadata but the labels cost {allocation.spent}")
            if not problem.is_affordable(allocation.spent):
                raise ValueError(f"labels cost {allocation.spent}, over the budget {problem.budget}")
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"allocation file {path!r} is invalid: {e!r}") from e
        return allocation


def _labels_digest(labels: np.ndarray) -> str:
    arr = np.ascontiguousarray(labels, dtype=bool)
    return hashlib.sha256(repr(arr.shape).encode() + arr.tobytes()).hexdigest()
