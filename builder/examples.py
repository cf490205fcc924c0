"""Per-shard example generation: the one implementation the builder, streaming and Ray all call.

`plan_shards` turns a selection and a `ReleaseIndex` into small, picklable shard descriptions
(one per mp4 chunk for ``frames``/``videos``, one per range of samples for ``multiview``, one per
recording for ``mocap``/``cameras``), validating up front what can be checked cheaply (missing
chunks, frames past the last chunk). `generate_shard` yields the examples of one shard. Parsed
motion capture is cached per process, so a worker reads each .mat once.
"""

from __future__ import annotations

import functools
import io
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from .camera import Camera
from .errors import AnnotationFormatError, FrameSizeError, MissingFileError, SelectionError, VideoDecodeError
from .jobs import SiblingJobs
from .manifest import CAMERAS, NUM_MARKERS, SPLIT_RECORDINGS, split_of, subject_and_day
from .mini import load_mini, mini_examples, mini_rows, pixel_convention
from .mocap import MocapRecording, read_mocap
from .notes import ShardNotes
from .sources import FileRef, ReleaseIndex, VideoChunk, describe_names, open_file
from .video import CameraFrames, FrameSize, count_frames, frame_size_message, probe_video

CONFIG_NAMES = ("mocap", "cameras", "frames", "multiview", "videos", "mini")
#: Configs that read video.
VIDEO_CONFIGS = ("frames", "multiview", "videos", "mini")


@dataclass(frozen=True)
class Selection:
    """What a config asks for.

    Attributes:
        recordings: recording names, in release order.
        cameras: camera numbers, ascending.
        frame_step: keep samples whose ``sample_index`` is a multiple of this.
        jpeg_quality: 1–100.
        on_corrupt_video: ``"error"`` (a damaged mp4 fails the build) or ``"skip"`` (``frames`` and
            ``multiview`` leave out the examples whose frame is damaged, counted in the shard notes).
        encode_threads: JPEG encoding threads per camera reader (`CameraFrames.iter_jpegs`) for
            ``frames``: 2 lets one process (``num_proc=1``, streaming) overlap decoding and encoding
            on two cores; ``num_proc`` > 1 sets 1 (the processes already fill the cores).
        sibling_jobs: set by a ``num_proc`` > 1 ``frames`` prepare: once other jobs are done, a
            job encodes in as many threads as their idle cores allow (`jobs.SiblingJobs`).
    """

    recordings: tuple[str, ...]
    cameras: tuple[int, ...]
    frame_step: int = 1
    jpeg_quality: int = 90
    on_corrupt_video: str = "error"
    encode_threads: int = 2
    sibling_jobs: SiblingJobs | None = None


@dataclass(frozen=True)
class Shard:
    """One unit of work (one ``gen_kwargs`` list entry).

    Attributes:
        config: config name.
        recording: recording name.
        mocap: the recording's .mat.
        chunks: camera → that camera's chunks (all of them: a shard may read across a boundary).
        camera: for ``frames``/``videos``: the camera; else None.
        chunk_index: for ``frames``/``videos``: which chunk of ``chunks[camera]``; else None.
        sample_range: for ``multiview``: ``(start, stop)`` sample indices; for ``mini``: positions in
            the recording's annotation rows (`mini.mini_rows`); else None.
        annotation: for ``mini``: the annotation pickle; else None.
        split: for ``mini``: the split whose rows the shard holds.
        pixel_shift: for ``mini``: subtracted from the table's 2D keypoints (see `mini.pixel_convention`).
        frame_sizes: camera → its frame size, probed once when planning (every chunk read must have it).
    """

    config: str
    recording: str
    mocap: FileRef | None
    chunks: dict[int, tuple[VideoChunk, ...]] = field(default_factory=dict)
    camera: int | None = None
    chunk_index: int | None = None
    sample_range: tuple[int, int] | None = None
    annotation: FileRef | None = None
    split: str | None = None
    pixel_shift: float = 0.0
    frame_sizes: dict[int, FrameSize] = field(default_factory=dict)


