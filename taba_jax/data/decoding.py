"""Pure NumPy decoders from stored label encodings to training targets and validity masks.

Each function takes the stored (canonical) array of one domain and returns `(target, mask)` or just
the target; masks are boolean, per pixel `(H, W)` for dense targets. Targets at invalid positions are
set to 0 so that they are always safe to index or to feed to a loss that multiplies by the mask.
Builders store labels in these canonical encodings; `reader.SplitReader` decodes them with these
functions at read time (vectors derived from JSON are decoded at build time).
"""
from __future__ import annotations

import itertools
import math

import numpy as np

UINT16_MAX = 65535
DEPTH_UNITS_PER_METER = 512.0  # Taskonomy/Omnidata depth PNGs: 1/512 m per unit
DEPTH_INVALID = UINT16_MAX  # ... and 65535 where the ray hit no geometry
NORMAL_MIN_NORM = 0.5  # decoded normals shorter than this (e.g. gray 127/128 fill) are invalid
CURVATURE_ZERO = 127.0  # Taskonomy principal curvature: pixel value 127 encodes zero curvature
TASKONOMY_SEMANTIC_UNCERTAIN = 0  # raw id 0 = "uncertain", 1 = background, 2..17 = 16 COCO classes
TASKONOMY_SEMANTIC_CLASSES = 17  # background + 16 objects after removing the uncertain id
VOC_IGNORE = 255  # VOC/PASCAL palette PNGs: 255 = object boundary / void
NYU_IGNORE = -1  # NYUv2 (MTAN preprocessing) 13-class labels: -1 = unlabeled


