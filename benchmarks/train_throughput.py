"""Training-step throughput of the default model: JAX (jitted step) against PyTorch, side by side.

    pip install -e ".[benchmark]"   # PyTorch, only for this yardstick
    python benchmarks/train_throughput.py [--sizes=32,64] [--steps=20]

Both sides train the same architecture (taba_jax.models.MultiTaskNet with the default widths
16,32,64: GroupNorm ResNet encoder-decoder, per-task heads) on the same synthetic batches with the
same losses (segment cross-entropy, depth L1, normal 1 - cosine, edge class-balanced BCE) and AdamW,
per-task batching (one batch of --batch_size images per task). Prints images per second (all task
batches counted) of each framework's step, median over --steps timed steps after warm-up (the two
frameworks' steps alternate, so load from elsewhere hits both alike), and the JAX/PyTorch ratio. PyTorch runs eager on the CPU with its default thread count.
"""
import time

import jax
import numpy as np
from absl import app, flags
from jax.sharding import NamedSharding, PartitionSpec as P

from taba_jax import train
from taba_jax.config import TrainConfig
from taba_jax.data import synthetic
from taba_jax.data.synthetic import task_specs as synthetic_task_specs
from taba_jax.models import build_model

_SIZES = flags.DEFINE_list("sizes", ["32", "64"], "Image sizes.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps per framework and size.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps first (compilation, allocator warm-up).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Images per task batch.")
_TASKS = ("segment", "depth", "normal", "edge")


def synthetic_batches(image_size: int, batch_size: int, count: int):
    """`count` per-task batches: images (G, B, H, W, 3) and per-task targets, from the scene generator."""
    groups = len(_TASKS)
    images, targets = synthetic.generate(groups * batch_size * count, image_size, seed=1)
    shape = (count, groups, batch_size)
    images = images.reshape(shape + images.shape[1:])
    targets = {t: targets[t].reshape(shape + targets[t].shape[1:])[:, g] for g, t in enumerate(_TASKS)}
    return images, targets


def median_seconds_interleaved(steps: dict, count: int) -> dict:
    """Median seconds per call of each `steps[name](i)` (each call blocks until done), calling the
    frameworks in turn so that a change of load on the machine hits both alike."""
    seconds = {name: [] for name in steps}
    for i in range(count):
        for name, step in steps.items():
            start = time.perf_counter()
            step(i)
            seconds[name].append(time.perf_counter() - start)
    return {name: float(np.median(s)) for name, s in seconds.items()}


def jax_step(images, targets):
    """The library's own jitted `train.train_step` (device-resident data, per-task batching)."""
    config = TrainConfig()
    tasks = synthetic_task_specs(_TASKS)
    count, groups, batch = images.shape[:3]
    flat_images = images.reshape((-1,) + images.shape[3:])
    # Task g's batch of step i lives at rows (i * groups + g) * batch + arange(batch) of the flat pool.
    flat_targets = {t: np.repeat(v[:, None], groups, axis=1).reshape((-1,) + v.shape[2:]) for t, v in targets.items()}
    definition = train.StepDefinition(build_model(tasks, config), tuple(tasks), (1.0,) * len(tasks), "per_task")
    # Laid out as the Trainer lays them out: state and data replicated, each task's batch split over
    # the mesh's `data` axis (every device of the process; one unless XLA_FLAGS makes more).
    mesh = train.data_mesh()
    replicated, index_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P(None, "data"))
    state = jax.jit(lambda key: train.init_state(definition, key, images.shape[3:], config),
                    out_shardings=replicated)(jax.random.key(0))
    data = jax.device_put({"images": flat_images, "targets": flat_targets,
                           "labeled": np.ones((len(flat_images), len(tasks)), bool)}, replicated)
    indices = [jax.device_put(np.asarray((i * groups + np.arange(groups)[:, None]) * batch + np.arange(batch),
                                         np.int32), index_sharding)
               for i in range(count)]
    holder = {"state": state}

    def run(i):
        holder["state"], metrics = train.train_step(definition, holder["state"], data, indices[i % count])
        metrics["loss"].block_until_ready()

    return run


