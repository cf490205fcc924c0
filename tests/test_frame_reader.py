"""`CameraFrames` (frames by global index: its cache, chunk lookup and errors), `CameraFrames.iter_jpegs`
(JPEG encoding in a thread pool, also from the moment sibling jobs leave cores idle) and `frame_tables`
(``frames`` as Arrow tables).

The last two are speed paths (BENCHMARKS.md); what they must never change is the output: the same JPEG
bytes, rows, order and Arrow batches as the plain per-frame, per-example path.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import os
import threading

import av
import numpy as np
import pyarrow as pa
import pytest
from helpers import assert_same_table, decode_jpeg

import rat7m
from rat7m_builder import video
from rat7m_builder.errors import FrameSizeError, VideoDecodeError
from rat7m_builder.examples import (
    FRAME_TABLE_ROWS,
    Selection,
    _binary_array,
    frame_tables,
    generate_shard,
    plan_shards,
)
from rat7m_builder.features import frames_features
from rat7m_builder.jobs import SiblingJobs
from rat7m_builder.sample import SampleSpec, draw_barcode, read_barcode, write_sample
from rat7m_builder.sources import FileRef, VideoChunk, scan_local
from rat7m_builder.video import CameraFrames, FrameSize


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory):
    """One recording, 260 samples over chunks of 120 frames: frames shards of 100+ rows."""
    spec = SampleSpec(recordings=("s1-d1",), num_samples=260, chunk_frames=120, layout="flat")
    return write_sample(str(tmp_path_factory.mktemp("long_recording")), spec)


def _reader(release, camera: int = 2) -> CameraFrames:
    chunks = scan_local(release.root).chunks("s1-d1", camera)
    return CameraFrames(chunks, 90, f"s1-d1 camera {camera}")


# in order, a repeat, across a chunk boundary, a jump back within a chunk (reopened), back to the first
REQUESTS = [0, 1, 1, 5, 118, 119, 120, 121, 121, 200, 150, 7, 8, 130]


def test_a_frame_just_passed_and_no_longer_cached_is_decoded_again(long_recording):
    with _reader(long_recording) as reader:
        first = reader.get(5)
        reader._cache.clear()  # as after more than `_CACHE_SIZE` other frames
        again = reader.get(5)
        assert reader.reopened == 1
    assert again == first and read_barcode(decode_jpeg(again)) == 5


def test_frames_decoded_after_a_late_reported_error_are_not_handed_out(long_recording, monkeypatch):
    """A decode error is reported a few packets late: nothing decoded after it may be served as intact."""
    real_events = video._decode_events

    def events_with_a_late_error(file, source, tracker, thread_type):
        for count, event in enumerate(real_events(file, source, tracker, thread_type)):
            if count == 1:
                yield video._Anomaly(1, 1, f"{source}: decoding failed after 1 frames (test)", pts=5)
            yield event

    monkeypatch.setattr(video, "_decode_events", events_with_a_late_error)
    with _reader(long_recording) as reader:
        assert read_barcode(decode_jpeg(reader.get(0))) == 0
        with pytest.raises(video.VideoDecodeError, match=r"decoding failed after 1 frames \(test\)"):
            reader.get(1)


def test_a_frame_asked_again_while_among_the_eight_last_used_is_not_decoded_again(long_recording):
    # Two samples may share a frame, and a camera's frame list need not be monotonic: a repeat must
    # come from the cache (least recently used out), as a miss reopens the chunk and decodes it again.
    requests = [0]
    for frame in range(1, 13):
        requests += [frame, 0]  # frame 0 stays among the most recently used while 12 others pass
    requests.append(12)  # and the newest frame, asked again
    with _reader(long_recording) as reader:
        jpegs = [reader.get(frame) for frame in requests]
        assert reader.reopened == 0
    assert [read_barcode(decode_jpeg(jpeg)) for jpeg in jpegs] == requests


def test_a_frame_before_the_first_chunk_present_is_refused_naming_that_chunk(long_recording):
    chunks = scan_local(long_recording.root).chunks("s1-d1", 2)[1:]  # frames 0–119 missing
    with CameraFrames(chunks, 90, "s1-d1 camera 2") as reader:
        with pytest.raises(
            VideoDecodeError, match=r"^s1-d1 camera 2: frame 5 is before the first chunk \(.*s1-d1-camera2-120\.mp4\)"
        ):
            reader.get(5)
        assert read_barcode(decode_jpeg(reader.get(120))) == 120


def test_a_frame_past_the_end_of_its_chunk_names_the_next_chunk_present(long_recording):
    chunks = scan_local(long_recording.root).chunks("s1-d1", 2)
    assert [chunk.start for chunk in chunks] == [0, 120, 240]
    with CameraFrames([chunks[0], chunks[2]], 90, "s1-d1 camera 2") as reader:  # the middle chunk missing
        with pytest.raises(VideoDecodeError) as raised:
            reader.get(130)
    message = str(raised.value)
    assert "s1-d1-camera2-0.mp4: the motion capture asks for global frame 130 (position 130" in message
    assert "the video ends after 120 frames" in message
    assert "The next chunk present is " in message and "s1-d1-camera2-240.mp4: a chunk in between is missing" in message


def test_frames_of_another_height_are_refused_like_frames_of_another_width(long_recording):
    planned = FrameSize(320, 240, "s1-d1-camera2-240.mp4")  # as if planning had probed a 320×240 chunk
    chunks = scan_local(long_recording.root).chunks("s1-d1", 2)
    with CameraFrames(chunks, 90, "s1-d1 camera 2", frame_size=planned) as reader:
        with pytest.raises(FrameSizeError) as raised:
            reader.get(0)
    assert (
        "s1-d1-camera2-0.mp4: its frames are 320×256 pixels, but s1-d1-camera2-240.mp4, another chunk of "
        "s1-d1 camera 2, has 320×240 frames" in str(raised.value)
    )


def _segment(first: int, count: int, width: int) -> bytes:
    """An mp4 of barcoded frames ``first``… with their parameter sets in every keyframe (as a stream
    that changes resolution carries them), 256 pixels high."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, 256, "yuv420p"
        stream.options = {"g": "4", "x264-params": "repeat-headers=1"}
        for value in range(first, first + count):
            image = np.zeros((256, width, 3), np.uint8)
            draw_barcode(image, value)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def test_a_frame_size_change_inside_a_chunk_names_the_first_odd_frame(tmp_path):
    """8 frames of 320×256, then 8 of 352×256 in the same mp4 (the decoder follows the new parameter sets)."""
    path = tmp_path / "s1-d1-camera1-0.mp4"
    with av.open(io.BytesIO(_segment(0, 8, 320))) as first, av.open(io.BytesIO(_segment(8, 8, 352))) as second:
        with av.open(str(path), "w", format="mp4") as out:
            stream = out.add_stream_from_template(first.streams.video[0])
            head = [packet for packet in first.demux(first.streams.video[0]) if packet.dts is not None]
            tail = [packet for packet in second.demux(second.streams.video[0]) if packet.dts is not None]
            step = head[1].dts - head[0].dts  # the second segment follows the first, one frame later
            shift = max(max(p.pts for p in head) - min(p.pts for p in tail), head[-1].dts - tail[0].dts) + step
            for packet in tail:
                packet.pts, packet.dts = packet.pts + shift, packet.dts + shift
            for packet in head + tail:
                packet.stream = stream
                out.mux(packet)
    chunk = VideoChunk(0, FileRef(path.name, str(path)))
    with CameraFrames([chunk], 90, "s1-d1 camera 1") as reader:
        assert [read_barcode(decode_jpeg(reader.get(frame))) for frame in range(8)] == list(range(8))
        with pytest.raises(FrameSizeError) as raised:
            reader.get(8)
    assert "s1-d1-camera1-0.mp4: its frame 8 is 352×256 pixels, but its earlier frames are 320×256" in str(raised.value)


