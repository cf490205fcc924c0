"""Streaming (`load_dataset(..., streaming=True)`) from a local data_dir and from the figshare stand-in.

Proves: streamed rows equal prepared rows for every config; shards are the `gen_kwargs` units, so
DataLoader workers and `split_dataset_by_node` see each example once; shuffle and state_dict resume
work; torch/numpy formats; remote mp4s are read with HTTP Range requests (not fetched whole before
the first example) moving at most 1.3× their bytes; dropped connections are retried; and the
training example runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter

import datasets
import numpy as np
import pytest
import torch
from datasets.distributed import split_dataset_by_node
from helpers import assert_same_rows, decode_jpeg
from standins.figshare import FigshareStandIn, figshare  # noqa: F401 - fixture

import rat7m
from rat7m_builder import sources
from rat7m_builder.examples import load_mocap
from rat7m_builder.manifest import MOCAP_ARTICLE, VIDEO_ARTICLES, parse_video_name
from rat7m_builder.sample import SampleSpec, read_barcode, write_sample

CONFIGS = ("mocap", "cameras", "frames", "multiview", "videos")
SPLITS = ("train", "test")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Block sizes for the byte-economy tests: the fabricated chunks (~90 KB) are far smaller than real
#: ones (~150 MB), so the blocks shrink with them; each chunk then takes several Range requests.
SMALL_BLOCKS = {"REMOTE_BLOCK_SIZE": 32 * 1024, "REMOTE_FIRST_BLOCK_SIZE": 8 * 1024}
#: At most this many bytes served per byte of the video files read.
MAX_BYTES_RATIO = 1.3


# -- helpers -----------------------------------------------------------------------------------------


def _raw(dataset, config: str):
    """Image/video columns left as stored bytes, so rows compare byte for byte."""
    if config == "frames":
        return dataset.cast_column("image", datasets.Image(decode=False))
    if config == "multiview":
        return dataset.cast_column("images", datasets.List(datasets.Image(decode=False)))
    if config == "videos":
        return dataset.cast_column("video", datasets.Video(decode=False))
    return dataset


def _types(row: dict) -> dict:
    """Each column's dtype (arrays) or type (anything else), and for lists their first element's."""
    return {
        name: (getattr(value, "dtype", type(value)), type(value[0]) if isinstance(value, list) and value else None)
        for name, value in row.items()
    }


def _keys(rows) -> list[tuple]:
    return [(row["recording"], row.get("camera"), int(row["sample_index"])) for row in rows]


def _stream(config: str, cache: str, split: str | None = "train", **kwargs):
    return rat7m.load_dataset(config, split=split, streaming=True, cache_dir=cache, **kwargs)


def _prepared_shards(builder: rat7m.Rat7M) -> dict[str, int]:
    """Number of `gen_kwargs` units per split, as preparation splits the work."""
    generators = builder._split_generators(datasets.DownloadManager(dataset_name="rat7m"))
    return {generator.name: len(generator.gen_kwargs["shards"]) for generator in generators}


def serve_release(standin: FigshareStandIn, root: str) -> dict[str, int]:
    """Put every file of a fabricated release into the stand-in's articles; returns name → size."""
    sizes = {}
    for folder, _, files in os.walk(root):
        for name in sorted(files):
            with open(os.path.join(folder, name), "rb") as file:
                data = file.read()
            video = parse_video_name(name)
            article = VIDEO_ARTICLES[video.recording] if video else MOCAP_ARTICLE
            standin.add_file(*article, name, data)
            sizes[name] = len(data)
    return sizes


def served_bytes(standin: FigshareStandIn) -> Counter:
    """Body bytes the stand-in sent per file name (storage GETs)."""
    sent: Counter = Counter()
    for request in standin.downloads():
        if request.path.startswith("/storage/"):
            sent[standin.files[int(request.path.rsplit("/", 1)[1])].name] += request.bytes_sent
    return sent


def byte_ratio(standin: FigshareStandIn, sizes: dict[str, int], suffix: str) -> tuple[float, int, int]:
    """(bytes served / size of the files read, bytes served, their size) for files ending in ``suffix``."""
    sent = {name: count for name, count in served_bytes(standin).items() if name.endswith(suffix)}
    size = sum(sizes[name] for name in sent)
    return sum(sent.values()) / size, sum(sent.values()), size


