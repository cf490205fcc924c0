"""End-to-end tests of the figshare download layer against the loopback stand-in (tests/standins)."""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import shutil
from collections import namedtuple
from datetime import UTC, datetime, timedelta

import pytest
from standins.figshare import FigshareStandIn, fabricate_release, figshare  # noqa: F401 - fixture

from rat7m_builder import download
from rat7m_builder.download import RetryPolicy, download_file, fetch_listing, figshare_index, materialize
from rat7m_builder.errors import ChecksumError, DownloadError, MissingFileError, SelectionError
from rat7m_builder.manifest import MOCAP_ARTICLE, VIDEO_ARTICLES
from rat7m_builder.sources import open_file, scan_local

#: Retries without real waiting: the stand-in's faults are immediate.
FAST = RetryPolicy(max_retries=3, backoff_base=0.01, backoff_max=0.02, max_wait=0.02, timeout=(5.0, 5.0))


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(download, "DEFAULT_RETRY", FAST)


@pytest.fixture
def release(figshare: FigshareStandIn) -> dict[str, bytes]:  # noqa: F811 - the fixture above
    return fabricate_release(figshare, ["s1-d1", "s5-d2"])


@pytest.fixture
def cache(tmp_path) -> str:
    return str(tmp_path / "cache")


def _read(ref) -> bytes:
    with open_file(ref) as file:
        return file.read()


def _names(index) -> set[str]:
    names = {ref.name for ref in index.mocap.values()}
    return names | {chunk.file.name for chunks in index.videos.values() for chunk in chunks}


def _s1_cameras_1_2() -> set[str]:
    videos = {f"s1-d1-camera{camera}-{start}.mp4" for camera in (1, 2) for start in (0, 3500, 7000)}
    return videos | {"mocap-s1-d1.mat"}


def _files_in(folder: str) -> list[str]:
    return sorted(name for _, _, files in os.walk(folder) for name in files)


# -- per-file mode ---------------------------------------------------------------------------------


def test_a_selection_downloads_only_its_files(figshare, release, cache):  # noqa: F811
    index = figshare_index(["s1-d1"], [2, 1], cache, need_video=True)

    assert figshare.downloaded_names() == _s1_cameras_1_2()
    listed = {request.path for request in figshare.listing_requests()}
    assert listed == {
        f"/v2/articles/{MOCAP_ARTICLE[0]}/versions/{MOCAP_ARTICLE[1]}/files",
        f"/v2/articles/{VIDEO_ARTICLES['s1-d1'][0]}/versions/{VIDEO_ARTICLES['s1-d1'][1]}/files",
    }
    assert all(request.query["page_size"] == "1000" for request in figshare.listing_requests())
    assert set(index.mocap) == {"s1-d1"} and set(index.videos) == {("s1-d1", 1), ("s1-d1", 2)}
    assert [chunk.start for chunk in index.chunks("s1-d1", 1)] == [0, 3500, 7000]
    for name in _s1_cameras_1_2():
        ref = index.mocap["s1-d1"] if name.startswith("mocap") else None
        ref = ref or next(c.file for chunks in index.videos.values() for c in chunks if c.file.name == name)
        assert ref.location.startswith(cache) and os.path.isfile(ref.location)
        assert ref.md5 == hashlib.md5(release[name]).hexdigest() and ref.size == len(release[name])
        assert _read(ref) == release[name]
    assert not [name for name in _files_in(cache) if name.endswith(".incomplete")]


def test_mocap_and_cameras_configs_fetch_no_video(figshare, release, cache):  # noqa: F811
    index = figshare_index(["s1-d1", "s5-d2"], [1], cache, need_video=False, progress=False)

    assert figshare.downloaded_names() == {"mocap-s1-d1.mat", "mocap-s5-d2.mat"}
    assert {request.path.split("/")[3] for request in figshare.listing_requests()} == {str(MOCAP_ARTICLE[0])}
    assert index.videos == {} and set(index.mocap) == {"s1-d1", "s5-d2"}


