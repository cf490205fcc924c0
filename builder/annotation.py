"""Read (and, for the fabricator, write) the mini-RAT7M annotation pickle without running its code.

The benchmark subset ships as ``mini_rat7m_train_test_annotation.pkl`` (older name
``rat7m_train_test_annotation.pkl``) on Google Drive. Loading it with `pickle` or
``np.load(allow_pickle=True)`` would execute whatever callables the file names. `load_annotation`
uses a restricted unpickler instead: it resolves only the handful of globals that numpy arrays,
dtypes and scalars need (wrapped so that they build data and nothing else) plus a few harmless
builtins, and refuses every other global (``os.system``, ``builtins.eval``, ``subprocess``, ``posix``,
``functools.partial``, pandas objects …) with `UnsafePickleError` *before* anything is called.

Admitting numpy's globals is not enough on its own: numpy's ``dtype.__setstate__`` trusts the flags,
fields and sizes a pickle gives it, so a crafted dtype state can make numpy read object pointers or
read past a buffer (memory corruption without any "global"). The reader therefore runs on pickle's
pure-Python unpickler with the BUILD opcode checked: only simple, self-consistent dtypes (no
structured or sub-array dtypes, which the annotation does not use), arrays whose data are exactly the
declared size, and nothing else may have their state set. Reading the full 112,730-sample file this
way takes a couple of seconds.

The file's structure (from the RAT7M helper repository's README; see ``shared/RAT7M.md``)::

    {
        "cameras": {subject: {day: {"Camera1": {MATLAB camera fields}, ...}}},
        "camera_names": array(["Camera1", ..., "Camera6"]),
        "table": {
            "subject_idx": (N,), "day_idx": (N,), "train_test": (N,) "train"/"test" (optional),
            "cluster_idx": (N,) (optional),
            "frame_idx": {camera_name: (N,)},
            "image_path" or "image_paths": {camera_name: (N,) str} (optional),
            "2D_keypoints": {camera_name: (N, 20, 2)},
            "2D_com": {camera_name: (N, 2)} (optional),
            "3D_keypoints": (N, 20, 3),
        },
    }

No ``datasets`` import, no network; the only I/O is reading/writing the one file.
"""

from __future__ import annotations

import codecs
import importlib
import io
import math
import os
import pickle
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import AnnotationFormatError, MissingFileError, UnsafePickleError
from .manifest import CAMERAS, NUM_MARKERS, RECORDINGS, split_of

#: Names the annotation file has been published under, newest first.
ANNOTATION_FILE_NAMES: tuple[str, ...] = (
    "mini_rat7m_train_test_annotation.pkl",
    "rat7m_train_test_annotation.pkl",
)
#: Where the current annotation file is published (Google Drive; not part of the figshare record).
ANNOTATION_URL = "https://drive.google.com/file/d/1sZwwX2v0NGkT9j3I5-QCetCxCKEZk5U-/view"
#: Google Drive file ids of the current and the older (no s5-d2) version.
ANNOTATION_DRIVE_IDS: tuple[str, ...] = ("1sZwwX2v0NGkT9j3I5-QCetCxCKEZk5U-", "1oNctPQ8wDI-gjo7tvEI7Sip1HTBkd18a")

_FIX = f"Re-download {ANNOTATION_FILE_NAMES[0]} from {ANNOTATION_URL}."
_CAMERA_NAME_RE = re.compile(r"^Camera(\d+)$")
_SPLITS = ("train", "test")


# --------------------------------------------------------------------------------------------------
# The parsed annotation


