"""Where the release files are and how to open them: a local copy, zip members, or URLs.

A `ReleaseIndex` maps what the builder needs (each recording's .mat, each camera's mp4 chunks) to
`FileRef`\\ s. A `FileRef` is opened with `open_file`, which returns a seekable binary file object
for a local path, a member of a local zip (stored members are read as a byte range, so PyAV's
seeks stay cheap), or a remote URL / chained ``zip://member::url`` (through fsspec, with a read-ahead
cache so PyAV's reads do not make fsspec fetch the same bytes twice).

A local copy is checked while it is indexed, before anything is prepared: two different files with
one release name are refused (`DuplicateFileError`), a dangling link named like a release file is
named, and a zip member that is encrypted, compressed with a method other than deflate, or larger or
more compressed than any real release file (a zip bomb) is refused. Damage found while reading a zip
member (bad deflate data, a failed CRC-32) is raised as the error of that file type, naming the zip
and the member.
"""

from __future__ import annotations

import contextlib
import io
import ntpath
import os
import struct
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

import fsspec.caching

from .errors import (
    DuplicateFileError,
    MissingFileError,
    MocapFormatError,
    Rat7MError,
    UnsafeArchiveError,
    VideoDecodeError,
)
from .manifest import VideoName, parse_mocap_name, parse_video_name

#: fsspec block size for remote reads: large enough that PyAV's small reads rarely cost a request.
REMOTE_BLOCK_SIZE = 8 * 1024 * 1024
#: First read-ahead of a remote file; it doubles with each sequential request up to
#: `REMOTE_BLOCK_SIZE`. Probing a video (header, ``moov`` index, first packets) or reading only the
#: first frames of a chunk then costs tens of KiB, not a whole block.
REMOTE_FIRST_BLOCK_SIZE = 64 * 1024

# Limits on the zip members of a local copy (figshare's article zips, read in place). A member is
# refused when its declared uncompressed size, or its compression ratio, is beyond any real release
# file: such a zip is not figshare's, and inflating it would fill memory (mocap.py reads a .mat whole,
# the ``video`` config reads a chunk whole).

#: Largest declared size of an mp4 chunk in a zip. The release is about 300 GB of video in 2028 chunks
#: of at most 3500 frames (about 2 minutes at 30 frames/s), so about 150 MB a chunk, i.e. about
#: 10 Mbit/s. 2 GiB is 14 times that (a 150 Mbit/s stream, far more than 1320 × 1048 camera video
#: needs) and still fits in memory.
MAX_VIDEO_MEMBER_SIZE = 2 * 1024**3
#: Largest declared size of a ``mocap-*.mat`` in a zip. A real one is about 80 MB; even if all
#: ≈1.18 M time points of the release were in one recording, 20 markers × 3 coordinates plus 6
#: cameras' frame indices in float64 would be 1.18 M × 66 × 8 B ≈ 620 MB.
MAX_MOCAP_MEMBER_SIZE = 1024**3
#: Largest inflation ratio (uncompressed / compressed size) of a deflated mp4. H.264 is entropy coded:
#: deflate saves a few percent (ratio ≈ 1.05). 20 leaves room for large index boxes and refuses a
#: deflate bomb (deflate reaches ≈ 1000).
MAX_VIDEO_COMPRESSION_RATIO = 20
#: Largest inflation ratio of a deflated .mat. A MATLAB v7 file is zlib-compressed inside (ratio ≈ 1);
#: an uncompressed v5 file of float64 markers deflates a few times, more with long NaN gaps. 200 still
#: accepts a file that is nearly all NaN and refuses a deflate bomb.
MAX_MOCAP_COMPRESSION_RATIO = 200
#: Members below this size are not checked for their ratio: they cost little memory whatever it is,
#: and tiny files can compress very well.
MIN_SIZE_FOR_RATIO_CHECK = 16 * 1024**2
#: Compression methods read: figshare's zips use these two. zipfile inflates bzip2 and LZMA data
#: without bounding each read's output, so a small member with a lying size could still fill memory.
READABLE_COMPRESSION = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
#: What zipfile raises on a damaged or unreadable member: bad deflate data (``zlib.error``), a failed
#: CRC-32 or a damaged header (``BadZipFile``), a compressed stream cut short (``EOFError``), an
#: unknown compression method (``NotImplementedError``), an encrypted member (``RuntimeError``).
_MEMBER_READ_ERRORS = (zlib.error, zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError)
#: How a message about a damaged local zip ends (the downloader replaces it: it deletes such a zip itself).
REPLACE_ZIP_ADVICE = (
    "Delete this zip and download the article zip again from figshare (or replace it with an intact copy)."
)


