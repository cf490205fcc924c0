"""Fault 4: an mp4 with damaged bytes in the middle, and one cut short.

What FFmpeg's H.264 decoder really does with damage (PyAV 18 / FFmpeg 8, fabricated H.264 chunks):
it conceals. A damaged frame may come out flagged corrupt, or not at all — with no error and no
flag, so every later frame would silently take the lost one's place — or an error surfaces a few
packets later, while frames predicted from the damaged one come out unflagged but wrong. rat7m
matches every decoded frame to its packet by pts, so nothing is lost unseen:

- ``on_corrupt_video="error"`` (default): `VideoDecodeError` naming the file and the frame;
- ``on_corrupt_video="skip"``: the damaged group of pictures (keyframe to keyframe) is left out,
  counted in a `CorruptVideoWarning`, the log, ``builder.build_notes`` and the card's build notes.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil

import av
import numpy as np
import pytest
from helpers import decode_jpeg, raw_images, remux

import rat7m
from rat7m_builder import video
from rat7m_builder.errors import CorruptVideoWarning, SelectionError, VideoDecodeError
from rat7m_builder.hub import export_dataset
from rat7m_builder.notes import CORRUPT_VIDEO_HEADING
from rat7m_builder.sample import SampleSpec, read_barcode, write_sample
from rat7m_builder.video import iter_decoded_frames, scan_damage

from .support import incomplete_dirs, prepared_info_files

CHUNK = "s1-d1-camera3-0.mp4"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def long_chunks(tmp_path_factory):
    """s1-d1 only, one 38-frame chunk per camera: several groups of pictures per chunk."""
    return write_sample(
        str(tmp_path_factory.mktemp("long_chunks")), SampleSpec(recordings=("s1-d1",), chunk_frames=40, layout="flat")
    )


@pytest.fixture
def release(long_chunks, tmp_path):
    root = str(tmp_path / "release")
    shutil.copytree(long_chunks.root, root)
    return root


def packets(data: bytes) -> list[dict]:
    """The video packets of an mp4, in presentation order: position, byte offset, size, pts, keyframe."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        found = [
            {"pos": p.pos, "size": p.size, "pts": p.pts, "key": p.is_keyframe}
            for p in container.demux(stream)
            if p.size
        ]
    found.sort(key=lambda p: p["pts"])
    for position, packet in enumerate(found):
        packet["position"] = position
    return found


def gop_of(data: bytes, position: int) -> range:
    """The group of pictures (presentation order, keyframe to next keyframe) holding ``position``."""
    table = packets(data)
    keys = [p["position"] for p in table if p["key"]]
    first = max(k for k in keys if k <= position)
    stop = min([k for k in keys if k > position] or [len(table)])
    return range(first, stop)


def damage_slice(data: bytes, position: int, seed: int = 0) -> bytes:
    """Overwrite the slice data of frame ``position``'s packet (after length prefix and NAL header)."""
    packet = packets(data)[position]
    start, stop = packet["pos"] + 5, packet["pos"] + packet["size"]
    noise = np.random.default_rng(seed).integers(0, 256, stop - start, dtype=np.uint8).tobytes()
    return data[:start] + noise + data[stop:]


def set_byte(data: bytes, position: int, offset: int, value: int) -> bytes:
    packet = packets(data)[position]
    at = packet["pos"] + offset
    return data[:at] + bytes([value]) + data[at + 1 :]


def read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def write(path: str, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)


def plain_pyav(data: bytes, thread_type: str = video.DECODER_THREAD_TYPE) -> tuple[list[tuple[bool, int]], str | None]:
    """What a plain PyAV decode loop sees: (is_corrupt, barcode) per frame, and the error if one was raised."""
    frames, error = [], None
    try:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            stream.thread_type = thread_type
            for frame in container.decode(stream):
                frames.append((frame.is_corrupt, read_barcode(frame.to_ndarray(format="rgb24"))))
    except av.error.FFmpegError as caught:
        error = type(caught).__name__
    return frames, error


# -- what the decoder does, and what rat7m makes of it -------------------------------------------------


