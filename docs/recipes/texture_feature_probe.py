# python docs/recipes/texture_feature_probe.py --budget=1000 --seed=10 --workdir=/tmp/texture_probe_1000_10
"""Does a trained `weak` network's encoder carry texture? Trains (or resumes, from --workdir) the
default recipe on equal_budget's allocation of `weak` at --budget and --seed (the same run as the
`full` sweep's), then fits a ridge regression on the pooled features its image-level head sees,
with the run's own texture labels and with all train labels, and on each encoder stage's features
of the initial network. About 40 s on a 2-core CPU.

If the readout with every train label stays near the mean predictor, the encoder never grew
features from which texture can be read, whatever the head does with them.
"""
import os

import flax.linen as nn
import numpy as np
from absl import app, flags, logging

from taba_jax.budget import BudgetProblem, allocate
from taba_jax.config import TrainConfig
from taba_jax.data import synthetic
from taba_jax.data.dataset import split_sizes
from taba_jax.models.hard_sharing import ImageHead, ResidualBlock
from taba_jax.train import Trainer, evaluate
from texture_linear_probe import ridge_error  # same directory

TASKS, COSTS = ("segment", "depth", "texture"), (10.0, 3.0, 3.0)  # configs/experiment.py's `weak`
NUM_IMAGES = 1500
RIDGE = 10.0  # on standardised features
flags.DEFINE_float("budget", 1000.0, "weak's budget")
flags.DEFINE_integer("seed", 10, "run seed (initialisation, data order, allocation)")
flags.DEFINE_string("workdir", None, "where the run's checkpoints go (resumed if there)", required=True)
FLAGS = flags.FLAGS


def module_values(model, params, images, wanted):
    """What `wanted(module)` says to record of each module call: 'input' or 'output'."""
    seen = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        what = wanted(context.module) if context.method_name == "__call__" else None
        if what:
            seen.append(np.asarray(args[0] if what == "input" else out))
        return out

    with nn.intercept_methods(record):
        model.apply(params, images)
    return seen


def main(_):
    logging.set_verbosity(logging.WARNING)  # not orbax's checkpoint chatter
    dataset = synthetic.synthetic_dataset(NUM_IMAGES, 16, 0, tasks=TASKS, cache_dir=os.path.join(FLAGS.workdir, "data"))
    problem = BudgetProblem(TASKS, COSTS, split_sizes(NUM_IMAGES)["train"], FLAGS.budget)
    labeled = allocate(problem, "equal_budget", seed=FLAGS.seed).labeled_sets()
    trainer = Trainer(dataset, labeled, TrainConfig(checkpoint_every=750, log_every=250), FLAGS.workdir, FLAGS.seed)
    params = trainer.train(progress=False).params
    test = dataset.splits["test"]
    head_error = evaluate(trainer.model, params, trainer.all_tasks, test)["texture"]["primary"]
    train_y, test_y = dataset.train.targets["texture"][:, 0], test.targets["texture"][:, 0]
    own = labeled["texture"]
    print(f"weak, budget {FLAGS.budget:g}, seed {FLAGS.seed}: texture head's test error {head_error:.3f} "
          f"({len(own)} texture labels; mean predictor {np.abs(train_y[own].mean() - test_y).mean():.3f})")

    def pooled(images):
        return module_values(trainer.model, params, images, lambda m: "input" if isinstance(m, ImageHead) else None)[0]

    train_x, test_x = pooled(dataset.train.images), pooled(test.images)
    print(f"trained, pooled features of the image head ({train_x.shape[1]}): ridge with own labels "
          f"{ridge_error(train_x[own], train_y[own], test_x, test_y, RIDGE):.3f}, "
          f"with all {len(train_y)} {ridge_error(train_x, train_y, test_x, test_y, RIDGE):.3f}")
    initial = trainer.init_state().params

    def stages(images):
        return module_values(trainer.model, initial, images,
                             lambda m: "output" if isinstance(m, ResidualBlock) else None)[:len(trainer.config.widths)]

    poolings = {"mean": lambda s: s.mean((1, 2)), "std": lambda s: s.std((1, 2)),
                "mean |neighbour difference|": lambda s: (np.abs(np.diff(s, axis=1)).mean((1, 2))
                                                          + np.abs(np.diff(s, axis=2)).mean((1, 2)))}
    for stage, (train_s, test_s) in enumerate(zip(stages(dataset.train.images), stages(test.images))):
        for name, pool in poolings.items():
            x, tx = pool(train_s), pool(test_s)
            print(f"initial encoder stage {stage} ({x.shape[1]}), {name}: ridge with own labels "
                  f"{ridge_error(x[own], train_y[own], tx, test_y, RIDGE):.3f}, with all {ridge_error(x, train_y, tx, test_y, RIDGE):.3f}")


if __name__ == "__main__":
    app.run(main)
