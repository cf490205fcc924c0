"""Fault 7: figshare's file listing disagrees with what the selection needs or with the bytes.

Through the whole builder (no ``data_dir``: the figshare stand-in of tests/standins serves the
fabricated release): a needed file missing from the listing or renamed in it, extra entries, a listed
size or md5 that disagrees with the bytes. A clear error naming the file, and nothing corrupt in the
cache: no dataset that looks finished, no release file under its final name whose bytes are not
figshare's (a bad copy is deleted), so a re-run never builds from it.
"""

from __future__ import annotations

import os
import re

import pytest
from standins.figshare import FigshareStandIn, figshare, serve_release  # noqa: F401  (fixture)

import rat7m
from rat7m_builder import download
from rat7m_builder.download import RetryPolicy
from rat7m_builder.errors import ChecksumError, MissingFileError
from rat7m_builder.manifest import MOCAP_ARTICLE, VIDEO_ARTICLES, parse_mocap_name, parse_video_name

from .support import content_digest, incomplete_dirs, prepared_info_files

SELECTION = {"recordings": ["s1-d1"], "cameras": [1]}
CHUNK = "s1-d1-camera1-8.mp4"
FAST = RetryPolicy(max_retries=1, backoff_base=0.01, backoff_max=0.02, max_wait=0.02, timeout=(5.0, 5.0))


@pytest.fixture
def served(figshare, sample_release, monkeypatch):  # noqa: F811
    monkeypatch.setattr(download, "DEFAULT_RETRY", FAST)
    serve_release(figshare, sample_release.root)
    return figshare


@pytest.fixture(scope="module")
def reference(sample_release, tmp_path_factory):
    """The same selection built from the local copy."""
    dataset = rat7m.load_dataset(
        "frames", data_dir=sample_release.root, cache_dir=str(tmp_path_factory.mktemp("reference")), **SELECTION
    )
    return content_digest(dataset)


def assert_nothing_corrupt_cached(cache_dir: str, standin: FigshareStandIn) -> None:
    """No finished-looking dataset, and every release file in the download cache is figshare's exact bytes."""
    assert prepared_info_files(cache_dir) == [] and incomplete_dirs(cache_dir) == []
    for folder, _, names in os.walk(cache_dir):
        for name in names:
            if parse_video_name(name) or parse_mocap_name(name):
                with open(os.path.join(folder, name), "rb") as file:
                    assert file.read() == standin.file(name).data, f"{name} is cached with other bytes"


def test_listing_without_a_needed_file_names_it_and_downloads_nothing(served, tmp_path):
    served.listing_hide.add(CHUNK)
    cache_dir = str(tmp_path / "cache")
    with pytest.raises(MissingFileError, match=rf"The figshare listings lack 1 file\(s\) the selection needs: {CHUNK}"):
        rat7m.load_dataset("frames", cache_dir=cache_dir, **SELECTION)
    assert served.downloads() == []  # checked against the listing before any download
    assert_nothing_corrupt_cached(cache_dir, served)


def test_a_renamed_file_is_a_missing_one(served, tmp_path):
    served.listing_rename[CHUNK] = "s1-d1-camera1-8 (1).mp4"
    cache_dir = str(tmp_path / "cache")
    with pytest.raises(MissingFileError, match=rf"selection needs: {CHUNK}\. Check the record"):
        rat7m.load_dataset("frames", cache_dir=cache_dir, **SELECTION)
    assert served.downloads() == []
    assert_nothing_corrupt_cached(cache_dir, served)


def test_extra_entries_are_ignored_and_never_downloaded(served, tmp_path, reference):
    entry = {"size": 5, "is_link_only": False, "supplied_md5": "0" * 32, "computed_md5": "0" * 32}
    bogus = f"{served.base_url}/ndownloader/files/999999"
    served.listing_extra[VIDEO_ARTICLES["s1-d1"][0]] = [
        {**entry, "id": 999999, "name": name, "download_url": bogus}
        for name in ("s1-d1-camera7-0.mp4", "s1-d1-camera1-0016.mp4", "s1-d1-camera01-8.mp4", "notes.pdf")
    ]
    served.listing_extra[MOCAP_ARTICLE[0]] = [
        {**entry, "id": 999999, "name": name, "download_url": bogus}
        for name in ("mocap-s1-d1.mat.bak", "mocap-s9-d9.mat", "mocap-s01-d1.mat")
    ]
    dataset = rat7m.load_dataset("frames", cache_dir=str(tmp_path / "cache"), **SELECTION)
    assert content_digest(dataset) == reference
    assert all("999999" not in request.path for request in served.log)


@pytest.mark.parametrize("delta", [-100, +100])
def test_a_listed_size_that_disagrees_with_the_bytes(served, tmp_path, delta):
    true_size = len(served.file(CHUNK).data)
    served.listing_size[CHUNK] = true_size + delta
    cache_dir = str(tmp_path / "cache")
    with pytest.raises(ChecksumError) as error:
        rat7m.load_dataset("frames", cache_dir=cache_dir, **SELECTION)
    message = str(error.value)
    assert CHUNK in message and re.search(rf"\b{true_size}\b", message) and str(true_size + delta) in message, message
    assert_nothing_corrupt_cached(cache_dir, served)
    # the listing is figshare's word for a published version (it is cached as such): until it is
    # right, every run refuses the file again rather than building from it
    with pytest.raises(ChecksumError):
        rat7m.load_dataset("frames", cache_dir=cache_dir, **SELECTION)
    assert_nothing_corrupt_cached(cache_dir, served)


def test_bytes_that_disagree_with_the_listed_md5_are_deleted_and_a_rerun_succeeds(served, tmp_path, reference):
    served.wrong_bytes.add(CHUNK)
    cache_dir = str(tmp_path / "cache")
    with pytest.raises(ChecksumError, match=re.escape(CHUNK)):
        rat7m.load_dataset("frames", cache_dir=cache_dir, **SELECTION)
    assert_nothing_corrupt_cached(cache_dir, served)
    served.wrong_bytes.clear()
    assert content_digest(rat7m.load_dataset("frames", cache_dir=cache_dir, **SELECTION)) == reference
