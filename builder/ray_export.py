"""Export a config on Ray: one task per shard, the builder's own example generation, the Hub layout.

`export_with_ray` plans the shards exactly as a prepare would (``Rat7M.plan``), then runs one Ray
task per `Shard` (a chunk for ``frames``/``videos``, a sample range for ``multiview``/``mini``, a
recording for ``mocap``/``cameras``). Each task calls `examples.generate_shard` — the one
implementation of example generation — and writes its rows with `datasets`' own Parquet writer
and the config's `datasets.Features`, so schema, Parquet options and embedded image bytes are what
the local export (`hub.export_dataset`) writes. Row groups differ: a task does not know its shard's
size before writing it, so image configs get row groups of 100 rows (`datasets`' record batch for
images; ~25 MB of ``frames``), where the local export aims at 100 MB row groups as ``push_to_hub``
does (~400 frames). Both read the same. The output is the Hub layout::

    <to>/<config>/<split>-00000-of-00042.parquet    one file per shard, in the builder's order
    <to>/README.md                                  configs:, dataset_info:, card body, build notes

``to`` is a folder or any fsspec URL (``s3://bucket/rat7m``, ``gs://…``): every worker writes its
shard there under a temporary name, records what it wrote, then renames (``fs.mv``) it into place.
A re-run of an interrupted export skips the shards whose final file is there and recorded, so it
resumes without duplicates; a failed task is retried by Ray (``max_retries``). Tasks are submitted
a bounded number at a time (twice the cluster's CPUs) and never cancelled: after a task's error the
ones in flight finish, then the error is raised.

Inputs: ``data_dir`` (a folder every worker can read at the same path), or figshare. From figshare
the driver reads the listings only, and each file becomes a reference that is downloaded and
verified (size, md5; resumed, retried: `download.download_file`) into the shared download cache
the first time a process opens it, under a file lock: a task fetches only what its shard reads.
The driver itself fetches what planning reads (each recording's .mat, the last chunk of each camera).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import datasets
import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractFileSystem

from .download import article_dir, download_file
from .errors import ChecksumError, DownloadError, Rat7MError, SelectionError
from .examples import Selection, Shard, generate_shard
from .manifest import MOCAP_ARTICLE, SPLIT_RECORDINGS, VIDEO_ARTICLES, parse_mocap_name, parse_video_name
from .sources import FileRef, ReleaseIndex, VideoChunk

__all__ = ["INSTALL_HINT", "export_with_ray", "fetch_on_open", "ray_available"]

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    'The Ray engine needs the optional extra `ray`: pip install -e ".[ray]" (in a checkout) or '
    'pip install "rat7m[ray]".'
)
#: fsspec protocol of file references that download (verified) on first open.
FETCH_PROTOCOL = "rat7m-fetch"
#: Where the export keeps its per-shard records and temporary files (ignored by `upload_folder`).
STATE_DIR = ".cache/huggingface/rat7m-export"
#: Exceptions worth running a task again for (a worker that dies is retried by Ray anyway).
RETRIED_EXCEPTIONS = [DownloadError, ChecksumError, ConnectionError, TimeoutError, OSError]
#: Fewest shard tasks kept submitted (enough to keep a small cluster busy while the driver collects results).
MIN_IN_FLIGHT = 8


def ray_available() -> bool:
    """Whether ``ray`` can be imported (the ``ray`` extra is installed)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------------------------
# Download on first open


class FetchOnOpenFileSystem(AbstractFileSystem):
    """``rat7m-fetch://<quoted JSON [dest, url, size, md5]>``: download into ``dest`` (verified), open it.

    `sources.open_file` opens any URL through fsspec, so a `FileRef` with such a location is
    downloaded the first time any process opens it, and read from the local copy after that.
    Concurrent openers of one file (tasks on one machine, or on a shared file system) wait on a
    lock rather than writing the same partial file.
    """

    protocol = FETCH_PROTOCOL
    cachable = False

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        prefix = f"{FETCH_PROTOCOL}://"
        return path[len(prefix) :] if path.startswith(prefix) else path

    def _open(self, path: str, mode: str = "rb", block_size=None, autocommit=True, cache_options=None, **kwargs):
        if mode != "rb":
            raise ValueError(f"{FETCH_PROTOCOL}:// files are read-only, not {mode!r}")
        dest, url, size, md5 = json.loads(urllib.parse.unquote(path))
        return open(fetch(dest, url, size, md5), "rb")


