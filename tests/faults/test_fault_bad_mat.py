"""Fault 5: a broken ``mocap-*.mat`` through the whole builder.

Truncated, MATLAB v7.3 (HDF5), missing ``cameras``/``mocap``/a camera, fields of the wrong shape or
type: `MocapFormatError` naming the file and the field (and what to do), and nothing in the cache
that a later run could take for a finished build. The parser's own cases are in tests/test_mocap.py;
here the damage goes through `rat7m.load_dataset`, after the first split was already written.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from helpers import MAT_FIX, load_mat, save_mat

import rat7m
from rat7m_builder import mocap
from rat7m_builder.errors import MocapFormatError
from rat7m_builder.mocap import read_mocap

from .support import incomplete_dirs, prepared_info_files

MAT = "mocap-s5-d1.mat"  # the test split's recording: the train split (s1-d1) is written before it fails
FIX = MAT_FIX


def _hdf5_mat(path: str) -> None:
    """What MATLAB's ``save -v7.3`` writes: a 512-byte user block with the MAT header, then HDF5.

    (h5py is not installed here, so the HDF5 part is only its signature; scipy decides from the header.)
    """
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Mar  1 10:00:00 2021 HDF5 schema 1.00 ."
    user_block = header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    with open(path, "wb") as file:
        file.write(user_block.ljust(512, b"\x00") + b"\x89HDF\r\n\x1a\n" + b"\x00" * 1024)


def _truncate(path: str) -> None:
    with open(path, "rb") as file:
        data = file.read()
    with open(path, "wb") as file:
        file.write(data[: len(data) // 2])


def _unknown_element_type(path: str) -> None:
    """One byte: the first miDOUBLE data element's type becomes 0xFA09, a type MATLAB does not have."""
    with open(path, "rb") as file:
        data = bytearray(file.read())
    at = data.index(b"\x09\x00\x00\x00", 128)
    data[at + 1] = 0xFA
    with open(path, "wb") as file:
        file.write(bytes(data))


def _mutate(change):
    def apply(path: str) -> None:
        variables = load_mat(path)
        change(variables)
        save_mat(path, variables)

    return apply


def _camera(name: str, field: str, value):
    return _mutate(lambda v: v["cameras"][name].__setitem__(field, value))