@dataclass(frozen=True, eq=False)
class MiniAnnotation:
    """The content of a mini-RAT7M annotation pickle, validated and in fixed layouts.

    Camera axes follow `camera_names`, which is sorted by camera number (Camera1 … Camera6) whatever
    the order in the file. Sample order is the file's.

    Attributes:
        source: the file's name or path, used in error messages.
        camera_names: ``["Camera1", ..., "Camera6"]``, sorted by number.
        cameras: the file's raw ``cameras`` dict, ``subject → day → camera name → {field: array}``,
            keys exactly as stored (use `camera_parameters` to look one up by 1-based subject and
            day). The field names are whatever the file used: the .mat's ``rotationMatrix`` /
            ``translationVector`` or the helper script's ``RotationMatrix`` / ``TranslationVector``.
        subject: (N,) int64 subject number 1–5.
        day: (N,) int64 recording day 1–2. ``(subject, day)`` is always one of `RECORDINGS`.
        split: (N,) str, ``"train"`` or ``"test"``: the file's ``train_test`` column, or, for files
            without it, ``"test"`` for subject 5 and ``"train"`` otherwise.
        frame_index: (N, C) int64 0-based global video frame index of each camera.
        image_path: (N, C) str relative image paths (``image_path`` or older ``image_paths``), or
            None when the file has neither.
        keypoints_2d: (N, C, 20, 2) float32 pixel coordinates **as stored** in the file (whether they
            are 0- or 1-based is not known; the ``mini`` config documents what it publishes).
        com_2d: (N, C, 2) float32 2D centre of mass as stored, or None when the file has no ``2D_com``.
        keypoints_3d: (N, 20, 3) float32 world coordinates in mm, NaN kept as stored.
        cluster_idx: (N,) int64 behaviour cluster index, or None when absent.
        subject_base: 1 when the file's ``subject_idx`` is 1-based (the documented convention), 0 when
            it held a 0 and was shifted by +1 to make `subject`.
        day_base: the same for ``day_idx``.
    """

    source: str
    camera_names: list[str]
    cameras: dict[Any, Any]
    subject: np.ndarray
    day: np.ndarray
    split: np.ndarray
    frame_index: np.ndarray
    image_path: np.ndarray | None
    keypoints_2d: np.ndarray
    com_2d: np.ndarray | None
    keypoints_3d: np.ndarray
    cluster_idx: np.ndarray | None
    subject_base: int = 1
    day_base: int = 1

    @property
    def num_samples(self) -> int:
        return int(self.subject.shape[0])

    @property
    def camera_numbers(self) -> list[int]:
        """Camera numbers (1–6) along the camera axis."""
        return [_camera_number(name) for name in self.camera_names]

    @property
    def recording(self) -> np.ndarray:
        """(N,) str: each sample's recording, ``"s{subject}-d{day}"``."""
        out = np.empty(self.num_samples, dtype="<U5")
        for subject, day in set(zip(self.subject.tolist(), self.day.tolist(), strict=True)):
            out[(self.subject == subject) & (self.day == day)] = f"s{subject}-d{day}"
        return out

    @property
    def recordings(self) -> list[str]:
        """The recordings that have samples, in `RECORDINGS` order."""
        present = set(self.recording.tolist())
        return [recording for recording in RECORDINGS if recording in present]

    def indices(self, split: str | None = None, recording: str | None = None) -> np.ndarray:
        """(K,) int64 sample indices (file order) of a split and/or recording; all samples for None."""
        keep = np.ones(self.num_samples, dtype=bool)
        if split is not None:
            if split not in _SPLITS:
                raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
            keep &= self.split == split
        if recording is not None:
            keep &= self.recording == recording
        return np.flatnonzero(keep)

    def camera_parameters(self, subject: int, day: int, camera_name: str) -> dict[Any, Any]:
        """The raw camera field dict ``cameras[subject][day][camera_name]`` (1-based subject and day).

        Raises:
            AnnotationFormatError: the file has no such entry or it is not a dict.
        """
        path = f"cameras[{subject}][{day}][{camera_name!r}]"
        by_day = _lookup(self.cameras, subject - 1 + self.subject_base, self.source, path)
        by_camera = _lookup(by_day, day - 1 + self.day_base, self.source, path)
        fields = _lookup(by_camera, camera_name, self.source, path)
        if not isinstance(fields, Mapping):
            raise AnnotationFormatError(
                f"{self.source}: {path} should be a dict of camera fields, found {_describe(fields)}. {_FIX}"
            )
        return dict(fields)


def _lookup(mapping: Any, key: Any, source: str, path: str) -> Any:
    if not isinstance(mapping, Mapping):
        raise AnnotationFormatError(f"{source}: {path}: expected a dict, found {_describe(mapping)}. {_FIX}")
    for candidate in (key, str(key)):
        if candidate in mapping:
            return mapping[candidate]
    keys = [_truncate(str(k), 40) for k in list(mapping)[:10]]
    raise AnnotationFormatError(f"{source}: {path}: no key {key!r} (keys: {keys}). {_FIX}")


# --------------------------------------------------------------------------------------------------
# Restricted unpickling


class _NdarrayToken:
    """Stands in for ``numpy.ndarray`` inside the pickle: accepted by `_safe_reconstruct`, not callable."""

    def __repr__(self) -> str:
        return "<numpy.ndarray (restricted)>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _Refused("numpy.ndarray called directly (numpy pickles never do; it would allocate)")


_NDARRAY = _NdarrayToken()


def _numpy_function(name: str) -> Any:
    """``numpy._core.<module>.<name>`` on numpy 2, ``numpy.core.<module>.<name>`` on numpy 1."""
    module, _, attribute = name.rpartition(".")
    for package in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{package}.{module}"), attribute)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy has no {name}")  # pragma: no cover - every numpy >= 1.26 has them


