"""The Ray engine: same rows and Parquet as the local export, stock loading, resuming after a kill.

One local Ray instance (2 CPUs) serves the whole module; the interrupted export runs as a second
driver (a subprocess connected to it), killed with SIGKILL once its first shard is in place.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.parse

import datasets
import fsspec
import pyarrow.parquet as pq
import pytest
import yaml
from helpers import assert_same_rows, raw_images
from standins.figshare import figshare, serve_release  # noqa: F401  (fixture)

import rat7m
from rat7m_builder import hub, ray_export
from rat7m_builder.cli import main
from rat7m_builder.download import article_dir
from rat7m_builder.errors import ChecksumError, DownloadError, Rat7MError, SelectionError
from rat7m_builder.hub import export_dataset
from rat7m_builder.manifest import MOCAP_ARTICLE, VIDEO_ARTICLES
from rat7m_builder.ray_export import export_with_ray
from rat7m_builder.sample import SampleSpec, write_mini_annotation, write_sample
from rat7m_builder.sources import FileRef, ReleaseIndex, VideoChunk

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs for the module; `export_with_ray` uses an initialised Ray as it is."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _card(folder) -> dict:
    text = open(os.path.join(folder, "README.md"), encoding="utf-8").read()
    return yaml.safe_load(text.split("---\n")[1])


def _stock(folder, config: str, split: str, cache: str) -> datasets.Dataset:
    loaded = datasets.load_dataset(str(folder), config, split=split, cache_dir=cache)
    for column in ("image", "images"):
        if column in loaded.column_names:
            loaded = raw_images(loaded, column)
    return loaded


@pytest.mark.parametrize("config", ["frames", "multiview"])
def test_ray_export_equals_the_local_export(local_ray, sample_release, tmp_path, config):
    ray_dir, local_dir = tmp_path / "ray", tmp_path / "local"
    result = export_with_ray(
        config, str(ray_dir), data_dir=sample_release.root, cache_dir=str(tmp_path / "c1"), progress=False
    )
    builder = rat7m.Rat7M(config_name=config, data_dir=sample_release.root, cache_dir=str(tmp_path / "c2"))
    rat7m.prepare(builder)
    export_dataset(builder.as_dataset(), config, str(local_dir))

    # One Parquet per shard (gen_kwargs unit), named in the builder's order, nothing left behind.
    num_shards = {split: len(files) for split, files in ((s, result["splits"][s]["files"]) for s in result["splits"])}
    for split, count in num_shards.items():
        names = sorted(os.path.basename(p) for p in glob.glob(str(ray_dir / config / f"{split}-*.parquet")))
        assert names == [f"{split}-{i:05d}-of-{count:05d}.parquet" for i in range(count)]
    assert sorted(os.listdir(ray_dir)) == ["README.md", config]
    if config == "frames":
        assert num_shards == {"train": 30, "test": 30}  # one per mp4 chunk: 5 chunks × 6 cameras

    # Same Parquet schema (features metadata included) as `Dataset.to_parquet`.
    ray_schema = pq.read_schema(sorted(glob.glob(str(ray_dir / config / "train-*.parquet")))[0])
    local_schema = pq.read_schema(glob.glob(str(local_dir / config / "train-*.parquet"))[0])
    assert ray_schema.equals(local_schema, check_metadata=True)

    # The card: same configs entry, same features and split sizes as the local export's.
    ray_card, local_card = _card(ray_dir), _card(local_dir)
    assert ray_card["configs"] == local_card["configs"]
    ray_info, local_info = ray_card["dataset_info"], local_card["dataset_info"]
    assert ray_info["features"] == local_info["features"]
    assert [(s["name"], s["num_examples"]) for s in ray_info["splits"]] == [
        (s["name"], s["num_examples"]) for s in local_info["splits"]
    ]
    assert "## Build notes" in open(ray_dir / "README.md", encoding="utf-8").read()

    # Stock `datasets.load_dataset` reads both; the rows are equal, images byte for byte.
    for split in ("train", "test"):
        from_ray = _stock(ray_dir, config, split, str(tmp_path / "l1"))
        from_local = _stock(local_dir, config, split, str(tmp_path / "l2"))
        assert from_ray.features == from_local.features
        assert from_ray.num_rows == result["splits"][split]["num_examples"] > 0
        assert_same_rows(from_ray.to_list(), from_local.to_list())


def test_killed_export_resumes_without_duplicates(local_ray, tmp_path):
    # ~100 small shards (one recording, 17 chunks × 6 cameras): long enough to kill half-way.
    release = write_sample(str(tmp_path / "release"), SampleSpec(recordings=("s1-d1",), num_samples=120))
    total = len(glob.glob(os.path.join(release.root, "**", "*.mp4"), recursive=True))  # one shard per chunk
    to = tmp_path / "out"
    script = textwrap.dedent(
        f"""
        from rat7m_builder.ray_export import export_with_ray
        export_with_ray("frames", {str(to)!r}, data_dir={release.root!r}, cache_dir={str(tmp_path / "c1")!r},
                        ray_address={local_ray!r}, progress=False)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while not glob.glob(str(to / "frames" / "*.parquet")):
            assert process.poll() is None, f"the export ended before it could be killed: {process.stderr.read()}"
            assert time.monotonic() < deadline, "no shard written in 120 s"
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    time.sleep(1)  # tasks of the dead driver that were mid-shard may still land (complete files only)
    written = glob.glob(str(to / "frames" / "*.parquet"))
    assert 1 <= len(written) < total
    assert not os.path.exists(to / "README.md")

    result = export_with_ray("frames", str(to), data_dir=release.root, cache_dir=str(tmp_path / "c1"), progress=False)
    assert result["shards_skipped"] >= len(written) and result["tasks_run"] >= 1
    assert result["shards_skipped"] + result["tasks_run"] == total
    assert len(glob.glob(str(to / "frames" / "*.parquet"))) == total
    assert not os.path.exists(to / ".cache")  # temporary files and records are gone

    loaded = _stock(to, "frames", "train", str(tmp_path / "l1"))
    expected = raw_images(
        rat7m.load_dataset("frames", split="train", data_dir=release.root, cache_dir=str(tmp_path / "c2"))
    )
    assert loaded.num_rows == expected.num_rows == 6 * 120
    assert_same_rows(loaded.to_list(), expected.to_list())


