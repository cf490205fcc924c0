"""The builder end to end on the fabricated release: alignment, geometry, splits, selections."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import assert_same_rows, decode_jpeg, raw_images

import rat7m
from rat7m_builder.manifest import NUM_MARKERS
from rat7m_builder.sample import BACKGROUND, DOT_RADIUS, marker_colours, read_barcode

NUM_SAMPLES = 30  # SampleSpec default, per recording


def _dot_centre(image: np.ndarray, x: float, y: float, window: int = 5):
    """Centroid and mean colour of the bright (marker) pixels within ``window`` px of (x, y), or None."""
    cx, cy = int(round(x)), int(round(y))
    patch = image[cy - window : cy + window + 1, cx - window : cx + window + 1].astype(np.int32)
    bright = patch.max(axis=2) - BACKGROUND > 60
    if bright.sum() < 5:
        return None
    ys, xs = np.nonzero(bright)
    return cx - window + xs.mean(), cy - window + ys.mean(), patch[bright].mean(axis=0)


def _hue_steps(colour_a, colour_b) -> float:
    """Circular hue distance between two RGB colours, in units of the 20 marker hues (18°)."""
    import colorsys

    hue_a = colorsys.rgb_to_hsv(*(np.asarray(colour_a) / 255.0))[0]
    hue_b = colorsys.rgb_to_hsv(*(np.asarray(colour_b) / 255.0))[0]
    distance = abs(hue_a - hue_b) % 1.0
    return min(distance, 1.0 - distance) * NUM_MARKERS


@pytest.fixture(scope="module")
def frames(sample_release, tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("frames_cache"))
    return rat7m.load_dataset("frames", data_dir=sample_release.root, cache_dir=cache)


def test_frames_split_sizes_and_columns(frames):
    assert set(frames) == {"train", "test"}
    assert frames["train"].num_rows == NUM_SAMPLES * 6  # s1-d1: 30 samples × 6 cameras
    assert frames["test"].num_rows == NUM_SAMPLES * 6  # s5-d1
    assert frames["train"].column_names == [
        "image", "recording", "subject", "day", "camera", "sample_index", "frame_index", "keypoints_3d",
        "keypoints_2d", "intrinsic_matrix", "rotation_matrix", "translation_vector", "distortion",
    ]  # fmt: skip
    assert set(frames["train"]["recording"]) == {"s1-d1"} and set(frames["test"]["recording"]) == {"s5-d1"}
    assert set(frames["test"]["subject"]) == {5}


def test_every_image_shows_its_frame_index(frames, sample_release):
    for split in ("train", "test"):
        rows = raw_images(frames[split])
        for row in rows:
            image = decode_jpeg(row["image"]["bytes"])
            assert image.shape == (sample_release.spec.height, sample_release.spec.width, 3)
            assert read_barcode(image) == row["frame_index"], (
                row["recording"],
                row["camera"],
                row["sample_index"],
            )


def test_frame_index_matches_motion_capture(frames, sample_release):
    for split, recording in (("train", "s1-d1"), ("test", "s5-d1")):
        truth = sample_release.recordings[recording]
        for row in frames[split].select_columns(["camera", "sample_index", "frame_index"]):
            assert row["frame_index"] == truth.frame_index[row["camera"]][row["sample_index"]]
        # every sample appears once per camera, including the all-NaN one
        pairs = sorted(zip(frames[split]["camera"], frames[split]["sample_index"], strict=True))
        assert pairs == [(c, t) for c in range(1, 7) for t in range(NUM_SAMPLES)]


def test_marker_dots_sit_at_keypoints_2d(frames):
    rows = raw_images(frames["train"]).with_format("numpy")
    colours = marker_colours()
    checked = 0
    for row in rows:
        image = decode_jpeg(row["image"]["bytes"])
        keypoints = row["keypoints_2d"]
        for marker in range(NUM_MARKERS):
            x, y = keypoints[marker]
            if not np.isfinite(x):
                continue
            others = np.delete(keypoints, marker, axis=0)
            if np.nanmin(np.hypot(*(others - keypoints[marker]).T)) < 2 * DOT_RADIUS + 5:
                continue  # overlapping dots in this view cannot be told apart
            centre = _dot_centre(image, x, y)
            assert centre is not None, (
                f"no dot at marker {marker} of sample {row['sample_index']} camera {row['camera']}"
            )
            assert np.hypot(centre[0] - x, centre[1] - y) <= 2.0
            # and it is this marker's dot: its hue is this marker's, within the blur that two 4:2:0
            # chroma subsamplings (H.264, then JPEG) put on a 7-px dot
            assert _hue_steps(centre[2], colours[marker]) <= 1.5
            checked += 1
    assert checked > 0.5 * rows.num_rows * NUM_MARKERS  # most markers are isolated in most views


CALIBRATION_COLUMNS = ["intrinsic_matrix", "rotation_matrix", "translation_vector", "distortion"]


def test_keypoints_2d_agree_with_cv2_from_published_columns(frames):
    columns = ["keypoints_3d", "keypoints_2d", *CALIBRATION_COLUMNS]
    # python lists, so the float64 calibration stays float64 (with_format("numpy") gives float32)
    for row in frames["train"].select_columns(columns):
        row = {name: np.array(value, dtype=np.float64) for name, value in row.items()}
        valid = np.isfinite(row["keypoints_3d"]).all(axis=1)
        assert (np.isfinite(row["keypoints_2d"]).all(axis=1) == valid).all()  # NaN where 3D is NaN
        if not valid.any():
            continue
        rvec, _ = cv2.Rodrigues(row["rotation_matrix"])
        reference, _ = cv2.projectPoints(
            row["keypoints_3d"][valid], rvec, row["translation_vector"], row["intrinsic_matrix"], row["distortion"]
        )
        # float32 storage of the 2D keypoints (≈1e-5 px here) bounds the agreement, not the model
        np.testing.assert_allclose(row["keypoints_2d"][valid], reference.reshape(-1, 2), rtol=0, atol=1e-4)


def test_nan_preserved_and_all_nan_sample_kept(frames, sample_release):
    truth = sample_release.recordings["s1-d1"].keypoints_3d
    rows = frames["train"].with_format("numpy")
    for row in rows.filter(lambda r: r["camera"] == 1):
        np.testing.assert_array_equal(row["keypoints_3d"], truth[row["sample_index"]].astype(np.float32))
    all_nan = rows.filter(lambda r: r["sample_index"] == 17)
    assert all_nan.num_rows == 6 and np.isnan(all_nan[0]["keypoints_2d"]).all()


def test_repeated_frame_index_yields_both_samples_with_the_same_image(frames, sample_release):
    repeated = sample_release.spec.repeated_sample
    rows = raw_images(frames["train"]).filter(
        lambda r: r["camera"] == 4 and r["sample_index"] in (repeated - 1, repeated)
    )
    assert rows.num_rows == 2 and rows[0]["frame_index"] == rows[1]["frame_index"]
    assert rows[0]["image"]["bytes"] == rows[1]["image"]["bytes"]
    # the video frame after the repeat is referenced by no sample, so it is no example
    skipped = rows[0]["frame_index"] + 1
    referenced = set(frames["train"].filter(lambda r: r["camera"] == 4)["frame_index"])
    assert skipped not in referenced and skipped + 1 in referenced


def test_num_proc_2_equals_num_proc_1(sample_release, tmp_path):
    one = rat7m.load_dataset("frames", split="train", data_dir=sample_release.root, cache_dir=str(tmp_path / "a"))
    two = rat7m.load_dataset(
        "frames", split="train", data_dir=sample_release.root, cache_dir=str(tmp_path / "b"), num_proc=2
    )
    assert_same_rows(raw_images(one), raw_images(two))
    one = rat7m.load_dataset("multiview", split="test", data_dir=sample_release.root, cache_dir=str(tmp_path / "c"))
    two = rat7m.load_dataset(
        "multiview", split="test", data_dir=sample_release.root, cache_dir=str(tmp_path / "d"), num_proc=2
    )
    assert_same_rows(raw_images(one, "images"), raw_images(two, "images"))


@pytest.mark.parametrize("layout", ["sample_zips", "sample_flat"])
def test_zip_and_flat_layouts_give_the_same_rows(layout, request, frames, tmp_path):
    release = request.getfixturevalue(layout)
    other = rat7m.load_dataset("frames", split="test", data_dir=release.root, cache_dir=str(tmp_path))
    assert_same_rows(raw_images(other), raw_images(frames["test"]))


def test_multiview_rows(sample_release, cache_dir):
    multiview = rat7m.load_dataset(
        "multiview",
        split="train",
        data_dir=sample_release.root,
        cache_dir=cache_dir,
        cameras=[5, 2],
        frame_step=3,
    )
    truth = sample_release.recordings["s1-d1"]
    assert multiview["sample_index"] == list(range(0, NUM_SAMPLES, 3))
    for row in raw_images(multiview, "images").with_format("numpy"):
        assert list(row["cameras"]) == [2, 5]
        assert row["keypoints_2d"].shape == (2, NUM_MARKERS, 2)
        for view, (camera, frame) in enumerate(zip(row["cameras"], row["frame_index"], strict=True)):
            assert frame == truth.frame_index[camera][row["sample_index"]]
            assert read_barcode(decode_jpeg(row["images"][view]["bytes"])) == frame
            expected = truth.cameras[camera].project(truth.keypoints_3d[row["sample_index"]]).astype(np.float32)
            np.testing.assert_allclose(row["keypoints_2d"][view], expected, rtol=0, atol=1e-4)


def test_multiview_rows_carry_each_views_calibration(sample_release, cache_dir):
    multiview = rat7m.load_dataset(
        "multiview", split="test", data_dir=sample_release.root, cache_dir=cache_dir, cameras=[6, 1, 3], frame_step=4
    )
    truth = sample_release.recordings["s5-d1"]
    columns = ["cameras", "keypoints_3d", "keypoints_2d", *CALIBRATION_COLUMNS]
    checked = 0
    # python lists, so the float64 calibration stays float64 (with_format("numpy") gives float32)
    for row in multiview.select_columns(columns):
        assert row["cameras"] == [1, 3, 6]
        points = np.array(row["keypoints_3d"], dtype=np.float64)
        valid = np.isfinite(points).all(axis=1)
        for view, camera in enumerate(row["cameras"]):
            # the same calibration as the `frames` and `cameras` rows of that camera, in the row's camera order
            reference = truth.cameras[camera].to_opencv()
            np.testing.assert_array_equal(np.array(row["intrinsic_matrix"][view]), reference.camera_matrix)
            np.testing.assert_array_equal(np.array(row["rotation_matrix"][view]), reference.rotation_matrix)
            np.testing.assert_array_equal(np.array(row["translation_vector"][view]), reference.translation_vector)
            np.testing.assert_array_equal(np.array(row["distortion"][view]), reference.distortion)
            if not valid.any():
                continue
            # and it reprojects the row's own 3D keypoints onto the view's 2D keypoints, by OpenCV
            rvec, _ = cv2.Rodrigues(np.array(row["rotation_matrix"][view]))
            projected, _ = cv2.projectPoints(
                points[valid],
                rvec,
                np.array(row["translation_vector"][view]),
                np.array(row["intrinsic_matrix"][view]),
                np.array(row["distortion"][view]),
            )
            keypoints_2d = np.array(row["keypoints_2d"][view], dtype=np.float64)
            np.testing.assert_allclose(keypoints_2d[valid], projected.reshape(-1, 2), rtol=0, atol=1e-4)
            checked += 1
    assert multiview.num_rows == len(range(0, NUM_SAMPLES, 4)) and checked > 0


def test_mocap_and_cameras_configs(sample_release, cache_dir):
    mocap = rat7m.load_dataset("mocap", data_dir=sample_release.root, cache_dir=cache_dir, cameras=[6, 1])
    truth = sample_release.recordings["s5-d1"]
    assert mocap["test"].num_rows == NUM_SAMPLES
    rows = mocap["test"].with_format("numpy")
    np.testing.assert_array_equal(rows["keypoints_3d"], truth.keypoints_3d.astype(np.float32))
    np.testing.assert_array_equal(rows["frame_index"], np.stack([truth.frame_index[1], truth.frame_index[6]], axis=1))
    cameras = rat7m.load_dataset("cameras", split="train", data_dir=sample_release.root, cache_dir=cache_dir)
    assert cameras["camera"] == [1, 2, 3, 4, 5, 6]
    assert set(cameras["image_width"]) == {sample_release.spec.width}
    assert set(cameras["image_height"]) == {sample_release.spec.height}
    for row in cameras:  # python lists: with_format("numpy") would hand float64 columns over as float32
        reference = sample_release.recordings["s1-d1"].cameras[row["camera"]].to_opencv()
        np.testing.assert_array_equal(np.array(row["intrinsic_matrix"]), reference.camera_matrix)
        np.testing.assert_array_equal(np.array(row["rotation_matrix"]), reference.rotation_matrix)
        np.testing.assert_array_equal(np.array(row["distortion"]), reference.distortion)


def test_a_split_without_selected_recordings_is_left_out(sample_release, cache_dir):
    only_train = rat7m.load_dataset("mocap", data_dir=sample_release.root, cache_dir=cache_dir, recordings=["s1-d1"])
    assert list(only_train) == ["train"]


def test_formats_give_arrays_and_tensors(frames):
    import torch

    row = frames["train"].with_format("torch")[0]
    assert row["keypoints_2d"].shape == (NUM_MARKERS, 2) and row["image"].dtype == torch.uint8
    row = frames["train"].with_format("numpy")[0]
    assert row["keypoints_3d"].shape == (NUM_MARKERS, 3) and row["image"].ndim == 3
