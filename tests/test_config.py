import dataclasses
import importlib.util
import os

import ml_collections
import pytest

from taba_jax import config as cfg
from taba_jax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config_file(name, *args):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*args)


def parse_train_job(**overrides):
    """TrainJobConfig parsed from its defaults with `overrides` (`train__num_steps` = config.train.num_steps),
    set on a plain dict so that no ConfigDict type check runs before the parser's."""
    config = cfg.to_config_dict(cfg.TrainJobConfig()).to_dict()
    for dotted, value in overrides.items():
        node, *path = dotted.split("__")
        target = config
        for key in [node, *path][:-1]:
            target = target[key]
        target[[node, *path][-1]] = value
    return cfg.parse(cfg.TrainJobConfig, config)


@pytest.mark.parametrize("field, value, message", [
    ("train__num_steps", 0, "config.train.num_steps: must be positive, got 0"),
    ("train__batch_size", -1, "config.train.batch_size: must be positive, got -1"),
    ("train__batching", "sideways", "config.train.batching: must be one of ('per_task', 'joint'), got 'sideways'"),
    ("train__learning_rate", float("nan"), "config.train.learning_rate: must be a finite number, got nan"),
    ("train__learning_rate", 0.0, "config.train.learning_rate: must be positive, got 0.0"),
    ("train__warmup_steps", -1, "config.train.warmup_steps: must be non-negative, got -1"),
    ("train__weight_decay", -0.1, "config.train.weight_decay: must be non-negative, got -0.1"),
    ("train__widths", (8, 0), "config.train.widths: must be positive channel counts, got (8, 0)"),
    ("train__widths", (8.5,), "config.train.widths[0]: must be an integer, got 8.5"),
    ("train__blocks", 0, "config.train.blocks: must be positive, got 0"),
    ("train__task_weights", (1.0, -1.0, 1.0, 1.0), "config.train.task_weights: must be non-negative and not all zero"),
    ("train__task_weights", (1.0, 2.0), "config.train.task_weights: needs one value or one per task (4), got 2"),
    ("train__checkpoint_every", 0, "config.train.checkpoint_every: must be positive, got 0"),
    ("train__log_every", 0, "config.train.log_every: must be positive, got 0"),
    ("train__eval_batch_size", 0, "config.train.eval_batch_size: must be positive, got 0"),
    ("train__model", "resnet", "config.train.model: must be one of ('hard_sharing', 'mtan', 'adashare'), got 'resnet'"),
    ("train__adashare_policy_steps", 0, "config.train.adashare_policy_steps: must be positive, got 0"),
    ("train__adashare_warmup_steps", -1, "config.train.adashare_warmup_steps: must be non-negative, got -1"),
    ("train__adashare_warmup_steps", 500,
     "config.train.adashare_warmup_steps: must be less than adashare_policy_steps (500), got 500"),
    ("train__adashare_curriculum_fraction", 1.5,
     "config.train.adashare_curriculum_fraction: must be in (0, 1], got 1.5"),
    ("train__adashare_initial_temperature", 0.0,
     "config.train.adashare_initial_temperature: must be positive, got 0.0"),
    ("train__adashare_final_temperature", 10.0,
     "config.train.adashare_final_temperature: must not exceed adashare_initial_temperature (5), got 10.0"),
    ("train__adashare_sparsity_weight", -1.0, "config.train.adashare_sparsity_weight: must be non-negative, got -1.0"),
    ("train__adashare_sharing_weight", -0.5, "config.train.adashare_sharing_weight: must be non-negative, got -0.5"),
    ("train__adashare_policy_learning_rate", 0.0,
     "config.train.adashare_policy_learning_rate: must be positive, got 0.0"),
    ("train__groups", ("auto:0",), "config.train.groups: 'auto:<k>' (k >= 1 networks) stands alone, got ('auto:0',)"),
    ("train__groups", ("segment+depth", "auto:2"), "config.train.groups: 'auto:<k>' (k >= 1 networks) stands alone"),
    ("train__groups", ("segment+segment",), "config.train.groups: 'segment+segment' names a task twice"),
    ("train__groups", ("segment+",), "config.train.groups: 'segment+' is not tasks joined by '+'"),
    ("train__groups", ("segment+depth", "normal+edge+sky"),
     "config.train.groups: names tasks ['sky'] that are not among config.tasks"),
    ("train__groups", ("segment+depth",),
     "config.train.groups: must put every task in a group; ['normal', 'edge'] in none of ('segment+depth',)"),
    ("train__groups", ("auto:2",), "config.train.groups: 'auto:2' chooses groups from config.taba.affinity; give it"),
    ("taba__rho", 1.5, "config.taba.rho: must be in (0, 1), got 1.5"),
    ("taba__affinity_every", 0, "config.taba.affinity_every: must be positive, got 0"),
    ("taba__affinity_start", 1.0, "config.taba.affinity_start: must be in [0, 1), got 1.0"),
    ("taba__affinity_batch_size", 0, "config.taba.affinity_batch_size: must be positive, got 0"),
    ("taba__affinity_lr", -1.0, "config.taba.affinity_lr: must be positive, got -1.0"),
    ("taba__subset_fractions", (0.5, 1.0), "config.taba.subset_fractions: entries must be in (0, 1), got (0.5, 1.0)"),
    ("taba__gamma_range", (1.0, 0.5), "config.taba.gamma_range: must be (low, high) with 0 < low < high"),
    ("taba__gamma_range", (0.1,), "config.taba.gamma_range: must have 2 entries, got (0.1,)"),
    ("taba__curve", "cubic", "config.taba.curve: must be one of ('power', 'effective_number'), got 'cubic'"),
    ("taba__curve_fit", "accuracy", "config.taba.curve_fit: must be one of ('loss', 'metric'), got 'accuracy'"),
    ("taba__affinity_step", "raw", "config.taba.affinity_step: must be one of ('normalized', 'gradient'), got 'raw'"),
    ("taba__rounds", 0, "config.taba.rounds: must be a positive integer, got 0"),
    ("taba__transfer_cap", -0.5, "config.taba.transfer_cap: must be None or >= 0, got -0.5"),
    ("taba__transfer_probe", 0.5, "config.taba.transfer_probe: cuts one task's labels at a refit: it must be None "
                                  "or in (0, 1) with rounds >= 2, got 0.5 with rounds=1"),
    ("taba__transfer_probe", 1.0, "config.taba.transfer_probe: cuts one task's labels at a refit"),
    ("taba__transfer_probe_repeats", 4, "config.taba.transfer_probe_repeats: repeats the transfer probe: it must be a "
                                        "positive integer, above 1 only with transfer_probe set, got 4 with "
                                        "transfer_probe=None"),
    ("taba__transfer_probe_repeats", 0, "config.taba.transfer_probe_repeats: repeats the transfer probe"),
    ("taba__gamma_shrinkage", 1.5, "config.taba.gamma_shrinkage: must be in [0, 1], got 1.5"),
    ("taba__objective", "mean", "config.taba.objective: must be one of ('relative', 'delta_m', 'delta_m_local'), got 'mean'"),
    ("taba__local_points", 2, "config.taba.local_points: counts the points of objective 'delta_m_local''s line: it "
                              "must be None or >= 2 with that objective, got 2 with objective='relative'"),
    ("taba__local_mix", 0.5, "config.taba.local_mix: mixes objective 'delta_m_local''s weights: it must be in "
                             "[0, 1], and below 1 only with that objective, got 0.5 with objective='relative'"),
    ("taba__explore", "taba", "config.taba.explore: must be one of ('equal_budget', 'equal_count_disjoint', "
                              "'equal_count_shared', 'random_pairs') or None, got 'taba'"),
    ("taba__explore", "equal_budget", "config.taba.explore: spends the first of several rounds: it needs rounds >= 2, "
                                      "got rounds=1"),
    ("taba__refit_floor", True, "config.taba.refit_floor: fits the curves of later rounds: it needs rounds >= 2, "
                                "got rounds=1"),
    ("taba__affinity", ((1.0, 0.5),), "config.taba.affinity: must be a square matrix"),
    ("taba__affinity", ((1.0, 2.0), (0.0, 1.0)), "config.taba.affinity: entries must lie in [0, 1]"),
    ("taba__affinity", ((0.5, 0.0), (0.0, 1.0)), "config.taba.affinity: diagonal must be 1"),
    ("taba__gamma", (0.0,), "config.taba.gamma: must be positive, got (0.0,)"),
    ("taba__kappa", (-1.0,), "config.taba.kappa: must be positive, got (-1.0,)"),
    ("taba__weights", (0.0,), "config.taba.weights: must be non-negative and not all zero, got (0.0,)"),
    ("tasks", ("segment", "segment"), "config.tasks: has duplicates ['segment']"),
    ("tasks", ("('segment'", "'depth')"), "config.tasks: \"('segment'\" is not a valid name"),
    ("costs", (10.0, 3.0), "config.costs: needs one cost per task (4: segment, depth, normal, edge), got (10.0, 3.0)"),
    ("costs", (10.0, 0.0, 3.0, 3.0), "config.costs: cost of 'depth' must be positive, got 0.0"),
    ("dataset", "imagenet", "config.dataset: must be one of ('synthetic', "),
    ("dataset", "nyuv2_multitask", "config.manual_dir: is required for dataset 'nyuv2_multitask'"),
    ("num_images", 5, "config.num_images: must be at least 10, got 5"),
    ("image_size", 4, "config.image_size: must be at least 8, got 4"),
    ("data_seed", -1, "config.data_seed: must be non-negative, got -1"),
    ("cache_data", 1, "config.cache_data: must be True or False, got 1"),
    ("budget", -5.0, "config.budget: must be non-negative, got -5.0"),
    ("strategy", "greedy", "config.strategy: must be one of single_task:segment, single_task:depth"),
    ("seed", 1.5, "config.seed: must be an integer, got 1.5"),
    ("allocation", 3, "config.allocation: must be a string, got 3"),
])
def test_every_field_error_names_the_field_and_the_value(field, value, message):
    with pytest.raises(ConfigError) as error:
        parse_train_job(**{field: value})
    assert str(error.value).startswith(message), str(error.value)