_reconstruct = _numpy_function("multiarray._reconstruct")
_scalar = _numpy_function("multiarray.scalar")
_frombuffer = _numpy_function("numeric._frombuffer")

# What numpy's own ``dtype.__reduce__`` passes: a bare type code ("f8", "U7", "O8", "M8", "b1", "S3");
# byte order, units etc. come through __setstate__. Void codes ("V16") are how structured and
# sub-array dtypes travel; those are refused (see `_RestrictedUnpickler._build_dtype`).
_DTYPE_CODE_RE = re.compile(r"^[A-UW-Za-z]{1,2}[0-9]{0,12}$")


class _Refused(Exception):
    """Raised by the argument checks of the restricted unpickler; becomes `UnsafePickleError`."""


def _safe_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    # ndarray.__reduce__ always emits _reconstruct(ndarray, (0,), b"b"); the data come via BUILD.
    if subtype is not _NDARRAY:
        raise _Refused(f"numpy _reconstruct of {_describe(subtype)} (only plain numpy.ndarray is admitted)")
    if not (isinstance(shape, tuple) and shape == (0,)) or dtype not in (b"b", "b"):
        raise _Refused("numpy _reconstruct with arguments numpy never writes")
    return _reconstruct(np.ndarray, (0,), dtype)


def _safe_dtype(code: Any, align: Any = False, copy: Any = True) -> np.dtype:
    if not isinstance(code, str) or not _DTYPE_CODE_RE.match(code):
        raise _Refused(f"numpy.dtype({_describe(code)}) (only numpy's own simple type codes are admitted)")
    if not isinstance(align, bool) or not isinstance(copy, bool):
        raise _Refused("numpy.dtype with non-boolean flags")
    # Always a fresh copy: with copy=False numpy hands out its global singleton (e.g. *the* float64
    # dtype), which a later BUILD opcode would then modify for the whole process.
    return np.dtype(code, align=align, copy=True)


def _safe_scalar(dtype: Any, *data: Any) -> Any:
    if not isinstance(dtype, np.dtype) or len(data) != 1:
        raise _Refused("numpy scalar with arguments numpy never writes")
    if dtype.hasobject:  # numpy returns the (already unpickled, restricted) object itself
        return _scalar(dtype, data[0])
    raw = data[0]
    if not isinstance(raw, (bytes, str)) or len(raw) != dtype.itemsize:  # str: Python 2 pickles (latin1)
        raise _Refused(f"numpy scalar of {dtype} without exactly {dtype.itemsize} raw bytes")
    return _scalar(dtype, raw)


def _safe_frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if (
        not isinstance(buffer, (bytes, bytearray, pickle.PickleBuffer))
        or not isinstance(dtype, np.dtype)
        or dtype.hasobject
        or not _is_shape(shape)
        or order not in ("C", "F", "A", "K")
    ):
        raise _Refused("numpy _frombuffer with arguments numpy never writes")
    return _frombuffer(buffer, dtype, shape, order)


def _safe_bytearray(*args: Any) -> bytearray:
    # bytearray(n) would allocate n bytes; pickles only ever pass nothing or the content.
    if len(args) > 2 or (args and not isinstance(args[0], (bytes, str, list))):
        raise _Refused("builtins.bytearray with arguments pickle never writes")
    return bytearray(*args)


def _safe_bytes(*args: Any) -> bytes:
    # Protocols 0-2 write b"" as bytes(); bytes(n) would allocate n bytes.
    if args:
        raise _Refused("builtins.bytes with arguments pickle never writes")
    return b""


def _safe_codecs_encode(text: Any, encoding: Any = "latin1") -> bytes:
    # Protocol 0-2 pickles write bytes as _codecs.encode(str, "latin1"); no other codec is admitted.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs.encode with a codec other than latin1")
    return codecs.encode(text, "latin1")


def _is_shape(shape: Any) -> bool:
    return isinstance(shape, tuple) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)


_NUMPY_PACKAGES = ("numpy.core", "numpy._core")  # numpy 1.x and 2.x spell the module differently
#: (module, name) → the object the restricted unpickler hands out for that global. These are all
#: the globals numpy (1.x and 2.x) pickles of arrays, dtypes and scalars reference, and the builtins
#: protocols 0-5 use for sets, bytes, bytearrays and complex numbers.
_ADMITTED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _safe_dtype,
    **{(f"{package}.multiarray", "_reconstruct"): _safe_reconstruct for package in _NUMPY_PACKAGES},
    **{(f"{package}.multiarray", "scalar"): _safe_scalar for package in _NUMPY_PACKAGES},
    **{(f"{package}.numeric", "_frombuffer"): _safe_frombuffer for package in _NUMPY_PACKAGES},
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): _safe_bytearray,
    ("builtins", "bytes"): _safe_bytes,
    ("_codecs", "encode"): _safe_codecs_encode,
}
#: Python 2 module names, as protocol 0-2 pickles spell them.
_PY2_MODULES = {"__builtin__": "builtins"}