@functools.lru_cache(maxsize=2)
def load_mocap(ref: FileRef) -> MocapRecording:
    """Parse a .mat once per process (shards of the same recording share it)."""
    with open_file(ref) as file:
        return read_mocap(file, ref.label)


def selected_samples(recording: MocapRecording, frame_step: int) -> np.ndarray:
    """Sample indices kept by ``frame_step`` (multiples of it), ascending."""
    return np.arange(0, recording.num_samples, frame_step, dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# Planning


def plan_shards(
    config: str,
    selection: Selection,
    index: ReleaseIndex,
    annotation: FileRef | None = None,
    notes: list[str] | None = None,
) -> dict[str, list[Shard]]:
    """Split the selection into shards, grouped by split (splits without recordings are left out).

    Args:
        annotation: the mini-RAT7M annotation pickle, for the ``mini`` config.
        notes: build notes are appended here (e.g. the pixel convention found in the annotation).

    Raises:
        MissingFileError: a selected recording's .mat, or a selected camera's chunks, are absent
            or have gaps, or the motion capture refers to frames past the last chunk.
    """
    if config == "mini":
        assert annotation is not None
        return _plan_mini(selection, index, annotation, notes if notes is not None else [])
    missing_mocap = [r for r in selection.recordings if r not in index.mocap]
    if missing_mocap:
        raise MissingFileError(
            f"{index.description}: no motion capture for {missing_mocap} "
            f"(expected {describe_names(f'mocap-{r}.mat' for r in missing_mocap)}). Add the file(s), or "
            "choose recordings=[...] among those present."
        )
    splits: dict[str, list[Shard]] = {}
    for recording in selection.recordings:
        mocap_ref = index.mocap[recording]
        shards: list[Shard] = []
        if config in VIDEO_CONFIGS:
            mocap = load_mocap(mocap_ref)
            chunks = {camera: tuple(_checked_chunks(index, recording, camera)) for camera in selection.cameras}
            samples = selected_samples(mocap, selection.frame_step)
            sizes = _check_cameras_within_video(
                {camera: (chunks[camera], mocap.frame_index[camera][samples]) for camera in selection.cameras},
                recording,
                tolerate_damage=selection.on_corrupt_video == "skip",
            )
            if config in ("frames", "videos"):
                for camera in selection.cameras:
                    size = {camera: sizes[camera]} if camera in sizes else {}
                    for chunk_index in range(len(chunks[camera])):
                        shards.append(
                            Shard(
                                config,
                                recording,
                                mocap_ref,
                                {camera: chunks[camera]},
                                camera,
                                chunk_index,
                                frame_sizes=size,
                            )  # fmt: skip
                        )
            else:
                for sample_range in multiview_ranges(mocap, selection.cameras[0], chunks[selection.cameras[0]]):
                    shards.append(
                        Shard(config, recording, mocap_ref, chunks, sample_range=sample_range, frame_sizes=sizes)
                    )
        elif config == "cameras":
            first_chunks = {camera: index.chunks(recording, camera)[:1] for camera in selection.cameras}
            shards.append(Shard(config, recording, mocap_ref, {c: tuple(v) for c, v in first_chunks.items()}))
        elif config == "mocap":
            shards.append(Shard(config, recording, mocap_ref))
        else:
            raise SelectionError(f"Unknown config {config!r}. Valid configs: {', '.join(CONFIG_NAMES)}.")
        splits.setdefault(split_of(recording), []).extend(shards)
    return splits


def _plan_mini(
    selection: Selection, index: ReleaseIndex, annotation_ref: FileRef, notes: list[str]
) -> dict[str, list[Shard]]:
    annotation = load_mini(annotation_ref)
    absent = [camera for camera in selection.cameras if camera not in annotation.camera_numbers]
    if absent:
        held = ", ".join(str(camera) for camera in annotation.camera_numbers) or "none"
        raise AnnotationFormatError(
            f"{annotation_ref.name}: the annotation has no table for camera(s) "
            f"{', '.join(str(camera) for camera in absent)} (its cameras: {held}). Select those it has with "
            "cameras=[...], or download the annotation again if it should hold all six."
        )
    axes = {camera: annotation.camera_numbers.index(camera) for camera in selection.cameras}
    splits: dict[str, list[Shard]] = {}
    for recording in selection.recordings:
        convention = None
        for split in SPLIT_RECORDINGS:
            rows = mini_rows(annotation, recording, split, selection.frame_step)
            if rows.size == 0:
                continue
            convention = convention or pixel_convention(annotation, recording)
            chunks = {camera: tuple(_checked_chunks(index, recording, camera)) for camera in selection.cameras}
            sizes = _check_cameras_within_video(
                {camera: (chunks[camera], annotation.frame_index[rows, axes[camera]]) for camera in selection.cameras},
                recording,
                referrer=f"{annotation_ref.name} (its {recording} rows)",
            )
            reference = selection.cameras[0]
            starts = np.array([chunk.start for chunk in chunks[reference]], dtype=np.int64)
            chunk_of_row = np.searchsorted(starts, annotation.frame_index[rows, axes[reference]], side="right")
            cuts = [0, *(np.flatnonzero(np.diff(chunk_of_row)) + 1).tolist(), rows.size]
            for a, b in zip(cuts[:-1], cuts[1:], strict=True):
                splits.setdefault(split, []).append(
                    Shard(
                        "mini",
                        recording,
                        None,
                        chunks,
                        sample_range=(a, b),
                        annotation=annotation_ref,
                        split=split,
                        pixel_shift=convention.shift,
                        frame_sizes=sizes,
                    )  # fmt: skip
                )
        if convention is not None:
            notes.append(convention.note)
    return splits


def multiview_ranges(
    mocap: MocapRecording, camera: int, reference_chunks: Sequence[VideoChunk]
) -> list[tuple[int, int]]:
    """Sample ranges for ``multiview`` shards: cut wherever the first camera's frame changes chunk.

    A shard then reads about one chunk per camera (plus the synchronisation offset into the next),
    so every chunk is decoded about once in all, and shards match ``frames`` shards in size.
    """
    starts = np.array([chunk.start for chunk in reference_chunks], dtype=np.int64)
    chunk_of_sample = np.searchsorted(starts, mocap.frame_index[camera], side="right")
    cuts = [0, *(np.flatnonzero(np.diff(chunk_of_sample)) + 1).tolist(), mocap.num_samples]
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]