@pytest.fixture(scope="module")
def prepared(sample_release, tmp_path_factory):
    """config → (DatasetDict, shards per split) prepared from the local sample, built once per module."""
    built: dict = {}

    def get(config: str):
        if config not in built:
            cache = str(tmp_path_factory.mktemp(f"prepared_{config}"))
            builder = rat7m.Rat7M(config_name=config, data_dir=sample_release.root, cache_dir=cache)
            rat7m.prepare(builder)
            built[config] = ({split: builder.as_dataset(split=split) for split in SPLITS}, _prepared_shards(builder))
        return built[config]

    return get


@pytest.fixture(scope="module")
def long_release(tmp_path_factory):
    """One recording whose chunks span many small Range blocks (120 frames, ~90 KB per chunk)."""
    spec = SampleSpec(recordings=("s1-d1",), num_samples=240, chunk_frames=120, layout="flat")
    return write_sample(str(tmp_path_factory.mktemp("long_release")), spec)


@pytest.fixture
def small_blocks(monkeypatch):
    for name, value in SMALL_BLOCKS.items():
        monkeypatch.setattr(sources, name, value)


# -- rows ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS)
def test_streamed_rows_equal_prepared_rows_local(config, prepared, sample_release, cache_dir):
    expected, shards = prepared(config)
    streamed = _stream(config, cache_dir, split=None, data_dir=sample_release.root)
    assert set(streamed) == set(SPLITS)
    for split in SPLITS:
        assert isinstance(streamed[split], datasets.IterableDataset)
        assert streamed[split].features == expected[split].features
        assert streamed[split].num_shards == shards[split]  # one shard per gen_kwargs unit
        rows = list(_raw(streamed[split], config))
        assert list(rows[0]) == expected[split].column_names
        assert_same_rows(rows, _raw(expected[split], config))
        # typed as prepared rows: the same Python types, and the same dtypes under with_format("numpy")
        assert _types(next(iter(streamed[split]))) == _types(expected[split][0])
        numpy_row = next(iter(streamed[split].with_format("numpy")))
        assert _types(numpy_row) == _types(expected[split].with_format("numpy")[0])
    assert not [f for _, _, files in os.walk(cache_dir) for f in files if f.endswith((".mp4", ".mat", ".arrow"))]


@pytest.mark.parametrize("config", CONFIGS)
def test_streamed_rows_equal_prepared_rows_from_figshare(config, figshare, sample_release, tmp_path):  # noqa: F811
    sizes = serve_release(figshare, sample_release.root)
    recordings = list(sample_release.spec.recordings)
    prepared_cache, streamed_cache = str(tmp_path / "prepared"), str(tmp_path / "streamed")
    builder = rat7m.Rat7M(config_name=config, cache_dir=prepared_cache, recordings=recordings)
    rat7m.prepare(builder)
    shards = _prepared_shards(builder)
    figshare.clear_log()

    streamed = _stream(config, streamed_cache, split=None, recordings=recordings)
    for split in SPLITS:
        assert streamed[split].num_shards == shards[split]
        assert_same_rows(_raw(streamed[split], config), _raw(builder.as_dataset(split=split), config))
    # Nothing downloaded whole: every file byte came through a Range request, none landed on disk.
    assert figshare.downloads() and all(request.range for request in figshare.downloads())
    assert not [f for _, _, files in os.walk(streamed_cache) for f in files if f.endswith((".mp4", ".mat"))]
    mat_ratio, *_ = byte_ratio(figshare, sizes, ".mat")
    assert mat_ratio <= MAX_BYTES_RATIO  # each .mat read once (plan and examples share the parse)
    if config in ("frames", "videos"):
        assert byte_ratio(figshare, sizes, ".mp4")[0] <= MAX_BYTES_RATIO


# -- sharding, shuffling, resuming, formats ---------------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "figshare"])
def test_two_dataloader_workers_see_each_example_once(where, request, sample_release, prepared, cache_dir):
    kwargs = {"data_dir": sample_release.root}
    if where == "figshare":
        serve_release(request.getfixturevalue("figshare"), sample_release.root)
        kwargs = {"recordings": list(sample_release.spec.recordings)}
    expected = _keys(prepared("frames")[0]["train"])
    stream = _stream("frames", cache_dir, **kwargs).select_columns(["recording", "camera", "sample_index"])
    assert stream.num_shards == 30  # 6 cameras × 5 chunks: more than enough for 2 workers

    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    seen = [(row["recording"], int(row["camera"]), int(row["sample_index"])) for row in loader]
    assert len(seen) == len(set(seen)) == len(expected)
    assert sorted(seen) == sorted(expected)


