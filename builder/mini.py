"""The ``mini`` config: the mini-RAT7M benchmark subset (112,730 six-view samples, split by animal).

Rows come from the annotation pickle (read with the restricted unpickler of `annotation`), images
from the released videos at the table's ``frame_idx``. The table's ``2D_keypoints`` were made in
MATLAB and may be 1-based; which convention a file uses is not documented, so `pixel_convention`
decides it per recording by re-projecting the table's 3D keypoints through the file's own cameras
and published keypoints are always **0-based**, like every other config.
"""

from __future__ import annotations

import filecmp
import functools
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from .annotation import ANNOTATION_FILE_NAMES, ANNOTATION_URL, MiniAnnotation, load_annotation
from .camera import MATLAB_TO_ZERO_BASED_PIXEL_SHIFT, Camera
from .errors import DuplicateFileError, MissingFileError
from .manifest import subject_and_day
from .sources import FileRef, open_file, walk_folders

logger = logging.getLogger(__name__)

#: Largest median disagreement (pixels) between the table's 2D keypoints and the re-projection for
#: a convention to count as detected.
CONVENTION_TOLERANCE_PX = 0.25


def find_annotation(data_dir: str | None, annotation_file: str | None) -> FileRef:
    """Locate the annotation pickle: ``annotation_file`` if given, else a known name below ``data_dir``.

    Below ``data_dir`` the current name (``mini_rat7m_train_test_annotation.pkl``) wins over the older
    one wherever each is; copies of one file under that name in several folders are one file.

    Raises:
        MissingFileError: saying where to get the file and where to put it.
        DuplicateFileError: ``data_dir`` holds two different pickles under the name it would use
            (which one is meant is unknown: the error lists them).
    """
    if annotation_file:
        if not os.path.isfile(annotation_file):
            raise MissingFileError(
                f"annotation_file {annotation_file!r} does not exist. Download {ANNOTATION_FILE_NAMES[0]} from "
                f"{ANNOTATION_URL} and give its path."
            )
        return FileRef(os.path.basename(annotation_file), os.path.abspath(annotation_file))
    if data_dir:
        found = list(walk_folders(data_dir))
        for name in ANNOTATION_FILE_NAMES:  # the newest name first, wherever in the tree it is
            distinct = _distinct_files([os.path.join(folder, name) for folder, files in found if name in files])
            if len(distinct) > 1:
                # Two different tables under one name: picking one by folder order would score a
                # benchmark on a table the user did not choose.
                raise DuplicateFileError(
                    f"{data_dir}: holds {len(distinct)} different files named {name} ({'; '.join(distinct)}). "
                    "Pass the one to use with annotation_file='/path/to/it.pkl', or remove the others."
                )
            if distinct:
                return FileRef(name, distinct[0])
    raise MissingFileError(
        "The mini config needs the mini-RAT7M annotation pickle, which is not part of the figshare record. "
        f"Download {ANNOTATION_FILE_NAMES[0]} from {ANNOTATION_URL} and put it in your data_dir "
        "(anywhere below it), or pass annotation_file='/path/to/it.pkl'."
    )


def _distinct_files(paths: list[str]) -> list[str]:
    """``paths`` without those whose bytes equal an earlier one's (a copy is the same table)."""
    distinct: list[str] = []
    for path in paths:
        if not any(filecmp.cmp(path, kept, shallow=False) for kept in distinct):
            distinct.append(path)
    return distinct


@functools.lru_cache(maxsize=1)
def load_mini(ref: FileRef) -> MiniAnnotation:
    """Read the annotation once per process (it is shared by every shard)."""
    with open_file(ref) as file:
        return load_annotation(file, ref.label)


def _field(fields: Mapping, *names: str):
    for name in names:
        if name in fields:
            return fields[name]
    return None


def annotation_camera(fields: Mapping) -> Camera | None:
    """A `Camera` from the pickle's MATLAB camera fields (either spelling), or None if incomplete."""
    values = [
        _field(fields, "IntrinsicMatrix", "K"),
        _field(fields, "rotationMatrix", "RotationMatrix", "r"),
        _field(fields, "translationVector", "TranslationVector", "t"),
        _field(fields, "RadialDistortion"),
        _field(fields, "TangentialDistortion"),
    ]
    if any(value is None for value in values):
        return None
    try:
        return Camera.from_matlab(*values)
    except (ValueError, TypeError):
        return None