def test_taba_fields_are_checked_against_the_tasks_only_when_taba_runs():
    parse_train_job(taba__gamma=(0.5, 0.4))  # equal_budget: TABA's fields are unused
    with pytest.raises(ConfigError, match=r"config.taba.gamma: needs one value or one per task \(4\), got 2"):
        parse_train_job(strategy="taba", taba__gamma=(0.5, 0.4))
    with pytest.raises(ConfigError, match=r"config.taba.affinity: must be 4x4 for 4 tasks, got 2 rows"):
        parse_train_job(strategy="taba", taba__affinity=((1.0, 0.5), (0.5, 1.0)))


def test_taba_rounds_and_delta_m_objective_need_what_they_measure():
    with pytest.raises(ConfigError, match=r"config.taba.objective: 'delta_m' sets the task weights itself; "
                                          r"config.taba.weights=\(1.0, 2.0, 1.0, 1.0\) must be unset"):
        parse_train_job(taba__objective="delta_m", taba__curve_fit="metric", taba__weights=(1.0, 2.0, 1.0, 1.0))
    known = {"taba__affinity": ((1.0,),), "taba__gamma": (0.5,), "taba__kappa": (10.0,)}
    with pytest.raises(ConfigError, match=r"config.taba.rounds: needs trainings to measure learning curves, but "
                                          r"affinity, gamma and kappa are all given \(nothing is trained\); got 3"):
        parse_train_job(taba__rounds=3, **known)
    parse_train_job(taba__rounds=3, taba__objective="delta_m", taba__curve_fit="metric")
    with pytest.raises(ConfigError, match=r"config.taba.refit_floor: sets the task weights itself; "
                                          r"config.taba.weights=\(1.0, 2.0, 1.0, 1.0\) must be unset"):
        parse_train_job(taba__rounds=2, taba__refit_floor=True, taba__weights=(1.0, 2.0, 1.0, 1.0))
    parse_train_job(taba__rounds=2, taba__refit_floor=True, taba__objective="delta_m", taba__curve_fit="metric")
    parse_train_job(taba__objective="delta_m")  # loss curves, mapped to metric errors