def _checked_chunks(index: ReleaseIndex, recording: str, camera: int) -> list[VideoChunk]:
    chunks = index.chunks(recording, camera)
    if not chunks:
        raise MissingFileError(
            f"{index.description}: camera {camera} of {recording} has no video chunks "
            f"(expected files named {recording}-camera{camera}-<start>.mp4, starting with "
            f"{recording}-camera{camera}-0.mp4). Add them, or leave camera {camera} out with cameras=[...] or "
            f"{recording} out with recordings=[...]."
        )
    starts = [chunk.start for chunk in chunks]
    step = _chunk_length(index, recording)
    expected = list(range(0, starts[-1] + 1, step)) if step else [0]
    missing = sorted(set(expected) - set(starts))
    irregular = sorted(set(starts) - set(expected))
    if missing or irregular:
        names = [f"{recording}-camera{camera}-{start}.mp4" for start in missing]
        problems = [f"missing {describe_names(names)}"] if names else []
        if irregular:
            problems.append(
                f"starts {irregular} are not multiples of the chunk length ({step} frames)"
                if step
                else f"unexpected starts {irregular}"
            )
        raise MissingFileError(
            f"{index.description}: camera {camera} of {recording} has gaps in its video chunks: "
            + "; ".join(problems)
            + ". Restore the missing chunk files (download them again), or leave this camera out."
        )
    return chunks


def _chunk_length(index: ReleaseIndex, recording: str) -> int | None:
    """The recording's chunk length in frames: the most common gap between consecutive chunk starts.

    Taken over every camera of the recording that the copy holds, not only the selected one, so that
    a camera missing its second chunk (or every other chunk) is measured against its siblings rather
    than against its own first gap. Ties go to the shorter gap; ``None`` when no camera has two chunks.
    """
    gaps: Counter[int] = Counter()
    for camera in CAMERAS:
        starts = [chunk.start for chunk in index.chunks(recording, camera)]
        gaps.update(b - a for a, b in zip(starts, starts[1:], strict=False))
    if not gaps:
        return None
    return min(gaps, key=lambda gap: (-gaps[gap], gap))