@pytest.mark.parametrize("threads", [2, 3])
def test_threaded_encoding_gives_the_bytes_get_gives(long_recording, threads):
    with _reader(long_recording) as reader:
        expected = [reader.get(frame) for frame in REQUESTS]
    with _reader(long_recording) as reader:
        threaded = list(reader.iter_jpegs(REQUESTS, encode_threads=threads))
        assert reader.reopened == 1  # 150 after 200
    assert threaded == expected
    assert [read_barcode(decode_jpeg(jpeg)) for jpeg in threaded] == REQUESTS


def test_a_threaded_iteration_left_early_leaves_the_reader_usable(long_recording):
    with _reader(long_recording) as reader:
        first = list(itertools.islice(reader.iter_jpegs(range(60), encode_threads=2), 3))
        assert [read_barcode(decode_jpeg(jpeg)) for jpeg in first] == [0, 1, 2]
        # frames that were in flight when the iteration was dropped are served again, correctly
        again = [reader.get(frame) for frame in (3, 4, 5, 40)]
    assert [read_barcode(decode_jpeg(jpeg)) for jpeg in again] == [3, 4, 5, 40]


def test_encodings_cancelled_when_a_threaded_iteration_is_left_are_done_again_when_asked(long_recording, monkeypatch):
    """Frames still queued for the pool when the iteration is dropped are cancelled: asking for them
    later must decode and encode them anew, not hand out the cancelled result."""
    encode, calls, release = video.encode_jpeg, itertools.count(), threading.Event()

    def held_after_three(frame, quality):  # the pool threads get stuck from frame 3 on: the last ones stay queued
        if next(calls) >= 3:
            release.wait(30)  # (a bound only: released at the pool's shutdown)
        return encode(frame, quality)

    class ReleasedAtShutdown(video.ThreadPoolExecutor):
        def shutdown(self, *args, **kwargs):  # after the iteration's clean-up: let the stuck frames finish
            release.set()
            super().shutdown(*args, **kwargs)

    monkeypatch.setattr(video, "encode_jpeg", held_after_three)
    monkeypatch.setattr(video, "ThreadPoolExecutor", ReleasedAtShutdown)
    with _reader(long_recording) as reader:
        jpegs = reader.iter_jpegs(range(60), encode_threads=2)
        assert [read_barcode(decode_jpeg(jpeg)) for jpeg in itertools.islice(jpegs, 3)] == [0, 1, 2]
        jpegs.close()
        assert next(calls) < 7  # of the 7 frames handed to the pool, some were cancelled in its queue
        again = [reader.get(frame) for frame in (3, 4, 5, 6)]
    assert [read_barcode(decode_jpeg(jpeg)) for jpeg in again] == [3, 4, 5, 6]