class _RestrictedUnpickler(pickle._Unpickler):
    """Pickle's pure-Python unpickler with an allow-list of globals and a checked BUILD opcode.

    The pure-Python implementation (``pickle._Unpickler``, part of the standard library for all of
    Python 3) is used rather than the C one because the BUILD opcode must be intercepted: numpy's
    ``dtype.__setstate__`` trusts the flags and fields it is given, so a crafted state can declare an
    object field (or an object dtype) "free of objects" and make numpy read object pointers from raw
    file bytes, which is memory corruption, not merely a wrong value. BUILD is therefore admitted only
    on numpy dtypes (simple, self-consistent ones) and arrays (with data of exactly the right size).
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: IO[bytes], source: str) -> None:
        # latin1 is what numpy recommends for Python 2 pickles of arrays; Python 3 pickles ignore it.
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        admitted = _ADMITTED.get((module, name))
        if admitted is not None:
            return admitted
        global_name = _truncate(f"{module}.{name}")
        if module == "pandas" or module.startswith("pandas."):
            raise UnsafePickleError(
                f"{self._source}: refused to load: the pickle holds a pandas object ({global_name!r}). "
                "Unpickling pandas objects can run arbitrary code, and the annotation is a plain dict "
                "of numpy arrays, so pandas pickles are not read. Nothing in the file was executed. "
                f"{_FIX}"
            )
        raise UnsafePickleError(
            f"{self._source}: refused to load: the pickle asks for the Python global {global_name!r}, "
            "which could run code. Only numpy arrays, dtypes and scalars, dicts, lists, tuples, sets, "
            "strings and numbers are admitted. Nothing in the file was executed. Use the annotation "
            f"file as published: {_FIX}"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("persistent ids (plain data never uses them)")

    def load_build(self) -> None:
        state = self.stack.pop()
        instance = self.stack[-1]
        if type(instance) is np.dtype or isinstance(instance, np.dtype):
            self._build_dtype(instance, state)
        elif type(instance) is np.ndarray:
            self._build_array(instance, state)
        else:
            raise _Refused(f"BUILD (setting the state) of {_describe(instance)}")

    dispatch[pickle.BUILD[0]] = load_build

    def load_bytearray8(self) -> None:
        # The stock version allocates (and zero-fills) the announced length before reading.
        (size,) = struct.unpack("<Q", self.read(8))
        data = self.read(size)
        if len(data) != size:
            raise pickle.UnpicklingError("pickle data was truncated")
        self.append(bytearray(data))

    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8

    @staticmethod
    def _build_dtype(dtype: np.dtype, state: Any) -> None:
        # Try the state on a fresh copy first. (``np.dtype(dtype, copy=True)`` may return ``dtype``
        # itself, and ``np.dtype("<f8")`` without copy is numpy's global float64: neither will do.)
        probe = np.dtype(dtype.str, copy=True)
        if probe is dtype or probe is np.dtype(dtype.str):
            raise _Refused("a numpy dtype that cannot be checked safely")  # pragma: no cover
        probe.__setstate__(state)
        if probe.names is not None or probe.fields is not None or probe.subdtype is not None:
            raise _Refused("a structured or sub-array numpy dtype (not used by the annotation)")
        reference = np.dtype(probe.str)
        if (
            reference != probe
            or reference.flags != probe.flags
            or reference.itemsize != probe.itemsize
            or reference.alignment != probe.alignment
            or probe.itemsize != dtype.itemsize
        ):
            raise _Refused(f"numpy dtype state inconsistent with its type {probe.str!r}")
        dtype.__setstate__(state)

    @staticmethod
    def _build_array(array: np.ndarray, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused("numpy array state of a form numpy never writes")
        shape, dtype, fortran, data = state[-4:]
        if (
            not _is_shape(shape)
            or not isinstance(dtype, np.dtype)
            or not isinstance(fortran, bool)
            or (len(state) == 5 and state[0] != 1)
        ):
            raise _Refused("numpy array state of a form numpy never writes")
        count = math.prod(shape)
        if dtype.hasobject:
            if not isinstance(data, list) or len(data) != count:
                raise _Refused(f"numpy object array of {count} items without a list of {count} items")
        elif not isinstance(data, (bytes, str)) or len(data) != count * dtype.itemsize:
            raise _Refused(f"numpy array of {count} × {dtype.itemsize} bytes without exactly that much data")
        array.__setstate__(state)


def safe_unpickle(file: IO[bytes], source: str) -> Any:
    """Unpickle plain data: numpy arrays/dtypes/scalars, dicts, lists, tuples, sets, strings, numbers.

    Args:
        file: binary file object positioned at the start of the pickle.
        source: the file's name, used in error messages.

    Raises:
        UnsafePickleError: the pickle names any other global, or passes numpy arguments numpy never
            writes (nothing refused is ever called).
        AnnotationFormatError: the bytes are not a readable pickle.
    """
    try:
        return _RestrictedUnpickler(file, source).load()
    except UnsafePickleError:
        raise
    except _Refused as error:
        raise UnsafePickleError(
            f"{source}: refused to load: the pickle uses {error}. Nothing refused was executed. {_FIX}"
        ) from None
    except Exception as error:  # the unpickler raises many types on truncated or foreign bytes
        raise AnnotationFormatError(
            f"{source}: not a readable annotation pickle ({type(error).__name__}: {_truncate(str(error))}). "
            f"The file is truncated or is not the mini-RAT7M annotation. {_FIX}"
        ) from None


# --------------------------------------------------------------------------------------------------
# Loading


def load_annotation(file_or_path: str | os.PathLike[str] | IO[bytes], source: str | None = None) -> MiniAnnotation:
    """Read and validate a mini-RAT7M annotation pickle without executing anything from it.

    Args:
        file_or_path: a path, or a binary file object positioned at the start of the pickle.
        source: name used in error messages; defaults to the path (or the file object's ``name``).

    Returns:
        The validated `MiniAnnotation`.

    Raises:
        MissingFileError: ``file_or_path`` is a path that does not exist.
        UnsafePickleError: the pickle asks for anything but plain data (nothing is executed).
        AnnotationFormatError: not a pickle, or not the annotation structure (the message names the
            key and what was found).

    Conventions:
        ``subject_idx`` and ``day_idx`` are documented as 1-based (subjects 1–5, days 1–2; the
        ``cameras`` dict is indexed the same way). Each column is checked on its own: if it holds a
        0 it is taken as 0-based and 1 is added (recorded in ``subject_base`` / ``day_base``). The
        resulting ``(subject, day)`` pairs must all name recordings in `RECORDINGS`.
    """
    if isinstance(file_or_path, (str, os.PathLike)):
        path = Path(file_or_path)
        name = source or str(path)
        if not path.is_file():
            raise MissingFileError(
                f"{name}: the mini-RAT7M annotation file does not exist (or is not a file). Download "
                f"{ANNOTATION_FILE_NAMES[0]} from {ANNOTATION_URL} and give its path."
            )
        with open(path, "rb") as file:
            return _load_open(file, name)
    name = source or str(getattr(file_or_path, "name", "<annotation file>"))
    return _load_open(file_or_path, name)


def _load_open(file: IO[bytes], source: str) -> MiniAnnotation:
    if not (hasattr(file, "seekable") and file.seekable()):
        file = io.BytesIO(file.read())
    start = file.tell()
    head = file.read(8)
    file.seek(start)
    if head.startswith(b"\x93NUMPY"):
        raise AnnotationFormatError(f"{source}: this is a .npy file, not the annotation pickle. {_FIX}")
    if head.startswith(b"PK\x03\x04"):
        raise AnnotationFormatError(f"{source}: this is a zip archive (.npz?), not the annotation pickle. {_FIX}")
    return parse_annotation(safe_unpickle(file, source), source)


def parse_annotation(data: Any, source: str) -> MiniAnnotation:
    """Validate an already unpickled annotation dict and build a `MiniAnnotation`.

    Raises:
        AnnotationFormatError: naming the missing key or the wrong type / shape found.
    """
    if not isinstance(data, Mapping):
        raise AnnotationFormatError(
            f"{source}: the pickle holds {_describe(data)}; the annotation is a dict with keys "
            f"'cameras', 'camera_names' and 'table'. {_FIX}"
        )
    top = _require(data, ("cameras", "camera_names", "table"), source, "the top level")
    cameras = top["cameras"]
    if not isinstance(cameras, Mapping):
        raise AnnotationFormatError(f"{source}: 'cameras' should be a dict, found {_describe(cameras)}. {_FIX}")
    camera_names = _parse_camera_names(top["camera_names"], source)
    table = top["table"]
    if not isinstance(table, Mapping):
        raise AnnotationFormatError(f"{source}: 'table' should be a dict, found {_describe(table)}. {_FIX}")
    columns = _require(
        table, ("subject_idx", "day_idx", "frame_idx", "2D_keypoints", "3D_keypoints"), source, "'table'"
    )

    subject, subject_base = _parse_index(columns["subject_idx"], source, "table['subject_idx']")
    num = subject.shape[0]
    day, day_base = _parse_index(columns["day_idx"], source, "table['day_idx']", num)
    pairs = set(zip(subject.tolist(), day.tolist(), strict=True))
    unknown = sorted(f"s{s}-d{d}" for s, d in pairs if f"s{s}-d{d}" not in RECORDINGS)
    if unknown:
        raise AnnotationFormatError(
            f"{source}: table['subject_idx'] / table['day_idx'] name recording(s) {unknown[:5]} that RAT7M "
            f"does not have (recordings: {', '.join(RECORDINGS)}). {_FIX}"
        )
    recording_of = {(s, d): f"s{s}-d{d}" for s, d in pairs}

    if _get(table, "train_test") is not None:
        split = _parse_split(_get(table, "train_test"), source, num)
    else:  # the older file: split by animal
        split = np.empty(num, dtype="<U5")
        for pair, recording in recording_of.items():
            split[(subject == pair[0]) & (day == pair[1])] = split_of(recording)

    frame_index = np.stack(
        [
            _integers(column, source, f"table['frame_idx'][{name!r}]", num)
            for name, column in _per_camera(table, "frame_idx", camera_names, source)
        ],
        axis=1,
    )
    if (frame_index < 0).any():
        raise AnnotationFormatError(f"{source}: table['frame_idx'] holds negative frame indices. {_FIX}")

    image_key = "image_path" if _get(table, "image_path") is not None else "image_paths"
    image_path = None
    if _get(table, image_key) is not None:
        image_path = np.stack(
            [
                _strings(column, source, f"table[{image_key!r}][{name!r}]", num)
                for name, column in _per_camera(table, image_key, camera_names, source)
            ],
            axis=1,
        )

    keypoints_2d = np.stack(
        [
            _floats(column, source, f"table['2D_keypoints'][{name!r}]", (num, NUM_MARKERS, 2))
            for name, column in _per_camera(table, "2D_keypoints", camera_names, source)
        ],
        axis=1,
    )
    com_2d = None
    if _get(table, "2D_com") is not None:
        com_2d = np.stack(
            [
                _floats(column, source, f"table['2D_com'][{name!r}]", (num, 2), squeezable=True)
                for name, column in _per_camera(table, "2D_com", camera_names, source)
            ],
            axis=1,
        )
    keypoints_3d = _floats(table["3D_keypoints"], source, "table['3D_keypoints']", (num, NUM_MARKERS, 3))
    cluster_idx = None
    if _get(table, "cluster_idx") is not None:
        cluster_idx = _integers(table["cluster_idx"], source, "table['cluster_idx']", num)

    return MiniAnnotation(
        source=source,
        camera_names=camera_names,
        cameras=dict(cameras),
        subject=subject,
        day=day,
        split=split,
        frame_index=frame_index,
        image_path=image_path,
        keypoints_2d=keypoints_2d,
        com_2d=com_2d,
        keypoints_3d=keypoints_3d,
        cluster_idx=cluster_idx,
        subject_base=subject_base,
        day_base=day_base,
    )


def _get(mapping: Mapping[Any, Any], key: str) -> Any:
    return mapping[key] if key in mapping else None


def _require(mapping: Mapping[Any, Any], keys: tuple[str, ...], source: str, where: str) -> Mapping[Any, Any]:
    missing = [key for key in keys if key not in mapping]
    if missing:
        found = sorted(_truncate(str(key), 40) for key in list(mapping)[:20])
        raise AnnotationFormatError(
            f"{source}: {where} lacks key(s) {missing}; found {found}. This is not the mini-RAT7M "
            f"annotation, or it is damaged. {_FIX}"
        )
    return mapping


def _camera_number(name: str) -> int:
    match = _CAMERA_NAME_RE.match(name)
    assert match is not None  # checked by _parse_camera_names
    return int(match.group(1))


def _parse_camera_names(value: Any, source: str) -> list[str]:
    if isinstance(value, np.ndarray) and value.dtype.kind in "USO":
        items = value.reshape(-1).tolist()
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise AnnotationFormatError(
            f"{source}: 'camera_names' should be an array or list of names like 'Camera1', found "
            f"{_describe(value)}. {_FIX}"
        )
    names = []
    for item in items:
        text = item.decode("latin1") if isinstance(item, bytes) else item
        match = _CAMERA_NAME_RE.match(text) if isinstance(text, str) else None
        if match is None or int(match.group(1)) not in CAMERAS:
            raise AnnotationFormatError(
                f"{source}: 'camera_names' holds {_describe(item)}; expected names Camera1 … Camera6. {_FIX}"
            )
        names.append(str(text))
    # distinct by number: "Camera1" and "Camera01" name one camera, whose second column would go unused
    if not names or len({_camera_number(name) for name in names}) != len(names):
        raise AnnotationFormatError(
            f"{source}: 'camera_names' should list distinct cameras, found {names[:10]}. {_FIX}"
        )
    return sorted(names, key=_camera_number)


def _per_camera(table: Mapping[Any, Any], key: str, camera_names: list[str], source: str) -> list[tuple[str, Any]]:
    value = table[key]
    if not isinstance(value, Mapping):
        raise AnnotationFormatError(
            f"{source}: table[{key!r}] should be a dict keyed by camera name, found {_describe(value)}. {_FIX}"
        )
    missing = [name for name in camera_names if name not in value]
    if missing:
        raise AnnotationFormatError(
            f"{source}: table[{key!r}] lacks camera(s) {missing} (keys: "
            f"{sorted(_truncate(str(k), 40) for k in list(value)[:10])}). {_FIX}"
        )
    return [(name, value[name]) for name in camera_names]


def _numeric(value: Any, source: str, field: str, one_dimensional: bool) -> np.ndarray:
    """A numeric ndarray (or, for 1-D columns, a flat list/tuple of numbers) as an array."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise AnnotationFormatError(
                f"{source}: {field} should be a numeric array, found an array of {value.dtype}. {_FIX}"
            )
        return value
    if (
        one_dimensional
        and isinstance(value, (list, tuple))
        and all(isinstance(item, (int, float, np.integer, np.floating)) for item in value)
    ):
        try:
            return np.asarray(value, dtype=np.float64)
        except (OverflowError, ValueError, TypeError) as error:
            raise AnnotationFormatError(f"{source}: {field}: {error}. {_FIX}") from None
    raise AnnotationFormatError(f"{source}: {field} should be a numeric array, found {_describe(value)}. {_FIX}")


