"""Tests of rat7m_builder.annotation: the restricted reader of the mini-RAT7M annotation pickle."""

from __future__ import annotations

import builtins
import functools
import io
import os
import pickle
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.lib.format import write_array

from rat7m_builder.annotation import (
    MiniAnnotation,
    annotation_dict,
    load_annotation,
    parse_annotation,
    safe_unpickle,
    write_annotation,
)
from rat7m_builder.errors import AnnotationFormatError, MissingFileError, UnsafePickleError
from rat7m_builder.manifest import RECORDINGS

try:  # the exact function numpy's ndarray.__reduce__ names (numpy 2: numpy._core, numpy 1: numpy.core)
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

CAMERA_NAMES = [f"Camera{number}" for number in range(1, 7)]
OWN_ERRORS = (UnsafePickleError, AnnotationFormatError)


def _camera_fields(number: int) -> dict[str, np.ndarray]:
    return {
        "IntrinsicMatrix": np.array([[1000.0 + number, 0, 0], [0, 1000.0, 0], [660.0, 524.0, 1]]),
        "rotationMatrix": np.eye(3),
        "translationVector": np.array([[0.0, 0.0, 1000.0 + number]]),
        "RadialDistortion": np.array([[-0.1, 0.05]]),
        "TangentialDistortion": np.array([[0.001, -0.001]], dtype=np.float32),
    }


def _fabricate(recordings: tuple[str, ...] = RECORDINGS, per_recording: int = 3, seed: int = 0) -> dict[str, Any]:
    """Keyword arguments of `annotation_dict` for a small annotation (1-based subject/day, as published)."""
    rng = np.random.default_rng(seed)
    pairs = [(int(r[1]), int(r[4])) for r in recordings for _ in range(per_recording)]
    n = len(pairs)
    subject = np.array([s for s, _ in pairs])
    day = np.array([d for _, d in pairs])
    frame_index = rng.integers(0, 100_000, size=(n, 6))
    cameras: dict[int, dict[int, dict[str, Any]]] = {}
    for s, d in sorted(set(pairs)):
        cameras.setdefault(s, {})[d] = {name: _camera_fields(i + 1) for i, name in enumerate(CAMERA_NAMES)}
    image_path = np.array(
        [
            [f"images_unpacked/s{s}-d{d}/camera{c}/frame_{f:06d}.jpg" for c, f in zip(range(1, 7), row, strict=True)]
            for (s, d), row in zip(pairs, frame_index, strict=True)
        ]
    )
    keypoints_3d = rng.normal(scale=50.0, size=(n, 20, 3))
    keypoints_3d[0, 5] = np.nan  # NaN markers are kept as stored
    return {
        "camera_names": CAMERA_NAMES,
        "cameras": cameras,
        "subject": subject,
        "day": day,
        "split": np.where(subject == 5, "test", "train"),
        "frame_index": frame_index,
        "image_path": image_path,
        "keypoints_2d": rng.uniform(0, 1300, size=(n, 6, 20, 2)),
        "com_2d": rng.uniform(0, 1300, size=(n, 6, 2)),
        "keypoints_3d": keypoints_3d,
        "cluster_idx": rng.integers(0, 50, size=n),
    }


def _dumps(data: Any, protocol: int = 4) -> io.BytesIO:
    return io.BytesIO(pickle.dumps(data, protocol=protocol))