def test_unknown_field_gets_a_suggestion():
    config = cfg.to_config_dict(cfg.TrainConfig()).to_dict()
    config["learning_rat"] = 0.1
    with pytest.raises(ConfigError, match=r"config.train.learning_rat: unknown field; did you mean 'learning_rate'\?"):
        cfg.parse(cfg.TrainConfig, config, "config.train")


def test_comma_separated_strings_of_config_flags_are_split():
    """config_flags hands `--config.tasks=segment,depth` over as ('segment,depth',)."""
    job = parse_train_job(tasks=("segment,depth",), costs=(10, 3))
    assert job.tasks == ("segment", "depth") and job.costs == (10.0, 3.0)
    assert parse_train_job(tasks="segment, depth", costs=(10, 3)).tasks == ("segment", "depth")


def test_optional_fields_are_placeholders_and_round_trip():
    config = cfg.to_config_dict(cfg.TrainJobConfig())
    assert config.allocation is None and config.taba.gamma is None
    config.taba.gamma = (0.5,)  # a placeholder takes a value of its type
    config.reference = "/tmp/results.json"
    job = cfg.parse(cfg.TrainJobConfig, config)
    assert job.taba.gamma == (0.5,) and job.reference == "/tmp/results.json"
    assert cfg.parse(cfg.TrainJobConfig, cfg.to_config_dict(job)) == job
    assert cfg.to_json(job)["train"]["widths"] == (16, 32, 64)


