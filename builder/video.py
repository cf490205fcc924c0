"""Decode released mp4 chunks with PyAV, front to back, and encode the wanted frames as JPEG.

Frames are located by their position in decode (presentation) order within a chunk; the global
frame index is ``chunk.start + position``. Nothing here seeks per example: `CameraFrames` walks a
camera's chunks forward and only reopens a chunk when asked for a frame behind it (which the
builder avoids by asking in order).
"""

from __future__ import annotations

import bisect
import contextlib
import heapq
import io
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO

import av
import numpy as np
import simplejpeg
from av.video.reformatter import ColorRange

from .errors import FrameSizeError, VideoDecodeError
from .sources import FileRef, VideoChunk, describe_names, open_file

logger = logging.getLogger(__name__)

#: Decoder threading when damage must be found exactly and reproducibly: always. Measured with PyAV 18 /
#: FFmpeg 8 on fabricated mp4s with bytes overwritten in slice data (tests/faults/): single-threaded
#: decoding reports the same damage on every run. Frame threading ("AUTO"/"FRAME") is a race: the
#: decoder's corrupt flag of a frame can be lost, and then the damaged frame comes out unflagged, with
#: wrong pixels and no error (8 of 100 decodes of one fabricated chunk; 1 of 8 decodes of a 600-frame
#: benchmark chunk with 4 bytes flipped lost 2 of its 4 flagged frames), so a corrupt local copy could
#: pass into the dataset silently. Slice threading ("SLICE") conceals about 40 % of the damage
#: silently. One process (`num_proc=1`, streaming) still keeps both cores busy: the JPEG encoder runs
#: in threads beside the decoder (`CameraFrames.iter_jpegs`); frame threads would be ~15 % faster
#: there (BENCHMARKS.md), `num_proc` > 1 is unaffected (one decoder thread per process was already the
#: fastest).
CHECKED_DECODER_THREAD_TYPE = "NONE"
#: Decoder threading of every prepare and stream: the checked one (see above).
DECODER_THREAD_TYPE = CHECKED_DECODER_THREAD_TYPE
#: Container metadata is never used; undecodable bytes in it must not stop reading the frames (PyAV's
#: default, "strict", raises UnicodeDecodeError from `av.open` on a damaged mp4 header).
METADATA_ERRORS = "replace"
#: How often `CameraFrames.iter_jpegs` asks whether other jobs left cores idle (a directory listing,
#: ~10 µs, against ~10 ms of decoding and encoding a frame).
SPARE_CHECK_FRAMES = 8

_REDOWNLOAD = "The file is corrupt or truncated: delete it and download it again."
#: FFmpeg's name for the demuxer of mp4 files (it reads the whole QuickTime family). The release's
#: videos are mp4s; a file that FFmpeg reads with any other demuxer (an image, a different container)
#: is a wrong file under a release name.
MP4_DEMUXER_NAMES = frozenset({"mov", "mp4", "m4a", "3gp", "3g2", "mj2"})


class UnreadableVideoError(VideoDecodeError):
    """An mp4 that cannot be read at all: not openable, not an mp4, no video stream, no decoder.

    Every one of its frames is lost (with ``on_corrupt_video="skip"`` they are all left out).
    """


def _reason(error: Exception) -> str:
    """What FFmpeg (or the OS) said, without the file name it appends (messages name the file first)."""
    return getattr(error, "strerror", None) or str(error)


@contextlib.contextmanager
def open_video(
    file: IO[bytes], source: str
) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """Open an mp4 and its first video stream, checking that it can be decoded.

    Raises:
        UnreadableVideoError: the file cannot be opened (empty, cut short before its index, not a
            media file), is not an mp4, holds no video stream, or its stream's codec has no decoder
            (a damaged index names a codec that does not exist). The message names ``source``.
    """
    try:
        container = av.open(file, mode="r", metadata_errors=METADATA_ERRORS)
    except (av.error.FFmpegError, OSError) as error:  # PyAV raises OSError for e.g. an empty file
        raise UnreadableVideoError(
            f"{source}: cannot be opened as a video ({_reason(error)}). {_REDOWNLOAD}"
        ) from error
    with container:
        demuxer = set(container.format.name.split(","))
        if not demuxer & MP4_DEMUXER_NAMES:
            raise UnreadableVideoError(
                f"{source}: is not an mp4 video (FFmpeg reads it as {container.format.long_name!r}). "
                f"A different file was saved under this name: delete it and download it again."
            )
        if not container.streams.video:
            raise UnreadableVideoError(f"{source}: holds no video stream. {_REDOWNLOAD}")
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise UnreadableVideoError(
                f"{source}: its video stream cannot be decoded (no decoder for the codec its index names; "
                f"the index is damaged). {_REDOWNLOAD}"
            )
        yield container, stream


try:  # optional: OpenCV's table lookup is ~3x faster than the pure-Python one, with the same output
    import cv2 as _cv2
