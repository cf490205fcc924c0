"""Parsing mocap-*.mat files: the release's structure, its quirks, and clear errors."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import scipy.io

from rat7m_builder.errors import MocapFormatError
from rat7m_builder.manifest import MARKER_NAMES
from rat7m_builder.mocap import read_mocap

SHARED_MOCK = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "fixtures", "propose-mocap-mock.mat")


def _mat_bytes(variables: dict, **kwargs) -> io.BytesIO:
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables, **kwargs)
    buffer.seek(0)
    return buffer


def _valid_variables(num_samples=4) -> dict:
    rng = np.random.default_rng(0)
    camera = {
        "frame": np.arange(num_samples, dtype=np.float64)[None, :],
        "IntrinsicMatrix": np.array([[1000.0, 0, 0], [0, 1000.0, 0], [660.0, 524.0, 1]]),
        "rotationMatrix": np.eye(3),
        "translationVector": np.array([[0.0, 0.0, 1500.0]]),
        "TangentialDistortion": np.zeros((1, 2)),
        "RadialDistortion": np.zeros((1, 2)),
    }
    return {
        "cameras": {f"Camera{k}": dict(camera) for k in (1, 2, 4, 5, 3, 6)},
        "mocap": {name: rng.normal(size=(num_samples, 3)) for name in MARKER_NAMES},
        "name": "Subject1-Day1",
    }


def test_fabricated_release_parses_with_quirks(sample_release):
    truth = sample_release.recordings["s1-d1"]
    with open(os.path.join(sample_release.root, "annotations", "mocap-s1-d1.mat"), "rb") as file:
        parsed = read_mocap(file, "mocap-s1-d1.mat")
    assert parsed.name == "Subject1-Day1"
    assert list(parsed.cameras) == [1, 2, 3, 4, 5, 6]  # stored 1, 2, 4, 5, 3, 6
    # markers built by name although the struct fields are shuffled; NaN kept
    np.testing.assert_array_equal(parsed.keypoints_3d, truth.keypoints_3d)
    assert np.isnan(parsed.keypoints_3d).any()
    for camera in range(1, 7):
        np.testing.assert_array_equal(parsed.frame_index[camera], truth.frame_index[camera])
        np.testing.assert_allclose(parsed.cameras[camera].intrinsic_matrix, truth.cameras[camera].intrinsic_matrix)
    assert parsed.cameras[3].radial_distortion[2] != 0  # the 1×3 radial camera keeps k3
    assert parsed.cameras[1].radial_distortion[2] == 0


def test_a_local_file_is_read_by_path_and_gives_what_its_bytes_give(sample_release, monkeypatch):
    from rat7m_builder import mocap

    path = os.path.join(sample_release.root, "annotations", "mocap-s1-d1.mat")
    requests = []
    isolated = mocap._loadmat_isolated
    monkeypatch.setattr(mocap, "_loadmat_isolated", lambda source: requests.append(source) or isolated(source))
    with open(path, "rb") as file:
        by_path = read_mocap(file, "mocap-s1-d1.mat")
    with open(path, "rb") as file:
        by_bytes = read_mocap(io.BytesIO(file.read()), "mocap-s1-d1.mat")
    assert requests[0] == os.path.abspath(path) and isinstance(requests[1], bytes)  # no 80 MB through a pipe
    np.testing.assert_array_equal(by_path.keypoints_3d, by_bytes.keypoints_3d)
    for camera in range(1, 7):
        np.testing.assert_array_equal(by_path.frame_index[camera], by_bytes.frame_index[camera])
        np.testing.assert_array_equal(
            by_path.cameras[camera].intrinsic_matrix, by_bytes.cameras[camera].intrinsic_matrix
        )


def test_a_frame_row_stored_as_a_column_gives_the_same_frame_index():
    # MATLAB code may save `frame` as N×1 (a column) instead of the release's 1×N: the same indices.
    variables = _valid_variables()
    variables["cameras"]["Camera3"]["frame"] = np.array([[5.0], [6.0], [6.0], [8.0]])
    parsed = read_mocap(_mat_bytes(variables, oned_as="row"), "mocap-s1-d1.mat")
    np.testing.assert_array_equal(parsed.frame_index[3], [5, 6, 6, 8])
    np.testing.assert_array_equal(parsed.frame_index[1], np.arange(4))


def test_shared_third_party_mock_is_parsed_then_rejected_naming_field_and_shape():
    with open(SHARED_MOCK, "rb") as file, pytest.raises(MocapFormatError) as error:
        read_mocap(file, "propose-mocap-mock.mat")
    message = str(error.value)
    assert "propose-mocap-mock.mat" in message
    assert "cameras.Camera1.IntrinsicMatrix" in message and "3×3" in message and "1×1" in message


def test_capitalised_rotation_field_is_accepted():
    variables = _valid_variables()
    for camera in variables["cameras"].values():
        camera["RotationMatrix"] = camera.pop("rotationMatrix")
    assert read_mocap(_mat_bytes(variables), "x.mat").cameras[1].rotation_matrix.shape == (3, 3)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda v: v.pop("cameras"), r"missing top-level variable\(s\) \['cameras'\]"),
        (lambda v: v.pop("mocap"), r"missing top-level variable\(s\) \['mocap'\]"),
        (lambda v: v["mocap"].pop("HeadF"), r"'mocap' lacks marker\(s\) \['HeadF'\]"),
        (lambda v: v["mocap"].__setitem__("ArmL", np.zeros((4, 2))), r"'mocap.ArmL' should have shape N×3"),
        (lambda v: v["mocap"].__setitem__("ArmL", np.zeros((5, 3))), r"'mocap.ArmL' has 5 rows"),
        (lambda v: v["mocap"].__setitem__("ArmL", "text"), r"'mocap.ArmL' should be a numeric"),
        (lambda v: v["cameras"].pop("Camera3"), r"'cameras' lacks \['Camera3'\]"),
        (lambda v: v["cameras"]["Camera2"].pop("frame"), r"'cameras.Camera2.frame' is missing"),
        (
            lambda v: v["cameras"]["Camera2"].__setitem__("frame", np.zeros((1, 3))),
            r"'cameras.Camera2.frame' should have shape 1×4",
        ),
        (lambda v: v["cameras"]["Camera2"].__setitem__("frame", np.array([[0, 1.5, 2, 3]])), r"non-integer"),
        (lambda v: v["cameras"]["Camera2"].__setitem__("frame", np.array([[0, -1, 2, 3]])), r"negative"),
        (
            lambda v: v["cameras"]["Camera5"].__setitem__("rotationMatrix", np.eye(2)),
            r"'cameras.Camera5.rotationMatrix' should have shape 3×3",
        ),
        (lambda v: v["cameras"]["Camera5"].__setitem__("RadialDistortion", np.zeros((1, 4))), r"1×2 or 1×3"),
        (
            lambda v: v["cameras"]["Camera5"].__setitem__("TangentialDistortion", np.zeros((1, 3))),
            r"TangentialDistortion",
        ),
        (lambda v: v["cameras"]["Camera5"]["IntrinsicMatrix"].__setitem__((0, 0), np.nan), r"NaN or infinite"),
    ],
)
def test_malformed_structure_names_file_and_field(mutate, expected):
    variables = _valid_variables()
    mutate(variables)
    with pytest.raises(MocapFormatError, match=expected) as error:
        read_mocap(_mat_bytes(variables), "mocap-s1-d1.mat")
    assert str(error.value).startswith("mocap-s1-d1.mat: ")


def test_truncated_and_foreign_files_are_clear_errors():
    whole = _mat_bytes(_valid_variables()).getvalue()
    for data in (whole[: len(whole) // 2], b"not a mat file at all" * 10, b""):
        with pytest.raises(MocapFormatError, match="mocap-s2-d1.mat: cannot be read"):
            read_mocap(io.BytesIO(data), "mocap-s2-d1.mat")


def test_matlab_v73_hdf5_is_named():
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2021 HDF5 schema 1.00 ."
    data = header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM" + b"\x00" * 512
    with pytest.raises(MocapFormatError, match="v7.3"):
        read_mocap(io.BytesIO(data), "mocap-s3-d1.mat")


def test_an_infinite_z_coordinate_is_refused():
    variables = _valid_variables()
    variables["mocap"]["ArmL"][2, 2] = np.inf
    with pytest.raises(MocapFormatError, match="infinite value at sample 2"):
        read_mocap(_mat_bytes(variables), "mocap-s1-d1.mat")


def test_a_frame_index_past_int32_is_refused():
    # the published frame_index columns are int32
    variables = _valid_variables()
    variables["cameras"]["Camera2"]["frame"] = np.array([[0, 1, 2, 2.0**31]])
    with pytest.raises(MocapFormatError, match="too large"):
        read_mocap(_mat_bytes(variables), "mocap-s1-d1.mat")
