"""The config boundary: an `ml_collections.ConfigDict` in, frozen validated dataclasses out.

Configs (`configs/*.py`) are ConfigDicts whose list values are tuples and whose optional values are
`config_dict.placeholder`s (None until given). `parse(cls, config)` turns one into the dataclass
`cls` once, at the start of a job: every field is converted by its annotation and checked, and an
error names `config.<field>` and the value. Library code takes the dataclasses, never raw strings.
`to_config_dict(instance)` goes the other way, so a config file is written with the dataclasses'
own defaults and checks.

The `config_flags` pitfall: `--config.tasks=segment,depth` on a tuple-of-strings field arrives as
`('segment,depth',)`; `parse` splits such strings at the commas.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from typing import Any, Mapping

import ml_collections
from ml_collections import config_dict

from taba_jax.budget.information import CURVES
from taba_jax.budget.strategies import HEURISTICS, parse_shares, share_strategies, strategy_names
from taba_jax.errors import ConfigError

NAME_PATTERN, NAME_CHARACTERS = re.compile(r"[A-Za-z0-9_.:\-]+"), "letters, digits, '_', '.', ':', '-'"
# Strategy names also take '/', for the oracle's grid points shares:<w_1>/.../<w_T>:<mode>.
STRATEGY_PATTERN, STRATEGY_CHARACTERS = re.compile(r"[A-Za-z0-9_.:\-/]+"), NAME_CHARACTERS + ", '/'"
BATCHINGS = ("per_task", "joint")


# ----------------------------------------------------------------------------------------------
# Conversion by annotation
# ----------------------------------------------------------------------------------------------

def parse(cls, config: ml_collections.ConfigDict | Mapping[str, Any], path: str = "config"):
    """Builds the dataclass `cls` from `config` (missing fields take their defaults); raises
    ConfigError naming `path.<field>` for an unknown field or a bad value."""
    data = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; fields: {', '.join(names)}"
            raise ConfigError(f"{path}.{key}", f"unknown field{hint}")
    values = {name: _convert(hints[name], data[name], f"{path}.{name}") for name in names if name in data}
    try:
        return cls(**values)
    except ConfigError as e:
        raise e.under(path) from None


def to_config_dict(instance) -> ml_collections.ConfigDict:
    """A ConfigDict with the fields of a config dataclass; None becomes a typed placeholder so that
    a command-line override can set it."""
    config = ml_collections.ConfigDict()
    hints = typing.get_type_hints(type(instance))
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            config[f.name] = to_config_dict(value)
        elif isinstance(value, dict):
            config[f.name] = ml_collections.ConfigDict(value)
        elif value is None:
            config[f.name] = config_dict.placeholder(_origin(_strip_optional(hints[f.name])))
        else:
            config[f.name] = value
    return config


def to_json(instance) -> dict:
    """The resolved config as plain JSON values (tuples become lists)."""
    return dataclasses.asdict(instance)


def _strip_optional(annotation):
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        return inner
    return annotation


def _origin(annotation):
    return typing.get_origin(annotation) or annotation


def _convert(annotation, value, field: str):
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        if value is None:
            return None
        annotation = _strip_optional(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise ConfigError(field, f"must be a group of fields, got {value!r}")
        return parse(annotation, value, field)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(field, f"must be True or False, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise ConfigError(field, f"must be an integer, got {value!r}")
        return int(value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(field, f"must be a finite number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(field, f"must be a string, got {value!r}")
        return value
    if typing.get_origin(annotation) is tuple:
        return _convert_tuple(annotation, value, field)
    if typing.get_origin(annotation) is dict:  # named groups of overrides, checked by the dataclass
        if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
            raise ConfigError(field, f"must map names to groups of fields, got {value!r}")
        return {str(k): dict(v) for k, v in value.items()}
    raise TypeError(f"{field}: unsupported annotation {annotation!r}")  # a bug in a config dataclass


def _convert_tuple(annotation, value, field: str) -> tuple:
    args = typing.get_args(annotation)
    item_type = args[0]
    if isinstance(value, str) or (item_type is str and isinstance(value, (tuple, list)) and
                                  any(isinstance(v, str) and "," in v for v in value)):
        # 'a,b' or ('a,b',): config_flags hands a comma-separated string to a tuple of strings.
        parts = [value] if isinstance(value, str) else list(value)
        value = tuple(p.strip() for part in parts for p in str(part).split(","))
        value = () if value == ("",) else value
    if not isinstance(value, (tuple, list)):
        raise ConfigError(field, f"must be a tuple, got {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_convert(item_type, v, f"{field}[{i}]") for i, v in enumerate(value))
    if len(value) != len(args):
        raise ConfigError(field, f"must have {len(args)} entries, got {value!r}")
    return tuple(_convert(a, v, f"{field}[{i}]") for i, (a, v) in enumerate(zip(args, value)))


# ----------------------------------------------------------------------------------------------
# Checks used by the dataclasses
# ----------------------------------------------------------------------------------------------

def require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ConfigError(field, message)


def require_positive(instance, *fields: str, allow_zero: bool = False) -> None:
    for name in fields:
        value = getattr(instance, name)
        ok = value >= 0 if allow_zero else value > 0
        require(ok, name, f"must be {'non-negative' if allow_zero else 'positive'}, got {value!r}")


def require_names(names: tuple[str, ...], field: str, pattern: re.Pattern = NAME_PATTERN,
                  characters: str = NAME_CHARACTERS) -> None:
    require(len(names) > 0, field, "must name at least one entry")
    for name in names:
        require(bool(pattern.fullmatch(name)), field,
                f"{name!r} is not a valid name ({characters}); "
                f"give a list as --config.{field.split('.')[-1]}=a,b")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    require(not duplicates, field, f"has duplicates {duplicates}")


def task_values(values: tuple[float, ...] | None, num_tasks: int, field: str, default: float | None = None):
    """One value for every task (a 1-tuple) or one per task -> a tuple of `num_tasks` floats.
    None gives `default` for every task (None if there is no default)."""
    if values is None:
        return None if default is None else (float(default),) * num_tasks
    require(len(values) in (1, num_tasks), field,
            f"needs one value or one per task ({num_tasks}), got {len(values)}: {values!r}")
    return tuple(float(v) for v in values) * (num_tasks if len(values) == 1 else 1)


# ----------------------------------------------------------------------------------------------
# The dataclasses
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Training of one multi-task model (`config.train`)."""

    # The default recipe learns every synthetic task at 16 x 16 under full supervision in about a minute
    # on a 2-core CPU (benchmarks/learning_curves.py, docs/recipes/).
    num_steps: int = 750
    batch_size: int = 12  # per task (per_task batching) or in total (joint)
    batching: str = "per_task"  # or "joint": one batch of images with any label, per-task label masks
    learning_rate: float = 5e-3  # AdamW peak rate: linear warm-up, then cosine decay to 0
    warmup_steps: int = 50
    weight_decay: float = 1e-4
    widths: tuple[int, ...] = (16, 32, 64)  # channels of the encoder stages
    blocks: int = 1  # residual blocks per stage
    task_weights: tuple[float, ...] | None = None  # one per task (or one for all); None = all 1
    weighting: str = "equal"  # multi-task method (taba_jax.mtl.weighting): equal, uncertainty, dwa, gradnorm, ...
    model: str = "hard_sharing"  # architecture (taba_jax.models): hard_sharing, mtan or adashare
    # AdaShare: a policy-learning phase of `adashare_policy_steps`, then `num_steps` of re-training the
    # argmax policy from scratch. The phase starts with `adashare_warmup_steps` of every block selected,
    # then learns the last block's policy, one more block at a time over `adashare_curriculum_fraction`
    # of the remaining steps, with Gumbel-softmax samples annealed from the initial to the final temperature.
    adashare_policy_steps: int = 500
    adashare_warmup_steps: int = 100
    adashare_curriculum_fraction: float = 0.5
    adashare_initial_temperature: float = 5.0
    adashare_final_temperature: float = 0.1
    adashare_sparsity_weight: float = 0.05  # pushes blocks towards skipping
    adashare_sharing_weight: float = 0.05  # pushes tasks to share blocks, lower blocks harder
    adashare_policy_learning_rate: float = 0.01  # the policy logits' own Adam
    # One network per group of tasks ("segment+depth", "normal+edge"), each task evaluated with the network
    # that serves it (the best on the validation split among the groups that hold it); ("auto:<k>",) picks
    # at most k groups from config.taba.affinity with taba_jax.mtl.grouping.select_groups (an experiment
    # without one uses the affinity TABA's pilot measures at each run's seed and budget). () = one network.
    groups: tuple[str, ...] = ()
    checkpoint_every: int = 100
    log_every: int = 25
    eval_batch_size: int = 256
    # A train split not in memory (a TFDS dataset) is streamed through grain: worker processes that read
    # and decode batches (0 = threads of the training process), each keeping this many batches ready.
    input_workers: int = 2
    prefetch_batches: int = 4

    def __post_init__(self):
        require_positive(self, "num_steps", "batch_size", "learning_rate", "blocks", "checkpoint_every", "log_every",
                         "eval_batch_size", "prefetch_batches")
        require_positive(self, "warmup_steps", "weight_decay", "input_workers", allow_zero=True)
        require(self.batching in BATCHINGS, "batching", f"must be one of {BATCHINGS}, got {self.batching!r}")
        require(len(self.widths) > 0 and all(w > 0 for w in self.widths), "widths",
                f"must be positive channel counts, got {self.widths!r}")
        if self.task_weights is not None:
            require(all(w >= 0 for w in self.task_weights) and sum(self.task_weights) > 0, "task_weights",
                    f"must be non-negative and not all zero, got {self.task_weights!r}")
        from taba_jax.mtl.weighting import METHODS
        require(self.weighting in METHODS, "weighting", f"must be one of {sorted(METHODS)}, got {self.weighting!r}")
        require(self.weighting == "equal" or self.task_weights is None, "task_weights",
                f"applies to weighting='equal' only; {self.weighting!r} sets its own weights")
        from taba_jax.models import MODELS
        require(self.model in MODELS, "model", f"must be one of {MODELS}, got {self.model!r}")
        require_positive(self, "adashare_policy_steps", "adashare_initial_temperature", "adashare_final_temperature",
                         "adashare_policy_learning_rate")
        require_positive(self, "adashare_warmup_steps", "adashare_sparsity_weight", "adashare_sharing_weight",
                         allow_zero=True)
        require(self.adashare_warmup_steps < self.adashare_policy_steps, "adashare_warmup_steps",
                f"must be less than adashare_policy_steps ({self.adashare_policy_steps}), "
                f"got {self.adashare_warmup_steps!r}")
        require(0 < self.adashare_curriculum_fraction <= 1, "adashare_curriculum_fraction",
                f"must be in (0, 1], got {self.adashare_curriculum_fraction!r}")
        require(self.adashare_final_temperature <= self.adashare_initial_temperature, "adashare_final_temperature",
                f"must not exceed adashare_initial_temperature ({self.adashare_initial_temperature:g}), "
                f"got {self.adashare_final_temperature!r}")
        self._check_groups()

    def _check_groups(self) -> None:
        automatic = [g for g in self.groups if g.startswith("auto:")]
        if automatic:
            count = automatic[0][len("auto:"):]
            require(len(self.groups) == 1 and count.isdigit() and int(count) >= 1, "groups",
                    f"'auto:<k>' (k >= 1 networks) stands alone, got {self.groups!r}")
            return
        for group in self.groups:
            members = group.split("+")
            require(all(NAME_PATTERN.fullmatch(m) for m in members), "groups",
                    f"{group!r} is not tasks joined by '+' (segment+depth), in {self.groups!r}")
            require(len(set(members)) == len(members), "groups", f"{group!r} names a task twice, in {self.groups!r}")

    @property
    def task_groups(self) -> list[tuple[str, ...]]:
        """The explicit groups, each a tuple of task names (empty: one network for every task)."""
        return [tuple(group.split("+")) for group in self.groups]

    @property
    def chooses_groups(self) -> bool:
        """Whether the groups are chosen from an affinity ("auto:<k>")."""
        return bool(self.groups) and self.groups[0].startswith("auto:")

    def check_groups(self, task_names, affinity_given: bool) -> None:
        """The groups against the job's tasks: known tasks, each in some group; auto needs an affinity."""
        if self.chooses_groups:
            require(affinity_given, "groups", f"{self.groups[0]!r} chooses groups from config.taba.affinity; give it "
                    "(e.g. the S of a TABA run's report), let strategy=taba measure it, or name the groups "
                    "(segment+depth,normal+edge)")
            return
        named = {t for group in self.task_groups for t in group}
        unknown = sorted(named - set(task_names))
        require(not unknown, "groups", f"names tasks {unknown} that are not among config.tasks {tuple(task_names)}")
        missing = [t for t in task_names if t not in named]
        require(not self.groups or not missing, "groups", f"must put every task in a group; {missing} in none of "
                f"{self.groups!r}")

    def weighting_method(self):
        """The taba_jax.mtl.weighting method, or None for the plain weighted sum of losses."""
        from taba_jax.mtl import weighting
        return None if self.weighting == "equal" else weighting.get(self.weighting)

    def weights_for(self, task_names) -> dict[str, float]:
        """Loss weight of each task."""
        weights = task_values(self.task_weights, len(task_names), "task_weights", default=1.0)
        return dict(zip(task_names, weights))


