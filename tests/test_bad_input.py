"""Bad selections and broken release copies: clear errors that name the file, and no false cache."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import zipfile

import datasets
import multiprocess.context
import pytest
from PIL import Image

import rat7m
from rat7m_builder.errors import (
    CorruptVideoWarning,
    MissingFileError,
    SelectionError,
    UnsafeArchiveError,
    VideoDecodeError,
)
from rat7m_builder.sample import SampleSpec, video_frames, write_mp4, write_sample


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"recordings": ["s9-d9"]}, r"Valid recordings: s1-d1, s2-d1, s2-d2, s3-d1, s4-d1, s5-d1, s5-d2"),
        ({"recordings": ["s1-d2"]}, r"unknown \['s1-d2'\]"),
        ({"cameras": [0, 7]}, r"Valid cameras: 1, 2, 3, 4, 5, 6"),
        ({"frame_step": 0}, r"frame_step must be an integer ≥ 1"),
        ({"jpeg_quality": 101}, r"jpeg_quality must be an integer from 1 to 100"),
        ({"source": "torrent"}, r"source must be one of files, archives"),
    ],
)
def test_invalid_selection_is_a_value_error_listing_valid_values(kwargs, message, sample_release, cache_dir):
    with pytest.raises(SelectionError, match=message) as error:
        rat7m.load_dataset("mocap", data_dir=sample_release.root, cache_dir=cache_dir, **kwargs)
    assert isinstance(error.value, ValueError)


def test_unknown_config(sample_release, cache_dir):
    with pytest.raises(ValueError, match="frames"):
        rat7m.load_dataset("pictures", data_dir=sample_release.root, cache_dir=cache_dir)


def test_missing_data_dir_and_empty_data_dir(tmp_path, cache_dir):
    with pytest.raises(MissingFileError, match="is not a folder"):
        rat7m.load_dataset("mocap", data_dir=str(tmp_path / "nowhere"), cache_dir=cache_dir)
    os.makedirs(tmp_path / "empty")
    with pytest.raises(SelectionError, match="no mocap-s"):
        rat7m.load_dataset("mocap", data_dir=str(tmp_path / "empty"), cache_dir=cache_dir)


def test_selected_recording_without_its_mat(release_copy, cache_dir):
    with pytest.raises(MissingFileError, match=r"mocap-s2-d1\.mat"):
        rat7m.load_dataset("mocap", data_dir=release_copy, cache_dir=cache_dir, recordings=["s2-d1"])


def test_missing_middle_chunk_is_named(release_copy, cache_dir):
    os.remove(os.path.join(release_copy, "video_sequences", "s1-d1-camera2-16.mp4"))
    with pytest.raises(MissingFileError, match=r"camera 2 of s1-d1 has gaps.*s1-d1-camera2-16\.mp4"):
        rat7m.load_dataset("frames", data_dir=release_copy, cache_dir=cache_dir)
    # the same selection without camera 2 works, and so do configs that need no video
    frames = rat7m.load_dataset("frames", split="train", data_dir=release_copy, cache_dir=cache_dir, cameras=[1, 3])
    assert set(frames["camera"]) == {1, 3}
    assert rat7m.load_dataset("mocap", split="train", data_dir=release_copy, cache_dir=cache_dir).num_rows == 30


def test_camera_without_any_chunk_is_named(release_copy, cache_dir):
    for path in glob.glob(os.path.join(release_copy, "video_sequences", "s5-d1-camera6-*.mp4")):
        os.remove(path)
    with pytest.raises(
        MissingFileError,
        match=r"camera 6 of s5-d1 has no video chunks.*s5-d1-camera6-0\.mp4.*out with "
        r"cameras=\[\.\.\.\] or s5-d1 out with recordings=\[\.\.\.\]",
    ):
        rat7m.load_dataset("multiview", data_dir=release_copy, cache_dir=cache_dir)


def test_first_chunks_missing_when_no_camera_has_two_chunks_left(tmp_path, cache_dir):
    # Every camera keeps only its second (and last) chunk: no gap between chunks to measure the chunk
    # length by, but a release's chunks start at 0, so each camera's first chunk is missing.
    spec = SampleSpec(recordings=("s1-d1",), num_samples=20, chunk_frames=16, tail_frames=0)
    release = write_sample(str(tmp_path / "release"), spec)
    for path in glob.glob(os.path.join(release.root, "video_sequences", "*-0.mp4")):
        os.remove(path)
    assert all(not name.endswith("-0.mp4") for name in os.listdir(os.path.join(release.root, "video_sequences")))
    expected = r"camera 1 of s1-d1 has gaps in its video chunks: missing s1-d1-camera1-0\.mp4"
    with pytest.raises(MissingFileError, match=expected):
        rat7m.load_dataset("frames", data_dir=release.root, cache_dir=cache_dir)


def test_missing_last_chunk_means_frames_past_the_end(release_copy, cache_dir):
    os.remove(os.path.join(release_copy, "video_sequences", "s1-d1-camera6-32.mp4"))
    with pytest.raises(MissingFileError, match=r"s1-d1-camera6-24\.mp4: the motion capture .* frame 34"):
        rat7m.load_dataset("frames", data_dir=release_copy, cache_dir=cache_dir, cameras=[6])


def _prepared_info_files(cache_dir: str) -> list[str]:
    return glob.glob(os.path.join(cache_dir, "**", "dataset_info.json"), recursive=True)


@pytest.mark.parametrize("num_proc", [None, 2])
def test_truncated_mp4_names_the_file_and_leaves_no_complete_cache(release_copy, cache_dir, sample_release, num_proc):
    path = os.path.join(release_copy, "video_sequences", "s1-d1-camera3-16.mp4")
    with open(path, "rb") as file:
        data = file.read()
    with open(path, "wb") as file:
        file.write(data[: len(data) // 2])
    # with num_proc the error comes back from a worker process: still rat7m's, naming the file
    with pytest.raises(VideoDecodeError, match=r"s1-d1-camera3-16\.mp4"):
        rat7m.load_dataset("frames", data_dir=release_copy, cache_dir=cache_dir, cameras=[3], num_proc=num_proc)
    # called on the builder directly, `datasets`' error type, but with rat7m's message and error inside
    builder = rat7m.Rat7M(config_name="frames", data_dir=release_copy, cache_dir=cache_dir, cameras=[3])
    with pytest.raises(datasets.exceptions.DatasetGenerationError, match=r"s1-d1-camera3-16\.mp4") as error:
        builder.download_and_prepare(num_proc=num_proc)
    assert isinstance(error.value.error, VideoDecodeError)
    assert _prepared_info_files(cache_dir) == []  # nothing a later run could take for a finished build
    shutil.copy(os.path.join(sample_release.root, "video_sequences", "s1-d1-camera3-16.mp4"), path)
    repaired = rat7m.load_dataset("frames", data_dir=release_copy, cache_dir=cache_dir, cameras=[3])
    assert repaired["train"].num_rows == 30


def test_zip_with_escaping_member_is_refused(tmp_path, cache_dir, sample_release):
    root = tmp_path / "zips"
    os.makedirs(root)
    with zipfile.ZipFile(root / "13739233.zip", "w") as archive:
        archive.write(os.path.join(sample_release.root, "annotations", "mocap-s1-d1.mat"), "mocap-s1-d1.mat")
        archive.writestr("../../evil.mp4", b"x")
    with pytest.raises(UnsafeArchiveError, match=r"13739233\.zip: member '\.\./\.\./evil\.mp4'"):
        rat7m.load_dataset("mocap", data_dir=str(root), cache_dir=cache_dir)
    assert not (tmp_path / "evil.mp4").exists()


@pytest.mark.parametrize(
    ("removed", "named"),
    [
        # the camera's first gap is two chunks long: measured against its siblings, chunk 8 is missing
        (["8"], ["s1-d1-camera2-8.mp4"]),
        # every other chunk gone: the camera's own gaps look regular (16 frames), its siblings' do not
        (["8", "24"], ["s1-d1-camera2-8.mp4", "s1-d1-camera2-24.mp4"]),
    ],
)
def test_missing_chunks_are_found_against_the_other_cameras(release_copy, cache_dir, removed, named):
    for start in removed:
        os.remove(os.path.join(release_copy, "video_sequences", f"s1-d1-camera2-{start}.mp4"))
    with pytest.raises(MissingFileError) as error:
        rat7m.load_dataset("frames", data_dir=release_copy, cache_dir=cache_dir, recordings=["s1-d1"], cameras=[2])
    message = str(error.value)
    assert "camera 2 of s1-d1 has gaps in its video chunks: missing" in message
    for name in named:
        assert name in message
    assert "not multiples" not in message and "unexpected" not in message


def test_a_chunk_start_off_the_chunk_grid_is_named(release_copy, cache_dir):
    folder = os.path.join(release_copy, "video_sequences")
    os.rename(os.path.join(folder, "s1-d1-camera2-16.mp4"), os.path.join(folder, "s1-d1-camera2-12.mp4"))
    with pytest.raises(
        MissingFileError,
        match=r"missing s1-d1-camera2-16\.mp4; starts \[12\] are not multiples of "
        r"the chunk length \(8 frames\)",
    ):
        rat7m.load_dataset("frames", data_dir=release_copy, cache_dir=cache_dir, recordings=["s1-d1"], cameras=[2])


def test_ctrl_c_during_a_num_proc_prepare_stays_a_keyboard_interrupt(monkeypatch, sample_release, cache_dir):
    """`datasets` collects its jobs with a timeout whose error replaces a Ctrl-C; rat7m restores it."""

    def interrupted_jobs(**kwargs):
        try:
            raise KeyboardInterrupt
        finally:
            raise multiprocess.context.TimeoutError  # as `iflatmap_unordered`'s `finally` does

    builder = rat7m.Rat7M(config_name="mocap", data_dir=sample_release.root, cache_dir=cache_dir)
    monkeypatch.setattr(builder, "download_and_prepare", interrupted_jobs)
    with pytest.raises(KeyboardInterrupt):
        rat7m.prepare(builder, num_proc=2)
    monkeypatch.setattr(builder, "download_and_prepare", lambda **kwargs: (_ for _ in ()).throw(TimeoutError()))
    with pytest.raises(TimeoutError):  # any other error passes unchanged
        rat7m.prepare(builder, num_proc=2)


def _chunk_path(release_copy: str, recording: str, camera: int, start: int) -> str:
    return os.path.join(release_copy, "video_sequences", f"{recording}-camera{camera}-{start}.mp4")


def _empty_file(path: str) -> None:
    open(path, "wb").close()


def _jpeg_image(path: str) -> None:
    Image.new("RGB", (100, 60), "red").save(path, format="JPEG")


def _unknown_codec(path: str) -> None:
    # the sample entry's codec tag, damaged: the index now names a codec FFmpeg has no decoder for
    with open(path, "rb") as file:
        data = file.read()
    entry = data.index(b"avc1", data.index(b"stsd"))  # (the file type box lists "avc1" as a brand too)
    with open(path, "wb") as file:
        file.write(data[:entry] + b"zzz9" + data[entry + 4 :])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_empty_file, r"s1-d1-camera3-16\.mp4: cannot be opened as a video"),
        (_jpeg_image, r"s1-d1-camera3-16\.mp4: is not an mp4 video \(FFmpeg reads it as 'piped jpeg sequence'\)"),
        (_unknown_codec, r"s1-d1-camera3-16\.mp4: its video stream cannot be decoded"),
    ],
)
def test_an_unreadable_chunk_is_named_and_skip_leaves_all_its_frames_out(release_copy, cache_dir, damage, message):
    damage(_chunk_path(release_copy, "s1-d1", 3, 16))
    selection = {"recordings": ["s1-d1"], "cameras": [3]}
    with pytest.raises(VideoDecodeError, match=message + r".*delete it and download it again"):
        rat7m.load_dataset("frames", data_dir=release_copy, cache_dir=cache_dir, **selection)
    with pytest.warns(CorruptVideoWarning, match="8 examples left out"):
        skipped = rat7m.load_dataset(
            "frames", "train", data_dir=release_copy, cache_dir=cache_dir, on_corrupt_video="skip", **selection
        )
    assert not {16, 17, 18, 19, 20, 21, 22, 23} & set(skipped["frame_index"])
    assert {15, 24} <= set(skipped["frame_index"])


def test_a_stream_left_half_read_exits_quietly(sample_release, tmp_path):
    """A generator still inside a decode when the interpreter exits must not print an error then."""
    script = (
        "import rat7m\n"
        f"stream = rat7m.load_dataset('frames', 'train', streaming=True, data_dir={sample_release.root!r}, "
        "recordings=['s1-d1'], cameras=[1])\n"
        "iterator = iter(stream)\n"
        "print(next(iterator)['frame_index'])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Exception ignored" not in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_video_configs_default_to_the_recordings_with_video(release_copy, cache_dir, caplog):
    """A copy with every recording's .mat (one zip on figshare) but video of only some."""
    for path in glob.glob(os.path.join(release_copy, "video_sequences", "s5-d1-*.mp4")):
        os.remove(path)
    with caplog.at_level("INFO", logger="rat7m"):
        frames = rat7m.load_dataset("frames", data_dir=release_copy, cache_dir=cache_dir, cameras=[2])
    assert list(frames) == ["train"] and set(frames["train"]["recording"]) == {"s1-d1"}
    assert "no video of the selected cameras for s5-d1; building s1-d1" in caplog.text
    assert rat7m.load_dataset("mocap", data_dir=release_copy, cache_dir=cache_dir)["test"].num_rows == 30
    with pytest.raises(MissingFileError, match=r"camera 2 of s5-d1 has no video chunks"):  # asked for: an error
        rat7m.load_dataset("frames", data_dir=release_copy, cache_dir=cache_dir, cameras=[2], recordings=["s5-d1"])
    shutil.rmtree(os.path.join(release_copy, "video_sequences"))
    with pytest.raises(SelectionError, match=r"motion capture for s1-d1, s5-d1 but no video chunk of camera\(s\) 2"):
        rat7m.load_dataset("frames", data_dir=release_copy, cache_dir=cache_dir, cameras=[2])