@pytest.mark.parametrize("world_size", [2, 4, 7])  # 2 divides the 30 shards; 4 and 7 split by example
def test_split_dataset_by_node_has_no_duplicates_or_gaps(world_size, sample_release, prepared, cache_dir):
    stream = _stream("frames", cache_dir, data_dir=sample_release.root).select_columns(
        ["recording", "camera", "sample_index"]
    )
    parts = [_keys(split_dataset_by_node(stream, rank=rank, world_size=world_size)) for rank in range(world_size)]
    everything = [key for part in parts for key in part]
    assert len(everything) == len(set(everything))
    assert sorted(everything) == sorted(_keys(prepared("frames")[0]["train"]))
    assert min(map(len, parts)) > 0


def test_shuffle_is_a_seeded_permutation(sample_release, prepared, cache_dir):
    stream = _stream("frames", cache_dir, data_dir=sample_release.root).select_columns(
        ["recording", "camera", "sample_index"]
    )
    ordered = _keys(stream)
    first = _keys(stream.shuffle(seed=3, buffer_size=50))
    assert sorted(first) == sorted(ordered) == sorted(_keys(prepared("frames")[0]["train"]))
    assert first != ordered
    assert _keys(stream.shuffle(seed=3, buffer_size=50)) == first
    assert _keys(stream.shuffle(seed=4, buffer_size=50)) != first


@pytest.mark.parametrize("config", ["frames", "multiview"])
@pytest.mark.parametrize("stop_after", [1, 17, 29])  # multiview/train has 30 rows in 4 shards
def test_state_dict_resume_continues_without_repeats(config, stop_after, sample_release, cache_dir):
    def stream():
        return _raw(_stream(config, cache_dir, data_dir=sample_release.root), config)

    full = list(stream())
    first = stream()
    iterator = iter(first)
    head = [next(iterator) for _ in range(stop_after)]
    state = first.state_dict()

    resumed = stream()
    resumed.load_state_dict(state)
    tail = list(resumed)
    assert len(head) + len(tail) == len(full)
    assert_same_rows(head + tail, full)


def test_torch_and_numpy_formats_give_tensors_and_arrays(sample_release, cache_dir):
    spec = sample_release.spec
    frames = _stream("frames", cache_dir, data_dir=sample_release.root)
    row = next(iter(frames.with_format("torch")))
    assert row["image"].dtype == torch.uint8 and row["image"].shape == (3, spec.height, spec.width)
    assert row["keypoints_2d"].dtype == torch.float32 and row["keypoints_2d"].shape == (20, 2)
    assert row["keypoints_3d"].shape == (20, 3) and row["intrinsic_matrix"].shape == (3, 3)
    all_nan = next(r for r in frames.with_format("torch") if r["sample_index"] == 17)  # the all-NaN sample
    assert torch.isnan(all_nan["keypoints_2d"]).all()

    row = next(iter(frames.with_format("numpy")))
    assert isinstance(row["image"], np.ndarray) and row["image"].shape == (spec.height, spec.width, 3)
    assert read_barcode(row["image"]) == row["frame_index"]
    assert row["keypoints_2d"].dtype == np.float32 and row["keypoints_2d"].shape == (20, 2)

    multiview = _stream("multiview", cache_dir, data_dir=sample_release.root, cameras=[1, 3])
    row = next(iter(multiview.with_format("torch")))
    assert row["images"].shape == (2, 3, spec.height, spec.width) and row["images"].dtype == torch.uint8
    assert row["keypoints_2d"].shape == (2, 20, 2)
    row = next(iter(multiview.with_format("numpy")))
    assert row["images"].shape == (2, spec.height, spec.width, 3) and row["keypoints_2d"].shape == (2, 20, 2)


# -- remote reads -----------------------------------------------------------------------------------------


