"""Frame alignment and selection per config: which sample meets which frame, in which order, with which dtype.

The sample's frame indices are monotonic; RAT7M.md says the real ones need not be, so one release
here swaps the frames of two samples within a chunk and of two across a chunk boundary.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import decode_jpeg, raw_images

import rat7m
from rat7m_builder import sample as sample_module
from rat7m_builder.sample import SampleSpec, read_barcode, write_sample

CAMERAS = range(1, 7)
NUM_SAMPLES = 30  # per recording in the default sample


@pytest.fixture(scope="module")
def swapped_release(tmp_path_factory):
    """s1-d1 with samples 4 ↔ 5 (one chunk) and 7 ↔ 8 (frames 7 and 8 are in different chunks) swapped."""
    fabricate = sample_module.fabricate_frame_index

    def swapped(spec):
        frames = fabricate(spec)
        for index in frames.values():
            index[[4, 5]] = index[[5, 4]]
            index[[7, 8]] = index[[8, 7]]
        return frames

    sample_module.fabricate_frame_index = swapped  # module-scoped fixture: no function-scoped monkeypatch
    try:
        return write_sample(str(tmp_path_factory.mktemp("swapped")), SampleSpec(recordings=("s1-d1",), layout="flat"))
    finally:
        sample_module.fabricate_frame_index = fabricate


def test_a_non_monotonic_frame_index_keeps_image_sample_and_pose_together(swapped_release, tmp_path):
    truth = swapped_release.recordings["s1-d1"]
    frames = rat7m.load_dataset("frames", split="train", data_dir=swapped_release.root, cache_dir=str(tmp_path))
    assert frames.num_rows == 6 * NUM_SAMPLES
    for row in raw_images(frames).with_format("numpy"):
        camera, sample = int(row["camera"]), int(row["sample_index"])
        assert row["frame_index"] == truth.frame_index[camera][sample]
        assert read_barcode(decode_jpeg(row["image"]["bytes"])) == row["frame_index"]
        np.testing.assert_array_equal(row["keypoints_3d"], truth.keypoints_3d[sample].astype(np.float32))
    # rows follow the video (each chunk decoded once, front to back), not the sample order
    for camera in CAMERAS:
        index = [f for c, f in zip(frames["camera"], frames["frame_index"], strict=True) if c == camera]
        assert index == sorted(index)


def test_multiview_keeps_a_sample_alone_in_its_chunk(tmp_path):
    # 25 samples in chunks of 8 frames: sample 24 is the only one in the last chunk
    release = write_sample(str(tmp_path / "r"), SampleSpec(recordings=("s1-d1",), num_samples=25, layout="flat"))
    multiview = rat7m.load_dataset("multiview", split="train", data_dir=release.root, cache_dir=str(tmp_path / "c"))
    assert multiview["sample_index"] == list(range(25))


def test_frame_step_in_mocap(sample_release, cache_dir):
    truth = sample_release.recordings["s5-d1"]
    mocap = rat7m.load_dataset("mocap", split="test", data_dir=sample_release.root, cache_dir=cache_dir, frame_step=3)
    rows = mocap.with_format("numpy")
    assert list(rows["sample_index"]) == list(range(0, NUM_SAMPLES, 3))
    np.testing.assert_array_equal(rows["keypoints_3d"], truth.keypoints_3d[::3].astype(np.float32))


def test_frame_step_in_frames(sample_release, cache_dir):
    frames = rat7m.load_dataset("frames", "train", data_dir=sample_release.root, cache_dir=cache_dir, frame_step=3)
    expected = [(camera, sample) for camera in CAMERAS for sample in range(0, NUM_SAMPLES, 3)]
    assert sorted(zip(frames["camera"], frames["sample_index"], strict=True)) == expected


def test_frame_step_in_videos(sample_release, cache_dir):
    videos = rat7m.load_dataset("videos", "train", data_dir=sample_release.root, cache_dir=cache_dir, frame_step=3)
    seen = set()
    for row in videos:
        kept = [sample for sample in row["sample_index"] if sample >= 0]
        assert all(sample % 3 == 0 for sample in kept)
        seen.update((row["camera"], sample) for sample in kept)
    assert seen == {(camera, sample) for camera in CAMERAS for sample in range(0, NUM_SAMPLES, 3)}


def test_stored_arrow_types_are_the_documented_ones(sample_release, cache_dir):
    """Keypoints float32, indices int32, calibration float64 (the card), pinned in the Arrow schema itself:
    `with_format("numpy")` would hide a float64 keypoint column (it hands float columns over as float32)."""
    frames = rat7m.load_dataset("frames", split="test", data_dir=sample_release.root, cache_dir=cache_dir)
    types = {field.name: str(field.type) for field in frames.data.schema}
    assert types["keypoints_3d"] == "fixed_size_list<item: fixed_size_list<item: float>[3]>[20]"
    assert types["keypoints_2d"] == "fixed_size_list<item: fixed_size_list<item: float>[2]>[20]"
    assert types["frame_index"] == types["sample_index"] == types["camera"] == "int32"
    assert types["intrinsic_matrix"] == "fixed_size_list<item: fixed_size_list<item: double>[3]>[3]"
    assert types["translation_vector"] == "fixed_size_list<item: double>[3]"
    multiview = rat7m.load_dataset("multiview", split="test", data_dir=sample_release.root, cache_dir=cache_dir)
    assert str(multiview.data.schema.field("frame_index").type) == "list<item: int32>"