except ImportError:  # not a dependency of the package (see `full_range_plane`)
    _cv2 = None

#: Limited ("MPEG") range → full ("JPEG") range, as JFIF wants: Y' = (Y − 16)·255/219 and
#: C' = (C − 128)·255/224 + 128, rounded to nearest and clipped to 0–255 (values outside the legal
#: range, e.g. sensor noise below 16, clip to 0/255). One 256-entry table per plane kind.
LUMA_TO_FULL_RANGE = np.clip(np.round((np.arange(256) - 16) * 255.0 / 219.0), 0, 255).astype(np.uint8)
CHROMA_TO_FULL_RANGE = np.clip(np.round((np.arange(256) - 128) * 255.0 / 224.0 + 128), 0, 255).astype(np.uint8)
_TABLES = (LUMA_TO_FULL_RANGE, CHROMA_TO_FULL_RANGE, CHROMA_TO_FULL_RANGE)
_TRANSLATE_TABLES = tuple(table.tobytes() for table in _TABLES)
#: OpenCV hands a lookup over ≥ 2**18 pixels to its thread pool; smaller calls run in the calling
#: thread. Bands stay below that, so no OpenCV threads are started (num_proc workers are forked
#: processes and the encode pool already has a thread per core) and the user's OpenCV is untouched.
_OPENCV_BAND_PIXELS = (1 << 18) - 1


def plane_view(plane: av.video.plane.VideoPlane) -> np.ndarray:
    """A zero-copy (height, width) uint8 view of an 8-bit plane, without its row padding.

    ``line_size`` (bytes per row in memory) is usually larger than the width (1320 → 1408, 660 → 704
    for the release's frames); simplejpeg and OpenCV take such row-strided views as they are.
    """
    return np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]


