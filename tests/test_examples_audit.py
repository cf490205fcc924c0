"""Audit of `rat7m_builder.examples`: rows the other tests leave unchecked.

Damaged frames in the middle of a chunk (``on_corrupt_video="skip"``) must not shift the columns of
the rows kept after them; every engine (tables, examples, Ray) builds the same rows; rows follow
the video; mocap rows carry their own subject and day; ``multiview`` shards follow the first
selected camera.
"""

from __future__ import annotations

import io
import os

import av
import datasets
import numpy as np
import pytest
from helpers import assert_same_rows, assert_same_table, decode_jpeg, raw_images

import rat7m
from rat7m_builder.errors import CorruptVideoWarning
from rat7m_builder.examples import generate_shard, mocap_table
from rat7m_builder.sample import SampleSpec, read_barcode, write_sample
from rat7m_builder.video import scan_damage

NUM_SAMPLES = 30  # SampleSpec default, per recording
#: The damaged chunk: camera 2 of s1-d1, the first of two 24-frame chunks (keyframes every 12 or so).
DAMAGED_CAMERA = 2
DAMAGED_CHUNK = "s1-d1-camera2-0.mp4"


def _damage_packet(path: str, position: int) -> None:
    """Overwrite the second half of the packet of the ``position``-th frame (presentation order)."""
    with open(path, "rb") as file:
        data = file.read()
    with av.open(io.BytesIO(data)) as container:
        packets = sorted(
            (packet.pts, packet.pos, packet.size)
            for packet in container.demux(container.streams.video[0])
            if packet.dts is not None
        )
    _, start, size = packets[position]
    noise = np.random.default_rng(position).integers(0, 256, size - size // 2, dtype=np.uint8).tobytes()
    with open(path, "wb") as file:
        file.write(data[: start + size // 2] + noise + data[start + size :])


@pytest.fixture(scope="module")
def damaged_release(tmp_path_factory):
    """s1-d1 in 24-frame chunks, camera 2's first chunk damaged at its fourth frame.

    The frames lost (those predicted from the damaged one, up to the next keyframe) lie between
    intact frames of the same chunk, so kept rows come after left-out rows in one shard.
    """
    spec = SampleSpec(recordings=("s1-d1",), chunk_frames=24, layout="flat")
    release = write_sample(str(tmp_path_factory.mktemp("damaged")), spec)
    path = os.path.join(release.root, DAMAGED_CHUNK)
    _damage_packet(path, 3)
    with open(path, "rb") as file:
        bad = scan_damage(file, DAMAGED_CHUNK).bad
    first_kept_after_damage = max(bad) + 1
    assert min(bad) > 0 and first_kept_after_damage < spec.chunk_frames, bad  # intact frames on both sides
    return release, frozenset(bad)


def _check_rows_against_truth(rows, truth) -> None:
    """Each frames row: its frame is its sample's, its image shows that frame, its keypoints that sample's."""
    for row in rows:
        camera, sample = int(row["camera"]), int(row["sample_index"])
        assert row["frame_index"] == truth.frame_index[camera][sample], (camera, sample)
        assert read_barcode(decode_jpeg(row["image"]["bytes"])) == row["frame_index"], (camera, sample)
        expected_3d = truth.keypoints_3d[sample].astype(np.float32)
        np.testing.assert_array_equal(np.array(row["keypoints_3d"], np.float32), expected_3d)
        expected_2d = truth.cameras[camera].project(truth.keypoints_3d[sample]).astype(np.float32)
        np.testing.assert_allclose(np.array(row["keypoints_2d"], np.float32), expected_2d, rtol=0, atol=1e-4)


def test_rows_kept_after_damaged_frames_keep_their_own_sample_frame_and_pose(damaged_release, tmp_path):
    release, bad = damaged_release
    truth = release.recordings["s1-d1"]
    expected = [t for t in range(NUM_SAMPLES) if int(truth.frame_index[DAMAGED_CAMERA][t]) not in bad]
    with pytest.warns(CorruptVideoWarning, match=rf"\b{NUM_SAMPLES - len(expected)} examples left out"):
        frames = rat7m.load_dataset(
            "frames",
            split="train",
            data_dir=release.root,
            cache_dir=str(tmp_path / "prepared"),
            cameras=[DAMAGED_CAMERA],
            on_corrupt_video="skip",
        )
    assert sorted(frames["sample_index"]) == expected
    prepared = list(raw_images(frames))
    _check_rows_against_truth(prepared, truth)
    # streaming builds its rows example by example: the same rows
    stream = rat7m.load_dataset(
        "frames",
        split="train",
        streaming=True,
        data_dir=release.root,
        cache_dir=str(tmp_path / "streamed"),
        cameras=[DAMAGED_CAMERA],
        on_corrupt_video="skip",
    )
    assert_same_rows(list(stream.cast_column("image", datasets.Image(decode=False))), prepared)


def test_multiview_leaves_out_and_counts_the_samples_with_a_damaged_view(damaged_release, tmp_path):
    release, bad = damaged_release
    truth = release.recordings["s1-d1"]
    damaged_samples = {t for t in range(NUM_SAMPLES) if int(truth.frame_index[DAMAGED_CAMERA][t]) in bad}
    with pytest.warns(CorruptVideoWarning, match=rf"\b{len(damaged_samples)} examples left out"):
        multiview = rat7m.load_dataset(
            "multiview",
            split="train",
            data_dir=release.root,
            cache_dir=str(tmp_path),
            cameras=[1, DAMAGED_CAMERA],
            on_corrupt_video="skip",
        )
    assert multiview["sample_index"] == [t for t in range(NUM_SAMPLES) if t not in damaged_samples]
    for row in raw_images(multiview, "images"):
        for view, camera in enumerate(row["cameras"]):
            frame = int(truth.frame_index[camera][row["sample_index"]])
            assert row["frame_index"][view] == frame
            assert read_barcode(decode_jpeg(row["images"][view]["bytes"])) == frame


@pytest.fixture(scope="module")
def planned(sample_release):
    """config → (shards of each split, selection) of the default sample, as a prepare would run them."""

    def plan(config: str, **kwargs):
        builder = rat7m.Rat7M(config_name=config, data_dir=sample_release.root, **kwargs)
        return builder.plan()

    return plan


def test_mocap_examples_equal_the_mocap_table_rows(planned):
    """Ray exports ``mocap`` through `generate_shard`, a prepare through `mocap_table`: one set of rows."""
    from rat7m_builder.features import FEATURES

    splits, selection = planned("mocap", cameras=[2, 6], frame_step=2)
    features = FEATURES["mocap"]()
    for shards in splits.values():
        for shard in shards:
            examples = datasets.Dataset.from_list(list(generate_shard(shard, selection)), features=features)
            assert examples.num_rows == NUM_SAMPLES // 2
            assert_same_table(examples.data.table, mocap_table(shard, selection, features))


def test_mocap_rows_carry_their_recordings_subject_and_day(sample_release, tmp_path):
    mocap = rat7m.load_dataset("mocap", data_dir=sample_release.root, cache_dir=str(tmp_path))
    assert set(zip(mocap["train"]["subject"], mocap["train"]["day"], strict=True)) == {(1, 1)}
    assert set(zip(mocap["test"]["subject"], mocap["test"]["day"], strict=True)) == {(5, 1)}
    stream = rat7m.load_dataset("mocap", "test", streaming=True, data_dir=sample_release.root)
    assert {(row["subject"], row["day"]) for row in stream} == {(5, 1)}


def test_frames_rows_follow_the_video_and_a_repeated_frame_keeps_sample_order(sample_release, tmp_path):
    """Within a camera, rows come by frame, and two samples showing one frame in ascending sample order."""
    frames = rat7m.load_dataset(
        "frames", split="train", data_dir=sample_release.root, cache_dir=str(tmp_path), cameras=[3, 4]
    )
    repeated = sample_release.spec.repeated_sample
    for camera in (3, 4):
        rows = [
            (frame, sample)
            for c, frame, sample in zip(frames["camera"], frames["frame_index"], frames["sample_index"], strict=True)
            if c == camera
        ]
        assert rows == sorted(rows)
        position = rows.index(next(row for row in rows if row[1] == repeated))
        assert rows[position - 1][1] == repeated - 1 and rows[position - 1][0] == rows[position][0]
    # the cameras come one after the other, as their shards are
    assert frames["camera"] == [3] * NUM_SAMPLES + [4] * NUM_SAMPLES


def test_multiview_shards_follow_the_chunks_of_the_first_selected_camera(sample_release):
    """README: one shard per run of samples whose first selected camera's frames share a chunk."""
    # camera 1 shows frames 0–29 (chunks 0, 8, 16, 24), camera 6 frames 5–34 (chunks 0 … 32)
    stream = rat7m.load_dataset("multiview", "train", streaming=True, data_dir=sample_release.root, cameras=[6, 1])
    assert stream.num_shards == 4
    assert [row["sample_index"] for row in stream] == list(range(NUM_SAMPLES))
    only_6 = rat7m.load_dataset("multiview", "train", streaming=True, data_dir=sample_release.root, cameras=[6])
    assert only_6.num_shards == 5