def _integers(value: Any, source: str, field: str, num: int | None) -> np.ndarray:
    array = _numeric(value, source, field, one_dimensional=True)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1 or (num is not None and array.shape[0] != num):
        expected = "(N,)" if num is None else f"({num},) (one per sample)"
        raise AnnotationFormatError(f"{source}: {field} should have shape {expected}, found {array.shape}. {_FIX}")
    if array.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            integral = np.isfinite(array) & (array == np.round(array)) & (np.abs(array) < 2**62)
        if not integral.all():
            raise AnnotationFormatError(f"{source}: {field} should hold whole numbers. {_FIX}")
    elif array.dtype.kind == "u" and array.size and int(array.max()) >= 2**63:
        raise AnnotationFormatError(f"{source}: {field} holds values too large for an index. {_FIX}")
    return array.astype(np.int64)


def _parse_index(value: Any, source: str, field: str, num: int | None = None) -> tuple[np.ndarray, int]:
    array = _integers(value, source, field, num)
    if array.size and array.min() < 0:
        raise AnnotationFormatError(f"{source}: {field} holds negative values. {_FIX}")
    if array.size and array.min() == 0:  # 0-based: see load_annotation's docstring
        return array + 1, 0
    return array, 1


def _floats(value: Any, source: str, field: str, shape: tuple[int, ...], squeezable: bool = False) -> np.ndarray:
    array = _numeric(value, source, field, one_dimensional=False)
    if squeezable and array.shape != shape and array.size == int(np.prod(shape)) and array.shape[:1] == shape[:1]:
        array = array.reshape(shape)
    if array.shape != shape:
        raise AnnotationFormatError(f"{source}: {field} should have shape {shape}, found {array.shape}. {_FIX}")
    with np.errstate(over="ignore"):
        result = array.astype(np.float32)
    if array.dtype.kind == "f" and (np.isinf(result) & np.isfinite(array)).any():
        raise AnnotationFormatError(f"{source}: {field} holds values beyond the float32 range. {_FIX}")
    return result