def _assert_matches(annotation: MiniAnnotation, fields: dict[str, Any]) -> None:
    n = len(fields["subject"])
    assert annotation.num_samples == n
    assert annotation.camera_names == CAMERA_NAMES
    assert annotation.camera_numbers == [1, 2, 3, 4, 5, 6]
    np.testing.assert_array_equal(annotation.subject, fields["subject"])
    np.testing.assert_array_equal(annotation.day, fields["day"])
    assert annotation.subject.dtype == np.int64 and annotation.day.dtype == np.int64
    np.testing.assert_array_equal(annotation.split, np.where(fields["subject"] == 5, "test", "train"))
    np.testing.assert_array_equal(annotation.frame_index, fields["frame_index"])
    assert annotation.frame_index.dtype == np.int64 and annotation.frame_index.shape == (n, 6)
    assert annotation.keypoints_2d.dtype == np.float32 and annotation.keypoints_2d.shape == (n, 6, 20, 2)
    np.testing.assert_allclose(annotation.keypoints_2d, fields["keypoints_2d"], rtol=1e-6)
    assert annotation.keypoints_3d.dtype == np.float32 and annotation.keypoints_3d.shape == (n, 20, 3)
    np.testing.assert_allclose(annotation.keypoints_3d, fields["keypoints_3d"], rtol=1e-6)
    assert np.isnan(annotation.keypoints_3d[0, 5]).all()
    expected_recordings = [f"s{s}-d{d}" for s, d in zip(fields["subject"], fields["day"], strict=True)]
    assert annotation.recording.tolist() == expected_recordings


# ---------------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("image_path_key", ["image_path", "image_paths"])
@pytest.mark.parametrize("with_s5_d2", [True, False])
def test_round_trip(tmp_path: Path, image_path_key: str, with_s5_d2: bool) -> None:
    recordings = RECORDINGS if with_s5_d2 else tuple(r for r in RECORDINGS if r != "s5-d2")
    fields = _fabricate(recordings)
    path = write_annotation(tmp_path / "mini_rat7m_train_test_annotation.pkl", image_path_key=image_path_key, **fields)
    annotation = load_annotation(path)
    _assert_matches(annotation, fields)
    assert annotation.source == str(path)
    np.testing.assert_array_equal(annotation.image_path, fields["image_path"])
    np.testing.assert_allclose(annotation.com_2d, fields["com_2d"], rtol=1e-6)
    np.testing.assert_array_equal(annotation.cluster_idx, fields["cluster_idx"])
    assert annotation.recordings == list(recordings)
    assert annotation.indices(split="test").tolist() == np.flatnonzero(fields["subject"] == 5).tolist()
    assert len(annotation.indices(recording="s2-d2")) == 3
    fields_4_1 = annotation.camera_parameters(4, 1, "Camera3")
    np.testing.assert_array_equal(fields_4_1["IntrinsicMatrix"], _camera_fields(3)["IntrinsicMatrix"])
    assert set(annotation.cameras) == {1, 2, 3, 4, 5}
    assert (5 in annotation.cameras and 2 in annotation.cameras[5]) is with_s5_d2


def test_older_file_without_split_cluster_com_or_paths(tmp_path: Path) -> None:
    fields = _fabricate(tuple(r for r in RECORDINGS if r != "s5-d2"))
    for key in ("split", "image_path", "com_2d", "cluster_idx"):
        fields[key] = None
    annotation = load_annotation(write_annotation(tmp_path / "rat7m_train_test_annotation.pkl", **fields))
    assert annotation.image_path is None and annotation.com_2d is None and annotation.cluster_idx is None
    # Split by subject: subject 5 is the test animal.
    np.testing.assert_array_equal(annotation.split, np.where(annotation.subject == 5, "test", "train"))
    assert annotation.split.tolist().count("test") == 3


def test_file_object_and_written_structure(tmp_path: Path) -> None:
    fields = _fabricate()
    path = write_annotation(tmp_path / "a.pkl", **fields)
    raw = path.read_bytes()
    assert raw[:2] == b"\x80\x04"  # protocol 4
    data = pickle.loads(raw)  # our own trusted file
    assert set(data) == {"cameras", "camera_names", "table"}
    assert set(data["table"]) == {
        "subject_idx", "day_idx", "train_test", "cluster_idx", "frame_idx", "image_path", "2D_keypoints",
        "2D_com", "3D_keypoints",
    }  # fmt: skip
    assert set(data["table"]["2D_keypoints"]) == set(CAMERA_NAMES)
    assert data["table"]["2D_keypoints"]["Camera4"].shape == (21, 20, 2)
    with open(path, "rb") as file:
        annotation = load_annotation(file)
    assert annotation.source == str(path)
    _assert_matches(annotation, fields)
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_pickle_protocol_is_read(protocol: int) -> None:
    fields = _fabricate(per_recording=2)
    data = annotation_dict(**fields)
    data["table"]["image_path"] = {k: v.astype(object) for k, v in data["table"]["image_path"].items()}
    data["camera_names"] = list(data["camera_names"])
    annotation = load_annotation(_dumps(data, protocol), "memory")
    _assert_matches(annotation, fields)
    np.testing.assert_array_equal(annotation.image_path, fields["image_path"])