def _check_cameras_within_video(
    frames_by_camera: dict[int, tuple[Sequence[VideoChunk], np.ndarray]],
    recording: str,
    tolerate_damage: bool = False,
    referrer: str | None = None,
) -> dict[int, FrameSize]:
    """`_check_frames_within_video` for each camera, the chunks probed in parallel.

    Each probe opens an mp4 (≈ 20 ms locally, a few round trips from figshare); the first error
    in camera order is raised. Returns each camera's frame size as probed (cameras whose probe
    found nothing to read are left out).
    """
    with ThreadPoolExecutor(max(len(frames_by_camera), 1), thread_name_prefix="rat7m-probe") as pool:
        checks = {
            camera: pool.submit(
                _check_frames_within_video, chunks, frames, recording, camera, tolerate_damage, referrer
            )
            for camera, (chunks, frames) in frames_by_camera.items()
        }
        sizes = {camera: check.result() for camera, check in checks.items()}
    return {camera: size for camera, size in sizes.items() if size is not None}


def _check_frames_within_video(
    chunks: Sequence[VideoChunk],
    frames: np.ndarray,
    recording: str,
    camera: int,
    tolerate_damage: bool = False,
    referrer: str | None = None,
) -> FrameSize | None:
    """Fail before decoding anything if the motion capture refers to frames past the last chunk.

    Probes the chunk holding the highest frame asked for (a chunk that will be read, so nothing
    is fetched in vain) and returns its frame size, which every chunk of the camera must have
    (`video.CameraFrames`); None when no frame is asked for.

    ``referrer``: what holds ``frames``, for the message (default: the recording's motion capture).
    ``tolerate_damage`` (``on_corrupt_video="skip"``): an unreadable chunk is not an error here
    (None); its frames are left out (and counted) when the examples are generated.
    """
    if frames.size == 0:
        return None
    highest = int(frames.max())
    last = next((chunk for chunk in reversed(chunks) if chunk.start <= highest), None)
    if last is None:  # before the first chunk: `video.CameraFrames` says so when it is asked for
        return None
    with open_file(last.file) as file:
        try:
            info = probe_video(file, last.file.label)
        except VideoDecodeError:
            if tolerate_damage:
                return None
            raise
    size = FrameSize(info.width, info.height, last.file.label)
    if last is not chunks[-1]:
        return size
    if info.num_frames is not None and highest >= last.start + info.num_frames:
        raise MissingFileError(
            f"{last.file.label}: {referrer or f'the motion capture of {recording}'} refers to camera {camera} "
            f"frame {highest}, "
            f"but the last chunk present starts at {last.start} and holds {info.num_frames} frames "
            f"(up to frame {last.start + info.num_frames - 1}). Chunk(s) after it are missing or it is "
            "truncated: restore them (download again)."
        )
    return size


# ----------------------------------------------------------------------------------------------
# Generation


def opencv_calibration(camera: Camera) -> dict[str, np.ndarray]:
    """The calibration columns of an example, in OpenCV form with 0-based pixels (float64)."""
    cv = camera.to_opencv()
    return {
        "intrinsic_matrix": cv.camera_matrix,
        "rotation_matrix": cv.rotation_matrix,
        "translation_vector": cv.translation_vector,
        "distortion": cv.distortion,
    }


def _recording_columns(recording: str) -> dict:
    subject, day = subject_and_day(recording)
    return {"recording": recording, "subject": subject, "day": day}


