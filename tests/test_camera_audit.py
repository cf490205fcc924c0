"""The camera model against references that do not go through `Camera.to_opencv`.

tests/test_camera.py compares `Camera.project` with ``cv2.projectPoints`` fed by `Camera.to_opencv`: a
mistake made the same way on both sides (a precision loss in `Camera.from_matlab`, a dropped skew) passes
there. Here the cameras are first written in OpenCV's own terms and converted to MATLAB's by hand
(``IntrinsicMatrix = K_cv.T`` with the principal point 1-based, ``rotationMatrix = R_cv.T``), so OpenCV is
an independent reference; the OpenCV form is checked against those hand-made values, entry by entry.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from rat7m_builder.camera import (
    INTRINSIC_STRUCTURE_TOLERANCE,
    Camera,
    intrinsic_matrix_problem,
    rotation_matrix_problem,
)

#: An OpenCV camera with awkward, all-different values: focal lengths, principal point (0-based px) and
#: distortion coefficients that no float32 holds exactly, and k1, k2, k3, p1, p2 of distinct sizes, so that
#: a swap, a dropped term or a precision loss moves some projection by far more than the tolerance.
CV_CAMERA_MATRIX = np.array([[1234.567891, 0.0, 655.4321], [0.0, 1251.098765, 517.8765], [0.0, 0.0, 1.0]])
CV_RVEC = np.array([0.31, -0.47, 0.23])
CV_TVEC = np.array([-41.3, 27.9, 1843.7])
CV_DISTORTION = np.array([-0.1873, 0.0671, 0.00213, -0.00347, -0.0117])  # k1, k2, p1, p2, k3


def _matlab_camera_from_opencv(camera_matrix, rvec, tvec, distortion, radial_terms=3) -> Camera:
    """The MATLAB fields an OpenCV camera has, written by hand from RAT7M.md's conventions."""
    rotation_cv, _ = cv2.Rodrigues(np.asarray(rvec, dtype=np.float64))
    intrinsic = np.array(camera_matrix, dtype=np.float64).T  # MATLAB stores the transpose …
    intrinsic[2, 0] += 1.0  # … with a 1-based principal point
    intrinsic[2, 1] += 1.0
    k1, k2, p1, p2, k3 = distortion
    radial = [k1, k2, k3][:radial_terms]
    return Camera.from_matlab(intrinsic, rotation_cv.T, np.reshape(tvec, (1, 3)), [radial], [[p1, p2]])


def _cv2_reference(points, camera_matrix, rvec, tvec, distortion) -> np.ndarray:
    projected, _ = cv2.projectPoints(np.asarray(points, dtype=np.float64), rvec, tvec, camera_matrix, distortion)
    return projected.reshape(-1, 2)


def _points_in_view(count=300, seed=3) -> np.ndarray:
    """World points whose normalised coordinates reach ±0.4, where every distortion term is large."""
    rotation_cv, _ = cv2.Rodrigues(CV_RVEC)
    rng = np.random.default_rng(seed)
    camera_points = np.column_stack([rng.uniform(-0.4, 0.4, (count, 2)), np.ones(count)])
    camera_points *= rng.uniform(900, 2600, (count, 1))
    return (camera_points - CV_TVEC) @ rotation_cv  # x_cam = R_cv X + t  ⇒  X = R_cvᵀ (x_cam − t)


def test_projection_agrees_with_opencv_given_opencv_parameters_directly():
    camera = _matlab_camera_from_opencv(CV_CAMERA_MATRIX, CV_RVEC, CV_TVEC, CV_DISTORTION)
    points = _points_in_view()
    expected = _cv2_reference(points, CV_CAMERA_MATRIX, CV_RVEC, CV_TVEC, CV_DISTORTION)
    np.testing.assert_allclose(camera.project(points), expected, atol=1e-6, rtol=0)
    assert camera.project(points).dtype == np.float64


