"""Broken local copies (``data_dir``): damaged or hostile zip members, duplicate files, dangling links.

Each damaged input is built here from the fabricated release: zips are written with `zipfile` and
then patched in place (a CRC-32, a compression method, a flag, a declared size). The zips stay small
(the largest holds 64 MiB of zeros in 64 KiB); nothing of a huge declared size is ever written. Every
failure must be one of rat7m's errors naming the file to fix (for a zip: the zip and the member) and
saying what to do, raised before anything is prepared.
"""

from __future__ import annotations

import glob
import os
import re
import struct
import tracemalloc
import zipfile
import zlib

import pytest
from helpers import assert_same_table, patch_zip_member

import rat7m
from rat7m_builder import sources
from rat7m_builder.errors import (
    CorruptVideoWarning,
    DuplicateFileError,
    MissingFileError,
    MocapFormatError,
    UnsafeArchiveError,
    VideoDecodeError,
)
from rat7m_builder.manifest import MOCAP_ARTICLE, VIDEO_ARTICLES
from rat7m_builder.sources import open_file, scan_local

MAT = "mocap-s1-d1.mat"
CHUNK = "s1-d1-camera3-16.mp4"
REPLACE = "download the article zip again from figshare"


def _mocap_zip(
    sample_release, folder: str, compression: int = zipfile.ZIP_DEFLATED, replace: dict[str, bytes] | None = None
) -> str:
    """The mocap article zip of the fabricated release, written in ``folder``.

    ``replace``: member name → bytes to store instead of the fabricated file.
    """
    path = os.path.join(folder, f"{MOCAP_ARTICLE[0]}.zip")
    os.makedirs(folder, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression) as archive:
        for mat in sorted(glob.glob(os.path.join(sample_release.root, "annotations", "*.mat"))):
            name = os.path.basename(mat)
            if replace and name in replace:
                archive.writestr(name, replace[name])
            else:
                archive.write(mat, name)
    return path


def _member_data(zip_path: str, member: str) -> tuple[int, int]:
    """(offset, length) of ``member``'s stored or compressed data in the zip."""
    with zipfile.ZipFile(zip_path) as archive, open(zip_path, "rb") as raw:
        info = archive.getinfo(member)
        raw.seek(info.header_offset + 26)
        name_length, extra_length = struct.unpack("<HH", raw.read(4))
        return info.header_offset + 30 + name_length + extra_length, info.compress_size


def _prepared_info_files(cache_dir: str) -> list[str]:
    return glob.glob(os.path.join(cache_dir, "**", "dataset_info.json"), recursive=True)


def _load(config: str, data_dir: str, cache_dir: str, **kwargs):
    return rat7m.load_dataset(config, data_dir=data_dir, cache_dir=cache_dir, recordings=["s1-d1"], **kwargs)


# -- 1. damaged zip members: rat7m's error, naming the zip and the member --------------------------------------


def _corrupt_deflate_stream(path: str) -> None:
    # 0b111 = final block of the reserved type 3: zlib fails on the first read ("invalid block type")
    offset, _ = _member_data(path, MAT)
    with open(path, "r+b") as file:
        file.seek(offset)
        file.write(b"\x07")