AFFINITY_STEPS = ("normalized", "gradient")
CURVE_FITS = ("loss", "metric")
OBJECTIVES = ("relative", "delta_m", "delta_m_local")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TabaConfig:
    """TABA (`config.taba`): how the information model is estimated, or the parameters if known.

    With `affinity`, `gamma` and `kappa` all given nothing is estimated and no pilot is bought.
    """

    rho: float = 0.1  # budget fraction spent on the fully labeled pilot set
    affinity_every: int = 5  # pilot steps between lookahead measurements
    affinity_start: float = 0.5  # fraction of the pilot steps before measuring (heads still random)
    affinity_batch_size: int = 32
    affinity_lr: float = 0.01  # lookahead step: small enough that Z is first-order in it
    # "normalized": every task's lookahead step has the same length (S is then, to first order, the
    # gradients' cosine); "gradient": the raw step of Fifty et al., where a task with larger
    # gradients looks more helpful to every other task.
    affinity_step: str = "normalized"
    subset_fractions: tuple[float, ...] = (0.25, 0.5)  # nested pilot subsets trained beside the whole pilot
    gamma_range: tuple[float, float] = (0.05, 1.5)  # fitted slopes are clipped to this range
    # Pulls each slope fitted on the pilot toward the tasks' mean, gamma_t <- (1 - s) gamma_t +
    # s mean(gamma) (0: METHOD.md's per-task fit). The pilot fits each slope from 2-3 small subsets,
    # where a task that learns late looks flat and its labels seem to buy nothing (README "Pilot
    # slopes pulled toward their mean").
    gamma_shrinkage: float = 0.0
    # What the learning curves are fitted to: "loss" (validation loss, METHOD.md) or "metric" (the
    # error of each task's primary metric, 1 - mIoU / F1 / accuracy or the error itself: what
    # Delta_m is computed from).
    curve_fit: str = "loss"
    curve: str = "power"  # or effective_number
    # Budget spent in this many rounds after the pilot: before each round but the first, the model of
    # everything bought so far and its nested subsets (subset_fractions) are trained and the learning
    # curves refitted there, at the labels the allocation actually reached (1 = METHOD.md's one greedy).
    rounds: int = 1
    # What the greedy maximizes: "relative" (METHOD.md: mean relative loss reduction) or "delta_m"
    # (the predicted Delta_m: each task weighted by its error scale over the reference metric that
    # its fitted curve extrapolates to the whole pool; with curve_fit="loss" each loss is mapped to its
    # metric error by a line fitted on the same points, docs/method.md), or "delta_m_local" (with
    # refit_floor: each task's floored curve scaled to the Delta_m its metric measured over the refit's
    # points, a least-squares line of the metric error, relative to the metric at the largest point,
    # against the curve: the Delta_m weights calibrated where they were measured, not extrapolated to
    # the reference).
    objective: str = "relative"
    # With objective "delta_m_local": the line goes through each task's this many largest own refit
    # points (2: the last doubling alone, local but one noisy difference), None: through all of them.
    local_points: int | None = None
    # With objective "delta_m_local": each task's weight is this share of its calibrated weight plus the
    # rest of its floored curve's reducible share (objective "relative"), both scaled to mean 1 over the
    # tasks, so that a task whose metric has not moved yet over the refit's points (it learns late) keeps
    # part of its weight instead of none (1: the calibrated weight alone).
    local_mix: float = 1.0
    # With rounds >= 2: a heuristic (equal_budget, ...) that spends the first round after the pilot in
    # place of the greedy, so that the refit sees every task beyond the pilot's few labels before the
    # greedy spends the rest (None: every round is the greedy's).
    explore: str | None = None
    # Bound on the information a task gets through other tasks' labels, in multiples of its own label
    # count (U_t = D_t + min(X_t, c D_t), docs/method.md); None: METHOD.md's unbounded noisy-OR sum.
    # 1.0 is a measured deviation from METHOD.md: on the three synthetic settings it raised TABA's
    # Delta_m by 0 to +10 points and lowered it nowhere (README, "A cap on transferred information").
    transfer_cap: float | None = 1.0
    # With rounds >= 2: at each refit, one more model per task is trained on everything bought so far
    # with that task's labels cut to this fraction, and S is replaced by the transfer those models
    # measure, S[s, t] = b[s, t] / b[t, t] * n_t / n_s from the label elasticities b of each task's
    # error (README "Transfer probed at the refit"; a measured deviation from METHOD.md's pilot
    # lookahead). None: the pilot's S throughout.
    transfer_probe: float | None = None
    # With transfer_probe: the probe is trained this many times, the first at the run's seed against the
    # round's whole-set model, each further one with its own training seed and whole-set model, and S is
    # the mean of their readings: one probe's S repeats across training seeds with an intraclass
    # correlation of 0.2-0.5 (README "How much one transfer probe repeats"). 1: one probe.
    transfer_probe_repeats: int = 1
    # A task whose pilot slope sits at the lower clip of gamma_range (its loss did not fall over the
    # pilot's subsets) gets at least equal_budget's labels, bought before the greedy: a flat pilot
    # curve cannot tell a task that learns late (weak's texture) from one that is learned (README,
    # "A floor for tasks the pilot cannot read"). False: METHOD.md, the greedy alone.
    flat_slope_floor: bool = False
    # With rounds >= 2: each refit fits every task's curve with an irreducible floor, L = f + b U^-gamma,
    # and weights the task by the share of its loss labels can still remove, so that a task whose curve
    # has flattened (learned) stops drawing money; with objective "delta_m" the weight is that reducible
    # error over the reference metric the floored curve reaches (docs/method.md). False: METHOD.md's power law.
    refit_floor: bool = False
    affinity: tuple[tuple[float, ...], ...] | None = None  # known S[s][t]: skips the affinity measurement
    gamma: tuple[float, ...] | None = None  # known slopes: skip the subset trainings
    kappa: tuple[float, ...] | None = None  # learning-curve scale; None = the pilot size
    weights: tuple[float, ...] | None = None  # task weights of the objective; None = all 1

    def __post_init__(self):
        require(0 < self.rho < 1, "rho", f"must be in (0, 1), got {self.rho!r}")
        require_positive(self, "affinity_every", "affinity_batch_size", "affinity_lr")
        require(self.curve_fit in CURVE_FITS, "curve_fit", f"must be one of {CURVE_FITS}, got {self.curve_fit!r}")
        require(self.affinity_step in AFFINITY_STEPS, "affinity_step",
                f"must be one of {AFFINITY_STEPS}, got {self.affinity_step!r}")
        require(0 <= self.affinity_start < 1, "affinity_start", f"must be in [0, 1), got {self.affinity_start!r}")
        require(all(0 < f < 1 for f in self.subset_fractions), "subset_fractions",
                f"entries must be in (0, 1), got {self.subset_fractions!r}")
        low, high = self.gamma_range
        require(0 < low < high, "gamma_range", f"must be (low, high) with 0 < low < high, got {self.gamma_range!r}")
        require(0 <= self.gamma_shrinkage <= 1, "gamma_shrinkage", f"must be in [0, 1], got {self.gamma_shrinkage!r}")
        require(self.curve in CURVES, "curve", f"must be one of {CURVES}, got {self.curve!r}")
        require(self.rounds >= 1, "rounds", f"must be a positive integer, got {self.rounds!r}")
        require(self.objective in OBJECTIVES, "objective", f"must be one of {OBJECTIVES}, got {self.objective!r}")
        require(self.objective == "relative" or self.weights is None, "objective",
                f"{self.objective!r} sets the task weights itself; config.taba.weights={self.weights!r} must be unset")
        require(self.explore is None or self.explore in HEURISTICS, "explore",
                f"must be one of {HEURISTICS} or None, got {self.explore!r}")
        require(self.transfer_cap is None or self.transfer_cap >= 0, "transfer_cap",
                f"must be None or >= 0, got {self.transfer_cap!r}")
        require(self.transfer_probe is None or (0 < self.transfer_probe < 1 and self.rounds >= 2), "transfer_probe",
                f"cuts one task's labels at a refit: it must be None or in (0, 1) with rounds >= 2, got "
                f"{self.transfer_probe!r} with rounds={self.rounds!r}")
        repeats = self.transfer_probe_repeats
        require(repeats >= 1 and (repeats == 1 or self.transfer_probe is not None), "transfer_probe_repeats",
                f"repeats the transfer probe: it must be a positive integer, above 1 only with transfer_probe set, "
                f"got {repeats!r} with transfer_probe={self.transfer_probe!r}")
        require(self.transfer_probe is None or self.affinity is None, "transfer_probe",
                f"measures S, which config.taba.affinity={self.affinity!r} gives: set one of them")
        require(self.objective != "delta_m_local" or self.refit_floor, "objective",
                f"'delta_m_local' weights the refit's floored curves: it needs refit_floor=True, got "
                f"refit_floor={self.refit_floor!r}")
        require(self.local_points is None or (self.objective == "delta_m_local" and self.local_points >= 2),
                "local_points", f"counts the points of objective 'delta_m_local''s line: it must be None or >= 2 "
                f"with that objective, got {self.local_points!r} with objective={self.objective!r}")
        require(0 <= self.local_mix <= 1 and (self.local_mix == 1 or self.objective == "delta_m_local"), "local_mix",
                f"mixes objective 'delta_m_local''s weights: it must be in [0, 1], and below 1 only with that "
                f"objective, got {self.local_mix!r} with objective={self.objective!r}")
        require(not self.refit_floor or self.rounds >= 2, "refit_floor",
                f"fits the curves of later rounds: it needs rounds >= 2, got rounds={self.rounds!r}")
        require(not self.refit_floor or self.weights is None, "refit_floor",
                f"sets the task weights itself; config.taba.weights={self.weights!r} must be unset")
        require(self.explore is None or self.rounds >= 2, "explore",
                f"spends the first of several rounds: it needs rounds >= 2, got rounds={self.rounds!r}")
        if self.known:
            for name, default in (("rounds", 1), ("objective", "relative")):
                require(getattr(self, name) == default, name, f"needs trainings to measure learning curves, but "
                        f"affinity, gamma and kappa are all given (nothing is trained); got {getattr(self, name)!r}")
        if self.affinity is not None:
            size = len(self.affinity)
            require(size > 0 and all(len(row) == size for row in self.affinity), "affinity",
                    f"must be a square matrix ((1, 0.5), (0.5, 1)), got {self.affinity!r}")
            require(all(0 <= v <= 1 for row in self.affinity for v in row), "affinity",
                    f"entries must lie in [0, 1], got {self.affinity!r}")
            require(all(self.affinity[t][t] == 1 for t in range(size)), "affinity",
                    f"diagonal must be 1 (S[t][t] = 1), got {self.affinity!r}")
        for name in ("gamma", "kappa"):
            values = getattr(self, name)
            require(values is None or all(v > 0 for v in values), name, f"must be positive, got {values!r}")
        require(self.weights is None or (all(w >= 0 for w in self.weights) and sum(self.weights) > 0), "weights",
                f"must be non-negative and not all zero, got {self.weights!r}")

    @property
    def known(self) -> bool:
        """Whether the information model is fully given (nothing to estimate, no pilot)."""
        return self.affinity is not None and self.gamma is not None and self.kappa is not None

    def check_tasks(self, num_tasks: int) -> None:
        """Per-task fields against the number of tasks of the job."""
        if self.affinity is not None:
            require(len(self.affinity) == num_tasks, "affinity",
                    f"must be {num_tasks}x{num_tasks} for {num_tasks} tasks, got {len(self.affinity)} rows")
        for name in ("gamma", "kappa", "weights"):
            task_values(getattr(self, name), num_tasks, name)


