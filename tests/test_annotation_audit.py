"""The mini-RAT7M annotation reader at its edges: what a user of `rat7m_builder.annotation` relies on.

Index conventions mixed between columns, columns stored in unusual but harmless forms, values a
float32 or an int64 cannot hold, hostile pickles beyond the plain "call os.system" (codecs, numpy
scalars and buffers, announced lengths), and the writer used by the fabricator. Every annotation
is fabricated here (`test_annotation._fabricate`); nothing is downloaded.
"""

from __future__ import annotations

import codecs
import io
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_annotation import CAMERA_NAMES, _camera_fields, _dumps, _fabricate

from rat7m_builder.annotation import (
    annotation_dict,
    load_annotation,
    safe_unpickle,
    write_annotation,
)
from rat7m_builder.errors import AnnotationFormatError, MissingFileError, UnsafePickleError

try:  # the functions numpy's pickles name (numpy 2: numpy._core, numpy 1: numpy.core)
    from numpy._core.multiarray import _reconstruct, scalar
    from numpy._core.numeric import _frombuffer
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar
    from numpy.core.numeric import _frombuffer


class _Reduce:
    """Pickles as ``func(*args)`` (with an optional BUILD state), whatever func is."""

    def __init__(self, func: Any, args: tuple[Any, ...], state: Any = None) -> None:
        self.func, self.args, self.state = func, args, state

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def _load_changed(change) -> Any:
    """Load the fabricated annotation after ``change(data)`` edited its unpickled dict."""
    data = annotation_dict(**_fabricate())
    change(data)
    return load_annotation(_dumps(data), "edited.pkl")


def _refused_format(change, match: str) -> str:
    with pytest.raises(AnnotationFormatError, match=match) as error:
        _load_changed(change)
    message = str(error.value)
    assert message.startswith("edited.pkl: ") and "Re-download mini_rat7m_train_test_annotation.pkl" in message
    return message


# -- index conventions ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("zero_based_subject", "zero_based_day"), [(True, False), (False, True)])
def test_subject_and_day_columns_are_each_taken_with_their_own_base(zero_based_subject, zero_based_day):
    fields = _fabricate()

    def shift(data):
        table = data["table"]
        subject_shift, day_shift = int(zero_based_subject), int(zero_based_day)
        table["subject_idx"] = table["subject_idx"] - subject_shift
        table["day_idx"] = table["day_idx"] - day_shift
        data["cameras"] = {
            s - subject_shift: {d - day_shift: cams for d, cams in days.items()} for s, days in data["cameras"].items()
        }

    annotation = _load_changed(shift)
    assert (annotation.subject_base, annotation.day_base) == (1 - zero_based_subject, 1 - zero_based_day)
    np.testing.assert_array_equal(annotation.subject, fields["subject"])
    np.testing.assert_array_equal(annotation.day, fields["day"])
    assert annotation.recordings == ["s1-d1", "s2-d1", "s2-d2", "s3-d1", "s4-d1", "s5-d1", "s5-d2"]
    for subject, day in ((1, 1), (2, 2), (5, 2)):
        parameters = annotation.camera_parameters(subject, day, "Camera4")
        np.testing.assert_array_equal(parameters["translationVector"], _camera_fields(4)["translationVector"])


def test_camera_parameters_that_are_not_a_dict_are_named():
    def spoil(data):
        data["cameras"][2][1]["Camera3"] = np.eye(3)

    annotation = _load_changed(spoil)
    with pytest.raises(AnnotationFormatError) as error:
        annotation.camera_parameters(2, 1, "Camera3")
    assert str(error.value).startswith(
        "edited.pkl: cameras[2][1]['Camera3'] should be a dict of camera fields, found an array of float64 "
        "with shape (3, 3)."
    )


def test_indices_refuse_an_unknown_split():
    annotation = load_annotation(_dumps(annotation_dict(**_fabricate())), "memory")
    assert len(annotation.indices("train")) + len(annotation.indices("test")) == annotation.num_samples
    with pytest.raises(ValueError, match=r"split must be 'train' or 'test', got 'val'"):
        annotation.indices("val")


# -- columns in other forms -----------------------------------------------------------------------------------


def test_with_both_image_path_keys_the_current_one_is_used():
    fields = _fabricate()

    def both(data):
        data["table"]["image_paths"] = {name: np.array(["old.jpg"] * 21) for name in CAMERA_NAMES}

    annotation = _load_changed(both)
    np.testing.assert_array_equal(annotation.image_path, fields["image_path"])