fsspec.register_implementation(FETCH_PROTOCOL, FetchOnOpenFileSystem, clobber=True)


def fetch(dest: str, url: str, size: int | None, md5: str | None) -> str:
    """Download ``url`` to ``dest`` once (verified against size and md5), whoever asks first; return ``dest``."""
    from filelock import FileLock

    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with FileLock(dest + ".lock"):
        return download_file(url, dest, size, md5, name=os.path.basename(dest))


def _fetch_location(dest: str, ref: FileRef) -> str:
    return f"{FETCH_PROTOCOL}://" + urllib.parse.quote(json.dumps([dest, ref.location, ref.size, ref.md5]), safe="")


def _article_of(name: str) -> tuple[int, int]:
    video = parse_video_name(name)
    if video is not None:
        return VIDEO_ARTICLES[video.recording]
    if parse_mocap_name(name) is not None:
        return MOCAP_ARTICLE
    raise ValueError(f"not a release file name: {name!r}")


def fetch_on_open(index: ReleaseIndex, cache_dir: str) -> ReleaseIndex:
    """The index with every remote (URL) reference turned into a download-on-first-open reference.

    Files land where `download.figshare_index` puts its verified downloads
    (``cache_dir/article-<id>-v<version>/<name>``), so the local builder and Ray share them.
    """

    def convert(ref: FileRef) -> FileRef:
        if "://" not in ref.location or ref.location.startswith(("zip://", f"{FETCH_PROTOCOL}://")):
            return ref
        dest = os.path.join(article_dir(cache_dir, *_article_of(ref.name)), ref.name)
        return dataclasses.replace(ref, location=_fetch_location(dest, ref))

    converted = ReleaseIndex(description=f"{index.description}, each file fetched into {cache_dir} when read")
    converted.mocap = {recording: convert(ref) for recording, ref in index.mocap.items()}
    converted.videos = {
        key: [VideoChunk(chunk.start, convert(chunk.file)) for chunk in chunks] for key, chunks in index.videos.items()
    }
    return converted


# ----------------------------------------------------------------------------------------------
# One task per shard


@dataclass(frozen=True)
class ShardJob:
    """One shard and where it goes: ``<config>/<split>-<index>-of-<total>.parquet``."""

    config: str
    split: str
    index: int
    total: int
    shard: Shard
    fingerprint: str

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:05d}-of-{self.total:05d}.parquet"


def _ref_key(ref: FileRef | None) -> list | None:
    return None if ref is None else [ref.name, ref.size, ref.md5]


#: Selection fields that say how a shard is computed, not what it holds (the output is the same).
_HOW_NOT_WHAT = ("encode_threads", "sibling_jobs")


