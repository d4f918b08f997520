"""Synthetic multi-task scenes: small ray-cast 3-D scenes whose tasks share structure.

Each image shows a tilted, striped background plane and 1-4 objects (sphere, box, vertical
cylinder, ellipsoid), shaded from their surface normals, with colour and pixel noise. Every target
is computed from the scene geometry:

- `segment`: per-pixel class (0 background, 1 sphere, 2 box, 3 cylinder, 4 ellipsoid);
- `depth`: per-pixel distance along the viewing axis;
- `normal`: per-pixel unit surface normal (camera coordinates);
- `edge`: occlusion boundaries (pixels whose visible surface differs from a neighbour's);
- `classify`: image-level presence of each object class (multi-label);
- `texture`: the background stripes' spatial frequency scaled to [0, 1] — visible in the image but
  unrelated to the geometry, a weakly related task.

Pure NumPy, vectorised over a batch of scenes, deterministic from a seed.
"""
from __future__ import annotations

import os

import numpy as np

from taba_jax import io_utils, rng
from taba_jax.data.dataset import MultiTaskDataset
from taba_jax.tasks import TaskSpec

CLASS_NAMES = ("sphere", "box", "cylinder", "ellipsoid")
NUM_CLASSES = len(CLASS_NAMES)
TASK_NAMES = ("segment", "depth", "normal", "edge", "classify", "texture")
MAX_OBJECTS = 4
FOCAL = 1.2  # camera looks along +z from the origin; image plane spans [-1, 1] at this distance
_FREQUENCY_RANGE = (2.0, 10.0)
_CHUNK = 512
GENERATOR_VERSION = 1  # part of the cache file name: bump when the scenes change


