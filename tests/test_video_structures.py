"""mp4 structures the basic sample does not have: open GOPs, edit lists that hide frames, repeated pts.

Each is fabricated for real (PyAV + x264, the edit list patched in the file's ``elst`` box, as a
stream-copy cut writes it) and every frame carries its own barcode. OpenCV, which the original
extraction script used, is the independent reference for which frames a file shows.

- **Open GOP** (x264 ``open-gop``): the B-frames just before a non-IDR keyframe are decoded after it
  and predicted from it ("leading pictures"). When the keyframe is damaged they come out wrong and
  unflagged although, by position, they lie in the group before it.
- **An edit list that hides frames**: a chunk cut from a longer recording by stream copy begins at the
  keyframe before its first frame; the frames before that first frame are decoded but not shown, and
  the samples before that keyframe are not even read. ``stream.frames`` still counts every sample.
- **Two packets with the same pts** (a muxer's rounding): both frames come out, in order.
- **A fragmented mp4 with a damaged fragment header**: FFmpeg skips the fragment without a word.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
from helpers import decode_jpeg, raw_images, remux

import rat7m
from rat7m_builder import video
from rat7m_builder.errors import VideoDecodeError
from rat7m_builder.sample import SampleSpec, draw_barcode, read_barcode, video_frames, write_sample
from rat7m_builder.video import count_frames, iter_decoded_frames, probe_video, scan_damage

SOURCE = "s1-d1-camera1-3500.mp4"
WIDTH, HEIGHT, RATE = 320, 240, 30
NUM_FRAMES = 40
#: Keyframe every 12 frames, 2 B-frames between references, keyframes not IDR (open GOP).
OPEN_GOP = "open-gop=1:bframes=2:b-adapt=0:b-pyramid=none:scenecut=0:keyint=12:min-keyint=12"


# -- fabrication ----------------------------------------------------------------------------------------


def barcoded_frames(count: int, first: int = 0):
    """RGB frames of a drifting textured background, each with its value ``first + i`` as a barcode."""
    background = np.random.default_rng(3).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    for i in range(count):
        image = np.roll(background, 2 * i, axis=1)
        draw_barcode(image, first + i)
        yield image


def encode(frames, x264_params: str, width: int = WIDTH, height: int = HEIGHT, rate: int = RATE) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "20", "x264-params": x264_params}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


_CONTAINER_BOXES = {b"moov", b"trak", b"edts", b"mdia", b"minf", b"stbl"}


def _boxes(data: bytes, start: int = 0, stop: int | None = None) -> dict[bytes, int]:
    """Offset of the first box of each type, descending into the boxes on the path to ``elst``."""
    found: dict[bytes, int] = {}
    offset, stop = start, len(data) if stop is None else stop
    while offset + 8 <= stop:
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        assert size >= 8, "fabricated mp4s have 32-bit box sizes"
        found.setdefault(kind, offset)
        if kind in _CONTAINER_BOXES:
            for inner, at in _boxes(data, offset + 8, offset + size).items():
                found.setdefault(inner, at)
        offset += size
    return found


def hide_first_frames(data: bytes, hidden: int) -> bytes:
    """The mp4 with its edit list moved on by ``hidden`` frames, as a stream-copy cut at that frame writes it.

    x264's B-frames make PyAV's muxer write an edit list (one entry, starting at the first shown frame);
    its start moves on by ``hidden`` frame durations and its length shrinks by as much.
    """
    boxes = _boxes(data)
    elst, mvhd, mdhd = boxes[b"elst"], boxes[b"mvhd"], boxes[b"mdhd"]
    version, entries = data[elst + 8], struct.unpack(">I", data[elst + 12 : elst + 16])[0]
    assert version == 0 and entries == 1, "one 32-bit edit, as PyAV's muxer writes it"
    movie_scale = struct.unpack(">I", data[mvhd + 20 : mvhd + 24])[0]
    media_scale = struct.unpack(">I", data[mdhd + 20 : mdhd + 24])[0]
    duration, media_time = struct.unpack(">Ii", data[elst + 16 : elst + 24])
    patch = struct.pack(">Ii", duration - hidden * movie_scale // RATE, media_time + hidden * media_scale // RATE)
    return data[: elst + 16] + patch + data[elst + 24 :]


def repeat_pts(data: bytes, position: int) -> bytes:
    """The mp4 remuxed with the packet of frame ``position`` given the pts of the frame after it."""
    buffer = io.BytesIO()
    with av.open(io.BytesIO(data)) as source, av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        packets = [packet for packet in source.demux(source.streams.video[0]) if packet.dts is not None]
        in_order = sorted(packet.pts for packet in packets)
        for packet in packets:
            if packet.pts == in_order[position]:
                packet.pts = in_order[position + 1]
            packet.stream = stream
            out.mux(packet)
    return buffer.getvalue()


def packet_table(data: bytes) -> list[dict]:
    """Video packets in decode order: pts, byte offset, size, keyframe flag."""
    with av.open(io.BytesIO(data)) as container:
        return [
            {"pts": p.pts, "pos": p.pos, "size": p.size, "key": p.is_keyframe}
            for p in container.demux(container.streams.video[0])
            if p.size
        ]


def damage_tail(data: bytes, position: int) -> bytes:
    """Overwrite the second half of the packet of the ``position``-th frame the demuxer reads, in
    presentation order, hidden ones included (its NAL headers and SEI stay, so the demuxer still sees a
    keyframe where there was one)."""
    table = packet_table(data)
    packet = sorted(table, key=lambda p: p["pts"])[position]
    start, stop = packet["pos"] + packet["size"] // 2, packet["pos"] + packet["size"]
    noise = np.random.default_rng(position).integers(0, 256, stop - start, dtype=np.uint8).tobytes()
    return data[:start] + noise + data[stop:]


def plain_decode(data: bytes) -> dict[int, np.ndarray]:
    """pts → decoded yuv420p picture, single-threaded, going on past errors (what the file yields)."""
    pictures = {}
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        for packet in container.demux(stream):
            try:
                frames = stream.decode(packet)
            except av.error.FFmpegError:
                continue
            for frame in frames:
                pictures[frame.pts] = frame.to_ndarray(format="yuv420p")
    return pictures


def plain_decode_shown(data: bytes) -> dict[int, np.ndarray]:
    """position → picture of the frames FFmpeg shows (edit list applied), by position in the file's shown
    order; a frame FFmpeg does not return is missing. Single-threaded, going on past errors."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        shown = sorted(p.pts for p in container.demux(stream) if p.size and not p.is_discard)
    position_of = {pts: position for position, pts in enumerate(shown)}
    return {position_of[pts]: picture for pts, picture in plain_decode(data).items() if pts in position_of}


