"""Parsing ``mocap-*.mat``: what a user relies on beyond tests/test_mocap.py.

Each file is fabricated with ``scipy.io.savemat`` from known values (each camera's calibration and frame
index different, so any mix-up of cameras shows), then read through `read_mocap` as the builder reads it.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.io
from helpers import MAT_FIX

from rat7m_builder.errors import MocapFormatError
from rat7m_builder.manifest import MARKER_NAMES
from rat7m_builder.mocap import read_mocap

NUM_SAMPLES = 5
SOURCE = "mocap-s1-d1.mat"


def _camera_fields(number: int) -> dict:
    """Camera ``number``'s fields: a focal length, principal point, translation and frame offset of its own."""
    return {
        "frame": (np.arange(NUM_SAMPLES, dtype=np.float64) + 10 * number)[None, :],
        "IntrinsicMatrix": np.array([[1000.0 + number, 0, 0], [0, 1010.0 + number, 0], [600.0 + number, 500.0, 1]]),
        "rotationMatrix": np.eye(3),
        "translationVector": np.array([[number, -number, 1500.0]]),
        "TangentialDistortion": np.array([[0.001 * number, -0.002 * number]]),
        "RadialDistortion": np.array([[-0.1 * number, 0.01 * number]]),
    }


def _variables() -> dict:
    # Marker m's coordinates are m + (0, 0.25, 0.5) + 100·t: every marker and sample distinct and recognisable.
    samples = 100.0 * np.arange(NUM_SAMPLES)[:, None]
    return {
        "cameras": {f"Camera{k}": _camera_fields(k) for k in (1, 2, 4, 5, 3, 6)},  # the release's stored order
        "mocap": {name: m + np.array([0.0, 0.25, 0.5]) + samples for m, name in enumerate(MARKER_NAMES)},
        "name": "Subject1-Day1",
    }


def _mat(variables: dict, **savemat_options) -> io.BytesIO:
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables, **savemat_options)
    buffer.seek(0)
    return buffer


def _refused(variables: dict, source: str = SOURCE) -> str:
    with pytest.raises(MocapFormatError) as raised:
        read_mocap(_mat(variables), source)
    message = str(raised.value)
    assert message.startswith(f"{source}: ") and message.endswith(MAT_FIX), message
    return message


def test_markers_cameras_and_frames_are_the_stored_values():
    parsed = read_mocap(_mat(_variables()), SOURCE)
    assert parsed.num_samples == NUM_SAMPLES
    expected = np.arange(20)[None, :, None] + np.array([0.0, 0.25, 0.5]) + 100.0 * np.arange(NUM_SAMPLES)[:, None, None]
    np.testing.assert_array_equal(parsed.keypoints_3d, expected)
    # Both mappings are keyed by camera number and iterate in camera order, although stored 1, 2, 4, 5, 3, 6.
    assert list(parsed.cameras) == list(parsed.frame_index) == [1, 2, 3, 4, 5, 6]
    for number in range(1, 7):
        fields = _camera_fields(number)
        camera = parsed.cameras[number]
        np.testing.assert_array_equal(parsed.frame_index[number], np.arange(NUM_SAMPLES) + 10 * number)
        np.testing.assert_array_equal(camera.intrinsic_matrix, fields["IntrinsicMatrix"])
        np.testing.assert_array_equal(camera.rotation_matrix, fields["rotationMatrix"])
        np.testing.assert_array_equal(camera.translation_vector, fields["translationVector"][0])
        np.testing.assert_array_equal(camera.radial_distortion, [-0.1 * number, 0.01 * number, 0.0])
        np.testing.assert_array_equal(camera.tangential_distortion, [0.001 * number, -0.002 * number])


def test_documented_dtypes_also_from_single_precision_and_integer_storage():
    # The docstring promises float64 keypoints and int64 frame indices, whatever precision the file used.
    variables = _variables()
    variables["mocap"] = {name: value.astype(np.float32) for name, value in variables["mocap"].items()}
    variables["cameras"]["Camera2"]["frame"] = variables["cameras"]["Camera2"]["frame"].astype(np.int32)
    parsed = read_mocap(_mat(variables), SOURCE)
    assert parsed.keypoints_3d.dtype == np.float64
    for number in range(1, 7):
        assert parsed.frame_index[number].dtype == np.int64
    np.testing.assert_array_equal(parsed.frame_index[2], np.arange(NUM_SAMPLES) + 20)