def test_a_second_run_makes_no_requests(figshare, release, cache):  # noqa: F811
    first = figshare_index(["s1-d1"], [1, 2], cache, need_video=True, progress=False)
    figshare.clear_log()

    second = figshare_index(["s1-d1"], [1, 2], cache, need_video=True, progress=False)
    assert figshare.log == []  # neither listings (cached beside the files) nor files
    assert second == first

    # A verified file that lost its .md5 record is hashed once, still with no request.
    os.remove(first.mocap["s1-d1"].location + ".md5")
    figshare_index(["s1-d1"], [1, 2], cache, need_video=True, progress=False, offline=True)
    assert figshare.log == [] and os.path.exists(first.mocap["s1-d1"].location + ".md5")


def test_offline_without_a_cache_is_a_clear_error(figshare, release, cache):  # noqa: F811
    with pytest.raises(DownloadError, match="Offline"):
        figshare_index(["s1-d1"], [1], cache, need_video=True, offline=True)
    assert figshare.log == []


def test_md5_mismatch_deletes_the_copy_and_a_rerun_succeeds(figshare, release, cache):  # noqa: F811
    bad = "s1-d1-camera2-3500.mp4"
    figshare.wrong_bytes.add(bad)
    with pytest.raises(ChecksumError) as raised:
        figshare_index(["s1-d1"], [1, 2], cache, need_video=True, progress=False)
    message = str(raised.value)
    corrupted = bytes(byte ^ 0xFF for byte in release[bad][:16]) + release[bad][16:]
    assert bad in message and "again" in message
    assert hashlib.md5(release[bad]).hexdigest() in message
    assert hashlib.md5(corrupted).hexdigest() in message
    assert not [name for name in _files_in(cache) if name.startswith(bad)]  # no bad copy, no partial

    figshare.wrong_bytes.clear()
    figshare.clear_log()
    index = figshare_index(["s1-d1"], [1, 2], cache, need_video=True, progress=False)
    assert bad in figshare.downloaded_names()
    assert _read(index.chunks("s1-d1", 2)[1].file) == release[bad]


def test_a_connection_dropped_mid_file_resumes_with_range(figshare, release, cache):  # noqa: F811
    name = "s1-d1-camera1-7000.mp4"
    figshare.drop_once[name] = 1000
    index = figshare_index(["s1-d1"], [1], cache, need_video=True, progress=False)

    first, second = figshare.requests_for(name)
    assert first.range is None and first.bytes_sent == 1000
    assert second.range == "bytes=1000-" and second.status == 206
    assert second.bytes_sent == len(release[name]) - 1000
    assert _read(index.chunks("s1-d1", 1)[2].file) == release[name]


def test_a_stalled_connection_times_out_and_resumes(figshare, release, cache):  # noqa: F811
    name = "s1-d1-camera1-3500.mp4"
    figshare.stall_once[name] = (500, 1.0)
    retry = RetryPolicy(max_retries=3, backoff_base=0.01, timeout=(2.0, 0.2))
    index = figshare_index(["s1-d1"], [1], cache, need_video=True, retry=retry, progress=False)
    assert [request.range for request in figshare.requests_for(name)] == [None, "bytes=500-"]
    assert _read(index.chunks("s1-d1", 1)[1].file) == release[name]


def test_503_once_is_retried_honouring_retry_after(figshare, release, cache):  # noqa: F811
    name = "mocap-s1-d1.mat"
    figshare.status_once[name] = 503
    figshare.retry_after = "7"
    waits: list[float] = []
    retry = RetryPolicy(max_retries=3, backoff_base=0.01, max_wait=30, sleep=waits.append)
    index = figshare_index(["s1-d1"], [1], cache, need_video=False, retry=retry, progress=False)

    assert [request.status for request in figshare.requests_for(name)] == [503, 200]
    assert waits and waits[0] >= 7  # the server's Retry-After, not the 0.01 s backoff
    assert _read(index.mocap["s1-d1"]) == release[name]


def test_listing_429_is_retried(figshare, release, cache):  # noqa: F811
    figshare.status_once[f"listing:{MOCAP_ARTICLE[0]}"] = 429
    figshare_index(["s1-d1"], [1], cache, need_video=False, progress=False)
    assert [request.status for request in figshare.listing_requests()] == [429, 200]


def test_a_permanent_404_names_url_and_status(figshare, release, cache):  # noqa: F811
    name = "s1-d1-camera1-0.mp4"
    figshare.status_always[name] = 404
    with pytest.raises(DownloadError) as raised:
        figshare_index(["s1-d1"], [1], cache, need_video=True, progress=False)
    message = str(raised.value)
    assert f"{figshare.base_url}/ndownloader/files/{figshare.file(name).file_id}" in message
    assert "404" in message and name in message
    assert "not (or no longer) available there" in message  # not "check the URL": the URL is figshare's
    assert len(figshare.requests_for(name)) == 1  # not retried


