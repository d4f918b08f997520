"""The experiment record: one finished run (setting x strategy x budget x seed), one line of
`results.jsonl`, written by the runner and read by the report."""
from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class ExperimentRecord:
    setting: str
    tasks: tuple[str, ...]  # the setting's task order (that of TABA's affinity matrix)
    strategy: str
    budget: float
    seed: int
    labels: dict[str, int]  # labels bought per task
    money: dict[str, float]  # money spent per task
    spent: float
    metrics: dict[str, dict[str, Any]]  # per task: every metric, "primary", "baseline", ...
    delta_m: float  # against the full-supervision model of the same seed, in percent
    untrained_tasks: tuple[str, ...]
    wall_seconds: float
    taba: dict[str, Any] | None = None  # TABA's estimate: affinity, gamma, kappa, pilot measurements

    @property
    def key(self) -> tuple[str, str, float, int]:
        """What identifies a run: a rerun skips records with a key already present."""
        return self.setting, self.strategy, float(self.budget), int(self.seed)

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        if self.taba is None:
            del data["taba"]
        return data

    @classmethod
    def from_json(cls, data: dict) -> "ExperimentRecord":
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        return cls(**{**values, "tasks": tuple(values["tasks"]), "untrained_tasks": tuple(values["untrained_tasks"]),
                      "budget": float(values["budget"]), "seed": int(values["seed"])})