@pytest.mark.parametrize("name, cls, args", [
    ("synthetic", cfg.TrainJobConfig, ()), ("allocate", cfg.AllocateJobConfig, ()),
    ("experiment", cfg.ExperimentConfig, ("geometry,quick",)), ("experiment", cfg.ExperimentConfig, ("tag,full",)),
    ("experiment", cfg.ExperimentConfig, ("weak",)),
])
def test_config_files_parse_and_hold_tuples(name, cls, args):
    config = load_config_file(name, *args)
    parsed = cfg.parse(cls, config)
    for field in dataclasses.fields(parsed):
        assert not isinstance(getattr(parsed, field.name), (list, str)) or field.type in ("str", "str | None")
    assert isinstance(config.tasks, tuple) and isinstance(config.costs, tuple)
    with open(os.path.join(ROOT, "configs", f"{name}.py")) as f:
        assert f.readline().startswith("# python launch/")


@pytest.mark.parametrize("name, cls, args, dataset", [
    ("taskonomy", cfg.TrainJobConfig, (), "taskonomy"), ("pascal", cfg.TrainJobConfig, (), "pascal_multitask"),
    ("experiment", cfg.ExperimentConfig, ("taskonomy",), "taskonomy"),
    ("experiment", cfg.ExperimentConfig, ("pascal,full",), "pascal_multitask"),
])
def test_real_data_config_files_parse_once_given_the_manual_dir(name, cls, args, dataset):
    config = load_config_file(name, *args)
    with pytest.raises(ConfigError, match=f"config.manual_dir: is required for dataset '{dataset}'"):
        cfg.parse(cls, config)
    config.manual_dir = "/data/raw"
    parsed = cfg.parse(cls, config)
    assert parsed.dataset == dataset and parsed.image_size == 64 and len(parsed.costs) == len(parsed.tasks)
    assert isinstance(config.tasks, tuple) and isinstance(config.costs, tuple)
    with open(os.path.join(ROOT, "configs", f"{name}.py")) as f:
        assert f.readline().startswith("# python launch/")


@pytest.mark.parametrize("field, value, message", [
    ("dataset", "imagenet", "config.dataset: must be one of ('synthetic', 'taskonomy', 'nyuv2_multitask', "
                            "'pascal_multitask', 'npz:PATH'), got 'imagenet'"),
    ("dataset", "npz:", "config.dataset: npz: needs the file's path, e.g. npz:/data/arrays.npz"),
    ("taskonomy_subset", "huge", "config.taskonomy_subset: must be one of ('debug', 'tiny', 'medium', 'full', "
                                 "'fullplus'), got 'huge'"),
    ("pascal_source", "coco", "config.pascal_source: must be one of ('segmentation', 'main', 'context'), got 'coco'"),
    ("train__input_workers", -1, "config.train.input_workers: must be non-negative, got -1"),
    ("train__prefetch_batches", 0, "config.train.prefetch_batches: must be positive, got 0"),
])
def test_bad_data_fields_are_named(field, value, message):
    with pytest.raises(ConfigError) as error:
        parse_train_job(**{field: value})
    assert message in str(error.value)


def test_npz_dataset_needs_no_manual_dir():
    assert parse_train_job(dataset="npz:/data/arrays.npz").dataset == "npz:/data/arrays.npz"


def test_allocate_job_with_taba_needs_known_parameters_or_a_dataset():
    config = cfg.to_config_dict(cfg.AllocateJobConfig(strategy="equal_budget"))
    config.strategy = "taba"
    with pytest.raises(ConfigError, match="config.taba: dataset='none' has no images to run TABA's pilot on"):
        cfg.parse(cfg.AllocateJobConfig, config)
    config.dataset = "synthetic"
    assert cfg.parse(cfg.AllocateJobConfig, config).dataset == "synthetic"
    config.dataset = "taskonomy"  # a dataset's own fields are checked once there is one
    with pytest.raises(ConfigError, match="config.manual_dir: is required for dataset 'taskonomy'"):
        cfg.parse(cfg.AllocateJobConfig, config)


def test_experiment_strategies_all_or_a_list():
    job = cfg.parse(cfg.ExperimentConfig, ml_collections.ConfigDict({"tasks": ("segment", "depth"),
                                                                      "costs": (10.0, 3.0)}))
    assert job.strategy_list == ["single_task:segment", "single_task:depth", "equal_budget", "equal_count_disjoint",
                                 "equal_count_shared", "random_pairs", "taba"]
    job = dataclasses.replace(job, strategies=("taba", "equal_budget"))
    assert job.strategy_list == ["taba", "equal_budget"]


def test_model_and_groups_are_set_from_the_command_line_config():
    config = cfg.to_config_dict(cfg.TrainJobConfig())
    config.train.model = "adashare"
    config.train.adashare_policy_steps = 20
    config.train.adashare_warmup_steps = 5
    config.train.groups = ("segment+depth,normal+edge",)  # what config_flags hands over for a comma list
    job = cfg.parse(cfg.TrainJobConfig, config)
    assert job.train.model == "adashare" and job.train.adashare_policy_steps == 20
    assert job.train.task_groups == [("segment", "depth"), ("normal", "edge")]