def torch_step(images, targets):
    import torch
    from torch import nn
    from torch.nn import functional as F

    class ResidualBlock(nn.Module):
        def __init__(self, inputs, features, stride=1):
            super().__init__()
            self.conv1 = nn.Conv2d(inputs, features, 3, stride, 1, bias=False)
            self.norm1 = nn.GroupNorm(min(8, features), features)
            self.conv2 = nn.Conv2d(features, features, 3, 1, 1, bias=False)
            self.norm2 = nn.GroupNorm(min(8, features), features)
            self.project = (nn.Conv2d(inputs, features, 1, stride, bias=False)
                            if inputs != features or stride != 1 else nn.Identity())

        def forward(self, x):
            y = F.relu(self.norm1(self.conv1(x)))
            return F.relu(self.norm2(self.conv2(y)) + self.project(x))

    class MultiTaskNet(nn.Module):
        def __init__(self, widths=(16, 32, 64), outputs=None):
            super().__init__()
            self.stem = nn.Conv2d(3, widths[0], 3, 1, 1)
            self.encoder = nn.ModuleList(
                ResidualBlock(widths[max(i - 1, 0)], w, 2 if i else 1) for i, w in enumerate(widths))
            self.decoder = nn.ModuleList(
                ResidualBlock(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(len(widths) - 1)))
            # Dense heads see the decoder output and the input pixels (3 more channels), as in JAX.
            self.heads = nn.ModuleDict({name: nn.Sequential(nn.Conv2d(widths[0] + 3, widths[0], 3, 1, 1), nn.ReLU(),
                                                            nn.Conv2d(widths[0], n, 1))
                                        for name, n in outputs.items()})

        def forward(self, images, groups):
            """Each head predicts for its task's group of the batch only (per-task batching)."""
            x = F.relu(self.stem(images))
            skips = []
            for block in self.encoder:
                x = block(x)
                skips.append(x)
            for block, skip in zip(self.decoder, reversed(skips[:-1])):
                x = block(torch.cat([F.interpolate(x, size=skip.shape[2:], mode="nearest"), skip], 1))
            x = torch.cat([x, images], 1)
            x = x.reshape((groups, -1) + x.shape[1:])
            return {name: head(x[g]) for g, (name, head) in enumerate(self.heads.items())}

    def balanced_bce(logits, target):
        weight_pos = ((1 - target.mean()) / target.mean().clamp_min(1e-6)).clamp(1.0, 50.0)
        weights = torch.where(target > 0.5, weight_pos, torch.ones_like(target))
        losses = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return (losses * weights).mean() / weights.mean().detach()

    torch.manual_seed(0)
    specs = {t.name: t.outputs for t in synthetic_task_specs(_TASKS)}
    model = MultiTaskNet(outputs=specs)
    config = TrainConfig()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    groups, batch = len(_TASKS), images.shape[2]
    to_nchw = lambda a: torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, -1, -3)))  # noqa: E731
    batches = [(to_nchw(images[i]).reshape((groups * batch,) + (3,) + images.shape[3:5]),
                {"segment": torch.from_numpy(targets["segment"][i].astype(np.int64)),
                 "depth": to_nchw(targets["depth"][i]), "normal": to_nchw(targets["normal"][i]),
                 "edge": to_nchw(targets["edge"][i].astype(np.float32))})
               for i in range(len(images))]

    def run(i):
        x, y = batches[i % len(batches)]
        out = model(x, groups)
        normal = F.normalize(out["normal"], dim=1, eps=1e-6)
        loss = (F.cross_entropy(out["segment"], y["segment"]) + (out["depth"] - y["depth"]).abs().mean()
                + (1 - (normal * y["normal"]).sum(1)).mean() + balanced_bce(out["edge"], y["edge"]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return run


def main(argv):
    del argv
    import torch
    print(f"devices: {jax.devices()}; torch {torch.__version__} threads {torch.get_num_threads()}")
    print(f"default model (widths {TrainConfig().widths}), tasks {','.join(_TASKS)}, "
          f"batch {_BATCH.value} per task ({len(_TASKS) * _BATCH.value} images per step)")
    print(f"{'size':>6} {'JAX img/s':>10} {'PyTorch img/s':>14} {'JAX/PyTorch':>12}")
    for size in map(int, _SIZES.value):
        images, targets = synthetic_batches(size, _BATCH.value, 4)
        per_step = len(_TASKS) * _BATCH.value
        steps = {"jax": jax_step(images, targets), "torch": torch_step(images, targets)}
        median_seconds_interleaved(steps, _WARMUP.value)
        seconds = median_seconds_interleaved(steps, _STEPS.value)
        jax_rate, torch_rate = per_step / seconds["jax"], per_step / seconds["torch"]
        print(f"{size:>6} {jax_rate:>10.1f} {torch_rate:>14.1f} {jax_rate / torch_rate:>12.2f}", flush=True)


if __name__ == "__main__":
    app.run(main)