def test_plain_data_of_every_kind_is_unpickled_like_pickle_does() -> None:
    value = {
        "f4": np.zeros((2, 3), np.float32),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "strided": np.arange(6.0)[::2],
        "big_endian": np.arange(4, dtype=">i4"),
        "str": np.array(["Camera1", "x"]),
        "bytes": np.array([b"ab"]),
        "object": np.array(["a", b"b", 3], dtype=object),
        "datetime": np.array(["2020-01-01"], dtype="datetime64[D]"),
        "empty": np.zeros((0, 20, 3)),
        "scalars": (np.float64(1.5), np.int64(3), np.str_("abc"), np.bool_(True), np.uint8(7)),
        "python": [1, 2.5, 1 + 2j, "s", b"\x00\xff", b"", bytearray(b"x"), {1, 2}, frozenset(), None, True],
        "dtype": np.dtype(">f8"),
    }
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        raw = pickle.dumps(value, protocol=protocol)
        ours, reference = safe_unpickle(io.BytesIO(raw), "memory"), pickle.loads(raw)
        for key, expected in reference.items():
            if isinstance(expected, np.ndarray):
                assert type(ours[key]) is np.ndarray and ours[key].dtype == expected.dtype
                np.testing.assert_array_equal(ours[key], expected)
            else:
                assert ours[key] == expected and type(ours[key]) is type(expected)


def test_camera_order_and_zero_based_indices_are_normalised() -> None:
    fields = _fabricate()
    data = annotation_dict(**fields)
    data["camera_names"] = np.array(["Camera1", "Camera2", "Camera4", "Camera5", "Camera3", "Camera6"])
    table = data["table"]
    table["subject_idx"] = table["subject_idx"] - 1
    table["day_idx"] = table["day_idx"] - 1
    data["cameras"] = {s - 1: {d - 1: cams for d, cams in days.items()} for s, days in data["cameras"].items()}
    annotation = load_annotation(_dumps(data), "memory")
    _assert_matches(annotation, fields)  # camera axis sorted by number, indices back to 1-based
    assert (annotation.subject_base, annotation.day_base) == (0, 0)
    params = annotation.camera_parameters(5, 2, "Camera6")
    np.testing.assert_array_equal(params["translationVector"], _camera_fields(6)["translationVector"])
    with pytest.raises(AnnotationFormatError, match=r"cameras\[3\]\[2\]"):
        annotation.camera_parameters(3, 2, "Camera1")


def test_integral_float_and_list_columns_are_accepted() -> None:
    fields = _fabricate()
    data = annotation_dict(**fields)
    data["table"]["subject_idx"] = data["table"]["subject_idx"].astype(float)
    data["table"]["day_idx"] = data["table"]["day_idx"].tolist()
    data["table"]["train_test"] = [s.encode() for s in data["table"]["train_test"]]
    data["table"]["2D_com"] = {k: v[:, None, :] for k, v in data["table"]["2D_com"].items()}  # (N, 1, 2)
    annotation = load_annotation(_dumps(data), "memory")
    _assert_matches(annotation, fields)
    assert annotation.com_2d.shape == (21, 6, 2)


# ---------------------------------------------------------------------------------------------------
# Malformed files