class GrowingReadAheadCache(fsspec.caching.BaseCache):
    """An fsspec cache for reading a remote mp4 or .mat front to back with few wasted bytes.

    - Read-ahead like fsspec's ``"readahead"`` (each request fetches what was asked plus a margin,
      and replaces the previous range), but the margin starts at ``first_block`` and doubles with
      each sequential request up to ``blocksize``; a jump resets it. Short reads stay short.
    - The first range fetched from offset 0 is kept for the file's lifetime: PyAV opens an mp4 whose
      ``moov`` index sits at the end by reading the head, jumping to the tail, then coming back to
      the head, which a single-range cache would fetch twice.
    """

    name = "rat7m_readahead"

    def __init__(self, blocksize: int, fetcher, size: int, first_block: int = REMOTE_FIRST_BLOCK_SIZE) -> None:
        super().__init__(blocksize, fetcher, size)
        self.first_block = max(1, min(first_block, blocksize))
        self.readahead = self.first_block
        self.head = b""
        self.cache = b""
        self.start = self.end = 0

    def _fetch(self, start: int | None, end: int | None) -> bytes:
        start = 0 if start is None else start
        end = self.size if end is None or end > self.size else end
        if start >= end:
            return b""
        parts = []
        if start < len(self.head):
            parts.append(self.head[start:end])
            start = len(self.head)
            if end <= start:
                self.hit_count += 1
                return parts[0]
        if self.start <= start and end <= self.end:
            self.hit_count += 1
            return b"".join([*parts, self.cache[start - self.start : end - self.start]])
        if self.start <= start < self.end:  # the start is cached: fetch only the rest
            parts.append(self.cache[start - self.start :])
            start = self.end
        self.miss_count += 1
        sequential = self.end > 0 and start == self.end
        self.readahead = min(self.blocksize, self.readahead * 2) if sequential else self.first_block
        fetch_end = min(self.size, end + self.readahead)
        self.total_requested_bytes += fetch_end - start
        self.cache = self.fetcher(start, fetch_end)
        self.start, self.end = start, start + len(self.cache)
        if not self.head and start == 0:
            self.head = self.cache  # the same bytes object: no copy
        return b"".join([*parts, self.cache[: end - start]])


fsspec.caching.register_cache(GrowingReadAheadCache, clobber=True)


@dataclass(frozen=True)
class FileRef:
    """One release file and where its bytes are.

    Attributes:
        name: the release file name (``s1-d1-camera1-3500.mp4``, ``mocap-s1-d1.mat``).
        location: a local path, a URL, or ``zip://<member>::<zip path or URL>``.
        member_offset: for a member stored uncompressed in a local zip, the byte offset of its data
            (then ``location`` is the zip's path and the member is that byte range); else None.
        size: size in bytes when known (member size, listing size), else None.
        md5: expected md5 (hex) when known from a listing, else None.
        crc32: for a member of a local zip, the CRC-32 its zip declares, else None.
    """

    name: str
    location: str
    member_offset: int | None = None
    size: int | None = None
    md5: str | None = None
    crc32: int | None = None

    @property
    def label(self) -> str:
        """How messages about the file's contents name it: a loose local file by its path, so the user
        fixes (or deletes) that very file; a remote file or a zip member by its release name (`where`
        says where those are, and a zip member's own damage is reported with the zip)."""
        if "://" in self.location or self.member_offset is not None:
            return self.name
        return self.location

    @property
    def where(self) -> str:
        """Where the bytes are, for messages: the path or URL, or ``member '<member>' of <zip>``.

        ``name`` is the release name only: a message about a damaged local copy names ``where`` so
        that the user fixes the right file.
        """
        if self.location.startswith("zip://"):
            member, archive = _split_zip_location(self.location)
            return f"member {member!r} of {archive}"
        return self.location