def opencv_barcodes(data: bytes, folder) -> list[int]:
    """The barcodes of the frames OpenCV reads from the file, in order (the original script's reader)."""
    path = str(folder / "opencv.mp4")
    with open(path, "wb") as file:
        file.write(data)
    capture = cv2.VideoCapture(path)
    barcodes = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        barcodes.append(read_barcode(image[..., ::-1]))
    capture.release()
    return barcodes


def served(data: bytes, damage: video.VideoDamage | None = None) -> dict[int, np.ndarray]:
    """position → picture, as rat7m serves them (skipping what a scan found damaged)."""
    skip = damage.bad if damage else None
    errors = damage.error_pts if damage else ()
    return {
        position: frame.to_ndarray(format="yuv420p")
        for position, frame in iter_decoded_frames(
            io.BytesIO(data), SOURCE, skip=skip, thread_type=video.CHECKED_DECODER_THREAD_TYPE, expected_errors=errors
        )
    }


def barcode(picture: np.ndarray) -> int:
    return read_barcode(picture[:HEIGHT])  # the luma rows of a yuv420p array


@pytest.fixture(scope="module")
def open_gop() -> bytes:
    return encode(barcoded_frames(NUM_FRAMES), OPEN_GOP)


def leading_pictures(data: bytes) -> dict[int, list[int]]:
    """Keyframe position → the positions shown before it but decoded after it."""
    table = packet_table(data)
    position_of = {pts: position for position, pts in enumerate(sorted(p["pts"] for p in table))}
    leading: dict[int, list[int]] = {}
    key = None
    for packet in table:
        position = position_of[packet["pts"]]
        if packet["key"]:
            key = position
            leading[key] = []
        elif key is not None and position < key:
            leading[key].append(position)
    return leading


# -- open GOP ----------------------------------------------------------------------------------------


def test_the_open_gop_fixture_has_leading_pictures(open_gop):
    assert leading_pictures(open_gop) == {0: [], 12: [10, 11], 24: [22, 23], 36: [34, 35]}
    pictures = served(open_gop)
    assert [barcode(picture) for picture in pictures.values()] == list(range(NUM_FRAMES))