def _flip_stored_byte(path: str) -> None:
    offset, length = _member_data(path, MAT)
    with open(path, "r+b") as file:
        file.seek(offset + length // 2)
        byte = file.read(1)
        file.seek(offset + length // 2)
        file.write(bytes([byte[0] ^ 0xFF]))


DAMAGED_MEMBERS = {
    "corrupt deflate data": (zipfile.ZIP_DEFLATED, _corrupt_deflate_stream, r"cannot be read \(zlib\.error: Error -3"),
    "bad CRC-32, deflated": (
        zipfile.ZIP_DEFLATED,
        lambda path: patch_zip_member(path, MAT, crc=0x12345678),
        r"cannot be read \(zipfile\.BadZipFile: Bad CRC-32",
    ),
    # a stored member is read as a byte range, not through zipfile: its CRC-32 is checked by rat7m
    "bad CRC-32, stored": (zipfile.ZIP_STORED, _flip_stored_byte, r"fails its CRC-32 check"),
    "compression method 99": (
        zipfile.ZIP_DEFLATED,
        lambda path: patch_zip_member(path, MAT, compress_type=99),
        r"is compressed with method 99",
    ),
    # as `zip -e -0` writes it: the stored data gain a 12-byte encryption header
    "encrypted": (
        zipfile.ZIP_STORED,
        lambda path: patch_zip_member(path, MAT, flag_bits=0x1, compress_size=_member_data(path, MAT)[1] + 12),
        r"is encrypted",
    ),
}


@pytest.mark.parametrize("case", list(DAMAGED_MEMBERS))
def test_damaged_mocap_member_names_the_zip_and_the_member(case, sample_release, tmp_path, cache_dir):
    compression, damage, problem = DAMAGED_MEMBERS[case]
    data_dir = str(tmp_path / "data")
    zip_path = _mocap_zip(sample_release, data_dir, compression)
    damage(zip_path)
    with pytest.raises(MocapFormatError, match=problem) as error:
        _load("mocap", data_dir, cache_dir)
    message = str(error.value)
    assert message.startswith(f"{zip_path}: member '{MAT}' ") and REPLACE in message
    assert _prepared_info_files(cache_dir) == []


def test_damaged_video_member_is_a_video_error_naming_the_zip(sample_release, sample_zips, tmp_path, cache_dir):
    """A deflated mp4 whose CRC-32 fails: found at the end of the member's read, inside PyAV's reads."""
    data_dir = tmp_path / "data"
    os.makedirs(data_dir)
    os.link(os.path.join(sample_zips.root, f"{MOCAP_ARTICLE[0]}.zip"), data_dir / f"{MOCAP_ARTICLE[0]}.zip")
    video_zip = str(data_dir / f"{VIDEO_ARTICLES['s1-d1'][0]}.zip")
    with zipfile.ZipFile(video_zip, "w", zipfile.ZIP_DEFLATED) as archive:
        for mp4 in sorted(glob.glob(os.path.join(sample_release.root, "video_sequences", "s1-d1-*.mp4"))):
            archive.write(mp4, os.path.basename(mp4))
    patch_zip_member(video_zip, CHUNK, crc=0x12345678)
    with pytest.raises(VideoDecodeError, match=r"Bad CRC-32") as error:
        _load("frames", str(data_dir), cache_dir, cameras=[3])
    assert str(error.value).startswith(f"{video_zip}: member '{CHUNK}' ") and REPLACE in str(error.value)
    assert _prepared_info_files(cache_dir) == []
    # on_corrupt_video="skip": the member's frames are left out like a damaged mp4's, the rest is built
    with pytest.warns(CorruptVideoWarning, match="examples left out"):
        skipped = _load("frames", str(data_dir), cache_dir, cameras=[3], on_corrupt_video="skip", split="train")
    start = int(CHUNK.removesuffix(".mp4").rsplit("-", 1)[1])
    assert skipped.num_rows > 0 and not set(range(start, start + 8)) & set(skipped["frame_index"])


def test_member_gone_since_indexing_is_a_missing_file_naming_the_zip(sample_release, tmp_path):
    data_dir = str(tmp_path / "data")
    zip_path = _mocap_zip(sample_release, data_dir)
    ref = scan_local(data_dir).mocap["s1-d1"]
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("mocap-s5-d1.mat", b"")
    with pytest.raises(MissingFileError, match="^" + re.escape(f"{zip_path}: no longer holds member '{MAT}'")):
        open_file(ref)


# -- 2. zip bombs and lying headers ------------------------------------------------------------------------


def test_member_declaring_a_huge_size_is_refused_before_reading(sample_release, tmp_path, cache_dir):
    # 2 GiB declared, a few KB written: the check uses the central directory, nothing is inflated
    data_dir = str(tmp_path / "data")
    zip_path = _mocap_zip(sample_release, data_dir)
    patch_zip_member(zip_path, MAT, file_size=2 * 1024**3)
    with pytest.raises(UnsafeArchiveError, match=r"declares 2147483648 bytes uncompressed") as error:
        _load("mocap", data_dir, cache_dir)
    assert str(error.value).startswith(f"{zip_path}: member '{MAT}' ") and "download the article zip" in str(
        error.value
    )
    assert _prepared_info_files(cache_dir) == []


def test_member_larger_than_the_limit_is_refused(sample_release, tmp_path, cache_dir, monkeypatch):
    monkeypatch.setattr(sources, "MAX_MOCAP_MEMBER_SIZE", 1000)
    data_dir = str(tmp_path / "data")
    zip_path = _mocap_zip(sample_release, data_dir)
    with pytest.raises(UnsafeArchiveError, match=r"more than any mocap \.mat file of the release holds"):
        _load("mocap", data_dir, cache_dir)
    # the same zip is accepted with the real limit
    monkeypatch.undo()
    assert _load("mocap", data_dir, cache_dir, split="train").num_rows == 30
    assert os.path.exists(zip_path)


def test_member_with_an_absurd_compression_ratio_is_refused(sample_release, tmp_path, cache_dir):
    # 32 MiB of zeros deflate to about 32 KiB (ratio ≈ 1000): no real .mat compresses like that
    data_dir = str(tmp_path / "data")
    _mocap_zip(sample_release, data_dir, replace={MAT: bytes(32 * 1024**2)})
    with pytest.raises(UnsafeArchiveError, match=r"would inflate \d+ bytes to 33554432 \(\d+ times\)"):
        _load("mocap", data_dir, cache_dir)


def test_stored_member_with_a_lying_size_is_refused(sample_release, tmp_path, cache_dir):
    data_dir = str(tmp_path / "data")
    zip_path = _mocap_zip(sample_release, data_dir, zipfile.ZIP_STORED)
    patch_zip_member(zip_path, MAT, file_size=_member_data(zip_path, MAT)[1] + 4096)
    with pytest.raises(UnsafeArchiveError, match=r"is stored uncompressed but declares .* its header lies"):
        _load("mocap", data_dir, cache_dir)


def test_member_never_yields_more_than_its_declared_size(sample_release, tmp_path):
    """A header declaring 100 bytes over deflate data of 64 MiB: reading inflates about 100 bytes, not 64 MiB.

    The CRC-32 declared is that of the first 100 bytes, so the member reads without error: only
    its size limits what is inflated (zipfile's own ``read()`` inflates all the data first).
    """
    data_dir = str(tmp_path / "data")
    zip_path = _mocap_zip(sample_release, data_dir, replace={MAT: bytes(64 * 1024**2)})
    patch_zip_member(zip_path, MAT, file_size=100, crc=zlib.crc32(bytes(100)))
    ref = scan_local(data_dir).mocap["s1-d1"]
    tracemalloc.start()
    try:
        with open_file(ref) as file:
            data = file.read()
            rest = file.read(1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert data == bytes(100) and rest == b""
    assert peak < 8 * 1024**2


# -- 3. the same release file twice -------------------------------------------------------------------------


def test_stale_copy_beside_the_good_one_is_refused_naming_both_paths(release_copy, cache_dir):
    good = os.path.join(release_copy, "annotations", MAT)
    stale = os.path.join(release_copy, MAT)
    with open(good, "rb") as file:
        head = file.read(1000)
    with open(stale, "wb") as file:
        file.write(head)  # an interrupted copy, found before annotations/ (top level first)
    with pytest.raises(DuplicateFileError) as error:
        _load("mocap", release_copy, cache_dir)
    message = str(error.value)
    assert f"{stale} (1000 bytes)" in message and f"{good} ({os.path.getsize(good)} bytes)" in message
    assert "delete the wrong one" in message
    assert _prepared_info_files(cache_dir) == []


def test_stale_zip_member_beside_the_good_file_is_refused(release_copy, sample_release, cache_dir):
    zip_path = _mocap_zip(sample_release, release_copy, replace={MAT: b"MATLAB 5.0 cut"})
    with pytest.raises(DuplicateFileError, match=re.escape(f"member '{MAT}' of {zip_path} (14 bytes)")):
        _load("mocap", release_copy, cache_dir)


def test_equal_copies_use_the_loose_file(release_copy, sample_release, cache_dir):
    """The article zip beside the folder it was extracted to: one file of each pair is used, the loose one."""
    _mocap_zip(sample_release, release_copy)  # found before annotations/ (top level first)
    index = scan_local(release_copy)
    assert index.mocap["s1-d1"].location == os.path.join(release_copy, "annotations", MAT)
    assert index.mocap["s1-d1"].where == os.path.join(release_copy, "annotations", MAT)
    assert _load("mocap", release_copy, cache_dir, split="train").num_rows == 30


def test_a_zip_member_says_where_it_is(sample_release, tmp_path):
    zip_path = _mocap_zip(sample_release, str(tmp_path / "data"))
    assert scan_local(str(tmp_path / "data")).mocap["s1-d1"].where == f"member '{MAT}' of {zip_path}"


# -- 4. dangling symbolic links -----------------------------------------------------------------------------


def test_dangling_link_named_like_a_chunk_names_the_link_and_its_target(release_copy, cache_dir):
    link = os.path.join(release_copy, "video_sequences", CHUNK)
    os.remove(link)
    os.symlink("../elsewhere/" + CHUNK, link)
    with pytest.raises(MissingFileError) as error:
        _load("frames", release_copy, cache_dir)
    message = str(error.value)
    assert message.startswith(f"{link}: is a symbolic link to '../elsewhere/{CHUNK}'")
    assert os.path.join(release_copy, "elsewhere", CHUNK) in message and "remove the link" in message
    assert _prepared_info_files(cache_dir) == []


def test_dangling_link_to_a_zip_is_named_and_other_dangling_links_are_ignored(release_copy, tmp_path, cache_dir):
    os.symlink(str(tmp_path / "gone"), os.path.join(release_copy, "notes.txt"))  # not a release file: ignored
    assert _load("mocap", release_copy, cache_dir, split="train").num_rows == 30
    link = os.path.join(release_copy, f"{MOCAP_ARTICLE[0]}.zip")
    os.symlink(str(tmp_path / "gone.zip"), link)
    with pytest.raises(MissingFileError, match=re.escape(f"{link}: is a symbolic link to '{tmp_path / 'gone.zip'}'")):
        scan_local(release_copy)


# -- 5. zips as other tools write them ----------------------------------------------------------------------


def _stored_zip_with_local_extra_fields(sample_release, folder: str) -> str:
    """The mocap article zip, stored, with extra fields as Info-ZIP's ``zip`` writes them.

    Each local header carries a ``UT`` field (modification and access times) and a ``ux`` field (owner
    and group), 28 bytes; the central directory a ``UT`` field with the modification time only, 9 bytes.
    A member's data start after its LOCAL extra field.
    """
    mtime = 1_600_000_000
    times = struct.pack("<HHBll", 0x5455, 9, 3, mtime, mtime)
    owner = struct.pack("<HHBBIBI", 0x7875, 11, 1, 4, 1000, 4, 1000)  # version 1, uid and gid 1000
    central_extra = struct.pack("<HHBl", 0x5455, 5, 3, mtime)
    path = os.path.join(folder, f"{MOCAP_ARTICLE[0]}.zip")
    os.makedirs(folder, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for mat in sorted(glob.glob(os.path.join(sample_release.root, "annotations", "*.mat"))):
            info = zipfile.ZipInfo(os.path.basename(mat), (2020, 9, 13, 12, 26, 40))
            info.extra = times + owner
            with open(mat, "rb") as file:
                archive.writestr(info, file.read())
            info.extra = central_extra  # zipfile writes the central directory (from `info`) on closing
    return path


def test_stored_members_after_local_extra_fields_are_read_from_their_data(sample_release, tmp_path, cache_dir):
    data_dir = str(tmp_path / "data")
    zip_path = _stored_zip_with_local_extra_fields(sample_release, data_dir)
    with zipfile.ZipFile(zip_path) as archive:
        assert len(archive.getinfo(MAT).extra) == 9  # the central directory's extra differs from the local one
    with open(os.path.join(sample_release.root, "annotations", MAT), "rb") as file:
        original = file.read()
    with open_file(scan_local(data_dir).mocap["s1-d1"]) as member:
        assert member.read() == original
    from_zip = rat7m.load_dataset("mocap", data_dir=data_dir, cache_dir=cache_dir)
    loose = rat7m.load_dataset("mocap", data_dir=sample_release.root, cache_dir=str(tmp_path / "loose_cache"))
    assert set(from_zip) == set(loose) == {"train", "test"}
    for split in loose:
        assert_same_table(from_zip[split].data.table, loose[split].data.table)


def test_release_files_in_a_folder_of_the_zip_are_found(sample_release, tmp_path, cache_dir):
    # a zip made by zipping the extracted folder: members are "Rat7M/mocap-s1-d1.mat"
    data_dir = str(tmp_path / "data")
    zip_path = _mocap_zip(sample_release, data_dir)
    with zipfile.ZipFile(zip_path) as flat, zipfile.ZipFile(str(tmp_path / "data" / "nested.zip"), "w") as nested:
        for name in flat.namelist():
            nested.writestr(f"Rat7M/{name}", flat.read(name))
    os.remove(zip_path)
    index = scan_local(data_dir)
    assert index.mocap["s1-d1"].name == MAT and index.mocap["s1-d1"].where.startswith(f"member 'Rat7M/{MAT}' of ")
    assert _load("mocap", data_dir, cache_dir, split="train").num_rows == 30


def test_zip_whose_last_member_runs_past_its_end_is_refused_by_the_scan(sample_release, tmp_path):
    """A stored member cut short with the central directory kept (moved up to the new end of the data).

    zipfile opens such a zip; `scan_local` refuses it before anything is prepared, naming zip and member.
    """
    data_dir = str(tmp_path / "data")
    zip_path = _mocap_zip(sample_release, data_dir, zipfile.ZIP_STORED)
    last = "mocap-s5-d1.mat"
    offset, length = _member_data(zip_path, last)
    with open(zip_path, "rb") as file:
        data = file.read()
    cut = length - 16
    data = bytearray(data[: offset + 16] + data[offset + length :])
    end_record = len(data) - 22  # zipfile writes no archive comment
    (central_offset,) = struct.unpack_from("<I", data, end_record + 16)
    struct.pack_into("<I", data, end_record + 16, central_offset - cut)
    with open(zip_path, "wb") as file:
        file.write(data)
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.getinfo(last).compress_size == length  # still readable, still declaring the whole member
    with pytest.raises(MocapFormatError, match=r"has data up to byte \d+ but the zip ends at byte \d+") as error:
        scan_local(data_dir)
    assert str(error.value).startswith(f"{zip_path}: member '{last}' ") and REPLACE in str(error.value)
