"""The builder with no data_dir: the release comes from the figshare stand-in, selectively and verified."""

from __future__ import annotations

import pytest
from helpers import assert_same_rows, raw_images
from standins.figshare import figshare, serve_release  # noqa: F401  (fixture)

import rat7m


@pytest.fixture
def served(figshare, sample_release):  # noqa: F811
    serve_release(figshare, sample_release.root)
    return figshare


def test_selection_downloads_only_its_files_and_equals_data_dir(served, sample_release, tmp_path):
    selection = {"recordings": ["s1-d1"], "cameras": [1, 2]}
    downloaded = rat7m.load_dataset("frames", split="train", cache_dir=str(tmp_path / "a"), **selection)
    names = served.downloaded_names()
    assert "mocap-s1-d1.mat" in names and "mocap-s5-d1.mat" not in names
    videos = {name for name in names if name.endswith(".mp4")}
    assert videos and all(name.startswith(("s1-d1-camera1-", "s1-d1-camera2-")) for name in videos)
    assert len(videos) == 2 * 5  # two cameras × five chunks, nothing else
    local = rat7m.load_dataset(
        "frames", split="train", data_dir=sample_release.root, cache_dir=str(tmp_path / "b"), **selection
    )
    assert_same_rows(raw_images(downloaded), raw_images(local))


def test_configs_without_video_download_no_video(served, tmp_path):
    mocap = rat7m.load_dataset("mocap", cache_dir=str(tmp_path), recordings=["s5-d1"])
    assert list(mocap) == ["test"] and mocap["test"].num_rows == 30
    assert served.downloaded_names() == {"mocap-s5-d1.mat"}


def test_archive_mode_gives_the_same_examples(served, sample_release, tmp_path):
    selection = {"recordings": ["s5-d1"], "cameras": [3]}
    archives = rat7m.load_dataset("frames", split="test", cache_dir=str(tmp_path / "a"), source="archives", **selection)
    files = rat7m.load_dataset("frames", split="test", cache_dir=str(tmp_path / "b"), **selection)
    assert archives.num_rows == 30
    assert_same_rows(raw_images(archives), raw_images(files))
    assert any(request.path.startswith("/ndownloader/articles/") for request in served.downloads())


def test_a_second_run_makes_no_download_requests(served, tmp_path):
    cache = str(tmp_path)
    rat7m.load_dataset("frames", cache_dir=cache, recordings=["s1-d1"], cameras=[4])
    served.clear_log()
    # another config over the same files: everything comes from the verified cache
    multiview = rat7m.load_dataset("multiview", split="train", cache_dir=cache, recordings=["s1-d1"], cameras=[4])
    assert multiview.num_rows == 30
    assert served.log == []