def generate_shard(shard: Shard, selection: Selection, notes: ShardNotes | None = None) -> Iterator[dict]:
    """Yield the examples of one shard, in a deterministic order.

    Args:
        notes: with ``on_corrupt_video="skip"``, what the shard left out is added here.
    """
    if shard.config == "mocap":
        yield from _mocap_examples(shard, selection)
    elif shard.config == "cameras":
        yield from _camera_examples(shard, selection)
    elif shard.config == "frames":
        yield from _frame_examples(shard, selection, notes)
    elif shard.config == "multiview":
        yield from _multiview_examples(shard, selection, notes)
    elif shard.config == "videos":
        yield from _video_examples(shard, selection)
    elif shard.config == "mini":
        yield from _mini_examples(shard, selection)
    else:
        raise SelectionError(f"Unknown config {shard.config!r}. Valid configs: {', '.join(CONFIG_NAMES)}.")


def _mocap_examples(shard: Shard, selection: Selection) -> Iterator[dict]:
    mocap = load_mocap(shard.mocap)
    keypoints = mocap.keypoints_3d.astype(np.float32)
    frame_index = np.stack([mocap.frame_index[c] for c in selection.cameras], axis=1).astype(np.int32)
    base = _recording_columns(shard.recording)
    cameras = list(selection.cameras)
    for t in selected_samples(mocap, selection.frame_step):
        yield {
            **base,
            "sample_index": int(t),
            "keypoints_3d": keypoints[t],
            "cameras": cameras,
            "frame_index": frame_index[t],
        }


def mocap_table(shard: Shard, selection: Selection, features) -> pa.Table:
    """The ``mocap`` rows of a shard as one Arrow table, built from the arrays (no per-row encoding).

    The same rows, in the same order and with the same types, as `generate_shard` yields for it;
    preparing ``mocap`` writes these (≈170,000 rows per recording), streaming yields the rows.
    """
    mocap = load_mocap(shard.mocap)
    samples = selected_samples(mocap, selection.frame_step)
    count = samples.size
    subject, day = subject_and_day(shard.recording)
    keypoints = np.ascontiguousarray(mocap.keypoints_3d[samples], dtype=np.float32).reshape(-1)
    frames = np.stack([mocap.frame_index[c][samples] for c in selection.cameras], axis=1).astype(np.int32)
    # Every row names the cameras its `frame_index` list follows, as `multiview` rows do.
    offsets = pa.array(np.arange(count + 1, dtype=np.int32) * len(selection.cameras))
    cameras = np.tile(np.asarray(selection.cameras, dtype=np.int32), count)
    columns = {
        "recording": pa.array([shard.recording] * count, pa.string()),
        "subject": pa.array(np.full(count, subject, np.int32)),
        "day": pa.array(np.full(count, day, np.int32)),
        "sample_index": pa.array(samples.astype(np.int32)),
        "keypoints_3d": _fixed_size_lists(keypoints, features.arrow_schema.field("keypoints_3d").type),
        "cameras": pa.ListArray.from_arrays(offsets, pa.array(cameras)),
        "frame_index": pa.ListArray.from_arrays(offsets, pa.array(frames.reshape(-1))),
    }
    return pa.Table.from_pydict(columns).cast(features.arrow_schema)


def _camera_examples(shard: Shard, selection: Selection) -> Iterator[dict]:
    mocap = load_mocap(shard.mocap)
    for camera in selection.cameras:
        width = height = None
        first = shard.chunks.get(camera)
        if first:
            with open_file(first[0].file) as file:
                info = probe_video(file, first[0].file.label)
            width, height = info.width, info.height
        yield {
            "recording": shard.recording,
            "camera": camera,
            **opencv_calibration(mocap.cameras[camera]),
            "image_width": width,
            "image_height": height,
        }


def chunk_samples(chunks: Sequence[VideoChunk], chunk_index: int, frames: np.ndarray) -> np.ndarray:
    """Positions in ``frames`` whose frame lies in chunk ``chunk_index`` (up to the next chunk's start)."""
    start = chunks[chunk_index].start
    stop = chunks[chunk_index + 1].start if chunk_index + 1 < len(chunks) else np.iinfo(np.int64).max
    return np.flatnonzero((frames >= start) & (frames < stop))


#: Rows per Arrow table when ``frames`` is prepared through `frame_tables`: the record batch size
#: `datasets` uses for image columns, so the Arrow files have the same batches as example-by-example.
FRAME_TABLE_ROWS = 100


