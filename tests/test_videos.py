"""The compact `videos` config and `rat7m.decode_frames`."""

from __future__ import annotations

import os

import numpy as np
import pytest

import rat7m
from rat7m_builder.errors import VideoDecodeError
from rat7m_builder.sample import read_barcode


@pytest.fixture(scope="module")
def videos(sample_release, tmp_path_factory):
    return rat7m.load_dataset(
        "videos", split="train", data_dir=sample_release.root, cache_dir=str(tmp_path_factory.mktemp("videos"))
    )


def test_one_row_per_chunk_with_the_mp4_unchanged(videos, sample_release):
    truth = sample_release.recordings["s1-d1"]
    chunk_frames = sample_release.spec.chunk_frames
    chunks_per_camera = -(-truth.num_video_frames // chunk_frames)
    assert videos.num_rows == 6 * chunks_per_camera
    for row in videos:
        name = f"s1-d1-camera{row['camera']}-{row['start_frame']}.mp4"
        with open(os.path.join(sample_release.root, "video_sequences", name), "rb") as file:
            assert row["video"]["bytes"] == file.read()
        assert row["num_frames"] == min(chunk_frames, truth.num_video_frames - row["start_frame"])
        assert len(row["sample_index"]) == row["num_frames"] == len(row["keypoints_2d"])


def test_per_frame_labels_follow_the_motion_capture(videos, sample_release):
    truth = sample_release.recordings["s1-d1"]
    seen = set()
    for row in videos.with_format("numpy"):
        camera = int(row["camera"])
        for position, sample in enumerate(row["sample_index"]):
            frame = row["start_frame"] + position
            if sample < 0:  # no sample maps to this video frame
                assert frame not in set(truth.frame_index[camera].tolist())
                assert np.isnan(row["keypoints_3d"][position]).all()
                continue
            seen.add((camera, int(sample)))
            assert truth.frame_index[camera][sample] == frame
            expected = truth.cameras[camera].project(truth.keypoints_3d[sample]).astype(np.float32)
            np.testing.assert_allclose(row["keypoints_2d"][position], expected, atol=1e-4)
    repeated = sample_release.spec.repeated_sample
    # every sample has its frame, except the repeat, whose frame already belongs to the sample before it
    assert seen == {(c, t) for c in range(1, 7) for t in range(30) if t != repeated}


def test_decode_frames_returns_the_requested_frames(videos):
    row = videos.filter(lambda r: r["camera"] == 2 and r["start_frame"] == 8)[0]
    indices = [5, 0, 5, 3]
    images = rat7m.decode_frames(row["video"], indices)
    assert [read_barcode(image) for image in images] == [8 + i for i in indices]
    assert images[0].shape == (256, 320, 3) and images[0].dtype == np.uint8
    frames = row["num_frames"]
    with pytest.raises(
        VideoDecodeError, match=rf"has no frame\(s\) {frames}: it holds {frames} frames \(positions 0 to {frames - 1},"
    ):
        rat7m.decode_frames(row["video"]["bytes"], [frames])


def test_videos_export_stays_within_5_percent_of_the_source_mp4s(tmp_path):
    from rat7m_builder.hub import export_dataset
    from rat7m_builder.sample import SampleSpec, write_sample

    # Realistic bytes per frame (textured, noisy frames: ~19 KB each) so the per-frame labels
    # weigh what they will weigh on the real release.
    release = write_sample(str(tmp_path / "release"), SampleSpec(recordings=("s1-d1",), sensor_noise=6))
    source = os.path.join(release.root, "video_sequences")
    source_bytes = sum(os.path.getsize(os.path.join(source, name)) for name in os.listdir(source))
    videos = rat7m.load_dataset("videos", data_dir=release.root, cache_dir=str(tmp_path / "cache"))
    export_dataset(videos, "videos", str(tmp_path / "hub"))
    folder = tmp_path / "hub" / "videos"
    exported_bytes = sum(path.stat().st_size for path in folder.glob("*.parquet"))
    assert exported_bytes <= 1.05 * source_bytes, (exported_bytes, source_bytes)
    row = videos["train"][0]
    assert [read_barcode(image) for image in rat7m.decode_frames(row["video"], [0, 7])] == [0, 7]
