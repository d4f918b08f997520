"""Synthetic multi-task scenes: small ray-cast 3-D scenes whose tasks share structure.

Each image shows a grey, striped background plane and 1-3 objects of four clearly different shapes
(sphere, cube turned about the vertical axis, tall vertical cylinder, long horizontal ellipsoid) in
different quadrants of the view, lit by three distant coloured lamps, with exposure jitter and pixel
noise. The scenes are built so that every task can be read off a 16 x 16 image:

- depth: the plane always crosses the optical axis at the same distance, and each class has nearly
  one size (+-10 %), so apparent size gives an object's distance and the plane's tilt its depth map;
- normals: the lamps are mostly red (upper left), green (upper right) and blue (below), so the colour
  of a grey surface shows which way it faces (colour photometric stereo); the plane leans up to 40
  degrees, so its orientation (most of the normal pixels) varies a lot between images;
- segmentation, edges, presence: objects are about 6 px across at 16 x 16, with distinct silhouettes.

Every target is computed from the scene geometry (depth in units where the plane is 2 away):

- `segment`: per-pixel class (0 background, 1 sphere, 2 cube, 3 cylinder, 4 ellipsoid);
- `depth`: per-pixel distance along the viewing axis;
- `normal`: per-pixel unit surface normal (camera coordinates: x right, y up, z forward);
- `edge`: occlusion boundaries (pixels whose visible surface differs from a neighbour's);
- `classify`: image-level presence of each object class (multi-label);
- `texture`: the background stripes' spatial frequency (cycles per image width), log-scaled to
  [0, 1] — visible in the image but unrelated to the geometry, a weakly related task.

Pure NumPy, vectorised over a batch of scenes, deterministic from a seed.
"""
from __future__ import annotations

import os

import numpy as np

from taba_jax import io_utils, rng
from taba_jax.data.dataset import MultiTaskDataset
from taba_jax.tasks import TaskSpec