def test_retries_are_bounded(figshare, release, cache):  # noqa: F811
    name = "mocap-s1-d1.mat"
    figshare.status_always[name] = 503
    with pytest.raises(DownloadError, match="503"):
        figshare_index(["s1-d1"], [1], cache, need_video=False, progress=False)
    assert len(figshare.requests_for(name)) == FAST.max_retries + 1


def test_too_little_disk_space_is_refused_before_downloading(figshare, release, cache, monkeypatch):  # noqa: F811
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1234, 1234))
    with pytest.raises(DownloadError) as raised:
        figshare_index(["s1-d1"], [1, 2], cache, need_video=True, progress=False)
    needed = sum(len(release[name]) for name in _s1_cameras_1_2())
    assert str(needed) in str(raised.value) and "1234" in str(raised.value)
    assert figshare.downloads() == []


def test_listing_pagination(figshare, release, cache, monkeypatch):  # noqa: F811
    monkeypatch.setattr(download, "LISTING_PAGE_SIZE", 4)
    listing = fetch_listing(*VIDEO_ARTICLES["s1-d1"], cache)
    assert len(listing) == 6 * 3 + 1  # 18 chunks and the README
    assert [request.query["page"] for request in figshare.listing_requests()] == ["1", "2", "3", "4", "5"]
    assert {request.query["page_size"] for request in figshare.listing_requests()} == {"4"}

    figshare.clear_log()
    monkeypatch.setattr(download, "LISTING_PAGE_SIZE", 7)  # the mocap article: exactly one full page
    assert len(fetch_listing(*MOCAP_ARTICLE, cache)) == 7
    assert [request.query["page"] for request in figshare.listing_requests()] == ["1", "2"]


def test_a_listing_that_lacks_needed_files_names_them(figshare, release, cache):  # noqa: F811
    figshare.listing_hide.update(f"s1-d1-camera3-{start}.mp4" for start in (0, 3500, 7000))
    figshare.listing_rename["s1-d1-camera2-3500.mp4"] = "s1-d1-camera2-3500 (1).mp4"
    figshare.listing_extra[VIDEO_ARTICLES["s1-d1"][0]] = [
        {"id": 1, "name": "s1-d1-camera1-0001.mp4", "size": 1, "download_url": "http://x.invalid/"}
    ]
    with pytest.raises(MissingFileError) as raised:
        figshare_index(["s1-d1"], [1, 2, 3], cache, need_video=True, progress=False)
    assert "s1-d1-camera3-*.mp4" in str(raised.value) and "s1-d1-camera2-3500.mp4" in str(raised.value)
    assert figshare.downloads() == []

    # Without the cameras that miss files, the renamed and extra entries are simply ignored.
    index = figshare_index(["s1-d1"], [1], cache, need_video=True, progress=False)
    assert [chunk.start for chunk in index.chunks("s1-d1", 1)] == [0, 3500, 7000]


def test_a_wrong_listing_size_is_a_checksum_error(figshare, release, cache):  # noqa: F811
    name = "mocap-s1-d1.mat"
    figshare.listing_size[name] = len(release[name]) + 10
    with pytest.raises(ChecksumError, match=f"{len(release[name])} bytes.*lists {len(release[name]) + 10}"):
        figshare_index(["s1-d1"], [1], cache, need_video=False, progress=False)
    assert not [file for file in _files_in(cache) if file.startswith(name)]


def test_a_link_only_entry_is_refused_clearly(figshare, release, cache):  # noqa: F811
    figshare.listing_link_only.add("mocap-s1-d1.mat")
    with pytest.raises(DownloadError, match="only links to mocap-s1-d1.mat"):
        figshare_index(["s1-d1"], [1], cache, need_video=False, progress=False)
    figshare_index(["s5-d2"], [1], cache, need_video=False, progress=False)  # not needed: no matter