@dataclass(frozen=True)
class VideoChunk:
    """One mp4 chunk of one camera: its first global frame index and where it is."""

    start: int
    file: FileRef


@dataclass
class ReleaseIndex:
    """The release files found for a selection.

    Attributes:
        mocap: recording → its ``mocap-*.mat``.
        videos: (recording, camera) → chunks sorted **numerically** by start frame.
        description: where the files came from, for messages ("data_dir /x", "figshare").
    """

    mocap: dict[str, FileRef] = field(default_factory=dict)
    videos: dict[tuple[str, int], list[VideoChunk]] = field(default_factory=dict)
    description: str = ""

    def add_video(self, name: VideoName, ref: FileRef) -> None:
        chunks = self.videos.setdefault((name.recording, name.camera), [])
        if any(chunk.start == name.start for chunk in chunks):
            return  # the same chunk in two places (e.g. an extracted folder beside its zip): keep the first
        chunks.append(VideoChunk(name.start, ref))
        chunks.sort(key=lambda chunk: chunk.start)

    def chunks(self, recording: str, camera: int) -> list[VideoChunk]:
        return self.videos.get((recording, camera), [])


def walk_folders(top: str) -> Iterator[tuple[str, list[str]]]:
    """``(folder, file names)`` of every folder below ``top`` (itself included), subfolders in name order.

    Linked folders are followed like linked files: 300 GB of video often sit on another disk, linked
    in as ``video_sequences/``. Each folder is read once, so a link back up the tree ends there.
    """
    folders_read: set[tuple[int, int]] = set()
    for folder, subfolders, files in os.walk(top, followlinks=True):
        status = os.stat(folder)
        if (status.st_dev, status.st_ino) in folders_read:
            subfolders.clear()
            continue
        folders_read.add((status.st_dev, status.st_ino))
        subfolders.sort()
        yield folder, files


def scan_local(data_dir: str) -> ReleaseIndex:
    """Find the release files anywhere below ``data_dir``, in linked folders too.

    Accepts the original helper script's layout (``video_sequences/*.mp4``, ``annotations/*.mat``), a
    flat folder, and figshare article zips left unopened (any ``*.zip``: members are read in place,
    never extracted). Files whose names are not release names are ignored. A release file found
    twice with the same size (e.g. an article zip beside the folder it was extracted to) is used once
    (see `_one_copy`).

    Raises:
        MissingFileError: ``data_dir`` does not exist, or a release file or zip in it is a dangling
            symbolic link (the message names the link and its target).
        DuplicateFileError: two files (or zip members) have the same release name but different sizes.
        UnsafeArchiveError: a zip holds a member whose path escapes (``..``, absolute) or a link, or
            one larger or more compressed than any release file.
        MocapFormatError, VideoDecodeError: a zip member is encrypted, compressed with a method other
            than deflate, or its data runs past the end of the zip.
    """
    if not os.path.isdir(data_dir):
        raise MissingFileError(f"data_dir {data_dir!r} is not a folder. Give the folder holding your RAT7M copy.")
    index = ReleaseIndex(description=f"data_dir {data_dir}")
    for folder, files in walk_folders(data_dir):
        for file_name in sorted(files):
            path = os.path.join(folder, file_name)
            if file_name.lower().endswith(".zip"):
                _local_size(path)  # a dangling link: named here, not as a bare "no such file" from zipfile
                index_zip(path, index)
            elif parse_video_name(file_name) is not None or parse_mocap_name(file_name) is not None:
                _add(index, file_name, FileRef(file_name, path, size=_local_size(path)))
    return index


def _local_size(path: str) -> int:
    """The size of a file found in ``data_dir``; a link to nothing is named with its target.

    Raises:
        MissingFileError: ``path`` is a dangling (or looping) symbolic link, or cannot be examined.
    """
    try:
        return os.path.getsize(path)
    except OSError as error:
        if not os.path.islink(path):
            raise MissingFileError(
                f"{path}: cannot be examined ({error}). Fix its access rights or remove it."
            ) from error
        target = os.readlink(path)
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), target))
        shown = repr(target) if os.path.isabs(target) else f"{target!r} (that is {resolved})"
        raise MissingFileError(
            f"{path}: is a symbolic link to {shown}, which cannot be opened ({error.strerror}). "
            "Point the link at the file, or remove the link."
        ) from error