def test_a_copy_that_gains_a_recording_is_not_served_from_the_older_cache(release_copy, cache_dir, sample_release):
    videos = os.path.join(release_copy, "video_sequences")
    for path in glob.glob(os.path.join(videos, "s5-d1-*.mp4")):
        os.remove(path)
    first = rat7m.load_dataset("frames", data_dir=release_copy, cache_dir=cache_dir, cameras=[4])
    assert list(first) == ["train"]
    for path in glob.glob(os.path.join(sample_release.root, "video_sequences", "s5-d1-camera4-*.mp4")):
        shutil.copy(path, videos)
    again = rat7m.load_dataset("frames", data_dir=release_copy, cache_dir=cache_dir, cameras=[4])
    assert set(again) == {"train", "test"} and set(again["test"]["recording"]) == {"s5-d1"}


def test_an_mp4_whose_index_lost_its_end_says_no_frame_can_be_read(release_copy, cache_dir):
    path = _chunk_path(release_copy, "s1-d1", 3, 16)
    with open(path, "rb") as file:
        data = file.read()
    assert data.index(b"moov") > data.index(b"mdat")  # the index is at the end: cutting the end damages it
    with open(path, "wb") as file:
        file.write(data[:-100])
    with pytest.raises(VideoDecodeError, match=r"s1-d1-camera3-16\.mp4: the file declares 8 frames but none of them "):
        rat7m.load_dataset("frames", data_dir=release_copy, cache_dir=cache_dir, recordings=["s1-d1"], cameras=[3])


