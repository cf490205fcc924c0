"""What the RAT7M release is: recordings, figshare articles, markers, skeleton, file names.

Pure constants and name parsing (no I/O). Source of truth: ``shared/RAT7M.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import SelectionError

#: The seven recordings of the release, ``s{subject}-d{day}``. There is no s1-d2, s3-d2 or s4-d2.
RECORDINGS: tuple[str, ...] = ("s1-d1", "s2-d1", "s2-d2", "s3-d1", "s4-d1", "s5-d1", "s5-d2")

#: The standard split (as in mini-RAT7M): the fifth animal is held out for testing.
SPLIT_RECORDINGS: dict[str, tuple[str, ...]] = {
    "train": ("s1-d1", "s2-d1", "s2-d2", "s3-d1", "s4-d1"),
    "test": ("s5-d1", "s5-d2"),
}

#: Camera numbers as in the file names (``camera1`` … ``camera6``) and the .mat (``Camera1`` …).
CAMERAS: tuple[int, ...] = (1, 2, 3, 4, 5, 6)

#: figshare article (id, version) holding each recording's mp4 chunks. s5-d2's id is smaller than
#: s5-d1's: the mapping is a table, never derived by sorting ids.
VIDEO_ARTICLES: dict[str, tuple[int, int]] = {
    "s1-d1": (13751023, 1),
    "s2-d1": (13753417, 1),
    "s2-d2": (13759336, 1),
    "s3-d1": (13764208, 1),
    "s4-d1": (13767502, 2),
    "s5-d1": (13770565, 1),
    "s5-d2": (13769833, 1),
}

#: figshare article (id, version) holding the seven ``mocap-s{S}-d{D}.mat`` files.
MOCAP_ARTICLE: tuple[int, int] = (13739233, 2)

#: The figshare collection and its DOI, for citations and error messages.
FIGSHARE_COLLECTION_URL = "https://figshare.com/collections/Rat_7M/5295370"
FIGSHARE_DOI = "10.6084/m9.figshare.c.5295370.v3"

#: The 20 motion-capture markers, in the order of the marker axis of every keypoint array.
MARKER_NAMES: tuple[str, ...] = (
    "HeadF", "HeadB", "HeadL", "SpineF", "SpineM", "SpineL", "Offset1", "Offset2", "HipL", "HipR",
    "ElbowL", "ArmL", "ShoulderL", "ShoulderR", "ElbowR", "ArmR", "KneeR", "KneeL", "ShinL", "ShinR",
)  # fmt: skip
NUM_MARKERS = len(MARKER_NAMES)

#: The authors' 21 skeleton edges, as pairs of marker indices.
SKELETON_EDGES: tuple[tuple[int, int], ...] = (
    (0, 1), (0, 2), (1, 2), (2, 3), (3, 4), (4, 5), (3, 6), (5, 7), (3, 12), (3, 13), (5, 8),
    (5, 9), (6, 7), (8, 17), (9, 16), (17, 18), (16, 19), (10, 11), (10, 12), (13, 14), (14, 15),
)  # fmt: skip

#: Nominal frames per released mp4 chunk. Only documentation: chunks are located from the starts
#: actually present, so any chunk size works.
NOMINAL_CHUNK_FRAMES = 3500

# ASCII digits only, matched with fullmatch: "\d" would take other scripts' digits and "$" a trailing
# newline, letting a second name alias a release file (found by tests/faults/test_fault_fuzz.py).
_RECORDING_RE = re.compile(r"s([0-9]+)-d([0-9]+)")
_VIDEO_RE = re.compile(r"s([0-9]+)-d([0-9]+)-camera([0-9]+)-([0-9]+)\.mp4")
_MOCAP_RE = re.compile(r"mocap-s([0-9]+)-d([0-9]+)\.mat")


@dataclass(frozen=True, order=True)
class VideoName:
    """The parts of a released video file name ``s{S}-d{D}-camera{K}-{start}.mp4``.

    Attributes:
        recording: ``"s1-d1"``-style recording name.
        camera: camera number 1–6.
        start: 0-based global video frame index of the chunk's first frame (not zero-padded in
            the name, so chunks must be sorted by this number, never by the file name).
    """

    recording: str
    camera: int
    start: int

    @property
    def file_name(self) -> str:
        return f"{self.recording}-camera{self.camera}-{self.start}.mp4"


def subject_and_day(recording: str) -> tuple[int, int]:
    """Split ``"s5-d2"`` into ``(5, 2)``; raises `SelectionError` for an unknown recording."""
    check_recording(recording)
    match = _RECORDING_RE.fullmatch(recording)
    assert match is not None  # guaranteed by check_recording
    return int(match.group(1)), int(match.group(2))


def check_recording(recording: object) -> str:
    """Return ``recording`` if it is one of `RECORDINGS`, else raise `SelectionError` listing them."""
    if not isinstance(recording, str) or recording not in RECORDINGS:
        raise SelectionError(f"Unknown RAT7M recording {recording!r}. Valid recordings: {', '.join(RECORDINGS)}.")
    return recording


def split_of(recording: str) -> str:
    """The standard split (``"train"`` or ``"test"``) a recording belongs to."""
    for split, recordings in SPLIT_RECORDINGS.items():
        if recording in recordings:
            return split
    raise SelectionError(f"Unknown RAT7M recording {recording!r}. Valid recordings: {', '.join(RECORDINGS)}.")


def mocap_file_name(recording: str) -> str:
    """``"s1-d1"`` → ``"mocap-s1-d1.mat"``."""
    return f"mocap-{check_recording(recording)}.mat"


def parse_video_name(file_name: str) -> VideoName | None:
    """Parse a released mp4 name (the base name, no folders).

    Returns:
        The parsed name, or None when ``file_name`` does not have the shape of a RAT7M video name
        (other files in a folder are simply not videos). A name of the right shape with an unknown
        recording or a camera outside 1–6 is also None: it cannot belong to the release.
    """
    match = _VIDEO_RE.fullmatch(file_name)
    if match is None:
        return None
    subject, day, camera, start = (int(group) for group in match.groups())
    recording = f"s{subject}-d{day}"
    if recording not in RECORDINGS or camera not in CAMERAS:
        return None
    name = VideoName(recording, camera, start)
    # "0012", "d01", "camera03" are not how the release writes names; accepting them would let two
    # names alias one chunk.
    if name.file_name != file_name:
        return None
    return name


def parse_mocap_name(file_name: str) -> str | None:
    """``"mocap-s1-d1.mat"`` → ``"s1-d1"``; None for any other name."""
    match = _MOCAP_RE.fullmatch(file_name)
    if match is None:
        return None
    recording = f"s{int(match.group(1))}-d{int(match.group(2))}"
    if recording not in RECORDINGS or match.group(0) != f"mocap-{recording}.mat":
        return None
    return recording