def test_streaming_returns_remote_urls_and_downloads_nothing(figshare, release, cache):  # noqa: F811
    index = figshare_index(["s1-d1"], [1], cache, need_video=True, download=False)
    assert figshare.downloads() == []
    ref = index.chunks("s1-d1", 1)[1].file
    assert ref.location == f"{figshare.base_url}/ndownloader/files/{figshare.file(ref.name).file_id}"
    assert ref.size == len(release[ref.name]) and ref.md5 == hashlib.md5(release[ref.name]).hexdigest()
    assert _read(ref) == release[ref.name]  # through fsspec: the redirect and Range work
    with pytest.raises(SelectionError, match="source='files'"):
        figshare_index(["s1-d1"], [1], cache, need_video=True, source="archives", download=False)


def test_download_file_resumes_a_partial_file_left_by_an_earlier_run(figshare, release, tmp_path):  # noqa: F811
    name = "s5-d2-camera4-3500.mp4"
    stored = figshare.file(name)
    dest = str(tmp_path / name)
    with open(dest + ".incomplete", "wb") as partial:
        partial.write(release[name][:777])
    download_file(f"{figshare.base_url}/ndownloader/files/{stored.file_id}", dest, len(stored.data), stored.md5)
    assert [request.range for request in figshare.requests_for(name)] == ["bytes=777-"]
    assert open(dest, "rb").read() == release[name] and not os.path.exists(dest + ".incomplete")


# -- archive mode ----------------------------------------------------------------------------------


def test_archive_mode_indexes_the_same_files(figshare, release, tmp_path):  # noqa: F811
    files = figshare_index(["s1-d1"], [1, 2], str(tmp_path / "a"), need_video=True, progress=False)
    figshare.clear_log()
    archives = figshare_index(["s1-d1"], [1, 2], str(tmp_path / "b"), need_video=True, source="archives")

    zips = {request.path for request in figshare.downloads()}
    assert zips == {
        f"/ndownloader/articles/{MOCAP_ARTICLE[0]}/versions/{MOCAP_ARTICLE[1]}",
        f"/ndownloader/articles/{VIDEO_ARTICLES['s1-d1'][0]}/versions/{VIDEO_ARTICLES['s1-d1'][1]}",
    }
    assert _names(archives) == _names(files) == _s1_cameras_1_2()
    assert set(archives.videos) == set(files.videos)
    for key, chunks in files.videos.items():
        assert [chunk.start for chunk in archives.videos[key]] == [chunk.start for chunk in chunks]
        for ours, theirs in zip(chunks, archives.videos[key], strict=True):
            assert theirs.file.member_offset is not None  # stored members read in place
            assert _read(theirs.file) == _read(ours.file) == release[ours.file.name]
    assert _read(archives.mocap["s1-d1"]) == release["mocap-s1-d1.mat"]

    figshare.clear_log()
    figshare_index(["s1-d1"], [1, 2], str(tmp_path / "b"), need_video=True, source="archives", progress=False)
    assert figshare.log == []


def test_a_truncated_zip_is_deleted_and_a_rerun_succeeds(figshare, release, cache):  # noqa: F811
    article = VIDEO_ARTICLES["s5-d2"]
    figshare.truncate_zip.add(article[0])
    with pytest.raises(ChecksumError, match="download it again"):
        figshare_index(["s5-d2"], [3], cache, need_video=True, source="archives", progress=False)
    assert not [name for name in _files_in(cache) if name.startswith(f"article-{article[0]}-v{article[1]}.zip")]

    figshare.truncate_zip.clear()
    index = figshare_index(["s5-d2"], [3], cache, need_video=True, source="archives", progress=False)
    assert _read(index.chunks("s5-d2", 3)[0].file) == release["s5-d2-camera3-0.mp4"]


def test_archive_mode_names_members_the_selection_lacks(figshare, cache):  # noqa: F811
    fabricate_release(figshare, ["s5-d2"], cameras=(1, 2), starts=(0, 3500, 10500))
    with pytest.raises(MissingFileError) as raised:
        figshare_index(["s5-d2"], [1, 4], cache, need_video=True, source="archives", progress=False)
    assert "s5-d2-camera1-7000.mp4" in str(raised.value) and "s5-d2-camera4-*.mp4" in str(raised.value)


