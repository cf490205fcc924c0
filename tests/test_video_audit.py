"""Damage bookkeeping of `rat7m_builder.video` at its edges: runs of lost frames, frames out of order,
hidden keyframes, late decode errors, files cut short, and a read failure mid-file.

Each case is one a mutation audit of the module found unguarded: the code did the right thing, but
no test would have noticed if it stopped. Where real fabricated damage shows the case it is used;
where FFmpeg cannot be made to show it on demand, `_FrameTracker` gets packets and frames directly,
as it gets them from PyAV.
"""

from __future__ import annotations

import io
import struct

import pytest
from helpers import remux
from test_video_structures import barcoded_frames, packet_table

from rat7m_builder import video
from rat7m_builder.errors import VideoDecodeError
from rat7m_builder.sample import read_barcode, write_mp4
from rat7m_builder.video import iter_decoded_frames, scan_damage

SOURCE = "s1-d1-camera1-0.mp4"
NUM_FRAMES = 40
#: `write_mp4` puts a keyframe every 12 frames (closed groups of pictures, B-frames in between).
GROUP = 12


@pytest.fixture(scope="module")
def chunk(tmp_path_factory) -> bytes:
    """A 40-frame chunk as `write_mp4` writes the sample's, each frame carrying its position as a barcode."""
    path = str(tmp_path_factory.mktemp("audit") / SOURCE)
    write_mp4(path, barcoded_frames(NUM_FRAMES), 30, 320, 240)
    with open(path, "rb") as file:
        return file.read()


def _barcodes(data: bytes, damage: video.VideoDamage | None = None) -> dict[int, int]:
    """position → barcode of what rat7m serves (skipping what ``damage`` found), single-threaded."""
    frames = iter_decoded_frames(
        io.BytesIO(data),
        SOURCE,
        skip=damage.bad if damage else None,
        thread_type=video.CHECKED_DECODER_THREAD_TYPE,
        expected_errors=damage.error_pts if damage else (),
    )
    return {position: read_barcode(frame.to_ndarray(format="rgb24")) for position, frame in frames}


def _zero_byte(data: bytes, positions: list[int], offset: int = 6) -> bytes:
    """Zero one byte of the slice header of the packets of the frames at ``positions`` (presentation order)."""
    by_pts = sorted(packet_table(data), key=lambda packet: packet["pts"])
    for position in positions:
        at = by_pts[position]["pos"] + offset
        data = data[:at] + b"\0" + data[at + 1 :]
    return data


class _Packet:
    """What `_FrameTracker.add_packet` reads of a PyAV packet."""

    def __init__(self, pts: int, key: bool = False, hidden: bool = False):
        self.pts, self.size, self.is_keyframe, self.is_discard, self.is_corrupt = pts, 1, key, hidden, False


class _Frame:
    """What `_FrameTracker.frame` reads of a decoded frame."""

    def __init__(self, pts: int):
        self.pts, self.is_corrupt = pts, False


# -- lost frames ------------------------------------------------------------------------------------------


def test_a_run_of_lost_frames_is_excused_only_when_every_frame_of_it_is_skipped(chunk):
    # One zeroed byte in each of two neighbouring packets: FFmpeg returns no picture for either, silently.
    damaged = _zero_byte(chunk, [5, 6])
    with pytest.raises(VideoDecodeError, match=rf"^{SOURCE}: frames 5–6 could not be decoded"):
        _barcodes(damaged)
    # A skip list that knows of frame 5 only (a scan that saw less) must not excuse the loss of frame 6:
    # the iteration would end with frame 6 silently missing.
    with pytest.raises(VideoDecodeError, match=rf"^{SOURCE}: frames 5–6 could not be decoded"):
        _barcodes(damaged, video.VideoDamage(NUM_FRAMES, frozenset([5]), ()))
    # the scan leaves out their whole group of pictures (the frames after them are predicted from them)
    damage = scan_damage(io.BytesIO(damaged), SOURCE)
    assert damage.bad == frozenset(range(GROUP))
    assert _barcodes(damaged, damage) == {position: position for position in range(GROUP, NUM_FRAMES)}


def test_a_frame_the_decoder_returns_behind_one_already_shown_is_damage_not_the_next_frame():
    """A decoder whose reorder buffer proves too shallow returns a frame after one shown later (FFmpeg
    then logs "Increasing reorder buffer"). Counted on as the next position it would be served under the
    frame index of the frame after it."""
    tracker = video._FrameTracker()
    for pts in (0, 1024):
        tracker.add_packet(_Packet(pts, key=pts == 0))
    shown = [*tracker.frame(_Frame(0), SOURCE), *tracker.frame(_Frame(1024), SOURCE)]
    assert [event[0] for event in shown] == [0, 1]
    tracker.add_packet(_Packet(512))  # demuxed (and decoded) only after the frame at 1024 came out
    (late,) = tracker.frame(_Frame(512), SOURCE)
    assert isinstance(late, video._Anomaly), late
    assert "out of order or one the file does not index (pts 512)" in late.message


