"""Finding and opening a local release copy: what a user relies on in `rat7m_builder.sources`.

Chunk order, which files are used when a copy holds a file twice, zips as other tools write them,
the limits that refuse a zip bomb (at their exact boundaries), members that change after the copy
was indexed, and the remote read-ahead cache. Every file here is fabricated on the spot: release
names with a few bytes of content (nothing here decodes an mp4 or parses a .mat), zips written with
`zipfile` and patched in place. The largest member is 17 MiB of nearly all zeros.
"""

from __future__ import annotations

import io
import os
import random
import re
import zipfile

import pytest
from helpers import patch_zip_member

from rat7m_builder import sources
from rat7m_builder.errors import (
    DuplicateFileError,
    MissingFileError,
    MocapFormatError,
    UnsafeArchiveError,
    VideoDecodeError,
)
from rat7m_builder.manifest import parse_video_name
from rat7m_builder.sources import (
    FileRef,
    GrowingReadAheadCache,
    ReleaseIndex,
    describe_names,
    open_file,
    scan_local,
)

MAT = "mocap-s1-d1.mat"
MAT_BYTES = b"MATLAB 5.0 MAT-file, fabricated " + bytes(range(256)) * 4
#: Chunk starts of a real recording, given out of order: as strings "10500" < "3500" < "7000".
STARTS = [10500, 3500, 0, 7000, 14000]