def _malformed(mutate) -> io.BytesIO:
    data = annotation_dict(**_fabricate())
    mutate(data)
    return _dumps(data)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.pop("table"), r"lacks key\(s\) \['table'\]"),
        (lambda d: d["table"].pop("3D_keypoints"), r"'table' lacks key\(s\) \['3D_keypoints'\]"),
        (lambda d: d["table"].pop("frame_idx"), r"\['frame_idx'\]"),
        (lambda d: d["table"]["frame_idx"].pop("Camera3"), r"table\['frame_idx'\] lacks camera\(s\) \['Camera3'\]"),
        (lambda d: d["table"].__setitem__("3D_keypoints", np.zeros((21, 20, 2))), r"3D_keypoints.*\(21, 20, 3\)"),
        (lambda d: d["table"]["2D_keypoints"].__setitem__("Camera2", np.zeros((20, 20, 2))), r"Camera2.*shape"),
        (lambda d: d["table"].__setitem__("day_idx", np.ones(5)), r"day_idx.*\(21,\)"),
        (lambda d: d["table"].__setitem__("train_test", np.array(["train"] * 20 + ["val"])), r"'val'"),
        (lambda d: d["table"]["subject_idx"].__setitem__(0, 1) or d["table"]["day_idx"].__setitem__(0, 2), "s1-d2"),
        (lambda d: d["table"]["frame_idx"]["Camera1"].__setitem__(0, -4), "negative"),
        (lambda d: d["table"].__setitem__("subject_idx", np.full(21, 1.5)), "whole numbers"),
        (lambda d: d["table"].__setitem__("3D_keypoints", np.full((21, 20, 3), "x")), "numeric"),
        (lambda d: d.__setitem__("camera_names", np.array(["Camera1", "Camera7"])), "Camera7"),
        (lambda d: d.__setitem__("camera_names", ["Camera1", "Camera1"]), "distinct"),
        (lambda d: d.__setitem__("cameras", [1, 2]), "'cameras' should be a dict"),
        (lambda d: d.__setitem__("table", np.zeros(3)), "'table' should be a dict"),
        (lambda d: d["table"].__setitem__("frame_idx", np.zeros((21, 6))), r"frame_idx.*dict keyed by camera"),
        (lambda d: d["table"]["image_path"].__setitem__("Camera1", np.arange(21)), "array of strings"),
    ],
)
def test_malformed_annotations_name_the_problem(mutate, match: str) -> None:
    with pytest.raises(AnnotationFormatError, match=match) as caught:
        load_annotation(_malformed(mutate), "bad.pkl")
    assert str(caught.value).startswith("bad.pkl: ")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "not a readable annotation pickle"),
        (b"this is not a pickle", "not a readable annotation pickle"),
        (pickle.dumps([1, 2, 3]), "holds a list"),
        (pickle.dumps({"a": 1}), r"lacks key\(s\)"),
        (b"PK\x03\x04rest", "zip archive"),
    ],
)
def test_non_annotations(content: bytes, match: str) -> None:
    with pytest.raises(AnnotationFormatError, match=match):
        load_annotation(io.BytesIO(content), "x.pkl")


def test_truncated_pickle(tmp_path: Path) -> None:
    path = write_annotation(tmp_path / "a.pkl", **_fabricate())
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(AnnotationFormatError, match=rf"{path.name}.*truncated"):
        load_annotation(path)


def test_npy_file_is_not_taken_for_the_pickle() -> None:
    buffer = io.BytesIO()
    write_array(buffer, np.array(annotation_dict(**_fabricate()), dtype=object), allow_pickle=True)
    buffer.seek(0)
    with pytest.raises(AnnotationFormatError, match=r"\.npy file"):
        load_annotation(buffer, "x.npy")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="drive.google.com"):
        load_annotation(tmp_path / "nope.pkl")


def test_parse_annotation_rejects_non_dicts() -> None:
    with pytest.raises(AnnotationFormatError, match="holds an array"):
        parse_annotation(np.zeros(3), "x")


def test_non_seekable_file_object() -> None:
    fields = _fabricate()
    raw = pickle.dumps(annotation_dict(**fields), protocol=4)

    class Stream(io.RawIOBase):
        def __init__(self) -> None:
            self._inner = io.BytesIO(raw)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            data = self._inner.read(len(buffer))
            buffer[: len(data)] = data
            return len(data)

    _assert_matches(load_annotation(Stream(), "stream"), fields)


# ---------------------------------------------------------------------------------------------------
# Hostile pickles: refused, and nothing runs