def _add(index: ReleaseIndex, file_name: str, ref: FileRef) -> None:
    """Add a release file found in a local copy; a second copy of a file goes through `_one_copy`."""
    video = parse_video_name(file_name)
    if video is not None:
        chunks = index.videos.get((video.recording, video.camera), [])
        for position, chunk in enumerate(chunks):
            if chunk.start == video.start:
                chunks[position] = VideoChunk(chunk.start, _one_copy(index, chunk.file, ref))
                return
        index.add_video(video, ref)
        return
    recording = parse_mocap_name(file_name)
    if recording is not None:
        known = index.mocap.get(recording)
        index.mocap[recording] = ref if known is None else _one_copy(index, known, ref)


def _one_copy(index: ReleaseIndex, first: FileRef, second: FileRef) -> FileRef:
    """Which of two copies of one release file to use (``first`` was found first).

    Copies of one size are taken for the same file: an article zip beside the folder it was extracted
    to is a normal copy. Comparing their bytes would read both whole (hundreds of GB of video) at every
    scan, so only sizes are compared; a damaged copy of the right size is found when read (zip CRC-32,
    mp4 decoding, .mat parsing). Of equal copies a loose file wins over a zip member (read directly,
    nothing to inflate), else the first found: folders are walked in sorted order, so every run picks
    the same one.

    Raises:
        DuplicateFileError: the sizes differ: one copy is stale or truncated, and which one is right
            cannot be told. Both are named so that the user removes the wrong one.
    """
    if first.size is None or first.size != second.size:
        found_in = f" ({index.description})" if index.description else ""
        raise DuplicateFileError(
            f"{first.name} is in the release copy{found_in} twice, with different sizes: "
            f"{first.where} ({first.size} bytes) and {second.where} ({second.size} bytes). One of them "
            "is stale or truncated: delete the wrong one (or move it out of data_dir) and run again."
        )
    if first.location.startswith("zip://") and not second.location.startswith("zip://"):
        return second
    return first


def check_member_name(archive: str, info: zipfile.ZipInfo) -> None:
    """Refuse a zip member that could escape its folder if extracted: ``..``, absolute, or a link."""
    name = info.filename.replace("\\", "/")
    parts = name.split("/")
    is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
    # a drive ("C:x" is relative to drive C's current folder, not to the extraction folder)
    has_drive = bool(ntpath.splitdrive(name)[0])
    if name.startswith("/") or has_drive or ".." in parts or is_link:
        what = "a symbolic link" if is_link else "a path escaping the archive"
        raise UnsafeArchiveError(
            f"{archive}: member {info.filename!r} is {what}; "
            "figshare's article zips hold plain files only. Delete this zip and download it again from figshare."
        )


def index_zip(path: str, index: ReleaseIndex) -> None:
    """Add the release files stored in the local zip ``path`` to ``index`` (members read in place).

    Raises:
        UnsafeArchiveError: a member's path escapes (``..``, absolute) or is a link, or a release
            member is larger or more compressed than any release file (`check_member_data`).
        MissingFileError: ``path`` is not a readable zip (probably an incomplete download).
        MocapFormatError, VideoDecodeError: a release member cannot be read (`check_member_data`).
        DuplicateFileError: ``index`` already holds a different file with a member's release name.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            for info in infos:
                check_member_name(path, info)
            zip_size = os.path.getsize(path)
            with open(path, "rb") as raw:
                for info in infos:
                    if info.is_dir():
                        continue
                    base = info.filename.replace("\\", "/").rsplit("/", 1)[-1]
                    if parse_video_name(base) is None and parse_mocap_name(base) is None:
                        continue
                    data_offset = _member_data_offset(raw, path, info)
                    check_member_data(path, info, data_offset, zip_size)
                    stored = info.compress_type == zipfile.ZIP_STORED
                    ref = FileRef(
                        base,
                        f"zip://{info.filename}::{path}",
                        member_offset=data_offset if stored else None,
                        size=info.file_size,
                        crc32=info.CRC,
                    )
                    _add(index, base, ref)
    except zipfile.BadZipFile as error:
        raise MissingFileError(
            f"{path}: not a readable zip archive ({error}); it is probably an incomplete download. "
            "Delete it and download the article zip again."
        ) from error


_index_zip = index_zip  # the former private name, kept for callers written before it was public


def _member_data_offset(raw: IO[bytes], archive: str, info: zipfile.ZipInfo) -> int:
    """Byte offset of a member's (stored or compressed) data in the zip, from its local header."""
    raw.seek(info.header_offset)
    header = raw.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise UnsafeArchiveError(
            f"{archive}: member {info.filename!r} has a damaged local header. {REPLACE_ZIP_ADVICE}"
        )
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_length + extra_length