def shard_fingerprint(shard: Shard, selection: Selection, features: datasets.Features, version: str) -> str:
    """What a shard's file depends on (not where its inputs are): equal fingerprints, equal files."""
    key = {
        "version": version,
        "features": features.to_dict(),
        "selection": {k: v for k, v in dataclasses.asdict(selection).items() if k not in _HOW_NOT_WHAT},
        "shard": {
            "config": shard.config,
            "recording": shard.recording,
            "camera": shard.camera,
            "chunk_index": shard.chunk_index,
            "sample_range": shard.sample_range,
            "split": shard.split,
            "pixel_shift": shard.pixel_shift,
            "mocap": _ref_key(shard.mocap),
            "annotation": _ref_key(shard.annotation),
            "chunks": {str(c): [[chunk.start, *_ref_key(chunk.file)] for chunk in v] for c, v in shard.chunks.items()},
        },
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def write_shard(
    job: ShardJob, selection: Selection, features: datasets.Features, to: str, storage_options: dict | None = None
) -> dict:
    """Generate one shard's examples and write them as ``<to>/<config>/<name>`` (what each Ray task runs).

    Written under a temporary name in the export's state folder, recorded (``<name>.json``: rows,
    bytes, fingerprint), then renamed into place: a final file is always complete.

    Returns:
        ``{"split", "name", "num_examples", "num_bytes", "download_size"}``.
    """
    from datasets.arrow_writer import ParquetWriter, get_writer_batch_size_from_features

    fs, root = fsspec.core.url_to_fs(to, **(storage_options or {}))
    root = root.rstrip("/")
    state = f"{root}/{STATE_DIR}/{job.config}.ray"
    final = f"{root}/{job.config}/{job.name}"
    tmp = f"{state}/{job.name}.{uuid.uuid4().hex[:12]}.tmp"
    fs.makedirs(state, exist_ok=True)
    fs.makedirs(f"{root}/{job.config}", exist_ok=True)
    try:
        with fs.open(tmp, "wb") as stream:
            # What `Dataset.to_parquet` (hence `hub.export_dataset`) does: the features' schema and
            # Parquet options, media bytes embedded. The features' Parquet batch size is 100 rows for
            # images in `datasets` 4 and none in `datasets` 5 (which aims at 100 MB, needing the
            # shard's size beforehand): the writer then falls back to its Arrow record batch, 100
            # rows for images.
            writer = ParquetWriter(
                features=features,
                stream=stream,
                writer_batch_size=get_writer_batch_size_from_features(features),
                embed_local_files=True,
            )
            for example in generate_shard(job.shard, selection):
                writer.write(example)
            num_examples, num_bytes = writer.finalize(close_stream=False)
        record = {
            "split": job.split,
            "name": job.name,
            "num_examples": num_examples,
            "num_bytes": num_bytes,
            "download_size": fs.size(tmp),
            "fingerprint": job.fingerprint,
        }
        fs.pipe_file(f"{state}/{job.name}.json", json.dumps(record).encode())
        fs.mv(tmp, final)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)
    return {k: v for k, v in record.items() if k != "fingerprint"}


# ----------------------------------------------------------------------------------------------
# The driver


def _connect(ray_address: str | None, num_cpus: int | None) -> bool:
    """Connect to Ray (``ray_address``) or start a local instance; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    quiet: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if ray_address:
        ray.init(address=ray_address, **quiet)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, **quiet)
    return True


def _plan(builder, download_dir: str | None) -> tuple[dict[str, list[Shard]], Selection]:
    """The builder's own plan; figshare files become fetch-on-open references into the shared cache."""
    if builder.config.data_dir:
        return builder.plan()
    from datasets.download.streaming_download_manager import StreamingDownloadManager

    cache_root = download_dir or builder._cache_downloaded_dir
    download_config = datasets.DownloadConfig(cache_dir=cache_root)
    if builder.config.source == "files":
        # Listings only: the index holds figshare URLs (with size and md5), fetched when read.
        dl_manager = StreamingDownloadManager(dataset_name="rat7m", download_config=download_config)
    else:
        # Article zips: downloaded (and checked) here, read in place by every task.
        dl_manager = datasets.DownloadManager(dataset_name="rat7m", download_config=download_config)
    cache_dir = os.path.abspath(os.path.join(download_config.cache_dir, "rat7m"))
    return builder.plan(dl_manager, index_transform=lambda index: fetch_on_open(index, cache_dir))


def _read_json(fs, path: str) -> dict | None:
    try:
        return json.loads(fs.cat_file(path))
    except (FileNotFoundError, ValueError):
        return None


def _in_flight_limit(ray) -> int:
    """How many shard tasks to keep submitted: twice the cluster's CPUs now (it may grow), at least 8."""
    return max(2 * int(ray.cluster_resources().get("CPU", 0)), MIN_IN_FLIGHT)