@dataclass
class _FrameRows:
    """The rows of one ``frames`` shard, in order: columns as arrays, images from a generator."""

    constant: dict
    samples: np.ndarray
    frames: np.ndarray
    keypoints_3d: np.ndarray
    keypoints_2d: np.ndarray
    images: Iterator[tuple[int, bytes]]  # (row, JPEG bytes); rows whose frame is damaged are left out


def _frame_rows(shard: Shard, selection: Selection, video: CameraFrames, notes: ShardNotes) -> _FrameRows:
    assert shard.camera is not None and shard.chunk_index is not None
    mocap = load_mocap(shard.mocap)
    camera = mocap.cameras[shard.camera]
    chunks = shard.chunks[shard.camera]
    samples = selected_samples(mocap, selection.frame_step)
    frames = mocap.frame_index[shard.camera][samples]
    inside = chunk_samples(chunks, shard.chunk_index, frames)
    # Decode order: by frame, then sample (a repeated frame is encoded once, yielded per sample).
    inside = inside[np.lexsort((samples[inside], frames[inside]))]
    samples, frames = samples[inside], frames[inside]
    keypoints_3d = mocap.keypoints_3d[samples]
    keypoints_2d = camera.project(keypoints_3d).astype(np.float32)  # one vectorised call per chunk

    def images() -> Iterator[tuple[int, bytes]]:
        spare_threads = selection.sibling_jobs.spare_threads if selection.sibling_jobs is not None else None
        for row, image in enumerate(video.iter_jpegs(frames.tolist(), selection.encode_threads, spare_threads)):
            if image is None:  # on_corrupt_video="skip": a damaged frame, counted, never a silent gap
                notes.rows_skipped += 1
            else:
                yield row, image

    return _FrameRows(
        constant={**_recording_columns(shard.recording), "camera": shard.camera, **opencv_calibration(camera)},
        samples=samples,
        frames=frames,
        keypoints_3d=keypoints_3d.astype(np.float32),
        keypoints_2d=keypoints_2d,
        images=images(),
    )


def _frame_examples(shard: Shard, selection: Selection, notes: ShardNotes | None = None) -> Iterator[dict]:
    notes = notes if notes is not None else ShardNotes()
    with _camera_frames(shard, selection, shard.camera, selection.on_corrupt_video) as video:
        rows = _frame_rows(shard, selection, video, notes)
        for row, image in rows.images:
            yield {
                "image": {"bytes": image, "path": None},
                **rows.constant,
                "sample_index": int(rows.samples[row]),
                "frame_index": int(rows.frames[row]),
                "keypoints_3d": rows.keypoints_3d[row],
                "keypoints_2d": rows.keypoints_2d[row],
            }
        notes.add_reader(video)


def frame_tables(shard: Shard, selection: Selection, features, notes: ShardNotes | None = None) -> Iterator[pa.Table]:
    """The ``frames`` rows of a shard as Arrow tables of `FRAME_TABLE_ROWS` rows, built from the arrays.

    The same rows, in the same order and with the same types, as `generate_shard` yields for it
    (preparing writes these; streaming yields the rows). Skips `datasets`' per-example encoding,
    about a millisecond a frame.
    """
    notes = notes if notes is not None else ShardNotes()
    schema = features.arrow_schema
    with _camera_frames(shard, selection, shard.camera, selection.on_corrupt_video) as video:
        rows = _frame_rows(shard, selection, video, notes)
        batch: list[tuple[int, bytes]] = []
        for item in rows.images:
            batch.append(item)
            if len(batch) == FRAME_TABLE_ROWS:
                yield _frames_table(rows, batch, schema)
                batch = []
        if batch:
            yield _frames_table(rows, batch, schema)
        notes.add_reader(video)