# -- materialise -----------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["files", "archives"])
def test_materialize_writes_the_helper_script_layout(figshare, release, tmp_path, source):  # noqa: F811
    index = figshare_index(["s1-d1"], [1, 2], str(tmp_path / "cache"), need_video=True, source=source)
    dest = str(tmp_path / "release")
    copy = materialize(index, dest)

    assert sorted(os.listdir(os.path.join(dest, "annotations"))) == ["mocap-s1-d1.mat"]
    videos = sorted(os.listdir(os.path.join(dest, "video_sequences")))
    assert videos == sorted(_s1_cameras_1_2() - {"mocap-s1-d1.mat"})
    scanned = scan_local(dest)
    assert _names(scanned) == _names(copy) == _s1_cameras_1_2()
    for name in _s1_cameras_1_2():
        folder = "annotations" if name.endswith(".mat") else "video_sequences"
        assert open(os.path.join(dest, folder, name), "rb").read() == release[name]
    if source == "files":  # same disk: hard links, no second copy
        ref = index.chunks("s1-d1", 1)[0].file
        assert os.path.samefile(ref.location, os.path.join(dest, "video_sequences", ref.name))
    materialize(index, dest)  # again: everything already there
    assert sorted(os.listdir(os.path.join(dest, "video_sequences"))) == videos


# -- forced re-downloads ---------------------------------------------------------------------------


def test_force_download_fetches_listings_and_files_again(figshare, release, cache):  # noqa: F811
    # force_redownload is the way out of a bad cache: a run that trusted the verified copies (or the
    # cached listing, which the ChecksumError advice says may be out of date) would change nothing.
    figshare_index(["s1-d1"], [1], cache, need_video=True, progress=False)
    figshare.clear_log()

    index = figshare_index(["s1-d1"], [1], cache, need_video=True, progress=False, force_download=True)
    assert {request.path.split("/")[3] for request in figshare.listing_requests()} == {
        str(MOCAP_ARTICLE[0]),
        str(VIDEO_ARTICLES["s1-d1"][0]),
    }
    selection = {f"s1-d1-camera1-{start}.mp4" for start in (0, 3500, 7000)} | {"mocap-s1-d1.mat"}
    assert figshare.downloaded_names() == selection
    assert all(request.range is None for request in figshare.downloads())  # whole files, not resumes
    assert _read(index.chunks("s1-d1", 1)[0].file) == release["s1-d1-camera1-0.mp4"]


def test_force_download_fetches_article_zips_again(figshare, release, cache):  # noqa: F811
    figshare_index(["s5-d2"], [1], cache, need_video=False, source="archives", progress=False)
    figshare.clear_log()
    index = figshare_index(
        ["s5-d2"], [1], cache, need_video=False, source="archives", progress=False, force_download=True
    )
    zip_path = f"/ndownloader/articles/{MOCAP_ARTICLE[0]}/versions/{MOCAP_ARTICLE[1]}"
    assert [(request.path, request.range) for request in figshare.downloads()] == [(zip_path, None)]
    assert _read(index.mocap["s5-d2"]) == release["mocap-s5-d2.mat"]


# -- disk space ----------------------------------------------------------------------------------------


def _free_space(monkeypatch, free: int) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 10**12 - free, free))


def test_the_disk_check_keeps_the_documented_margin_spare(figshare, release, cache, monkeypatch):  # noqa: F811
    # Filling the disk to the last byte breaks everything else on it: the selection must leave
    # DISK_MARGIN free, and exactly that much is enough.
    needed = sum(len(release[name]) for name in _s1_cameras_1_2())
    _free_space(monkeypatch, needed + download.DISK_MARGIN - 1)
    with pytest.raises(DownloadError, match="Not enough disk space"):
        figshare_index(["s1-d1"], [1, 2], cache, need_video=True, progress=False)
    assert figshare.downloads() == []

    _free_space(monkeypatch, needed + download.DISK_MARGIN)
    figshare_index(["s1-d1"], [1, 2], cache, need_video=True, progress=False)
    assert figshare.downloaded_names() == _s1_cameras_1_2()


def test_the_disk_check_counts_only_the_bytes_a_resume_still_needs(figshare, release, cache, monkeypatch):  # noqa: F811
    # After an interruption on a nearly full disk, the re-run must resume, not refuse: the partial
    # file's bytes are already on the disk.
    name = "mocap-s1-d1.mat"
    dest = os.path.join(download.article_dir(cache, *MOCAP_ARTICLE), name)
    os.makedirs(os.path.dirname(dest))
    with open(dest + ".incomplete", "wb") as partial:
        partial.write(release[name][:-100])
    _free_space(monkeypatch, 100 + download.DISK_MARGIN)
    index = figshare_index(["s1-d1"], [1], cache, need_video=False, progress=False)
    assert _read(index.mocap["s1-d1"]) == release[name]
    assert [request.range for request in figshare.requests_for(name)] == [f"bytes={len(release[name]) - 100}-"]