def test_an_extra_chunk_off_the_grid_is_refused(release_copy, cache_dir):
    # chunks 8 and 16 intact, plus a stray 12: frames 12–15 would be decoded from the wrong file
    folder = os.path.join(release_copy, "video_sequences")
    shutil.copy(os.path.join(folder, "s1-d1-camera2-8.mp4"), os.path.join(folder, "s1-d1-camera2-12.mp4"))
    with pytest.raises(MissingFileError, match=r"starts \[12\] are not multiples of the chunk length \(8 frames\)"):
        rat7m.load_dataset("frames", data_dir=release_copy, cache_dir=cache_dir, recordings=["s1-d1"], cameras=[2])


def _rewrite_chunk(release, release_copy: str, camera: int, start: int, stop: int) -> None:
    """Re-encode s1-d1's chunk of ``camera`` starting at ``start`` with the frames ``start … stop-1`` only."""
    spec, recording = release.spec, release.recordings["s1-d1"]
    frames = video_frames(spec, recording, camera, start, stop)
    write_mp4(_chunk_path(release_copy, "s1-d1", camera, start), frames, spec.frame_rate, spec.width, spec.height)


def test_a_last_chunk_one_frame_short_is_found_before_decoding(release_copy, cache_dir, sample_release):
    highest = int(sample_release.recordings["s1-d1"].frame_index[6].max())
    _rewrite_chunk(sample_release, release_copy, 6, 32, highest)  # holds frames 32 … highest-1
    with pytest.raises(
        MissingFileError,
        match=rf"s1-d1-camera6-32\.mp4: the motion capture of s1-d1 refers to "
        rf"camera 6 frame {highest}, but the last chunk present starts at 32 and holds {highest - 32}",
    ):
        rat7m.load_dataset("frames", data_dir=release_copy, cache_dir=cache_dir, recordings=["s1-d1"], cameras=[6])


def test_a_middle_chunk_one_frame_short_is_named_by_videos(release_copy, cache_dir, sample_release):
    assert 15 in sample_release.recordings["s1-d1"].frame_index[2]  # the frame the short chunk lacks
    _rewrite_chunk(sample_release, release_copy, 2, 8, 15)
    with pytest.raises(
        VideoDecodeError,
        match=r"s1-d1-camera2-8\.mp4: the motion capture asks for global frame 15 "
        r"but this chunk holds 7 frames",
    ):
        rat7m.load_dataset("videos", data_dir=release_copy, cache_dir=cache_dir, recordings=["s1-d1"], cameras=[2])