class _Reduce:
    """Pickles as ``func(*args)`` (with an optional BUILD state), whatever func is."""

    def __init__(self, func: Any, args: tuple[Any, ...], state: Any = None) -> None:
        self.func, self.args, self.state = func, args, state

    def __reduce__(self) -> tuple[Any, ...]:
        if self.state is None:
            return (self.func, self.args)
        return (self.func, self.args, self.state)


def _hostile_cases(marker: Path) -> dict[str, bytes]:
    script = f"open({str(marker)!r}, 'w').write('ran')"
    return {
        "os.system": pickle.dumps(_Reduce(os.system, (f"touch {marker}",)), protocol=4),
        "os.system (protocol 0)": pickle.dumps(_Reduce(os.system, (f"touch {marker}",)), protocol=0),
        "os.system (INST opcode)": b"(V" + f"touch {marker}".encode() + b"\nios\nsystem\n.",
        "builtins.eval": pickle.dumps(_Reduce(builtins.eval, (script,)), protocol=4),
        "builtins.exec (protocol 2)": pickle.dumps(_Reduce(builtins.exec, (script,)), protocol=2),
        "subprocess.call": pickle.dumps(_Reduce(subprocess.call, (["touch", str(marker)],)), protocol=4),
        "functools.partial": pickle.dumps(_Reduce(functools.partial, (os.system, f"touch {marker}")), protocol=4),
        "builtins.getattr": pickle.dumps(_Reduce(getattr, ("text", "upper")), protocol=4),
        # Hidden deep inside an otherwise valid annotation, as a camera field:
        "nested in cameras": pickle.dumps(
            {
                **annotation_dict(**_fabricate()),
                "cameras": {1: {1: {"Camera1": {"K": _Reduce(os.system, (f"touch {marker}",))}}}},
            },
            protocol=4,
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "os.system",
        "os.system (protocol 0)",
        "os.system (INST opcode)",
        "builtins.eval",
        "builtins.exec (protocol 2)",
        "subprocess.call",
        "functools.partial",
        "builtins.getattr",
        "nested in cameras",
    ],
)
def test_hostile_pickle_is_refused_and_nothing_runs(tmp_path: Path, case: str) -> None:
    marker = tmp_path / "pwned"
    content = _hostile_cases(marker)[case]
    path = tmp_path / "mini_rat7m_train_test_annotation.pkl"
    path.write_bytes(content)
    with pytest.raises(UnsafePickleError) as caught:
        load_annotation(path)
    message = str(caught.value)
    assert str(path) in message and "Nothing in the file was executed" in message
    refused = {
        "builtins.eval": "'builtins.eval'",
        "builtins.exec (protocol 2)": "'builtins.exec'",
        "subprocess.call": "'subprocess.call'",
        "functools.partial": "'functools.partial'",
        "builtins.getattr": "'builtins.getattr'",
    }.get(case, "system'")  # os.system pickles as posix.system (or nt.system); INST names os.system
    assert refused in message
    assert not marker.exists()


def test_control_the_hostile_pickle_does_run_under_plain_pickle(tmp_path: Path) -> None:
    # Proves the refusal tests above are meaningful: plain pickle executes the same bytes.
    marker = tmp_path / "pwned"
    pickle.loads(_hostile_cases(marker)["os.system"])
    assert marker.exists()


def test_pandas_pickles_are_refused() -> None:
    content = b"\x80\x04cpandas.core.frame\nDataFrame\n)R."
    with pytest.raises(UnsafePickleError, match=r"pandas object \('pandas.core.frame.DataFrame'\)"):
        load_annotation(io.BytesIO(content), "x.pkl")


def test_numpy_globals_beyond_the_allow_list_are_refused() -> None:
    for content in (
        pickle.dumps(np.ma.array([1, 2], mask=[0, 1]), protocol=4),  # numpy.ma
        pickle.dumps(np.load, protocol=4),  # a numpy function
        pickle.dumps(_Reduce(np.ndarray, ((10**12,),)), protocol=4),  # ndarray called directly
    ):
        with pytest.raises(UnsafePickleError):
            safe_unpickle(io.BytesIO(content), "x.pkl")


