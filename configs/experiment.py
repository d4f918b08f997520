# python launch/experiment.py --config=configs/experiment.py:geometry,quick --workdir=/tmp/taba_geometry
"""TABA against the heuristics on one setting: every strategy x budget x seed.

The argument is `<setting>[,<preset>]`: settings below, presets `quick` (the default) and `full`.
Every field (`taba_jax.config.ExperimentConfig`) can be overridden, e.g. `--config.tasks=segment,depth
--config.costs=10,3 --config.budgets=800,2000`, so a new setting needs no code. The real-data
settings (`taskonomy`, `pascal`) need `--config.manual_dir=<the downloaded files>` (README "Real
datasets"):

    python launch/experiment.py --config=configs/experiment.py:taskonomy --workdir=/tmp/taba_taskonomy \
        --config.manual_dir=$HOME/data/taskonomy
"""
from taba_jax import config as cfg

# Budgets are money; labelling every task on every image of the pool costs pool size x sum of costs.
SETTINGS = {
    # dense geometry tasks, segmentation priced 10/3 of the others (the paper author's public setting)
    "geometry": dict(tasks=("segment", "depth", "normal", "edge"), costs=(10.0, 3.0, 3.0, 3.0),
                     quick=(1500.0, 4000.0), full=(1500.0, 4000.0, 10000.0)),
    # a cheap image-level task beside expensive dense ones
    "tag": dict(tasks=("segment", "classify", "depth"), costs=(10.0, 1.0, 3.0),
                quick=(1000.0, 3000.0), full=(1000.0, 3000.0, 8000.0)),
    # a weakly related task (background texture frequency) beside two geometry tasks
    "weak": dict(tasks=("segment", "depth", "texture"), costs=(10.0, 3.0, 3.0),
                 quick=(1000.0, 3000.0), full=(1000.0, 3000.0, 8000.0)),
}
# Real datasets: the pool is the dataset's train split (Taskonomy: streamed, never in memory).
REAL_SETTINGS = {
    # the paper-style Taskonomy setting: four dense tasks of the tiny subset, segmentation priced 10/3
    # of a geometry label; budgets buy the equivalent of 2 500 / 10 000 / 40 000 fully labeled views
    "taskonomy": dict(tasks=("segment_semantic", "depth_zbuffer", "normal", "edge_texture"),
                      costs=(10.0, 3.0, 3.0, 3.0), quick=(47_500.0, 190_000.0),
                      full=(47_500.0, 190_000.0, 760_000.0),
                      data=dict(dataset="taskonomy", taskonomy_subset="tiny", image_size=64)),
    # PASCAL VOC 2012: segmentation masks against image-level class labels, 10 : 1 (1 464 train images)
    "pascal": dict(tasks=("segmentation", "classes"), costs=(10.0, 1.0), quick=(1500.0, 5000.0),
                   full=(1500.0, 5000.0, 10_000.0),
                   data=dict(dataset="pascal_multitask", pascal_source="segmentation", image_size=64,
                             in_memory=True)),
}
# TABA variants beside plain `taba` (METHOD.md's single greedy on the pilot's estimate), each run as
# strategy "taba:<name>" (README "TABA in rounds"): spending the budget in three rounds, refitting
# the learning curves on the labels reached, and maximizing the predicted Delta_m instead of the
# mean relative loss reduction.
TABA_VARIANTS = {
    "rounds3_delta_m": {"rounds": 3, "curve_fit": "metric", "objective": "delta_m"},
    "delta_m": {"curve_fit": "metric", "objective": "delta_m"},
    # the first half of the money after the pilot by equal_budget, the curves refitted there, the rest by the greedy
    "explore": {"rounds": 2, "explore": "equal_budget"},
    "explore_delta_m": {"rounds": 2, "explore": "equal_budget", "curve_fit": "metric", "objective": "delta_m"},
    # METHOD.md's unbounded information through other tasks' labels (the default caps it at one
    # own label's worth per own label: docs/method.md)
    "uncapped": {"transfer_cap": None},
    # tasks whose pilot curve is flat (slope at the lower clip) get at least equal_budget's labels first
    "floor": {"flat_slope_floor": True},
    # both: flat tasks floored after the pilot, then an equal_budget round, the curves refitted, the greedy
    "explore_floor": {"rounds": 2, "explore": "equal_budget", "flat_slope_floor": True},
    # and the refit fits each curve with an irreducible floor, weighting tasks by what labels can still remove
    "explore_floor_refit_floor": {"rounds": 2, "explore": "equal_budget", "flat_slope_floor": True,
                                  "refit_floor": True},
    # the refit's floored curves fitted to each task's metric error (what Delta_m is made of), weighted
    # by their reducible share as above
    "explore_floor_refit_floor_metric": {"rounds": 2, "explore": "equal_budget", "flat_slope_floor": True,
                                         "refit_floor": True, "curve_fit": "metric"},
    # and the refit fits each task's metric error (what Delta_m is made of) with that floor, weighting
    # tasks by the Delta_m points their labels can still win (the floored curve's reference at the pool)
    "explore_floor_refit_floor_delta_m": {"rounds": 2, "explore": "equal_budget", "flat_slope_floor": True,
                                          "refit_floor": True, "curve_fit": "metric", "objective": "delta_m"},
    # the same Delta_m weights with the curves fitted to losses (smoother than the metrics over three
    # points), each task's loss mapped to its metric error by a line fitted on the same points
    "explore_floor_refit_floor_loss_delta_m": {"rounds": 2, "explore": "equal_budget", "flat_slope_floor": True,
                                               "refit_floor": True, "objective": "delta_m"},
    # explore_floor_refit_floor with less information through other tasks' labels: none at all, and
    # at most half an own label's worth per own label (the default cap is one)
    "explore_floor_refit_floor_no_transfer": {"rounds": 2, "explore": "equal_budget", "flat_slope_floor": True,
                                              "refit_floor": True, "transfer_cap": 0.0},
    # and each task's floored curve scaled to the Delta_m its metric measured along the refit's points
    # (objective "delta_m_local": a line through all of them, or through the last doubling only)
    "explore_floor_refit_floor_no_transfer_delta_m_local": {"rounds": 2, "explore": "equal_budget",
                                                            "flat_slope_floor": True, "refit_floor": True,
                                                            "transfer_cap": 0.0, "objective": "delta_m_local"},
    "explore_floor_refit_floor_no_transfer_delta_m_last_doubling": {
        "rounds": 2, "explore": "equal_budget", "flat_slope_floor": True, "refit_floor": True,
        "transfer_cap": 0.0, "objective": "delta_m_local", "local_points": 2},
    # half the last doubling's calibrated weight, half no_transfer's reducible share: a task whose
    # metric has not moved over the last doubling keeps half its share instead of nothing
    "explore_floor_refit_floor_no_transfer_delta_m_half_local": {
        "rounds": 2, "explore": "equal_budget", "flat_slope_floor": True, "refit_floor": True,
        "transfer_cap": 0.0, "objective": "delta_m_local", "local_points": 2, "local_mix": 0.5},
    # the half mix with transfer measured at the refit instead of none: one more model per task with
    # that task's labels halved, S from the label elasticities of every task's error (README
    # "Transfer probed at the refit")
    "explore_floor_refit_floor_probed_transfer_delta_m_half_local": {
        "rounds": 2, "explore": "equal_budget", "flat_slope_floor": True, "refit_floor": True,
        "transfer_probe": 0.5, "objective": "delta_m_local", "local_points": 2, "local_mix": 0.5},
    # the same with the probe that repeats (README "How much one transfer probe repeats"): each task's labels
    # cut to a quarter, S the mean of four probes with their own training seeds (15-19 trainings a refit)
    "explore_floor_refit_floor_probed_quarter_x4_delta_m_half_local": {
        "rounds": 2, "explore": "equal_budget", "flat_slope_floor": True, "refit_floor": True,
        "transfer_probe": 0.25, "transfer_probe_repeats": 4, "objective": "delta_m_local", "local_points": 2,
        "local_mix": 0.5},
    "explore_floor_refit_floor_cap_half": {"rounds": 2, "explore": "equal_budget", "flat_slope_floor": True,
                                           "refit_floor": True, "transfer_cap": 0.5},
}
# The default recipe (TrainConfig(): 750 steps of 12 images per task, widths 16, 32, 64) learns every
# task at 16 x 16 (docs/recipes/); `quick` trains 400 of those steps so that a setting's whole sweep
# fits in about half an hour on a 2-core CPU, `full` runs the recipe as it is, with the oracle's grid
# at the smallest budget: its interior at step 1/6 (every task at least a sixth of the money; points
# giving a task nothing were 20 or more points worse in the quick sweeps) on seeds 0-2, its best point
# then checked on seeds 3-4.
PRESETS = {
    "quick": dict(seeds=(0, 1, 2), num_images=1500, image_size=16,
                  train=cfg.TrainConfig(num_steps=400, checkpoint_every=400, log_every=100)),
    "full": dict(seeds=(0, 1, 2, 3, 4), num_images=1500, image_size=16, oracle_resolution=6, oracle_interior=True,
                 oracle_seeds=(0, 1, 2), oracle_holdout=True, train=cfg.TrainConfig(checkpoint_every=750, log_every=250)),
}
# Real data at 64 x 64 (untuned recipes, not run here: no real data is reachable from this machine).
REAL_PRESETS = {
    "quick": dict(seeds=(0, 1, 2), train=cfg.TrainConfig(num_steps=5000, batch_size=32, warmup_steps=250,
                                                         learning_rate=2e-3, checkpoint_every=1000, log_every=100)),
    "full": dict(seeds=(0, 1, 2, 3, 4), oracle_resolution=4,
                 train=cfg.TrainConfig(num_steps=20_000, batch_size=32, warmup_steps=500, learning_rate=2e-3,
                                       checkpoint_every=1000, log_every=100)),
}


def get_config(arg: str = "geometry"):
    setting, _, preset = arg.partition(",")
    preset = preset or "quick"
    if setting not in SETTINGS and setting not in REAL_SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; choose one of {sorted(SETTINGS) + sorted(REAL_SETTINGS)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    real = setting in REAL_SETTINGS
    s = REAL_SETTINGS[setting] if real else SETTINGS[setting]
    p = REAL_PRESETS[preset] if real else PRESETS[preset]
    data = dict(s.get("data", {}))
    dataset = data.pop("dataset", "synthetic")
    oracle_budgets = s[preset][:1] if preset == "full" else ()  # the oracle at the smallest budget
    config = cfg.to_config_dict(cfg.ExperimentConfig(
        setting=setting, preset=preset, tasks=s["tasks"], costs=s["costs"], budgets=s[preset],
        oracle_budgets=oracle_budgets, taba_variants=TABA_VARIANTS, **data, **p))
    config.dataset = dataset  # set last: a TFDS dataset needs --config.manual_dir, which has no default
    return config