def test_image_paths_stored_as_latin1_bytes_are_decoded():
    def as_bytes(data):
        # a Python 2 era file: byte strings (numpy dtype S), here with a latin1 "é"
        data["table"]["image_path"]["Camera2"] = np.array([f"caméra/{i}.jpg".encode("latin1") for i in range(21)])

    annotation = _load_changed(as_bytes)
    assert annotation.image_path[:3, 1].tolist() == ["caméra/0.jpg", "caméra/1.jpg", "caméra/2.jpg"]
    assert annotation.image_path.dtype.kind == "U"


def test_image_paths_of_the_wrong_length_are_refused():
    def shorten(data):
        data["table"]["image_path"]["Camera5"] = data["table"]["image_path"]["Camera5"][:-1]

    _refused_format(shorten, r"table\['image_path'\]\['Camera5'\] should have shape \(21,\), found \(20,\)")


def test_a_table_without_2d_keypoints_names_the_key():
    _refused_format(lambda data: data["table"].pop("2D_keypoints"), r"'table' lacks key\(s\) \['2D_keypoints'\]")


def test_an_empty_camera_list_is_refused():
    _refused_format(lambda data: data.__setitem__("camera_names", []), r"'camera_names' should list distinct cameras")


# -- values the output types cannot hold ------------------------------------------------------------------------


def test_keypoints_beyond_the_float32_range_are_refused_not_made_infinite():
    def huge(data):
        data["table"]["3D_keypoints"][2, 7, 1] = 1e39

    _refused_format(huge, r"table\['3D_keypoints'\] holds values beyond the float32 range")


def test_complex_keypoints_are_refused_not_cut_to_their_real_part():
    def complex_(data):
        data["table"]["3D_keypoints"] = data["table"]["3D_keypoints"] + 1j

    _refused_format(complex_, r"table\['3D_keypoints'\] should be a numeric array, found an array of complex128")


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (1e30, "should hold whole numbers"),  # integral, but beyond int64
        (np.nan, "should hold whole numbers"),
        (np.inf, "should hold whole numbers"),
    ],
)
def test_float_index_columns_that_are_no_int64_are_refused(value, match):
    def spoil(data):
        column = data["table"]["cluster_idx"].astype(np.float64)
        column[4] = value
        data["table"]["cluster_idx"] = column

    _refused_format(spoil, r"table\['cluster_idx'\] " + match)


def test_unsigned_index_columns_beyond_int64_are_refused():
    def spoil(data):
        column = data["table"]["cluster_idx"].astype(np.uint64)
        column[4] = 2**63
        data["table"]["cluster_idx"] = column

    _refused_format(spoil, r"table\['cluster_idx'\] holds values too large for an index")
    # just below: read as it is
    annotation = _load_changed(
        lambda data: data["table"].__setitem__("cluster_idx", np.full(21, 2**63 - 1, dtype=np.uint64))
    )
    assert annotation.cluster_idx.dtype == np.int64 and int(annotation.cluster_idx[0]) == 2**63 - 1


# -- hostile pickles -----------------------------------------------------------------------------------------------


def test_the_refusal_of_a_global_says_why():
    content = pickle.dumps(_Reduce(eval, ("1",)), protocol=4)
    with pytest.raises(UnsafePickleError) as error:
        safe_unpickle(io.BytesIO(content), "x.pkl")
    message = str(error.value)
    assert message.startswith(
        "x.pkl: refused to load: the pickle asks for the Python global 'builtins.eval', which could run code."
    )
    assert "Nothing in the file was executed" in message


@pytest.mark.parametrize("encoding", ["utf-16", "rot13", "utf-8"])
def test_codecs_other_than_latin1_are_refused(encoding):
    # protocols 0-2 write bytes as _codecs.encode(text, "latin1"); any other codec is not plain data
    content = pickle.dumps(_Reduce(codecs.encode, ("text", encoding)), protocol=2)
    with pytest.raises(UnsafePickleError, match="_codecs.encode with a codec other than latin1"):
        safe_unpickle(io.BytesIO(content), "x.pkl")
    plain = pickle.dumps(_Reduce(codecs.encode, ("t\xe9xt", "latin-1")), protocol=2)
    assert safe_unpickle(io.BytesIO(plain), "x.pkl") == b"t\xe9xt"