def test_projection_with_radial_1x2_agrees_with_opencv_k3_zero():
    distortion = CV_DISTORTION.copy()
    distortion[4] = 0.0
    camera = _matlab_camera_from_opencv(CV_CAMERA_MATRIX, CV_RVEC, CV_TVEC, CV_DISTORTION, radial_terms=2)
    points = _points_in_view()
    expected = _cv2_reference(points, CV_CAMERA_MATRIX, CV_RVEC, CV_TVEC, distortion)
    np.testing.assert_allclose(camera.project(points), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("term", range(5))
def test_each_distortion_term_alone_agrees_with_opencv(term):
    """One coefficient at a time: a swapped or mis-signed term cannot hide behind the others."""
    distortion = np.zeros(5)
    distortion[term] = CV_DISTORTION[term] * 5  # strong: its effect is ≥ 10⁵ times the tolerance
    camera = _matlab_camera_from_opencv(CV_CAMERA_MATRIX, CV_RVEC, CV_TVEC, distortion)
    points = _points_in_view(count=50)
    expected = _cv2_reference(points, CV_CAMERA_MATRIX, CV_RVEC, CV_TVEC, distortion)
    undistorted = _cv2_reference(points, CV_CAMERA_MATRIX, CV_RVEC, CV_TVEC, np.zeros(5))
    assert np.max(np.abs(expected - undistorted)) > 0.1  # the term matters here (pixels)
    np.testing.assert_allclose(camera.project(points), expected, atol=1e-6, rtol=0)


def test_points_behind_the_camera_follow_the_formula_like_opencv():
    # The docstring promises cv2.projectPoints' behaviour: divide by the (negative) depth, no abs, no mirror.
    camera = _matlab_camera_from_opencv(CV_CAMERA_MATRIX, CV_RVEC, CV_TVEC, np.zeros(5))
    rotation_cv, _ = cv2.Rodrigues(CV_RVEC)
    camera_points = np.array([[100.0, 50.0, -2000.0], [-300.0, 120.0, -900.0]])
    world = (camera_points - CV_TVEC) @ rotation_cv
    np.testing.assert_allclose(camera.world_to_camera(world), camera_points, atol=1e-9)
    expected = _cv2_reference(world, CV_CAMERA_MATRIX, CV_RVEC, CV_TVEC, np.zeros(5))
    np.testing.assert_allclose(camera.project(world), expected, atol=1e-6, rtol=0)
    # by hand: x = fx·(100 / −2000) + cx (0-based) lands left of the principal point
    np.testing.assert_allclose(camera.project(world)[0, 0], 655.4321 - 1234.567891 * 0.05, atol=1e-9)


def test_opencv_form_is_the_hand_made_opencv_camera():
    camera = _matlab_camera_from_opencv(CV_CAMERA_MATRIX, CV_RVEC, CV_TVEC, CV_DISTORTION)
    cv = camera.to_opencv()
    rotation_cv, _ = cv2.Rodrigues(CV_RVEC)
    np.testing.assert_allclose(cv.camera_matrix, CV_CAMERA_MATRIX, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cv.rotation_matrix, rotation_cv, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(cv.translation_vector, CV_TVEC)
    # the coefficients pass through unrounded (float64), in OpenCV's order k1, k2, p1, p2, k3
    assert cv.distortion.dtype == np.float64
    np.testing.assert_array_equal(cv.distortion, CV_DISTORTION)


def test_opencv_form_keeps_the_skew():
    # MATLAB's skew sits at IntrinsicMatrix[1, 0]; OpenCV's at camera_matrix[0, 1].
    intrinsic = np.array([[900.0, 0, 0], [2.5, 910.0, 0], [661.5, 524.25, 1]])
    cv = Camera.from_matlab(intrinsic, np.eye(3), [0, 0, 0], [0, 0], [0, 0]).to_opencv()
    np.testing.assert_array_equal(cv.camera_matrix, [[900.0, 2.5, 660.5], [0, 910.0, 523.25], [0, 0, 1]])


def test_the_opencv_form_is_a_copy_changing_it_leaves_the_camera_alone():
    camera = _matlab_camera_from_opencv(CV_CAMERA_MATRIX, CV_RVEC, CV_TVEC, CV_DISTORTION)
    point = _points_in_view(count=1)
    before = camera.project(point)
    cv = camera.to_opencv()
    cv.camera_matrix[:] = 0
    cv.rotation_matrix[:] = 0
    cv.translation_vector[:] = 0  # e.g. a user moving the world origin in place
    cv.distortion[:] = 0
    np.testing.assert_array_equal(camera.project(point), before)


def test_calibration_is_kept_in_double_precision():
    # The stored values in float64: rounding fx = 1234.567891 to float32 moves far points by ~1e-4 px.
    camera = _matlab_camera_from_opencv(CV_CAMERA_MATRIX, CV_RVEC, CV_TVEC, CV_DISTORTION)
    for array in (
        camera.intrinsic_matrix,
        camera.rotation_matrix,
        camera.translation_vector,
        camera.radial_distortion,
        camera.tangential_distortion,
    ):
        assert array.dtype == np.float64
    assert camera.focal_length == (1234.567891, 1251.098765)
    assert camera.principal_point_matlab == (656.4321, 518.8765)


def test_single_precision_fields_are_widened_not_kept_single():
    # The release stores TangentialDistortion in single precision on some cameras: widen, then compute in float64.
    tangential = np.array([[0.00213, -0.00347]], dtype=np.float32)
    camera = Camera.from_matlab(
        np.array([[1000.0, 0, 0], [0, 1000, 0], [641, 525, 1]]), np.eye(3), [0, 0, 0], [0, 0], tangential
    )
    assert camera.tangential_distortion.dtype == np.float64
    np.testing.assert_array_equal(camera.tangential_distortion, tangential.astype(np.float64).reshape(2))


@pytest.mark.parametrize(("row", "column"), [(0, 1), (0, 2), (1, 2)])
def test_an_intrinsic_matrix_with_a_small_entry_above_the_diagonal_is_refused(row, column):
    # MATLAB writes those zeros exactly; 1e-3 px there is a damaged or foreign matrix, not rounding.
    intrinsic = np.array([[1000.0, 0, 0], [0, 1000, 0], [660, 524, 1]])
    intrinsic[row, column] = 1e-3
    problem = intrinsic_matrix_problem(intrinsic)
    assert problem is not None and problem.startswith("is not a camera matrix"), problem
    intrinsic[row, column] = INTRINSIC_STRUCTURE_TOLERANCE / 10  # text round-off: accepted
    assert intrinsic_matrix_problem(intrinsic) is None


def test_a_non_rotation_with_determinant_minus_one_is_not_called_a_reflection():
    # det = −1 but the axes are stretched: "a reflection" would send the user looking for a mirrored axis.
    problem = rotation_matrix_problem(np.diag([2.0, 0.5, -1.0]))
    assert problem is not None and problem.startswith("is not a rotation:"), problem
    assert "reflection" not in problem
    assert rotation_matrix_problem(np.diag([1.0, 1.0, -1.0])).startswith("is a reflection, not a rotation")


@pytest.mark.parametrize(
    ("radial", "tangential"),
    [((-0.09, 0.04, -0.01), (-0.0008, -0.0005)), ((0.1, 0.01, 0.001), (0.001, 0.002)), ((-0.2, 0.05), (0.001, 0.002))],
)
def test_a_point_on_the_camera_plane_is_nan_in_both_coordinates_whatever_the_distortion(radial, tangential):
    # The docstring promises NaN for z = 0. With a k3 the distortion polynomial of an infinite r² can come out
    # ±inf instead of NaN (inf·inf, not inf·0): a published keypoint of (nan, -inf) then, before the fix.
    camera = Camera.from_matlab(
        np.array([[1000.0, 0, 0], [0, 1000, 0], [641, 525, 1]]), np.eye(3), [0, 0, 0], radial, tangential
    )
    on_plane = np.array([[10.0, 20.0, 0.0], [-10.0, 20.0, 0.0], [10.0, -20.0, 0.0], [10.0, 0.0, 0.0], [0, 0, 0]])
    assert np.isnan(camera.project(on_plane)).all()
    assert np.isfinite(camera.project([10.0, 20.0, 1000.0])).all()
