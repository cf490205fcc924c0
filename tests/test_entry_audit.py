"""Audit of the public entry `rat7m`: configs and their selection, splits, `load_dataset` and `prepare`.

What a user passes must select exactly what it names (once each, whatever the spelling), be refused
with a `SelectionError` when it means nothing, and reach the build (quality, processes, download
mode); defaults taken from a local copy must follow the selected cameras.
"""

from __future__ import annotations

import glob
import io
import os
import shutil

import numpy as np
import pytest
from helpers import raw_images
from PIL import Image

import rat7m
from rat7m_builder.errors import CorruptVideoWarning, MissingFileError, SelectionError
from rat7m_builder.manifest import RECORDINGS
from rat7m_builder.notes import CORRUPT_VIDEO_HEADING
from rat7m_builder.sample import write_mini_annotation

NUM_SAMPLES = 30  # SampleSpec default, per recording


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"recordings": []}, r"recordings: an empty selection\. Valid recordings"),
        ({"cameras": []}, r"cameras: an empty selection\. Valid cameras"),
        ({"cameras": [True]}, r"cameras: unknown \[True\]"),  # a bool is no camera number, though True == 1
        ({"frame_step": True}, r"frame_step must be an integer ≥ 1, got True"),
        ({"jpeg_quality": 0}, r"jpeg_quality must be an integer from 1 to 100, got 0"),
        ({"on_corrupt_video": "ignore"}, r"on_corrupt_video must be one of error, skip, got 'ignore'"),
    ],
)
def test_selections_that_mean_nothing_are_refused(kwargs, message, sample_release, cache_dir):
    with pytest.raises(SelectionError, match=message):
        rat7m.load_dataset("mocap", data_dir=sample_release.root, cache_dir=cache_dir, **kwargs)


def test_each_recording_and_camera_is_selected_once_in_release_order(sample_release, cache_dir):
    mocap = rat7m.load_dataset(
        "mocap",
        data_dir=sample_release.root,
        cache_dir=cache_dir,
        recordings=["s5-d1", "s1-d1", "s1-d1"],
        cameras=[6, 2, 2],
    )
    assert {split: mocap[split].num_rows for split in mocap} == {"train": NUM_SAMPLES, "test": NUM_SAMPLES}
    truth = sample_release.recordings["s1-d1"]
    frame_index = np.array(mocap["train"]["frame_index"])
    np.testing.assert_array_equal(frame_index, np.stack([truth.frame_index[2], truth.frame_index[6]], axis=1))
    # Each row names the cameras its frame_index list follows, in that order (as multiview rows do).
    for split in mocap:
        assert mocap[split]["cameras"] == [[2, 6]] * NUM_SAMPLES


def test_a_single_name_or_number_selects_that_one(sample_release, cache_dir):
    mocap = rat7m.load_dataset(
        "mocap", data_dir=sample_release.root, cache_dir=cache_dir, recordings="s5-d1", cameras=4
    )
    assert list(mocap) == ["test"]
    assert set(mocap["test"]["recording"]) == {"s5-d1"}
    assert np.array(mocap["test"]["frame_index"]).shape == (NUM_SAMPLES, 1)
    assert mocap["test"]["cameras"] == [[4]] * NUM_SAMPLES


def test_naming_every_recording_with_a_partial_copy_names_the_missing_ones(sample_release, cache_dir):
    # Given explicitly, all seven are asked for: the copy lacks five, which is an error, not a quiet two.
    with pytest.raises(
        MissingFileError, match=r"no motion capture for \['s2-d1', 's2-d2', 's3-d1', 's4-d1', 's5-d2'\]"
    ):
        rat7m.load_dataset("mocap", data_dir=sample_release.root, cache_dir=cache_dir, recordings=list(RECORDINGS))


def test_default_recordings_are_those_with_video_of_the_selected_cameras(release_copy, cache_dir):
    # s5-d1 keeps the video of camera 2 only
    for path in glob.glob(os.path.join(release_copy, "video_sequences", "s5-d1-camera*.mp4")):
        if "-camera2-" not in os.path.basename(path):
            os.remove(path)
    frames = rat7m.load_dataset("frames", data_dir=release_copy, cache_dir=cache_dir, cameras=[1])
    assert list(frames) == ["train"] and set(frames["train"]["recording"]) == {"s1-d1"}
    both = rat7m.load_dataset("frames", data_dir=release_copy, cache_dir=cache_dir, cameras=[2])
    assert set(both) == {"train", "test"} and both["test"].num_rows == NUM_SAMPLES


def test_the_cameras_config_needs_no_video(release_copy, cache_dir):
    shutil.rmtree(os.path.join(release_copy, "video_sequences"))
    cameras = rat7m.load_dataset("cameras", data_dir=release_copy, cache_dir=cache_dir)
    assert {split: cameras[split]["camera"] for split in cameras} == {
        "train": [1, 2, 3, 4, 5, 6],
        "test": [1, 2, 3, 4, 5, 6],
    }
    assert set(cameras["train"]["image_width"]) == set(cameras["train"]["image_height"]) == {None}


def _quantization(jpeg: bytes) -> dict:
    return Image.open(io.BytesIO(jpeg)).quantization


def _quantization_at(quality: int) -> dict:
    """The quantization tables libjpeg writes at ``quality`` (PIL and the builder's encoder share them)."""
    out = io.BytesIO()
    Image.new("RGB", (16, 16)).save(out, "JPEG", quality=quality)
    return _quantization(out.getvalue())