def generate(num_images: int, image_size: int = 32, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Returns images (N, H, W, 3) float32 in [0, 1] and a dict of every task's targets."""
    if num_images <= 0:
        raise ValueError(f"num_images must be positive, got {num_images}")
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8, got {image_size}")
    generator = rng.numpy_rng(seed, "scenes")
    parts = [_render(generator, min(_CHUNK, num_images - start), image_size) for start in range(0, num_images, _CHUNK)]
    images = np.concatenate([p[0] for p in parts])
    targets = {name: np.concatenate([p[1][name] for p in parts]) for name in TASK_NAMES}
    return images, targets


def _render(rng, batch, size):
    # Rays through pixel centres.
    coords = (np.arange(size) + 0.5) / size * 2 - 1
    x, y = np.meshgrid(coords, -coords)
    rays = np.stack([x, y, np.full_like(x, FOCAL)], -1)
    rays = (rays / np.linalg.norm(rays, axis=-1, keepdims=True)).astype(np.float32)  # (H, W, 3)

    # Background plane n . p = d, tilted towards the camera, 6-9 units away.
    tilt = rng.uniform(-0.5, 0.5, (batch, 2))
    plane_normal = _unit(np.stack([tilt[:, 0], tilt[:, 1], -np.ones(batch)], -1))
    plane_distance = rng.uniform(6, 9, batch)
    denom = rays @ plane_normal.T  # (H, W, B)
    t_plane = (-plane_distance / np.minimum(denom, -1e-3)).transpose(2, 0, 1)  # (B, H, W)
    best_t = t_plane.astype(np.float32)
    normals = np.broadcast_to(plane_normal[:, None, None, :], (batch, size, size, 3)).astype(np.float32).copy()
    segment = np.zeros((batch, size, size), np.int32)
    instance = np.zeros((batch, size, size), np.int32)

    num_objects = rng.integers(1, MAX_OBJECTS + 1, batch)
    classes = rng.integers(1, NUM_CLASSES + 1, (batch, MAX_OBJECTS)).astype(np.int32)
    centers = np.stack([rng.uniform(-2.2, 2.2, (batch, MAX_OBJECTS)), rng.uniform(-2.0, 2.0, (batch, MAX_OBJECTS)),
                        rng.uniform(3.5, 6.0, (batch, MAX_OBJECTS))], -1).astype(np.float32)
    radii = rng.uniform(0.5, 1.1, (batch, MAX_OBJECTS, 3)).astype(np.float32)
    colours = rng.uniform(0.15, 1.0, (batch, MAX_OBJECTS, 3))
    for k in range(MAX_OBJECTS):
        present = k < num_objects
        t, n = _intersect(rays, classes[:, k], centers[:, k], radii[:, k])
        closer = present[:, None, None] & (t < best_t)
        best_t = np.where(closer, t, best_t)
        normals = np.where(closer[..., None], n, normals)
        segment = np.where(closer, classes[:, k, None, None], segment)
        instance = np.where(closer, k + 1, instance)

    depth = best_t * rays[None, :, :, 2]  # distance along the viewing axis
    points = best_t[..., None] * rays[None]
    normals = _unit(normals)

    # Albedo: objects get their colour; the plane gets stripes whose frequency is the texture task.
    frequency = rng.uniform(*_FREQUENCY_RANGE, batch)
    angle = rng.uniform(0, np.pi, batch)
    along = points[..., 0] * np.cos(angle)[:, None, None] + points[..., 1] * np.sin(angle)[:, None, None]
    stripes = 0.5 + 0.5 * np.sign(np.sin(frequency[:, None, None] * along / 3.0))
    plane_colour = rng.uniform(0.3, 0.9, (batch, 3))
    albedo = plane_colour[:, None, None, :] * (0.55 + 0.45 * stripes[..., None])
    object_colour = np.take_along_axis(colours, np.clip(instance - 1, 0, MAX_OBJECTS - 1)[..., None].reshape(
        batch, -1, 1), axis=1).reshape(batch, size, size, 3)
    albedo = np.where(instance[..., None] > 0, object_colour, albedo)

    light = _unit(np.stack([rng.uniform(-1, 1, batch), rng.uniform(0.2, 1, batch), -np.ones(batch)], -1))
    diffuse = np.clip(np.einsum("bhwc,bc->bhw", normals, light), 0, 1)
    image = albedo * (0.25 + 0.75 * diffuse[..., None])
    image = image * rng.uniform(0.9, 1.1, (batch, 1, 1, 3)) + rng.normal(0, 0.03, image.shape)
    image = np.clip(image, 0, 1).astype(np.float32)

    edge = np.zeros_like(instance, dtype=bool)
    horizontal = instance[:, :, 1:] != instance[:, :, :-1]
    vertical = instance[:, 1:, :] != instance[:, :-1, :]
    edge[:, :, 1:] |= horizontal
    edge[:, :, :-1] |= horizontal
    edge[:, 1:, :] |= vertical
    edge[:, :-1, :] |= vertical

    classify = np.zeros((batch, NUM_CLASSES), np.float32)
    for c in range(1, NUM_CLASSES + 1):
        classify[:, c - 1] = (segment == c).any(axis=(1, 2))
    texture = (frequency - _FREQUENCY_RANGE[0]) / (_FREQUENCY_RANGE[1] - _FREQUENCY_RANGE[0])
    targets = {"segment": segment, "depth": depth.astype(np.float32)[..., None],
               "normal": normals.astype(np.float32), "edge": edge.astype(np.float32)[..., None],
               "classify": classify, "texture": texture.astype(np.float32)[:, None]}
    return image, targets


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _intersect(rays, classes, centers, radii):
    """Nearest hit distance t (B, H, W) (inf for a miss) and unit normal (B, H, W, 3), per class.

    Each shape's intersection is computed only for the scenes whose object has that shape.
    """
    batch, (height, width) = len(classes), rays.shape[:2]
    t = np.full((batch, height, width), np.inf, np.float32)
    n = np.zeros((batch, height, width, 3), np.float32)
    d = rays[None]  # (1, H, W, 3)
    round_ = np.flatnonzero((classes == 1) | (classes == 4))
    if len(round_):  # sphere (radius r_x) and ellipsoid (radii r): scale space to a unit sphere
        scale = np.where((classes[round_] == 4)[:, None], radii[round_], radii[round_, :1])[:, None, None, :]
        t[round_], point = _unit_sphere_hit(d / scale, -centers[round_, None, None, :] / scale)
        n[round_] = _unit(point / scale)  # gradient of |x / r|^2 is x / r^2
    box = np.flatnonzero(classes == 2)
    if len(box):
        t[box], n[box] = _box_hit(d, centers[box, None, None, :], radii[box, None, None, :] * 0.8)
    cylinder = np.flatnonzero(classes == 3)
    if len(cylinder):
        t[cylinder], n[cylinder] = _cylinder_hit(d, centers[cylinder, None, None, :],
                                                 radii[cylinder, None, None, 0], radii[cylinder, None, None, 1])
    return t, n


def _unit_sphere_hit(d, o):
    """Ray o + t d against the unit sphere at the origin."""
    a = (d * d).sum(-1)
    b = 2 * (o * d).sum(-1)
    cc = (o * o).sum(-1) - 1
    disc = b * b - 4 * a * cc
    t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    t = np.where((disc > 0) & (t > 0), t, np.inf)
    return t, o + np.where(np.isfinite(t), t, 0)[..., None] * d + (~np.isfinite(t))[..., None]


def _box_hit(d, c, half):
    """Axis-aligned box (slab method); the normal is the axis of the entry face."""
    inv = 1.0 / np.where(np.abs(d) < 1e-9, 1e-9, d)
    t1 = (c - half) * inv
    t2 = (c + half) * inv
    t_near = np.minimum(t1, t2)
    t_enter = t_near.max(-1)
    t_exit = np.maximum(t1, t2).min(-1)
    hit = (t_enter < t_exit) & (t_enter > 0)
    axis = t_near.argmax(-1)
    normal = -np.sign(np.take_along_axis(d * np.ones_like(t_near), axis[..., None], -1)) * np.eye(3)[axis]
    return np.where(hit, t_enter, np.inf), normal


def _cylinder_hit(d, c, radius, half_height):
    """Vertical cylinder (axis y) with a flat top and bottom."""
    dx, dz = d[..., 0], d[..., 2]
    ox, oz = -c[..., 0], -c[..., 2]
    a = dx * dx + dz * dz
    b = 2 * (ox * dx + oz * dz)
    cc = ox * ox + oz * oz - radius ** 2
    disc = b * b - 4 * a * cc
    t_side = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    y_side = t_side * d[..., 1] - c[..., 1]
    side = (disc > 0) & (t_side > 0) & (np.abs(y_side) <= half_height)
    # Caps: the plane y = c_y +- h facing the camera.
    cap_y = c[..., 1] - np.sign(c[..., 1]) * half_height
    t_cap = cap_y / np.where(np.abs(d[..., 1]) < 1e-9, 1e-9, d[..., 1])
    px, pz = t_cap * dx - c[..., 0], t_cap * dz - c[..., 2]
    cap = (t_cap > 0) & (px * px + pz * pz <= radius ** 2)
    t = np.where(side, t_side, np.inf)
    t = np.where(cap & (t_cap < t), t_cap, t)
    use_cap = cap & (t == t_cap)
    finite_t = np.where(np.isfinite(t), t, 0)
    side_normal = np.stack([finite_t * dx - c[..., 0], np.zeros_like(t), finite_t * dz - c[..., 2]], -1)
    side_normal = side_normal / np.maximum(np.linalg.norm(side_normal, axis=-1, keepdims=True), 1e-9)
    cap_normal = np.stack([np.zeros_like(t), -np.sign(c[..., 1]) * np.ones_like(t), np.zeros_like(t)], -1)
    normal = np.where(use_cap[..., None], cap_normal, side_normal)
    return t, normal


def task_specs(names=None) -> list[TaskSpec]:
    """The TaskSpecs of the synthetic scenes' tasks (all, or `names` in that order)."""
    specs = {"segment": TaskSpec("segment", "segmentation", NUM_CLASSES + 1),
             "depth": TaskSpec("depth", "dense_regression", 1), "normal": TaskSpec("normal", "normals", 3),
             "edge": TaskSpec("edge", "dense_binary", 1), "classify": TaskSpec("classify", "multilabel", NUM_CLASSES),
             "texture": TaskSpec("texture", "regression", 1)}
    names = list(specs) if names is None else list(names)
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise ValueError(f"unknown synthetic tasks {unknown}; available: {list(specs)}")
    return [specs[n] for n in names]


def synthetic_dataset(num_images: int, image_size: int = 32, seed: int = 0, tasks=None,
                      cache_dir: str | None = None, **split_kwargs) -> MultiTaskDataset:
    """The synthetic scenes as a MultiTaskDataset, split with `seed` (cached as .npz in `cache_dir`)."""
    images = targets = None
    cache = None
    if cache_dir:
        cache = os.path.join(cache_dir, f"synthetic_v{GENERATOR_VERSION}_n{num_images}_s{image_size}_seed{seed}.npz")
        if os.path.exists(cache):
            with np.load(cache, allow_pickle=False) as data:
                images = data["images"]
                targets = {name: data[name] for name in TASK_NAMES}
    if images is None:
        images, targets = generate(num_images, image_size, seed)
        if cache:
            with io_utils.atomic_open(cache, "wb") as f:
                np.savez(f, images=images, **targets)
    dataset = MultiTaskDataset.from_arrays(images, targets, task_specs(), seed=seed, **split_kwargs)
    return dataset.select_tasks(tasks) if tasks is not None else dataset