def _write_zip(path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> str:
    """A zip holding ``members`` (name → content), all compressed with ``compression``."""
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _write(path, data: bytes) -> str:
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as file:
        file.write(data)
    return path


def _compressible(size: int, ratio: int, seed: int = 0) -> bytes:
    """``size`` bytes that deflate about ``ratio`` times: random bytes, then zeros."""
    random_part = random.Random(seed).randbytes(size // ratio)
    return random_part + bytes(size - len(random_part))


# -- chunk order and repeated chunks -------------------------------------------------------------------------


def test_chunks_are_sorted_by_start_frame_as_numbers_not_as_strings():
    index = ReleaseIndex()
    for start in STARTS:
        name = f"s1-d1-camera2-{start}.mp4"
        index.add_video(parse_video_name(name), FileRef(name, f"/copy/{name}"))
    assert [chunk.start for chunk in index.chunks("s1-d1", 2)] == [0, 3500, 7000, 10500, 14000]
    assert [chunk.file.name for chunk in index.chunks("s1-d1", 2)][:2] == [
        "s1-d1-camera2-0.mp4",
        "s1-d1-camera2-3500.mp4",
    ]
    assert index.chunks("s1-d1", 1) == [] and index.chunks("s2-d1", 2) == []


def test_a_chunk_given_twice_is_kept_once_the_first_copy():
    # a listing or a set of zips naming one chunk twice must not add its frames twice
    name = "s1-d1-camera1-3500.mp4"
    index = ReleaseIndex()
    index.add_video(parse_video_name(name), FileRef(name, "/first/" + name))
    index.add_video(parse_video_name("s1-d1-camera1-0.mp4"), FileRef("s1-d1-camera1-0.mp4", "/first/x"))
    index.add_video(parse_video_name(name), FileRef(name, "/second/" + name))
    chunks = index.chunks("s1-d1", 1)
    assert [chunk.start for chunk in chunks] == [0, 3500]
    assert chunks[1].file.location == "/first/" + name


def test_scan_sorts_the_chunks_of_a_flat_folder_numerically(tmp_path):
    for start in STARTS:
        _write(tmp_path / f"s1-d1-camera4-{start}.mp4", b"mp4" * (start // 3500 + 1))
    chunks = scan_local(str(tmp_path)).chunks("s1-d1", 4)
    assert [chunk.start for chunk in chunks] == [0, 3500, 7000, 10500, 14000]
    assert [os.path.basename(chunk.file.location) for chunk in chunks] == [
        f"s1-d1-camera4-{start}.mp4" for start in (0, 3500, 7000, 10500, 14000)
    ]


# -- which files are found ---------------------------------------------------------------------------------------


def test_missing_data_dir_is_named_with_what_to_give(tmp_path):
    missing = str(tmp_path / "no-such-folder")
    with pytest.raises(MissingFileError, match="^" + re.escape(f"data_dir {missing!r} is not a folder")) as error:
        scan_local(missing)
    assert "Give the folder holding your RAT7M copy" in str(error.value)


def test_a_zip_with_an_upper_case_extension_is_read(tmp_path):
    zip_path = _write_zip(tmp_path / "13739233.ZIP", {MAT: MAT_BYTES})
    ref = scan_local(str(tmp_path)).mocap["s1-d1"]
    assert ref.where == f"member '{MAT}' of {zip_path}"


def test_files_that_are_not_release_files_are_ignored(tmp_path):
    _write(tmp_path / "Mocap-s1-d1.mat", b"x")  # capitals: not the release's name
    _write(tmp_path / "s1-d1-Camera1-0.mp4", b"x")
    _write(tmp_path / "s1-d1-camera1-0.mp4.part", b"x")
    _write(tmp_path / "notes.txt", b"x")
    index = scan_local(str(tmp_path))
    assert index.mocap == {} and index.videos == {}
    assert index.description == f"data_dir {tmp_path}"


def test_release_members_under_windows_folders_of_a_zip_are_found(tmp_path):
    # a zip made on Windows may separate folders with backslashes: "Rat7M\\mocap-s1-d1.mat"
    zip_path = _write_zip(tmp_path / "data" / "rat7m.zip", {"Rat7M\\" + MAT: MAT_BYTES})
    ref = scan_local(str(tmp_path / "data")).mocap["s1-d1"]
    assert ref.name == MAT and ref.location == f"zip://Rat7M\\{MAT}::{zip_path}"
    with open_file(ref) as file:
        assert file.read() == MAT_BYTES


def test_non_release_members_of_a_zip_are_not_checked(tmp_path):
    """A readme compressed with bzip2 beside the release files: only release members must be deflate or stored."""
    zip_path = str(tmp_path / "data" / "13739233.zip")
    os.makedirs(os.path.dirname(zip_path))
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("README.txt", b"readme " * 100, compress_type=zipfile.ZIP_BZIP2)
        archive.writestr(MAT, MAT_BYTES, compress_type=zipfile.ZIP_DEFLATED)
    with open_file(scan_local(str(tmp_path / "data")).mocap["s1-d1"]) as file:
        assert file.read() == MAT_BYTES


# -- a file found twice -------------------------------------------------------------------------------------------


def test_two_loose_copies_of_a_chunk_with_different_sizes_are_refused_naming_both(tmp_path):
    chunk = "s1-d1-camera1-3500.mp4"
    good = _write(tmp_path / "video_sequences" / chunk, b"v" * 100)
    stale = _write(tmp_path / chunk, b"v" * 40)  # found first: top level before video_sequences/
    with pytest.raises(DuplicateFileError) as error:
        scan_local(str(tmp_path))
    message = str(error.value)
    assert f"{stale} (40 bytes)" in message and f"{good} (100 bytes)" in message
    assert message.startswith(f"{chunk} is in the release copy (data_dir {tmp_path}) twice")
    assert "delete the wrong one" in message


def test_two_loose_copies_of_a_chunk_of_one_size_give_one_chunk(tmp_path):
    chunk = "s1-d1-camera1-3500.mp4"
    _write(tmp_path / "video_sequences" / chunk, b"v" * 100)
    first = _write(tmp_path / chunk, b"v" * 100)
    chunks = scan_local(str(tmp_path)).chunks("s1-d1", 1)
    assert len(chunks) == 1 and chunks[0].file.location == first


def _reversed_walk(real_walk):
    """os.walk listing every folder's entries in reverse name order (file systems list in any order)."""

    def walk(top, *args, **kwargs):
        for folder, subfolders, files in real_walk(top, *args, **kwargs):
            subfolders.sort(reverse=True)  # in place: os.walk descends into this very list
            files.sort(reverse=True)
            yield folder, subfolders, files

    return walk


def test_of_two_equal_zips_in_one_folder_the_first_by_name_is_used_whatever_the_listing_order(tmp_path, monkeypatch):
    first = _write_zip(tmp_path / "a-copy.zip", {MAT: MAT_BYTES})
    _write_zip(tmp_path / "b-copy.zip", {MAT: MAT_BYTES})
    assert scan_local(str(tmp_path)).mocap["s1-d1"].where == f"member '{MAT}' of {first}"
    monkeypatch.setattr(sources.os, "walk", _reversed_walk(os.walk))
    assert scan_local(str(tmp_path)).mocap["s1-d1"].where == f"member '{MAT}' of {first}"


def test_of_two_equal_zips_in_two_folders_the_first_folder_by_name_is_used_whatever_the_listing_order(
    tmp_path, monkeypatch
):
    first = _write_zip(tmp_path / "a" / "mocap.zip", {MAT: MAT_BYTES})
    _write_zip(tmp_path / "b" / "mocap.zip", {MAT: MAT_BYTES})
    monkeypatch.setattr(sources.os, "walk", _reversed_walk(os.walk))
    assert scan_local(str(tmp_path)).mocap["s1-d1"].where == f"member '{MAT}' of {first}"


# -- damaged and hostile zips -------------------------------------------------------------------------------------


def test_a_file_named_zip_that_is_not_a_zip_is_named_as_an_incomplete_download(tmp_path):
    path = _write(tmp_path / "13739233.zip", b"PK\x03\x04 cut short by a failed download")
    with pytest.raises(MissingFileError) as error:
        scan_local(str(tmp_path))
    message = str(error.value)
    assert message.startswith(f"{path}: not a readable zip archive")
    assert "incomplete download" in message and "download the article zip again" in message


def test_a_member_with_a_damaged_local_header_is_refused(tmp_path):
    zip_path = _write_zip(tmp_path / "13739233.zip", {MAT: MAT_BYTES}, zipfile.ZIP_STORED)
    patch_zip_member(zip_path, MAT, local_only=True, signature=0x0)
    with pytest.raises(UnsafeArchiveError) as error:
        scan_local(str(tmp_path))
    assert str(error.value).startswith(f"{zip_path}: member '{MAT}' has a damaged local header")
    assert sources.REPLACE_ZIP_ADVICE in str(error.value)


@pytest.mark.parametrize(
    ("method", "member", "error_type", "named"),
    [
        (zipfile.ZIP_BZIP2, MAT, MocapFormatError, "method 12 (bzip2)"),
        (zipfile.ZIP_LZMA, "s1-d1-camera1-0.mp4", VideoDecodeError, "method 14 (lzma)"),
    ],
)
def test_release_members_compressed_other_than_deflate_are_refused(tmp_path, method, member, error_type, named):
    # zipfile inflates bzip2 and LZMA without bounding each read: a lying size could fill memory
    zip_path = _write_zip(tmp_path / "article.zip", {member: MAT_BYTES}, method)
    with pytest.raises(error_type) as error:
        scan_local(str(tmp_path))
    message = str(error.value)
    assert message.startswith(f"{zip_path}: member '{member}' is compressed with {named}")
    assert message.endswith(sources.REPLACE_ZIP_ADVICE)


def test_a_mocap_member_larger_than_any_mat_is_refused_by_its_size(tmp_path):
    # 1.5 GiB: within the mp4 limit (2 GiB), beyond the .mat limit (1 GiB)
    declared = 3 * 1024**3 // 2
    zip_path = _write_zip(tmp_path / "a.zip", {MAT: MAT_BYTES})
    patch_zip_member(zip_path, MAT, file_size=declared)
    with pytest.raises(UnsafeArchiveError) as error:
        scan_local(str(tmp_path))
    assert str(error.value).startswith(
        f"{zip_path}: member '{MAT}' declares {declared} bytes uncompressed, more than any mocap .mat file of the "
        f"release holds (limit {sources.MAX_MOCAP_MEMBER_SIZE} bytes)."
    )


def test_the_size_limit_admits_a_member_of_exactly_the_limit(tmp_path, monkeypatch):
    _write_zip(tmp_path / "a.zip", {MAT: MAT_BYTES})
    monkeypatch.setattr(sources, "MAX_MOCAP_MEMBER_SIZE", len(MAT_BYTES))
    assert scan_local(str(tmp_path)).mocap["s1-d1"].size == len(MAT_BYTES)
    monkeypatch.setattr(sources, "MAX_MOCAP_MEMBER_SIZE", len(MAT_BYTES) - 1)
    with pytest.raises(UnsafeArchiveError, match=rf"limit {len(MAT_BYTES) - 1} bytes"):
        scan_local(str(tmp_path))


def test_an_mp4_inflating_40_times_is_refused_and_a_mat_inflating_40_times_is_not(tmp_path):
    # H.264 barely deflates; a .mat full of NaN gaps deflates far more than 20 times and is real
    data = _compressible(17 * 1024**2, 40)
    chunk = "s1-d1-camera1-0.mp4"
    zip_path = _write_zip(tmp_path / "mp4" / "a.zip", {chunk: data})
    with pytest.raises(UnsafeArchiveError) as error:
        scan_local(str(tmp_path / "mp4"))
    assert str(error.value).startswith(f"{zip_path}: member '{chunk}' would inflate ")
    assert "a real mp4 chunk compresses at most about 20 times (a zip bomb?)" in str(error.value)
    _write_zip(tmp_path / "mat" / "a.zip", {MAT: data})
    assert scan_local(str(tmp_path / "mat")).mocap["s1-d1"].size == len(data)


def test_the_compression_ratio_is_checked_from_16_mib_on(tmp_path):
    below = sources.MIN_SIZE_FOR_RATIO_CHECK - 1
    _write_zip(tmp_path / "small" / "a.zip", {MAT: bytes(below)})  # zeros: ratio ≈ 1000
    assert scan_local(str(tmp_path / "small")).mocap["s1-d1"].size == below
    _write_zip(tmp_path / "large" / "a.zip", {MAT: bytes(16 * 1024**2)})
    with pytest.raises(UnsafeArchiveError, match=r"would inflate \d+ bytes to 16777216 \(\d+ times\)"):
        scan_local(str(tmp_path / "large"))


# -- reading members -------------------------------------------------------------------------------------------


def test_a_stored_member_reads_seeks_and_ends_like_the_file(tmp_path):
    other = b"NEXT MEMBER " * 50
    _write_zip(tmp_path / "a.zip", {MAT: MAT_BYTES, "mocap-s5-d1.mat": other}, zipfile.ZIP_STORED)
    index = scan_local(str(tmp_path))
    assert index.mocap["s1-d1"].member_offset is not None  # read as a byte range of the zip
    with open_file(index.mocap["s1-d1"]) as file:
        assert file.read() == MAT_BYTES
        assert file.read(10) == b""  # never the next member's bytes
        assert file.seek(-16, io.SEEK_END) == len(MAT_BYTES) - 16
        assert file.read() == MAT_BYTES[-16:]
        file.seek(5)
        assert file.read(10) == MAT_BYTES[5:15]
        assert file.seek(3, io.SEEK_CUR) == 18 and file.read(4) == MAT_BYTES[18:22]
    with open_file(index.mocap["s5-d1"]) as file:
        assert file.read() == other


def test_a_stored_member_cut_off_after_indexing_fails_naming_the_zip(tmp_path):
    zip_path = _write_zip(tmp_path / "a.zip", {MAT: MAT_BYTES}, zipfile.ZIP_STORED)
    ref = scan_local(str(tmp_path)).mocap["s1-d1"]
    with open(zip_path, "r+b") as file:
        file.truncate(ref.member_offset + 100)  # the copy is cut while in use
    with open_file(ref) as file, pytest.raises(MocapFormatError) as error:
        file.read()
    message = str(error.value)
    assert message.startswith(f"{zip_path}: member '{MAT}' ends at byte 100 of {len(MAT_BYTES)}: the zip is truncated")


def test_a_deflated_member_that_changed_size_since_indexing_is_named(tmp_path):
    zip_path = _write_zip(tmp_path / "a.zip", {MAT: MAT_BYTES})
    ref = scan_local(str(tmp_path)).mocap["s1-d1"]
    _write_zip(tmp_path / "a.zip", {MAT: MAT_BYTES + b"more"})
    with pytest.raises(MissingFileError) as error:
        open_file(ref)
    assert str(error.value) == (
        f"{zip_path}: member '{MAT}' now declares {len(MAT_BYTES) + 4} bytes, not {len(MAT_BYTES)}; the zip "
        "changed since the release copy was indexed. Run again."
    )


def test_a_member_replaced_by_a_refused_one_since_indexing_is_refused_when_opened(tmp_path):
    # same size, now bzip2: the checks of the scan are made again on opening
    zip_path = _write_zip(tmp_path / "a.zip", {MAT: MAT_BYTES})
    ref = scan_local(str(tmp_path)).mocap["s1-d1"]
    _write_zip(tmp_path / "a.zip", {MAT: MAT_BYTES}, zipfile.ZIP_BZIP2)
    with pytest.raises(
        MocapFormatError, match="^" + re.escape(f"{zip_path}: member '{MAT}' is compressed with method 12")
    ):
        open_file(ref)


@pytest.mark.parametrize("compression", [None, zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_file_deleted_after_indexing_is_a_missing_file_saying_what_to_do(tmp_path, compression):
    if compression is None:
        path = _write(tmp_path / MAT, MAT_BYTES)
    else:
        path = _write_zip(tmp_path / "a.zip", {MAT: MAT_BYTES}, compression)
    ref = scan_local(str(tmp_path)).mocap["s1-d1"]
    os.remove(path)
    with pytest.raises(MissingFileError) as error:
        open_file(ref)
    message = str(error.value)
    assert message.startswith(f"{MAT}: not found at {ref.where} (")
    assert message.endswith("The release copy changed since it was indexed: restore the file or run again.")


# -- how files are named in messages ----------------------------------------------------------------------------


def test_messages_name_a_loose_file_by_its_path_and_other_files_by_their_release_name():
    loose = FileRef(MAT, "/data/annotations/" + MAT)
    assert loose.label == loose.where == "/data/annotations/" + MAT
    deflated = FileRef(MAT, f"zip://Rat7M/{MAT}::/data/a.zip")
    assert deflated.label == MAT and deflated.where == f"member 'Rat7M/{MAT}' of /data/a.zip"
    stored = FileRef(MAT, f"zip://{MAT}::/data/a.zip", member_offset=64)
    assert stored.label == MAT and stored.where == f"member '{MAT}' of /data/a.zip"
    remote = FileRef(MAT, "https://ndownloader.figshare.com/files/1")
    assert remote.label == MAT and remote.where == "https://ndownloader.figshare.com/files/1"


def test_describe_names_lists_twelve_names_then_counts_the_rest():
    names = [f"s1-d1-camera1-{3500 * i}.mp4" for i in range(13)]
    assert describe_names(names[:12]) == ", ".join(names[:12])
    assert describe_names(names) == ", ".join(names[:12]) + ", … (1 more)"
    assert describe_names(iter(names[:3]), limit=2) == f"{names[0]}, {names[1]}, … (1 more)"
    assert describe_names([]) == ""


# -- the remote read-ahead cache ----------------------------------------------------------------------------------


def _cache_over(data: bytes, blocksize: int, first_block: int):
    requests: list[tuple[int, int]] = []

    def fetcher(start: int, end: int) -> bytes:
        requests.append((start, end))
        return data[start:end]

    return GrowingReadAheadCache(blocksize, fetcher, len(data), first_block=first_block), requests


def test_sequential_reads_double_the_read_ahead_up_to_the_block_size():
    data = random.Random(1).randbytes(1 << 20)
    cache, requests = _cache_over(data, blocksize=64 * 1024, first_block=1024)
    read = b"".join(cache._fetch(offset, offset + 100) for offset in range(0, len(data), 100))
    assert read == data
    fetched = [end - start for start, end in requests]
    assert fetched[0] == 100 + 1024  # what was asked plus the first read-ahead
    assert fetched[:7] == sorted(fetched[:7]) and fetched[6] > 32 * 1024  # grows by doubling…
    assert max(fetched) <= 64 * 1024 + 100  # …up to the block size
    assert len(requests) < 30  # a constant 1 KiB read-ahead would make about 900 requests
    assert sum(fetched) == len(data)  # no byte fetched twice


def test_a_jump_resets_the_read_ahead_and_the_head_of_the_file_is_fetched_once():
    data = random.Random(2).randbytes(1 << 20)
    cache, requests = _cache_over(data, blocksize=256 * 1024, first_block=4096)
    assert cache._fetch(0, 100) == data[:100]  # the head (an mp4's ftyp, or its moov index)
    assert cache._fetch(len(data) - 200, len(data) - 100) == data[-200:-100]  # the tail
    assert cache._fetch(10, 4000) == data[10:4000]  # back to the head: kept, not fetched again
    assert requests == [(0, 100 + 4096), (len(data) - 200, len(data))]
    assert cache._fetch(500_000, 500_010) == data[500_000:500_010]
    assert requests[-1] == (500_000, 500_010 + 4096)  # after a jump: the first read-ahead again


# -- linked folders ----------------------------------------------------------------------------------------------


def test_a_linked_video_folder_is_searched_like_a_real_one(tmp_path):
    """The helper layout with video_sequences/ linked in from another disk, as 300 GB of video often is."""
    store = tmp_path / "big-disk" / "video_sequences"
    chunk = _write(store / "s1-d1-camera1-3500.mp4", b"v" * 10)
    _write(store / "s1-d1-camera1-0.mp4", b"v" * 10)
    data_dir = tmp_path / "rat7m"
    mat = _write(data_dir / "annotations" / MAT, MAT_BYTES)
    os.symlink(store, data_dir / "video_sequences")
    index = scan_local(str(data_dir))
    assert index.mocap["s1-d1"].location == mat
    chunks = index.chunks("s1-d1", 1)
    assert [chunk.start for chunk in chunks] == [0, 3500]
    assert chunks[1].file.location == str(data_dir / "video_sequences" / os.path.basename(chunk))


def test_a_link_back_up_the_tree_is_read_once(tmp_path, monkeypatch):
    data_dir = tmp_path / "rat7m"
    mat = _write(data_dir / "annotations" / MAT, MAT_BYTES)
    os.symlink(data_dir, data_dir / "annotations" / "loop")  # e.g. a "latest" link made in the wrong place
    os.symlink(data_dir / "annotations", data_dir / "same-annotations")  # the same folder under a second name
    real_walk, folders_listed = os.walk, []

    def counting_walk(top, *args, **kwargs):
        for entry in real_walk(top, *args, **kwargs):
            folders_listed.append(entry[0])
            # a walk around the loop goes on until the path is too long: stop it here instead
            assert len(folders_listed) < 50, "the scan walks around the loop"
            yield entry

    monkeypatch.setattr(sources.os, "walk", counting_walk)
    index = scan_local(str(data_dir))
    assert list(index.mocap) == ["s1-d1"] and index.mocap["s1-d1"].location == mat
    assert len(folders_listed) <= 5  # rat7m, annotations, and the two links to folders already read
