"""Input pipeline at Taskonomy scale: a generated 256x256 Taskonomy tree, built, then streamed.

    python benchmarks/input_pipeline.py [--views=20000] [--root=/tmp/taskonomy_bench] [--steps=40]

1. Writes --views views (rgb, depth_zbuffer, normal, segment_semantic, edge_texture) at 256x256 in
   the Omnidata release layout `<root>/raw/<domain>/taskonomy/<building>/point_<p>_view_<v>_domain_<domain>.png`
   with the release's split file (all buildings but two train; one validation, one test), unless
   already there.
2. Builds it with the library's Taskonomy builder (`taba_jax.data.tfds_datasets.build`, ArrayRecord).
3. Pipeline alone: images/second the grain pipeline delivers to the training loop (the trainer's own
   per-task batches of --batch_size images per task, decoded and resized to --image_size in
   --workers worker processes), with no training.
4. Training with it: the default model (TrainConfig's widths) at --image_size, streamed; per step,
   the time spent waiting for the next batch and the time of the step itself (blocked until done).
   Prints images/second trained and the fraction of each step's time spent waiting on input.
"""
import functools
import multiprocessing
import os
import time

import jax
import numpy as np
from absl import flags
from PIL import Image

from taba_jax import cli, train
from taba_jax.config import TrainConfig
from taba_jax.data import streaming, tfds_datasets