class _EncodingThreads:
    """Wraps `video.encode_jpeg`: the name of the thread each frame was encoded in, in encoding order."""

    def __init__(self, monkeypatch):
        self.names: list[str] = []
        encode = video.encode_jpeg

        def recording(frame, quality):
            jpeg = encode(frame, quality)
            self.names.append(threading.current_thread().name)
            return jpeg

        monkeypatch.setattr(video, "encode_jpeg", recording)


def test_encoding_moves_to_a_pool_when_sibling_jobs_leave_cores_spare(long_recording, monkeypatch):
    frames = list(range(0, 119)) + list(range(121, 200))  # across a chunk boundary, a gap
    with _reader(long_recording) as reader:
        expected = [reader.get(frame) for frame in frames]
    answers = iter([0, 0, 0, 1])  # the 4th question (after 32 frames): one core spare
    asked = []

    def spare_threads() -> int:
        asked.append(len(asked))
        return next(answers)

    threads = _EncodingThreads(monkeypatch)
    with _reader(long_recording) as reader:
        jpegs = list(reader.iter_jpegs(frames, encode_threads=1, spare_threads=spare_threads))
    assert jpegs == expected
    assert [read_barcode(decode_jpeg(jpeg)) for jpeg in jpegs] == frames
    assert len(asked) == 4  # asked every SPARE_CHECK_FRAMES frames until the first yes, never after
    assert video.SPARE_CHECK_FRAMES == 8
    main = threading.current_thread().name
    assert threads.names[:32] == [main] * 32
    assert len(threads.names) == len(frames)
    assert all(name.startswith("rat7m-jpeg") for name in threads.names[32:])


def test_without_spare_cores_every_frame_is_encoded_in_the_calling_thread(long_recording, monkeypatch):
    threads = _EncodingThreads(monkeypatch)
    with _reader(long_recording) as reader:
        jpegs = list(reader.iter_jpegs(range(100), encode_threads=1, spare_threads=lambda: 0))
    assert [read_barcode(decode_jpeg(jpeg)) for jpeg in jpegs] == list(range(100))
    assert set(threads.names) == {threading.current_thread().name}