@pytest.mark.parametrize(
    ("value", "match"),
    [
        # a float64 scalar from 4 bytes: numpy would read past them
        (_Reduce(scalar, (np.dtype("f8"), b"abcd")), r"numpy scalar of float64 without exactly 8 raw bytes"),
        # an object array from raw bytes: numpy would take them for object pointers
        (_Reduce(_frombuffer, (b"\0" * 8, np.dtype("O"), (1,), "C")), r"numpy _frombuffer with arguments"),
        # _reconstruct of something other than ndarray
        (_Reduce(_reconstruct, ([], (0,), b"b")), r"numpy _reconstruct of a list \(only plain numpy.ndarray"),
        # an array state of a version numpy never writes, and one with a negative dimension
        (
            _Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (2, (1,), np.dtype("f8"), False, b"\0" * 8)),
            "numpy array state of a form numpy never writes",
        ),
        (
            _Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (1, (-1,), np.dtype("f8"), False, b"")),
            "numpy array state of a form numpy never writes",
        ),
    ],
)
def test_numpy_arguments_numpy_never_writes_are_refused(value, match):
    with pytest.raises(UnsafePickleError, match=match) as error:
        safe_unpickle(_dumps(value), "x.pkl")
    assert "Nothing refused was executed" in str(error.value)


def test_a_bytearray_announcing_a_terabyte_is_not_allocated():
    # BYTEARRAY8 (protocol 5) with a length of 2**40 and 3 bytes of data: the stock unpickler allocates
    # the announced length before reading
    content = b"\x80\x05\x96" + struct.pack("<Q", 2**40) + b"abc."
    with pytest.raises(
        AnnotationFormatError, match=r"not a readable annotation pickle \(UnpicklingError: pickle data was truncated\)"
    ):
        load_annotation(io.BytesIO(content), "x.pkl")
    assert safe_unpickle(io.BytesIO(pickle.dumps(bytearray(b"abc"), protocol=5)), "x") == bytearray(b"abc")


# -- files ---------------------------------------------------------------------------------------------------------


def test_a_folder_given_as_the_annotation_file_is_a_missing_file(tmp_path: Path):
    with pytest.raises(MissingFileError) as error:
        load_annotation(tmp_path)
    message = str(error.value)
    assert message.startswith(f"{tmp_path}: the mini-RAT7M annotation file does not exist (or is not a file).")
    assert "https://drive.google.com/file/d/1sZwwX2v0NGkT9j3I5-QCetCxCKEZk5U-/view" in message


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary(tmp_path: Path):
    fields = _fabricate()
    fields["cameras"] = {1: {1: {"Camera1": {"K": lambda: None}}}}  # cannot be pickled
    target = tmp_path / "mini_rat7m_train_test_annotation.pkl"
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        write_annotation(target, **fields)
    assert list(tmp_path.iterdir()) == []


def test_the_writer_refuses_arrays_without_a_camera_axis_and_unknown_path_keys(tmp_path: Path):
    fields = _fabricate()
    with pytest.raises(ValueError, match=r"image_path_key must be 'image_path' or 'image_paths', got 'paths'"):
        annotation_dict(image_path_key="paths", **fields)
    fields["keypoints_2d"] = fields["keypoints_2d"][:, :5]  # 5 cameras for 6 names
    with pytest.raises(ValueError, match=r"per-camera arrays need shape \(N, 6, \.\.\.\), got \(21, 5, 20, 2\)"):
        annotation_dict(**fields)
    fields = _fabricate()
    fields["frame_index"] = fields["frame_index"][:, 0]  # no camera axis at all
    with pytest.raises(ValueError, match=r"per-camera arrays need shape \(N, 6, \.\.\.\), got \(21,\)"):
        write_annotation(tmp_path / "a.pkl", **fields)
    assert list(tmp_path.iterdir()) == []


# -- camera names ------------------------------------------------------------------------------------------------


def _with_camera_names(names: list[str]):
    def rename(data):
        data["camera_names"] = np.array(names)
        for key in ("frame_idx", "image_path", "2D_keypoints", "2D_com"):
            columns = data["table"][key]
            data["table"][key] = {new: columns[old] for old, new in zip(CAMERA_NAMES, names, strict=True)}

    return rename


def test_camera_names_are_ordered_by_number_even_when_zero_padded():
    fields = _fabricate()
    names = ["Camera06", "Camera1", "Camera2", "Camera3", "Camera4", "Camera5"]  # Camera06 holds camera 1's data
    annotation = _load_changed(_with_camera_names(names))
    assert annotation.camera_names == ["Camera1", "Camera2", "Camera3", "Camera4", "Camera5", "Camera06"]
    assert annotation.camera_numbers == [1, 2, 3, 4, 5, 6]
    np.testing.assert_array_equal(annotation.frame_index[:, 5], fields["frame_index"][:, 0])
    np.testing.assert_array_equal(annotation.frame_index[:, 0], fields["frame_index"][:, 1])


def test_one_camera_under_two_spellings_is_refused():
    # "Camera1" and "Camera01" are one camera: one of the two columns would silently go unused
    names = ["Camera1", "Camera01", "Camera3", "Camera4", "Camera5", "Camera6"]
    _refused_format(
        _with_camera_names(names), r"'camera_names' should list distinct cameras, found \['Camera1', 'Camera01'"
    )