_VIEWS = flags.DEFINE_integer("views", 20_000, "Views to generate (256x256).")
_ROOT = flags.DEFINE_string("root", "/tmp/taskonomy_bench", "Directory of the raw tree (raw/) and the build (tfds/).")
_STEPS = flags.DEFINE_integer("steps", 40, "Timed steps (pipeline alone and training), after warm-up.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps first (worker start, compilation).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 64, "Training image size.")
_BATCH = flags.DEFINE_integer("batch_size", TrainConfig().batch_size, "Images per task batch.")
_WORKERS = flags.DEFINE_integer("workers", TrainConfig().input_workers, "grain worker processes.")
_PREFETCH = flags.DEFINE_integer("prefetch", TrainConfig().prefetch_batches, "Batches each worker keeps ready.")

SIZE = 256
TASKS = ("segment_semantic", "depth_zbuffer", "normal", "edge_texture")
VIEWS_PER_BUILDING = 500


def view_files(seed: int) -> dict[str, np.ndarray]:
    """One view's rgb and labels: a tilted floor plane and three boxes of random classes."""
    generator = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    depth = 2.0 + 3.0 * ys + generator.uniform(-0.5, 0.5) * xs
    classes = np.ones((SIZE, SIZE), np.uint8)  # 1 = background (0 = uncertain)
    normal = np.zeros((SIZE, SIZE, 3), np.uint8) + np.array([128, 200, 200], np.uint8)
    for _ in range(3):
        top, left = generator.integers(0, SIZE - 64, 2)
        height, width = generator.integers(32, 96, 2)
        box = (slice(top, top + height), slice(left, left + width))
        classes[box] = generator.integers(2, 18)
        depth[box] = generator.uniform(1.0, 2.0)
        normal[box] = generator.integers(0, 256, 3)
    depth_raw = np.round(depth * 512).astype(np.uint16)
    depth_raw[:4, :4] = 65535  # a few invalid pixels
    edges = np.zeros((SIZE, SIZE), np.uint16)
    edges[1:] |= (classes[1:] != classes[:-1]) * np.uint16(60000)
    edges[:, 1:] |= (classes[:, 1:] != classes[:, :-1]) * np.uint16(60000)
    shade = (0.5 + 0.5 * np.sin(8 * xs))[..., None]
    palette = np.random.default_rng(0).integers(0, 256, (18, 3))
    rgb = (palette[classes] * shade).astype(np.uint8)
    return {"rgb": rgb, "depth_zbuffer": depth_raw, "normal": normal, "segment_semantic": classes,
            "edge_texture": edges}


def view_path(raw: str, domain: str, building: str, point: int, view: int) -> str:
    """A view's file in the Omnidata release layout."""
    return os.path.join(raw, domain, "taskonomy", building, f"point_{point}_view_{view}_domain_{domain}.png")


def write_view(raw: str, number: int) -> None:
    building, point = f"building{number // VIEWS_PER_BUILDING:03d}", number % VIEWS_PER_BUILDING
    for domain, array in view_files(number).items():
        path = view_path(raw, domain, building, point, 0)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(array).save(path + ".tmp.png")
        os.replace(path + ".tmp.png", path)


def write_tree(raw: str, views: int) -> None:
    """The tree of `views` views with its split file (written last: a complete tree has it)."""
    split_file = os.path.join(raw, "train_val_test_tiny.csv")
    if os.path.exists(split_file):
        return
    buildings = -(-views // VIEWS_PER_BUILDING)
    if buildings < 3:
        raise ValueError(f"--views={views} gives {buildings} buildings of {VIEWS_PER_BUILDING}; at least 3 are needed")
    with multiprocessing.Pool(os.cpu_count()) as pool:
        pool.map(functools.partial(write_view, raw), range(views), chunksize=64)
    rows = ["id,train,val,test"] + [f"building{b:03d},{int(b < buildings - 2)},{int(b == buildings - 2)},"
                                    f"{int(b == buildings - 1)}" for b in range(buildings)]
    with open(split_file + ".tmp", "w") as f:
        f.write("\n".join(rows) + "\n")
    os.replace(split_file + ".tmp", split_file)


def main(argv):
    del argv
    raw, data_dir = os.path.join(_ROOT.value, "raw"), os.path.join(_ROOT.value, "tfds")
    started = time.perf_counter()
    write_tree(raw, _VIEWS.value)
    written = time.perf_counter()
    built = tfds_datasets.build("taskonomy", raw, data_dir, subset="tiny", domains=list(TASKS))
    print(f"tree: {_VIEWS.value} views at {SIZE}x{SIZE} ({written - started:.0f} s to write if new); "
          f"built in {time.perf_counter() - written:.0f} s: {built.splits}", flush=True)
    dataset = tfds_datasets.open_splits(built, TASKS, _IMAGE_SIZE.value)
    config = TrainConfig(batch_size=_BATCH.value, input_workers=_WORKERS.value, prefetch_batches=_PREFETCH.value)
    everything = {t: np.arange(len(dataset.train)) for t in TASKS}
    trainer = train.Trainer(dataset, everything, config, os.path.join(_ROOT.value, "run"))
    images_per_step = len(TASKS) * _BATCH.value
    total = _WARMUP.value + _STEPS.value

    batches = streaming.step_batches(trainer.batch_reader(), 0, total, _WORKERS.value, _PREFETCH.value)
    for _ in range(_WARMUP.value):
        next(batches)
    start = time.perf_counter()
    for _ in range(_STEPS.value):
        next(batches)
    pipeline_rate = _STEPS.value * images_per_step / (time.perf_counter() - start)
    del batches
    print(f"pipeline alone: {pipeline_rate:.1f} images/s ({_WORKERS.value} workers, {len(TASKS)} tasks x "
          f"{_BATCH.value} images per step, {SIZE}->{_IMAGE_SIZE.value} px)", flush=True)

    state = trainer.init_state()
    waits, steps = [], []
    batches = trainer.streamed_batches(0, total)
    for number in range(total):
        before = time.perf_counter()
        batch = next(batches)
        fetched = time.perf_counter()
        state, metrics = train.train_step_on_batch(trainer.definition, state, batch)
        jax.block_until_ready(metrics)
        if number >= _WARMUP.value:
            waits.append(fetched - before)
            steps.append(time.perf_counter() - fetched)
    wait, step = float(np.sum(waits)), float(np.sum(steps))
    print(f"training at {_IMAGE_SIZE.value}x{_IMAGE_SIZE.value}, widths {config.widths}: "
          f"{_STEPS.value * images_per_step / (wait + step):.1f} images/s; step {1000 * step / _STEPS.value:.0f} ms, "
          f"waiting on input {1000 * wait / _STEPS.value:.0f} ms per step = {100 * wait / (wait + step):.1f} % "
          f"of the time (utilisation {100 * step / (wait + step):.1f} %)", flush=True)


if __name__ == "__main__":
    cli.run(main)  # absl app, orbax's per-checkpoint INFO lines off unless --verbosity