def _frames_table(rows: _FrameRows, batch: list[tuple[int, bytes]], schema: pa.Schema) -> pa.Table:
    count = len(batch)
    positions = np.fromiter((row for row, _ in batch), np.int64, count)
    image_type = schema.field("image").type
    jpegs = _binary_array([image for _, image in batch])
    images = pa.StructArray.from_arrays(
        [jpegs, pa.nulls(count, pa.string())],
        fields=list(image_type),
    )
    columns = {"image": images}
    for name, value in rows.constant.items():
        kind = schema.field(name).type
        if isinstance(value, np.ndarray):  # calibration: the same matrix on every row
            flat = np.tile(np.ascontiguousarray(value, np.float64).reshape(-1), count)
            columns[name] = _fixed_size_lists(flat, kind)
        else:
            columns[name] = pa.array([value] * count, kind)
    columns["sample_index"] = pa.array(rows.samples[positions].astype(np.int32))
    columns["frame_index"] = pa.array(rows.frames[positions].astype(np.int32))
    for name in ("keypoints_3d", "keypoints_2d"):
        values = np.ascontiguousarray(getattr(rows, name)[positions], np.float32).reshape(-1)
        columns[name] = _fixed_size_lists(values, schema.field(name).type)
    return pa.Table.from_pydict({name: columns[name] for name in schema.names}, schema=schema)


def _binary_array(values: list[bytes]) -> pa.Array:
    """``values`` as an Arrow binary array whose data buffer is one exact-size join of them.

    ``pa.array`` appends value by value into a growing buffer: 75 µs a 245 KiB JPEG against 20 µs
    for one join (measured here). The join is a Python bytes object (glibc's allocator), which keeps a
    freed batch's ~25 MB in the heap for the next one: first touches of fresh pages are slow on VMs.
    """
    offsets = np.zeros(len(values) + 1, np.int64)
    np.cumsum([len(value) for value in values], out=offsets[1:])
    if offsets[-1] > np.iinfo(np.int32).max:
        raise ValueError(
            f"{len(values)} images of {offsets[-1]} bytes in all do not fit one Arrow binary array (2 GiB at "
            "most); RAT7M's JPEGs are ~250 KB. Lower jpeg_quality or report the video that makes them so large."
        )
    data = b"".join(values)
    return pa.Array.from_buffers(
        pa.binary(), len(values), [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)]
    )


def _fixed_size_lists(values: np.ndarray, kind: pa.DataType) -> pa.Array:
    """``values`` (flat, C order) as an array of type ``kind`` (nested fixed-size lists)."""
    if pa.types.is_fixed_size_list(kind):
        return pa.FixedSizeListArray.from_arrays(_fixed_size_lists(values, kind.value_type), kind.list_size)
    return pa.array(values, kind)


def _multiview_examples(shard: Shard, selection: Selection, notes: ShardNotes | None = None) -> Iterator[dict]:
    assert shard.sample_range is not None
    mocap = load_mocap(shard.mocap)
    samples = selected_samples(mocap, selection.frame_step)
    samples = samples[(samples >= shard.sample_range[0]) & (samples < shard.sample_range[1])]
    cameras = selection.cameras
    keypoints_3d = mocap.keypoints_3d[samples]
    keypoints_2d = np.stack([mocap.cameras[c].project(keypoints_3d) for c in cameras], axis=1).astype(np.float32)
    keypoints_3d = keypoints_3d.astype(np.float32)
    frames = np.stack([mocap.frame_index[c][samples] for c in cameras], axis=1)
    base = _recording_columns(shard.recording)
    # One entry per camera of the row, in the order of `cameras`, as `frames` rows carry one camera's.
    per_camera = [opencv_calibration(mocap.cameras[c]) for c in cameras]
    calibration = {name: np.stack([columns[name] for columns in per_camera]) for name in per_camera[0]}
    on_corrupt = selection.on_corrupt_video
    readers = [_camera_frames(shard, selection, c, on_corrupt) for c in cameras]
    notes = notes if notes is not None else ShardNotes()
    try:
        for row, sample in enumerate(samples.tolist()):
            images = [reader.get(int(f)) for reader, f in zip(readers, frames[row], strict=True)]
            if any(image is None for image in images):  # on_corrupt_video="skip": counted, never a silent gap
                notes.rows_skipped += 1
                continue
            yield {
                "images": [{"bytes": image, "path": None} for image in images],
                "cameras": list(cameras),
                "frame_index": frames[row].astype(np.int32),
                "keypoints_3d": keypoints_3d[row],
                "keypoints_2d": keypoints_2d[row],
                **base,
                "sample_index": sample,
                **calibration,
            }
    finally:
        for reader in readers:
            notes.add_reader(reader)
            reader.close()


