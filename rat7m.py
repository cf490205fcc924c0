"""RAT7M as a Hugging Face `datasets` dataset: the builder, its configs and `load_dataset`.

RAT7M (Marshall, Aldarondo, Wang, Ölveczky, Dunn 2021; figshare collection 5295370) holds about
7 M video frames of freely moving rats from 6 calibrated cameras, with 20-marker motion capture.

    >>> import rat7m
    >>> frames = rat7m.load_dataset("frames", recordings=["s1-d1"], cameras=[1, 2], split="train")

Configs: ``mocap`` (one row per motion-capture sample), ``cameras`` (one row per recording and
camera), ``frames`` (one row per sample and camera: JPEG image + 2D/3D keypoints + calibration),
``multiview`` (one row per sample: every selected camera's image, keypoints and calibration),
``videos`` (one row per mp4 chunk) and ``mini`` (the mini-RAT7M benchmark). Pixel coordinates are 0-based
(the centre of the top-left pixel is (0, 0)); 3D coordinates are in mm; calibration is in OpenCV
form. `datasets` ≥ 4 runs no loading scripts, so this builder runs from this installed module;
the Hub gets plain Parquet (``rat7m export`` / ``rat7m push``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import glob
import logging
import numbers
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import datasets
import numpy as np
import pyarrow as pa
from datasets.arrow_writer import TypedSequence
from datasets.builder import Key
from datasets.download.streaming_download_manager import StreamingDownloadManager
from datasets.iterable_dataset import ArrowExamplesIterable

from rat7m_builder import metrics  # noqa: F401  (public: rat7m.metrics.mpjpe, …)
from rat7m_builder.errors import CorruptVideoWarning, Rat7MError, SelectionError
from rat7m_builder.examples import (
    CONFIG_NAMES,
    VIDEO_CONFIGS,
    Selection,
    Shard,
    frame_tables,
    generate_shard,
    mocap_table,
    plan_shards,
)
from rat7m_builder.features import FEATURES
from rat7m_builder.jobs import SiblingJobs
from rat7m_builder.manifest import (  # MARKER_NAMES, SKELETON_EDGES: public (the keypoint axis, the skeleton)
    CAMERAS,
    FIGSHARE_COLLECTION_URL,
    MARKER_NAMES,
    RECORDINGS,
    SKELETON_EDGES,
    SPLIT_RECORDINGS,
)
from rat7m_builder.mini import find_annotation, load_mini
from rat7m_builder.mocap import start_reader
from rat7m_builder.notes import (
    CORRUPT_VIDEO_HEADING,
    NOTES_DIR,
    ShardNotes,
    read_build_notes,
    read_plan_notes,
    shard_key,
    write_plan_notes,
    write_shard_notes,
)
from rat7m_builder.sources import ReleaseIndex, scan_local
from rat7m_builder.video import decode_frames
from rat7m_builder.writeback import PageCacheTrimmer

__all__ = [
    "MARKER_NAMES",
    "SKELETON_EDGES",
    "Rat7M",
    "Rat7MConfig",
    "decode_frames",
    "load_dataset",
    "metrics",
    "prepare",
]

logger = logging.getLogger("rat7m")

#: Configs prepared as Arrow tables built from arrays (`_generate_tables`) rather than example by example.
TABLE_CONFIGS = ("mocap", "frames")

_DESCRIPTION = (
    "RAT7M: about 7 M video frames of freely moving rats from 6 calibrated cameras with 20-marker 3D "
    "motion capture (Dunn et al. 2021, Nature Methods 18:564–573). Keypoints in mm (3D, world frame) "
    "and 0-based pixels (2D, projected with lens distortion); calibration in OpenCV form."
)
_CITATION = """\
@misc{rat7m2021,
  author = {Marshall, Jesse D. and Aldarondo, Diego and Wang, William and {\\"O}lveczky, Bence P. and Dunn, Timothy W.},
  title = {Rat 7M},
  year = {2021},
  publisher = {figshare},
  doi = {10.6084/m9.figshare.c.5295370.v3}
}
@article{dunn2021geometric,
  author = {Dunn, Timothy W. and Marshall, Jesse D. and Severson, Kyle S. and Aldarondo, Diego E. and
            Hildebrand, David G. C. and Chettih, Selmaan N. and Wang, William L. and Gellis, Amanda J. and
            Carlson, David E. and Aronov, Dmitriy and Freiwald, Winrich A. and Wang, Fan and {\\"O}lveczky, Bence P.},
  title = {Geometric deep learning enables {3D} kinematic profiling across species and environments},
  journal = {Nature Methods}, volume = {18}, pages = {564--573}, year = {2021}
}
"""
_SOURCES = ("files", "archives")
# Bump whenever the examples change: the `datasets` cache key has no code hash.
_VERSION = datasets.Version("1.1.0")  # 1.1.0: `mocap` rows name their cameras, `multiview` rows carry calibration
_ON_CORRUPT = ("error", "skip")


@dataclass
class Rat7MConfig(datasets.BuilderConfig):
    """A RAT7M config and its selection.

    Attributes:
        recordings: ``"s1-d1"``-style names; None = with ``data_dir`` the recordings whose .mat is
            there (for configs with images or videos: and an mp4 chunk of a selected camera), else
            all seven.
        cameras: camera numbers 1–6, used in ascending order (as the `frame_index` lists of `mocap` and
            `multiview` follow them); None = all six.
        frame_step: keep the samples whose ``sample_index`` is a multiple of this (≥ 1).
        jpeg_quality: JPEG quality of the images, 1–100.
        source: when downloading from figshare: ``"files"`` (only the needed files, verified) or
            ``"archives"`` (whole article zips, as the original helper script).
        annotation_file: for ``mini``: the annotation pickle (default: found below ``data_dir``).
        on_corrupt_video: ``"error"`` (default): a damaged mp4 fails the build with
            `VideoDecodeError` naming the file and frame. ``"skip"`` (``frames``, ``multiview``):
            the examples whose frame is damaged — with every frame predicted from it, up to the next
            keyframe — are left out, counted in a `CorruptVideoWarning` and in ``build_notes``
            (and so on the dataset card). Each chunk is then decoded twice (a full check first).
    """

    recordings: Sequence[str] | None = None
    cameras: Sequence[int] | None = None
    frame_step: int = 1
    jpeg_quality: int = 90
    source: str = "files"
    annotation_file: str | None = None
    on_corrupt_video: str = "error"

    def validate(self) -> None:
        """Check and normalise the selection; raises `SelectionError` (a ValueError) listing valid values."""
        if self.recordings is not None:
            recordings = [self.recordings] if isinstance(self.recordings, str) else list(self.recordings)
            unknown = [r for r in recordings if r not in RECORDINGS]
            if unknown or not recordings:
                problem = f"unknown {unknown}" if unknown else "an empty selection"
                raise SelectionError(f"recordings: {problem}. Valid recordings: {', '.join(RECORDINGS)}.")
            self.recordings = tuple(r for r in RECORDINGS if r in recordings)
        if self.cameras is not None:
            cameras = [self.cameras] if isinstance(self.cameras, numbers.Integral) else list(self.cameras)
            unknown = [c for c in cameras if _is_bool(c) or c not in CAMERAS]
            if unknown or not cameras:
                problem = f"unknown {unknown}" if unknown else "an empty selection"
                raise SelectionError(f"cameras: {problem}. Valid cameras: {', '.join(map(str, CAMERAS))}.")
            self.cameras = tuple(sorted(set(int(c) for c in cameras)))
        if not _is_integer(self.frame_step) or self.frame_step < 1:
            raise SelectionError(f"frame_step must be an integer ≥ 1, got {self.frame_step!r}.")
        self.frame_step = int(self.frame_step)
        quality = self.jpeg_quality
        if not _is_integer(quality) or not 1 <= quality <= 100:
            raise SelectionError(f"jpeg_quality must be an integer from 1 to 100, got {quality!r}.")
        self.jpeg_quality = int(quality)
        if self.source not in _SOURCES:
            raise SelectionError(f"source must be one of {', '.join(_SOURCES)}, got {self.source!r}.")
        if self.on_corrupt_video not in _ON_CORRUPT:
            raise SelectionError(
                f"on_corrupt_video must be one of {', '.join(_ON_CORRUPT)}, got {self.on_corrupt_video!r}."
            )


def _is_bool(value) -> bool:
    # True == 1: without this a flag passed by mistake would select camera 1 or a step of 1
    return isinstance(value, (bool, np.bool_))


def _is_integer(value) -> bool:
    """An integer, NumPy's included (``np.arange`` gives them), but no bool."""
    return isinstance(value, numbers.Integral) and not _is_bool(value)


#: The config keywords that select the examples (all but ``source`` change them).
_SELECTION_FIELDS = ("recordings", "cameras", "frame_step", "jpeg_quality", "annotation_file", "on_corrupt_video")

#: The selection keywords each config's examples depend on. The others are ignored for that config
#: (``jpeg_quality`` means nothing to ``mocap``): they neither split its cache nor enter its card, so
#: one set of keywords can serve several configs without building the same examples twice.
CONFIG_OPTIONS: dict[str, tuple[str, ...]] = {
    "mocap": ("recordings", "cameras", "frame_step"),
    "cameras": ("recordings", "cameras"),
    "frames": ("recordings", "cameras", "frame_step", "jpeg_quality", "on_corrupt_video"),
    "multiview": ("recordings", "cameras", "frame_step", "jpeg_quality", "on_corrupt_video"),
    "videos": ("recordings", "cameras", "frame_step"),
    # mini keeps on_corrupt_video="error": its rows are a fixed benchmark table
    "mini": ("recordings", "cameras", "frame_step", "jpeg_quality", "annotation_file"),
}

#: Every config keyword (the selection, and ``source``: how to fetch the same files).
CONFIG_KEYWORDS = (*_SELECTION_FIELDS, "source")
#: What `datasets` may pass on to a config: ours, and `datasets.BuilderConfig`'s own fields.
_BUILDER_CONFIG_FIELDS = frozenset(field.name for field in dataclasses.fields(Rat7MConfig))


def _canonical_config_kwargs(config_name: str, data_dir: str | None, kwargs: dict) -> dict:
    """``kwargs`` with the selection as it means, not as it was spelled (the cache folder is named after it).

    `datasets` names the cache folder after the config keywords as passed, so ``cameras=[3, 1]`` and
    ``[1, 3]``, or ``frame_step=1`` given or left out (the command line passes every default), would
    each build and cache the same examples again. Here the selection is validated and normalised
    (release order, ascending cameras, absolute paths) and defaults are left out.
    """
    given = {key: kwargs[key] for key in _SELECTION_FIELDS if kwargs.get(key) is not None}
    selection = Rat7MConfig(name=config_name, **given)
    selection.validate()  # an option the config ignores is still checked: a typo'd value is a mistake anyway
    defaults = Rat7MConfig(name=config_name)
    canonical = {key: value for key, value in kwargs.items() if key not in _SELECTION_FIELDS}
    for key in given:
        if key not in CONFIG_OPTIONS[config_name]:
            continue  # ignored by this config: left at its default
        value = getattr(selection, key)
        if value == getattr(defaults, key) or (key == "cameras" and value == CAMERAS):
            continue
        if key == "recordings" and value == RECORDINGS and data_dir is None:  # None means all seven then
            continue
        if key == "annotation_file":
            value = os.path.abspath(os.path.expanduser(value))
        canonical[key] = value
    return canonical


class Rat7M(datasets.GeneratorBasedBuilder):
    """The RAT7M dataset builder. See the module docstring and the dataset card for the columns."""

    VERSION = _VERSION
    BUILDER_CONFIG_CLASS = Rat7MConfig
    BUILDER_CONFIGS = [Rat7MConfig(name=name, version=_VERSION) for name in CONFIG_NAMES]
    DEFAULT_CONFIG_NAME = "frames"

    def __init__(self, *args, data_dir: str | None = None, **kwargs):
        kwargs.setdefault("dataset_name", "rat7m")
        local_index = None  # the scan of data_dir made here, reused by the plan
        if data_dir is not None:
            data_dir = os.path.abspath(os.path.expanduser(data_dir))
            config_name = kwargs.get("config_name") or self.DEFAULT_CONFIG_NAME
            if kwargs.get("recordings") is None and config_name in CONFIG_NAMES and config_name != "mini":
                # Resolved now, before `datasets` names the cache folder after the config's arguments:
                # a copy that later gains a recording must not load the cached build without it.
                selection = Rat7MConfig(name=config_name, cameras=kwargs.get("cameras"))
                selection.validate()
                cameras = selection.cameras or CAMERAS
                local_index = scan_local(data_dir)
                kwargs["recordings"] = _local_default_recordings(local_index, data_dir, config_name, cameras)
        config_name = kwargs.get("config_name") or self.DEFAULT_CONFIG_NAME
        if config_name == "mini" and data_dir is not None and kwargs.get("annotation_file") is None:
            # Resolved now, like the recordings above: the cache folder is then named after the pickle
            # the build reads, so pointing data_dir at another version of it builds again.
            kwargs["annotation_file"] = find_annotation(data_dir, None).location
        if config_name in CONFIG_NAMES:
            kwargs = _canonical_config_kwargs(config_name, data_dir, kwargs)
        super().__init__(*args, data_dir=data_dir, **kwargs)
        self._local_index: ReleaseIndex | None = local_index
        self.config.validate()
        #: What a build found worth telling (the dataset card's "Build notes"): heading → lines.
        self.build_notes: dict[str, list[str]] = {}

    def _create_builder_config(self, config_name=None, custom_features=None, config_id=None, **config_kwargs):
        # ``source`` only says how to fetch the same files: it stays out of the cache folder's name,
        # so a build from article zips and one from single files share their cache.
        source = config_kwargs.pop("source", None)
        # `datasets` would refuse an unknown keyword with its whole config printed and no valid list,
        # and would take ``name=`` as a new name for the config given (so "mocap" built "frames").
        unknown = sorted(set(config_kwargs) - _BUILDER_CONFIG_FIELDS)
        if "name" in config_kwargs and config_kwargs["name"] != (config_name or self.DEFAULT_CONFIG_NAME):
            unknown.append("name")
        if unknown:
            raise SelectionError(
                f"unknown keyword(s) {', '.join(unknown)} for the rat7m builder. Valid config keywords: "
                f"{', '.join(CONFIG_KEYWORDS)}; the config itself is chosen by config_name "
                f"({', '.join(CONFIG_NAMES)})."
            )
        builder_config, config_id = super()._create_builder_config(
            config_name, custom_features, config_id, **config_kwargs
        )
        if source is not None and source != builder_config.source:
            builder_config = copy.deepcopy(builder_config)  # never change the class's shared config
            builder_config.source = source
        return builder_config, config_id

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=_DESCRIPTION,
            features=FEATURES[self.config.name](),
            homepage=FIGSHARE_COLLECTION_URL,
            citation=_CITATION,
            license="Not stated by the publisher: see the figshare record.",
        )

    @property
    def selection(self) -> Selection:
        return Selection(
            recordings=tuple(self.config.recordings or RECORDINGS),
            cameras=tuple(self.config.cameras or CAMERAS),
            frame_step=self.config.frame_step,
            jpeg_quality=self.config.jpeg_quality,
            on_corrupt_video=self.config.on_corrupt_video,
        )

    def _release_index(self, dl_manager, default_recordings: tuple[str, ...] | None) -> tuple[ReleaseIndex, Selection]:
        selection = self.selection
        if self.config.recordings is None and default_recordings is not None:
            selection = dataclasses.replace(selection, recordings=default_recordings)
        if self.config.data_dir:
            index = self._local_index or scan_local(self.config.data_dir)
            if self.config.recordings is None and default_recordings is None:  # (resolved in __init__ unless mini)
                present = _local_default_recordings(index, self.config.data_dir, self.config.name, selection.cameras)
                selection = dataclasses.replace(selection, recordings=present)
            return index, selection
        from rat7m_builder.download import figshare_index

        streaming = isinstance(dl_manager, StreamingDownloadManager)
        cache_dir = os.path.join(
            dl_manager.download_config.cache_dir or datasets.config.DOWNLOADED_DATASETS_PATH, "rat7m"
        )
        index = figshare_index(
            selection.recordings,
            selection.cameras,
            cache_dir=str(cache_dir),
            need_video=self.config.name in VIDEO_CONFIGS,
            source=self.config.source,
            download=not streaming,
            # as in `datasets`: HF_DATASETS_OFFLINE=1 reuses cached listings and files without asking,
            # download_mode="force_redownload" fetches and verifies everything again
            offline=bool(datasets.config.HF_HUB_OFFLINE),
            force_download=bool(dl_manager.download_config.force_download),
        )
        return index, selection

    def plan(self, dl_manager=None, index_transform=None) -> tuple[dict[str, list[Shard]], Selection]:
        """The shards of each split and the selection, exactly as a prepare would run them; generates nothing.

        Used by `_split_generators` and by other engines (``rat7m_builder.ray_export``). Records
        build notes in `build_notes`.

        Args:
            dl_manager: a `datasets` download manager (a streaming one makes figshare refs remote
                URLs instead of downloading); not used with ``data_dir``.
            index_transform: called with the `ReleaseIndex` before planning; returns the index to plan with.
        """
        if self.config.name != "mini":
            start_reader()  # the .mat reader's start-up overlaps listing the release
        annotation = default_recordings = None
        if self.config.name == "mini":
            annotation = find_annotation(self.config.data_dir, self.config.annotation_file)
            default_recordings = tuple(load_mini(annotation).recordings)
        index, selection = self._release_index(dl_manager, default_recordings)
        if index_transform is not None:
            index = index_transform(index)
        notes: list[str] = []
        splits = plan_shards(self.config.name, selection, index, annotation=annotation, notes=notes)
        if notes:
            self.build_notes["pixel convention of the annotation's 2D keypoints"] = notes
        return splits, selection

    def _split_generators(self, dl_manager) -> list[datasets.SplitGenerator]:
        splits, selection = self.plan(dl_manager)
        return [
            datasets.SplitGenerator(name=split, gen_kwargs={"shards": splits[split], "selection": (selection,)})
            for split in SPLIT_RECORDINGS
            if split in splits
        ]

    def _generate_examples(self, shards: list[Shard], selection: tuple[Selection]) -> Iterator[tuple[Key, dict]]:
        # `selection` is a 1-tuple so `num_proc` hands it whole to every job (lists are split).
        for shard_id, shard in enumerate(shards):
            with self._shard_notes(shard) as notes:
                for example_id, example in enumerate(generate_shard(shard, selection[0], notes)):
                    yield Key(shard_id, example_id), example

    @contextlib.contextmanager
    def _shard_notes(self, shard: Shard) -> Iterator[ShardNotes]:
        """Notes of one shard (what ``on_corrupt_video="skip"`` left out), written when it is done."""
        notes = ShardNotes()
        yield notes
        notes_dir = getattr(self, "_notes_dir", None)  # set while preparing (not when streaming)
        if notes and notes_dir:
            write_shard_notes(notes_dir, shard_key(shard), notes)

    def _prepare_split(self, split_generator, *args, num_proc: int | None = None, **kwargs):
        num_shards = len(split_generator.gen_kwargs["shards"])
        if num_proc is None or num_proc <= 1 or num_shards <= 1:  # (one shard: `datasets` runs it here)
            return super()._prepare_split(split_generator, *args, num_proc=num_proc, **kwargs)
        # Each process then encodes in its decoding thread (every decode is single-threaded,
        # `video.DECODER_THREAD_TYPE`): the processes fill the cores (BENCHMARKS.md). When a job is
        # done, the others encode in threads on its idle core.
        (selection,) = split_generator.gen_kwargs["selection"]
        num_jobs = min(num_proc, num_shards)  # as `datasets` splits them
        # only `frames` jobs encode in threads once others are done (`CameraFrames.iter_jpegs`)
        jobs_dir = _jobs_folder() if self.config.name == "frames" else None
        sibling_jobs = SiblingJobs(jobs_dir, num_jobs) if jobs_dir is not None else None
        single = dataclasses.replace(selection, encode_threads=1, sibling_jobs=sibling_jobs)
        split_generator.gen_kwargs["selection"] = (single,)
        try:
            return super()._prepare_split(split_generator, *args, num_proc=num_proc, **kwargs)
        finally:
            split_generator.gen_kwargs["selection"] = (selection,)
            if jobs_dir is not None:
                shutil.rmtree(jobs_dir, ignore_errors=True)

    def _prepare_split_single(self, gen_kwargs, fpath, file_format, max_shard_size, split_info, job_id):
        if self.config.name not in TABLE_CONFIGS:
            updates = super()._prepare_split_single(gen_kwargs, fpath, file_format, max_shard_size, split_info, job_id)
        else:
            # `mocap` rows are many (≈170,000 per recording) and cheap: encoding them one by one through
            # `Features.encode_example` costs ~60 µs a row. `frames` rows are few but each carries a
            # ~250 KB JPEG. Both are written as Arrow tables built from the arrays, by `datasets`' own
            # table-writing loop; streaming still yields the same rows one by one.
            updates = datasets.ArrowBasedBuilder._prepare_split_single(
                self, gen_kwargs, fpath, file_format, max_shard_size, job_id
            )
        # This job's shard files (the shard number is the `*`); `datasets` reports progress after a
        # write at most every 0.05 s, which is when what was written gets written back and dropped.
        trimmer = PageCacheTrimmer(glob.escape(fpath).replace("SSSSS", "*").replace("JJJJJ", f"{job_id:05d}"))
        (selection,) = gen_kwargs["selection"]
        try:
            for update in updates:
                trimmer.trim()
                _, done, _ = update
                if done and selection.sibling_jobs is not None:
                    selection.sibling_jobs.finish(job_id)
                yield update
        except datasets.exceptions.DatasetGenerationError as error:
            if isinstance(error.__cause__, Rat7MError):
                raise Rat7MErrorOfJob(error.__cause__) from error.__cause__
            raise

    def _get_examples_iterable_for_split(self, split_generator: datasets.SplitGenerator) -> ArrowExamplesIterable:
        # Streaming. `datasets` would iterate `_generate_examples` as Python dicts and type them only
        # loosely (a Python int becomes int64 under with_format("numpy"/"torch"), a list keeps its
        # element dtype), so streamed rows differed in type from prepared ones. As Arrow tables of the
        # features' schema they are typed exactly as a prepared dataset's rows.
        return ArrowExamplesIterable(self._generate_streaming_tables, kwargs=split_generator.gen_kwargs)

    def _generate_streaming_tables(
        self, shards: list[Shard], selection: tuple[Selection]
    ) -> Iterator[tuple[Key, pa.Table]]:
        """`_generate_examples` as Arrow tables of the features' schema, for streaming.

        A ``mocap`` shard (one recording, the whole .mat read first anyway) is one table; rows with
        images or videos are one table each, so the first example comes after one frame's decoding.
        """
        features = self.info.features
        schema = features.arrow_schema
        if self.config.name == "mocap":
            for key, table in self._generate_tables(shards, selection):
                yield key, table if table.schema == schema else table.cast(schema)
            return
        for key, example in self._generate_examples(shards, selection):
            encoded = features.encode_example(example)
            # `TypedSequence` is how `datasets` itself writes generated examples (it converts nested
            # NumPy arrays, which `pa.Table.from_pylist` cannot), so the values are the prepared ones.
            columns = [pa.array(TypedSequence([encoded[name]], type=features[name])) for name in features]
            yield key, pa.Table.from_arrays(columns, schema=schema)

    def _generate_tables(self, shards: list[Shard], selection: tuple[Selection]) -> Iterator[tuple[Key, object]]:
        for shard_id, shard in enumerate(shards):
            if shard.config == "mocap":
                yield Key(shard_id, 0), mocap_table(shard, selection[0], self.info.features)
                continue
            with self._shard_notes(shard) as notes:
                for table_id, table in enumerate(frame_tables(shard, selection[0], self.info.features, notes)):
                    yield Key(shard_id, table_id), table

    def _download_and_prepare(self, dl_manager, verification_mode, **prepare_split_kwargs):
        # `datasets` prepares into `<cache>.incomplete` (under its lock) and reuses that folder as it is
        # after a killed run: start from an empty one, so nothing of the killed run survives.
        if os.path.basename(self._output_dir).endswith(".incomplete") and os.path.isdir(self._output_dir):
            for entry in os.scandir(self._output_dir):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.remove(entry.path)
        self._notes_dir = os.path.join(self._output_dir, NOTES_DIR)
        try:
            super()._download_and_prepare(dl_manager, verification_mode, **prepare_split_kwargs)
        finally:
            self._notes_dir = None
        # kept with the Arrow files: a later load from this cache reports what the planning found
        write_plan_notes(
            self._output_dir, {h: lines for h, lines in self.build_notes.items() if h != CORRUPT_VIDEO_HEADING}
        )

    def download_and_prepare(self, *args, **kwargs) -> None:
        """As in `datasets`; then reads the notes the build left (also from an earlier, cached build).

        Examples left out with ``on_corrupt_video="skip"`` are counted in ``build_notes`` and in a
        `CorruptVideoWarning`, every time the dataset is loaded.
        """
        self._say_if_another_prepare_runs(kwargs.get("output_dir"))
        super().download_and_prepare(*args, **kwargs)
        for heading, lines in read_plan_notes(self._output_dir).items():
            self.build_notes.setdefault(heading, lines)
        summary = read_build_notes(os.path.join(self._output_dir, NOTES_DIR))
        if summary:
            self.build_notes[CORRUPT_VIDEO_HEADING] = summary.lines()
            warnings.warn(
                f"rat7m {self.config.name}: {summary.headline()} (on_corrupt_video='skip'); "
                "see builder.build_notes, the dataset card's build notes, and the log for each file.",
                CorruptVideoWarning,
                stacklevel=2,
            )

    def _say_if_another_prepare_runs(self, output_dir: str | None) -> None:
        """`datasets` prepares under a file lock: a second prepare of the same config and cache waits for the
        first one silently, then reuses its result. Tell the user why nothing seems to happen."""
        output_dir = str(output_dir or self._cache_dir)
        lock_path = output_dir + "_builder.lock"  # the lock `datasets` 4–5 takes in download_and_prepare
        if "://" in output_dir or not os.path.exists(lock_path):
            return
        from datasets.utils._filelock import FileLock
        from filelock import Timeout

        try:
            with FileLock(lock_path, timeout=0):
                return
        except Timeout:
            logger.warning(
                "Another process is preparing rat7m %r in %s right now (it holds %s). Waiting for it to "
                "finish; its result is then reused, not built again.",
                self.config.name,
                output_dir,
                lock_path,
            )


def _jobs_folder() -> str | None:
    """A new temporary folder for the marks of a split's finished jobs (`SiblingJobs`), or None.

    None when no temporary folder can be made: sharing idle cores is only about speed, never a
    reason for a prepare to fail (the jobs then keep one thread each).
    """
    try:
        return tempfile.mkdtemp(prefix="rat7m-jobs-")
    except OSError as error:
        logger.info("rat7m: no temporary folder for the jobs' marks (%s); jobs will not share idle cores", error)
        return None


def _local_default_recordings(
    index: ReleaseIndex, data_dir: str, config_name: str, cameras: Sequence[int]
) -> tuple[str, ...]:
    """The recordings a config builds from a local copy when none are asked for.

    Those whose .mat the copy holds; for configs with images or videos, of those, the ones with an
    mp4 of a selected camera: a copy often holds every recording's .mat (the motion-capture article
    is one zip of all seven) but video of only some.

    Raises:
        SelectionError: no .mat at all, or (image/video configs) no video of any of them.
    """
    with_mocap = tuple(r for r in RECORDINGS if r in index.mocap)
    if not with_mocap:
        raise SelectionError(
            f"data_dir {data_dir}: no mocap-s*-d*.mat file found below it. Point data_dir at your RAT7M "
            "copy, or leave it out to download from figshare."
        )
    if config_name not in VIDEO_CONFIGS:
        return with_mocap
    with_video = tuple(r for r in with_mocap if any(index.chunks(r, camera) for camera in cameras))
    if not with_video:
        raise SelectionError(
            f"data_dir {data_dir}: motion capture for {', '.join(with_mocap)} but no video chunk of "
            f"camera(s) {', '.join(map(str, cameras))} of any of them (files named like "
            f"{with_mocap[0]}-camera{cameras[0]}-0.mp4). The {config_name!r} config needs the videos: add "
            "them, or choose the 'mocap' or 'cameras' config."
        )
    if with_video != with_mocap:
        logger.info(
            "rat7m %s: data_dir holds no video of the selected cameras for %s; building %s "
            "(pass recordings=[...] to choose).",
            config_name,
            ", ".join(r for r in with_mocap if r not in with_video),
            ", ".join(with_video),
        )
    return with_video


def load_dataset(
    config_name: str = "frames",
    split: str | None = None,
    *,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    streaming: bool = False,
    num_proc: int | None = None,
    download_mode: str | datasets.DownloadMode | None = None,
    verification_mode: str | datasets.VerificationMode | None = None,
    **config_kwargs,
):
    """Load a RAT7M config like `datasets.load_dataset` would, running the builder from this package.

    Args:
        config_name: ``"mocap"``, ``"cameras"``, ``"frames"``, ``"multiview"``, ``"videos"`` or ``"mini"``.
        split: ``"train"`` or ``"test"`` (returns a `Dataset`), or None (a `DatasetDict`).
        data_dir: a folder holding a local copy of the release anywhere below it (helper-script
            layout, flat, or figshare article zips); None downloads from figshare.
        cache_dir: `datasets` cache folder (downloads and Arrow files).
        streaming: return an `IterableDataset` (dict) that reads and decodes on the fly.
        num_proc: processes for preparing (one mp4 chunk per unit of work).
        download_mode, verification_mode: as in `datasets.load_dataset`.
        **config_kwargs: ``recordings``, ``cameras``, ``frame_step``, ``jpeg_quality``, ``source``,
            ``annotation_file`` (``mini``), ``on_corrupt_video`` (``"error"`` or ``"skip"``).

    Raises:
        ValueError: unknown config or an invalid selection (the message lists the valid values).
        rat7m_builder.errors.Rat7MError: missing, corrupt or malformed release files (the message
            names the file and what to do).
    """
    if "name" in config_kwargs:  # `datasets.load_dataset`'s name for the config
        name = config_kwargs.pop("name")
        if config_name not in ("frames", name):  # "frames": the default, i.e. not given
            raise SelectionError(f"config_name={config_name!r} and name={name!r} disagree: give the config once.")
        config_name = name
    builder = Rat7M(config_name=config_name, data_dir=data_dir, cache_dir=cache_dir, **config_kwargs)
    if streaming:
        return builder.as_streaming_dataset(split=split)
    prepare(builder, num_proc=num_proc, download_mode=download_mode, verification_mode=verification_mode)
    return builder.as_dataset(split=split)


def prepare(builder: Rat7M, **download_and_prepare_kwargs) -> None:
    """``builder.download_and_prepare(...)``, re-raising rat7m's own error rather than `datasets`' wrapper.

    `datasets` wraps whatever the example generator raised in a generic ``DatasetGenerationError``;
    our errors name the file and what to do, so they are what the user should see first.
    """
    try:
        builder.download_and_prepare(**download_and_prepare_kwargs)
    except Rat7MErrorOfJob as error:
        raise error.error from error
    except datasets.exceptions.DatasetGenerationError as error:
        cause = error.__cause__
        if isinstance(cause, Rat7MError):
            raise cause from error
        raise
    except Exception as error:
        # Ctrl-C during a `num_proc` prepare: `datasets` then collects its jobs' results with a
        # 0.05 s timeout, and that timeout's error replaces the interrupt. The user pressed Ctrl-C.
        if _interrupted(error):
            raise KeyboardInterrupt from error
        raise


class Rat7MErrorOfJob(datasets.exceptions.DatasetGenerationError):
    """rat7m's own error raised in a preparing job, carried whole to the process that prepares.

    `datasets` wraps a generator's error in a bare ``DatasetGenerationError`` and re-raises its own
    error type as it is. With ``num_proc`` > 1 the wrapper comes back from its worker process without
    its cause (pickling keeps only the "An error occurred" message), so the message that names the
    file and what to do was lost. This wrapper *is* the message, and pickles with the original.

    Attributes:
        error: the `Rat7MError` the job raised; `prepare` and `load_dataset` re-raise it.
    """

    def __init__(self, error: Rat7MError):
        super().__init__(str(error))
        self.error = error

    def __reduce__(self):
        return (type(self), (self.error,))


def _interrupted(error: BaseException) -> bool:
    """Whether a KeyboardInterrupt is among the errors that ``error`` was raised while handling."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__context__
    return False