def _member_limits(name: str) -> tuple[int, int, str]:
    """(largest declared size, largest inflation ratio, what it is) for the release file ``name``."""
    if parse_mocap_name(name) is not None:
        return MAX_MOCAP_MEMBER_SIZE, MAX_MOCAP_COMPRESSION_RATIO, "mocap .mat file"
    return MAX_VIDEO_MEMBER_SIZE, MAX_VIDEO_COMPRESSION_RATIO, "mp4 chunk"


def check_member_data(archive: str, info: zipfile.ZipInfo, data_offset: int | None, zip_size: int | None) -> None:
    """Refuse a release member of a local zip that cannot or must not be read; before anything is prepared.

    Args:
        archive: the zip's path, for messages.
        info: the member, as the zip's central directory declares it.
        data_offset, zip_size: where the member's data starts and how large the zip is, to find data
            cut off by a truncated zip; None to skip that check.

    Raises:
        UnsafeArchiveError: the declared size exceeds `MAX_VIDEO_MEMBER_SIZE` / `MAX_MOCAP_MEMBER_SIZE`,
            the data would inflate more than `MAX_VIDEO_COMPRESSION_RATIO` / `MAX_MOCAP_COMPRESSION_RATIO`
            times, or a stored member declares different stored and uncompressed sizes.
        MocapFormatError, VideoDecodeError: (`damaged_member_error`) encrypted, compressed with a
            method not in `READABLE_COMPRESSION`, or data past the end of the zip.
    """
    name = info.filename.replace("\\", "/").rsplit("/", 1)[-1]
    max_size, max_ratio, kind = _member_limits(name)
    refused = f"{archive}: member {info.filename!r}"
    again = "This is not figshare's article zip: delete it and download the article zip again from figshare."
    if info.file_size > max_size:
        raise UnsafeArchiveError(
            f"{refused} declares {info.file_size} bytes uncompressed, more than any {kind} of the release "
            f"holds (limit {max_size} bytes). {again}"
        )
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size >= MIN_SIZE_FOR_RATIO_CHECK and ratio > max_ratio:
        raise UnsafeArchiveError(
            f"{refused} would inflate {info.compress_size} bytes to {info.file_size} ({ratio:.0f} times); "
            f"a real {kind} compresses at most about {max_ratio} times (a zip bomb?). {again}"
        )
    if info.flag_bits & 0x1:
        raise damaged_member_error(archive, info.filename, "is encrypted (password protected); figshare's zips are not")
    if info.compress_type not in READABLE_COMPRESSION:
        method = zipfile.compressor_names.get(info.compress_type, "unknown")
        raise damaged_member_error(
            archive,
            info.filename,
            f"is compressed with method {info.compress_type} ({method}); rat7m reads stored or deflated "
            "members only, as in figshare's zips",
        )
    # (after the encryption check: an encrypted stored member's data holds 12 more bytes, a header)
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise UnsafeArchiveError(
            f"{refused} is stored uncompressed but declares {info.compress_size} bytes of data for "
            f"{info.file_size} bytes of content: its header lies. {again}"
        )
    if data_offset is not None and zip_size is not None and data_offset + info.compress_size > zip_size:
        raise damaged_member_error(
            archive,
            info.filename,
            f"has data up to byte {data_offset + info.compress_size} but the zip ends at byte {zip_size}: "
            "the zip is truncated",
        )