CASES = {
    "truncated": (
        _truncate,
        r"cannot be read as a MATLAB \.mat file \(.*\)\. The file is truncated or not a \.mat file",
    ),
    "empty": (lambda path: open(path, "wb").close(), r"cannot be read as a MATLAB \.mat file"),
    "v7.3 / HDF5": (_hdf5_mat, r"this is a MATLAB v7\.3 \(HDF5\) file .*the release's mocap files are MATLAB v5/v7"),
    # scipy's compiled reader indexes a table with the type and reads out of bounds: usually a segmentation
    # fault (SIGSEGV or SIGBUS), taken in a child process; when the wild read lands on mapped memory (it
    # depends on the process's memory layout; CI saw it once) scipy fails later, with an exception or a
    # struct that does not validate. Each is a clear error about this file.
    "element type byte": (
        _unknown_element_type,
        r"cannot be read as a MATLAB \.mat file \((the MATLAB reader \(scipy\.io\.loadmat\) crashed on its damaged "
        r"bytes \(SIG[A-Z]+\)|.+)\)|field '[\w.]+' ",
    ),
    "no cameras": (_mutate(lambda v: v.pop("cameras")), r"missing top-level variable\(s\) \['cameras'\]; found \["),
    "no mocap": (_mutate(lambda v: v.pop("mocap")), r"missing top-level variable\(s\) \['mocap'\]"),
    "no Camera5": (_mutate(lambda v: v["cameras"].pop("Camera5")), r"field 'cameras' lacks \['Camera5'\]"),
    "cameras not a struct": (
        _mutate(lambda v: v.__setitem__("cameras", np.eye(3))),
        r"field 'cameras' should be a 1×1 MATLAB struct, found ndarray of shape \(3, 3\)",
    ),
    "marker N×2": (
        _mutate(lambda v: v["mocap"].__setitem__("SpineM", v["mocap"]["SpineM"][:, :2])),
        r"field 'mocap\.SpineM' should have shape N×3 \(x, y, z in mm\), found 30×2",
    ),
    "marker text": (
        _mutate(lambda v: v["mocap"].__setitem__("ShinL", "lost")),
        r"field 'mocap\.ShinL' should be a numeric N×3 array, found array of <U4",
    ),
    "marker rows": (
        _mutate(lambda v: v["mocap"].__setitem__("HeadB", v["mocap"]["HeadB"][:29])),
        r"field 'mocap\.HeadB' has 29 rows but 'mocap\.HeadF' has 30",
    ),
    "frame length": (
        _camera("Camera2", "frame", np.arange(12.0)),
        r"field 'cameras\.Camera2\.frame' should have shape 1×30 \(one frame per mocap sample\), found 1×12",
    ),
    "frame fractional": (
        _camera("Camera4", "frame", np.arange(30.0) + 0.5),
        r"field 'cameras\.Camera4\.frame' holds non-integer frame indices",
    ),
    "intrinsics a struct": (
        _camera("Camera1", "IntrinsicMatrix", {"fx": 1.0}),
        r"field 'cameras\.Camera1\.IntrinsicMatrix' should be a numeric 3×3 array, found",
    ),
    "rotation 3×2": (
        _camera("Camera6", "rotationMatrix", np.zeros((3, 2))),
        r"field 'cameras\.Camera6\.rotationMatrix' should have shape 3×3, found 3×2",
    ),
    "translation 1×2": (
        _camera("Camera3", "translationVector", np.zeros(2)),
        r"field 'cameras\.Camera3\.translationVector' should have shape 1×3",
    ),
    "no frame field": (
        _mutate(lambda v: v["cameras"]["Camera1"].pop("frame")),
        r"field 'cameras\.Camera1\.frame' is missing",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_broken_mat_is_a_clear_error_and_leaves_no_finished_cache(case, release_copy, cache_dir):
    damage, expected = CASES[case]
    damage(os.path.join(release_copy, "annotations", MAT))
    with pytest.raises(MocapFormatError) as error:
        rat7m.load_dataset("mocap", data_dir=release_copy, cache_dir=cache_dir)
    message = str(error.value)
    # a loose local file is named by its path, so the user fixes that very file
    assert message.startswith(f"{os.path.join(release_copy, 'annotations', MAT)}: "), message
    assert re.search(expected, message), message
    assert message.endswith(FIX)
    assert prepared_info_files(cache_dir) == [] and incomplete_dirs(cache_dir) == []


def test_broken_mat_fails_a_video_config_before_any_frame_is_decoded(release_copy, cache_dir, monkeypatch):
    path = os.path.join(release_copy, "annotations", "mocap-s1-d1.mat")
    _mutate(lambda v: v["cameras"].pop("Camera5"))(path)
    decoded = []
    monkeypatch.setattr("rat7m_builder.video.iter_decoded_frames", lambda *a, **k: decoded.append(a) or iter(()))
    with pytest.raises(MocapFormatError, match=rf"^{re.escape(path)}: field 'cameras' lacks \['Camera5'\]"):
        rat7m.load_dataset("frames", data_dir=release_copy, cache_dir=cache_dir)
    assert decoded == []
    assert prepared_info_files(cache_dir) == [] and incomplete_dirs(cache_dir) == []


def test_after_repair_the_same_cache_builds(release_copy, sample_release, cache_dir):
    path = os.path.join(release_copy, "annotations", MAT)
    _truncate(path)
    with pytest.raises(MocapFormatError):
        rat7m.load_dataset("mocap", data_dir=release_copy, cache_dir=cache_dir)
    with open(os.path.join(sample_release.root, "annotations", MAT), "rb") as source, open(path, "wb") as target:
        target.write(source.read())
    mocap = rat7m.load_dataset("mocap", data_dir=release_copy, cache_dir=cache_dir)
    assert {split: mocap[split].num_rows for split in mocap} == {"train": 30, "test": 30}


def test_a_byte_that_can_crash_scipy_is_an_error_naming_the_file(release_copy):
    """The reason .mat files are read in a child process: on this byte ``scipy.io.loadmat`` reads out of bounds.

    Whether that read faults (SIGSEGV/SIGBUS) or lands on mapped memory and fails later depends on the
    process's memory layout, so plain scipy's fate is not asserted; rat7m's is: whatever scipy does, the
    caller gets a `MocapFormatError` naming the file and saying what to do, and the next file still reads.
    """
    path = os.path.join(release_copy, "annotations", MAT)
    _unknown_element_type(path)
    with open(path, "rb") as file, pytest.raises(MocapFormatError) as raised:
        read_mocap(file, MAT)
    message = str(raised.value)
    assert message.startswith(f"{MAT}: ") and message.endswith(FIX)
    if "crashed" in message:
        assert re.search(r"crashed on its damaged bytes \(SIG[A-Z]+\)", message)
    with open(os.path.join(release_copy, "annotations", "mocap-s1-d1.mat"), "rb") as file:
        assert read_mocap(file, "mocap-s1-d1.mat").num_samples == 30


def test_any_crash_of_the_reader_is_an_error_and_the_next_file_reads(release_copy):
    """Whatever kills the reader process (here: it kills itself), the caller gets an error and lives on."""
    reader = mocap._IsolatedReader()
    reader._CODE = "import os, signal; os.kill(os.getpid(), signal.SIGABRT)"
    try:
        assert reader.read(b"MATLAB 5.0") == (
            "error",
            "the MATLAB reader (scipy.io.loadmat) crashed on its damaged bytes (SIGABRT)",
        )
    finally:
        reader.close()
    assert reader._process is None  # nothing left running
    with open(os.path.join(release_copy, "annotations", MAT), "rb") as file:
        assert read_mocap(file, MAT).num_samples == 30
