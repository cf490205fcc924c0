"""Parse a released ``mocap-s{S}-d{D}.mat`` file: 3D markers, per-camera frame indices, calibration.

No ``datasets`` and no file-system or network access: `read_mocap` takes an already opened binary
file object (local file, zip member or remote fsspec file alike) and `parse_mocap` takes the
variables ``scipy.io.loadmat`` returned. Every structural problem, and every value no real release
file can hold (an ``IntrinsicMatrix`` not in MATLAB's layout, a ``rotationMatrix`` that is not a
rotation, non-finite calibration, ±inf marker coordinates, a ``name`` naming another recording than
the file name), raises `MocapFormatError` naming the file, the field, what was found and what was
expected. ``scipy.io.loadmat`` itself runs in a
helper process (`_IsolatedReader`): damaged bytes can make it crash with a segmentation fault.
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import io
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import scipy.io
from scipy.io.matlab import mat_struct

from .camera import Camera, intrinsic_matrix_problem, rotation_matrix_problem
from .errors import MocapFormatError
from .manifest import CAMERAS, MARKER_NAMES, parse_mocap_name

_CAMERA_FIELD_RE = re.compile(r"^Camera(\d+)$")
#: The ``name`` variable's form, e.g. ``Subject1-Day1``; RAT7M.md lists it, so any other form is tolerated.
_NAME_RE = re.compile(r"^\s*Subject\s*(\d+)\s*-\s*Day\s*(\d+)\s*$", re.IGNORECASE)
#: Largest plausible video frame index (the release has about 200 000 frames per camera).
MAX_FRAME_INDEX = 2**31 - 1
_READ_BLOCK = 8 * 1024 * 1024
_FIX = "Re-download this file from the figshare record (article 13739233) or fix the copy."


@dataclass(frozen=True)
class MocapRecording:
    """The content of one ``mocap-*.mat`` file.

    Attributes:
        name: the file's ``name`` variable (e.g. ``"Subject1-Day1"``), or "" when absent.
        keypoints_3d: (N, 20, 3) float64 world coordinates in mm, markers in `MARKER_NAMES` order,
            NaN where a marker was not tracked (kept as released; ±inf is refused).
        frame_index: camera number → (N,) int64: for mocap sample t, the 0-based global video frame
            index of that camera. Not assumed monotonic nor free of repeats.
        cameras: camera number → `Camera` (MATLAB calibration).
    """

    name: str
    keypoints_3d: np.ndarray
    frame_index: dict[int, np.ndarray]
    cameras: dict[int, Camera]

    @property
    def num_samples(self) -> int:
        return int(self.keypoints_3d.shape[0])


def read_mocap(file: IO[bytes], source: str) -> MocapRecording:
    """Read and validate a ``mocap-*.mat`` file from an open binary file object.

    Args:
        file: binary file object; read whole from its start (seekable) or from where it is.
        source: the file's name or URL, used in error messages.

    Raises:
        MocapFormatError: unreadable, truncated, MATLAB v7.3 (HDF5), or not the released structure.
    """
    if isinstance(getattr(file, "raw", None), io.FileIO) and isinstance(file.name, str):
        # A plain local file: the reader opens it itself (no copy of ~80 MB through a pipe).
        outcome, value = _loadmat_isolated(os.path.abspath(file.name))
    else:
        if file.seekable():
            file.seek(0)
        # In blocks: a remote file (fsspec) then reads by HTTP Range requests (retried), never one big GET.
        data = b"".join(iter(lambda: file.read(_READ_BLOCK), b""))
        outcome, value = _loadmat_isolated(data)
    if outcome == "v7.3":  # scipy's NotImplementedError: "v7.3 / HDF5"
        raise MocapFormatError(
            f"{source}: this is a MATLAB v7.3 (HDF5) file ({value}); the release's mocap files are MATLAB v5/v7. {_FIX}"
        )
    if outcome != "ok":  # scipy raises many types on truncated or foreign bytes
        raise MocapFormatError(
            f"{source}: cannot be read as a MATLAB .mat file ({value}). "
            f"The file is truncated or not a .mat file. {_FIX}"
        )
    return parse_mocap(value, source)


def _loadmat(source: bytes | str) -> tuple[str, Any]:
    """``("ok", variables)``, or ``("v7.3", message)`` / ``("error", "Type: message")``.

    ``source``: the file's bytes, or its local path.
    """
    try:
        file = io.BytesIO(source) if isinstance(source, bytes) else source
        return "ok", scipy.io.loadmat(file, struct_as_record=False, squeeze_me=False, mat_dtype=False)
    except NotImplementedError as error:
        return "v7.3", str(error)
    except Exception as error:
        return "error", f"{type(error).__name__}: {error}"


class _IsolatedReader:
    """`_loadmat` in a helper process, so that a crash of the reader is an error, not our death.

    scipy's compiled MAT-file reader trusts the element types, flags and sizes in the file: one
    damaged byte can make it crash the whole process with a segmentation fault (scipy 1.17; found by
    tests/faults/test_fault_fuzz.py), which would end a days-long prepare without a word.

    The helper is a fresh interpreter (``python -c``: no fork of this process, which may hold
    FFmpeg threads, and no re-import of the user's ``__main__``) started on first use and reused:
    it reads length-prefixed requests (file bytes, or a local file's path) on stdin and answers with
    the pickled `_loadmat` result on stdout. After a crash a new one is started for the next file;
    it exits when its stdin closes (this process ended), and is never shared with a forked child
    (each process starts its own).
    """

    _CODE = "from rat7m_builder.mocap import _serve_reader; _serve_reader()"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._owner = 0

    def read(self, source: bytes | str) -> tuple[str, Any]:
        """`_loadmat` of ``source`` (the file's bytes, or its local path) in the helper."""
        kind, data = (_BYTES, source) if isinstance(source, bytes) else (_PATH, os.fsencode(source))
        with self._lock:
            process = self._ensure_running()
            try:
                process.stdin.write(kind + struct.pack("<Q", len(data)))
                process.stdin.write(data)
                process.stdin.flush()
                header = process.stdout.read(8)
                payload = process.stdout.read(struct.unpack("<Q", header)[0]) if len(header) == 8 else b""
            except (BrokenPipeError, OSError, struct.error):
                payload = b""
            if payload:
                return pickle.loads(payload)  # our own helper's answer
            returncode = self._stop()
        if returncode is not None and returncode < 0:
            name = signal.Signals(-returncode).name
            return "error", f"the MATLAB reader (scipy.io.loadmat) crashed on its damaged bytes ({name})"
        return "error", f"the MATLAB reader (scipy.io.loadmat) ended without an answer (exit status {returncode})"

    def start(self) -> None:
        """Start the helper if it is not running (returns at once; it is waited for on the first read)."""
        with self._lock:
            self._ensure_running()

    def close(self) -> None:
        """Stop this process's helper (at exit; a forked child leaves its parent's alone)."""
        with self._lock:
            if self._owner == os.getpid():
                self._stop()

    def _ensure_running(self) -> subprocess.Popen:
        if self._process is None or self._owner != os.getpid() or self._process.poll() is not None:
            if self._owner == os.getpid():
                self._stop()
            # (a forked child never touches its parent's helper: it only drops the reference)
            self._process = subprocess.Popen(
                [sys.executable, "-c", self._CODE], stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
            self._owner = os.getpid()
        return self._process

    def _stop(self) -> int | None:
        process, self._process = self._process, None
        if process is None:
            return None
        for stream in (process.stdin, process.stdout):
            with contextlib.suppress(OSError):
                stream.close()
        try:
            return process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()


def _serve_reader() -> None:
    """The helper's loop (see `_IsolatedReader`)."""
    faulthandler.disable()  # a crash is reported by the parent: no dump on stderr
    warnings.simplefilter("ignore")  # scipy's MatReadWarnings: the structure is checked by parse_mocap
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header = source.read(9)
        if len(header) < 9:
            return
        kind, size = header[:1], struct.unpack("<Q", header[1:])[0]
        data = source.read(size)
        if len(data) != size or kind not in (_BYTES, _PATH):
            answer = ("error", "incomplete request")
        else:
            answer = _loadmat(data if kind == _BYTES else os.fsdecode(data))
        payload = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        sink.write(struct.pack("<Q", len(payload)) + payload)
        sink.flush()


#: Request kinds of the helper protocol: the file's bytes follow, or its local path.
_BYTES, _PATH = b"B", b"P"

_READER = _IsolatedReader()
atexit.register(_READER.close)


def start_reader() -> None:
    """Start the helper process now, without waiting (its interpreter and scipy import take ~0.4 s).

    Called when a build begins, so that the start-up overlaps the work before the first .mat is read.
    """
    _READER.start()


def _loadmat_isolated(source: bytes | str) -> tuple[str, Any]:
    """`_loadmat` of the file's bytes or local path in the helper process (see `_IsolatedReader`)."""
    return _READER.read(source)


def parse_mocap(variables: Mapping[str, Any], source: str) -> MocapRecording:
    """Validate the variables of a ``mocap-*.mat`` file and build a `MocapRecording`.

    Args:
        variables: what ``scipy.io.loadmat(..., struct_as_record=False, squeeze_me=False)`` returned.
        source: the file's name or URL, used in error messages.
    """
    missing = [name for name in ("cameras", "mocap") if name not in variables]
    if missing:
        found = sorted(key for key in variables if not key.startswith("__"))
        raise MocapFormatError(
            f"{source}: missing top-level variable(s) {missing}; found {found}. "
            f"A RAT7M mocap file holds 'cameras', 'mocap' and 'name'. {_FIX}"
        )
    name = _parse_name(variables.get("name"))
    _check_name_matches_file(name, source)
    markers = _struct(variables["mocap"], source, "mocap")
    keypoints_3d = _parse_markers(markers, source)
    num_samples = keypoints_3d.shape[0]
    cameras_struct = _struct(variables["cameras"], source, "cameras")
    cameras: dict[int, Camera] = {}
    frame_index: dict[int, np.ndarray] = {}
    # The file stores the cameras in the order 1, 2, 4, 5, 3, 6: key them by number, never by position.
    for field in cameras_struct._fieldnames:
        match = _CAMERA_FIELD_RE.match(field)
        if match is None or int(match.group(1)) not in CAMERAS:
            continue
        number = int(match.group(1))
        camera_struct = _struct(getattr(cameras_struct, field), source, f"cameras.{field}")
        cameras[number], frame_index[number] = _parse_camera(camera_struct, source, f"cameras.{field}", num_samples)
    absent = [f"Camera{number}" for number in CAMERAS if number not in cameras]
    if absent:
        raise MocapFormatError(
            f"{source}: field 'cameras' lacks {absent} (found {list(cameras_struct._fieldnames)}). {_FIX}"
        )
    return MocapRecording(
        name=name,
        keypoints_3d=keypoints_3d,
        frame_index=dict(sorted(frame_index.items())),
        cameras=dict(sorted(cameras.items())),
    )


def _struct(value: Any, source: str, field: str) -> mat_struct:
    """Unwrap a MATLAB 1×1 struct (an object array holding one ``mat_struct``)."""
    if isinstance(value, mat_struct):
        return value
    if isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        inner = value.reshape(-1)[0]
        if isinstance(inner, mat_struct):
            return inner
    shape = getattr(value, "shape", None)
    raise MocapFormatError(
        f"{source}: field '{field}' should be a 1×1 MATLAB struct, found {type(value).__name__}"
        f"{'' if shape is None else f' of shape {shape}'}. {_FIX}"
    )


def _numeric(value: Any, source: str, field: str, expected: str) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
        kind = type(value).__name__ if not isinstance(value, np.ndarray) else f"array of {value.dtype}"
        raise MocapFormatError(f"{source}: field '{field}' should be a numeric {expected} array, found {kind}. {_FIX}")
    return value


def _shape_error(source: str, field: str, expected: str, found: tuple[int, ...]) -> MocapFormatError:
    return MocapFormatError(
        f"{source}: field '{field}' should have shape {expected}, found {'×'.join(map(str, found)) or 'scalar'} "
        f"{found}. {_FIX}"
    )


def _parse_markers(markers: mat_struct, source: str) -> np.ndarray:
    missing = [name for name in MARKER_NAMES if name not in markers._fieldnames]
    if missing:
        raise MocapFormatError(
            f"{source}: field 'mocap' lacks marker(s) {missing} (found {list(markers._fieldnames)}). {_FIX}"
        )
    arrays = []
    for name in MARKER_NAMES:  # build the marker axis by name, never by struct field order
        field = f"mocap.{name}"
        array = _numeric(getattr(markers, name), source, field, "N×3")
        if array.ndim != 2 or array.shape[1] != 3:
            raise _shape_error(source, field, "N×3 (x, y, z in mm)", array.shape)
        if arrays and array.shape[0] != arrays[0].shape[0]:
            raise MocapFormatError(
                f"{source}: field '{field}' has {array.shape[0]} rows but 'mocap.{MARKER_NAMES[0]}' has "
                f"{arrays[0].shape[0]}; every marker must have one row per sample. {_FIX}"
            )
        # NaN is how RAT7M marks an untracked marker and is kept as released; ±inf is no position and no
        # documented marker, so it means a damaged or wrongly converted file. Kept, it would turn every
        # distance, mean and metric computed from that sample into inf/NaN far from its cause.
        infinite_rows = np.flatnonzero(np.isinf(array).any(axis=1))
        if infinite_rows.size:
            first = int(infinite_rows[0])
            values = ", ".join(f"{value:.6g}" for value in array[first])
            raise MocapFormatError(
                f"{source}: field '{field}' holds an infinite value at sample {first} (0-based; MATLAB row "
                f"{first + 1}: x, y, z = {values}), in {infinite_rows.size} sample(s) in all. RAT7M marks "
                f"an untracked marker with NaN; ±inf is not a valid position. {_FIX}"
            )
        arrays.append(array.astype(np.float64, copy=False))
    if arrays[0].shape[0] == 0:
        # Every released recording has ~10^5 samples; an empty one would prepare an empty split that
        # `datasets` caches as finished and then cannot load ("corresponds to no data").
        raise MocapFormatError(f"{source}: field 'mocap' holds no samples (every marker is 0×3). {_FIX}")
    return np.stack(arrays, axis=1)


def _field(struct: mat_struct, names: tuple[str, ...], source: str, prefix: str) -> Any:
    for name in names:
        if name in struct._fieldnames:
            return getattr(struct, name)
    raise MocapFormatError(
        f"{source}: field '{prefix}.{names[0]}' is missing (found {list(struct._fieldnames)}). {_FIX}"
    )


def _parse_camera(camera: mat_struct, source: str, prefix: str, num_samples: int) -> tuple[Camera, np.ndarray]:
    def matrix(names: tuple[str, ...], expected_shape: tuple[int, ...], expected: str) -> np.ndarray:
        field = f"{prefix}.{names[0]}"
        array = _numeric(_field(camera, names, source, prefix), source, field, expected)
        if array.shape != expected_shape:
            raise _shape_error(source, field, expected, array.shape)
        if not np.all(np.isfinite(array)):
            raise MocapFormatError(f"{source}: field '{field}' holds NaN or infinite values. {_FIX}")
        return array

    def vector(names: tuple[str, ...], sizes: tuple[int, ...], expected: str) -> np.ndarray:
        field = f"{prefix}.{names[0]}"
        array = _numeric(_field(camera, names, source, prefix), source, field, expected)
        if array.ndim > 2 or min(array.shape, default=0) != 1 or array.size not in sizes:
            raise _shape_error(source, field, expected, array.shape)
        if not np.all(np.isfinite(array)):
            raise MocapFormatError(f"{source}: field '{field}' holds NaN or infinite values. {_FIX}")
        return array.reshape(-1)

    intrinsic = matrix(("IntrinsicMatrix",), (3, 3), "3×3")
    # A transposed (OpenCV-layout) matrix is refused, never transposed back: which layout a damaged or
    # converted copy meant cannot be proven, and a wrong guess would publish wrong 2D keypoints.
    problem = intrinsic_matrix_problem(intrinsic)
    if problem is not None:
        raise MocapFormatError(f"{source}: field '{prefix}.IntrinsicMatrix' {problem}. {_FIX}")
    # The file uses lower-case rotationMatrix/translationVector; accept the capitalised spelling the
    # helper README uses, in case a re-saved copy follows it.
    rotation = matrix(("rotationMatrix", "RotationMatrix"), (3, 3), "3×3")
    problem = rotation_matrix_problem(rotation)
    if problem is not None:
        raise MocapFormatError(f"{source}: field '{prefix}.rotationMatrix' {problem}. {_FIX}")
    translation = vector(("translationVector", "TranslationVector"), (3,), "1×3")
    radial = vector(("RadialDistortion",), (2, 3), "1×2 or 1×3")
    tangential = vector(("TangentialDistortion",), (2,), "1×2")
    frame_field = f"{prefix}.frame"
    frames = _numeric(_field(camera, ("frame",), source, prefix), source, frame_field, f"1×{num_samples}")
    if frames.shape not in ((1, num_samples), (num_samples, 1)):
        raise _shape_error(source, frame_field, f"1×{num_samples} (one frame per mocap sample)", frames.shape)
    frames = frames.reshape(-1)
    if frames.dtype.kind == "f":
        if not np.all(np.isfinite(frames)) or np.any(frames != np.round(frames)):
            raise MocapFormatError(f"{source}: field '{frame_field}' holds non-integer frame indices. {_FIX}")
    if np.any(frames < 0):
        raise MocapFormatError(f"{source}: field '{frame_field}' holds negative frame indices. {_FIX}")
    if frames.size and np.max(frames) > MAX_FRAME_INDEX:  # would wrap around when cast to int64
        raise MocapFormatError(
            f"{source}: field '{frame_field}' holds frame indices too large to be video frames "
            f"(largest {np.max(frames)}, limit {MAX_FRAME_INDEX}). {_FIX}"
        )
    return (
        Camera.from_matlab(intrinsic, rotation, translation, radial, tangential),
        frames.astype(np.int64),
    )


def _parse_name(value: Any) -> str:
    if isinstance(value, np.ndarray) and value.dtype.kind == "U" and value.size == 1:
        return str(value.reshape(-1)[0])
    if isinstance(value, str):
        return value
    return ""


def _check_name_matches_file(name: str, source: str) -> None:
    """Refuse a file whose ``name`` variable (``Subject{S}-Day{D}``) names another recording than its file name.

    Only a ``name`` of that form and a file name of the form ``mocap-s{S}-d{D}.mat`` are compared;
    an absent or other ``name`` (a re-saved copy, a third-party file) or another file name is accepted.
    """
    match = _NAME_RE.match(name)
    recording = parse_mocap_name(re.split(r"[/\\]", source)[-1])  # source may be a path or a URL
    if match is None or recording is None:
        return
    named = f"s{int(match.group(1))}-d{int(match.group(2))}"
    if named != recording:
        raise MocapFormatError(
            f"{source}: its 'name' variable says {name!r} (recording {named}) but its file name says {recording}: "
            f"the file may have been renamed or mixed up with another recording's file; check which recording "
            f"it holds. {_FIX}"
        )