def test_remote_mp4_is_read_with_range_requests_and_bytes_stay_within_limit(
    figshare,  # noqa: F811
    long_release,
    small_blocks,
    tmp_path,
    capsys,
):
    sizes = serve_release(figshare, long_release.root)
    started = time.perf_counter()
    stream = _stream("frames", str(tmp_path / "cache"), recordings=["s1-d1"], cameras=[1, 2])
    iterator = iter(_raw(stream, "frames"))
    first = next(iterator)
    to_first = time.perf_counter() - started

    # Before the first example: the first chunk is being read by Range requests, not fetched whole.
    name = "s1-d1-camera1-0.mp4"
    assert (first["camera"], first["frame_index"]) == (1, 0)
    assert read_barcode(decode_jpeg(first["image"]["bytes"])) == 0
    requests = figshare.requests_for(name)
    assert requests and all(request.range and request.status == 206 for request in requests)
    before_first = sum(request.bytes_sent for request in requests)
    assert before_first < 0.6 * sizes[name]

    rows = [first, *iterator]
    assert len(rows) == 2 * long_release.spec.num_samples
    assert len(figshare.requests_for(name)) > 2  # several Range requests per chunk
    assert all(request.range for request in figshare.downloads())
    mp4_ratio, mp4_sent, mp4_size = byte_ratio(figshare, sizes, ".mp4")
    mat_ratio, *_ = byte_ratio(figshare, sizes, ".mat")
    assert mp4_ratio <= MAX_BYTES_RATIO
    assert mat_ratio <= MAX_BYTES_RATIO

    multiview_before = served_bytes(figshare)
    multiview = _stream("multiview", str(tmp_path / "cache_mv"), recordings=["s1-d1"], cameras=[1, 2])
    assert sum(1 for _ in multiview) == long_release.spec.num_samples
    sent = served_bytes(figshare) - multiview_before
    multiview_ratio = sum(v for k, v in sent.items() if k.endswith(".mp4")) / sum(
        sizes[k] for k in sent if k.endswith(".mp4")
    )
    assert multiview_ratio <= MAX_BYTES_RATIO
    with capsys.disabled():
        print(
            f"\n[streaming] frames from the stand-in: first example after {to_first:.2f} s having read "
            f"{before_first} of {sizes[name]} bytes of its chunk; mp4 bytes served {mp4_sent} for {mp4_size} "
            f"read ({mp4_ratio:.3f}×), .mat {mat_ratio:.3f}×; multiview mp4 {multiview_ratio:.3f}×"
        )


def test_a_dropped_connection_is_retried_while_streaming(figshare, long_release, small_blocks, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(datasets.config, "STREAMING_READ_RETRY_INTERVAL", 0)
    serve_release(figshare, long_release.root)

    def stream(cache: str):
        return _raw(_stream("frames", str(tmp_path / cache), recordings=["s1-d1"], cameras=[1]), "frames")

    clean = list(stream("clean"))
    figshare.clear_log()
    load_mocap.cache_clear()  # parse the .mat again, from the network
    figshare.drop_once["mocap-s1-d1.mat"] = 3000  # while planning
    iterator = iter(stream("dropped"))
    rows = [next(iterator)]
    name = "s1-d1-camera1-0.mp4"
    figshare.drop_once[name] = 5000  # the next request for this chunk: mid-file, inside PyAV's decode loop
    rows += list(iterator)

    assert_same_rows(rows, clean)
    for dropped in ("mocap-s1-d1.mat", name):
        requests = figshare.requests_for(dropped)
        cut = [i for i, r in enumerate(requests) if r.bytes_sent in (3000, 5000)]
        assert cut, f"{dropped} was not cut"
        assert requests[cut[0] + 1].range == requests[cut[0]].range  # the same range asked again
    assert not figshare.drop_once


# -- the example script ----------------------------------------------------------------------------------


def test_train_example_runs():
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "train_example.py"), "--steps", "3", "--batch-size", "4"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    losses = [line for line in result.stdout.splitlines() if line.startswith("step ")]
    assert len(losses) == 3, result.stdout
    assert all(np.isfinite(float(line.split("loss ")[1].split()[0])) for line in losses)
    assert "2 DataLoader workers" in result.stdout


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--recordings", "s5-d1"], "holds no recording of the train split"),
        (["--recordings", "s5-d1", "--split", "test"], "streaming frames/test:"),
    ],
)
def test_train_example_trains_on_the_split_its_recordings_are_in(options, expected):
    argv = [sys.executable, os.path.join(REPO, "scripts", "train_example.py"), "--steps", "2", *options]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert expected in result.stdout + result.stderr, result.stderr[-3000:]
    assert result.returncode == (2 if "no recording" in expected else 0)
    assert "Traceback" not in result.stderr
