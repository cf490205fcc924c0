"""`PageCacheTrimmer`: a prepare's output is written back and dropped from the page cache as it grows.

Only about speed (BENCHMARKS.md): what must hold is that nothing written changes, that the pages
really leave the cache where the platform allows it, and that it stays out of the way elsewhere.
"""

from __future__ import annotations

import ctypes
import mmap
import os

import numpy as np
import pytest
from helpers import assert_same_table

import rat7m
from rat7m_builder import writeback
from rat7m_builder.writeback import PageCacheTrimmer

MIB = 1 << 20


def _cached_fraction(path: str) -> float:
    """Fraction of the file's pages in the page cache (``mincore`` on a shared read-only mapping)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    size = os.path.getsize(path)
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    descriptor = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, descriptor, 0)
        assert address not in (None, ctypes.c_void_p(-1).value), "mmap failed"
        residency = ctypes.create_string_buffer(pages)
        try:
            assert libc.mincore(address, size, residency) == 0, os.strerror(ctypes.get_errno())
        finally:
            libc.munmap(address, size)
    finally:
        os.close(descriptor)
    return float(np.mean(np.frombuffer(residency.raw, np.uint8) & 1))


def _on_tmpfs(path: str) -> bool:
    """tmpfs has no disk behind it: its pages are the storage and are never dropped."""
    best, filesystem = "", ""
    with open("/proc/mounts") as mounts:
        for line in mounts:
            _, mount_point, kind, *_ = line.split()
            if os.path.realpath(path).startswith(mount_point) and len(mount_point) > len(best):
                best, filesystem = mount_point, kind
    return filesystem == "tmpfs"


needs_linux = pytest.mark.skipif(not os.path.exists("/proc/mounts"), reason="page cache control is Linux only")


@needs_linux
def test_a_growing_file_is_written_back_and_dropped_except_its_tail(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "train-00000-00000-of-NNNNN.arrow"
    trimmer = PageCacheTrimmer(str(tmp_path / "train-00000-*-of-NNNNN.arrow"), keep_bytes=2 * MIB)
    assert trimmer.enabled
    written = []
    with open(path, "wb") as file:
        for _ in range(8):  # 8 MiB in 1 MiB writes, a trim after each, as `datasets` reports progress
            chunk = rng.integers(0, 256, MIB, dtype=np.uint8).tobytes()
            file.write(chunk)
            file.flush()
            written.append(chunk)
            trimmer.trim()
    assert path.read_bytes() == b"".join(written)  # nothing written changes
    assert trimmer.dropped_bytes == 6 * MIB  # all but the last 2 MiB


@needs_linux
def test_trimming_drops_the_pages_behind_the_kept_tail(tmp_path):
    if _on_tmpfs(str(tmp_path)):
        pytest.skip("tmpfs keeps its pages: nothing to drop (the other tests still check the output)")
    path = tmp_path / "shard-00000-00000-of-NNNNN.arrow"
    trimmer = PageCacheTrimmer(str(path), keep_bytes=MIB)
    with open(path, "wb") as file:
        for _ in range(8):
            file.write(os.urandom(MIB))
            file.flush()
            trimmer.trim()
    trimmer.trim()
    cached = _cached_fraction(str(path))
    assert cached <= 2 / 8 + 0.01, f"{cached:.0%} of the file still cached; at most the 1 MiB tail (+1) should be"
    # Control: the measurement does see cached pages (reading the file back caches it all again).
    path.read_bytes()
    assert _cached_fraction(str(path)) > 0.9


def test_it_stays_out_of_the_way_when_told_or_when_it_cannot(monkeypatch, tmp_path):
    monkeypatch.setenv(writeback.ENVIRONMENT_VARIABLE, "keep")
    assert not PageCacheTrimmer(str(tmp_path / "*.arrow")).enabled
    monkeypatch.delenv(writeback.ENVIRONMENT_VARIABLE)
    assert not PageCacheTrimmer("s3://bucket/rat7m/train-00000-*.arrow").enabled
    monkeypatch.setattr(writeback, "_SYNC_FILE_RANGE", None)  # not Linux
    trimmer = PageCacheTrimmer(str(tmp_path / "*.arrow"))
    assert not trimmer.enabled
    trimmer.trim()  # a no-op, no error


@needs_linux
def test_an_unsupported_filesystem_turns_it_off_without_an_error(monkeypatch, tmp_path):
    (tmp_path / "a.arrow").write_bytes(b"x" * 100)

    def refuse(*_):
        ctypes.set_errno(22)  # EINVAL, as a filesystem without the call answers
        return -1

    monkeypatch.setattr(writeback, "_SYNC_FILE_RANGE", refuse)
    trimmer = PageCacheTrimmer(str(tmp_path / "*.arrow"), keep_bytes=0)
    trimmer.trim()
    assert not trimmer.enabled and (tmp_path / "a.arrow").read_bytes() == b"x" * 100


@pytest.mark.parametrize("config", ["frames", "multiview"])
def test_a_prepare_that_drops_every_page_writes_the_same_dataset(monkeypatch, sample_release, tmp_path, config):
    kept = rat7m.load_dataset(config, "train", data_dir=sample_release.root, cache_dir=str(tmp_path / "kept"))
    # Keep nothing: every trim writes back and drops everything written so far, mid-file included.
    monkeypatch.setattr(writeback, "KEEP_BYTES", 0)
    for num_proc in (None, 2):
        dropped = rat7m.load_dataset(
            config,
            "train",
            data_dir=sample_release.root,
            cache_dir=str(tmp_path / f"dropped-{num_proc}"),
            num_proc=num_proc,
        )
        assert_same_table(dropped.data.table, kept.data.table)


@needs_linux
def test_by_default_the_last_64_mib_of_each_file_stay_cached(tmp_path):
    path = tmp_path / "train-00000-00000-of-NNNNN.arrow"
    with open(path, "wb") as file:
        file.truncate(65 * MIB)  # sparse: sizes are all that count here, nothing is really written
    trimmer = PageCacheTrimmer(str(path))
    trimmer.trim()
    assert trimmer.dropped_bytes == MIB


@needs_linux
def test_trimming_again_before_the_file_grew_leaves_the_kept_tail_alone(monkeypatch, tmp_path):
    # `datasets` may report progress twice without a write in between. A range of length 0 means
    # "to the end of the file" to sync_file_range and posix_fadvise: the tail would be dropped too.
    advised, fadvise = [], os.posix_fadvise

    def recording_fadvise(descriptor, offset, length, advice):
        advised.append((offset, length))
        return fadvise(descriptor, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", recording_fadvise)
    path = tmp_path / "train-00000-00000-of-NNNNN.arrow"
    trimmer = PageCacheTrimmer(str(path), keep_bytes=MIB)
    with open(path, "wb") as file:
        for _ in range(4):
            file.write(os.urandom(MIB))
            file.flush()
            trimmer.trim()
            trimmer.trim()
    assert advised == [(0, MIB), (MIB, MIB), (2 * MIB, MIB)]  # each range once, never the last MiB


def test_told_to_keep_the_page_cache_it_touches_no_file(monkeypatch, tmp_path):
    (tmp_path / "a.arrow").write_bytes(b"x" * 4096)
    calls = []
    monkeypatch.setattr(writeback, "_SYNC_FILE_RANGE", lambda *args: calls.append(args) or 0)
    monkeypatch.setattr(os, "posix_fadvise", lambda *args: calls.append(args), raising=False)
    monkeypatch.setenv(writeback.ENVIRONMENT_VARIABLE, "keep")
    trimmer = PageCacheTrimmer(str(tmp_path / "*.arrow"), keep_bytes=0)
    trimmer.trim()
    assert calls == [] and trimmer.dropped_bytes == 0