def _camera_frames(shard: Shard, selection: Selection, camera: int, on_corrupt: str) -> CameraFrames:
    """The JPEG frame reader of one camera of a shard, with the selection's quality."""
    return CameraFrames(
        shard.chunks[camera],
        selection.jpeg_quality,
        f"{shard.recording} camera {camera}",
        on_corrupt,
        frame_size=shard.frame_sizes.get(camera),
    )


def _video_examples(shard: Shard, selection: Selection) -> Iterator[dict]:
    """One row per chunk: the mp4 bytes unchanged, plus per-frame motion capture and keypoints."""
    assert shard.camera is not None and shard.chunk_index is not None
    mocap = load_mocap(shard.mocap)
    camera = mocap.cameras[shard.camera]
    chunk = shard.chunks[shard.camera][shard.chunk_index]
    with open_file(chunk.file) as file:
        video_bytes = file.read()
    expected = shard.frame_sizes.get(shard.camera)
    if expected is not None:
        info = probe_video(io.BytesIO(video_bytes), chunk.file.label)
        if (info.width, info.height) != (expected.width, expected.height):
            label = f"{shard.recording} camera {shard.camera}"
            raise FrameSizeError(frame_size_message(chunk.file.label, info.width, info.height, expected, label))
    num_frames = count_frames(io.BytesIO(video_bytes), chunk.file.label)
    samples = selected_samples(mocap, selection.frame_step)
    frames = mocap.frame_index[shard.camera][samples]
    inside = chunk_samples(shard.chunks[shard.camera], shard.chunk_index, frames)
    positions = frames[inside] - chunk.start
    past_end = positions >= num_frames
    if past_end.any():
        raise VideoDecodeError(
            f"{chunk.file.label}: the motion capture asks for global frame {int(frames[inside][past_end].max())} "
            f"but this chunk holds {num_frames} frames (from {chunk.start}). A chunk is missing or this "
            "file is truncated: restore it (download it again)."
        )
    # Per video frame: the first selected sample showing it (a repeated frame index keeps the earlier sample).
    sample_index = np.full(num_frames, -1, dtype=np.int64)
    for position, sample in zip(positions[::-1].tolist(), samples[inside][::-1].tolist(), strict=True):
        sample_index[position] = sample
    has_sample = sample_index >= 0
    keypoints_3d = np.full((num_frames, NUM_MARKERS, 3), np.nan)
    keypoints_3d[has_sample] = mocap.keypoints_3d[sample_index[has_sample]]
    keypoints_2d = camera.project(keypoints_3d).astype(np.float32)
    yield {
        "video": {"bytes": video_bytes, "path": chunk.file.name},
        **_recording_columns(shard.recording),
        "camera": shard.camera,
        "start_frame": chunk.start,
        "num_frames": num_frames,
        "sample_index": sample_index.astype(np.int32),
        "keypoints_3d": keypoints_3d.astype(np.float32),
        "keypoints_2d": keypoints_2d,
        **opencv_calibration(camera),
    }


def _mini_examples(shard: Shard, selection: Selection) -> Iterator[dict]:
    assert shard.annotation is not None and shard.sample_range is not None and shard.split is not None
    annotation = load_mini(shard.annotation)
    rows = mini_rows(annotation, shard.recording, shard.split, selection.frame_step)
    rows = rows[shard.sample_range[0] : shard.sample_range[1]]
    # mini keeps on_corrupt_video="error": its rows come from a fixed benchmark table
    readers = {camera: _camera_frames(shard, selection, camera, "error") for camera in selection.cameras}
    try:
        yield from mini_examples(annotation, rows, selection.cameras, shard.pixel_shift, readers, shard.recording)
    finally:
        for reader in readers.values():
            reader.close()
