"""Robustness of the figshare download layer: concurrent processes, misbehaving servers, Ctrl-C, odd listings.

Against the loopback stand-in (tests/standins/figshare.py) and its fault switches. Each test stays
short: small files, fast retries, and no timing assertion tighter than a few seconds.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zipfile

import pytest
from standins.figshare import FigshareStandIn, fabricate_release, figshare  # noqa: F401 - fixture

from rat7m_builder import download
from rat7m_builder.download import RetryPolicy, download_file, fetch_listing, figshare_index
from rat7m_builder.errors import ChecksumError, DownloadError, UnsafeArchiveError
from rat7m_builder.manifest import MOCAP_ARTICLE, VIDEO_ARTICLES

#: Retries without real waiting: the stand-in's faults are immediate.
FAST = RetryPolicy(max_retries=3, backoff_base=0.01, backoff_max=0.02, max_wait=0.02, timeout=(5.0, 5.0))
#: A loop that never ends would otherwise hang the run: these tests finish in about a second.
BOUNDED = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(download, "DEFAULT_RETRY", FAST)


@pytest.fixture
def release(figshare: FigshareStandIn) -> dict[str, bytes]:  # noqa: F811 - the fixture above
    return fabricate_release(figshare, ["s1-d1"], cameras=(1, 2))


@pytest.fixture
def cache(tmp_path) -> str:
    return str(tmp_path / "cache")


def _url(standin: FigshareStandIn, name: str) -> str:
    return f"{standin.base_url}/ndownloader/files/{standin.file(name).file_id}"


def _files_in(folder: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), folder) for d, _, names in os.walk(folder) for n in names)


def _leftovers(folder: str) -> list[str]:
    """Temporary and partial files (the hidden per-file lock files stay by design)."""
    return [path for path in _files_in(folder) if path.endswith((".incomplete", ".tmp"))]


# -- 1: two processes, one cache -------------------------------------------------------------------

#: One downloading process: waits for the go file (so both start together), then downloads the
#: selection into the shared cache and lays it out in the shared dest, like `rat7m download --dest`.
_CLIENT = textwrap.dedent(
    """
    import os, sys, time
    from rat7m_builder.download import figshare_index, materialize
    cache, dest, go = sys.argv[1:4]
    open(go + "." + str(os.getpid()) + ".ready", "w").close()
    while not os.path.exists(go):
        time.sleep(0.005)
    index = figshare_index(["s1-d1"], [1, 2], cache, need_video=True, progress=False)
    materialize(index, dest)
    print("OK")
    """
)


@BOUNDED
def test_two_processes_downloading_the_same_selection_at_once_both_succeed(figshare, release, tmp_path):  # noqa: F811
    # Slow enough that the two runs overlap on every file (each takes about 0.3 s to send).
    figshare.body_delay = 0.1
    cache, dest, go = str(tmp_path / "cache"), str(tmp_path / "dest"), str(tmp_path / "go")
    clients = [
        subprocess.Popen(
            [sys.executable, "-c", _CLIENT, cache, dest, go],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    deadline = time.monotonic() + 30
    while len([name for name in os.listdir(tmp_path) if name.endswith(".ready")]) < 2:
        assert time.monotonic() < deadline, "the clients did not start"
        time.sleep(0.01)
    open(go, "w").close()
    outputs = [client.communicate(timeout=45) for client in clients]

    for client, (out, err) in zip(clients, outputs, strict=True):
        assert client.returncode == 0 and out.strip() == "OK", err[-2000:]
    needed = {name for name in release if name.startswith("s1-d1-camera")} | {"mocap-s1-d1.mat"}
    for name in needed:
        article = MOCAP_ARTICLE if name.endswith(".mat") else VIDEO_ARTICLES["s1-d1"]
        cached = os.path.join(download.article_dir(cache, *article), name)
        folder = "annotations" if name.endswith(".mat") else "video_sequences"
        for path in (cached, os.path.join(dest, folder, name)):
            with open(path, "rb") as file:
                assert hashlib.md5(file.read()).hexdigest() == figshare.file(name).md5, path
        # Whoever waited for the other's lock found the file verified: each file was sent once.
        assert [request.range for request in figshare.requests_for(name)] == [None], name
    assert _leftovers(cache) == [] and _leftovers(dest) == []


def test_writes_of_the_same_record_never_share_a_temporary_file(tmp_path, monkeypatch):
    """A writer that interleaves with another (simulated: the other's whole write happens inside this
    one's rename) must not find its temporary file renamed away under it, nor leave one behind."""
    dest = str(tmp_path / "file.bin")
    listing = str(tmp_path / "listing.json")
    replace = os.replace
    other_writers = [
        lambda: download._write_sidecar(dest, "b" * 32),
        lambda: download._write_json_atomic(listing, {"files": ["other"]}),
    ]

    def replace_after_another_writer(source, target):
        if other_writers:
            other_writers.pop(0)()
        replace(source, target)

    monkeypatch.setattr(os, "replace", replace_after_another_writer)
    download._write_sidecar(dest, "a" * 32)
    download._write_json_atomic(listing, {"files": []})
    monkeypatch.setattr(os, "replace", replace)

    assert other_writers == []
    assert download._read_sidecar(dest) == "a" * 32  # the last rename wins, whole
    assert json.load(open(listing)) == {"files": []}
    assert _leftovers(str(tmp_path)) == []


# -- 2: servers that would make a download loop forever --------------------------------------------


@BOUNDED
def test_a_206_from_another_offset_restarts_the_file_once(figshare, release, tmp_path):  # noqa: F811
    name = "s1-d1-camera1-3500.mp4"
    figshare.drop_once[name] = 1000
    figshare.range_shift[name] = 100  # the resume's answer starts 100 bytes before what was asked
    dest = str(tmp_path / name)
    download_file(_url(figshare, name), dest, len(release[name]), figshare.file(name).md5)

    answers = [(request.range, request.status) for request in figshare.requests_for(name)]
    assert answers == [(None, 200), ("bytes=1000-", 206), (None, 200)]
    assert open(dest, "rb").read() == release[name]


@BOUNDED
def test_a_206_without_content_range_restarts_the_file_once(figshare, release, tmp_path):  # noqa: F811
    name = "s1-d1-camera1-3500.mp4"
    figshare.drop_once[name] = 1000
    figshare.strip_content_range.add(name)
    dest = str(tmp_path / name)
    download_file(_url(figshare, name), dest, len(release[name]), figshare.file(name).md5)

    assert [r.range for r in figshare.requests_for(name)] == [None, "bytes=1000-", None]
    assert open(dest, "rb").read() == release[name]


@BOUNDED
def test_a_server_ignoring_range_that_always_drops_at_the_same_byte_gives_up(figshare, release, tmp_path):  # noqa: F811
    name = "s1-d1-camera1-3500.mp4"
    figshare.ignore_range.add(name)
    figshare.drop_always[name] = 1000
    with pytest.raises(DownloadError) as raised:
        download_file(_url(figshare, name), str(tmp_path / name), len(release[name]), figshare.file(name).md5)

    message = str(raised.value)
    assert name in message and _url(figshare, name) in message and "ignored Range" in message
    assert len(figshare.requests_for(name)) == FAST.max_retries + 1


@BOUNDED
def test_bytes_received_for_a_file_are_bounded(figshare, release, tmp_path):  # noqa: F811
    """Range ignored, and each attempt dropped a little later: progress every time, yet bytes pile up."""
    name = "s1-d1-camera1-3500.mp4"
    size = len(release[name])
    figshare.ignore_range.add(name)
    later_drops = iter(range(1000, size, 500))
    figshare.drop_once[name] = next(later_drops)

    def next_drop(_delay: float) -> None:  # between attempts: arm the next, later drop
        figshare.drop_once[name] = next(later_drops, size)

    retry = RetryPolicy(max_retries=3, backoff_base=0.01, timeout=(5.0, 5.0), sleep=next_drop)
    with pytest.raises(DownloadError) as raised:
        download_file(_url(figshare, name), str(tmp_path / name), size, figshare.file(name).md5, retry=retry)

    message = str(raised.value)
    assert name in message and _url(figshare, name) in message and "ignored Range" in message
    sent = sum(request.bytes_sent for request in figshare.requests_for(name))
    assert download.MAX_TRANSFER_FACTOR * size < sent <= download.MAX_TRANSFER_FACTOR * size + size


# -- 3: failures requests does not retry -------------------------------------------------------------


@BOUNDED
def test_a_redirect_loop_is_a_download_error_naming_file_and_url(figshare, release, cache):  # noqa: F811
    name = "mocap-s1-d1.mat"
    figshare.redirect_loop.add(name)
    with pytest.raises(DownloadError) as raised:
        figshare_index(["s1-d1"], [1], cache, need_video=False, progress=False)
    message = str(raised.value)
    assert name in message and _url(figshare, name) in message and "redirect" in message
    assert figshare.requests_for(name) == []


def test_an_unsupported_url_is_a_download_error(tmp_path, monkeypatch):
    with pytest.raises(DownloadError, match=r"x\.mat: requesting ftp://example\.invalid/x\.mat failed"):
        download_file("ftp://example.invalid/x.mat", str(tmp_path / "x.mat"), 10, None)
    monkeypatch.setenv("RAT7M_FIGSHARE_API_URL", "ftp://example.invalid/v2")
    with pytest.raises(DownloadError, match=r"listing of figshare article .*ftp://example\.invalid/v2"):
        fetch_listing(*MOCAP_ARTICLE, str(tmp_path / "cache"))


# -- 4: Ctrl-C on a stalled connection ------------------------------------------------------------------


def _interrupt_main_when(condition, timeout: float = 20.0) -> threading.Thread:
    """Send SIGINT to the main thread (as Ctrl-C does) once ``condition()`` holds; never if it does not."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        # Let the client read what the server sent (under load, 0.2 s was sometimes not enough and the
        # partial file held fewer bytes): it is then blocked reading the stalled body.
        time.sleep(1.0)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@BOUNDED
def test_ctrl_c_on_a_stalled_connection_returns_at_once_and_a_rerun_resumes(figshare, release, cache):  # noqa: F811
    name = "s1-d1-camera2-3500.mp4"
    figshare.stall_once[name] = (500, 30.0)  # sends 500 bytes, then nothing for 30 s
    retry = RetryPolicy(max_retries=3, backoff_base=0.01, timeout=(5.0, 30.0))

    def stalled() -> bool:
        return any(request.bytes_sent == 500 for request in figshare.requests_for(name))

    watcher = _interrupt_main_when(stalled)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        figshare_index(["s1-d1"], [1, 2], cache, need_video=True, retry=retry, progress=False)
        time.sleep(5)  # (only reached if the download ended before the interrupt: let it land here)
    interrupted = time.monotonic() - started
    watcher.join()
    # Without the cut, the worker would sit out the 30 s read timeout (or the stall) first.
    assert interrupted < 10, f"Ctrl-C took {interrupted:.1f} s"
    partial = os.path.join(download.article_dir(cache, *VIDEO_ARTICLES["s1-d1"]), name + ".incomplete")
    assert open(partial, "rb").read() == release[name][:500]

    index = figshare_index(["s1-d1"], [1, 2], cache, need_video=True, progress=False)
    assert figshare.requests_for(name)[-1].range == "bytes=500-"
    chunk = next(c.file for c in index.chunks("s1-d1", 2) if c.file.name == name)
    assert open(chunk.location, "rb").read() == release[name]
    assert _leftovers(cache) == []


# -- 5: an empty file ---------------------------------------------------------------------------------


def test_an_empty_file_is_created_and_verified(figshare, tmp_path):  # noqa: F811
    stored = figshare.add_file(9, 1, "empty.bin", b"")
    dest = str(tmp_path / "empty.bin")
    download_file(_url(figshare, "empty.bin"), dest, 0, stored.md5)
    assert open(dest, "rb").read() == b"" and download._read_sidecar(dest) == hashlib.md5(b"").hexdigest()
    assert _leftovers(str(tmp_path)) == []

    # A listing that gives an empty file another md5 contradicts itself, and the message says so.
    with pytest.raises(ChecksumError, match="contradicts itself"):
        download_file(_url(figshare, "empty.bin"), str(tmp_path / "other.bin"), 0, "0" * 32)
    assert _leftovers(str(tmp_path)) == []


# -- 6a: one name listed twice ------------------------------------------------------------------------------


def _entry(standin: FigshareStandIn, name: str) -> dict:
    return next(entry for entry in standin.listing(*MOCAP_ARTICLE) if entry["name"] == name)


def test_a_name_listed_twice_as_the_same_file_is_downloaded_once(figshare, release, cache):  # noqa: F811
    name = "mocap-s1-d1.mat"
    figshare.listing_extra[MOCAP_ARTICLE[0]] = [dict(_entry(figshare, name))]
    index = figshare_index(["s1-d1"], [1], cache, need_video=False, progress=False)
    assert open(index.mocap["s1-d1"].location, "rb").read() == release[name]
    assert len(figshare.requests_for(name)) == 1


def test_a_name_listed_twice_as_different_files_is_refused(figshare, release, cache):  # noqa: F811
    name = "mocap-s1-d1.mat"
    real = _entry(figshare, name)
    figshare.listing_extra[MOCAP_ARTICLE[0]] = [dict(real, id=99999, computed_md5="0" * 32, supplied_md5="0" * 32)]
    with pytest.raises(DownloadError) as raised:
        figshare_index(["s1-d1"], [1], cache, need_video=False, progress=False)
    message = str(raised.value)
    assert f"article {MOCAP_ARTICLE[0]}" in message and name in message
    assert f"id {real['id']}" in message and "id 99999" in message
    assert real["computed_md5"] in message and "0" * 32 in message and str(real["size"]) in message
    assert figshare.downloads() == []


# -- 6b: a partial file of the full size with wrong bytes ------------------------------------------------------


def test_a_full_size_partial_with_wrong_bytes_is_downloaded_again(figshare, release, tmp_path):  # noqa: F811
    name = "mocap-s1-d1.mat"
    dest = str(tmp_path / name)
    with open(dest + ".incomplete", "wb") as partial:
        partial.write(b"\0" * len(release[name]))
    download_file(_url(figshare, name), dest, len(release[name]), figshare.file(name).md5)
    assert open(dest, "rb").read() == release[name]
    assert [request.range for request in figshare.requests_for(name)] == [None]  # from byte 0


def test_a_mismatch_after_a_fresh_download_is_reported_truthfully(figshare, release, tmp_path):  # noqa: F811
    name = "mocap-s1-d1.mat"
    dest = str(tmp_path / name)
    with open(dest + ".incomplete", "wb") as partial:
        partial.write(b"\0" * len(release[name]))
    figshare.wrong_bytes.add(name)
    with pytest.raises(ChecksumError, match=f"md5 mismatch.*from {_url(figshare, name)}"):
        download_file(_url(figshare, name), dest, len(release[name]), figshare.file(name).md5)
    assert len(figshare.requests_for(name)) == 1  # the message's download did happen
    assert _leftovers(str(tmp_path)) == []


# -- 6c: a damaged article zip -------------------------------------------------------------------------------


def test_a_zip_with_a_damaged_header_is_deleted_so_a_rerun_downloads_it_again(figshare, release, cache, monkeypatch):  # noqa: F811
    article = VIDEO_ARTICLES["s1-d1"]
    intact = figshare.article_zip(*article)
    damaged = bytearray(intact)
    damaged[zipfile.ZipFile(io.BytesIO(intact)).getinfo("s1-d1-camera1-3500.mp4").header_offset] = 0
    served = {"zip": bytes(damaged)}
    original = figshare.article_zip
    monkeypatch.setattr(figshare, "article_zip", lambda a, v: served["zip"] if (a, v) == article else original(a, v))

    with pytest.raises(UnsafeArchiveError) as raised:
        figshare_index(["s1-d1"], [1], cache, need_video=True, source="archives", progress=False)
    message = str(raised.value)
    assert "damaged local header" in message and "deleted" in message and "source='files'" in message
    assert "Delete this zip" not in message  # it is already deleted: only the re-run advice
    zip_path = os.path.join(cache, f"article-{article[0]}-v{article[1]}.zip")
    assert not [path for path in _files_in(cache) if path.startswith(os.path.basename(zip_path))]

    served["zip"] = intact
    figshare.clear_log()
    index = figshare_index(["s1-d1"], [1], cache, need_video=True, source="archives", progress=False)
    assert [request.path for request in figshare.downloads()] == [f"/ndownloader/articles/{article[0]}/versions/1"]
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.read(index.chunks("s1-d1", 1)[1].file.name) == release["s1-d1-camera1-3500.mp4"]


# -- 6d: offline, no md5 to check a cached file against ----------------------------------------------------------


def test_offline_a_cached_file_without_md5_or_record_is_called_unverifiable(figshare, release, cache, monkeypatch):  # noqa: F811
    listing = figshare.listing

    def without_md5(article_id: int, version: int) -> list[dict]:
        return [dict(entry, computed_md5="", supplied_md5="") for entry in listing(article_id, version)]

    monkeypatch.setattr(figshare, "listing", without_md5)
    index = figshare_index(["s1-d1"], [1], cache, need_video=False, progress=False)
    os.remove(index.mocap["s1-d1"].location + ".md5")

    with pytest.raises(DownloadError) as raised:
        figshare_index(["s1-d1"], [1], cache, need_video=False, progress=False, offline=True)
    message = str(raised.value)
    assert "mocap-s1-d1.mat" in message and "cannot be verified offline" in message
    assert "not in" not in message


# -- 7: what is already on disk: verified copies, partial files, records -------------------------------------


def _download(standin: FigshareStandIn, name: str, dest: str, size: int | None = None) -> str:
    stored = standin.file(name)
    return download_file(_url(standin, name), dest, len(stored.data) if size is None else size, stored.md5)


def test_a_verified_copy_cut_short_since_is_downloaded_again(figshare, release, tmp_path):  # noqa: F811
    # Its .md5 record still names the right md5, but vouches only for a file of the listed size.
    name = "mocap-s1-d1.mat"
    dest = _download(figshare, name, str(tmp_path / name))
    with open(dest, "r+b") as file:
        file.truncate(100)
    figshare.clear_log()
    _download(figshare, name, dest)
    assert open(dest, "rb").read() == release[name] and len(figshare.requests_for(name)) == 1


@pytest.mark.parametrize("record", [None, "0" * 32], ids=["no record", "record of another md5"])
def test_a_same_size_file_with_other_bytes_is_downloaded_again(figshare, release, tmp_path, record):  # noqa: F811
    # A file under the final name that no record vouches for (copied in, or a crash right after the
    # rename; or a record of other bytes) is hashed, not trusted for having the right size.
    name = "mocap-s1-d1.mat"
    dest = str(tmp_path / name)
    with open(dest, "wb") as file:
        file.write(b"\0" * len(release[name]))
    if record is not None:
        download._write_sidecar(dest, record)
    _download(figshare, name, dest)
    assert open(dest, "rb").read() == release[name] and len(figshare.requests_for(name)) == 1
    assert download._read_sidecar(dest) == figshare.file(name).md5


def test_a_complete_partial_left_by_an_earlier_run_is_published_with_no_request(figshare, release, tmp_path):  # noqa: F811
    # A run stopped after the last byte but before the rename: nothing is left to download.
    name = "s1-d1-camera1-0.mp4"
    dest = str(tmp_path / name)
    with open(dest + ".incomplete", "wb") as partial:
        partial.write(release[name])
    _download(figshare, name, dest)
    assert figshare.requests_for(name) == []
    assert open(dest, "rb").read() == release[name] and not os.path.exists(dest + ".incomplete")


def test_a_partial_longer_than_the_listed_size_is_discarded_and_downloaded_from_byte_0(figshare, release, tmp_path):  # noqa: F811
    name = "s1-d1-camera1-0.mp4"
    dest = str(tmp_path / name)
    with open(dest + ".incomplete", "wb") as partial:
        partial.write(release[name] + b"\0" * 50)
    _download(figshare, name, dest)
    assert [request.range for request in figshare.requests_for(name)] == [None]  # no resume past its end
    assert open(dest, "rb").read() == release[name]


@BOUNDED
def test_a_partial_longer_than_a_file_of_unknown_size_is_downloaded_again(figshare, release, tmp_path):  # noqa: F811
    # Article zips have no listed size: the server's 416 (with the true size) is what tells that the
    # partial file cannot be a prefix. Resuming it again and again would fail every run until the user
    # found and deleted it.
    name = "s1-d1-camera1-0.mp4"
    dest = str(tmp_path / name)
    with open(dest + ".incomplete", "wb") as partial:
        partial.write(b"\0" * (len(release[name]) + 50))
    download_file(_url(figshare, name), dest, None, None)
    assert [(request.range, request.status) for request in figshare.requests_for(name)] == [
        (f"bytes={len(release[name]) + 50}-", 416),
        (None, 200),
    ]
    assert open(dest, "rb").read() == release[name]


def test_more_bytes_than_listed_is_a_checksum_error_naming_both_sizes(figshare, release, tmp_path):  # noqa: F811
    # Far more than listed (not a transfer that keeps breaking): the listing and the file disagree,
    # which is what the user must be told.
    name = "s1-d1-camera1-0.mp4"
    listed = len(release[name]) // 10
    with pytest.raises(ChecksumError, match=f"lists {listed}"):
        _download(figshare, name, str(tmp_path / name), size=listed)
    assert _leftovers(str(tmp_path)) == []


@BOUNDED
def test_a_body_that_ends_early_without_an_error_is_resumed(figshare, release, tmp_path, monkeypatch):  # noqa: F811
    # A connection closed cleanly before the end (a body without Content-Length ends this way): the
    # bytes so far are kept and the rest asked for, not published as a short (bad) file.
    name = "s1-d1-camera1-0.mp4"
    read_block = download._read_block
    reads: list[int] = []

    def first_body_ends_after_1000_bytes(response):
        reads.append(len(reads))
        if len(reads) == 1:
            return response.raw.read(1000)
        if len(reads) == 2:
            return b""
        return read_block(response)

    monkeypatch.setattr(download, "_read_block", first_body_ends_after_1000_bytes)
    dest = _download(figshare, name, str(tmp_path / name))
    assert [request.range for request in figshare.requests_for(name)] == [None, "bytes=1000-"]
    assert open(dest, "rb").read() == release[name]


class _Killed(BaseException):
    """The process stops here (as a SIGKILL would, but catchable by the test)."""


def test_a_stop_before_the_rename_leaves_no_record_vouching_for_old_bytes(figshare, release, tmp_path, monkeypatch):  # noqa: F811
    # An unverified copy is in place (same size, other bytes). If the new .md5 record were written before
    # the verified file replaced it, a stop in between would leave the bad copy looking verified for good.
    name = "mocap-s1-d1.mat"
    dest = str(tmp_path / name)
    with open(dest, "wb") as file:
        file.write(b"\0" * len(release[name]))
    replace = os.replace

    def stop_before_publishing(source, target):
        if target == dest:
            raise _Killed()
        replace(source, target)

    monkeypatch.setattr(os, "replace", stop_before_publishing)
    with pytest.raises(_Killed):
        _download(figshare, name, dest)
    monkeypatch.setattr(os, "replace", replace)

    assert not download.is_verified(dest, len(release[name]), figshare.file(name).md5)
    _download(figshare, name, dest)  # the re-run publishes the verified partial file
    assert open(dest, "rb").read() == release[name]


def test_a_failed_atomic_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def disk_full(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        download._write_json_atomic(str(tmp_path / "listing.json"), {"files": []})
    assert os.listdir(tmp_path) == []


# -- 8: one name listed twice, without md5 ------------------------------------------------------------------


def test_a_name_listed_twice_without_md5_under_two_ids_is_refused(figshare, release, cache, monkeypatch):  # noqa: F811
    # Same size, no md5: nothing tells the two apart, and nothing would catch the wrong one afterwards.
    name = "mocap-s1-d1.mat"
    figshare.listing_extra[MOCAP_ARTICLE[0]] = [dict(_entry(figshare, name), id=99999)]
    listing = figshare.listing

    def without_md5(article_id: int, version: int) -> list[dict]:
        return [dict(entry, computed_md5="", supplied_md5="") for entry in listing(article_id, version)]

    monkeypatch.setattr(figshare, "listing", without_md5)
    with pytest.raises(DownloadError, match=f"lists {name} twice"):
        figshare_index(["s1-d1"], [1], cache, need_video=False, progress=False)
    assert figshare.downloads() == []


# -- 9: article zips whose member data fails its CRC ---------------------------------------------------------


def _zip_with_damaged_member(standin: FigshareStandIn, article: tuple[int, int], member: str, pad: bool) -> bytes:
    """The article's zip with one byte of ``member``'s stored data flipped (headers intact: only the
    CRC-32 can tell); ``pad`` adds a member, so the zip has another size than the intact one."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for stored in standin.article_files(*article):
            archive.writestr(stored.name, stored.data)
        if pad:
            archive.writestr("notes.txt", b"padding")
    data = bytearray(buffer.getvalue())
    header = zipfile.ZipFile(io.BytesIO(buffer.getvalue())).getinfo(member).header_offset
    name_length, extra_length = struct.unpack("<HH", data[header + 26 : header + 30])
    data[header + 30 + name_length + extra_length + 10] ^= 0xFF
    return bytes(data)


def test_a_downloaded_zip_failing_a_crc_is_deleted_so_a_rerun_downloads_it_again(figshare, release, cache, monkeypatch):  # noqa: F811
    article, member = VIDEO_ARTICLES["s1-d1"], "s1-d1-camera1-3500.mp4"
    served = {"zip": _zip_with_damaged_member(figshare, article, member, pad=False)}
    original = figshare.article_zip
    monkeypatch.setattr(figshare, "article_zip", lambda a, v: served["zip"] if (a, v) == article else original(a, v))

    with pytest.raises(ChecksumError, match=f"member '{member}' is damaged"):
        figshare_index(["s1-d1"], [1], cache, need_video=True, source="archives", progress=False)
    zip_name = f"article-{article[0]}-v{article[1]}.zip"
    assert not [path for path in _files_in(cache) if path.startswith(zip_name)]  # zip and its records

    served["zip"] = original(*article)
    index = figshare_index(["s1-d1"], [1], cache, need_video=True, source="archives", progress=False)
    assert index.chunks("s1-d1", 1)[1].file.name == member
    with zipfile.ZipFile(os.path.join(cache, zip_name)) as archive:
        assert archive.read(member) == release[member]


def test_the_verified_members_record_of_a_zip_does_not_vouch_for_another_zip(figshare, release, cache, monkeypatch):  # noqa: F811
    # The zip was deleted by hand (its .verified.json left behind) and the one downloaded next is damaged:
    # the members must be checked again, not taken as verified.
    article, member = VIDEO_ARTICLES["s1-d1"], "s1-d1-camera1-3500.mp4"
    figshare_index(["s1-d1"], [1], cache, need_video=True, source="archives", progress=False)
    zip_path = os.path.join(cache, f"article-{article[0]}-v{article[1]}.zip")
    os.remove(zip_path)
    assert os.path.exists(zip_path + ".verified.json")
    damaged = _zip_with_damaged_member(figshare, article, member, pad=True)
    original = figshare.article_zip
    monkeypatch.setattr(figshare, "article_zip", lambda a, v: damaged if (a, v) == article else original(a, v))

    with pytest.raises(ChecksumError, match=f"member '{member}' is damaged"):
        figshare_index(["s1-d1"], [1], cache, need_video=True, source="archives", progress=False)