def test_jpeg_quality_reaches_the_images_and_defaults_to_90(sample_release, tmp_path):
    selection = {"recordings": ["s1-d1"], "cameras": [1], "data_dir": sample_release.root}
    default = raw_images(rat7m.load_dataset("frames", "train", cache_dir=str(tmp_path / "a"), **selection))
    assert _quantization(default[0]["image"]["bytes"]) == _quantization_at(90)
    low = raw_images(rat7m.load_dataset("frames", "train", cache_dir=str(tmp_path / "b"), jpeg_quality=30, **selection))
    assert _quantization(low[0]["image"]["bytes"]) == _quantization_at(30)
    stream = rat7m.load_dataset("frames", "train", streaming=True, jpeg_quality=30, **selection)
    first = next(iter(raw_images(stream)))
    assert first["image"]["bytes"] == low[0]["image"]["bytes"]


def test_splits_come_train_then_test(sample_release, cache_dir):
    assert list(rat7m.load_dataset("mocap", data_dir=sample_release.root, cache_dir=cache_dir)) == ["train", "test"]
    streamed = rat7m.load_dataset("mocap", streaming=True, data_dir=sample_release.root, cache_dir=cache_dir)
    assert list(streamed) == ["train", "test"]


def test_load_dataset_hands_num_proc_and_download_mode_to_the_prepare(sample_release, cache_dir, monkeypatch):
    rat7m.load_dataset("mocap", data_dir=sample_release.root, cache_dir=cache_dir)
    download_and_prepare, seen = rat7m.Rat7M.download_and_prepare, []

    def recorded(builder, *args, **kwargs):
        seen.append(kwargs)
        return download_and_prepare(builder, *args, **kwargs)

    split_generators, planned = rat7m.Rat7M._split_generators, []

    def counted(builder, dl_manager):
        planned.append(builder.config.name)
        return split_generators(builder, dl_manager)

    monkeypatch.setattr(rat7m.Rat7M, "download_and_prepare", recorded)
    monkeypatch.setattr(rat7m.Rat7M, "_split_generators", counted)
    again = rat7m.load_dataset(
        "mocap", data_dir=sample_release.root, cache_dir=cache_dir, num_proc=2, download_mode="force_redownload"
    )
    assert again["train"].num_rows == NUM_SAMPLES
    assert seen[0]["num_proc"] == 2 and str(seen[0]["download_mode"]).endswith("force_redownload")
    assert planned == ["mocap"]  # built again, not taken from the cache


def test_a_relative_annotation_file_is_the_one_in_the_current_folder(sample_release, tmp_path, monkeypatch):
    """The cache is named after the annotation's absolute path: another folder's file is another build."""
    cache = str(tmp_path / "cache")
    for folder, sample_step in (("every_2nd", 2), ("every_3rd", 3)):
        os.makedirs(tmp_path / folder)
        write_mini_annotation(sample_release, str(tmp_path / folder / "annotation.pkl"), sample_step=sample_step)
    rows = {}
    for folder in ("every_2nd", "every_3rd"):
        monkeypatch.chdir(tmp_path / folder)
        mini = rat7m.load_dataset(
            "mini", "test", data_dir=sample_release.root, cache_dir=cache, annotation_file="annotation.pkl", cameras=[1]
        )
        rows[folder] = mini.num_rows
    assert rows == {"every_2nd": NUM_SAMPLES // 2, "every_3rd": NUM_SAMPLES // 3}


def test_numpy_integers_select_like_python_ones(sample_release, cache_dir):
    """``np.arange`` and array indexing give NumPy integers: they are integers (and NumPy's True no camera)."""
    spelled = {"cameras": np.int64(2), "frame_step": np.int64(3), "jpeg_quality": np.int32(80)}
    mocap = rat7m.load_dataset("mocap", "train", data_dir=sample_release.root, cache_dir=cache_dir, **spelled)
    assert mocap["sample_index"] == list(range(0, NUM_SAMPLES, 3))
    assert np.array(mocap["frame_index"]).shape == (NUM_SAMPLES // 3, 1)
    as_python = {key: int(value) for key, value in spelled.items()}
    builders = [
        rat7m.Rat7M(config_name="mocap", data_dir=sample_release.root, **kwargs) for kwargs in (spelled, as_python)
    ]
    assert builders[0].config_id == builders[1].config_id  # one cache for both spellings
    with pytest.raises(SelectionError, match=r"cameras: unknown \[np\.True_\]"):
        rat7m.load_dataset("mocap", data_dir=sample_release.root, cache_dir=cache_dir, cameras=[np.True_])


def test_build_notes_tell_what_skip_left_out_also_from_the_cache(release_copy, cache_dir):
    """The dataset card's build notes come from ``builder.build_notes``: the damaged file must be in them."""
    with open(os.path.join(release_copy, "video_sequences", "s1-d1-camera6-8.mp4"), "r+b") as file:
        file.truncate(300)
    selection = {"recordings": ["s1-d1"], "cameras": [6], "on_corrupt_video": "skip"}
    for _ in ("built", "loaded from the cache"):
        builder = rat7m.Rat7M(config_name="frames", data_dir=release_copy, cache_dir=cache_dir, **selection)
        with pytest.warns(CorruptVideoWarning, match="9 examples left out"):
            rat7m.prepare(builder)
        lines = builder.build_notes[CORRUPT_VIDEO_HEADING]
        assert lines[0].startswith("9 examples left out")  # samples 3–11 (11 repeats 10's frame)
        assert any(line.startswith("s1-d1-camera6-8.mp4: ") for line in lines[1:]), lines
