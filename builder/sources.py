"""Where the release files are and how to open them: a local copy, zip members, or URLs.

A `ReleaseIndex` maps what the builder needs (each recording's .mat, each camera's mp4 chunks) to
`FileRef`\\ s. A `FileRef` is opened with `open_file`, which returns a seekable binary file object
for a local path, a member of a local zip (stored members are read as a byte range, so PyAV's
seeks stay cheap), or a remote URL / chained ``zip://member::url`` (through fsspec, with a read-ahead
cache so PyAV's reads do not make fsspec fetch the same bytes twice).
"""

from __future__ import annotations

import io
import ntpath
import os
import struct
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO

import fsspec.caching

from .errors import MissingFileError, UnsafeArchiveError
from .manifest import VideoName, parse_mocap_name, parse_video_name

#: fsspec block size for remote reads: large enough that PyAV's small reads rarely cost a request.
REMOTE_BLOCK_SIZE = 8 * 1024 * 1024
#: First read-ahead of a remote file; it doubles with each sequential request up to
#: `REMOTE_BLOCK_SIZE`. Probing a video (header, ``moov`` index, first packets) or reading only the
#: first frames of a chunk then costs tens of KiB, not a whole block.
REMOTE_FIRST_BLOCK_SIZE = 64 * 1024


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
    """

    name: str
    location: str
    member_offset: int | None = None
    size: int | None = None
    md5: str | None = None


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


def scan_local(data_dir: str) -> ReleaseIndex:
    """Find the release files anywhere below ``data_dir``.

    Accepts the original helper script's layout (``video_sequences/*.mp4``, ``annotations/*.mat``), a
    flat folder, and figshare article zips left unopened (any ``*.zip``: members are read in place,
    never extracted). Files whose names are not release names are ignored.

    Raises:
        MissingFileError: ``data_dir`` does not exist.
        UnsafeArchiveError: a zip holds a member whose path escapes (``..``, absolute) or a link.
    """
    if not os.path.isdir(data_dir):
        raise MissingFileError(f"data_dir {data_dir!r} is not a folder. Give the folder holding your RAT7M copy.")
    index = ReleaseIndex(description=f"data_dir {data_dir}")
    for folder, subfolders, files in os.walk(data_dir):
        subfolders.sort()
        for file_name in sorted(files):
            path = os.path.join(folder, file_name)
            if file_name.lower().endswith(".zip"):
                index_zip(path, index)
            else:
                _add(index, file_name, FileRef(file_name, path, size=os.path.getsize(path)))
    return index


def _add(index: ReleaseIndex, file_name: str, ref: FileRef) -> None:
    video = parse_video_name(file_name)
    if video is not None:
        index.add_video(video, ref)
        return
    recording = parse_mocap_name(file_name)
    if recording is not None:
        index.mocap.setdefault(recording, ref)


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
        UnsafeArchiveError: a member's path escapes (``..``, absolute) or is a link.
        MissingFileError: ``path`` is not a readable zip (probably an incomplete download).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            for info in infos:
                check_member_name(path, info)
            with open(path, "rb") as raw:
                for info in infos:
                    if info.is_dir():
                        continue
                    base = info.filename.replace("\\", "/").rsplit("/", 1)[-1]
                    if parse_video_name(base) is None and parse_mocap_name(base) is None:
                        continue
                    offset = _stored_data_offset(raw, info)
                    ref = FileRef(base, f"zip://{info.filename}::{path}", member_offset=offset, size=info.file_size)
                    _add(index, base, ref)
    except zipfile.BadZipFile as error:
        raise MissingFileError(
            f"{path}: not a readable zip archive ({error}); it is probably an incomplete download. "
            "Delete it and download the article zip again."
        ) from error


_index_zip = index_zip  # the former private name, kept for callers written before it was public


def _stored_data_offset(raw: IO[bytes], info: zipfile.ZipInfo) -> int | None:
    """Byte offset of an uncompressed member's data in the zip, or None if it is compressed."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:  # encrypted members: no
        return None
    raw.seek(info.header_offset)
    header = raw.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise UnsafeArchiveError(f"{raw.name}: member {info.filename!r} has a damaged local header.")
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_length + extra_length


class _ByteRange(io.RawIOBase):
    """A read-only, seekable view of ``[offset, offset + size)`` of an open binary file."""

    def __init__(self, file: IO[bytes], offset: int, size: int, name: str):
        super().__init__()
        self._file, self._offset, self._size, self.name = file, offset, size, name
        self._position = 0

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
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


def open_file(ref: FileRef) -> IO[bytes]:
    """Open a release file for binary reading (seekable). The caller closes it.

    A remote file is read with HTTP Range requests through `GrowingReadAheadCache`, and reads that
    fail on a dropped connection are retried (``datasets``' ``xopen``).

    Raises:
        MissingFileError: the file or archive member is not there any more.
    """
    try:
        if ref.member_offset is not None:
            zip_path = ref.location.split("::", 1)[1]
            assert ref.size is not None
            return io.BufferedReader(_ByteRange(open(zip_path, "rb"), ref.member_offset, ref.size, ref.name))
        if ref.location.startswith("zip://") and "://" not in ref.location.split("::", 1)[1]:
            member, zip_path = ref.location[len("zip://") :].split("::", 1)
            archive = zipfile.ZipFile(zip_path)
            member_file = archive.open(member)
            member_file._rat7m_archive = archive  # keep the archive open as long as the member
            return member_file
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
    except FileNotFoundError as error:
        raise MissingFileError(
            f"{ref.name}: not found at {ref.location} ({error}). The release copy changed since it was "
            "indexed: restore the file or run again."
        ) from error


def describe_names(names: Iterable[str], limit: int = 12) -> str:
    """A short, readable list of file names for error messages."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")
