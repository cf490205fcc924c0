"""The camera model against an exact hand-computable geometry and against cv2.projectPoints."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

from rat7m_builder.camera import MATLAB_TO_ZERO_BASED_PIXEL_SHIFT, Camera


def _identity_camera(fx=1000.0, fy=1000.0, cx=641.0, cy=525.0, skew=0.0, radial=(0.0, 0.0), tangential=(0.0, 0.0)):
    intrinsic = np.array([[fx, 0, 0], [skew, fy, 0], [cx, cy, 1]])  # MATLAB layout
    return Camera.from_matlab(intrinsic, np.eye(3), [0.0, 0.0, 0.0], radial, tangential)


def test_exact_pinhole_geometry_and_zero_based_shift():
    camera = _identity_camera()
    # A point on the optical axis lands on the principal point, minus the 1-based → 0-based shift.
    np.testing.assert_allclose(camera.project([0.0, 0.0, 2000.0]), [640.0, 524.0])
    # 100 mm right and 50 mm down at 2 m: fx·0.05 = 50 px, fy·0.025 = 25 px.
    np.testing.assert_allclose(camera.project([100.0, 50.0, 2000.0]), [690.0, 549.0])
    assert MATLAB_TO_ZERO_BASED_PIXEL_SHIFT == 1.0


def test_matlab_row_vector_convention_translation_and_rotation():
    # MATLAB: x_cam = X @ R + t. A 90° turn about z maps world +x onto camera +y.
    rotation = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    camera = Camera.from_matlab(
        np.array([[500.0, 0, 0], [0, 500.0, 0], [101.0, 81.0, 1]]), rotation, [0.0, 0.0, 1000.0], [0, 0], [0, 0]
    )
    np.testing.assert_allclose(camera.world_to_camera([10.0, 0.0, 0.0]), [0.0, 10.0, 1000.0])
    np.testing.assert_allclose(camera.project([10.0, 0.0, 0.0]), [100.0, 85.0])


def test_hand_computed_distortion_and_skew():
    camera = _identity_camera(
        fx=800, fy=820, cx=301, cy=201, skew=2.0, radial=(0.1, 0.01, 0.001), tangential=(0.002, -0.003)
    )
    xn, yn = 0.2, -0.1
    r2 = xn**2 + yn**2
    a = 0.1 * r2 + 0.01 * r2**2 + 0.001 * r2**3
    xd = xn * (1 + a) + 2 * 0.002 * xn * yn + -0.003 * (r2 + 2 * xn**2)
    yd = yn * (1 + a) + 0.002 * (r2 + 2 * yn**2) + 2 * -0.003 * xn * yn
    expected = [800 * xd + 2.0 * yd + 301 - 1, 820 * yd + 201 - 1]
    np.testing.assert_allclose(camera.project([xn * 1500, yn * 1500, 1500.0]), expected, atol=1e-9)


def test_radial_1x2_equals_1x3_with_zero_k3():
    two = _identity_camera(radial=(-0.2, 0.05))
    three = _identity_camera(radial=(-0.2, 0.05, 0.0))
    points = np.array([[120.0, -80.0, 900.0], [0.0, 0.0, 500.0]])
    np.testing.assert_array_equal(two.project(points), three.project(points))


def test_nan_stays_nan():
    projected = _identity_camera().project(np.array([[np.nan, np.nan, np.nan], [1.0, 2.0, 1000.0]]))
    assert np.isnan(projected[0]).all() and np.isfinite(projected[1]).all()


def test_point_on_the_camera_plane_has_no_image_and_no_warning():
    camera = _identity_camera(radial=(-0.2, 0.05), tangential=(0.001, 0.002))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning from numpy would fail here
        projected = camera.project(np.array([[10.0, 20.0, 0.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1000.0]]))
    assert np.isnan(projected[:2]).all() and np.isfinite(projected[2]).all()


def _random_camera(rng: np.random.Generator) -> Camera:
    rotation_cv, _ = cv2.Rodrigues(rng.normal(size=3) * 0.6)
    fx, fy = rng.uniform(800, 1600, size=2)
    cx, cy = rng.uniform(500, 800), rng.uniform(400, 650)
    intrinsic_matlab = np.array([[fx, 0, 0], [0, fy, 0], [cx, cy, 1]])
    radial = rng.normal(scale=[0.15, 0.05, 0.01])[: rng.choice([2, 3])]
    tangential = rng.normal(scale=0.002, size=2).astype(rng.choice([np.float32, np.float64]))
    translation = rng.uniform([-200, -200, 1500], [200, 200, 2500])
    return Camera.from_matlab(intrinsic_matlab, rotation_cv.T, translation, radial, tangential)


@pytest.mark.parametrize("seed", range(25))
def test_agrees_with_cv2_project_points(seed):
    rng = np.random.default_rng(seed)
    camera = _random_camera(rng)
    world = rng.uniform(-300, 300, size=(200, 3))
    cv = camera.to_opencv()
    rvec, _ = cv2.Rodrigues(cv.rotation_matrix)
    reference, _ = cv2.projectPoints(world, rvec, cv.translation_vector, cv.camera_matrix, cv.distortion)
    np.testing.assert_allclose(camera.project(world), reference.reshape(-1, 2), atol=1e-6, rtol=0)


def test_opencv_form_conventions():
    camera = _identity_camera(fx=900, fy=910, cx=661.5, cy=524.25, radial=(0.1, 0.2, 0.3), tangential=(0.4, 0.5))
    cv = camera.to_opencv()
    np.testing.assert_allclose(cv.camera_matrix, [[900, 0, 660.5], [0, 910, 523.25], [0, 0, 1]])
    np.testing.assert_allclose(cv.distortion, [0.1, 0.2, 0.4, 0.5, 0.3])