def test_a_rerun_with_everything_cached_needs_no_free_space(figshare, release, cache, monkeypatch):  # noqa: F811
    first = figshare_index(["s1-d1"], [1, 2], cache, need_video=True, progress=False)
    figshare.clear_log()
    _free_space(monkeypatch, 0)  # the disk filled up since: the verified files need nothing more
    assert figshare_index(["s1-d1"], [1, 2], cache, need_video=True, progress=False) == first
    assert figshare.log == []


# -- listings: missing files, caches from elsewhere, servers ignoring pages --------------------------------


def test_a_listing_without_the_first_chunk_names_it(figshare, release, cache):  # noqa: F811
    # Chunks are located by the starts present, so without this check the build would silently start
    # camera 1 at frame 3500.
    figshare.listing_hide.add("s1-d1-camera1-0.mp4")
    with pytest.raises(MissingFileError, match=r"needs: s1-d1-camera1-0\.mp4 \(chunks before frame 3500\)"):
        figshare_index(["s1-d1"], [1], cache, need_video=True, progress=False)
    assert figshare.downloads() == []


def test_a_gap_is_reported_by_the_missing_chunks_only(figshare, cache):  # noqa: F811
    fabricate_release(figshare, ["s5-d2"], cameras=(1, 2), starts=(0, 3500, 14000))
    with pytest.raises(MissingFileError) as raised:
        figshare_index(["s5-d2"], [1], cache, need_video=True, progress=False)
    message = str(raised.value)
    assert "lack 2 file(s)" in message and "s5-d2-camera1-7000.mp4" in message and "s5-d2-camera1-10500.mp4" in message
    assert "s5-d2-camera1-3500.mp4" not in message and "s5-d2-camera1-14000.mp4" not in message  # they are there