TASKONOMY_SUBSETS = ("debug", "tiny", "medium", "full", "fullplus")
PASCAL_SOURCES = ("segmentation", "main", "context")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataFields:
    """Which dataset (top-level fields of a job config)."""

    # synthetic: the embedded scenes (no download); a TFDS builder's name (taskonomy, nyuv2_multitask,
    # pascal_multitask); or npz:PATH, a user's arrays (taba_jax.data.arrays)
    dataset: str = "synthetic"
    num_images: int = 3000  # synthetic: scenes generated, split train/validation/test = 80/10/10 %
    image_size: int = 32  # images (and dense targets) are brought to image_size x image_size
    data_seed: int = 0
    cache_data: bool = True  # keep the generated scenes in <workdir>/data_cache
    manual_dir: str | None = None  # TFDS datasets: the raw files you downloaded (docs/datasets.md)
    data_dir: str | None = None  # TFDS datasets: where the built dataset is written and read
    in_memory: bool = False  # TFDS datasets: read every split into memory first (else streamed by index)
    taskonomy_subset: str = "tiny"  # taskonomy: the release's building split train_val_test_<subset>.csv
    pascal_source: str = "segmentation"  # pascal_multitask: segmentation (VOC), main (VOC) or context (PASCAL-MT)

    def __post_init__(self):
        from taba_jax.data.builders import DATASETS
        choices = ("synthetic",) + tuple(DATASETS) + ("npz:PATH",)
        require(self.dataset in choices or self.dataset.startswith("npz:"), "dataset",
                f"must be one of {choices}, got {self.dataset!r}")
        require(self.dataset != "npz:", "dataset", "npz: needs the file's path, e.g. npz:/data/arrays.npz")
        if self.dataset in DATASETS:
            require(self.manual_dir is not None, "manual_dir", f"is required for dataset {self.dataset!r}: the "
                    "directory with the files you downloaded (see docs/datasets.md)")
        require(self.taskonomy_subset in TASKONOMY_SUBSETS, "taskonomy_subset",
                f"must be one of {TASKONOMY_SUBSETS}, got {self.taskonomy_subset!r}")
        require(self.pascal_source in PASCAL_SOURCES, "pascal_source",
                f"must be one of {PASCAL_SOURCES}, got {self.pascal_source!r}")
        require(self.num_images >= 10, "num_images", f"must be at least 10, got {self.num_images!r}")
        require(self.image_size >= 8, "image_size", f"must be at least 8, got {self.image_size!r}")
        require_positive(self, "data_seed", allow_zero=True)