def full_range_plane(plane: av.video.plane.VideoPlane, table_index: int, use_opencv: bool = True) -> np.ndarray:
    """One limited-range 8-bit plane mapped to full range through its table (0: luma, 1–2: chroma).

    Returns a (height, width) uint8 array, a fresh copy (the decoder's buffer is never written: it
    is a reference picture). With OpenCV installed the lookup is ``cv2.LUT`` on row bands (about
    0.2 ms for a 1320×1048 luma plane), else ``bytes.translate`` (about 0.7 ms); both apply the same
    table, so the JPEG bytes do not depend on whether OpenCV is installed. ``use_opencv=False``
    takes the ``bytes.translate`` way even so (the benchmark compares the two).
    """
    if _cv2 is None or not use_opencv:
        translated = bytes(plane).translate(_TRANSLATE_TABLES[table_index])
        return np.frombuffer(translated, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
    table = _TABLES[table_index]
    source = plane_view(plane)
    stretched = np.empty((plane.height, plane.width), np.uint8)
    band = max(1, _OPENCV_BAND_PIXELS // max(plane.width, 1))
    for row in range(0, plane.height, band):
        _cv2.LUT(source[row : row + band], table, dst=stretched[row : row + band])
    return stretched


@dataclass(frozen=True)
class VideoInfo:
    """What the stream says about itself. Sizes in pixels, rate in frames/s."""

    width: int
    height: int
    frame_rate: float | None
    num_frames: int | None


@dataclass(frozen=True)
class FrameSize:
    """The frame size of a camera's video in pixels, and the chunk it was read from (for messages)."""

    width: int
    height: int
    source: str


def frame_size_message(source: str, width: int, height: int, expected: FrameSize, label: str, position: int = 0) -> str:
    """The `FrameSizeError` message: ``source`` (frame ``position``) is ``width``×``height``, not ``expected``.

    ``label`` names the camera, e.g. ``"s1-d1 camera 3"``.
    """
    where = "its frames are" if position == 0 else f"its frame {position} is"
    other = (
        f"its earlier frames are {expected.width}×{expected.height}"
        if expected.source == source
        else f"{expected.source}, another chunk of {label}, has {expected.width}×{expected.height} frames"
    )
    return (
        f"{source}: {where} {width}×{height} pixels, but {other}. A camera's calibration (and so keypoints_2d) "
        "fits one frame size: one of these is not the released file. Download the odd one again (the "
        "release's frames are about 1320×1048), or leave this camera out with cameras=[...]."
    )


def _index_entries(stream: av.video.stream.VideoStream):
    """The demuxer's index of the stream (PyAV ≥ 17), None with older PyAV."""
    return getattr(stream, "index_entries", None)


def declared_frames(stream: av.video.stream.VideoStream) -> int | None:
    """The number of frames the container says it shows, None when it does not say.

    An mp4 edit list can leave frames out: a chunk cut from a longer recording by stream copy starts
    at the keyframe before its first frame, and the frames before that first frame are decoded but
    not shown (FFmpeg, hence OpenCV and PyAV, never return them; the frames before that keyframe are
    not even read). ``stream.frames`` counts every sample in the file, so it counts those too. The
    demuxer's index (PyAV ≥ 17) holds what is read and marks what is not shown. Older PyAV: the
    sample count, which is then only an upper bound (see `_FrameTracker.finish`).
    """
    entries = _index_entries(stream)
    if entries:
        return sum(1 for entry in entries if not entry.is_discard) or None
    return stream.frames or None


def probe_video(file: IO[bytes], source: str) -> VideoInfo:
    """Read the width, height, frame rate and (container-declared) frame count of an mp4.

    Raises:
        UnreadableVideoError: see `open_video`.
    """
    with open_video(file, source) as (_, stream):
        rate = stream.average_rate or stream.guessed_rate
        return VideoInfo(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            frame_rate=float(rate) if rate else None,
            num_frames=declared_frames(stream),
        )


def count_frames(file: IO[bytes], source: str) -> int:
    """Frames an mp4 shows: the container's count, else the number of video packets (no decoding).

    Frames an edit list leaves out are not counted (see `declared_frames`).
    """
    with open_video(file, source) as (container, stream):
        if _index_entries(stream):
            return declared_frames(stream) or 0
        try:  # PyAV < 17, or an index built while reading (fragmented mp4)
            return sum(1 for packet in container.demux(stream) if packet.size and not packet.is_discard)
        except av.error.FFmpegError as error:
            raise VideoDecodeError(f"{source}: cannot be read as a video ({_reason(error)}). {_REDOWNLOAD}") from error


def encode_jpeg(frame: av.VideoFrame, quality: int) -> bytes:
    """Encode a decoded frame as baseline JPEG (4:2:0 when the video is 4:2:0).

    yuv420p frames go straight from their planes to the JPEG encoder (no RGB round trip). JPEG
    (JFIF) wants full-range YCbCr, so limited-range planes (Y 16–235, chroma 16–240; untagged
    yuv420p is limited range, as every decoder and player assumes) are first stretched through
    fixed tables (`full_range_plane`: 0.3–0.8 ms a 1320×1048 frame with OpenCV, against 1.0–1.5 ms
    for swscale, which the builder used before). Full-range planes (yuvj420p, or tagged JPEG range)
    go to the encoder as strided views, without a copy. Other pixel formats go through RGB.
    """
    if frame.format.name not in ("yuv420p", "yuvj420p"):
        rgb = frame.to_ndarray(format="rgb24")
        return simplejpeg.encode_jpeg(rgb, quality=quality, colorspace="RGB", colorsubsampling="420")
    if frame.format.name == "yuv420p" and frame.color_range != ColorRange.JPEG:
        y, u, v = (full_range_plane(plane, index) for index, plane in enumerate(frame.planes))
    else:
        y, u, v = (plane_view(plane) for plane in frame.planes)
    return simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality=quality)


def _frames(first: int, count: int) -> str:
    """``"frame 5"`` or ``"frames 5–9"``."""
    return f"frame {first}" if count == 1 else f"frames {first}–{first + count - 1}"


@dataclass(frozen=True)
class _Anomaly:
    """Something a full decode found wrong, at frame ``position`` (and the ``count - 1`` after it).

    ``pts`` is set for a decode error: the pts of the packet the decoder refused (``position`` is then
    only how far the frames had come out, which lags behind with reordering and frame threading).
    """

    position: int
    count: int
    message: str
    pts: int | None = None


class _FrameTracker:
    """Matches decoded frames to demuxed packets by pts, so that no lost frame goes unnoticed.

    FFmpeg's H.264 decoder conceals damage (tried with PyAV 18 / FFmpeg 8 on mp4s with bytes
    overwritten inside slice data): a damaged frame comes out flagged corrupt, or an error is
    reported a few packets later (frame threading), or the frame never comes out at all (fewer
    frames than packets, e.g. a damaged last packet), and frames predicted from a damaged one come
    out unflagged. Frames leave the decoder in presentation order, so when the frame with pts X
    comes out, every demuxed packet with a smaller pts must have come out already: the rest were
    lost. Positions count lost frames too, so a loss never shifts the frames after it.

    Frames an mp4 edit list hides are decoded and checked too (FFmpeg would drop them silently,
    damage flag and all, while the shown frames predicted from them come out wrong), but they have no
    position.

    A fragmented mp4 has no index of its own: the demuxer builds one from the fragments it can read
    and skips a fragment whose header is damaged, silently, so its frames are missing from the
    packets too. There (``frame_ticks`` set) a step in pts of more than 1.5 frame durations counts the
    frames that fit in it as lost.
    """

    def __init__(self) -> None:
        self.pending: list[int] = []  # heap of the pts of demuxed packets not yet matched by a frame
        self.waiting: Counter[int] = Counter()
        self.hidden: Counter[int] = Counter()  # pts of packets an edit list hides (decoded, not shown)
        self.first_pts: int | None = None  # pts of the first packet read (the keyframe decoding starts at)
        self.position = 0  # the next frame position (intact, flagged or lost) in presentation order
        self.last_pts: int | None = None
        self.packets: list[tuple[int, bool]] = []  # (pts, is keyframe) in decode order
        self.discarded = 0  # packets the container marks as not to be shown (edit lists)
        self.declared: int | None = None  # frames the container declares (`declared_frames`)
        self.declared_is_exact = True  # False: the sample count, which includes frames an edit list hides
        self.frame_ticks: float | None = None  # frame duration in pts units, to find missing fragments
        self.previous_pts: int | None = None  # pts of the packet popped last (presentation order)
        self.cut_short = False  # the demuxer read a packet short: the file ends inside frame data

    def add_packet(self, packet: av.Packet) -> None:
        if packet.is_corrupt:
            self.cut_short = True
        if packet.pts is None or not packet.size:  # the flush packet at the end
            return
        if self.first_pts is None:
            self.first_pts = packet.pts
        heapq.heappush(self.pending, packet.pts)
        self.waiting[packet.pts] += 1
        if packet.is_discard:
            self.discarded += 1
            self.hidden[packet.pts] += 1
            return
        self.packets.append((packet.pts, bool(packet.is_keyframe)))

    def _pop(self, source: str) -> tuple[bool, _Anomaly | None]:
        """Forget the earliest pending packet: whether it was a hidden one, and the frames missing before it."""
        pts = heapq.heappop(self.pending)
        self.waiting[pts] -= 1
        missing = self._missing(pts, source) if self.frame_ticks is not None else None
        if self.hidden and self.hidden[pts] > 0:
            self.hidden[pts] -= 1
            return True, missing
        return False, missing

    def _missing(self, pts: int, source: str) -> _Anomaly | None:
        """Frames missing from a fragmented file between the packet popped last and this one."""
        previous, self.previous_pts = self.previous_pts, pts
        step = pts - previous if previous is not None else 0
        if step <= 0:
            return None
        self.frame_ticks = min(self.frame_ticks or step, step)
        count = round(step / self.frame_ticks) - 1 if step > 1.5 * self.frame_ticks else 0
        if not count:
            return None
        # Placeholders keep `groups` counting positions as the tracker does.
        self.packets.extend((round(previous + k * self.frame_ticks), False) for k in range(1, count + 1))
        first, self.position = self.position, self.position + count
        message = f"{source}: {_frames(first, count)} are missing (a fragment of this fragmented mp4 cannot be read)"
        return _Anomaly(first, count, message)

    def _drain_before(self, pts: float, source: str) -> Iterator[_Anomaly]:
        """Count every pending packet before ``pts`` as lost: its frame should have come out already."""
        first_lost = self.position
        while self.pending and self.pending[0] < pts:
            lost_pts = self.pending[0]
            hidden, missing = self._pop(source)
            if missing is not None:
                if missing.position > first_lost:
                    lost = missing.position - first_lost
                    yield _Anomaly(first_lost, lost, self._lost_message(source, first_lost, lost))
                yield missing
                first_lost = self.position
            if not hidden:
                self.position += 1
            # The pictures shown before the keyframe decoding starts at but decoded after it (open GOP)
            # need frames the file does not hold: the decoder drops them, as it should.
            elif self.first_pts is None or lost_pts >= self.first_pts:
                yield self._hidden_anomaly(source, "could not be decoded")
        if self.position > first_lost:
            lost = self.position - first_lost
            yield _Anomaly(first_lost, lost, self._lost_message(source, first_lost, lost))

    def _hidden_anomaly(self, source: str, what: str) -> _Anomaly:
        # Hidden frames come before the first shown frame (or after the last): the frames predicted from
        # one are in the group of pictures shown next to it.
        position = min(self.position, max(len(self.packets) - 1, 0))
        return _Anomaly(
            position,
            1,
            f"{source}: a frame the file's edit list hides (decoded only to predict the shown frames from it, "
            f"next to frame {position}) {what}: the data around it is damaged",
        )

    def frame(self, frame: av.VideoFrame, source: str) -> Iterator[tuple[int, av.VideoFrame] | _Anomaly]:
        pts = frame.pts if frame.pts is not None else (self.pending[0] if self.pending else None)
        # Two packets may carry the same pts (a muxer's rounding): their frames then come out with it in
        # turn, each matching one packet. A pts with no packet left to match is a frame the file does
        # not hold.
        if pts is None or self.waiting[pts] <= 0 or (self.last_pts is not None and pts < self.last_pts):
            yield _Anomaly(
                max(self.position - 1, 0),
                1,
                f"{source}: after frame {self.position - 1} the decoder returned a frame out of order or one "
                f"the file does not index (pts {frame.pts}): the data around it is damaged",
            )
            return
        if self.pending[0] < pts:
            yield from self._drain_before(pts, source)
        self.last_pts = pts
        hidden, missing = self._pop(source)
        if missing is not None:
            yield missing
        if hidden:  # never shown, but the shown frames predicted from it need it intact
            if frame.is_corrupt:
                yield self._hidden_anomaly(source, "is corrupt (the decoder flagged damaged data)")
            return
        if frame.is_corrupt:
            yield _Anomaly(
                self.position, 1, f"{source}: frame {self.position} is corrupt (the decoder flagged damaged data)"
            )
        else:
            yield self.position, frame
        self.position += 1

    def _lost_message(self, source: str, first: int, count: int) -> str:
        return f"{source}: {_frames(first, count)} could not be decoded (the decoder produced no picture: damaged data)"

    def finish(self, source: str, declared: int | None) -> Iterator[_Anomaly]:
        yield from self._drain_before(float("inf"), source)
        # Without the demuxer's index (PyAV < 17) the count includes the frames an edit list hides, of
        # which the discarded packets are only those after the keyframe the demuxer starts at: the
        # number shown is then unknown, and only a file cut inside frame data is found (`cut_short`).
        expected = declared or 0
        if not self.declared_is_exact and self.discarded:
            expected = 0
        if expected > self.position:
            ends = f"its data ends after frame {self.position - 1}" if self.position else "none of them can be read"
            yield _Anomaly(
                self.position,
                expected - self.position,
                f"{source}: the file declares {expected} frames but {ends}: it is truncated",
            )
            self.position = expected

    def groups(self) -> tuple[list[int], list[tuple[int, int, list[int]]]]:
        """Groups of pictures in presentation order: ``(first, stop, leading)`` per keyframe, and the firsts.

        ``leading`` are the frames shown before the keyframe but decoded after it (open GOP), which
        depend on it too.
        """
        order = sorted(range(len(self.packets)), key=lambda i: self.packets[i][0])
        position_of = [0] * len(self.packets)
        for position, index in enumerate(order):
            position_of[index] = position
        leading: dict[int, list[int]] = {0: []}
        key_position = 0
        for index, (_, is_key) in enumerate(self.packets):  # decode order
            if is_key:
                key_position = position_of[index]
                leading.setdefault(key_position, [])
            elif position_of[index] < key_position:
                leading[key_position].append(position_of[index])
        firsts = sorted(leading)
        stops = [*firsts[1:], len(self.packets)]
        return firsts, [(first, stop, leading[first]) for first, stop in zip(firsts, stops, strict=True)]


def _without_discard_flag(packet: av.Packet) -> av.Packet:
    """A copy of a packet an edit list hides, which the decoder then returns a frame for.

    FFmpeg decodes a hidden packet (the shown frames may be predicted from it) but drops its frame,
    damage flag included; `_FrameTracker` wants to see it. PyAV's packet flags are read-only.
    """
    if not packet.size:
        return packet
    copy = av.Packet(bytes(packet))
    copy.pts, copy.dts, copy.time_base = packet.pts, packet.dts, packet.time_base
    return copy


def _decode_events(
    file: IO[bytes], source: str, tracker: _FrameTracker, thread_type: str = DECODER_THREAD_TYPE
) -> Iterator[tuple[int, av.VideoFrame] | _Anomaly]:
    """Decode a whole mp4: intact frames as ``(position, frame)``, everything wrong as `_Anomaly`.

    Decoding goes on after an error (the decoder resynchronises at the next keyframe), so every
    damaged place is reported. A file that cannot be read at all raises `UnreadableVideoError`.
    """
    # Bound here: a generator left half-read is closed at interpreter exit, when `av`'s module
    # attributes may already be gone (its `except` clauses would then fail with AttributeError).
    ffmpeg_error = av.error.FFmpegError
    with open_video(file, source) as (container, stream):
        stream.thread_type = thread_type
        tracker.declared = declared_frames(stream)
        tracker.declared_is_exact = _index_entries(stream) is not None
        if not stream.frames:  # no sample table: a fragmented mp4 (see `_FrameTracker`)
            rate = stream.average_rate or stream.guessed_rate
            tracker.frame_ticks = float(1 / (rate * stream.time_base)) if rate and stream.time_base else 0.0
        try:
            for packet in container.demux(stream):
                tracker.add_packet(packet)
                try:
                    frames = stream.decode(_without_discard_flag(packet) if packet.is_discard else packet)
                except ffmpeg_error as error:
                    message = f"{source}: decoding failed after {tracker.position} frames ({_reason(error)})"
                    yield _Anomaly(tracker.position, 1, message, pts=packet.pts if packet.pts is not None else -1)
                    continue
                for frame in frames:
                    yield from tracker.frame(frame, source)
        except ffmpeg_error as error:  # the container itself is damaged: flush what was decoded
            yield _Anomaly(
                tracker.position, 1, f"{source}: reading failed after {tracker.position} frames ({_reason(error)})"
            )
            with contextlib.suppress(ffmpeg_error):
                for frame in stream.codec_context.decode(None):
                    yield from tracker.frame(frame, source)
        yield from tracker.finish(source, declared_frames(stream))


def _explained(tracker: _FrameTracker, source: str, message: str) -> str:
    """The error message for an anomaly, saying first when the file is simply cut short."""
    if tracker.cut_short:
        declared = f" of the {tracker.declared} it declares" if tracker.declared else ""
        return (
            f"{source}: the file is cut short: its data ends inside frame data, after {len(tracker.packets)} "
            f"frames{declared} ({message.removeprefix(f'{source}: ')}). It is an incomplete copy or download: "
            "delete it and download it again."
        )
    return f"{message}. {_REDOWNLOAD}"


def iter_decoded_frames(
    file: IO[bytes],
    source: str,
    skip: Collection[int] | None = None,
    thread_type: str | None = None,
    expected_errors: Collection[int] = (),
) -> Iterator[tuple[int, av.VideoFrame]]:
    """Yield ``(position, frame)`` for every intact frame of the first video stream, in order.

    Args:
        skip: frame positions known to be damaged (`VideoDamage.bad`): not yielded, and damage there
            is expected. None: no damage is tolerated.
        thread_type: decoder threading; None: `DECODER_THREAD_TYPE`.
        expected_errors: pts of packets known to fail decoding (`VideoDamage.error_pts`).

    Raises:
        VideoDecodeError: the container cannot be opened, a packet cannot be decoded, the decoder
            flags a frame as corrupt, loses a frame (fewer frames than packets, pts out of
            sequence), or the file holds fewer frames than it declares; the message names the file
            and the frame reached.
    """
    ffmpeg_error = av.error.FFmpegError  # bound here: see `_decode_events`
    skip = frozenset(skip or ())
    expected_errors = frozenset(expected_errors)
    tracker = _FrameTracker()
    # A decode error is reported a few packets late; decode on (yielding nothing more) to name the
    # frame it cost, then raise with both.
    deferred: _Anomaly | None = None
    try:
        for event in _decode_events(file, source, tracker, thread_type or DECODER_THREAD_TYPE):
            if isinstance(event, _Anomaly):
                if event.pts is not None:
                    if event.pts in expected_errors:
                        continue
                elif all(p in skip for p in range(event.position, event.position + event.count)):
                    continue
                if event.pts is not None and deferred is None:
                    deferred = event
                    continue
                cause = ""
                if deferred is not None and deferred.message != event.message:
                    cause = f"; {deferred.message.removeprefix(f'{source}: ')}"
                raise VideoDecodeError(_explained(tracker, source, f"{event.message}{cause}"))
            if deferred is None and event[0] not in skip:
                yield event
        if deferred is not None:
            raise VideoDecodeError(_explained(tracker, source, deferred.message))
    except ffmpeg_error as error:
        raise VideoDecodeError(
            f"{source}: decoding failed after {tracker.position} frames ({_reason(error)}). {_REDOWNLOAD}"
        ) from error


@dataclass(frozen=True)
class VideoDamage:
    """What a full decode of one mp4 found wrong (`scan_damage`).

    Attributes:
        num_frames: frames the file holds (declared, or found), None when it cannot be opened.
        bad: frame positions to leave out: every frame of each group of pictures (keyframe to next
            keyframe, plus the keyframe's leading pictures) where the decoder reported an error,
            flagged a frame, or lost one, because frames predicted from a damaged frame are wrong
            without being flagged. None: the file cannot be opened, every frame is affected.
        problems: what was found, one message per damaged place.
        error_pts: pts of the packets the decoder refused (a second decode reports them again).
    """

    num_frames: int | None
    bad: frozenset[int] | None
    problems: tuple[str, ...]
    error_pts: frozenset[int] = frozenset()

    def affects(self, position: int) -> bool:
        return self.bad is None or position in self.bad


def scan_damage(file: IO[bytes], source: str) -> VideoDamage:
    """Decode a whole mp4 (no conversion) and return which frames are damaged; never raises for bad data.

    A file that cannot be opened or read at all (`UnreadableVideoError`, or a zip member whose bytes
    fail their check) has every frame damaged: ``bad`` is None.

    Decodes single-threaded (`CHECKED_DECODER_THREAD_TYPE`), so the result is the same on every run;
    decode the file again with ``iter_decoded_frames(..., skip=damage.bad, thread_type=
    CHECKED_DECODER_THREAD_TYPE)`` to get exactly the frames this scan found intact.
    """
    tracker = _FrameTracker()
    anomalies: list[_Anomaly] = []
    try:
        for event in _decode_events(file, source, tracker, CHECKED_DECODER_THREAD_TYPE):
            if isinstance(event, _Anomaly):
                anomalies.append(event)
    except UnreadableVideoError as error:
        return VideoDamage(None, None, (str(error).removesuffix(f" {_REDOWNLOAD}"),))
    except VideoDecodeError as error:  # the bytes themselves cannot be read (a damaged zip member)
        return VideoDamage(None, None, (str(error),))
    except av.error.FFmpegError:
        anomalies.append(_Anomaly(tracker.position, 1, f"{source}: reading failed at frame {tracker.position}"))
    bad: set[int] = set()
    if anomalies:
        firsts, groups = tracker.groups()
        rank = {pts: position for position, pts in enumerate(sorted(pts for pts, _ in tracker.packets))}
        for anomaly in anomalies:
            first_position = rank.get(anomaly.pts, anomaly.position) if anomaly.pts is not None else anomaly.position
            for position in range(first_position, first_position + anomaly.count):
                if position >= len(tracker.packets):  # past the frames the file indexes (truncated)
                    bad.add(position)
                    continue
                first, stop, leading = groups[bisect.bisect_right(firsts, position) - 1]
                bad.update(range(first, stop))
                bad.update(leading)
    num_frames = max(tracker.position, len(tracker.packets))
    bad = {position for position in bad if position < num_frames}
    error_pts = frozenset(anomaly.pts for anomaly in anomalies if anomaly.pts is not None)
    return VideoDamage(num_frames, frozenset(bad), tuple(anomaly.message for anomaly in anomalies), error_pts)


class CameraFrames:
    """JPEG frames of one camera by global frame index, decoding its chunks front to back.

    Ask for frames in non-decreasing order and every chunk is decoded once, up to the last frame
    asked for. A repeated frame index is served from a small cache; a frame behind the decoder
    reopens its chunk (counted in `reopened`, logged).

    Args:
        chunks: the camera's chunks, sorted by start frame.
        quality: JPEG quality 1–100.
        label: e.g. ``"s1-d1 camera 3"``, for messages.
        on_corrupt: ``"error"``: damage raises `VideoDecodeError`. ``"skip"``: each chunk is first
            decoded once in full (`scan_damage`, so it is decoded twice in all), and `get` returns
            None for its damaged frames; they are recorded in `skipped` (file name → positions
            asked for) and `damaged` (file name → `VideoDamage`), and logged as a warning.
        frame_size: the camera's frame size, read from another of its chunks when the shard was
            planned; None: the first frame this reader decodes sets it. Every decoded frame must have
            it (`FrameSizeError` otherwise, with either ``on_corrupt``).
    """

    _CACHE_SIZE = 8

    def __init__(
        self,
        chunks: Sequence[VideoChunk],
        quality: int,
        label: str,
        on_corrupt: str = "error",
        frame_size: FrameSize | None = None,
    ):
        if on_corrupt not in ("error", "skip"):
            raise ValueError(f"on_corrupt must be 'error' or 'skip', got {on_corrupt!r}")
        self._on_corrupt = on_corrupt
        self._damage: dict[int, VideoDamage] = {}
        self.damaged: dict[str, VideoDamage] = {}
        self.skipped: dict[str, set[int]] = {}
        self._chunks = list(chunks)
        self._starts = np.array([chunk.start for chunk in self._chunks], dtype=np.int64)
        self._quality = quality
        self._label = label
        self._cache: OrderedDict[int, Future | bytes] = OrderedDict()
        self._chunk_index: int | None = None
        self._decoder: Iterator[tuple[int, av.VideoFrame]] | None = None
        self._file: IO[bytes] | None = None
        self._next_position = 0
        self._frame_size = frame_size
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
                f"({self._chunks[0].file.label if self._chunks else 'no chunks'})."
            )
        return index

    def get(self, frame_index: int) -> bytes | None:
        """JPEG bytes of global frame ``frame_index``; None only with ``on_corrupt="skip"``, for a damaged frame.

        Raises:
            VideoDecodeError: the frame is past the end of its chunk (a missing chunk or a
                truncated file), or decoding failed.
        """
        return _resolved(self._request(frame_index, None))

    def iter_jpegs(
        self,
        frame_indices: Iterable[int],
        encode_threads: int = 1,
        spare_threads: Callable[[], int] | None = None,
    ) -> Iterator[bytes | None]:
        """What `get` returns for each of ``frame_indices``, in order.

        With ``encode_threads`` > 1 the JPEG encoding runs in a pool of that many threads while this
        thread decodes ahead (at most ``2 × encode_threads`` frames in flight): one process then
        keeps both cores busy (libavcodec, OpenCV and simplejpeg release the GIL). An error
        surfaces when the decoder reaches it, so up to that many frames before it are not yielded.

        ``spare_threads`` (with ``encode_threads`` ≤ 1): asked every `SPARE_CHECK_FRAMES` frames how
        many cores other jobs have left idle (`jobs.SiblingJobs.spare_threads`); from its first
        positive answer on, the rest is encoded in a pool of that many threads as above. The bytes
        and their order do not change.
        """
        indices = iter(frame_indices)
        if encode_threads > 1:
            yield from self._iter_jpegs_in_pool(indices, encode_threads)
            return
        for count, frame_index in enumerate(indices, 1):
            yield self.get(frame_index)
            if spare_threads is not None and count % SPARE_CHECK_FRAMES == 0:
                threads = spare_threads()
                if threads > 0:
                    yield from self._iter_jpegs_in_pool(indices, threads)
                    return

    def _iter_jpegs_in_pool(self, indices: Iterator[int], encode_threads: int) -> Iterator[bytes | None]:
        """`iter_jpegs` with the encoding in ``encode_threads`` pool threads (≥ 1) and the decoding here."""
        in_flight: deque[Future | bytes | None] = deque()
        with ThreadPoolExecutor(encode_threads, thread_name_prefix="rat7m-jpeg") as pool:
            try:
                for frame_index in indices:
                    in_flight.append(self._request(frame_index, pool))
                    if len(in_flight) > 2 * encode_threads:
                        yield _resolved(in_flight.popleft())
                while in_flight:
                    yield _resolved(in_flight.popleft())
            finally:
                for pending in in_flight:  # stopped early or failed: drop what nobody will read
                    if isinstance(pending, Future):
                        pending.cancel()
                for frame_index, jpeg in list(self._cache.items()):
                    if isinstance(jpeg, Future) and jpeg.cancelled():
                        del self._cache[frame_index]

    def _request(self, frame_index: int, pool: ThreadPoolExecutor | None) -> Future | bytes | None:
        """Decode up to ``frame_index`` and encode it: in this thread (bytes), or in ``pool`` (a future)."""
        cached = self._cache.get(frame_index)
        if cached is not None:
            self._cache.move_to_end(frame_index)
            return cached
        chunk_index = self.chunk_for(frame_index)
        chunk = self._chunks[chunk_index]
        position = frame_index - chunk.start
        damage = self._damage_of(chunk_index) if self._on_corrupt == "skip" else None
        if damage is not None and damage.affects(position) and position < (damage.num_frames or position + 1):
            self.skipped.setdefault(chunk.file.name, set()).add(position)
            return None
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
            size = self._frame_size
            if size is None:
                self._frame_size = FrameSize(frame.width, frame.height, chunk.file.label)
            elif frame.width != size.width or frame.height != size.height:
                self.close()
                raise FrameSizeError(
                    frame_size_message(chunk.file.label, frame.width, frame.height, size, self._label, decoded_position)
                )
            if decoded_position == position:
                jpeg = (
                    encode_jpeg(frame, self._quality)
                    if pool is None
                    else pool.submit(encode_jpeg, frame, self._quality)
                )
                self._cache[frame_index] = jpeg
                if len(self._cache) > self._CACHE_SIZE:
                    self._cache.popitem(last=False)
                return jpeg
        decoded = self._next_position
        self.close()
        following = self._chunks[chunk_index + 1].file.label if chunk_index + 1 < len(self._chunks) else None
        raise VideoDecodeError(
            f"{chunk.file.label}: the motion capture asks for global frame {frame_index} (position {position} "
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
        if self._on_corrupt == "skip":
            damage = self._damage_of(chunk_index)
            self._decoder = iter_decoded_frames(
                self._file,
                chunk.file.label,
                skip=damage.bad or (),
                thread_type=CHECKED_DECODER_THREAD_TYPE,
                expected_errors=damage.error_pts,
            )
        else:
            self._decoder = iter_decoded_frames(self._file, chunk.file.label)
        self._chunk_index = chunk_index
        self._next_position = 0

    def _damage_of(self, chunk_index: int) -> VideoDamage:
        """The damage of a chunk (skip mode), scanned the first time it is needed."""
        damage = self._damage.get(chunk_index)
        if damage is None:
            chunk = self._chunks[chunk_index]
            with open_file(chunk.file) as file:
                damage = scan_damage(file, chunk.file.label)
            self._damage[chunk_index] = damage
            if damage.problems:
                self.damaged[chunk.file.name] = damage
                if damage.bad is None:
                    left_out = "all its frames"
                else:
                    left_out = f"{len(damage.bad)} of its {damage.num_frames} frames"
                more = len(damage.problems) - 3
                logger.warning(
                    "%s: %s. on_corrupt_video='skip': leaving out %s (frames predicted from damaged ones included).",
                    self._label,
                    "; ".join(problem.rstrip(".") for problem in damage.problems[:3])
                    + (f"; … ({more} more)" if more > 0 else ""),
                    left_out,
                )
        return damage


def _resolved(jpeg: Future | bytes | None) -> bytes | None:
    return jpeg.result() if isinstance(jpeg, Future) else jpeg


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
        frames_held = 0  # when a frame is missing, the decoder ran to the end: the video's frame count
        if last >= 0:
            decoder = stack.enter_context(contextlib.closing(iter_decoded_frames(file, source)))
            for position, frame in decoder:
                frames_held = position + 1
                if position in wanted:
                    found[position] = frame.to_ndarray(format="rgb24")
                if position >= last:
                    break
    missing = sorted(wanted - found.keys())
    if missing:
        raise VideoDecodeError(
            f"{source}: has no frame(s) {describe_names(map(str, missing))}: it holds {frames_held} frames "
            f"(positions 0 to {frames_held - 1}, counted from the chunk's first frame)."
        )
    return [found[int(index)] for index in indices]