def _write_cached_listing(cache: str, api: str, files: list[dict]) -> str:
    path = os.path.join(download.article_dir(cache, *MOCAP_ARTICLE), "listing.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    content = {"article_id": MOCAP_ARTICLE[0], "version": MOCAP_ARTICLE[1], "api_url": api, "files": files}
    with open(path, "w", encoding="utf-8") as file:
        json.dump(content, file)
    return path


_STALE_ENTRY = {"id": 1, "name": "mocap-s1-d1.mat", "size": 3, "download_url": "https://mirror.invalid/1"}


def test_a_listing_cached_from_another_api_is_fetched_again(figshare, release, cache):  # noqa: F811
    # RAT7M_FIGSHARE_API_URL was pointed elsewhere (a mirror, a test): its listing is not this API's.
    path = _write_cached_listing(cache, "https://mirror.invalid/v2", [_STALE_ENTRY])
    listing = fetch_listing(*MOCAP_ARTICLE, cache)
    assert {entry["name"] for entry in listing} == {name for name in release if name.startswith("mocap-")}
    assert len(figshare.listing_requests()) == 1
    with open(path, encoding="utf-8") as file:
        assert json.load(file)["api_url"] == download.api_url()


def test_a_listing_cached_from_another_api_is_used_when_the_api_fails(figshare, release, cache):  # noqa: F811
    _write_cached_listing(cache, "https://mirror.invalid/v2", [_STALE_ENTRY])
    figshare.status_always[f"listing:{MOCAP_ARTICLE[0]}"] = 404
    assert fetch_listing(*MOCAP_ARTICLE, cache) == [_STALE_ENTRY]  # better than nothing


def test_a_server_ignoring_the_page_parameter_is_refused(figshare, release, cache, monkeypatch):  # noqa: F811
    # Every page answers the same entries: taking them would list files several times (or loop for
    # ever on an endless listing).
    monkeypatch.setattr(download, "LISTING_PAGE_SIZE", 4)
    listing = figshare.listing
    monkeypatch.setattr(figshare, "listing", lambda article, version: listing(article, version)[:4] * 5)
    with pytest.raises(DownloadError, match="returned page 2 twice; it ignores pagination"):
        fetch_listing(*MOCAP_ARTICLE, cache)
    assert [request.query["page"] for request in figshare.listing_requests()] == ["1", "2"]


def test_an_upper_case_md5_in_the_listing_verifies_the_download(figshare, release, cache, monkeypatch):  # noqa: F811
    listing = figshare.listing

    def upper_case(article_id: int, version: int) -> list[dict]:
        return [
            dict(entry, computed_md5=entry["computed_md5"].upper(), supplied_md5=entry["supplied_md5"].upper())
            for entry in listing(article_id, version)
        ]

    monkeypatch.setattr(figshare, "listing", upper_case)
    index = figshare_index(["s1-d1"], [1], cache, need_video=False, progress=False)
    ref = index.mocap["s1-d1"]
    # The index carries hex md5 as hashlib writes it, so callers can compare it with their own.
    assert ref.md5 == hashlib.md5(release["mocap-s1-d1.mat"]).hexdigest() and _read(ref) == release[ref.name]


# -- errors and retries --------------------------------------------------------------------------------


def test_an_md5_mismatch_message_says_which_checksum_is_whose(figshare, release, cache):  # noqa: F811
    name = "mocap-s1-d1.mat"
    figshare.wrong_bytes.add(name)
    corrupted = bytes(byte ^ 0xFF for byte in release[name][:16]) + release[name][16:]
    listed, got = hashlib.md5(release[name]).hexdigest(), hashlib.md5(corrupted).hexdigest()
    with pytest.raises(ChecksumError, match=f"figshare lists {listed}, the downloaded file has {got}"):
        figshare_index(["s1-d1"], [1], cache, need_video=False, progress=False)
    # Bytes fresh from the server that fail are reported at once, not downloaded a second time.
    assert len(figshare.requests_for(name)) == 1


# README: "dropped connections, timeouts, 429 and 5xx answers are retried"; a status left out would
# fail a whole run on one blip of the server.
@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_each_transient_status_is_retried(figshare, release, cache, status):  # noqa: F811
    name = "mocap-s1-d1.mat"
    figshare.status_once[name] = status
    index = figshare_index(["s1-d1"], [1], cache, need_video=False, progress=False)
    assert [request.status for request in figshare.requests_for(name)] == [status, 200]
    assert _read(index.mocap["s1-d1"]) == release[name]


def test_a_huge_retry_after_is_capped_at_max_wait(figshare, release, cache):  # noqa: F811
    name = "mocap-s1-d1.mat"
    figshare.status_once[name] = 503
    figshare.retry_after = "100000"  # a day and more: a run must not hang that long
    waits: list[float] = []
    retry = RetryPolicy(max_retries=3, backoff_base=0.01, max_wait=0.5, sleep=waits.append)
    figshare_index(["s1-d1"], [1], cache, need_video=False, retry=retry, progress=False)
    assert waits == [0.5]


def test_a_retry_after_given_as_an_http_date_is_honoured(figshare, release, cache):  # noqa: F811
    name = "mocap-s1-d1.mat"
    figshare.status_once[name] = 429
    figshare.retry_after = email.utils.format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    waits: list[float] = []
    retry = RetryPolicy(max_retries=3, backoff_base=0.01, max_wait=7200, sleep=waits.append)
    figshare_index(["s1-d1"], [1], cache, need_video=False, retry=retry, progress=False)
    assert len(waits) == 1 and 3000 < waits[0] <= 3600  # about an hour, not the 0.01 s backoff


# -- materialise over a stale copy -------------------------------------------------------------------------


def test_materialize_replaces_a_same_size_file_with_other_bytes(figshare, release, tmp_path):  # noqa: F811
    # `rat7m download --dest DIR` into a folder holding a damaged copy of the right size: the copy
    # must not be kept as if it were the release file.
    index = figshare_index(["s1-d1"], [1], str(tmp_path / "cache"), need_video=False, progress=False)
    dest = str(tmp_path / "release")
    target = os.path.join(dest, "annotations", "mocap-s1-d1.mat")
    os.makedirs(os.path.dirname(target))
    with open(target, "wb") as file:
        file.write(b"\0" * len(release["mocap-s1-d1.mat"]))
    materialize(index, dest)
    assert open(target, "rb").read() == release["mocap-s1-d1.mat"]
