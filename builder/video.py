"""Decode released mp4 chunks with PyAV, front to back, and encode the wanted frames as JPEG.

Frames are located by their position in decode (presentation) order within a chunk; the global
frame index is ``chunk.start + position``. Nothing here seeks per example: `CameraFrames` walks a
camera's chunks forward and only reopens a chunk when asked for a frame behind it (which the
builder avoids by asking in order).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO

import av
import numpy as np
import simplejpeg

from .errors import VideoDecodeError
from .sources import FileRef, VideoChunk, describe_names, open_file

logger = logging.getLogger(__name__)

#: Decoder threading. Frame threading keeps both cores busy on a single-slice H.264 stream (x264's
#: default); see BENCHMARKS.md.
DECODER_THREAD_TYPE = "AUTO"

#: JPEG expects full-range YCbCr. Limited-range ("tv", Y in 16–235, chroma in 16–240) planes are
#: stretched with these tables before encoding, which is what a conversion through RGB would do.
_LUMA_TO_FULL = np.clip(np.round((np.arange(256) - 16) * 255.0 / 219.0), 0, 255).astype(np.uint8)
_CHROMA_TO_FULL = np.clip(np.round((np.arange(256) - 128) * 255.0 / 224.0 + 128), 0, 255).astype(np.uint8)
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG


@dataclass(frozen=True)
class VideoInfo:
    """What the stream says about itself. Sizes in pixels, rate in frames/s."""

    width: int
    height: int
    frame_rate: float | None
    num_frames: int | None


def probe_video(file: IO[bytes], source: str) -> VideoInfo:
    """Read the width, height, frame rate and (container-declared) frame count of an mp4."""
    try:
        with av.open(file, mode="r") as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            return VideoInfo(
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                frame_rate=float(rate) if rate else None,
                num_frames=stream.frames or None,
            )
    except (av.error.FFmpegError, IndexError) as error:
        raise VideoDecodeError(
            f"{source}: cannot be opened as a video ({error}). The file is truncated or corrupt: "
            "delete it and download it again."
        ) from error


def count_frames(file: IO[bytes], source: str) -> int:
    """Frames in an mp4: the container's count, else the number of video packets (no decoding)."""
    try:
        with av.open(file, mode="r") as container:
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            return sum(1 for packet in container.demux(stream) if packet.size)
    except (av.error.FFmpegError, IndexError) as error:
        raise VideoDecodeError(
            f"{source}: cannot be read as a video ({error}). The file is truncated or corrupt: "
            "delete it and download it again."
        ) from error