def _strings(value: Any, source: str, field: str, num: int) -> np.ndarray:
    if isinstance(value, np.ndarray) and value.dtype.kind in "US":
        array = value
    elif (isinstance(value, np.ndarray) and value.dtype.kind == "O") or isinstance(value, (list, tuple)):
        items = value.tolist() if isinstance(value, np.ndarray) else list(value)
        if not all(isinstance(item, (str, bytes)) for item in items):
            raise AnnotationFormatError(f"{source}: {field} should hold strings only. {_FIX}")
        array = np.array([item.decode("latin1") if isinstance(item, bytes) else item for item in items])
    else:
        raise AnnotationFormatError(
            f"{source}: {field} should be an array of strings, found {_describe(value)}. {_FIX}"
        )
    if array.shape != (num,):
        raise AnnotationFormatError(f"{source}: {field} should have shape ({num},), found {array.shape}. {_FIX}")
    if array.dtype.kind == "S":
        array = np.char.decode(array, "latin1")
    return array.astype(str)


def _parse_split(value: Any, source: str, num: int) -> np.ndarray:
    field = "table['train_test']"
    array = _strings(value, source, field, num)
    bad = sorted(set(np.unique(array).tolist()) - set(_SPLITS))
    if bad:
        raise AnnotationFormatError(
            f"{source}: {field} should hold 'train' or 'test', found {[_truncate(b) for b in bad[:5]]}. {_FIX}"
        )
    return array.astype("<U5")


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of {value.dtype} with shape {value.shape}"
    if isinstance(value, (str, bytes)):
        return f"{type(value).__name__} {_truncate(repr(value))}"
    if isinstance(value, (int, float, complex, bool)) or value is None:
        return f"{type(value).__name__} {_truncate(repr(value))}"
    return f"a {type(value).__name__}"