NO_DATASET = "none"  # launch/allocate.py: a pool of config.num_images images, no data


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProblemFields:
    """Tasks and their label costs (top-level fields of a job config)."""

    tasks: tuple[str, ...] = ("segment", "depth", "normal", "edge")
    costs: tuple[float, ...] = (10.0, 3.0, 3.0, 3.0)

    def __post_init__(self):
        require_names(self.tasks, "tasks")
        require(len(self.costs) == len(self.tasks), "costs",
                f"needs one cost per task ({len(self.tasks)}: {', '.join(self.tasks)}), got {self.costs!r}")
        for name, cost in zip(self.tasks, self.costs):
            require(cost > 0, "costs", f"cost of {name!r} must be positive, got {cost!r}")

    def check_strategy(self, strategy: str, field: str = "strategy") -> None:
        if strategy.startswith("shares:"):
            try:
                parse_shares(strategy, len(self.tasks))
            except ValueError as e:
                raise ConfigError(field, str(e)) from None
            return
        single = strategy.startswith("single_task:")
        require(strategy in HEURISTICS + ("taba",) or (single and strategy.split(":", 1)[1] in self.tasks), field,
                f"must be one of {', '.join(strategy_names(self.tasks))}, got {strategy!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainJobConfig(ProblemFields, DataFields):
    """`launch/train.py`: allocate (or load an allocation), train, evaluate."""

    budget: float = 6000.0
    strategy: str = "equal_budget"
    allocation: str | None = None  # a file from launch/allocate.py; replaces strategy and budget
    reference: str | None = None  # results.json of the Delta_m reference (e.g. full supervision)
    seed: int = 0
    taba: TabaConfig = TabaConfig()
    train: TrainConfig = TrainConfig()

    def __post_init__(self):
        ProblemFields.__post_init__(self)
        DataFields.__post_init__(self)
        require_positive(self, "budget", "seed", allow_zero=True)
        self.check_strategy(self.strategy)
        taba_runs = self.strategy == "taba"
        _check_nested(self, len(self.tasks), uses_taba=taba_runs, measures_affinity=taba_runs)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AllocateJobConfig(ProblemFields, DataFields):
    """`launch/allocate.py`: an allocation of the train split of `dataset` (read as a train job
    reads it; a TFDS pool's image ids go into the file), or with dataset="none" of a pool of
    `num_images` images that no data stands behind (TABA then needs its information model given)."""

    dataset: str = NO_DATASET
    num_images: int = 10_000  # dataset="none": the pool; synthetic: scenes generated (the pool is 80 %)
    budget: float = 30_000.0
    strategy: str = "taba"
    seed: int = 0
    taba: TabaConfig = TabaConfig()
    train: TrainConfig = TrainConfig()  # the pilot's training, where TABA estimates on the dataset

    def __post_init__(self):
        ProblemFields.__post_init__(self)
        if self.dataset != NO_DATASET:
            DataFields.__post_init__(self)
        require_positive(self, "num_images")
        require_positive(self, "budget", "seed", allow_zero=True)
        self.check_strategy(self.strategy)
        _check_nested(self, len(self.tasks), uses_taba=self.strategy == "taba")
        if self.strategy == "taba":
            require(self.taba.known or self.dataset != NO_DATASET, "taba",
                    "dataset='none' has no images to run TABA's pilot on: give config.taba.affinity, "
                    "config.taba.gamma and config.taba.kappa, or a config.dataset")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExperimentConfig(ProblemFields, DataFields):
    """`launch/experiment.py`: every strategy x budget x seed of one setting."""

    setting: str = "custom"
    preset: str = "quick"
    budgets: tuple[float, ...] = (1500.0, 4000.0)
    strategies: tuple[str, ...] = ("all",)  # "all" = every single_task:<t>, the heuristics and taba
    seeds: tuple[int, ...] = (0, 1)
    oracle_budgets: tuple[float, ...] = ()  # budgets where the fixed-share grid (the oracle) also runs
    oracle_resolution: int = 4  # the grid's step: every split of the budget into this many equal parts
    oracle_interior: bool = False  # only the splits that give every task at least one part
    oracle_seeds: tuple[int, ...] = ()  # seeds the grid runs with (a subset of config.seeds); () = all
    # The grid's best point, picked on oracle_seeds, is also run on the other seeds: there the report
    # measures its gain free of the optimism of picking the best of many noisy means.
    oracle_holdout: bool = False
    keep_checkpoints: bool = False  # keep each finished run's checkpoints (else deleted; results stay)
    workers: int = 1  # runs in parallel worker processes (1 = one after another in this process)
    threads_per_worker: int = 1  # XLA CPU intra-op threads of each worker process (Ray: CPUs per run)
    executor: str = "local"  # local: this machine (`workers` processes); ray: each run a Ray task
    ray_address: str = ""  # executor=ray: "" starts a local Ray (workers x threads CPUs), "auto" or a head address
    gpus_per_run: float = 0.0  # executor=ray: GPUs each run asks Ray for (1: one run per GPU)
    max_retries: int = 1  # a run that raises, or whose worker dies, is tried again this many times
    taba: TabaConfig = TabaConfig()
    # Named TABA variants, each run as strategy "taba:<name>": fields of config.taba it overrides,
    # e.g. {"rounds3": {"rounds": 3, "curve_fit": "metric", "objective": "delta_m"}}.
    taba_variants: dict[str, dict] = dataclasses.field(default_factory=dict)
    train: TrainConfig = TrainConfig()

    def __post_init__(self):
        ProblemFields.__post_init__(self)
        DataFields.__post_init__(self)
        require_names((self.setting,), "setting")
        if self.taba_variants:
            require_names(tuple(self.taba_variants), "taba_variants")
        require_positive(self, "workers", "threads_per_worker")
        require(self.executor in ("local", "ray"), "executor", f"must be local or ray, got {self.executor!r}")
        require(self.gpus_per_run >= 0, "gpus_per_run", f"must be non-negative, got {self.gpus_per_run!r}")
        require(self.max_retries >= 0, "max_retries", f"must be non-negative, got {self.max_retries!r}")
        require(len(self.budgets) > 0 and all(b >= 0 for b in self.budgets), "budgets",
                f"must be non-negative budgets, got {self.budgets!r}")
        require(len(self.seeds) > 0 and all(s >= 0 for s in self.seeds), "seeds",
                f"must be non-negative integers, got {self.seeds!r}")
        require_names(self.strategies, "strategies", STRATEGY_PATTERN, STRATEGY_CHARACTERS)
        if self.strategies != ("all",):
            for strategy in self.strategies:
                variant = taba_variant(strategy)
                if variant is not None:
                    require(variant in self.taba_variants, "strategies",
                            f"{strategy!r} names no entry of config.taba_variants ({sorted(self.taba_variants)})")
                else:
                    self.check_strategy(strategy, "strategies")
        require(all(b in self.budgets for b in self.oracle_budgets), "oracle_budgets",
                f"must be among config.budgets {self.budgets!r}, got {self.oracle_budgets!r}")
        require_positive(self, "oracle_resolution")
        require(not self.oracle_interior or self.oracle_resolution >= len(self.tasks), "oracle_resolution",
                f"with oracle_interior every task needs a part: must be >= {len(self.tasks)} tasks, got "
                f"{self.oracle_resolution!r}")
        if self.oracle_budgets:  # the oracle's seeds and hold-out only matter where an oracle runs
            require(all(s in self.seeds for s in self.oracle_seeds), "oracle_seeds",
                    f"must be among config.seeds {self.seeds!r}, got {self.oracle_seeds!r}")
            require(not self.oracle_holdout or 0 < len(set(self.oracle_seeds)) < len(set(self.seeds)),
                    "oracle_holdout", f"needs config.oracle_seeds to leave some of config.seeds {self.seeds!r} out, "
                    f"got oracle_seeds={self.oracle_seeds!r}")
        _check_nested(self, len(self.tasks), uses_taba="taba" in self.strategy_list, measures_affinity=True)
        for strategy in self.strategy_list:  # each variant that runs is a valid TabaConfig for the tasks
            variant = taba_variant(strategy)
            if variant is not None:
                variant_config = self.taba_config(strategy)
                with _nested(f"taba_variants.{variant}"):
                    variant_config.check_tasks(len(self.tasks))

    @property
    def strategy_list(self) -> list[str]:
        """The strategies run at every budget ("all": every named strategy and every TABA variant)."""
        if self.strategies == ("all",):
            return strategy_names(self.tasks) + [f"taba:{name}" for name in sorted(self.taba_variants)]
        return list(self.strategies)

    def taba_config(self, strategy: str) -> TabaConfig:
        """TABA's config for strategy "taba" or "taba:<variant>" (config.taba with the variant's fields)."""
        name = taba_variant(strategy)
        if name is None:
            return self.taba
        return parse(TabaConfig, {**to_json(self.taba), **self.taba_variants[name]}, f"taba_variants.{name}")

    def strategies_at(self, budget: float, seed: int) -> list[str]:
        """The strategies run at `budget` with `seed`: the list, plus the oracle's share grid where it runs."""
        oracle = budget in self.oracle_budgets and (not self.oracle_seeds or seed in self.oracle_seeds)
        grid = (share_strategies(len(self.tasks), self.oracle_resolution, interior=self.oracle_interior)
                if oracle else [])
        return self.strategy_list + [s for s in grid if s not in self.strategy_list]

    @property
    def holdout_seeds(self) -> tuple[int, ...]:
        """The seeds the oracle's best point is checked on (oracle_holdout), none otherwise."""
        return tuple(s for s in self.seeds if s not in self.oracle_seeds) if self.oracle_holdout else ()


class _nested:
    """Context: a ConfigError raised inside gets `prefix.` put before its field."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if isinstance(error, ConfigError):
            raise error.under(self.prefix) from None
        return False


def taba_variant(strategy: str) -> str | None:
    """`<name>` of an experiment strategy "taba:<name>" (an entry of config.taba_variants), else None."""
    return strategy[len("taba:"):] if strategy.startswith("taba:") else None


def runs_taba(strategy: str) -> bool:
    """Whether an experiment strategy is TABA: plain "taba" or one of its variants."""
    return strategy == "taba" or taba_variant(strategy) is not None


def _check_nested(job, num_tasks: int, uses_taba: bool, measures_affinity: bool = False) -> None:
    """Per-task fields of the nested configs against the job's tasks (TABA's only if used); with
    `measures_affinity` the job measures the affinity that "auto:<k>" groups need where none is given."""
    if uses_taba or job.train.chooses_groups:
        with _nested("taba"):
            job.taba.check_tasks(num_tasks)
    with _nested("train"):
        task_values(job.train.task_weights, num_tasks, "task_weights")
        job.train.check_groups(job.tasks, affinity_given=job.taba.affinity is not None or measures_affinity)
