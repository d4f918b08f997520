"""The pure NumPy label decoders, on arrays with known values."""
import math

import numpy as np
import pytest

from taba_jax.data import decoding


def test_image_to_float():
    np.testing.assert_allclose(decoding.image_to_float(np.array([[[0, 51, 255]]], np.uint8)), [[[0, 0.2, 1]]])
    assert decoding.image_to_float(np.zeros((1, 1, 3), np.float64)).dtype == np.float32


def test_depth_scale_and_invalid_value():
    meters, mask = decoding.depth_from_uint16(np.array([[0, 512, 1280, 65535]], np.uint16)[..., None])
    np.testing.assert_allclose(meters[..., 0], [[0, 1, 2.5, 0]])
    np.testing.assert_array_equal(mask, [[True, True, True, False]])
    assert meters.shape == (1, 4, 1) and meters.dtype == np.float32


def test_normals_from_rgb():
    rgb = np.array([[[255, 128, 128], [128, 128, 128], [127, 127, 127], [0, 128, 128], [128, 255, 128]]], np.uint8)
    unit, mask = decoding.normals_from_rgb(rgb)
    np.testing.assert_array_equal(mask, [[True, False, False, True, True]])
    np.testing.assert_allclose(unit[0, 0], [1, 0, 0], atol=1e-2)  # 128 decodes to 1/255, not 0
    np.testing.assert_allclose(unit[0, 3], [-1, 0, 0], atol=1e-2)
    np.testing.assert_allclose(unit[0, 1], 0)
    np.testing.assert_allclose(np.linalg.norm(unit[mask], axis=-1), 1, atol=1e-6)
    _, masked = decoding.normals_from_rgb(rgb, valid=np.array([[True, True, True, True, False]]))
    np.testing.assert_array_equal(masked, [[True, False, False, True, False]])


def test_unit_normals_zero_is_invalid():
    unit, mask = decoding.unit_normals(np.array([[[0, 0, 2.0], [0, 0, 0]]], np.float32))
    np.testing.assert_allclose(unit, [[[0, 0, 1], [0, 0, 0]]])
    np.testing.assert_array_equal(mask, [[True, False]])


def test_fractions():
    np.testing.assert_allclose(decoding.uint16_fraction(np.array([[0, 65535, 13107]], np.uint16))[..., 0], [[0, 1, 0.2]])
    np.testing.assert_allclose(decoding.uint8_fraction(np.array([[[51, 0, 0]]], np.uint8)), [[[0.2]]])
    np.testing.assert_allclose(decoding.uint8_fraction(np.array([[255]], np.uint8)), [[[1.0]]])


def test_principal_curvature():
    k, mask = decoding.principal_curvature(np.array([[[127, 254, 7], [0, 0, 9], [0, 127, 0]]], np.uint8))
    np.testing.assert_allclose(k[0], [[0, 1], [0, 0], [-1, 0]])
    np.testing.assert_array_equal(mask, [[True, False, True]])


def test_taskonomy_semantic_drops_uncertain():
    classes, mask = decoding.taskonomy_semantic(np.array([[0, 1, 2, 17]], np.uint8))
    np.testing.assert_array_equal(classes, [[0, 0, 1, 16]])
    np.testing.assert_array_equal(mask, [[False, True, True, True]])


@pytest.mark.parametrize("ignore", [255, -1])
def test_labels_with_ignore(ignore):
    classes, mask = decoding.labels_with_ignore(np.array([[3, ignore, 0]]), ignore)
    np.testing.assert_array_equal(classes, [[3, 0, 0]])
    np.testing.assert_array_equal(mask, [[True, False, True]])


def test_relabel_segments():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 1] = [0, 0, 9]
    rgb[1, :] = [1, 0, 0]
    np.testing.assert_array_equal(decoding.relabel_segments(rgb), [[0, 1], [2, 2]])
    np.testing.assert_array_equal(decoding.relabel_segments(np.array([[40, 7], [7, 40]])), [[1, 0], [0, 1]])


def test_class_distribution():
    np.testing.assert_allclose(decoding.class_distribution(np.array([0.25, 0.75])), [0.25, 0.75])
    np.testing.assert_allclose(decoding.class_distribution(np.array([[0.0, math.log(3)]])), [0.25, 0.75], rtol=1e-6)
    np.testing.assert_allclose(decoding.class_distribution(np.array([1000.0, 1000.0])), [0.5, 0.5])


def test_binary_threshold_and_boundaries():
    np.testing.assert_array_equal(decoding.binary_threshold(np.array([[0, 127, 128, 255]], np.uint8))[..., 0],
                                  [[0, 0, 1, 1]])
    labels = np.array([[1, 1, 2], [1, 1, 2], [3, 3, 3]])
    np.testing.assert_array_equal(decoding.label_boundaries(labels), [[0, 1, 0], [1, 1, 1], [0, 0, 0]])


def test_euler_round_trip():
    angles = np.array([0.3, -0.7, 2.1])
    r = decoding.euler_to_matrix(*angles)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(decoding.matrix_to_euler(r), angles, atol=1e-12)
    # Static x-y-z: a rotation of 90 degrees about z maps x to y.
    np.testing.assert_allclose(decoding.euler_to_matrix(0, 0, math.pi / 2) @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def _info(rotation, location, box):
    return {"camera_rotation_final": rotation, "camera_location": location,
            "bounding_box_ranges": dict(zip("xyz", box))}


def test_room_layout_known_camera():
    """Camera at the origin looking along world +x (pitched up by 90 degrees): a box 1..3 m ahead."""
    layout = decoding.room_layout(_info([math.pi / 2, 0, 0], [0, 0, 0], ([1, 3], [-1, 2], [0, 2])))
    np.testing.assert_allclose(layout, [0.5, 1, -2, math.pi / 2, 0, -math.pi / 2, 2, 3, 2], atol=1e-9)


def test_room_layout_invariants_under_yaw_and_translation():
    box = ([-1.0, 4.0], [0.5, 2.5], [0.0, 3.0])
    base = decoding.room_layout(_info([math.pi / 2, 0, 0.4], [0.2, 1.0, 1.5], box))
    for yaw in (0.4 + math.pi / 2, 0.4 + math.pi):
        # Turning the camera by 90 degrees picks the next world axis: the box in camera
        # coordinates changes but its extents are those of the box (permuted), its distance
        # to the camera is kept and the pitch is unchanged.
        layout = decoding.room_layout(_info([math.pi / 2, 0, yaw], [0.2, 1.0, 1.5], box))
        np.testing.assert_allclose(sorted(layout[6:]), sorted([5.0, 2.0, 3.0]), atol=1e-9)
        np.testing.assert_allclose(np.linalg.norm(layout[:3]), np.linalg.norm(base[:3]), atol=1e-9)
        np.testing.assert_allclose(layout[3], base[3], atol=1e-9)
    assert decoding.room_layout({"camera_rotation_final": [0, 0, 0]}) is None


def test_vanishing_point():
    info = {"vanishing_points_gaussian_sphere": {"x": [1, 2, 3], "y": [4, 5, 6], "z": [7, 8, 9]}}
    np.testing.assert_array_equal(decoding.vanishing_point(info), np.arange(1, 10))
    assert decoding.vanishing_point({}) is None