def test_one_damaged_byte_makes_ffmpeg_drop_a_frame_silently_and_rat7m_names_it(long_chunks):
    data = set_byte(read(os.path.join(long_chunks.root, CHUNK)), position=5, offset=6, value=0)
    # The evidence: no error, no flag, one frame fewer, and from frame 5 on every frame is the next one.
    frames, error = plain_pyav(data)
    assert error is None and not any(corrupt for corrupt, _ in frames)
    assert len(frames) == len(packets(data)) - 1 == 37
    barcodes = [barcode for _, barcode in frames]
    assert barcodes[:5] == [0, 1, 2, 3, 4] and barcodes[5] == 6  # a count-based reader would mislabel 32 frames
    # rat7m: the pts sequence has a hole at frame 5
    with pytest.raises(VideoDecodeError, match=rf"^{CHUNK}: frame 5 could not be decoded \(the decoder produced no"):
        for _ in iter_decoded_frames(io.BytesIO(data), CHUNK):
            pass


def test_damaged_last_packet_is_a_silently_short_video_to_ffmpeg_and_an_error_to_rat7m(long_chunks):
    data = read(os.path.join(long_chunks.root, CHUNK))
    with av.open(io.BytesIO(data)) as container:
        last = [p.pts for p in container.demux(container.streams.video[0]) if p.size][-1]
    position = next(p["position"] for p in packets(data) if p["pts"] == last)
    damaged = damage_slice(data, position)
    frames, error = plain_pyav(damaged, "AUTO")
    assert error is None and not any(corrupt for corrupt, _ in frames) and len(frames) < 38
    with pytest.raises(VideoDecodeError, match=rf"^{CHUNK}: frames? \d+(–37)? could not be decoded"):
        list(iter_decoded_frames(io.BytesIO(damaged), CHUNK))


@pytest.mark.parametrize("thread_type", sorted({video.DECODER_THREAD_TYPE, video.CHECKED_DECODER_THREAD_TYPE}))
@pytest.mark.parametrize("position", [5, 16, 20, 30])
def test_damaged_slice_data_is_an_error_naming_file_and_frame_on_every_run(long_chunks, position, thread_type):
    damaged = damage_slice(read(os.path.join(long_chunks.root, CHUNK)), position)
    for _ in range(3):  # the same answer every time
        with pytest.raises(VideoDecodeError) as error:
            for decoded, frame in iter_decoded_frames(io.BytesIO(damaged), CHUNK, thread_type=thread_type):
                assert read_barcode(frame.to_ndarray(format="rgb24")) == decoded  # what came out is right
        message = str(error.value)
        assert message.startswith(f"{CHUNK}: frame {position} could not be decoded"), message
        assert message.endswith("The file is corrupt or truncated: delete it and download it again.")


def test_the_configured_decoder_threading_detects_damage():
    """Slice threading hides most damage; frame threading can lose a damaged frame's corrupt flag (a
    race: see tests/faults/test_fault_fuzz.py). Every decode is single-threaded."""
    assert video.CHECKED_DECODER_THREAD_TYPE == "NONE"
    assert video.DECODER_THREAD_TYPE == video.CHECKED_DECODER_THREAD_TYPE