def _fake_dtype(code: str, state: tuple[Any, ...], copy: bool = True) -> _Reduce:
    return _Reduce(np.dtype, (code, False, copy), state)


def _fake_array(shape: tuple[int, ...], dtype: Any, data: Any) -> _Reduce:
    return _Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (1, shape, dtype, False, data))


@pytest.mark.parametrize(
    ("value", "match"),
    [
        # Object dtype whose state claims "no objects": numpy would read pointers from the raw bytes.
        (_fake_array((1,), _fake_dtype("O8", (3, "|", None, None, None, -1, -1, 0)), b"A" * 8), "inconsistent"),
        # A float dtype given an object field by its state.
        (
            _fake_array((1,), _fake_dtype("f8", (3, "<", None, ("a",), {"a": (np.dtype("O"), 0)}, 8, 8, 63)), [0]),
            "structured",
        ),
        # Structured (void) dtypes are not admitted at all.
        (_fake_dtype("V16", (3, "|", None, None, None, 16, 1, 0)), "simple type codes"),
        # A string dtype grown by its state: existing arrays would read past their buffer.
        (_fake_array((2,), _fake_dtype("U7", (3, "<", None, None, None, 40, 4, 8)), b"\0" * 80), "inconsistent"),
        # Declared size larger than the data present.
        (_fake_array((1000,), np.dtype("f8"), b"\0" * 8), "exactly that much data"),
        (_fake_array((3,), np.dtype("O"), ["a"]), "list of 3 items"),
        # _reconstruct with a shape numpy never writes (would allocate).
        (_Reduce(_reconstruct, (np.ndarray, (10**6,), b"b")), "never writes"),
        # bytearray(n) / bytes(n) allocations.
        (_Reduce(bytearray, (10**6,)), "bytearray"),
        (_Reduce(bytes, (10**6,)), "bytes"),
        # BUILD on something that is not an array or dtype.
        (_Reduce(set, ([1],), {"x": 1}), "BUILD"),
    ],
)
def test_crafted_numpy_states_are_refused(value: Any, match: str) -> None:
    with pytest.raises(UnsafePickleError, match=match):
        safe_unpickle(_dumps(value), "x.pkl")


def test_a_pickle_cannot_modify_numpy_global_dtypes() -> None:
    # numpy.dtype("f8", copy=False) is numpy's global float64; a BUILD must never reach it.
    loaded = safe_unpickle(_dumps(_fake_dtype("f8", (3, ">", None, None, None, -1, -1, 0), copy=False)), "x")
    assert loaded.str == ">f8"
    assert np.dtype("f8").str == "<f8" and np.dtype(np.float64).byteorder == "="


def test_persistent_ids_are_refused() -> None:
    with pytest.raises(UnsafePickleError, match="persistent"):
        safe_unpickle(io.BytesIO(b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00K\x01Q."), "x")


# ---------------------------------------------------------------------------------------------------
# Properties: whatever the bytes, only rat7m's own errors come out

_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_TABLE_KEYS = [
    "subject_idx", "day_idx", "train_test", "cluster_idx", "frame_idx", "image_path", "image_paths",
    "2D_keypoints", "2D_com", "3D_keypoints",
]  # fmt: skip
_arrays = st.one_of(
    st.integers(0, 30).map(lambda n: np.arange(n) % 7),
    st.integers(0, 30).map(lambda n: np.zeros((n, 20, 2))),
    st.integers(0, 30).map(lambda n: np.ones((n, 20, 3), dtype=np.float32)),
    st.integers(0, 5).map(lambda n: np.array(["train", "test", "Camera1"] * n)),
    st.integers(0, 5).map(lambda n: np.array([None, "x", 1.5] * n, dtype=object)),
)
_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12), st.binary(max_size=12),
    st.sampled_from(["Camera1", "Camera6", "train", "test", 0, 1, 5]), _arrays,
)  # fmt: skip
_plain = st.recursive(
    _leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(
            st.one_of(st.text(max_size=8), st.sampled_from(_TABLE_KEYS + CAMERA_NAMES)), children, max_size=4
        ),
    ),
    max_leaves=20,
)
_annotation_like = st.fixed_dictionaries(
    {"cameras": _plain, "camera_names": st.one_of(_plain, st.just(CAMERA_NAMES)), "table": _plain}
) | st.fixed_dictionaries(
    {
        "cameras": st.just({}),
        "camera_names": st.just(np.array(CAMERA_NAMES)),
        "table": st.dictionaries(st.sampled_from(_TABLE_KEYS), st.one_of(_arrays, _plain), max_size=10),
    }
)