def damaged_member_error(archive: str, member: str, problem: str) -> Rat7MError:
    """The error for a release member of a local zip that cannot be read, naming the zip and the member.

    It is the error of a damaged file of that type (`MocapFormatError` for a .mat, `VideoDecodeError`
    for an mp4, as if the extracted file were damaged), so that callers handle it like one.
    ``problem`` completes "member '<name>' …"; the message ends with what to do.
    """
    message = f"{archive}: member {member!r} {problem}. {REPLACE_ZIP_ADVICE}"
    name = member.replace("\\", "/").rsplit("/", 1)[-1]
    if parse_mocap_name(name) is not None:
        return MocapFormatError(message)
    if parse_video_name(name) is not None:
        return VideoDecodeError(message)
    return MissingFileError(message)


@contextlib.contextmanager
def _reading_member(archive: str, member: str) -> Iterator[None]:
    """Raise zipfile's errors on a damaged member (`_MEMBER_READ_ERRORS`) as `damaged_member_error`."""
    try:
        yield
    except Rat7MError:
        raise
    except _MEMBER_READ_ERRORS as error:
        cls = type(error)
        kind = cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__name__}"
        raise damaged_member_error(archive, member, f"cannot be read ({kind}: {error}): the zip is damaged") from error


def _split_zip_location(location: str) -> tuple[str, str]:
    """``zip://<member>::<zip>`` → (member, zip)."""
    member, archive = location[len("zip://") :].split("::", 1)
    return member, archive


class _ByteRange(io.RawIOBase):
    """A read-only, seekable view of ``[offset, offset + size)`` of an open binary file.

    For a stored zip member (``member`` = (zip path, member name), ``expected_crc`` its CRC-32): the
    bytes read in one pass from the start are checked when that pass reaches the end, as zipfile
    checks the members it reads (a .mat or the ``video`` config's chunk is read whole; PyAV's seeks
    may skip the check, and damage is then found by the decoder). A failed check, or a zip that ends
    before the member does, raises `damaged_member_error`.
    """

    def __init__(
        self,
        file: IO[bytes],
        offset: int,
        size: int,
        name: str,
        member: tuple[str, str] | None = None,
        expected_crc: int | None = None,
    ):
        super().__init__()
        self._file, self._offset, self._size, self.name = file, offset, size, name
        self._position = 0
        self._member, self._expected_crc = member, expected_crc
        self._crc, self._crc_end = 0, 0  # CRC-32 of bytes [0, _crc_end), read in order

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + position)
        return self._position

    def readinto(self, buffer) -> int:
        count = max(0, min(len(buffer), self._size - self._position))
        if count == 0:
            return 0
        self._file.seek(self._offset + self._position)
        data = self._file.read(count)
        if not data and self._member is not None:
            raise damaged_member_error(
                *self._member, f"ends at byte {self._position} of {self._size}: the zip is truncated"
            )
        self._check_crc(data)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)

    def _check_crc(self, data: bytes) -> None:
        """Extend the running CRC-32 with ``data`` (read at ``_position``) and check it at the end."""
        end = self._position + len(data)
        if self._member is None or self._expected_crc is None or not self._position <= self._crc_end < end:
            return
        crc = zlib.crc32(memoryview(data)[self._crc_end - self._position :], self._crc)
        if end == self._size and crc != self._expected_crc:
            # not recorded: reading these bytes again fails again
            raise damaged_member_error(
                *self._member,
                f"fails its CRC-32 check (the zip declares {self._expected_crc:08x}, the data give {crc:08x}): "
                "the zip is damaged",
            )
        self._crc, self._crc_end = crc, end

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