def test_a_file_cut_short_names_file_and_frame(long_chunks, tmp_path):
    data = read(os.path.join(long_chunks.root, CHUNK))
    # index (moov) at the end, as PyAV and most encoders write it: nothing can be read
    with pytest.raises(VideoDecodeError, match=rf"^{CHUNK}: cannot be opened as a video \(.*Invalid data"):
        list(iter_decoded_frames(io.BytesIO(data[: len(data) // 2]), CHUNK))
    # index first: the frames before the cut decode, then it says where the data ends
    indexed_first = remux(data, tmp_path)
    assert indexed_first[:64].find(b"moov") > 0
    with pytest.raises(VideoDecodeError) as error:
        list(iter_decoded_frames(io.BytesIO(indexed_first[: len(indexed_first) * 2 // 3]), CHUNK))
    assert re.match(
        rf"{CHUNK}: the file is cut short: its data ends inside frame data, after \d+ frames of the 38 it declares "
        r"\(frames? \d+",
        str(error.value),
    ), str(error.value)
    assert str(error.value).endswith("It is an incomplete copy or download: delete it and download it again.")


@pytest.mark.parametrize("position", [0, 12, 24, 36, 37])
def test_scan_marks_exactly_the_group_of_the_damaged_frame(long_chunks, position):
    """The first frame, keyframes and the last group too (off-by-ones at group edges stay hidden at 16)."""
    data = read(os.path.join(long_chunks.root, CHUNK))
    damage = scan_damage(io.BytesIO(damage_slice(data, position)), CHUNK)
    assert damage.bad == frozenset(gop_of(data, position)), (sorted(damage.bad), damage.problems)


def test_scan_finds_the_damaged_group_of_pictures_the_same_way_every_time(long_chunks):
    data = read(os.path.join(long_chunks.root, CHUNK))
    damaged = damage_slice(data, 16)
    scans = {scan_damage(io.BytesIO(damaged), CHUNK) for _ in range(4)}
    assert len(scans) == 1
    (damage,) = scans
    assert damage.bad == frozenset(gop_of(data, 16)) and 16 in damage.bad and damage.num_frames == 38
    assert any("frame 16 could not be decoded" in problem for problem in damage.problems)
    decoded = {
        position: read_barcode(frame.to_ndarray(format="rgb24"))
        for position, frame in iter_decoded_frames(
            io.BytesIO(damaged), CHUNK, skip=damage.bad, thread_type="NONE", expected_errors=damage.error_pts
        )
    }
    assert sorted(decoded) == sorted(set(range(38)) - damage.bad)
    assert all(barcode == position for position, barcode in decoded.items())
    # an intact file has no damage; an unreadable one is all damage
    assert scan_damage(io.BytesIO(data), CHUNK).bad == frozenset()
    unreadable = scan_damage(io.BytesIO(data[: len(data) // 2]), CHUNK)
    assert unreadable.bad is None and unreadable.affects(0) and "cannot be opened" in unreadable.problems[0]


# -- through the builder ------------------------------------------------------------------------------


def test_error_mode_fails_the_build_naming_file_and_frame(release, cache_dir):
    path = os.path.join(release, CHUNK)
    write(path, damage_slice(read(path), 16))
    with pytest.raises(VideoDecodeError, match=rf"^{re.escape(path)}: frame 16 could not be decoded"):
        rat7m.load_dataset("frames", data_dir=release, cache_dir=cache_dir, cameras=[3])
    assert prepared_info_files(cache_dir) == [] and incomplete_dirs(cache_dir) == []


def _skip_builder(config: str, data_dir: str, cache_dir: str, cameras: list[int]) -> rat7m.Rat7M:
    return rat7m.Rat7M(
        config_name=config, data_dir=data_dir, cache_dir=cache_dir, cameras=cameras, on_corrupt_video="skip"
    )


def _expected_rows(truth, camera: int, bad: range) -> tuple[list[int], list[int]]:
    """(samples kept, samples left out) when the frames ``bad`` of the camera's only chunk are left out."""
    frames = truth.frame_index[camera]
    kept = [t for t in range(len(frames)) if frames[t] not in bad]
    return kept, [t for t in range(len(frames)) if frames[t] in bad]


def test_skip_mode_leaves_out_the_damaged_group_and_counts_it_everywhere(
    release, long_chunks, cache_dir, tmp_path, caplog
):
    path = os.path.join(release, CHUNK)
    bad = gop_of(read(path), 16)
    write(path, damage_slice(read(path), 16))
    kept, left_out = _expected_rows(long_chunks.recordings["s1-d1"], 3, bad)
    distinct_frames = len({int(long_chunks.recordings["s1-d1"].frame_index[3][t]) for t in left_out})
    assert left_out and kept

    builder = _skip_builder("frames", release, cache_dir, [3])
    headline = f"{len(left_out)} examples left out: {distinct_frames} frames they need, in 1 damaged mp4 file(s)"
    with caplog.at_level(logging.WARNING), pytest.warns(CorruptVideoWarning, match=re.escape(headline)):
        rat7m.prepare(builder)
    # the log names the file, what was wrong, and how much is left out
    assert any(
        "s1-d1 camera 3" in r.message and f"{CHUNK}: frame 16 could not be decoded" in r.message for r in caplog.records
    )
    train = builder.as_dataset(split="train")
    assert train["sample_index"] == kept  # exactly the samples whose frame is outside the damaged group
    for row in raw_images(train):
        assert read_barcode(decode_jpeg(row["image"]["bytes"])) == row["frame_index"]
    notes = builder.build_notes[CORRUPT_VIDEO_HEADING]
    assert notes[0].startswith(headline)
    assert notes[1].startswith(f"{CHUNK}: frames {bad[0]}–{bad[-1]} left out — ")
    assert "frame 16 could not be decoded" in notes[1]

    # Loaded again from the cache: the same notes and the same warning (nothing generated again).
    again = _skip_builder("frames", release, cache_dir, [3])
    with pytest.warns(CorruptVideoWarning, match=re.escape(headline)):
        rat7m.prepare(again)
    assert again.build_notes[CORRUPT_VIDEO_HEADING] == notes
    assert again.as_dataset(split="train")["sample_index"] == kept

    # The Hub export prints them on the card.
    out = tmp_path / "hub"
    export_dataset(
        again.as_dataset(), "frames", out, card_body_path=os.path.join(REPO, "dataset_card.md"),
        build_notes=again.build_notes,
    )  # fmt: skip
    card = (out / "README.md").read_text()
    assert headline in card and f"{CHUNK}: frames {bad[0]}–{bad[-1]} left out" in card


def test_skip_mode_multiview_leaves_out_samples_with_any_damaged_view(release, long_chunks, cache_dir):
    path = os.path.join(release, CHUNK)
    bad = gop_of(read(path), 16)
    write(path, damage_slice(read(path), 16))
    kept, left_out = _expected_rows(long_chunks.recordings["s1-d1"], 3, bad)
    builder = _skip_builder("multiview", release, cache_dir, [1, 3])
    with pytest.warns(CorruptVideoWarning, match=f"^rat7m multiview: {len(left_out)} examples left out"):
        rat7m.prepare(builder)
    train = raw_images(builder.as_dataset(split="train"), "images")
    assert train["sample_index"] == kept
    for row in train:
        for image, frame in zip(row["images"], row["frame_index"], strict=True):
            assert read_barcode(decode_jpeg(image["bytes"])) == frame


def test_skip_mode_with_chunks_cut_short(release_copy, sample_release, cache_dir):
    """An unreadable chunk in the middle and an unreadable last chunk: all their frames are left out."""
    truth = sample_release.recordings["s1-d1"].frame_index[6]  # camera 6 reaches into the last chunk
    for name in ("s1-d1-camera6-8.mp4", "s1-d1-camera6-32.mp4"):
        path = os.path.join(release_copy, "video_sequences", name)
        write(path, read(path)[:300])
    expected_kept = [t for t in range(30) if not (8 <= truth[t] < 16 or truth[t] >= 32)]
    last = re.escape(os.path.join(release_copy, "video_sequences", "s1-d1-camera6-32.mp4"))
    with pytest.raises(VideoDecodeError, match=rf"^{last}: cannot be opened as a video"):
        rat7m.load_dataset("frames", data_dir=release_copy, cache_dir=cache_dir, cameras=[6])
    builder = _skip_builder("frames", release_copy, cache_dir, [6])
    with pytest.warns(CorruptVideoWarning, match=f"{30 - len(expected_kept)} examples left out"):
        rat7m.prepare(builder)
    assert builder.as_dataset(split="train")["sample_index"] == expected_kept
    lines = builder.build_notes[CORRUPT_VIDEO_HEADING]
    assert "s1-d1-camera6-8.mp4: frames 0–7 left out — cannot be opened as a video" in "\n".join(lines)
    assert "s1-d1-camera6-32.mp4: frames 0–2 left out — cannot be opened as a video" in "\n".join(lines)


def test_a_clean_skip_mode_build_has_no_notes_and_no_warning(sample_release, cache_dir, recwarn):
    builder = _skip_builder("frames", sample_release.root, cache_dir, [2])
    rat7m.prepare(builder)
    assert CORRUPT_VIDEO_HEADING not in builder.build_notes
    assert not [w for w in recwarn if issubclass(w.category, CorruptVideoWarning)]
    assert builder.as_dataset(split="train").num_rows == 30


def test_on_corrupt_video_is_validated(sample_release, cache_dir):
    with pytest.raises(SelectionError, match=r"on_corrupt_video must be one of error, skip, got 'ignore'"):
        rat7m.load_dataset("frames", data_dir=sample_release.root, cache_dir=cache_dir, on_corrupt_video="ignore")


def test_skip_mode_counts_what_parallel_workers_left_out(release, long_chunks, cache_dir):
    """With num_proc the shards run in worker processes: their notes still reach the builder."""
    path = os.path.join(release, CHUNK)
    bad = gop_of(read(path), 16)
    write(path, damage_slice(read(path), 16))
    kept, left_out = _expected_rows(long_chunks.recordings["s1-d1"], 3, bad)
    builder = _skip_builder("frames", release, cache_dir, [1, 3])
    with pytest.warns(CorruptVideoWarning, match=f"^rat7m frames: {len(left_out)} examples left out"):
        rat7m.prepare(builder, num_proc=2)
    train = builder.as_dataset(split="train")
    assert sorted(train.filter(lambda row: row["camera"] == 3)["sample_index"]) == kept
    assert train.num_rows == 30 + len(kept)
    assert builder.build_notes[CORRUPT_VIDEO_HEADING][1].startswith(f"{CHUNK}: frames {bad[0]}–{bad[-1]} left out")