def _load_only_own_errors(content: bytes) -> None:
    try:
        result = load_annotation(io.BytesIO(content), "fuzz.pkl")
    except OWN_ERRORS:
        return
    assert isinstance(result, MiniAnnotation)


@_SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_own_errors(content: bytes) -> None:
    _load_only_own_errors(content)


@_SETTINGS
@given(st.one_of(_plain, _annotation_like), st.integers(0, pickle.HIGHEST_PROTOCOL))
def test_random_plain_structures_raise_only_own_errors(value: Any, protocol: int) -> None:
    _load_only_own_errors(pickle.dumps(value, protocol=protocol))


_VALID = pickle.dumps(annotation_dict(**_fabricate(per_recording=1)), protocol=2)


@_SETTINGS
@given(st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), min_size=1, max_size=4))
def test_corrupted_annotations_raise_only_own_errors(edits: list[tuple[int, int]]) -> None:
    content = bytearray(_VALID)
    for position, value in edits:
        content[position] = value
    _load_only_own_errors(bytes(content))


# ---------------------------------------------------------------------------------------------------
# Layouts a real file may use, and near misses


def test_cameras_keyed_by_strings_give_the_same_parameters() -> None:
    fields = _fabricate()
    data = annotation_dict(**fields)
    # e.g. a file converted from JSON or MATLAB: subject and day keys are strings ("1"), not ints
    data["cameras"] = {str(s): {str(d): cams for d, cams in days.items()} for s, days in data["cameras"].items()}
    params = load_annotation(_dumps(data), "memory").camera_parameters(5, 2, "Camera6")
    expected = load_annotation(_dumps(annotation_dict(**fields)), "memory").camera_parameters(5, 2, "Camera6")
    assert set(params) == set(expected) == set(_camera_fields(6))
    for name, value in expected.items():
        np.testing.assert_array_equal(params[name], value)


def test_index_columns_stored_as_column_vectors_are_accepted() -> None:
    fields = _fabricate()
    data = annotation_dict(**fields)
    table = data["table"]
    # MATLAB-made columns are (N, 1)
    table["subject_idx"] = table["subject_idx"][:, None]
    table["cluster_idx"] = table["cluster_idx"][:, None]
    table["frame_idx"] = {name: column[:, None] for name, column in table["frame_idx"].items()}
    annotation = load_annotation(_dumps(data), "memory")
    _assert_matches(annotation, fields)
    np.testing.assert_array_equal(annotation.cluster_idx, fields["cluster_idx"])


def test_transposed_com_is_refused_not_reshaped() -> None:
    # (2, N) holds as many numbers as (N, 2): reshaping it would pair x of one sample with x of the next
    data = annotation_dict(**_fabricate())
    data["table"]["2D_com"]["Camera2"] = data["table"]["2D_com"]["Camera2"].T.copy()
    with pytest.raises(
        AnnotationFormatError, match=r"table\['2D_com'\]\['Camera2'\] should have shape \(21, 2\), found \(2, 21\)"
    ):
        load_annotation(_dumps(data), "bad.pkl")


def test_frame_index_minus_one_is_refused() -> None:
    # -1 is a common "no frame" marker: it must not pass for a frame index
    data = annotation_dict(**_fabricate())
    data["table"]["frame_idx"]["Camera4"][3] = -1
    with pytest.raises(AnnotationFormatError, match=r"table\['frame_idx'\] holds negative frame indices"):
        load_annotation(_dumps(data), "bad.pkl")
