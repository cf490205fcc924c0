"""`CameraFrames.iter_jpegs` (JPEG encoding in a thread pool) and `frame_tables` (``frames`` as Arrow tables).

Both are speed paths (BENCHMARKS.md); what they must never change is the output: the same JPEG
bytes, rows, order and Arrow batches as the plain per-frame, per-example path.
"""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest
from helpers import assert_same_table, decode_jpeg

import rat7m
from rat7m_builder.examples import (
    FRAME_TABLE_ROWS,
    Selection,
    _binary_array,
    frame_tables,
    generate_shard,
    plan_shards,
)
from rat7m_builder.features import frames_features
from rat7m_builder.sample import SampleSpec, read_barcode, write_sample
from rat7m_builder.sources import scan_local
from rat7m_builder.video import CameraFrames


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
