"""The `datasets.Features` of each config.

Arrays are fixed-size Arrow lists (``List(..., length=n)``), not ``datasets`` extension types, so
the Parquet on the Hub reads as plain ``fixed_size_list`` in Arrow, Polars and DuckDB; NaN is kept.
Keypoints are float32 (mm, pixels); calibration is float64 so projections can be reproduced to
well below a pixel.
"""

from __future__ import annotations

import datasets
from datasets import Features, Image, List, Value

from .manifest import NUM_MARKERS


def _fixed(value: Value, *shape: int) -> List:
    feature = value
    for length in reversed(shape):
        feature = List(feature, length=length)
    return feature


def keypoints_3d() -> List:
    """(20, 3) float32 world coordinates in mm."""
    return _fixed(Value("float32"), NUM_MARKERS, 3)


def keypoints_2d() -> List:
    """(20, 2) float32 0-based pixel coordinates."""
    return _fixed(Value("float32"), NUM_MARKERS, 2)


def _calibration() -> dict:
    return {
        "intrinsic_matrix": _fixed(Value("float64"), 3, 3),
        "rotation_matrix": _fixed(Value("float64"), 3, 3),
        "translation_vector": _fixed(Value("float64"), 3),
        "distortion": _fixed(Value("float64"), 5),
    }


def _calibration_per_camera() -> dict:
    """The calibration columns as lists with one entry per camera of the row (``multiview``)."""
    return {name: List(feature) for name, feature in _calibration().items()}


def _recording() -> dict:
    return {"recording": Value("string"), "subject": Value("int32"), "day": Value("int32")}


def mocap_features() -> Features:
    return Features(
        {
            **_recording(),
            "sample_index": Value("int32"),
            "keypoints_3d": keypoints_3d(),
            "cameras": List(Value("int32")),
            "frame_index": List(Value("int32")),
        }
    )


def cameras_features() -> Features:
    return Features(
        {
            "recording": Value("string"),
            "camera": Value("int32"),
            **_calibration(),
            "image_width": Value("int32"),
            "image_height": Value("int32"),
        }
    )


def frames_features() -> Features:
    return Features(
        {
            "image": Image(),
            **_recording(),
            "camera": Value("int32"),
            "sample_index": Value("int32"),
            "frame_index": Value("int32"),
            "keypoints_3d": keypoints_3d(),
            "keypoints_2d": keypoints_2d(),
            **_calibration(),
        }
    )


def multiview_features() -> Features:
    return Features(
        {
            "images": List(Image()),
            "cameras": List(Value("int32")),
            "frame_index": List(Value("int32")),
            "keypoints_3d": keypoints_3d(),
            "keypoints_2d": List(keypoints_2d()),
            **_recording(),
            "sample_index": Value("int32"),
            **_calibration_per_camera(),
        }
    )


def videos_features() -> Features:
    return Features(
        {
            "video": datasets.Video(decode=False),
            **_recording(),
            "camera": Value("int32"),
            "start_frame": Value("int32"),
            "num_frames": Value("int32"),
            "sample_index": List(Value("int32")),
            "keypoints_3d": List(keypoints_3d()),
            "keypoints_2d": List(keypoints_2d()),
            **_calibration(),
        }
    )


def mini_features() -> Features:
    return Features(
        {
            "images": List(Image()),
            "cameras": List(Value("int32")),
            "frame_index": List(Value("int32")),
            "keypoints_2d": List(keypoints_2d()),
            "keypoints_3d": keypoints_3d(),
            "com_2d": List(_fixed(Value("float32"), 2)),
            **_recording(),
            "annotation_index": Value("int32"),
        }
    )


FEATURES = {
    "mocap": mocap_features,
    "cameras": cameras_features,
    "frames": frames_features,
    "multiview": multiview_features,
    "videos": videos_features,
    "mini": mini_features,
}
