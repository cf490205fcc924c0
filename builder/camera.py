"""The RAT7M camera model: MATLAB calibration, projection with lens distortion, OpenCV form.

No I/O, no ``datasets``. Conventions (see ``shared/RAT7M.md``, "Camera model"):

* The release stores MATLAB's row-vector calibration: a world point ``X`` (1×3, mm) maps to
  ``[u·w, v·w, w] = [X, 1] · [R; t] · K`` with ``R = rotationMatrix``, ``t = translationVector`` and
  ``K = IntrinsicMatrix = [[fx, 0, 0], [skew, fy, 0], [cx, cy, 1]]`` (the transpose of OpenCV's).
* Lens distortion is MATLAB's (= OpenCV's) radial k1, k2[, k3] and tangential p1, p2 model.
* MATLAB puts the centre of the top-left pixel at (1, 1). **This project publishes 0-based pixels**
  (centre of the top-left pixel at (0, 0)) so a keypoint indexes the decoded image array directly.
  The one place that shift happens is `MATLAB_TO_ZERO_BASED_PIXEL_SHIFT`.

`intrinsic_matrix_problem` and `rotation_matrix_problem` say what is wrong with stored calibration
(an OpenCV-layout intrinsic matrix, a matrix that is not a rotation); the file parsers turn their
answers into errors naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Subtracted from MATLAB pixel coordinates (and from MATLAB's principal point) to get 0-based
#: pixels, as MathWorks' ``cameraIntrinsicsToOpenCV`` and DANNCE do.
MATLAB_TO_ZERO_BASED_PIXEL_SHIFT = 1.0

#: Largest deviation (absolute, in pixels) of ``IntrinsicMatrix``'s structural entries from their
#: values (0 above the diagonal, 1 in the corner). MATLAB writes them exactly (0 and 1 are exact in
#: float32 and float64); the slack only forgives a copy re-saved through text. Focal lengths and the
#: principal point are hundreds of pixels, so an OpenCV-layout matrix is far outside it.
INTRINSIC_STRUCTURE_TOLERANCE = 1e-6

#: Largest deviation allowed of ``R·Rᵀ`` from the identity (any element) and of ``det R`` from +1.
#: A rotation stored in float64 is orthonormal to ~1e-15, in float32 to ~1e-7 (2⁻²⁴ per element), and
#: one re-saved with 6 significant digits to ~1e-6; 1e-4 accepts all of these. It still refuses any
#: matrix that is not a rotation: a zero matrix deviates by 1, a reflection has det −1, a rotation
#: scaled by 1.001 deviates by 2e-3. A genuine deviation of 1e-4 would move a point 1 m away by
#: 0.1 mm, far below the motion capture's own accuracy.
ROTATION_TOLERANCE = 1e-4


def _format_matrix(matrix: np.ndarray) -> str:
    rows = ", ".join("[" + ", ".join(f"{value:.6g}" for value in row) + "]" for row in matrix)
    return f"[{rows}]"


def intrinsic_matrix_problem(intrinsic_matrix: np.ndarray) -> str | None:
    """Say what is wrong with a stored ``IntrinsicMatrix``, or None when it is in MATLAB layout.

    MATLAB layout is ``[[fx, 0, 0], [skew, fy, 0], [cx, cy, 1]]``: the last column is ``[0, 0, 1]ᵀ`` and
    the principal point (1-based pixels) is in the last row. OpenCV's layout is its transpose. The two
    cannot be converted silently: a transposed matrix read as MATLAB's would publish a principal point
    of (-1, -1) and project every marker to nonsense, so the caller must refuse it.

    Args:
        intrinsic_matrix: 3×3 finite array, as stored in the file.

    Returns:
        None if the matrix is a MATLAB-layout camera matrix with positive focal lengths (pixels), else
        a sentence fragment (starting with a verb, e.g. ``"is stored transposed …"``) naming what was
        found and what was expected, for the caller's error message.
    """
    matrix = np.asarray(intrinsic_matrix, dtype=np.float64).reshape(3, 3)
    found = _format_matrix(matrix)
    expected = "expected MATLAB's layout [[fx, 0, 0], [skew, fy, 0], [cx, cy, 1]] (the transpose of OpenCV's)"

    def near(value: float, target: float) -> bool:
        return abs(value - target) <= INTRINSIC_STRUCTURE_TOLERANCE

    matlab_layout = near(matrix[0, 1], 0) and near(matrix[0, 2], 0) and near(matrix[1, 2], 0) and near(matrix[2, 2], 1)
    if not matlab_layout:
        opencv_layout = (
            near(matrix[1, 0], 0) and near(matrix[2, 0], 0) and near(matrix[2, 1], 0) and near(matrix[2, 2], 1)
        )
        if opencv_layout:
            return (
                f"is stored transposed (OpenCV layout): found {found}, with the principal point "
                f"({matrix[0, 2]:.6g}, {matrix[1, 2]:.6g}) in the last column; {expected}. Store its transpose"
            )
        return f"is not a camera matrix: found {found}; {expected}"
    fx, fy = matrix[0, 0], matrix[1, 1]
    if not (fx > 0 and fy > 0):
        return f"has non-positive focal lengths (fx, fy) = ({fx:.6g}, {fy:.6g}) px: found {found}; {expected}"
    return None


def rotation_matrix_problem(rotation_matrix: np.ndarray) -> str | None:
    """Say what is wrong with a stored ``rotationMatrix``, or None when it is a proper rotation.

    A proper rotation has ``R·Rᵀ = I`` and ``det R = +1``, each within `ROTATION_TOLERANCE`. (The
    check is the same for MATLAB's ``R`` and OpenCV's ``Rᵀ``: it cannot tell a transposed rotation.)

    Args:
        rotation_matrix: 3×3 finite array, as stored in the file.

    Returns:
        None for a proper rotation, else a sentence fragment (starting with a verb) naming what was
        found, for the caller's error message.
    """
    matrix = np.asarray(rotation_matrix, dtype=np.float64).reshape(3, 3)
    orthogonality_error = float(np.max(np.abs(matrix @ matrix.T - np.eye(3))))
    determinant = float(np.linalg.det(matrix))
    if orthogonality_error <= ROTATION_TOLERANCE and abs(determinant - 1.0) <= ROTATION_TOLERANCE:
        return None
    reflection = orthogonality_error <= ROTATION_TOLERANCE and abs(determinant + 1.0) <= ROTATION_TOLERANCE
    what = "a reflection, not a rotation" if reflection else "not a rotation"
    return (
        f"is {what}: found {_format_matrix(matrix)} with max |R·Rᵀ − I| = {orthogonality_error:.3g} and "
        f"det R = {determinant:.6g}; a rotation needs R·Rᵀ = I and det R = +1 (tolerance {ROTATION_TOLERANCE:g})"
    )


@dataclass(frozen=True)
class OpenCVCamera:
    """A camera in OpenCV's conventions, for ``cv2.projectPoints`` and friends.

    Attributes:
        camera_matrix: 3×3 ``[[fx, skew, cx], [0, fy, cy], [0, 0, 1]]`` in 0-based pixels.
        rotation_matrix: 3×3 world → camera for column vectors: ``x_cam = R @ X + t``.
        translation_vector: (3,) in mm.
        distortion: (5,) ``(k1, k2, p1, p2, k3)``.
    """

    camera_matrix: np.ndarray
    rotation_matrix: np.ndarray
    translation_vector: np.ndarray
    distortion: np.ndarray


@dataclass(frozen=True)
class Camera:
    """One calibrated RAT7M camera, holding the parameters exactly as MATLAB stores them.

    Attributes:
        intrinsic_matrix: 3×3 MATLAB ``IntrinsicMatrix`` ``[[fx, 0, 0], [skew, fy, 0], [cx, cy, 1]]``,
            1-based pixels.
        rotation_matrix: 3×3 MATLAB ``rotationMatrix`` (row vectors: ``x_cam = X @ R + t``).
        translation_vector: (3,) MATLAB ``translationVector`` in mm.
        radial_distortion: (3,) ``(k1, k2, k3)``; k3 is 0 when the file stores only k1, k2.
        tangential_distortion: (2,) ``(p1, p2)``.
    """

    intrinsic_matrix: np.ndarray
    rotation_matrix: np.ndarray
    translation_vector: np.ndarray
    radial_distortion: np.ndarray
    tangential_distortion: np.ndarray

    @classmethod
    def from_matlab(
        cls,
        intrinsic_matrix,
        rotation_matrix,
        translation_vector,
        radial_distortion,
        tangential_distortion,
    ) -> Camera:
        """Build a camera from the MATLAB fields (any float precision; 1×2 or 1×3 radial)."""
        radial = np.asarray(radial_distortion, dtype=np.float64).reshape(-1)
        radial = np.concatenate([radial, np.zeros(3 - radial.size)])
        return cls(
            intrinsic_matrix=np.asarray(intrinsic_matrix, dtype=np.float64).reshape(3, 3),
            rotation_matrix=np.asarray(rotation_matrix, dtype=np.float64).reshape(3, 3),
            translation_vector=np.asarray(translation_vector, dtype=np.float64).reshape(3),
            radial_distortion=radial,
            tangential_distortion=np.asarray(tangential_distortion, dtype=np.float64).reshape(2),
        )

    @property
    def focal_length(self) -> tuple[float, float]:
        """``(fx, fy)`` in pixels."""
        return float(self.intrinsic_matrix[0, 0]), float(self.intrinsic_matrix[1, 1])

    @property
    def skew(self) -> float:
        return float(self.intrinsic_matrix[1, 0])

    @property
    def principal_point_matlab(self) -> tuple[float, float]:
        """``(cx, cy)`` in MATLAB's 1-based pixels, as stored."""
        return float(self.intrinsic_matrix[2, 0]), float(self.intrinsic_matrix[2, 1])

    def to_opencv(self) -> OpenCVCamera:
        """The same camera in OpenCV form, with the principal point shifted to 0-based pixels."""
        camera_matrix = self.intrinsic_matrix.T.copy()
        camera_matrix[0, 2] -= MATLAB_TO_ZERO_BASED_PIXEL_SHIFT
        camera_matrix[1, 2] -= MATLAB_TO_ZERO_BASED_PIXEL_SHIFT
        k1, k2, k3 = self.radial_distortion
        p1, p2 = self.tangential_distortion
        return OpenCVCamera(
            camera_matrix=camera_matrix,
            rotation_matrix=self.rotation_matrix.T.copy(),
            translation_vector=self.translation_vector.copy(),
            distortion=np.array([k1, k2, p1, p2, k3], dtype=np.float64),
        )

    def world_to_camera(self, points_3d: np.ndarray) -> np.ndarray:
        """World points (..., 3) in mm → camera coordinates (..., 3) in mm (z along the optical axis)."""
        points = np.asarray(points_3d, dtype=np.float64)
        return points @ self.rotation_matrix + self.translation_vector

    def project(self, points_3d: np.ndarray) -> np.ndarray:
        """Project world points to **0-based** pixel coordinates, lens distortion included.

        Args:
            points_3d: (..., 3) world coordinates in mm; NaN rows stay NaN.

        Returns:
            (..., 2) float64 pixel coordinates ``(x, y)``: x to the right, y down, the centre of the
            top-left pixel at (0, 0). Points behind the camera are projected as the formula gives
            (like ``cv2.projectPoints``); check `world_to_camera` ``z > 0`` if that matters. A point
            on the camera plane (``z = 0``) has no image and comes out NaN (OpenCV would divide by 1).
        """
        camera_points = self.world_to_camera(points_3d)
        # A point on the camera plane (z = 0) has no image: its depth becomes NaN, so both coordinates
        # come out NaN. Dividing by the 0 instead gives ±inf, and the distortion polynomial of an
        # infinite r² is NaN or ±inf depending on the signs of k1…k3, p1, p2 (a keypoint of (nan, -inf)).
        depth = np.where(camera_points[..., 2] == 0, np.nan, camera_points[..., 2])
        # Points very near that plane overflow to ±inf (as the formula gives): no warnings for them.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            # Normalised coordinates. Equal to MATLAB's (x - cx - skew·yn)/fx, (y - cy)/fy after the
            # pinhole step, computed directly so no precision is lost going through pixels.
            xn = camera_points[..., 0] / depth
            yn = camera_points[..., 1] / depth
            k1, k2, k3 = self.radial_distortion
            p1, p2 = self.tangential_distortion
            r2 = xn * xn + yn * yn
            radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
            xd = xn * radial + 2.0 * p1 * xn * yn + p2 * (r2 + 2.0 * xn * xn)
            yd = yn * radial + p1 * (r2 + 2.0 * yn * yn) + 2.0 * p2 * xn * yn
            fx, fy = self.focal_length
            cx, cy = self.principal_point_matlab
            x = fx * xd + self.skew * yd + cx - MATLAB_TO_ZERO_BASED_PIXEL_SHIFT
            y = fy * yd + cy - MATLAB_TO_ZERO_BASED_PIXEL_SHIFT
        return np.stack([x, y], axis=-1)