@pytest.mark.parametrize("position", [12, 24, 11, 16, 0])
def test_a_scan_leaves_out_every_frame_damage_makes_wrong_and_serves_the_rest_exactly(open_gop, position):
    damaged = damage_tail(open_gop, position)
    intact = plain_decode(open_gop)
    decoded = plain_decode(damaged)
    position_of = {pts: position for position, pts in enumerate(sorted(intact))}
    wrong = {
        position_of[pts]
        for pts, picture in intact.items()
        if pts not in decoded or not np.array_equal(decoded[pts], picture)
    }
    assert position in wrong  # the damage is real
    damage = scan_damage(io.BytesIO(damaged), SOURCE)
    assert wrong <= damage.bad, (sorted(wrong - damage.bad), damage.problems)
    pictures = served(damaged, damage)
    assert sorted(pictures) == sorted(set(range(NUM_FRAMES)) - damage.bad)
    by_position = list(intact.values())
    for served_position, picture in pictures.items():
        np.testing.assert_array_equal(picture, by_position[served_position], err_msg=f"frame {served_position}")


@pytest.mark.parametrize("key", [12, 24])
def test_a_damaged_open_gop_keyframe_takes_its_leading_pictures_with_it(open_gop, key):
    """The leading pictures lie in the group before the keyframe by position, but are predicted from it."""
    leading = leading_pictures(open_gop)[key]
    damaged = damage_tail(open_gop, key)
    intact, decoded = plain_decode(open_gop), plain_decode(damaged)
    shown = sorted(intact)
    assert all(not np.array_equal(decoded[shown[p]], intact[shown[p]]) for p in leading)  # wrong, unflagged
    damage = scan_damage(io.BytesIO(damaged), SOURCE)
    assert damage.bad == frozenset([*leading, *range(key, key + 12)])
    with pytest.raises(VideoDecodeError, match=rf"^{SOURCE}: "):
        served(damaged)


# -- edit lists that hide frames ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hidden",
    [
        3,  # inside the first group of pictures: every packet is read, 3 are marked not to be shown
        14,  # past the keyframe at 12: the demuxer starts there and never reads frames 0–9
    ],
)
def test_frames_an_edit_list_hides_are_neither_counted_nor_served(open_gop, hidden, tmp_path):
    data = hide_first_frames(open_gop, hidden)
    shown = NUM_FRAMES - hidden
    assert opencv_barcodes(data, tmp_path) == list(range(hidden, NUM_FRAMES))  # the reference
    with av.open(io.BytesIO(data)) as container:
        assert container.streams.video[0].frames == NUM_FRAMES  # what the sample count says
    assert count_frames(io.BytesIO(data), SOURCE) == shown
    assert probe_video(io.BytesIO(data), SOURCE).num_frames == shown
    pictures = served(data)
    assert {position: barcode(picture) for position, picture in pictures.items()} == {
        position: hidden + position for position in range(shown)
    }
    # with the default (frame-threaded) decoder too
    positions = [position for position, _ in iter_decoded_frames(io.BytesIO(data), SOURCE)]
    assert positions == list(range(shown))
    damage = scan_damage(io.BytesIO(data), SOURCE)
    assert damage == video.VideoDamage(shown, frozenset(), ())


@pytest.mark.parametrize(
    "barcode_value",
    [
        12,  # the hidden keyframe the demuxer starts at: FFmpeg drops its frame, damage flag and all
        13,  # a hidden B-frame no other frame is predicted from
        16,  # a shown frame
    ],
)
def test_damage_in_an_edit_listed_file_leaves_out_every_shown_frame_it_makes_wrong(open_gop, barcode_value):
    data = hide_first_frames(open_gop, 14)
    # the demuxer starts at the keyframe at 12; its leading pictures 10 and 11 are read too
    damaged = damage_tail(data, barcode_value - 10)
    intact, decoded = served(data), plain_decode_shown(damaged)
    wrong = {p for p, picture in intact.items() if p not in decoded or not np.array_equal(decoded[p], picture)}
    assert bool(wrong) == (barcode_value != 13), sorted(wrong)  # the damage makes shown frames wrong
    damage = scan_damage(io.BytesIO(damaged), SOURCE)
    assert damage.num_frames == 26 and wrong <= damage.bad, (sorted(wrong), sorted(damage.bad), damage.problems)
    pictures = served(damaged, damage)
    assert sorted(pictures) == sorted(set(range(26)) - damage.bad)
    for position, picture in pictures.items():
        np.testing.assert_array_equal(picture, intact[position])
    with pytest.raises(VideoDecodeError, match=rf"^{SOURCE}: "):
        served(damaged)