def test_a_hidden_keyframe_the_decoder_loses_is_damage_but_a_hidden_leading_picture_is_not():
    """An edit list hides the keyframe decoding starts at (a stream-copy cut inside a group of pictures).
    If the decoder returns no picture for it, the shown frames predicted from it are wrong. Pictures
    shown before that keyframe but decoded after it need a frame the file does not hold: FFmpeg drops
    them, as it should."""
    tracker = video._FrameTracker()
    tracker.add_packet(_Packet(1024, key=True, hidden=True))  # the keyframe decoding starts at
    tracker.add_packet(_Packet(512, hidden=True))  # a leading picture of it (open GOP)
    tracker.add_packet(_Packet(2048))
    tracker.add_packet(_Packet(1536, hidden=True))
    tracker.add_packet(_Packet(2560))
    # the keyframe and its leading picture never come out
    events = [*tracker.frame(_Frame(1536), SOURCE), *tracker.frame(_Frame(2048), SOURCE)]
    events += [*tracker.frame(_Frame(2560), SOURCE), *tracker.finish(SOURCE, 2)]
    anomalies = [event for event in events if isinstance(event, video._Anomaly)]
    assert len(anomalies) == 1, [anomaly.message for anomaly in anomalies]  # the keyframe, not the leading picture
    assert "a frame the file's edit list hides" in anomalies[0].message
    assert "could not be decoded" in anomalies[0].message


# -- where damage is put ----------------------------------------------------------------------------------


def test_a_late_decode_error_leaves_out_the_group_of_its_packet_not_of_the_frames_out_so_far(chunk, monkeypatch):
    """A decode error names its packet by pts; how many frames had come out by then lags behind (B-frames
    wait in the decoder). The group to leave out is the packet's, else a damaged group is served."""
    real_events = video._decode_events

    def events_with_an_error_at_the_second_keyframe(file, source, tracker, thread_type):
        yield from real_events(file, source, tracker, thread_type)
        keyframe_pts = sorted(pts for pts, _ in tracker.packets)[GROUP]
        yield video._Anomaly(GROUP - 2, 1, f"{source}: decoding failed after 10 frames (test)", pts=keyframe_pts)

    monkeypatch.setattr(video, "_decode_events", events_with_an_error_at_the_second_keyframe)
    damage = scan_damage(io.BytesIO(chunk), SOURCE)
    assert damage.bad == frozenset(range(GROUP, 2 * GROUP)), sorted(damage.bad)


def test_a_scan_of_a_file_cut_short_leaves_out_every_declared_frame_past_the_cut(chunk, tmp_path):
    # Index first, so the frames before the cut can be read; the index still declares all 40.
    data = remux(chunk, tmp_path)
    cut = data[: len(data) * 2 // 3]
    damage = scan_damage(io.BytesIO(cut), SOURCE)
    assert damage.num_frames == NUM_FRAMES
    first_lost = min(damage.bad)
    assert damage.bad == frozenset(range(first_lost, NUM_FRAMES)) and first_lost < NUM_FRAMES // 2 + GROUP
    # skip mode reads the rest without an error, and every frame it serves is the right one
    assert _barcodes(cut, damage) == {position: position for position in range(first_lost)}


def test_frames_the_decoder_held_when_reading_failed_are_served_and_checked(chunk, tmp_path):
    """A fragmented mp4 whose third fragment declares an absurd size for its second sample: reading
    fails there (FFmpeg cannot allocate the packet). The frames already read but still inside the
    decoder (B-frame delay) are drained from it, checked and served like any others."""
    data = remux(chunk, tmp_path, "frag_keyframe+empty_moov")
    trun = data.index(b"trun", data.index(b"moof", data.index(b"moof", data.index(b"moof") + 4) + 4)) - 4
    flags = struct.unpack(">I", data[trun + 8 : trun + 12])[0] & 0xFFFFFF
    assert flags & 0x200, "the fragment lists a size per sample"
    fields = sum(bool(flags & bit) for bit in (0x100, 0x200, 0x400, 0x800))
    first_entry = trun + 16 + 4 * bool(flags & 0x1) + 4 * bool(flags & 0x4)
    size_of_second = first_entry + 4 * fields + 4 * bool(flags & 0x100)
    damaged = data[:size_of_second] + b"\x2a" + data[size_of_second + 1 :]  # ~700 MB
    damage = scan_damage(io.BytesIO(damaged), SOURCE)
    assert any("reading failed" in problem for problem in damage.problems), damage.problems
    served = _barcodes(damaged, damage)
    assert all(barcode == position for position, barcode in served.items()), served
    assert sorted(served) == sorted(set(range(damage.num_frames)) - damage.bad)
    # the keyframe of the damaged fragment was read whole and decoded: it is served
    assert 2 * GROUP in served