def test_sibling_jobs_share_the_cores_of_finished_jobs(tmp_path):
    jobs = SiblingJobs(str(tmp_path / "jobs"), num_jobs=4)
    assert jobs.spare_threads() == 0  # no folder (not made yet, or already removed): nothing spare
    os.mkdir(jobs.directory)
    assert (jobs.finished(), jobs.spare_threads()) == (0, 0)
    jobs.finish(2)
    assert (jobs.finished(), jobs.spare_threads()) == (1, 0)  # a third of a core each: no thread
    jobs.finish(0)
    assert (jobs.finished(), jobs.spare_threads()) == (2, 1)
    jobs.finish(0)  # told twice: still one job
    jobs.finish(3)
    assert (jobs.finished(), jobs.spare_threads()) == (3, 3)
    jobs.finish(1)
    assert jobs.spare_threads() == 0  # nobody left to use them
    pair = SiblingJobs(str(tmp_path / "pair"), num_jobs=2)
    os.mkdir(pair.directory)
    pair.finish(1)
    assert pair.spare_threads() == 1


def test_frame_tables_of_a_job_whose_sibling_is_done_are_the_same(long_recording, tmp_path, monkeypatch):
    features = frames_features()
    shards, selection = _shards(long_recording)
    jobs = SiblingJobs(str(tmp_path / "jobs"), num_jobs=2)
    os.mkdir(jobs.directory)
    jobs.finish(1)
    boosted = dataclasses.replace(selection, encode_threads=1, sibling_jobs=jobs)
    threads = _EncodingThreads(monkeypatch)
    for shard in shards[:2]:
        expected = pa.concat_tables(frame_tables(shard, selection, features))
        assert_same_table(pa.concat_tables(frame_tables(shard, boosted, features)), expected)
    assert any(name.startswith("rat7m-jpeg") for name in threads.names)


def test_a_num_proc_prepare_tells_each_job_when_the_others_are_done(long_recording, tmp_path, monkeypatch):
    """Every job leaves its mark when it is done (each then had the others' marks to go by); the
    folder is removed after the split, and the output is the single-process one."""
    made, marks = [], tmp_path / "marks"
    marks.mkdir()
    mkdtemp = rat7m.tempfile.mkdtemp

    def recording_mkdtemp(*args, **kwargs):
        made.append(mkdtemp(*args, **kwargs))
        return made[-1]

    finish = SiblingJobs.finish

    def recording_finish(self, job_id):  # runs in the job's (forked) process
        (marks / f"{job_id}-of-{self.num_jobs}").touch()
        finish(self, job_id)

    monkeypatch.setattr(rat7m.tempfile, "mkdtemp", recording_mkdtemp)
    monkeypatch.setattr(SiblingJobs, "finish", recording_finish)
    two = rat7m.load_dataset("frames", "train", data_dir=long_recording.root, cache_dir=str(tmp_path / "2"), num_proc=2)
    one = rat7m.load_dataset("frames", "train", data_dir=long_recording.root, cache_dir=str(tmp_path / "1"))
    assert sorted(os.listdir(marks)) == ["0-of-2", "1-of-2"]
    assert len(made) == 1 and not os.path.exists(made[0])
    assert_same_table(two.data.table, one.data.table)


def test_without_a_temporary_folder_a_num_proc_prepare_runs_without_sharing(long_recording, tmp_path, monkeypatch):
    mkdtemp = rat7m.tempfile.mkdtemp

    def no_folder(*args, prefix=None, **kwargs):  # only ours: multiprocess makes its own folders
        if prefix == "rat7m-jobs-":
            raise PermissionError(13, "Permission denied", "/tmp/rat7m-jobs-x")
        return mkdtemp(*args, prefix=prefix, **kwargs)

    finish = SiblingJobs.finish
    marks = tmp_path / "marks"
    marks.mkdir()

    def recording_finish(self, job_id):
        (marks / str(job_id)).touch()
        finish(self, job_id)

    monkeypatch.setattr(rat7m.tempfile, "mkdtemp", no_folder)
    monkeypatch.setattr(SiblingJobs, "finish", recording_finish)
    two = rat7m.load_dataset("frames", "train", data_dir=long_recording.root, cache_dir=str(tmp_path / "2"), num_proc=2)
    assert two.num_rows == 260 * 6
    assert not any(marks.iterdir())  # no SiblingJobs at all: speed only, never a failed prepare