def encode_jpeg(frame: av.VideoFrame, quality: int) -> bytes:
    """Encode a decoded frame as baseline JPEG (4:2:0 when the video is 4:2:0).

    yuv420p frames go straight from their planes to the JPEG encoder (no RGB round trip), after
    stretching limited-range planes to the full range JPEG expects. Other pixel formats go
    through RGB.
    """
    if frame.format.name in ("yuv420p", "yuvj420p"):
        width, height = frame.width, frame.height
        planes = []
        for index, (plane_width, plane_height) in enumerate(
            ((width, height), ((width + 1) // 2, (height + 1) // 2), ((width + 1) // 2, (height + 1) // 2))
        ):
            plane = frame.planes[index]
            array = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:plane_height, :plane_width]
            limited = frame.format.name == "yuv420p" and frame.color_range != _FULL_RANGE
            if limited:
                array = (_LUMA_TO_FULL if index == 0 else _CHROMA_TO_FULL)[array]
            planes.append(np.ascontiguousarray(array))
        return simplejpeg.encode_jpeg_yuv_planes(planes[0], planes[1], planes[2], quality=quality)
    rgb = frame.to_ndarray(format="rgb24")
    return simplejpeg.encode_jpeg(rgb, quality=quality, colorspace="RGB", colorsubsampling="420")


def iter_decoded_frames(file: IO[bytes], source: str) -> Iterator[tuple[int, av.VideoFrame]]:
    """Yield ``(position, frame)`` for every frame of the first video stream, in order.

    Raises:
        VideoDecodeError: the container cannot be opened, a packet cannot be decoded, or the
            decoder flags a frame as corrupt; the message names the file and the position reached.
    """
    position = 0
    try:
        with av.open(file, mode="r") as container:
            stream = container.streams.video[0]
            stream.thread_type = DECODER_THREAD_TYPE
            for frame in container.decode(stream):
                if frame.is_corrupt:
                    raise VideoDecodeError(
                        f"{source}: frame {position} is corrupt (the decoder flagged damaged data). "
                        "Delete the file and download it again."
                    )
                yield position, frame
                position += 1
    except av.error.FFmpegError as error:
        raise VideoDecodeError(
            f"{source}: decoding failed after {position} frames ({error}). The file is corrupt or "
            "truncated: delete it and download it again."
        ) from error
    except IndexError as error:  # no video stream
        raise VideoDecodeError(f"{source}: holds no video stream. Delete it and download it again.") from error


class CameraFrames:
    """JPEG frames of one camera by global frame index, decoding its chunks front to back.

    Ask for frames in non-decreasing order and every chunk is decoded once, up to the last frame
    asked for. A repeated frame index is served from a small cache; a frame behind the decoder
    reopens its chunk (counted in `reopened`, logged).

    Args:
        chunks: the camera's chunks, sorted by start frame.
        quality: JPEG quality 1–100.
        label: e.g. ``"s1-d1 camera 3"``, for messages.
    """

    _CACHE_SIZE = 8

    def __init__(self, chunks: Sequence[VideoChunk], quality: int, label: str):
        self._chunks = list(chunks)
        self._starts = np.array([chunk.start for chunk in self._chunks], dtype=np.int64)
        self._quality = quality
        self._label = label
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._chunk_index: int | None = None
        self._decoder: Iterator[tuple[int, av.VideoFrame]] | None = None
        self._file: IO[bytes] | None = None
        self._next_position = 0
        self.reopened = 0

    def __enter__(self) -> CameraFrames:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self._decoder is not None:
            self._decoder.close()  # type: ignore[attr-defined]
        if self._file is not None:
            self._file.close()
        self._decoder, self._file, self._chunk_index = None, None, None

    def chunk_for(self, frame_index: int) -> int:
        """Index into the chunk list of the chunk holding ``frame_index`` (largest start ≤ it)."""
        index = int(np.searchsorted(self._starts, frame_index, side="right")) - 1
        if index < 0:
            raise VideoDecodeError(
                f"{self._label}: frame {frame_index} is before the first chunk "
                f"({self._chunks[0].file.name if self._chunks else 'no chunks'})."
            )
        return index

    def get(self, frame_index: int) -> bytes:
        """JPEG bytes of global frame ``frame_index``.

        Raises:
            VideoDecodeError: the frame is past the end of its chunk (a missing chunk or a
                truncated file), or decoding failed.
        """
        cached = self._cache.get(frame_index)
        if cached is not None:
            self._cache.move_to_end(frame_index)
            return cached
        chunk_index = self.chunk_for(frame_index)
        chunk = self._chunks[chunk_index]
        position = frame_index - chunk.start
        if chunk_index != self._chunk_index or position < self._next_position:
            if chunk_index == self._chunk_index:
                self.reopened += 1
                logger.info(
                    "%s: frame %d requested out of order; reopening %s", self._label, frame_index, chunk.file.name
                )
            self._open(chunk_index)
        assert self._decoder is not None
        for decoded_position, frame in self._decoder:
            self._next_position = decoded_position + 1
            if decoded_position == position:
                jpeg = encode_jpeg(frame, self._quality)
                self._cache[frame_index] = jpeg
                if len(self._cache) > self._CACHE_SIZE:
                    self._cache.popitem(last=False)
                return jpeg
        decoded = self._next_position
        self.close()
        following = self._chunks[chunk_index + 1].file.name if chunk_index + 1 < len(self._chunks) else None
        raise VideoDecodeError(
            f"{chunk.file.name}: the motion capture asks for global frame {frame_index} (position {position} "
            f"in this chunk) but the video ends after {decoded} frames. "
            + (
                f"The next chunk present is {following}: a chunk in between is missing, or this file is truncated. "
                if following
                else "The file is truncated or the following chunk is missing. "
            )
            + "Restore the missing file or download this one again."
        )

    def _open(self, chunk_index: int) -> None:
        self.close()
        chunk = self._chunks[chunk_index]
        self._file = open_file(chunk.file)
        self._decoder = iter_decoded_frames(self._file, chunk.file.name)
        self._chunk_index = chunk_index
        self._next_position = 0


def decode_frames(video: bytes | str | IO[bytes] | dict, indices: Sequence[int]) -> list[np.ndarray]:
    """Decode the given frame positions of one mp4 as RGB arrays, sequentially.

    Args:
        video: mp4 bytes, a path, an open binary file, or a ``{"bytes": ..., "path": ...}`` dict as a
            `datasets.Video` column holds with decoding off.
        indices: 0-based frame positions within this video, in any order, repeats allowed.

    Returns:
        One (height, width, 3) uint8 array per requested index, in the order requested. The video is
        decoded once, front to back, up to the largest index.
    """
    if isinstance(video, dict):
        video = video.get("bytes") or video.get("path")
    wanted = {int(index) for index in indices}
    if wanted and min(wanted) < 0:
        raise ValueError(f"frame indices must be ≥ 0, got {min(wanted)}")
    with contextlib.ExitStack() as stack:
        if isinstance(video, bytes | bytearray):
            file: IO[bytes] = io.BytesIO(video)
            source = "<video bytes>"
        elif isinstance(video, str):
            file = stack.enter_context(open_file(FileRef(video.rsplit("/", 1)[-1], video)))
            source = video
        else:
            file, source = video, getattr(video, "name", "<video file>")
        found: dict[int, np.ndarray] = {}
        last = max(wanted, default=-1)
        if last >= 0:
            decoder = stack.enter_context(contextlib.closing(iter_decoded_frames(file, source)))
            for position, frame in decoder:
                if position in wanted:
                    found[position] = frame.to_ndarray(format="rgb24")
                if position >= last:
                    break
    missing = sorted(wanted - found.keys())
    if missing:
        raise VideoDecodeError(f"{source}: has no frame(s) {describe_names(map(str, missing))}; it ends earlier.")
    return [found[int(index)] for index in indices]