def test_figshare_tasks_download_only_their_files_once(local_ray, figshare, sample_release, tmp_path):  # noqa: F811
    serve_release(figshare, sample_release.root)
    selection = {"recordings": ["s1-d1"], "cameras": [1, 2]}
    to = tmp_path / "out"
    result = export_with_ray("frames", str(to), cache_dir=str(tmp_path / "c"), progress=False, **selection)
    assert result["splits"]["train"]["num_shards"] == 10 and list(result["splits"]) == ["train"]
    # Only what is read: the .mat and the chunks holding a frame of some sample (not the tail-only chunk).
    truth = sample_release.recordings["s1-d1"]
    read = {f"s1-d1-camera{c}-{start}.mp4" for c in (1, 2) for start in set((truth.frame_index[c] // 8 * 8).tolist())}
    names = figshare.downloaded_names()
    assert names == {"mocap-s1-d1.mat"} | read and "s1-d1-camera1-32.mp4" not in names
    for name in names:  # verified once into the shared cache, then read from there by every task
        assert [r.range for r in figshare.requests_for(name)] == [None], name
    loaded = _stock(to, "frames", "train", str(tmp_path / "l"))
    local = rat7m.load_dataset(
        "frames", split="train", data_dir=sample_release.root, cache_dir=str(tmp_path / "d"), **selection
    )
    assert_same_rows(loaded.to_list(), raw_images(local).to_list())


def test_a_task_error_is_rat7m_s_own(local_ray, sample_release, tmp_path, monkeypatch):
    def cancel(*args, **kwargs):  # a cancel crossing a task's completion kills the driver (Ray 2.60)
        raise AssertionError("export_with_ray cancelled a task")

    monkeypatch.setattr(ray, "cancel", cancel)
    release = tmp_path / "release"
    shutil.copytree(sample_release.root, release)
    chunk = next(release.rglob("s1-d1-camera1-8.mp4"))
    chunk.write_bytes(chunk.read_bytes()[:2000])  # truncated
    with pytest.raises(Rat7MError, match="s1-d1-camera1-8.mp4"):
        export_with_ray("frames", str(tmp_path / "out"), data_dir=str(release), recordings=["s1-d1"], progress=False)
    assert not (tmp_path / "out" / "README.md").exists()
    # The tasks in flight ended before the error was raised: no task is still writing, every shard
    # written is complete (and recorded, for a re-run), and the damaged chunk's shard is not there.
    assert not list((tmp_path / "out").rglob("*.tmp"))
    written = sorted((tmp_path / "out" / "frames").glob("*.parquet"))
    assert written and "train-00001-of-00030.parquet" not in [p.name for p in written]
    for path in written:  # a complete Parquet file: its footer reads (a tail-only chunk's has 0 rows)
        pq.read_metadata(path)
    assert len(list((tmp_path / "out").rglob("*.parquet.json"))) == len(written)


class _OneAtATimeRay:
    """Just enough of Ray for `ray_export._run_tasks`: each blocking `wait` ends the oldest task.

    A task is its job's name; the jobs named in ``failing`` raise. Records what was submitted and
    the most tasks ever in flight.
    """

    class exceptions:  # named as Ray's module, which `_run_tasks` reads `RayError` from
        RayError = type("RayError", (Exception,), {})

    def __init__(self, cpus: int, failing: tuple[str, ...] = ()):
        self.cpus, self.failing = cpus, failing
        self.submitted, self.ended, self.most_in_flight = [], set(), 0

    def submit(self, job: str) -> str:
        self.submitted.append(job)
        return job

    def cluster_resources(self) -> dict:
        return {"CPU": float(self.cpus)}

    def wait(self, refs, num_returns, timeout=None):
        self.most_in_flight = max(self.most_in_flight, len(refs))
        if num_returns == 1:
            self.ended.add(refs[0])
        ready = [ref for ref in refs if ref in self.ended]
        return ready[:num_returns], [ref for ref in refs if ref not in ready[:num_returns]]

    def get(self, ref: str) -> dict:
        if ref in self.failing:
            error = self.exceptions.RayError("task failed")
            error.cause = Rat7MError(f"{ref}: truncated")
            raise error
        return {"name": ref}


@pytest.mark.parametrize(("cpus", "most"), [(1, 8), (2, 8), (6, 12)])
def test_tasks_are_submitted_in_order_a_bounded_number_at_a_time(cpus, most):
    fake, jobs = _OneAtATimeRay(cpus), [f"shard-{i}" for i in range(40)]
    done, seen = {}, []
    ray_export._run_tasks(fake, fake.submit, jobs, done, lambda result: seen.append(result["name"]))
    assert fake.submitted == jobs and seen == jobs and list(done) == jobs
    assert fake.most_in_flight == most  # twice the CPUs, at least `MIN_IN_FLIGHT`


def test_after_a_task_error_nothing_more_is_submitted_and_the_tasks_in_flight_finish():
    fake, jobs = _OneAtATimeRay(cpus=2, failing=("shard-3",)), [f"shard-{i}" for i in range(40)]
    done = {}
    with pytest.raises(Rat7MError, match="shard-3: truncated") as raised:
        ray_export._run_tasks(fake, fake.submit, jobs, done, lambda result: None)
    assert isinstance(raised.value.__cause__, fake.exceptions.RayError)
    # shard-3 ends 4th; by then 3 more were submitted after the first 8 (one per ended task), none after
    assert fake.submitted == jobs[:11]
    assert fake.ended == set(jobs[:11]) and list(done) == [j for j in jobs[:11] if j != "shard-3"]


def test_rerun_of_a_finished_export_rewrites_it_and_stale_shards_go(local_ray, sample_release, tmp_path):
    to = tmp_path / "out"
    (to / "mocap").mkdir(parents=True)
    (to / "mocap" / "train-00000-of-00003.parquet").write_bytes(b"not ours")  # another plan's shard
    first = export_with_ray("mocap", str(to), data_dir=sample_release.root, cameras=[1, 2], progress=False)
    assert first["tasks_run"] == 2 and first["shards_skipped"] == 0
    assert sorted(os.listdir(to / "mocap")) == ["test-00000-of-00001.parquet", "train-00000-of-00001.parquet"]
    again = export_with_ray("mocap", f"file://{to}", data_dir=sample_release.root, cameras=[1, 2], progress=False)
    assert again["tasks_run"] == 2  # a complete export is not "resumed": it is written again
    loaded = datasets.load_dataset(str(to), "mocap", split="test", cache_dir=str(tmp_path / "l"))
    assert loaded.num_rows == 30 and len(loaded[0]["frame_index"]) == 2


def test_cli_engine_ray(local_ray, sample_release, tmp_path, capsys):
    to = tmp_path / "hub"
    argv = ["export", "cameras", "--data-dir", sample_release.root, "--cache-dir", str(tmp_path / "c")]
    assert main([*argv, "--to", str(to), "--engine", "ray"]) == 0
    assert "on Ray: 12 rows in 2 shards" in capsys.readouterr().out
    loaded = datasets.load_dataset(str(to), "cameras", split="test", cache_dir=str(tmp_path / "l"))
    assert loaded.num_rows == 6 and loaded["camera"] == [1, 2, 3, 4, 5, 6]


def test_cli_without_ray_says_how_to_install_it(monkeypatch, sample_release, tmp_path, capsys):
    monkeypatch.setattr(ray_export, "ray_available", lambda: False)
    argv = ["export", "cameras", "--data-dir", sample_release.root, "--to", str(tmp_path / "hub"), "--engine", "ray"]
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert 'pip install -e ".[ray]"' in error and 'pip install "rat7m[ray]"' in error
    assert not (tmp_path / "hub").exists()
    assert main([*argv[:-2], "--ray-address", "auto"]) == 1
    assert "--ray-address needs --engine ray" in capsys.readouterr().err


def test_fingerprint_depends_on_what_a_shard_holds_not_how_it_is_computed(sample_release):
    builder = rat7m.Rat7M(config_name="frames", data_dir=sample_release.root)
    splits, selection = builder.plan()
    shard, features, version = splits["train"][0], builder.info.features, str(builder.VERSION)
    fingerprint = ray_export.shard_fingerprint(shard, selection, features, version)
    single = dataclasses.replace(selection, encode_threads=1)
    assert ray_export.shard_fingerprint(shard, single, features, version) == fingerprint
    lower_quality = dataclasses.replace(selection, jpeg_quality=selection.jpeg_quality - 1)
    assert ray_export.shard_fingerprint(shard, lower_quality, features, version) != fingerprint
    assert ray_export.shard_fingerprint(splits["train"][1], selection, features, version) != fingerprint


def test_the_first_task_error_is_raised_not_a_later_one():
    fake, jobs = _OneAtATimeRay(cpus=1, failing=("shard-3", "shard-5")), [f"shard-{i}" for i in range(40)]
    with pytest.raises(Rat7MError, match="shard-3: truncated"):
        ray_export._run_tasks(fake, fake.submit, jobs, {}, lambda result: None)


def test_fingerprint_follows_the_builder_version_the_features_and_the_input_files(sample_release):
    builder = rat7m.Rat7M(config_name="multiview", data_dir=sample_release.root)
    splits, selection = builder.plan()
    shard, features, version = splits["train"][0], builder.info.features, str(builder.VERSION)
    fingerprint = ray_export.shard_fingerprint(shard, selection, features, version)
    assert ray_export.shard_fingerprint(shard, selection, features, version + ".1") != fingerprint
    other_features = rat7m.Rat7M(config_name="frames", data_dir=sample_release.root).info.features
    assert ray_export.shard_fingerprint(shard, selection, other_features, version) != fingerprint
    # Another release file of the same name (re-recorded, re-downloaded): another shard.
    new_mocap = dataclasses.replace(shard, mocap=dataclasses.replace(shard.mocap, md5="0" * 32))
    assert ray_export.shard_fingerprint(new_mocap, selection, features, version) != fingerprint
    camera, chunks = next(iter(shard.chunks.items()))
    resized = dataclasses.replace(chunks[0], file=dataclasses.replace(chunks[0].file, size=1))
    new_chunk = dataclasses.replace(shard, chunks={**shard.chunks, camera: (resized, *chunks[1:])})
    assert ray_export.shard_fingerprint(new_chunk, selection, features, version) != fingerprint
    start, stop = shard.sample_range
    fewer = dataclasses.replace(shard, sample_range=(start, stop - 1))
    assert ray_export.shard_fingerprint(fewer, selection, features, version) != fingerprint


def test_fetch_on_open_turns_only_urls_into_verified_downloads_into_the_shared_cache(tmp_path):
    url = "https://figshare.invalid/ndownloader/files/"
    mat = FileRef("mocap-s1-d1.mat", url + "1", size=10, md5="a" * 32)
    remote_chunk = FileRef("s1-d1-camera2-0.mp4", url + "2", size=20, md5="b" * 32)
    local_chunk = FileRef("s1-d1-camera1-0.mp4", str(tmp_path / "s1-d1-camera1-0.mp4"))
    member = FileRef("s1-d1-camera3-0.mp4", "zip://s1-d1-camera3-0.mp4::" + str(tmp_path / "videos.zip"))
    index = ReleaseIndex(description="figshare")
    index.mocap = {"s1-d1": mat}
    index.videos = {
        ("s1-d1", camera): [VideoChunk(0, ref)] for camera, ref in ((1, local_chunk), (2, remote_chunk), (3, member))
    }

    converted = ray_export.fetch_on_open(index, str(tmp_path / "cache"))
    assert converted.videos[("s1-d1", 1)][0].file == local_chunk and converted.videos[("s1-d1", 3)][0].file == member
    assert ray_export.fetch_on_open(converted, str(tmp_path / "cache")).mocap == converted.mocap  # idempotent
    for ref, article, converted_ref in (
        (mat, MOCAP_ARTICLE, converted.mocap["s1-d1"]),
        (remote_chunk, VIDEO_ARTICLES["s1-d1"], converted.videos[("s1-d1", 2)][0].file),
    ):
        assert converted_ref.location.startswith("rat7m-fetch://") and converted_ref.name == ref.name
        encoded = converted_ref.location[len("rat7m-fetch://") :]
        dest = os.path.join(article_dir(str(tmp_path / "cache"), *article), ref.name)
        assert json.loads(urllib.parse.unquote(encoded)) == [dest, ref.location, ref.size, ref.md5]


def test_a_fetched_file_is_verified_and_read_only(figshare, sample_release, tmp_path):  # noqa: F811
    serve_release(figshare, sample_release.root)
    stored = figshare.file("mocap-s1-d1.mat")
    url = f"{figshare.base_url}/ndownloader/files/{stored.file_id}"

    def location(dest, md5):
        return ray_export._fetch_location(str(dest), FileRef(stored.name, url, size=len(stored.data), md5=md5))

    with pytest.raises(ChecksumError):
        with fsspec.open(location(tmp_path / "bad" / stored.name, "0" * 32), "rb") as file:
            file.read()
    assert not (tmp_path / "bad" / stored.name).exists()
    with fsspec.open(location(tmp_path / "good" / stored.name, stored.md5), "rb") as file:
        assert file.read() == stored.data
    with pytest.raises(ValueError, match="read-only"):
        fsspec.open(location(tmp_path / "good" / stored.name, stored.md5), "wb").open()


def test_export_without_ray_says_how_to_install_it(monkeypatch, sample_release, tmp_path):
    monkeypatch.setattr(ray_export, "ray_available", lambda: False)
    with pytest.raises(ImportError, match=re.escape('pip install "rat7m[ray]"')):
        export_with_ray("cameras", str(tmp_path / "hub"), data_dir=sample_release.root, progress=False)
    assert not (tmp_path / "hub").exists()


def test_what_is_refused_is_refused_before_any_shard_is_written(local_ray, sample_release, tmp_path):
    to = tmp_path / "hub"
    # (frames: a config whose rows the option would change; cameras ignores it)
    with pytest.raises(SelectionError, match="on_corrupt_video='skip' is not supported"):
        export_with_ray("frames", str(to), data_dir=sample_release.root, on_corrupt_video="skip", progress=False)
    with pytest.raises(FileNotFoundError, match="card body not found"):
        export_with_ray(
            "cameras", str(to), data_dir=sample_release.root, card_body_path=tmp_path / "no.md", progress=False
        )
    assert not list(to.rglob("*.parquet"))


def test_a_selection_without_shards_is_refused(sample_release, tmp_path):
    # The annotation holds rows of s1-d1 only, the selection asks for s5-d1: `mini` has nothing to write.
    only_s1 = write_sample(str(tmp_path / "s1"), SampleSpec(recordings=("s1-d1",)))
    annotation = write_mini_annotation(only_s1, str(tmp_path / "mini.pickle"))
    to = tmp_path / "hub"
    with pytest.raises(SelectionError, match="no shards to export"):
        export_with_ray(
            "mini",
            str(to),
            data_dir=sample_release.root,
            annotation_file=annotation,
            recordings=["s5-d1"],
            progress=False,
        )
    assert not (to / "README.md").exists()


def test_skipping_corrupt_videos_is_refused_before_anything_is_downloaded(figshare, sample_release, tmp_path):  # noqa: F811
    serve_release(figshare, sample_release.root)
    with pytest.raises(SelectionError, match="on_corrupt_video='skip' is not supported"):
        export_with_ray(
            "frames",
            str(tmp_path / "hub"),
            cache_dir=str(tmp_path / "c"),
            recordings=["s1-d1"],
            on_corrupt_video="skip",
            progress=False,
        )
    assert figshare.downloaded_names() == set()


class _Started(Exception):
    """What the stand-in `ray.init` raises, with the arguments it was called with."""


def test_ray_is_started_with_the_cpus_or_cluster_asked_for(monkeypatch, sample_release, tmp_path):
    def init(**kwargs):
        raise _Started(kwargs)

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    to, data_dir = str(tmp_path / "hub"), sample_release.root
    with pytest.raises(_Started) as started:
        export_with_ray("cameras", to, data_dir=data_dir, num_cpus=3, progress=False)
    assert started.value.args[0]["num_cpus"] == 3 and "address" not in started.value.args[0]
    with pytest.raises(_Started) as started:
        export_with_ray("cameras", to, data_dir=data_dir, ray_address="ray://head:10001", progress=False)
    assert started.value.args[0]["address"] == "ray://head:10001"


def test_tasks_get_one_cpu_and_the_retries_asked_for(local_ray, sample_release, tmp_path, monkeypatch):
    options = {}
    remote = ray.remote

    class _Recording:
        def __init__(self, function):
            self.function = remote(function)

        def options(self, **kwargs):
            options.update(kwargs)
            return self.function.options(**kwargs)

    monkeypatch.setattr(ray, "remote", _Recording)
    export_with_ray("cameras", str(tmp_path / "hub"), data_dir=sample_release.root, max_retries=5, progress=False)
    assert options["num_cpus"] == 1 and options["max_retries"] == 5
    assert {OSError, ConnectionError, DownloadError, ChecksumError} <= set(options["retry_exceptions"])


def test_summary_card_and_callbacks_describe_the_files_written(local_ray, sample_release, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)  # a relative `to` is the driver's folder, whatever the workers' is
    summaries = []
    result = export_with_ray(
        "multiview", "hub", data_dir=sample_release.root, on_shard_done=summaries.append, progress=False
    )
    assert ray.is_initialized()  # the Ray it found is left running
    assert "on Ray" not in capfd.readouterr().err  # progress=False: no progress bar
    hub_dir = tmp_path / "hub"
    assert result["dir"] == str(hub_dir)
    assert result["files"] == [*result["splits"]["train"]["files"], *result["splits"]["test"]["files"]]
    assert all(os.path.isfile(hub_dir / name) for name in result["files"])

    # on_shard_done: once per shard, with what the shard holds.
    assert sorted(s["name"] for s in summaries) == sorted(os.path.basename(name) for name in result["files"])
    for summary in summaries:
        assert set(summary) == {"split", "name", "num_examples", "num_bytes", "download_size"}
        path = hub_dir / "multiview" / summary["name"]
        assert summary["download_size"] == path.stat().st_size
        assert summary["num_examples"] == pq.read_metadata(path).num_rows

    # Split sizes and the card's dataset_info are the sums over the shards.
    info = _card(hub_dir)["dataset_info"]
    for split in ("train", "test"):
        of_split = [s for s in summaries if s["split"] == split]
        sizes = result["splits"][split]
        assert sizes["num_shards"] == len(of_split) == len(sizes["files"])
        for key in ("num_examples", "num_bytes", "download_size"):
            assert sizes[key] == sum(s[key] for s in of_split) > 0, key
        card_split = next(s for s in info["splits"] if s["name"] == split)
        assert (card_split["num_examples"], card_split["num_bytes"]) == (sizes["num_examples"], sizes["num_bytes"])
    assert info["download_size"] == sum(s["download_size"] for s in summaries)
    assert info["dataset_size"] == sum(s["num_bytes"] for s in summaries)


def test_card_body_and_build_notes_are_the_ones_given(local_ray, sample_release, tmp_path):
    body = tmp_path / "card.md"
    body.write_text("# A lab's RAT7M\n\nOur own description of the export.\n", encoding="utf-8")
    to = tmp_path / "hub"
    notes = {"provenance": ["exported for the lab's benchmark"]}
    export_with_ray(
        "cameras", str(to), data_dir=sample_release.root, card_body_path=body, build_notes=notes, progress=False
    )
    readme = (to / "README.md").read_text(encoding="utf-8")
    assert "Our own description of the export." in readme
    assert "exported for the lab's benchmark" in readme


def test_storage_options_reach_the_tasks(local_ray, sample_release, tmp_path):
    # `dir://` needs its base folder from the storage options: a task without them cannot write.
    options = {"path": str(tmp_path / "bucket"), "target_protocol": "file"}
    result = export_with_ray(
        "cameras", "dir://rat7m", data_dir=sample_release.root, storage_options=options, progress=False
    )
    assert result["dir"] == "dir://rat7m"
    assert sorted(os.listdir(tmp_path / "bucket" / "rat7m" / "cameras")) == [
        "test-00000-of-00001.parquet",
        "train-00000-of-00001.parquet",
    ]
    assert (tmp_path / "bucket" / "rat7m" / "README.md").is_file()


def test_figshare_files_go_to_the_download_dir_given(local_ray, figshare, sample_release, tmp_path):  # noqa: F811
    serve_release(figshare, sample_release.root)
    downloads = tmp_path / "downloads"
    export_with_ray(
        "mocap",
        str(tmp_path / "hub"),
        cache_dir=str(tmp_path / "c"),
        download_dir=str(downloads),
        recordings=["s1-d1"],
        progress=False,
    )
    mat = os.path.join(article_dir(str(downloads / "rat7m"), *MOCAP_ARTICLE), "mocap-s1-d1.mat")
    assert open(mat, "rb").read() == figshare.file("mocap-s1-d1.mat").data


class _Killed(Exception):
    """The driver dying after its last shard, before the card."""


def _export_killed_before_the_card(monkeypatch, *args, **kwargs) -> None:
    def killed(*args, **kwargs):
        raise _Killed

    with monkeypatch.context() as patch:
        patch.setattr(hub, "write_card", killed)
        with pytest.raises(_Killed):
            export_with_ray(*args, **kwargs)


def _mocap_state(to) -> str:
    return os.path.join(to, ray_export.STATE_DIR, "mocap.ray")


def test_a_re_run_after_the_last_shard_writes_the_card_without_ray(local_ray, sample_release, tmp_path, monkeypatch):
    to, selection = str(tmp_path / "hub"), {"data_dir": sample_release.root, "cameras": [1, 2], "progress": False}
    _export_killed_before_the_card(monkeypatch, "mocap", to, **selection)
    names = ["test-00000-of-00001.parquet", "train-00000-of-00001.parquet"]
    assert sorted(os.listdir(os.path.join(to, "mocap"))) == names and not os.path.exists(os.path.join(to, "README.md"))
    # A task's temporary file left by a killed worker goes at the next run, even one that dies too.
    leftover = os.path.join(_mocap_state(to), "train-00000-of-00001.parquet.0123456789ab.tmp")
    open(leftover, "wb").write(b"half a shard")
    _export_killed_before_the_card(monkeypatch, "mocap", to, **selection)
    assert not os.path.exists(leftover)

    def init(**kwargs):
        raise AssertionError("Ray was started with nothing to run")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    result = export_with_ray("mocap", to, **selection)
    assert (result["tasks_run"], result["shards_skipped"], result["num_examples"]) == (0, 2, 60)
    assert sorted(os.listdir(to)) == ["README.md", "mocap"]
    loaded = datasets.load_dataset(to, "mocap", split="train", cache_dir=str(tmp_path / "l"))
    assert loaded.num_rows == 30 and len(loaded[0]["frame_index"]) == 2


def test_a_re_run_rewrites_shards_of_another_selection(local_ray, sample_release, tmp_path, monkeypatch):
    to = str(tmp_path / "hub")
    _export_killed_before_the_card(
        monkeypatch, "mocap", to, data_dir=sample_release.root, cameras=[1, 2], progress=False
    )
    result = export_with_ray("mocap", to, data_dir=sample_release.root, cameras=[1, 2, 3], progress=False)
    assert (result["tasks_run"], result["shards_skipped"]) == (2, 0)
    for split in ("train", "test"):
        loaded = datasets.load_dataset(to, "mocap", split=split, cache_dir=str(tmp_path / "l"))
        assert loaded.num_rows == 30 and len(loaded[0]["frame_index"]) == 3


def test_a_re_run_rewrites_a_damaged_shard_or_record(local_ray, sample_release, tmp_path, monkeypatch):
    to, selection = str(tmp_path / "hub"), {"data_dir": sample_release.root, "progress": False}
    _export_killed_before_the_card(monkeypatch, "mocap", to, **selection)
    shard = os.path.join(to, "mocap", "train-00000-of-00001.parquet")
    open(shard, "r+b").truncate(100)  # its record stays
    open(os.path.join(_mocap_state(to), "test-00000-of-00001.parquet.json"), "wb").write(b'{"num_ex')
    result = export_with_ray("mocap", to, **selection)
    assert (result["tasks_run"], result["shards_skipped"]) == (2, 0)
    for split in ("train", "test"):
        loaded = datasets.load_dataset(to, "mocap", split=split, cache_dir=str(tmp_path / "l"))
        assert loaded.num_rows == 30