def test_a_one_shard_split_with_num_proc_keeps_the_one_process_threading(tmp_path, monkeypatch):
    """`datasets` runs a one-shard split in the calling process whatever ``num_proc``: it keeps the
    encode pool, not the settings meant for one process among several."""
    spec = SampleSpec(recordings=("s1-d1",), num_samples=20, chunk_frames=64, layout="flat")
    release = write_sample(str(tmp_path / "release"), spec)
    seen = []
    tables = rat7m.frame_tables

    def recording_tables(shard, selection, *args, **kwargs):
        seen.append((selection.encode_threads, selection.sibling_jobs))
        return tables(shard, selection, *args, **kwargs)

    monkeypatch.setattr(rat7m, "frame_tables", recording_tables)
    one_shard = rat7m.load_dataset(
        "frames", "train", data_dir=release.root, cache_dir=str(tmp_path / "c"), cameras=[2], num_proc=2
    )
    assert one_shard.num_rows == 20
    assert seen == [(2, None)]


def _shards(release, config: str = "frames"):
    index = scan_local(release.root)
    selection = Selection(recordings=("s1-d1",), cameras=(1, 2, 3, 4, 5, 6))
    return plan_shards(config, selection, index)["train"], selection


def test_frame_tables_hold_the_examples_in_batches_of_the_image_writer_size(long_recording):
    features = frames_features()
    shards, selection = _shards(long_recording)
    sizes = []
    for shard in shards:
        tables = list(frame_tables(shard, selection, features))
        sizes.append([table.num_rows for table in tables])
        expected = pa.Table.from_pylist(
            [features.encode_example(example) for example in generate_shard(shard, selection)],
            schema=features.arrow_schema,
        )
        assert_same_table(pa.concat_tables(tables), expected)
        assert all(table.schema == features.arrow_schema for table in tables)
    # camera 1 (offset 0): 120 + 120 + 20 frames; every table but a chunk's last is full
    assert sizes[:3] == [[FRAME_TABLE_ROWS, 20], [FRAME_TABLE_ROWS, 20], [20]]
    assert FRAME_TABLE_ROWS == 100  # datasets' record batch size for image columns


def test_prepared_frames_have_the_batches_and_rows_of_the_examples(long_recording, tmp_path):
    features = frames_features()
    shards, selection = _shards(long_recording)
    expected = pa.Table.from_pylist(
        [features.encode_example(example) for shard in shards for example in generate_shard(shard, selection)],
        schema=features.arrow_schema,
    )
    for num_proc in (None, 2):
        cache = str(tmp_path / f"cache-{num_proc}")
        prepared = rat7m.load_dataset(
            "frames", "train", data_dir=long_recording.root, cache_dir=cache, num_proc=num_proc
        )
        assert prepared.num_rows == 260 * 6
        assert_same_table(prepared.data.table, expected)
        batch_rows = [batch.num_rows for batch in prepared.data.to_batches()]
        assert max(batch_rows) == FRAME_TABLE_ROWS and sum(batch_rows) == 260 * 6


@pytest.mark.parametrize("lengths", [[], [0], [3, 0, 5], [245_000, 251_331, 1]])
def test_binary_array_is_pyarrows_array_of_the_same_bytes(lengths):
    rng = np.random.default_rng(len(lengths))
    values = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in lengths]
    array = _binary_array(values)
    array.validate(full=True)
    assert array.type == pa.binary() and array.null_count == 0
    assert array.equals(pa.array(values, pa.binary()))
    assert array.to_pylist() == values


def test_binary_array_refuses_more_than_its_32_bit_offsets_hold():
    class Huge(bytes):
        def __len__(self):  # only the length is looked at before the refusal: no 2 GiB allocation
            return 2**30

    with pytest.raises(ValueError, match="do not fit one Arrow binary array"):
        _binary_array([Huge(), Huge()])