def _truncate(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------------
# Writing (used by the sample fabricator)


def annotation_dict(
    *,
    camera_names: list[str],
    cameras: Mapping[Any, Any],
    subject: Any,
    day: Any,
    frame_index: Any,
    keypoints_2d: Any,
    keypoints_3d: Any,
    split: Any = None,
    image_path: Any = None,
    com_2d: Any = None,
    cluster_idx: Any = None,
    image_path_key: str = "image_path",
) -> dict[str, Any]:
    """Build the published annotation structure (a dict of numpy arrays) from per-sample arrays.

    Args:
        camera_names: e.g. ``["Camera1", ..., "Camera6"]``; the camera axis of the arrays below.
        cameras: ``subject → day → camera name → {field: array}`` (1-based subject and day).
        subject, day: (N,) 1-based subject and day numbers.
        frame_index: (N, C) 0-based global video frame index per camera.
        keypoints_2d: (N, C, 20, 2) pixel coordinates.
        keypoints_3d: (N, 20, 3) world coordinates in mm.
        split: (N,) ``"train"``/``"test"``, or None to leave ``train_test`` out (as the older file).
        image_path: (N, C) relative image paths, or None to leave them out.
        com_2d: (N, C, 2) 2D centre of mass, or None to leave ``2D_com`` out.
        cluster_idx: (N,) ints, or None to leave it out.
        image_path_key: ``"image_path"`` (current file) or ``"image_paths"`` (older file).

    Returns:
        ``{"cameras": ..., "camera_names": ndarray, "table": {...}}`` with per-camera columns keyed by
        camera name, as in the published pickle.
    """
    if image_path_key not in ("image_path", "image_paths"):
        raise ValueError(f"image_path_key must be 'image_path' or 'image_paths', got {image_path_key!r}.")
    names = [str(name) for name in camera_names]

    def per_camera(values: Any) -> dict[str, np.ndarray]:
        array = np.asarray(values)
        if array.ndim < 2 or array.shape[1] != len(names):
            raise ValueError(f"per-camera arrays need shape (N, {len(names)}, ...), got {array.shape}.")
        return {name: np.ascontiguousarray(array[:, i]) for i, name in enumerate(names)}

    table: dict[str, Any] = {
        "subject_idx": np.asarray(subject, dtype=np.int64),
        "day_idx": np.asarray(day, dtype=np.int64),
    }
    if split is not None:
        table["train_test"] = np.asarray(split, dtype=str)
    if cluster_idx is not None:
        table["cluster_idx"] = np.asarray(cluster_idx, dtype=np.int64)
    table["frame_idx"] = per_camera(np.asarray(frame_index, dtype=np.int64))
    if image_path is not None:
        table[image_path_key] = per_camera(np.asarray(image_path, dtype=str))
    table["2D_keypoints"] = per_camera(np.asarray(keypoints_2d, dtype=np.float64))
    if com_2d is not None:
        table["2D_com"] = per_camera(np.asarray(com_2d, dtype=np.float64))
    table["3D_keypoints"] = np.asarray(keypoints_3d, dtype=np.float64)
    return {"cameras": _plain(cameras), "camera_names": np.array(names), "table": table}


def _plain(value: Any) -> Any:
    """Copy nested mappings into plain dicts (so the pickle references no other class)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return value


def write_annotation(path: str | os.PathLike[str], **columns: Any) -> Path:
    """Write a mini-RAT7M annotation pickle (plain pickle, protocol 4) with the published structure.

    Args:
        path: file to write (written under a temporary name first, then renamed into place).
        **columns: the keyword arguments of `annotation_dict` (``camera_names``, ``cameras``,
            ``subject``, ``day``, ``frame_index``, ``keypoints_2d``, ``keypoints_3d`` and the optional ones).

    Returns:
        The path written.
    """
    data = annotation_dict(**columns)
    target = Path(path)
    temporary = target.with_name(target.name + ".tmp")
    try:
        with open(temporary, "wb") as file:
            pickle.dump(data, file, protocol=4)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return target