CLASS_NAMES = ("sphere", "cube", "cylinder", "ellipsoid")
NUM_CLASSES = len(CLASS_NAMES)
TASK_NAMES = ("segment", "depth", "normal", "edge", "classify", "texture")
MAX_OBJECTS = 3
FOCAL = 2.0  # camera looks along +z from the origin; the image spans [-1, 1] at this distance (53 deg view)
PLANE_DISTANCE = 2.0  # depth of the background plane on the optical axis (this unit keeps depths near 1,
# where a regression head starts)
MAX_TILT_DEGREES = 40.0  # the plane's normal leans up to this far from the viewing axis
OBJECT_DEPTH = (0.8, 1.2)  # depth range of the object centres
SIZE_JITTER = 0.1  # object sizes vary by +-10 % around their class's size
# Half-extents (x, y, z) per class: sphere radius; cube half-side; cylinder radius, half-height;
# ellipsoid radii. About 6 px across at 16 x 16.
SHAPE_SIZES = np.array([[0.2, 0.2, 0.2], [0.145, 0.145, 0.145], [0.13, 0.22, 0.13], [0.25, 0.12, 0.13]], np.float32)
# Three distant lamps, mostly red (upper left), green (upper right) and blue (below), shine towards
# the scene: each colour channel shows how much a surface faces one lamp, so a grey surface's colour
# gives its orientation (colour photometric stereo), wherever it is in the image.
LIGHT_DIRECTIONS = np.array([[-0.8, 0.6, -1.0], [0.8, 0.6, -1.0], [0.0, -0.9, -1.0]])  # towards each lamp
LIGHT_COLOURS = 0.75 * np.eye(3) + 0.1
AMBIENT = 0.1
PLANE_ALBEDO = (0.5, 0.8)  # grey between and on the stripes
STRIPE_FREQUENCY = (1.5, 5.0)  # stripe cycles per image width, log-uniform: 3-11 px periods at 16 x 16
_CHUNK = 512
GENERATOR_VERSION = 2  # part of the cache file name: bump when the scenes change


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

    # Background plane through (0, 0, PLANE_DISTANCE) whose normal leans away from -z.
    tilt = np.radians(rng.uniform(0, MAX_TILT_DEGREES, batch))
    azimuth = rng.uniform(0, 2 * np.pi, batch)
    plane_normal = np.stack([np.sin(tilt) * np.cos(azimuth), np.sin(tilt) * np.sin(azimuth), -np.cos(tilt)], -1)
    t_plane = (-np.cos(tilt) * PLANE_DISTANCE / (rays @ plane_normal.T)).transpose(2, 0, 1)  # (B, H, W)
    best_t = t_plane.astype(np.float32)
    normals = np.broadcast_to(plane_normal[:, None, None, :], (batch, size, size, 3)).astype(np.float32).copy()
    segment = np.zeros((batch, size, size), np.int32)
    instance = np.zeros((batch, size, size), np.int32)

    # Objects in distinct quadrants of the view, each at a random depth.
    num_objects = rng.integers(1, MAX_OBJECTS + 1, batch)
    classes = rng.integers(1, NUM_CLASSES + 1, (batch, MAX_OBJECTS)).astype(np.int32)
    quadrants = np.argsort(rng.random((batch, 4)), axis=1)[:, :MAX_OBJECTS]
    image_xy = np.stack([np.where(quadrants % 2, 0.45, -0.45), np.where(quadrants // 2, 0.45, -0.45)], -1)
    image_xy = image_xy + rng.uniform(-0.15, 0.15, (batch, MAX_OBJECTS, 2))
    z = rng.uniform(*OBJECT_DEPTH, (batch, MAX_OBJECTS))
    centers = np.concatenate([image_xy * (z / FOCAL)[..., None], z[..., None]], -1).astype(np.float32)
    sizes = SHAPE_SIZES[classes - 1] * rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER, (batch, MAX_OBJECTS, 1))
    yaw = rng.uniform(np.radians(20), np.radians(70), (batch, MAX_OBJECTS))  # turns cubes to show two sides
    colours = _hsv_to_rgb(rng.uniform(0, 1, (batch, MAX_OBJECTS)), rng.uniform(0.45, 0.9, (batch, MAX_OBJECTS)), 0.9)
    for k in range(MAX_OBJECTS):
        present = k < num_objects
        t, n = _intersect(rays, classes[:, k], centers[:, k], sizes[:, k].astype(np.float32), yaw[:, k])
        closer = present[:, None, None] & (t < best_t)
        best_t = np.where(closer, t, best_t)
        normals = np.where(closer[..., None], n, normals)
        segment = np.where(closer, classes[:, k, None, None], segment)
        instance = np.where(closer, k + 1, instance)

    depth = best_t * rays[None, :, :, 2]  # distance along the viewing axis
    normals = _unit(normals)

    # Albedo: objects get their colour; the plane is grey with lighter stripes (the texture task),
    # fixed in the image (as if projected from the camera) so that their frequency is unrelated to
    # the plane's tilt and distance.
    low, high = np.log(STRIPE_FREQUENCY)
    log_frequency = rng.uniform(low, high, batch)
    angle = rng.uniform(0, np.pi, batch)
    along = x[None] * np.cos(angle)[:, None, None] + y[None] * np.sin(angle)[:, None, None]  # image widths * 2
    phase = rng.uniform(0, 2 * np.pi, (batch, 1, 1))
    stripes = np.sin(np.pi * np.exp(log_frequency)[:, None, None] * along + phase) > 0
    plane_albedo = np.where(stripes, PLANE_ALBEDO[1], PLANE_ALBEDO[0])[..., None]
    object_colour = np.take_along_axis(colours, np.clip(instance - 1, 0, MAX_OBJECTS - 1).reshape(batch, -1, 1),
                                       axis=1).reshape(batch, size, size, 3)
    albedo = np.where(instance[..., None] > 0, object_colour, plane_albedo)

    # Lambertian shading under the three lamps.
    irradiance = np.clip(normals @ _unit(LIGHT_DIRECTIONS).T, 0, None)  # (B, H, W, lamp)
    image = albedo * (AMBIENT + irradiance @ LIGHT_COLOURS)
    image = image * rng.uniform(0.9, 1.1, (batch, 1, 1, 1)) + rng.normal(0, 0.02, image.shape)
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
    texture = (log_frequency - low) / (high - low)
    targets = {"segment": segment, "depth": depth.astype(np.float32)[..., None],
               "normal": normals.astype(np.float32), "edge": edge.astype(np.float32)[..., None],
               "classify": classify, "texture": texture.astype(np.float32)[:, None]}
    return image, targets


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _hsv_to_rgb(hue, saturation, value):
    """(...,) hue, saturation in [0, 1] and a value -> (..., 3) RGB."""
    k = (np.array([5.0, 3.0, 1.0]) + hue[..., None] * 6) % 6
    return value - value * saturation[..., None] * np.clip(np.minimum(k, 4 - k), 0, 1)


def _intersect(rays, classes, centers, sizes, yaw):
    """Nearest hit distance t (B, H, W) (inf for a miss) and unit normal (B, H, W, 3), per class.

    Each shape's intersection is computed only for the scenes whose object has that shape.
    """
    batch, (height, width) = len(classes), rays.shape[:2]
    t = np.full((batch, height, width), np.inf, np.float32)
    n = np.zeros((batch, height, width, 3), np.float32)
    d = rays[None]  # (1, H, W, 3)
    round_ = np.flatnonzero((classes == 1) | (classes == 4))
    if len(round_):  # sphere and ellipsoid: scale space to a unit sphere
        scale = sizes[round_, None, None, :]
        t[round_], point = _unit_sphere_hit(d / scale, -centers[round_, None, None, :] / scale)
        n[round_] = _unit(point / scale)  # gradient of |x / r|^2 is x / r^2
    cube = np.flatnonzero(classes == 2)
    if len(cube):
        t[cube], n[cube] = _turned_box_hit(d, centers[cube], sizes[cube], yaw[cube])
    cylinder = np.flatnonzero(classes == 3)
    if len(cylinder):
        t[cylinder], n[cylinder] = _cylinder_hit(d, centers[cylinder, None, None, :],
                                                 sizes[cylinder, None, None, 0], sizes[cylinder, None, None, 1])
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


def _turned_box_hit(d, centers, half, yaw):
    """Box of half-extents `half` (B, 3) turned by `yaw` (B,) about the vertical axis: the ray is
    rotated into the box's frame, hit by the slab method, and the entry face's normal rotated back."""
    cos, sin = np.cos(yaw), np.sin(yaw)
    zeros, ones = np.zeros_like(yaw), np.ones_like(yaw)
    rotation = np.stack([np.stack([cos, zeros, sin], -1), np.stack([zeros, ones, zeros], -1),
                         np.stack([-sin, zeros, cos], -1)], -2)  # (B, 3, 3), box frame -> camera
    local_d = np.einsum("bji,hwj->bhwi", rotation, d[0])  # rotation transpose: camera -> box frame
    local_o = np.einsum("bji,bj->bi", rotation, -centers)[:, None, None, :]
    inv = 1.0 / np.where(np.abs(local_d) < 1e-9, 1e-9, local_d)
    t1 = (-half[:, None, None, :] - local_o) * inv
    t2 = (half[:, None, None, :] - local_o) * inv
    t_near = np.minimum(t1, t2)
    t_enter = t_near.max(-1)
    t_exit = np.maximum(t1, t2).min(-1)
    hit = (t_enter < t_exit) & (t_enter > 0)
    axis = t_near.argmax(-1)
    local_normal = -np.sign(np.take_along_axis(local_d, axis[..., None], -1)) * np.eye(3)[axis]
    normal = np.einsum("bij,bhwj->bhwi", rotation, local_normal)
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
