"""Turns the comma-separated fields of ml_collections configs into validated values."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def parse_names(field: str, value: str | Sequence[str]) -> list[str]:
    """'segment,depth' (or a sequence) -> ['segment', 'depth']."""
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v) for v in value]
    if not names or any(not n for n in names):
        raise ValueError(f"config.{field} must be a comma-separated list of names, got {value!r}")
    return names


def parse_floats(field: str, value: str | float | Sequence[float]) -> list[float]:
    """'10,3,3' (or a number, or a sequence) -> [10.0, 3.0, 3.0]."""
    if isinstance(value, (int, float)):
        return [float(value)]
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        return [float(v) for v in items]
    except (TypeError, ValueError):
        raise ValueError(f"config.{field} must be comma-separated numbers, got {value!r}") from None


def parse_task_values(field: str, value: str | float | Sequence[float], num_tasks: int) -> np.ndarray:
    """'0.5' (one value for every task) or '0.5,0.4,0.2' (one per task) -> a (num_tasks,) array."""
    values = np.array(parse_floats(field, value))
    if len(values) == 1:
        return np.full(num_tasks, values[0])
    if len(values) != num_tasks:
        raise ValueError(f"config.{field} has {len(values)} values for {num_tasks} tasks: {value!r}")
    return values


def parse_matrix(field: str, value: str, size: int) -> np.ndarray:
    """'1,0.5;0.5,1' -> a (size, size) array; rows separated by ';'."""
    rows = [parse_floats(field, row) for row in value.split(";")]
    if len(rows) != size or any(len(r) != size for r in rows):
        raise ValueError(f"config.{field} must be a {size}x{size} matrix written 'a,b;c,d', got {value!r}")
    return np.array(rows)