class _ZipMemberReader(io.BufferedIOBase):
    """A compressed member of a local zip, read (and seeked) through zipfile, naming the zip in its errors.

    - zipfile's errors on damaged data (`_MEMBER_READ_ERRORS`) become `damaged_member_error`, raised
      by the read or seek that met them: bad deflate data shows mid-read, a failed CRC-32 at the end.
    - It never yields more than ``size`` bytes (the declared size checked by `check_member_data`), and
      asks zipfile for no more than is still due: zipfile's own ``read()`` would inflate all the
      remaining data at once, and a member inflating past its declared size would fill memory first.

    Raises (on opening):
        FileNotFoundError: the zip is not there any more (`open_file` makes it a `MissingFileError`).
        MissingFileError: the zip no longer holds the member, or it changed since it was indexed.
        UnsafeArchiveError, MocapFormatError, VideoDecodeError: as `check_member_data`, or the zip
            cannot be read any more.
    """

    def __init__(self, zip_path: str, member: str, size: int | None, name: str) -> None:
        super().__init__()
        self.name = name
        self._zip_path, self._member_name = zip_path, member
        self._archive: zipfile.ZipFile | None = None
        self._member: IO[bytes] | None = None
        with _reading_member(zip_path, member):
            self._archive = zipfile.ZipFile(zip_path)
        try:
            try:
                info = self._archive.getinfo(member)
            except KeyError as error:
                raise MissingFileError(
                    f"{zip_path}: no longer holds member {member!r}; the zip changed since the release copy "
                    "was indexed. Run again."
                ) from error
            check_member_data(zip_path, info, None, None)  # the zip may have been replaced since it was indexed
            if size is not None and info.file_size != size:
                raise MissingFileError(
                    f"{zip_path}: member {member!r} now declares {info.file_size} bytes, not {size}; the zip "
                    "changed since the release copy was indexed. Run again."
                )
            self._size = info.file_size
            with _reading_member(zip_path, member):
                self._member = self._archive.open(info)
        except BaseException:
            self.close()
            raise

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True  # zipfile seeks in a member of a local zip (backwards by inflating again)

    def tell(self) -> int:
        assert self._member is not None
        return self._member.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        assert self._member is not None
        with _reading_member(self._zip_path, self._member_name):
            return self._member.seek(offset, whence)

    def read(self, size: int | None = -1) -> bytes:
        assert self._member is not None
        due = max(0, self._size - self._member.tell())
        wanted = due if size is None or size < 0 else min(size, due)
        if wanted == 0:
            return b""
        with _reading_member(self._zip_path, self._member_name):
            return self._member.read(wanted)

    def read1(self, size: int | None = -1) -> bytes:
        return self.read(size)

    def close(self) -> None:
        if not self.closed:
            for part in (self._member, self._archive):
                if part is not None:
                    part.close()
        super().close()


def open_file(ref: FileRef) -> IO[bytes]:
    """Open a release file for binary reading (seekable). The caller closes it.

    A remote file is read with HTTP Range requests through `GrowingReadAheadCache`, and reads that
    fail on a dropped connection are retried (``datasets``' ``xopen``). A member of a local zip is
    checked as it is read (`_ByteRange`, `_ZipMemberReader`).

    Raises:
        MissingFileError: the file or archive member is not there any more.
        MocapFormatError, VideoDecodeError: a member of a local zip is damaged (now or while it is
            read; the message names the zip and the member).
        UnsafeArchiveError: a member of a local zip changed into one `check_member_data` refuses.
    """
    try:
        if ref.member_offset is not None:
            member, zip_path = _split_zip_location(ref.location)
            assert ref.size is not None
            byte_range = _ByteRange(
                open(zip_path, "rb"), ref.member_offset, ref.size, ref.name, (zip_path, member), ref.crc32
            )
            return io.BufferedReader(byte_range)
        if ref.location.startswith("zip://") and "://" not in _split_zip_location(ref.location)[1]:
            member, zip_path = _split_zip_location(ref.location)
            return _ZipMemberReader(zip_path, member, ref.size, ref.name)
        if "://" in ref.location:
            from datasets.utils.file_utils import xopen  # retries dropped connections while reading

            return xopen(
                ref.location,
                "rb",
                block_size=REMOTE_BLOCK_SIZE,
                cache_type=GrowingReadAheadCache.name,
                cache_options={"first_block": REMOTE_FIRST_BLOCK_SIZE},
            )
        return open(ref.location, "rb")
    except Rat7MError:
        raise  # already says which file and what to do (MissingFileError is a FileNotFoundError too)
    except FileNotFoundError as error:
        raise MissingFileError(
            f"{ref.name}: not found at {ref.where} ({error}). The release copy changed since it was "
            "indexed: restore the file or run again."
        ) from error


def describe_names(names: Iterable[str], limit: int = 12) -> str:
    """A short, readable list of file names for error messages."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")