def test_an_edit_listed_file_cut_short_is_still_found_truncated(open_gop, tmp_path):
    data = hide_first_frames(remux(open_gop, tmp_path), 14)  # index first: frames before the cut can be read
    assert count_frames(io.BytesIO(data), SOURCE) == 26
    with pytest.raises(VideoDecodeError, match=rf"^{SOURCE}: the file is cut short: .* of the 26 it declares"):
        served(data[: len(data) * 2 // 3])


def test_a_cut_starting_at_an_open_gop_keyframe_hides_its_undecodable_leading_pictures(open_gop, tmp_path):
    """Stream copy from the keyframe at 12: its leading pictures 10 and 11 come along (they are decoded
    after it) but need frame 9; the muxer's edit list starts at the keyframe, so they are hidden."""
    buffer = io.BytesIO()
    with av.open(io.BytesIO(open_gop)) as source, av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        packets = [packet for packet in source.demux(source.streams.video[0]) if packet.dts is not None]
        first = next(i for i, packet in enumerate(packets) if packet.is_keyframe and packet.pts > 0)
        shift = packets[first].dts
        for packet in packets[first:]:
            packet.pts, packet.dts, packet.stream = packet.pts - shift, packet.dts - shift, stream
            out.mux(packet)
    data = buffer.getvalue()
    assert opencv_barcodes(data, tmp_path) == list(range(12, NUM_FRAMES))
    assert [barcode(picture) for picture in served(data).values()] == list(range(12, NUM_FRAMES))
    assert scan_damage(io.BytesIO(data), SOURCE) == video.VideoDamage(NUM_FRAMES - 12, frozenset(), ())


def test_without_the_demuxers_index_a_hidden_start_is_not_taken_for_truncation(open_gop, monkeypatch):
    """PyAV < 17 has no ``Stream.index_entries``: only the sample count, which includes hidden frames."""
    data = hide_first_frames(open_gop, 14)
    monkeypatch.setattr(video, "_index_entries", lambda stream: None)
    assert probe_video(io.BytesIO(data), SOURCE).num_frames == NUM_FRAMES  # only an upper bound then
    assert count_frames(io.BytesIO(data), SOURCE) == 26  # counted from the packets to be shown
    assert [barcode(picture) for picture in served(data).values()] == list(range(14, NUM_FRAMES))
    # and a plain file cut short is still found
    with pytest.raises(VideoDecodeError, match=rf"^{SOURCE}: "):
        served(open_gop[: len(open_gop) * 2 // 3])


# -- repeated pts ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("x264_params", ["bframes=0:keyint=12", "bframes=2:b-adapt=0:keyint=12"])
def test_two_packets_with_the_same_pts_give_both_frames_in_order(x264_params, tmp_path):
    data = repeat_pts(encode(barcoded_frames(NUM_FRAMES), x264_params), 5)
    pts = sorted(p["pts"] for p in packet_table(data))
    assert pts[5] == pts[6] and len(set(pts)) == NUM_FRAMES - 1  # the fixture really repeats one
    assert opencv_barcodes(data, tmp_path) == list(range(NUM_FRAMES))
    assert [barcode(picture) for picture in served(data).values()] == list(range(NUM_FRAMES))
    assert [position for position, _ in iter_decoded_frames(io.BytesIO(data), SOURCE)] == list(range(NUM_FRAMES))
    assert scan_damage(io.BytesIO(data), SOURCE) == video.VideoDamage(NUM_FRAMES, frozenset(), ())


def test_a_frame_whose_pts_no_packet_carries_is_still_an_error():
    tracker = video._FrameTracker()

    class Packet:
        def __init__(self, pts):
            self.pts, self.size, self.is_corrupt, self.is_discard, self.is_keyframe = pts, 1, False, False, pts == 0

    class Frame:
        def __init__(self, pts):
            self.pts, self.is_corrupt = pts, False

    for pts in (0, 512, 1024):
        tracker.add_packet(Packet(pts))
    events = [*tracker.frame(Frame(0), SOURCE), *tracker.frame(Frame(512), SOURCE), *tracker.frame(Frame(512), SOURCE)]
    assert [event[0] for event in events[:2]] == [0, 1]
    assert isinstance(events[2], video._Anomaly) and "out of order or one the file does not index" in events[2].message


# -- fragmented mp4 ----------------------------------------------------------------------------------------


def fragmented(x264_params: str) -> bytes:
    """A fragmented mp4 (a fragment per keyframe, no sample table), with jittery timestamps (±3 ms)."""
    jitter = np.random.default_rng(5).integers(-50, 51, NUM_FRAMES)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4", options={"movflags": "frag_keyframe+empty_moov"}) as container:
        stream = container.add_stream("libx264", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.time_base = Fraction(1, 15360)
        stream.options = {"preset": "veryfast", "crf": "20", "x264-params": x264_params}
        for index, image in enumerate(barcoded_frames(NUM_FRAMES)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index * 512 + int(jitter[index]) * (index > 0), Fraction(1, 15360)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def damage_second_fragment(data: bytes) -> bytes:
    """The fragmented mp4 with its second fragment's header renamed: FFmpeg skips that fragment silently."""
    second = data.index(b"moof", data.index(b"moof") + 4)
    return data[:second] + b"zzzz" + data[second + 4 :]


@pytest.mark.parametrize("x264_params", ["bframes=0:keyint=12:scenecut=0", "bframes=2:b-adapt=0:keyint=12:scenecut=0"])
def test_a_fragmented_mp4_with_jittery_timestamps_is_read_whole(x264_params):
    data = fragmented(x264_params)
    with av.open(io.BytesIO(data)) as container:
        assert not container.streams.video[0].frames  # no sample table: the gap check is on
    assert [barcode(picture) for picture in served(data).values()] == list(range(NUM_FRAMES))
    assert scan_damage(io.BytesIO(data), SOURCE) == video.VideoDamage(NUM_FRAMES, frozenset(), ())


@pytest.mark.parametrize("x264_params", ["bframes=0:keyint=12:scenecut=0", "bframes=2:b-adapt=0:keyint=12:scenecut=0"])
def test_a_fragment_ffmpeg_skips_is_missing_frames_not_a_shift(x264_params):
    """Without the gap check the frames after the skipped fragment were served 12 positions early."""
    damaged = damage_second_fragment(fragmented(x264_params))
    with pytest.raises(VideoDecodeError, match=rf"^{SOURCE}: frames 12–23 are missing \(a fragment of this fragmented"):
        served(damaged)
    damage = scan_damage(io.BytesIO(damaged), SOURCE)
    # the missing frames, and at most the group of pictures before them too (which fragment the lost
    # frames' references were in cannot be told)
    assert set(range(12, 24)) <= damage.bad <= set(range(24)) and damage.num_frames == NUM_FRAMES
    pictures = served(damaged, damage)
    assert sorted(pictures) == list(range(24, NUM_FRAMES))
    assert all(barcode(picture) == position for position, picture in pictures.items())


# -- through the builder -----------------------------------------------------------------------------------

HIDDEN = 5


@pytest.fixture(scope="module")
def cut_release(tmp_path_factory):
    """The flat sample, once as written and once with every chunk after the first of each camera cut
    by stream copy: it holds the 5 frames before its start too (keyframe every 4 frames, so the cut
    falls inside a group of pictures), hidden by its edit list."""
    spec = SampleSpec(recordings=("s1-d1",), layout="flat")
    plain = write_sample(str(tmp_path_factory.mktemp("plain")), spec)
    root = str(tmp_path_factory.mktemp("cut"))
    shutil.copytree(plain.root, root, dirs_exist_ok=True)
    truth = plain.recordings["s1-d1"]
    for camera in range(1, 7):
        for start in range(spec.chunk_frames, truth.num_video_frames, spec.chunk_frames):
            stop = min(start + spec.chunk_frames, truth.num_video_frames)
            frames = video_frames(spec, truth, camera, start - HIDDEN, stop)
            data = encode(frames, "bframes=2:b-adapt=0:keyint=4:min-keyint=4:scenecut=0", spec.width, spec.height)
            with open(os.path.join(root, f"s1-d1-camera{camera}-{start}.mp4"), "wb") as file:
                file.write(hide_first_frames(data, HIDDEN))
    return plain.root, root


def test_a_release_of_stream_copy_cuts_gives_the_same_rows(cut_release, tmp_path):
    plain_root, cut_root = cut_release
    plain = rat7m.load_dataset("frames", split="train", data_dir=plain_root, cache_dir=str(tmp_path / "plain"))
    cut = rat7m.load_dataset("frames", split="train", data_dir=cut_root, cache_dir=str(tmp_path / "cut"))
    assert cut.num_rows == plain.num_rows == 6 * 30
    columns = [name for name in plain.column_names if name != "image"]
    np.testing.assert_equal(cut.select_columns(columns)[:], plain.select_columns(columns)[:])
    for row in raw_images(cut):
        assert read_barcode(decode_jpeg(row["image"]["bytes"])) == row["frame_index"]
    videos_plain = rat7m.load_dataset("videos", split="train", data_dir=plain_root, cache_dir=str(tmp_path / "vp"))
    videos_cut = rat7m.load_dataset("videos", split="train", data_dir=cut_root, cache_dir=str(tmp_path / "vc"))
    assert videos_cut["num_frames"] == videos_plain["num_frames"]
    np.testing.assert_equal(videos_cut["sample_index"], videos_plain["sample_index"])