def _run_tasks(ray, submit: Callable, todo: list, done: dict, on_done: Callable[[dict], object]) -> None:
    """Run one task per job, a bounded number at a time, in the jobs' order; fill ``done`` by shard name.

    Tasks are never cancelled: a cancellation that crosses a task's completion takes the driver
    down with it (Ray 2.60: ``Check failed: ... Tried to complete task that was not pending``,
    then exit 1). So on a task's error no more tasks are submitted, the ones in flight (at most
    `_in_flight_limit`) finish (their shards are complete files a re-run keeps), and the error is raised.
    """
    queue = list(reversed(todo))  # popped from the end: the builder's order
    in_flight: dict = {}
    failure: Exception | None = None  # the first task error, raised once the tasks in flight are done
    while queue or in_flight:
        if failure is None:
            limit = _in_flight_limit(ray)
            while queue and len(in_flight) < limit:
                job = queue.pop()
                in_flight[submit(job)] = job
        elif not in_flight:
            break
        ray.wait(list(in_flight), num_returns=1, timeout=1.0)  # until one is done (or a second: new CPUs?) …
        ready, _ = ray.wait(list(in_flight), num_returns=len(in_flight), timeout=0)  # … then takes all done
        for ref in ready:
            del in_flight[ref]
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as error:  # a task's exception, a worker lost after retries
                failure = failure or error
                continue
            done[result["name"]] = result
            on_done(result)
    if failure is not None:
        cause = getattr(failure, "cause", None)
        if isinstance(cause, Rat7MError):
            raise cause from failure
        raise failure