@dataclass(frozen=True)
class PixelConvention:
    """How a recording's table 2D keypoints relate to 0-based pixels.

    Attributes:
        shift: pixels subtracted from the stored values to publish 0-based keypoints (1.0 or 0.0).
        note: what was found, for the build notes.
    """

    shift: float
    note: str


def pixel_convention(annotation: MiniAnnotation, recording: str) -> PixelConvention:
    """Decide whether the table's 2D keypoints of ``recording`` are 1-based (MATLAB) or 0-based.

    Re-projects the table's 3D keypoints through the file's own calibration (0-based, see `camera`)
    and compares: a median offset of (1, 1) px means 1-based, (0, 0) means 0-based. Anything else is
    kept as stored and said so in the note.
    """
    subject, day = subject_and_day(recording)
    rows = annotation.indices(recording=recording)
    offsets = []
    for axis, name in enumerate(annotation.camera_names):
        try:
            camera = annotation_camera(annotation.camera_parameters(subject, day, name))
        except Exception:  # noqa: BLE001 — any unreadable calibration just means "cannot decide"
            camera = None
        if camera is None:
            continue
        projected = camera.project(annotation.keypoints_3d[rows].astype(np.float64))
        offsets.append((annotation.keypoints_2d[rows, axis] - projected).reshape(-1, 2))
    finite = np.concatenate(offsets) if offsets else np.empty((0, 2))
    finite = finite[np.isfinite(finite).all(axis=1)]
    if finite.size == 0:
        return PixelConvention(0.0, f"{recording}: 2D keypoints kept as stored (no calibration to check them)")
    median = np.median(finite, axis=0)
    if np.all(np.abs(median - MATLAB_TO_ZERO_BASED_PIXEL_SHIFT) <= CONVENTION_TOLERANCE_PX):
        return PixelConvention(
            MATLAB_TO_ZERO_BASED_PIXEL_SHIFT, f"{recording}: table 2D keypoints are 1-based; shifted by −1"
        )
    if np.all(np.abs(median) <= CONVENTION_TOLERANCE_PX):
        return PixelConvention(0.0, f"{recording}: table 2D keypoints are 0-based; kept")
    note = (
        f"{recording}: table 2D keypoints differ from the re-projection by a median ({median[0]:.2f}, "
        f"{median[1]:.2f}) px; kept as stored"
    )
    logger.warning(note)
    return PixelConvention(0.0, note)


def mini_rows(annotation: MiniAnnotation, recording: str, split: str, frame_step: int) -> np.ndarray:
    """Annotation rows of one recording and split in file order, kept by ``frame_step`` on the row index."""
    rows = annotation.indices(split=split, recording=recording)
    return rows[rows % frame_step == 0]


def mini_examples(
    annotation: MiniAnnotation,
    rows: np.ndarray,
    cameras: tuple[int, ...],
    shift: float,
    frames_by_camera: dict,
    recording: str,
) -> Iterator[dict]:
    """Yield ``mini`` examples for annotation ``rows`` (in order), with images from ``frames_by_camera``.

    Args:
        frames_by_camera: camera number → an object with ``get(frame_index) -> JPEG bytes``.
    """
    axes = [annotation.camera_numbers.index(camera) for camera in cameras]
    subject, day = subject_and_day(recording)
    keypoints_2d = (annotation.keypoints_2d[rows][:, axes] - shift).astype(np.float32)
    com_2d = None if annotation.com_2d is None else (annotation.com_2d[rows][:, axes] - shift).astype(np.float32)
    frames = annotation.frame_index[rows][:, axes]
    for position, row in enumerate(rows.tolist()):
        yield {
            "images": [
                {"bytes": frames_by_camera[camera].get(int(frame)), "path": None}
                for camera, frame in zip(cameras, frames[position], strict=True)
            ],
            "cameras": list(cameras),
            "frame_index": frames[position].astype(np.int32),
            "keypoints_2d": keypoints_2d[position],
            "keypoints_3d": annotation.keypoints_3d[row],
            "com_2d": None if com_2d is None else com_2d[position],
            "recording": recording,
            "subject": subject,
            "day": day,
            "annotation_index": row,
        }