def test_a_non_camera_field_and_a_seventh_camera_are_ignored():
    variables = _variables()
    variables["cameras"]["Camera7"] = _camera_fields(7)
    variables["cameras"]["notes"] = np.array([[1.0]])
    parsed = read_mocap(_mat(variables), SOURCE)
    assert list(parsed.cameras) == list(parsed.frame_index) == [1, 2, 3, 4, 5, 6]


def test_capitalised_translation_field_is_accepted():
    # The helper README spells it TranslationVector; a copy re-saved after it is read the same.
    variables = _variables()
    for camera in variables["cameras"].values():
        camera["TranslationVector"] = camera.pop("translationVector")
    parsed = read_mocap(_mat(variables), SOURCE)
    np.testing.assert_array_equal(parsed.cameras[4].translation_vector, [4.0, -4.0, 1500.0])


def test_calibration_vectors_stored_as_columns_are_read_the_same():
    # MATLAB code that saves 3×1 / 2×1 columns instead of the release's rows gives the same camera.
    variables = _variables()
    camera = variables["cameras"]["Camera5"]
    for field in ("translationVector", "RadialDistortion", "TangentialDistortion"):
        camera[field] = camera[field].T
    parsed = read_mocap(_mat(variables), SOURCE)
    np.testing.assert_array_equal(parsed.cameras[5].translation_vector, [5.0, -5.0, 1500.0])
    np.testing.assert_array_equal(parsed.cameras[5].radial_distortion, [-0.5, 0.05, 0.0])
    np.testing.assert_array_equal(parsed.cameras[5].tangential_distortion, [0.005, -0.010])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("IntrinsicMatrix", np.eye(3) * (1 + 1j)),
        ("RadialDistortion", np.array([[0.1 + 0.5j, 0.0]])),
    ],
)
def test_complex_calibration_is_refused(field, value):
    # No MATLAB camera is complex; kept, its imaginary part would be dropped silently on the way to float64.
    variables = _variables()
    variables["cameras"]["Camera3"][field] = value
    message = _refused(variables)
    assert f"field 'cameras.Camera3.{field}' should be a numeric" in message and f"array of {value.dtype}" in message


def test_complex_markers_are_refused():
    variables = _variables()
    variables["mocap"]["KneeR"] = variables["mocap"]["KneeR"] + 1j
    assert "field 'mocap.KneeR' should be a numeric N×3 array, found array of complex128" in _refused(variables)


def test_cameras_as_a_struct_array_is_refused_not_cut_to_its_first_element():
    # A 1×2 MATLAB struct array (a record array for savemat): which element holds the calibration is unknown.
    variables = _variables()
    struct_array = np.zeros((1, 2), dtype=[(f"Camera{k}", object) for k in range(1, 7)])
    for element in range(2):
        for k in range(1, 7):
            struct_array[0, element][f"Camera{k}"] = _camera_fields(k)
    variables["cameras"] = struct_array
    assert "field 'cameras' should be a 1×1 MATLAB struct, found ndarray of shape (1, 2)" in _refused(variables)


def test_a_file_object_already_read_is_read_from_its_start():
    data = _mat(_variables())
    data.read()  # e.g. the caller sniffed the header or checked the size first
    assert read_mocap(data, SOURCE).num_samples == NUM_SAMPLES


@pytest.mark.parametrize("name", ["SUBJECT2-DAY1", "subject2-day1", "Subject02-Day01"])
def test_name_naming_another_recording_in_another_spelling_is_refused(name):
    variables = _variables()
    variables["name"] = name
    assert "(recording s2-d1) but its file name says s1-d1" in _refused(variables)


@pytest.mark.parametrize("name", ["Subject01-Day01", "subject1-day1", "Subject 1 - Day 1"])
def test_name_of_the_same_recording_in_another_spelling_is_accepted(name):
    variables = _variables()
    variables["name"] = name
    assert read_mocap(_mat(variables), SOURCE).name == name


def test_a_local_file_opened_by_a_relative_path_is_read_after_a_change_of_directory(tmp_path, monkeypatch):
    # The reader process runs in the directory it started in: it must get the file's absolute path.
    from rat7m_builder import mocap

    mocap.start_reader()
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / SOURCE).write_bytes(_mat(_variables()).getvalue())
    monkeypatch.chdir(folder)
    with open(SOURCE, "rb") as file:
        assert read_mocap(file, SOURCE).num_samples == NUM_SAMPLES


def test_a_file_without_name_has_the_empty_name():
    # `MocapRecording.name` documents "" for an absent ``name`` variable.
    variables = _variables()
    del variables["name"]
    assert read_mocap(_mat(variables), SOURCE).name == ""