def export_with_ray(
    config: str | Any,
    to: str | os.PathLike,
    *,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    download_dir: str | None = None,
    ray_address: str | None = None,
    num_cpus: int | None = None,
    max_retries: int = 3,
    storage_options: dict | None = None,
    card_body_path: str | os.PathLike | None = None,
    build_notes: dict | None = None,
    progress: bool = True,
    on_shard_done: Callable[[dict], object] | None = None,
    **config_kwargs,
) -> dict:
    """Export a config in the Hub layout with one Ray task per shard.

    Args:
        config: a config name (with ``data_dir``, ``cache_dir`` and the selection in
            ``config_kwargs``: ``recordings``, ``cameras``, ``frame_step``, ``jpeg_quality``,
            ``source``, ``annotation_file``), or a ``rat7m.Rat7M`` builder (then those are ignored).
        to: output folder or fsspec URL (``s3://bucket/rat7m``); every worker must be able to write there.
        data_dir: local copy of the release, at a path every worker can read; None: figshare.
        cache_dir: the builder's `datasets` cache folder (figshare listings and downloads go below it).
        download_dir: where figshare files are downloaded (default: the builder's downloads folder);
            on a cluster, a shared folder, or a node-local path that exists on every node.
        ray_address: a running Ray cluster (``ray://head:10001``, ``auto``); None starts a local
            Ray with ``num_cpus`` (default: all cores). An already initialised Ray is used as it is.
        num_cpus: CPUs of the local Ray (one task per CPU).
        max_retries: times Ray runs a task again after its worker died or it raised a transient
            error (download, checksum, connection, OS errors).
        storage_options: fsspec options for ``to`` (credentials, endpoint).
        card_body_path, build_notes: as in `hub.export_dataset` (default notes: the selection and
            what planning found, as ``rat7m export`` writes them).
        progress: show a progress bar over finished shards.
        on_shard_done: called in the driver with each finished shard's summary.

    Returns:
        ``{"config", "dir", "files", "splits": {split: {num_examples, num_bytes, download_size,
        num_shards}}, "num_examples", "tasks_run", "shards_skipped"}``.

    Raises:
        ImportError: ``ray`` is not installed (the message says how to install it).
        rat7m_builder.errors.Rat7MError: what a task raised (missing or corrupt files, …), after retries.
    """
    if not ray_available():
        raise ImportError(INSTALL_HINT)
    import ray
    from tqdm.auto import tqdm

    import rat7m

    from .cli import _notes
    from .hub import find_card_body, write_card

    if isinstance(config, rat7m.Rat7M):
        builder = config
    else:
        builder = rat7m.Rat7M(config_name=config, data_dir=data_dir, cache_dir=cache_dir, **config_kwargs)
    config_name = builder.config.name
    find_card_body(card_body_path)  # fail before any work
    # Refused before planning, which from figshare downloads each .mat and each camera's last chunk.
    if builder.config.on_corrupt_video != "error":
        # the tasks would leave damaged frames out without counting them on the card: a silent gap
        raise SelectionError(
            "on_corrupt_video='skip' is not supported by the Ray export (what it leaves out would not be "
            "counted in the card's build notes). Repair or re-download the damaged mp4s, or build with "
            "`rat7m export` / rat7m.prepare, which count what they skip."
        )
    features = builder.info.features
    splits, selection = _plan(builder, download_dir)
    # A task is given one CPU (num_cpus=1): it encodes in its decoding thread, as num_proc workers do.
    selection = dataclasses.replace(selection, encode_threads=1)
    if build_notes is None:
        build_notes = _notes(builder)

    version = str(builder.VERSION)
    jobs = [
        ShardJob(
            config_name, split, i, len(splits[split]), shard, shard_fingerprint(shard, selection, features, version)
        )
        for split in SPLIT_RECORDINGS
        if split in splits
        for i, shard in enumerate(splits[split])
    ]
    if not jobs:
        raise SelectionError(f"{config_name}: the selection has no shards to export.")

    fs, root = fsspec.core.url_to_fs(os.fspath(to), **(storage_options or {}))
    root = root.rstrip("/")
    # What every worker is given: an absolute path (a worker's working folder is not the driver's), or the URL.
    to = root if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(root)
    config_dir, state = f"{root}/{config_name}", f"{root}/{STATE_DIR}/{config_name}.ray"
    fs.makedirs(config_dir, exist_ok=True)
    fs.makedirs(state, exist_ok=True)
    planned = {job.name: job for job in jobs}
    existing = {os.path.basename(p): p for p in fs.find(config_dir)}
    records = {os.path.basename(p)[: -len(".json")]: p for p in fs.find(state) if p.endswith(".json")}
    for name, path in existing.items():  # shards of another plan would match `<split>-*` too
        if name not in planned:
            fs.rm(path)
    for path in fs.find(state):  # temporary files of tasks that were killed
        if path.endswith(".tmp"):
            fs.rm(path)

    done: dict[str, dict] = {}
    for name, job in planned.items():
        if name in existing and name in records:
            record = _read_json(fs, records[name])
            if (
                record
                and record.get("fingerprint") == job.fingerprint
                and record.get("download_size") == fs.size(existing[name])
            ):
                done[name] = {k: v for k, v in record.items() if k != "fingerprint"}
    todo = [job for job in jobs if job.name not in done]

    started = _connect(ray_address, num_cpus) if todo else False
    began = time.perf_counter()
    try:
        if todo:
            task = ray.remote(write_shard).options(
                num_cpus=1, max_retries=max_retries, retry_exceptions=RETRIED_EXCEPTIONS, name="rat7m-shard"
            )
            selection_ref, features_ref = ray.put(selection), ray.put(features)  # sent once, not per task
            bar = tqdm(
                total=len(jobs),
                initial=len(done),
                unit="shard",
                desc=f"rat7m {config_name} on Ray",
                disable=not progress,
            )

            def submit(job: ShardJob):
                return task.remote(job, selection_ref, features_ref, to, storage_options)

            def finished(result: dict) -> None:
                bar.update(1)
                if on_shard_done is not None:
                    on_shard_done(result)

            try:
                _run_tasks(ray, submit, todo, done, finished)
            finally:
                bar.close()
    finally:
        if started:
            ray.shutdown()

    summary: dict[str, dict] = {}
    for job in jobs:
        sizes = summary.setdefault(
            job.split, {"num_examples": 0, "num_bytes": 0, "download_size": 0, "num_shards": 0, "files": []}
        )
        record = done[job.name]
        for key in ("num_examples", "num_bytes", "download_size"):
            sizes[key] += record[key]
        sizes["num_shards"] += 1
        sizes["files"].append(f"{config_name}/{job.name}")
    write_card(
        to,
        config_name,
        features,
        summary,
        card_body_path=card_body_path,
        build_notes=build_notes,
        storage_options=storage_options,
    )
    fs.rm(state, recursive=True)  # complete: a later export of this config starts afresh
    parent = f"{root}/{STATE_DIR}"
    while parent != root:  # the empty .cache/huggingface/rat7m-export folders too (local file systems)
        try:
            fs.rmdir(parent)
        except OSError:
            break
        parent = parent.rsplit("/", 1)[0]
    logger.info("rat7m %s: %d shards on Ray in %.1f s", config_name, len(todo), time.perf_counter() - began)
    return {
        "config": config_name,
        "dir": to,
        "files": [f for s in summary.values() for f in s["files"]],
        "splits": summary,
        "num_examples": sum(s["num_examples"] for s in summary.values()),
        "tasks_run": len(todo),
        "shards_skipped": len(jobs) - len(todo),
    }