def image_to_float(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 in [0, 1]; float input (already in [0, 1]) is passed through."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return image.astype(np.float32)


def depth_from_uint16(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Taskonomy depth_zbuffer / depth_euclidean: uint16 (H, W[, 1]) in 1/512 m, 65535 = no depth.
    Returns meters (H, W, 1) float32 and the valid mask (H, W)."""
    raw = _squeeze_channel(raw)
    mask = raw != DEPTH_INVALID
    meters = np.where(mask, raw.astype(np.float32) / DEPTH_UNITS_PER_METER, 0.0).astype(np.float32)
    return meters[..., None], mask


def normals_from_rgb(rgb: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Surface normals stored as RGB uint8 (H, W, 3), v = rgb / 255 * 2 - 1. Invalid where the
    decoded vector is shorter than NORMAL_MIN_NORM (gray fill of missing geometry) or where `valid`
    (H, W), e.g. the depth mask, is False. Returns unit vectors (H, W, 3) float32 and the mask."""
    v = rgb[..., :3].astype(np.float32) / 255.0 * 2.0 - 1.0
    norm = np.linalg.norm(v, axis=-1)
    mask = norm >= NORMAL_MIN_NORM
    if valid is not None:
        mask &= valid
    unit = np.where(mask[..., None], v / np.maximum(norm, 1e-6)[..., None], 0.0)
    return unit.astype(np.float32), mask


def unit_normals(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float normals (H, W, 3) where the all-zero vector marks missing ones (NYUv2 / MTAN):
    returns them rescaled to unit length and the mask of non-zero vectors."""
    norm = np.linalg.norm(v, axis=-1)
    mask = norm > 1e-6
    unit = np.where(mask[..., None], v / np.maximum(norm, 1e-6)[..., None], 0.0)
    return unit.astype(np.float32), mask


def uint16_fraction(raw: np.ndarray) -> np.ndarray:
    """Dense uint16 regression targets (edges, keypoint heatmaps) as a fraction of full scale:
    (H, W[, 1]) -> (H, W, 1) float32 in [0, 1]."""
    return (_squeeze_channel(raw).astype(np.float32) / UINT16_MAX)[..., None]


def uint8_fraction(raw: np.ndarray) -> np.ndarray:
    """Dense uint8 regression targets (reshading): first channel / 255 -> (H, W, 1) in [0, 1]."""
    raw = raw[..., :1] if raw.ndim == 3 else raw[..., None]
    return raw.astype(np.float32) / 255.0


def principal_curvature(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Taskonomy principal curvature: the first two channels hold the two principal curvatures
    with 127 = zero; decoded as (value - 127) / 127 (unitless, about [-1, 1]). Pixels where both
    channels are 0 carry no geometry and are invalid. Returns (H, W, 2) float32 and the mask."""
    k = rgb[..., :2].astype(np.float32)
    mask = (rgb[..., 0] != 0) | (rgb[..., 1] != 0)
    target = np.where(mask[..., None], (k - CURVATURE_ZERO) / CURVATURE_ZERO, 0.0)
    return target.astype(np.float32), mask


def taskonomy_semantic(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Taskonomy segment_semantic ids: 0 = uncertain (invalid), 1 = background, 2..17 = objects.
    Returns classes raw - 1 in [0, 17) as int32 (H, W) and the mask."""
    raw = _squeeze_channel(raw).astype(np.int32)
    mask = raw != TASKONOMY_SEMANTIC_UNCERTAIN
    return np.where(mask, raw - 1, 0).astype(np.int32), mask


def labels_with_ignore(raw: np.ndarray, ignore: int) -> tuple[np.ndarray, np.ndarray]:
    """Class-id maps with one ignore value (VOC 255, NYUv2 -1): int32 (H, W) and the mask."""
    raw = _squeeze_channel(raw).astype(np.int32)
    mask = raw != ignore
    return np.where(mask, raw, 0).astype(np.int32), mask


def relabel_segments(ids: np.ndarray) -> np.ndarray:
    """Unsupervised segment ids (any integer encoding, RGB triples combined into one 24-bit id)
    relabeled to 0..K-1 in increasing order of the raw id; only equality of ids is meaningful."""
    if ids.ndim == 3:
        ids = ids.astype(np.int64)
        ids = (ids[..., 0] << 16) | (ids[..., 1] << 8) | ids[..., 2] if ids.shape[-1] == 3 else ids[..., 0]
    _, inverse = np.unique(ids, return_inverse=True)
    return inverse.reshape(ids.shape).astype(np.int32)


def class_distribution(values: np.ndarray) -> np.ndarray:
    """Soft class labels (Taskonomy class_object: ImageNet-1000 logits; class_scene: Places365
    probabilities) as a probability vector (K,) float32: used as is when it already is a
    distribution (non-negative, sums to 1 within 1e-3), else softmax of the values as logits."""
    v = np.asarray(values, np.float64).reshape(-1)
    if (v >= 0).all() and abs(v.sum() - 1.0) <= 1e-3:
        return (v / v.sum()).astype(np.float32)
    e = np.exp(v - v.max())
    return (e / e.sum()).astype(np.float32)


def binary_threshold(raw: np.ndarray) -> np.ndarray:
    """uint8 maps in [0, 255] (PASCAL-MT distilled saliency) -> (H, W, 1) float32 0/1, 1 where
    value / 255 > 0.5."""
    return (_squeeze_channel(raw).astype(np.float32) / 255.0 > 0.5).astype(np.float32)[..., None]


def label_boundaries(labels: np.ndarray) -> np.ndarray:
    """1-pixel-wide boundaries of a label map (H, W): 1 where a pixel differs from its right or
    lower neighbour. Returns uint8 (H, W) 0/1 (PASCAL-Context edges)."""
    edges = np.zeros(labels.shape, np.uint8)
    edges[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edges[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edges


def vanishing_point(point_info: dict) -> np.ndarray | None:
    """Taskonomy vanishing points: the x, y, z vanishing directions on the Gaussian sphere
    concatenated (9,), or None when the view's point_info has none."""
    vps = point_info.get("vanishing_points_gaussian_sphere")
    if vps is None:
        return None
    return np.concatenate([np.asarray(vps[axis], np.float32).reshape(3) for axis in "xyz"])


def euler_to_matrix(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation matrix of static-frame x-y-z Euler angles ('sxyz'): Rz(az) @ Ry(ay) @ Rx(ax)."""
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def matrix_to_euler(r: np.ndarray) -> np.ndarray:
    """Inverse of `euler_to_matrix`: static-frame x-y-z Euler angles (3,) of a rotation matrix."""
    cy = math.hypot(r[0, 0], r[1, 0])
    if cy > 1e-9:
        return np.array([math.atan2(r[2, 1], r[2, 2]), math.atan2(-r[2, 0], cy), math.atan2(r[1, 0], r[0, 0])])
    return np.array([math.atan2(-r[1, 2], r[1, 1]), math.atan2(-r[2, 0], cy), 0.0])


def room_layout(point_info: dict) -> np.ndarray | None:
    """Taskonomy room layout (9,): the room bounding box centre in camera coordinates (m), the
    camera's Euler angles (rad) and the box extents (m), in the world frame rotated about z by a
    multiple of 90 degrees so that world +x is closest to the viewing direction (Taskonomy's
    definition; not standardized). None when the view's point_info has no bounding box."""
    box = point_info.get("bounding_box_ranges")
    if box is None:
        return None
    camera = np.eye(4)
    camera[:3, :3] = euler_to_matrix(*point_info["camera_rotation_final"])
    camera[:3, 3] = point_info["camera_location"]
    camera[[0, 1]] = camera[[1, 0]] * np.array([[1.0], [-1.0]])  # Taskonomy's x/y flip of the camera
    ranges = np.array([box["x"], -np.asarray(box["y"], np.float64)[::-1], box["z"]], np.float64)
    forward = np.array([0.0, 0.0, -1.0])
    best_angle, best = math.inf, np.eye(3)
    for k in range(4):
        c, s = math.cos(k * math.pi / 2), math.sin(k * math.pi / 2)
        world_x = np.array([c, s, 0.0])
        angle = math.acos(float(np.clip(camera[:3, :3].T @ world_x @ forward, -1.0, 1.0)))
        if angle < best_angle - 1e-12:
            best_angle, best = angle, np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]).T
    ranges = np.sort(best @ ranges, axis=1)
    world = np.eye(4)
    world[:3, :3] = best
    camera = world @ camera
    corners = np.array(list(itertools.product(*ranges)))
    corners_cam = (np.concatenate([corners, np.ones((8, 1))], 1) @ np.linalg.inv(camera).T)[:, :3]
    return np.concatenate([corners_cam.mean(0), matrix_to_euler(camera[:3, :3]),
                           ranges[:, 1] - ranges[:, 0]]).astype(np.float32)


def _squeeze_channel(raw: np.ndarray) -> np.ndarray:
    return raw[..., 0] if raw.ndim == 3 else raw
