"""Benchmark frame preparation against the codec limit and the original extraction script.

Fabricates a clip set in the release's video format (``bench_clips.py``: 1320×1048, 30 frames/s,
H.264, ~35 KiB/frame, 600 frames per camera chunk, 2 chunks per camera), then runs the registered
measurements on the same files, in order, prints a table with ratios and optionally writes
everything as JSON:

- ``decode``: PyAV decode only, frames/s; the best decoder threading of a sweep over thread types
  and counts, in one process (chunks in order) and in two processes (one chunk each).
- ``limit``: decode + JPEG at the builder's quality, the fastest way found using both cores, no
  ``datasets``: JPEG encoders (YUV planes → simplejpeg with the range stretch done by the builder's
  tables (cv2.LUT in row bands, or ``bytes.translate`` without OpenCV), by swscale, by cv2.LUT on
  whole planes or by numpy; RGB → simplejpeg; Pillow) × {one process with a 2-thread encode pool,
  two processes with one chunk each}.
- ``original``: the original script's method as users run it (``extract_frames.py`` of the RAT7M
  helper scripts): one process, ``cv2.VideoCapture`` sequential read + ``cv2.imwrite`` of every frame
  to its own JPEG file (``<camera>/frame_{index:06d}.jpg``, after the script's ``os.path.exists``
  check) at the builder's quality. ``frames`` writes its output to disk too, so both sides pay for
  their writes. Also measured and reported beside it, without a target: the same loop encoding in
  memory only (``cv2.imencode``, no files; ``original_in_memory``), the figure earlier runs used.
  The script's other per-frame cost, a membership test of the frame index in a numpy array of all
  annotated frames (linear in the array), is left out: it is not the method, only its slowness.
- ``jpeg_check``: the YUV-plane JPEG against the RGB-path and OpenCV JPEGs (mean abs diff, 0–255).
- ``video_bytes``: source video bytes per frame.

Measurements needing the builder (``frames_1``, ``frames_2``, ``mocap``, peak memory, bytes per
frame of the prepared ``frames``) register themselves in the marked section below with
``@measurement(name)``; the table and the ratios pick them up.

The machine is shared: every variant runs ``--rounds`` times interleaved and its best round
counts; each round also records the CPU the rest of the machine used meanwhile ("others' cores",
counting every process of ours, prepare children included, as ours) and our own CPU time per frame
(CPU-ms/frame, which other load barely moves). Ratios are given both ways. The machine's speed
also drifts during a run, so ``paired`` runs the best ``limit`` variant, ``original`` (and its
in-memory loop), ``frames_1`` and ``frames_2`` back to back in each round (``--paired-rounds``, 5 by
default: the per-round ratios spread by a few per cent, and a median of 5 moves less than one of 3)
and gives the median of the per-round ratios.

Usage: ``python scripts/bench.py [--quick] [--json PATH] [--workdir DIR] [--only a,b] [--cameras N]
[--chunks N] [--max-frames N] [--rounds N] [--paired-rounds N] [--quiet SECONDS] [--quality Q]``.
``--quick``: 2 cameras × 1 chunk, 2 rounds, fewer variants (about 5 minutes; the full run about an hour).
"""

from __future__ import annotations

import argparse
import collections
import importlib.metadata
import io
import json
import multiprocessing
import os
import platform
import resource
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np
import simplejpeg
from av.video.reformatter import ColorRange, VideoReformatter
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_clips import ClipSpec, clip_records, fabricate_clips, fabricate_mocap  # noqa: E402

from rat7m_builder.video import (  # noqa: E402
    CHROMA_TO_FULL_RANGE,
    LUMA_TO_FULL_RANGE,
    encode_jpeg,
    full_range_plane,
    plane_view,
)

DEFAULT_QUALITY = 90
WORKERS = 2

# ----------------------------------------------------------------------------------------------
# JPEG from a decoded PyAV frame. Each takes (frame, quality) and returns JPEG bytes.


def _plane_views(frame: av.VideoFrame) -> list[np.ndarray]:
    """Zero-copy (height, width) views of a yuv420p frame's planes (`rat7m_builder.video.plane_view`)."""
    return [plane_view(plane) for plane in frame.planes]


_local = threading.local()


def _full_range(frame: av.VideoFrame) -> av.VideoFrame:
    """The frame with full-range ("JPEG") YCbCr, as JFIF expects; swscale stretches limited range.

    One `VideoReformatter` per thread: it keeps its swscale context between frames, which halves
    the cost against ``frame.reformat`` (a new context per call: ~1.3 ms vs ~0.6 ms at 1320×1048).
    """
    if frame.format.name == "yuvj420p" or frame.color_range == ColorRange.JPEG:
        return frame
    reformatter = getattr(_local, "reformatter", None)
    if reformatter is None:
        reformatter = _local.reformatter = VideoReformatter()
    return reformatter.reformat(frame, format="yuv420p", dst_color_range=ColorRange.JPEG)


def jpeg_yuv(frame: av.VideoFrame, quality: int) -> bytes:
    """The builder's way (`rat7m_builder.video.encode_jpeg`): the planes through fixed range tables
    (cv2.LUT in row bands, in the calling thread), then straight into libjpeg-turbo."""
    return encode_jpeg(frame, quality)


def jpeg_yuv_translate(frame: av.VideoFrame, quality: int) -> bytes:
    """The builder's way without OpenCV installed: the same tables applied by ``bytes.translate``."""
    y, u, v = (full_range_plane(plane, index, use_opencv=False) for index, plane in enumerate(frame.planes))
    return simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality=quality)


def jpeg_yuv_swscale(frame: av.VideoFrame, quality: int) -> bytes:
    """limited→full range with swscale (one reused context per thread), then the planes (the builder's
    way until this benchmark found the tables faster)."""
    y, u, v = _plane_views(_full_range(frame))
    return simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality=quality)


def jpeg_yuv_newctx(frame: av.VideoFrame, quality: int) -> bytes:
    """As `jpeg_yuv` but with ``frame.reformat`` (a new swscale context per frame)."""
    full = frame.reformat(format="yuv420p", dst_color_range=ColorRange.JPEG)
    return simplejpeg.encode_jpeg_yuv_planes(*_plane_views(full), quality=quality)


_LUMA_LUT, _CHROMA_LUT = LUMA_TO_FULL_RANGE, CHROMA_TO_FULL_RANGE


def jpeg_yuv_cv2lut(frame: av.VideoFrame, quality: int) -> bytes:
    """Range stretch with cv2.LUT on whole strided planes (OpenCV's thread pool joins in)."""
    y, u, v = _plane_views(frame)
    return simplejpeg.encode_jpeg_yuv_planes(
        cv2.LUT(y, _LUMA_LUT), cv2.LUT(u, _CHROMA_LUT), cv2.LUT(v, _CHROMA_LUT), quality=quality
    )


def jpeg_yuv_numpylut(frame: av.VideoFrame, quality: int) -> bytes:
    """Range stretch with numpy fancy indexing + contiguous copies (builder/video.py's first version)."""
    y, u, v = _plane_views(frame)
    planes = [np.ascontiguousarray(lut[p]) for lut, p in ((_LUMA_LUT, y), (_CHROMA_LUT, u), (_CHROMA_LUT, v))]
    return simplejpeg.encode_jpeg_yuv_planes(*planes, quality=quality)


def jpeg_yuv_raw(frame: av.VideoFrame, quality: int) -> bytes:
    """WRONG on limited-range video (contrast 219/255, black at 16): negative control only."""
    return simplejpeg.encode_jpeg_yuv_planes(*_plane_views(frame), quality=quality)


def jpeg_rgb(frame: av.VideoFrame, quality: int) -> bytes:
    """swscale to RGB, then simplejpeg (which converts back to YCbCr 4:2:0)."""
    return simplejpeg.encode_jpeg(frame.to_ndarray(format="rgb24"), quality=quality, colorsubsampling="420")


def jpeg_pillow(frame: av.VideoFrame, quality: int) -> bytes:
    """swscale to RGB, Pillow JPEG (4:2:0 by default)."""
    buffer = io.BytesIO()
    frame.to_image().save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


ENCODERS: dict[str, Callable[[av.VideoFrame, int], bytes]] = {
    "yuv": jpeg_yuv,
    "yuv_translate": jpeg_yuv_translate,
    "yuv_swscale": jpeg_yuv_swscale,
    "yuv_newctx": jpeg_yuv_newctx,
    "yuv_cv2lut": jpeg_yuv_cv2lut,
    "yuv_numpylut": jpeg_yuv_numpylut,
    "rgb": jpeg_rgb,
    "pillow": jpeg_pillow,
}

# ----------------------------------------------------------------------------------------------
# Workers (module level: they run in child processes too)


def _open(path: str, thread_type: str, thread_count: int) -> tuple[av.container.InputContainer, av.VideoStream]:
    container = av.open(path)
    stream = container.streams.video[0]
    stream.thread_type = thread_type
    stream.thread_count = thread_count
    return container, stream


def decode_chunk(path: str, thread_type: str, thread_count: int, max_frames: int | None = None) -> int:
    """Decode one chunk front to back; returns the number of frames."""
    frames = 0
    container, stream = _open(path, thread_type, thread_count)
    with container:
        for _frame in container.decode(stream):
            frames += 1
            if max_frames and frames >= max_frames:
                break
    return frames


def encode_chunk(
    path: str, encoder: str, thread_type: str, thread_count: int, quality: int, max_frames: int | None = None
) -> tuple[int, int]:
    """Decode one chunk and JPEG-encode every frame in this thread; returns (frames, JPEG bytes)."""
    encode = ENCODERS[encoder]
    frames = size = 0
    container, stream = _open(path, thread_type, thread_count)
    with container:
        for frame in container.decode(stream):
            size += len(encode(frame, quality))
            frames += 1
            if max_frames and frames >= max_frames:
                break
    return frames, size


def encode_pipeline(
    paths: list[str],
    encoder: str,
    thread_type: str,
    thread_count: int,
    quality: int,
    max_frames: int | None = None,
    workers: int = WORKERS,
) -> tuple[int, int]:
    """One process: decode chunks in order in this thread, encode in a pool of ``workers`` threads.

    simplejpeg, swscale and libavcodec release the GIL, so the threads overlap.
    """
    encode = ENCODERS[encoder]
    frames = size = 0
    in_flight: collections.deque = collections.deque()
    with ThreadPoolExecutor(workers) as pool:
        for path in paths:
            container, stream = _open(path, thread_type, thread_count)
            with container:
                for count, frame in enumerate(container.decode(stream), 1):
                    in_flight.append(pool.submit(encode, frame, quality))
                    frames += 1
                    if len(in_flight) > 2 * workers:
                        size += len(in_flight.popleft().result())
                    if max_frames and count >= max_frames:
                        break
        size += sum(len(future.result()) for future in in_flight)
    return frames, size


def original_chunk(
    path: str, quality: int, max_frames: int | None = None, output_dir: str | None = None
) -> tuple[int, int]:
    """The original extraction script's loop: OpenCV read (BGR), then one JPEG per frame.

    With ``output_dir``, as ``extract_frames.py`` does it: each frame to its own file
    ``output_dir/<camera>/frame_{global index:06d}.jpg`` by ``cv2.imwrite``, skipped when the file
    exists. Without, ``cv2.imencode`` in memory only. Returns (frames, JPEG bytes).
    """
    capture = cv2.VideoCapture(path)
    frames = size = 0
    if output_dir is not None:
        # `s1-d1-camera1-3500.mp4`: the camera's folder and the chunk's first global frame index.
        stem = Path(path).stem
        camera = stem.rsplit("-", 1)[0].rsplit("-", 1)[1]
        frame_index = int(stem.rsplit("-", 1)[1])
        camera_dir = os.path.join(output_dir, camera)
        os.makedirs(camera_dir, exist_ok=True)
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                break
            if output_dir is None:
                ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
                size += len(encoded)
            else:
                save_path = os.path.join(camera_dir, f"frame_{frame_index:06d}.jpg")
                if not os.path.exists(save_path):
                    cv2.imwrite(save_path, image, [cv2.IMWRITE_JPEG_QUALITY, quality])
                    size += os.path.getsize(save_path)
                frame_index += 1
            frames += 1
            if max_frames and frames >= max_frames:
                break
    finally:
        capture.release()
    return frames, size


def original_runs(bench: Bench) -> dict[str, Callable[[], tuple[int, int]]]:
    """``original`` (JPEG files, as the script) and ``original_in_memory`` over all clips in order.

    The files' folder is emptied before and after every timed run by the callable's ``reset``
    attribute, outside the timing (removing 1.7 GB of files is not the script's cost, and leaving
    them would carry their write-back into the next measurement).
    """
    output_dir = bench.workdir / "original-jpeg-files"

    def over_clips(output: str | None) -> Callable[[], tuple[int, int]]:
        def run() -> tuple[int, int]:
            results = [original_chunk(path, bench.quality, bench.max_frames, output) for path in bench.paths]
            return tuple(sum(column) for column in zip(*results, strict=True))  # type: ignore[return-value]

        return run

    files = over_clips(str(output_dir))
    files.reset = lambda: _remove_tree(output_dir)  # type: ignore[attr-defined]
    return {"original": files, "original_in_memory": over_clips(None)}


def _reset(run: Callable) -> None:
    """Untimed clean-up a run asks for before and after it (see `original_runs`)."""
    reset = getattr(run, "reset", None)
    if reset is not None:
        reset()


def _ready(_: object = None) -> int:
    return os.getpid()


def _peak_rss_call(function: Callable, args: tuple) -> tuple[object, int]:
    result = function(*args)
    return result, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_in_child(function: Callable, *args) -> tuple[object, int]:
    """Run ``function(*args)`` in a fresh process; returns (its result, the child's peak RSS in bytes).

    For the peak-memory figures: the prepare runs alone in its child, so the peak is its own.
    ``function`` must be importable (module level).
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(_peak_rss_call, function, args).result()


class Processes:
    """A warm pool of ``workers`` spawned processes; `map` times only the work, not the start-up."""

    def __init__(self, workers: int = WORKERS):
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        list(self.pool.map(_ready, range(workers)))

    def pids(self) -> list[int]:
        return list(self.pool._processes or {})

    def map(self, function: Callable, *iterables) -> list:
        return list(self.pool.map(function, *iterables))

    def close(self) -> None:
        self.pool.shutdown()


# ----------------------------------------------------------------------------------------------
# The machine is shared: measure what the others take


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _system_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def _process_jiffies(pids: list[int]) -> int:
    """CPU jiffies of these processes and of their reaped children (utime, stime, cutime, cstime)."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += sum(int(value) for value in fields[11:15])
    return total


def _family(root: int) -> list[int]:
    """``root`` and its live descendants (a prepare's child, its `num_proc` workers, the .mat reader).

    A descendant that ends is counted on through its parent's cutime/cstime once reaped.
    """
    parents: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents[ppid].append(int(entry.name))
    family, queue = [], [root]
    while queue:
        pid = queue.pop()
        family.append(pid)
        queue.extend(parents.get(pid, ()))
    return family


class CpuMonitor:
    """CPU used by other processes on the machine while we run (in cores), and waiting for quiet.

    Linux only (/proc); elsewhere every figure is None and `wait_for_quiet` returns at once.
    """

    def __init__(self, pids: Callable[[], list[int]]):
        self.pids = pids
        self.available = Path("/proc/stat").exists()
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self._start: tuple[int, int, int] | None = None

    def start(self) -> None:
        if self.available:
            self._start = (*_system_jiffies(), _process_jiffies(self.pids()))

    def others(self) -> float | None:
        """Cores used by other processes since `start`."""
        if not self.available or self._start is None:
            return None
        busy, total = _system_jiffies()
        ours = _process_jiffies(self.pids())
        busy0, total0, ours0 = self._start
        if total == total0:
            return 0.0
        return max(0.0, (busy - busy0) - (ours - ours0)) / (total - total0) * self.cores

    def wait_for_quiet(self, budget: float, threshold: float = 0.15, window: float = 0.3) -> float:
        """Wait (at most ``budget`` s) until the others use < ``threshold`` core; returns the wait."""
        if not self.available or budget <= 0:
            return 0.0
        began = time.perf_counter()
        while True:
            self.start()
            time.sleep(window)
            others = self.others()
            waited = time.perf_counter() - began
            if others is None or others < threshold or waited >= budget:
                return waited


# ----------------------------------------------------------------------------------------------
# Registry


@dataclass
class Bench:
    """What every measurement gets: the clips, the settings, and the results so far."""

    spec: ClipSpec
    clip_dir: Path
    clips: list[Path]
    workdir: Path
    quality: int
    quick: bool
    max_frames: int | None  # per chunk, None = whole chunks
    rounds: int = 2  # interleaved repetitions of every variant; the best round counts
    paired_rounds: int = 2  # rounds of `paired`; the median counts
    quiet_budget: float = 0.0  # seconds in all to spend waiting for other load to pass
    results: dict[str, dict] = field(default_factory=dict)
    _processes: Processes | None = None
    monitor: CpuMonitor = field(init=False)

    def __post_init__(self) -> None:
        self.monitor = CpuMonitor(self.pids)

    def pids(self) -> list[int]:
        """This process and all its descendants (warm pool, prepare children and their workers)."""
        return _family(os.getpid()) if Path("/proc").exists() else [os.getpid()]

    def quiet(self, limit: float = 3.0) -> None:
        """Before a timed run: wait up to ``limit`` s (within the budget) for the others to calm down."""
        waited = self.monitor.wait_for_quiet(min(limit, self.quiet_budget))
        self.quiet_budget -= waited

    @property
    def paths(self) -> list[str]:
        return [str(path) for path in self.clips]

    @property
    def frames(self) -> int:
        """Frames processed by a pass over all clips (respecting ``max_frames``)."""
        per_chunk = self.spec.chunk_frames if not self.max_frames else min(self.max_frames, self.spec.chunk_frames)
        return per_chunk * len(self.clips)

    def processes(self) -> Processes:
        if self._processes is None:
            self._processes = Processes()
        return self._processes

    def close(self) -> None:
        if self._processes is not None:
            self._processes.close()
            self._processes = None


#: A measurement returns a dict with at least ``value`` (float) and ``unit``; ``detail`` (str) is
#: shown in the table; anything else JSON-serialisable goes to the JSON as is.
Measure = Callable[[Bench], dict]
MEASUREMENTS: dict[str, Measure] = {}


def measurement(name: str) -> Callable[[Measure], Measure]:
    """Register a measurement under ``name``; measurements run in registration order."""

    def register(function: Measure) -> Measure:
        MEASUREMENTS[name] = function
        return function

    return register


def timed(function: Callable, *args) -> tuple[object, float]:
    began = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - began


# ----------------------------------------------------------------------------------------------
# Measurements that need only the codecs


def rounds_of(bench: Bench, variants: list[tuple[dict, Callable[[], tuple[int, int]]]]) -> list[dict]:
    """Run every variant ``bench.rounds`` times, interleaved (round 1 of all, then round 2, …).

    Each callable returns (frames, output bytes). On a shared machine the best round is the least
    disturbed one: ``fps`` is the best round; ``fps_rounds`` and ``others_cores`` (CPU the rest of
    the machine took during each round, in cores) are kept to judge the noise.
    """
    runs: list[list[float]] = [[] for _ in variants]
    cpu: list[list[float]] = [[] for _ in variants]
    others: list[list[float | None]] = [[] for _ in variants]
    outputs: list[tuple[int, int]] = [(0, 0)] * len(variants)
    for _ in range(bench.rounds):
        for index, (_info, run) in enumerate(variants):
            _reset(run)
            bench.quiet()
            bench.monitor.start()
            ours = _process_jiffies(bench.pids())
            began = time.perf_counter()
            frames, size = run()
            runs[index].append(frames / (time.perf_counter() - began))
            _reset(run)
            others[index].append(bench.monitor.others())
            cpu[index].append((_process_jiffies(bench.pids()) - ours) * 1000 / _CLOCK_TICKS / frames)
            outputs[index] = (frames, size)
    results = []
    for (info, _run), fps, ms, load, (frames, size) in zip(variants, runs, cpu, others, outputs, strict=True):
        result = {
            **info,
            "fps": max(fps),
            "fps_median": float(np.median(fps)),
            "fps_rounds": fps,
            "cpu_ms_per_frame": min(ms),
            "others_cores": load,
            "frames": frames,
        }
        if size:
            result["jpeg_bytes_per_frame"] = size / frames
        results.append(result)
    return results


def _label(variant: dict) -> str:
    return f"{variant['thread_type']}×{variant['thread_count'] or 'auto'}"


def _in_processes(bench: Bench, function: Callable, *args) -> Callable[[], tuple[int, int]]:
    """A run of ``function(path, *args)`` over all chunks in the 2 warm processes."""
    processes = bench.processes()  # started (and warmed) before any timing

    def run() -> tuple[int, int]:
        n = len(bench.paths)
        results = processes.map(function, bench.paths, *([arg] * n for arg in args))
        if isinstance(results[0], tuple):
            return tuple(sum(column) for column in zip(*results, strict=True))  # type: ignore[return-value]
        return sum(results), 0

    return run


@measurement("decode")
def measure_decode(bench: Bench) -> dict:
    """Decoder threading sweep: 1 process over the chunks in order, 2 processes one chunk each.

    On H.264, AUTO (= FRAME|SLICE) means frame threading; a thread count of 0 means FFmpeg's
    choice (cores + 1). SLICE only helps on streams with several slices per frame.
    """
    single = [("SLICE", 1), ("FRAME", 2), ("AUTO", 0)]
    dual = [("SLICE", 1), ("AUTO", 0)]
    if not bench.quick:
        single += [("SLICE", 2), ("FRAME", 3)]
        dual += [("FRAME", 2)]
    variants = []
    for thread_type, count in single:

        def run(t=thread_type, c=count) -> tuple[int, int]:
            return sum(decode_chunk(path, t, c, bench.max_frames) for path in bench.paths), 0

        variants.append(({"mode": "1 process", "thread_type": thread_type, "thread_count": count}, run))
    for thread_type, count in dual:
        info = {"mode": "2 processes", "thread_type": thread_type, "thread_count": count}
        variants.append((info, _in_processes(bench, decode_chunk, thread_type, count, bench.max_frames)))
    results = rounds_of(bench, variants)
    best = {
        mode: max((v for v in results if v["mode"] == mode), key=lambda v: v["fps"])
        for mode in ("1 process", "2 processes")
    }
    top = max(best.values(), key=lambda v: v["fps"])
    return {
        "value": top["fps"],
        "unit": "frames/s",
        "cpu_ms_per_frame": min(v["cpu_ms_per_frame"] for v in results),
        "detail": "; ".join(f"{mode}: {_label(v)} {v['fps']:.0f}" for mode, v in best.items()),
        "best": best,
        "variants": results,
    }


@measurement("limit")
def measure_limit(bench: Bench) -> dict:
    """Decode + JPEG, both cores: encoders × {1 process + 2 encode threads, 2 processes}."""
    best_decode = bench.results.get("decode", {}).get("best", {})
    one = best_decode.get("1 process", {"thread_type": "AUTO", "thread_count": 0})
    two = best_decode.get("2 processes", {"thread_type": "SLICE", "thread_count": 1})
    one_setting = (one["thread_type"], one["thread_count"])
    two_setting = (two["thread_type"], two["thread_count"])
    plan = [(encoder, "2 processes", *two_setting) for encoder in ("yuv", "yuv_swscale", "rgb")]
    plan += [(encoder, "1 process + 2 threads", *one_setting) for encoder in ("yuv", "rgb")]
    if not bench.quick:
        plan += [
            (encoder, "2 processes", *two_setting)
            for encoder in ("yuv_cv2lut", "yuv_translate", "yuv_numpylut", "yuv_newctx", "pillow")
        ]
        plan.append(("yuv_cv2lut", "1 process + 2 threads", *one_setting))
        plan.append(("yuv", "2 processes", *(("AUTO", 0) if two_setting == ("SLICE", 1) else ("SLICE", 1))))

    variants = []
    for encoder, mode, thread_type, count in plan:
        info = {"encoder": encoder, "mode": mode, "thread_type": thread_type, "thread_count": count}
        if mode == "2 processes":
            run = _in_processes(bench, encode_chunk, encoder, thread_type, count, bench.quality, bench.max_frames)
        else:

            def run(e=encoder, t=thread_type, c=count) -> tuple[int, int]:
                return encode_pipeline(bench.paths, e, t, c, bench.quality, bench.max_frames)

        variants.append((info, run))
    results = rounds_of(bench, variants)
    top = max(results, key=lambda v: v["fps"])
    leanest = min(results, key=lambda v: v["cpu_ms_per_frame"])
    return {
        "value": top["fps"],
        "unit": "frames/s",
        "cpu_ms_per_frame": leanest["cpu_ms_per_frame"],
        "detail": f"{top['encoder']}, {top['mode']}, decoder {_label(top)}; least CPU: {leanest['encoder']}",
        "best": top,
        "variants": results,
    }


@measurement("original")
def measure_original(bench: Bench) -> dict:
    """One process, the clips in order, OpenCV read + one JPEG file per frame (the script's way);
    the in-memory loop beside it (``in_memory``, no target)."""
    runs = original_runs(bench)
    files, in_memory = rounds_of(
        bench,
        [
            ({"mode": "1 process", "output": "a JPEG file per frame (cv2.imwrite)"}, runs["original"]),
            ({"mode": "1 process", "output": "in memory (cv2.imencode)"}, runs["original_in_memory"]),
        ],
    )
    return {
        "value": files["fps"],
        "unit": "frames/s",
        "detail": f"cv2 {cv2.__version__}, a {files['jpeg_bytes_per_frame'] / 1024:.0f} KiB JPEG file per frame; "
        f"in memory only: {in_memory['fps']:.1f} frames/s",
        **files,
        "in_memory": in_memory,
    }


@measurement("jpeg_check")
def measure_jpeg_check(bench: Bench) -> dict:
    """Mean abs difference (0–255, RGB) of decoded JPEGs: YUV path vs RGB path vs OpenCV.

    Frames 0, 150, 300, … of the first chunk. ``yuv_raw`` (no range stretch) shows why the stretch
    is needed.
    """
    path = bench.paths[0]
    wanted = set(range(0, bench.spec.chunk_frames, 150))
    frames = {}
    container, stream = _open(path, "FRAME", 0)
    with container:
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                frames[index] = frame
    capture = cv2.VideoCapture(path)
    opencv = {}
    for index in range(max(wanted) + 1):
        ok, image = capture.read()
        if ok and index in wanted:
            jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, bench.quality])[1].tobytes()
            opencv[index] = simplejpeg.decode_jpeg(jpeg).astype(np.int16)
    capture.release()

    def mad(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a.astype(np.int16) - b).mean())

    def luma(jpeg: bytes) -> np.ndarray:
        image = Image.open(io.BytesIO(jpeg))
        image.draft("YCbCr", image.size)  # libjpeg output without the colour conversion
        return np.asarray(image)[..., 0]

    rows = collections.defaultdict(list)
    same_bytes: list[bool] = []
    subsampling = set()
    for index, frame in frames.items():
        reference = frame.to_ndarray(format="rgb24").astype(np.int16)
        source_luma = _plane_views(_full_range(frame))[0].astype(np.int16)
        decoded = {}
        for name, encode in {**ENCODERS, "yuv_raw": jpeg_yuv_raw}.items():
            jpeg = encode(frame, bench.quality)
            subsampling.add((name, simplejpeg.decode_jpeg_header(jpeg)[3]))
            decoded[name] = simplejpeg.decode_jpeg(jpeg)
            rows[f"{name} vs decoded RGB"].append(mad(decoded[name], reference))
        rows["yuv vs rgb JPEG"].append(mad(decoded["yuv"], decoded["rgb"].astype(np.int16)))
        rows["yuv_raw vs rgb JPEG"].append(mad(decoded["yuv_raw"], decoded["rgb"].astype(np.int16)))
        rows["yuv vs numpylut JPEG"].append(mad(decoded["yuv"], decoded["yuv_numpylut"].astype(np.int16)))
        rows["yuv vs swscale JPEG"].append(mad(decoded["yuv"], decoded["yuv_swscale"].astype(np.int16)))
        # The builder's tables give the same bytes with or without OpenCV.
        same_bytes.append(jpeg_yuv(frame, bench.quality) == jpeg_yuv_translate(frame, bench.quality))
        for name in ("yuv", "rgb"):
            rows[f"{name} JPEG luma vs source luma"].append(
                mad(luma(ENCODERS[name](frame, bench.quality)), source_luma)
            )
        if index in opencv:
            rows["yuv vs OpenCV JPEG"].append(mad(decoded["yuv"], opencv[index]))
            rows["rgb vs OpenCV JPEG"].append(mad(decoded["rgb"], opencv[index]))
    table = {name: float(np.mean(values)) for name, values in rows.items()}
    ok = table["yuv vs rgb JPEG"] < 2.5 and all(value == "420" for _, value in subsampling) and all(same_bytes)
    return {
        "value": table["yuv vs rgb JPEG"],
        "ok": ok,
        "unit": "mean |Δ| /255",
        "detail": f"{'ok' if ok else 'FAILED'}: yuv vs OpenCV {table.get('yuv vs OpenCV JPEG', float('nan')):.2f}; "
        f"unstretched planes vs rgb {table['yuv_raw vs rgb JPEG']:.2f}; luma vs source: yuv "
        f"{table['yuv JPEG luma vs source luma']:.2f}, rgb {table['rgb JPEG luma vs source luma']:.2f}",
        "mean_abs_diff": table,
        "subsampling": sorted(f"{name}: {value}" for name, value in subsampling),
        "opencv_and_translate_identical": all(same_bytes),
        "frames": sorted(frames),
    }


@measurement("video_bytes")
def measure_video_bytes(bench: Bench) -> dict:
    records = clip_records(bench.clip_dir)
    size = sum(record["bytes"] for record in records)
    frames = sum(record["frames"] for record in records)
    return {"value": size / frames, "unit": "bytes/frame", "detail": f"source H.264, {size / frames / 1024:.1f} KiB"}


# ----------------------------------------------------------------------------------------------
# Measurements of the builder (`rat7m`), each prepare in a fresh child process


def prepare_config(config: str, data_dir: str, cache_dir: str, num_proc: int | None, cameras: list[int]) -> dict:
    """Prepare one config from scratch (runs in a child); rows, seconds, CPU seconds, Arrow bytes."""
    import rat7m

    def cpu_seconds() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    cpu_before, began = cpu_seconds(), time.perf_counter()
    builder = rat7m.Rat7M(config_name=config, data_dir=data_dir, cache_dir=cache_dir, cameras=cameras)
    rat7m.prepare(builder, num_proc=num_proc)
    seconds = time.perf_counter() - began
    rows = sum(split.num_examples for split in builder.info.splits.values())
    arrow = sum(path.stat().st_size for path in Path(builder.cache_dir).glob("*.arrow"))
    return {"rows": rows, "seconds": seconds, "cpu_seconds": cpu_seconds() - cpu_before, "arrow_bytes": arrow}


def _frames_rounds(bench: Bench) -> dict[int, list[dict]]:
    """``frames`` prepared with num_proc=1 and =2, interleaved over ``bench.rounds`` rounds."""
    cached = getattr(bench, "frame_runs", None)
    if cached is not None:
        return cached
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for round_index in range(bench.rounds):
        for num_proc in (1, 2):
            bench.quiet()
            bench.monitor.start()
            cache = bench.workdir / "caches" / f"frames-{num_proc}-{round_index}"
            result, peak = run_in_child(
                prepare_config, "frames", str(bench.clip_dir), str(cache), num_proc, list(bench.spec.cameras)
            )
            result.update(peak_rss=peak, others_cores=bench.monitor.others())
            runs[num_proc].append(result)
            _remove_tree(cache)
    bench.frame_runs = runs  # frames_2 reads the same interleaved rounds
    return runs


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _frames_measure(bench: Bench, num_proc: int) -> dict:
    runs = _frames_rounds(bench)[num_proc]
    best = max(runs, key=lambda run: run["rows"] / run["seconds"])
    return {
        "value": best["rows"] / best["seconds"],
        "unit": "examples/s",
        "cpu_ms_per_frame": min(run["cpu_seconds"] * 1000 / run["rows"] for run in runs),
        "bytes_per_frame": best["arrow_bytes"] / best["rows"],
        "examples": best["rows"],
        "fps_rounds": [run["rows"] / run["seconds"] for run in runs],
        "others_cores": [run["others_cores"] for run in runs],
        "detail": f"num_proc={num_proc}, Arrow {best['arrow_bytes'] / best['rows'] / 1024:.1f} KiB/frame",
    }


@measurement("frames_1")
def measure_frames_1(bench: Bench) -> dict:
    return _frames_measure(bench, 1)


@measurement("frames_2")
def measure_frames_2(bench: Bench) -> dict:
    return _frames_measure(bench, 2)


def _best_limit_run(bench: Bench) -> Callable[[], tuple[int, int]]:
    """One pass of the fastest `limit` variant found (the same settings, warm processes)."""
    best = bench.results["limit"]["best"]
    encoder, thread_type, count = best["encoder"], best["thread_type"], best["thread_count"]
    if best["mode"] == "2 processes":
        return _in_processes(bench, encode_chunk, encoder, thread_type, count, bench.quality, bench.max_frames)
    return lambda: encode_pipeline(bench.paths, encoder, thread_type, count, bench.quality, bench.max_frames)


@measurement("paired")
def measure_paired(bench: Bench) -> dict:
    """The headline ratios round by round: the best `limit` variant, `original` (files, then in memory),
    `frames_1` and `frames_2` run back to back in each round, so each round's ratios compare runs minutes apart at most.

    The machine's speed drifts over a run (seen here: the same variant 187 → 213 frames/s from one
    round to the next), and the best rounds of separate measurements can fall in different periods.
    The value is the median over rounds of ``frames/limit`` (``frames``: the better of the two).
    """
    if "limit" not in bench.results:
        raise RuntimeError("'paired' needs 'limit' (run it in the same invocation)")
    limit_run = _best_limit_run(bench)
    original = original_runs(bench)

    def codec_rate(run: Callable[[], tuple[int, int]]) -> float:
        _reset(run)
        bench.quiet()
        began = time.perf_counter()
        frames, _size = run()
        rate = frames / (time.perf_counter() - began)
        _reset(run)
        return rate

    def frames_rate(num_proc: int, round_index: int) -> float:
        bench.quiet()
        cache = bench.workdir / "caches" / f"paired-{num_proc}-{round_index}"
        result, _peak = run_in_child(
            prepare_config, "frames", str(bench.clip_dir), str(cache), num_proc, list(bench.spec.cameras)
        )
        _remove_tree(cache)
        return result["rows"] / result["seconds"]

    rounds = []
    for round_index in range(bench.paired_rounds):
        rates = {
            "limit": codec_rate(limit_run),
            "original": codec_rate(original["original"]),
            "original_in_memory": codec_rate(original["original_in_memory"]),
            "frames_1": frames_rate(1, round_index),
            "frames_2": frames_rate(2, round_index),
        }
        frames = max(rates["frames_1"], rates["frames_2"])
        rates["frames/limit"] = frames / rates["limit"]
        rates["frames/original"] = frames / rates["original"]
        rates["frames/original_in_memory"] = frames / rates["original_in_memory"]
        rounds.append(rates)
    medians = {key: float(np.median([r[key] for r in rounds])) for key in rounds[0]}
    return {
        "value": medians["frames/limit"],
        "unit": "frames/limit",
        "frames_per_original": medians["frames/original"],
        "medians": medians,
        "rounds": rounds,
        "detail": (
            f"median over {len(rounds)} rounds: frames/limit {medians['frames/limit']:.2f}, "
            f"frames/original {medians['frames/original']:.2f} (in memory: "
            f"{medians['frames/original_in_memory']:.2f}; limit {medians['limit']:.0f}, original "
            f"{medians['original']:.0f}, in memory {medians['original_in_memory']:.0f}, frames_1 "
            f"{medians['frames_1']:.0f}, frames_2 {medians['frames_2']:.0f})"
        ),
    }


@measurement("mocap")
def measure_mocap(bench: Bench) -> dict:
    """``mocap`` rows/s on one synthetic recording of 150,000 samples (no video needed)."""
    folder = bench.workdir / "mocap-150k"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / f"mocap-{bench.spec.recording}.mat").exists():
        fabricate_mocap(folder, bench.spec, num_samples=150_000)
    runs = []
    for round_index in range(bench.rounds):  # each a fresh process; the best round counts
        bench.quiet()
        cache = bench.workdir / "caches" / f"mocap-{round_index}"
        result, _peak = run_in_child(prepare_config, "mocap", str(folder), str(cache), None, list(bench.spec.cameras))
        _remove_tree(cache)
        runs.append(result)
    best = min(runs, key=lambda run: run["seconds"])
    return {
        "value": best["rows"] / best["seconds"],
        "unit": "rows/s",
        "rows_per_s_rounds": [run["rows"] / run["seconds"] for run in runs],
        "detail": f"{best['rows']} samples in {best['seconds']:.2f} s (.mat parse + Arrow write; best of {len(runs)})",
    }


@measurement("memory")
def measure_memory(bench: Bench) -> dict:
    """Peak resident memory of a ``frames`` prepare (num_proc=1) over N and 2N frames per camera."""
    import dataclasses

    peaks = {}
    for chunks in (1, 2):
        spec = dataclasses.replace(bench.spec, chunks=chunks)
        folder = bench.workdir / f"memory-{len(spec.cameras)}x{chunks}x{spec.chunk_frames}"
        fabricate_clips(folder, spec)
        fabricate_mocap(folder, spec)
        cache = bench.workdir / "caches" / f"memory-{chunks}"
        result, peak = run_in_child(prepare_config, "frames", str(folder), str(cache), 1, list(spec.cameras))
        _remove_tree(cache)
        peaks[chunks] = (peak, result["rows"])
    growth = peaks[2][0] / peaks[1][0] - 1
    return {
        "value": peaks[2][0] / 2**20,
        "unit": "MiB",
        "peak_n": peaks[1][0],
        "peak_2n": peaks[2][0],
        "examples_n": peaks[1][1],
        "examples_2n": peaks[2][1],
        "growth": growth,
        "detail": f"peak RSS {peaks[1][0] / 2**20:.0f} MiB at N={peaks[1][1]} examples, "
        f"{peaks[2][0] / 2**20:.0f} MiB at 2N: {growth * 100:+.1f}% (targets ≤ 1024 MiB, < 10%)",
    }


# ----------------------------------------------------------------------------------------------
# Report

#: (name, numerator, denominator, target): shown when both results exist.
RATIOS: list[tuple[str, str, str, float | None]] = [
    ("frames/limit", "frames", "limit", 0.85),
    ("frames/original", "frames", "original", 1.5),
    ("frames_2/frames_1", "frames_2", "frames_1", None),
    ("frames/original_in_memory", "frames", "original_in_memory", None),
    ("limit/original", "limit", "original", None),
    ("limit/decode", "limit", "decode", None),
]


def derived(results: dict[str, dict]) -> dict[str, float]:
    values = {name: result["value"] for name, result in results.items() if "value" in result}
    if "in_memory" in results.get("original", {}):
        values["original_in_memory"] = results["original"]["in_memory"]["fps"]
    candidates = [values[name] for name in ("frames_1", "frames_2") if name in values]
    if candidates:
        values["frames"] = max(candidates)
    return values


def ratios(results: dict[str, dict]) -> dict[str, dict]:
    """Ratios of rates; ``by_cpu`` is the same ratio from CPU-ms per frame (robust to other load)."""
    values = derived(results)
    cpu = {name: result["cpu_ms_per_frame"] for name, result in results.items() if result.get("cpu_ms_per_frame")}
    if results.get("original", {}).get("in_memory", {}).get("cpu_ms_per_frame"):
        cpu["original_in_memory"] = results["original"]["in_memory"]["cpu_ms_per_frame"]
    if "frames" in values:
        cpu_frames = [
            cpu[name]
            for name in ("frames_1", "frames_2")
            if results.get(name, {}).get("value") == values["frames"] and name in cpu
        ]
        if cpu_frames:
            cpu["frames"] = cpu_frames[0]
    out = {}
    for name, numerator, denominator, target in RATIOS:
        if numerator in values and denominator in values and values[denominator]:
            ratio = values[numerator] / values[denominator]
            by_cpu = cpu[denominator] / cpu[numerator] if numerator in cpu and denominator in cpu else None
            out[name] = {
                "value": ratio,
                "by_cpu": by_cpu,
                "target": target,
                "met": None if target is None else ratio >= target,
            }
    paired = results.get("paired", {}).get("medians")
    for name, target in (("frames/limit", 0.85), ("frames/original", 1.5)):
        if paired:  # the same ratio, per round then the median (see `measure_paired`)
            ratio = paired[name]
            out[f"{name} (paired)"] = {"value": ratio, "by_cpu": None, "target": target, "met": ratio >= target}
    if paired and "frames/original_in_memory" in paired:
        out["frames/original_in_memory (paired)"] = {
            "value": paired["frames/original_in_memory"],
            "by_cpu": None,
            "target": None,
            "met": None,
        }
    return out


def print_report(results: dict[str, dict], ratio_table: dict[str, dict]) -> None:
    print()
    print(f"{'measurement':<13} {'value':>10}  {'unit':<14} {'CPU-ms/frame':>12}  detail")
    for name, result in results.items():
        value = result.get("value")
        shown = f"{value:10.2f}" if isinstance(value, float) and value < 100 else f"{value:10.0f}"
        cpu = f"{result['cpu_ms_per_frame']:12.2f}" if result.get("cpu_ms_per_frame") else " " * 12
        print(f"{name:<13} {shown}  {result.get('unit', ''):<14} {cpu}  {result.get('detail', '')}")
    for name in ("decode", "limit"):
        if name in results:
            print(f"\n{name} variants:")
            for v in results[name]["variants"]:
                encoder = f"{v['encoder']:<13}" if "encoder" in v else ""
                rounds = " ".join(f"{fps:.0f}" for fps in v["fps_rounds"])
                load = " ".join("?" if c is None else f"{c:.1f}" for c in v["others_cores"])
                print(
                    f"  {encoder}{v['mode']:<22} {_label(v):<9} {v['fps']:7.1f} frames/s"
                    f" {v['cpu_ms_per_frame']:5.2f} CPU-ms/frame  (rounds: {rounds}; others' cores: {load})"
                )
    if "paired" in results:
        print("\npaired rounds (limit, original, original in memory, frames_1, frames_2 back to back):")
        for index, rates in enumerate(results["paired"]["rounds"], 1):
            print(
                f"  round {index}: limit {rates['limit']:.0f}, original {rates['original']:.0f}, in memory "
                f"{rates['original_in_memory']:.0f}, frames_1 {rates['frames_1']:.0f}, frames_2 "
                f"{rates['frames_2']:.0f} → frames/limit {rates['frames/limit']:.2f}, frames/original "
                f"{rates['frames/original']:.2f} (in memory {rates['frames/original_in_memory']:.2f})"
            )
    if ratio_table:
        print("\nratios:")
        for name, ratio in ratio_table.items():
            target = ""
            if ratio["target"] is not None:
                target = f"  (target ≥ {ratio['target']}: {'met' if ratio['met'] else 'NOT met'})"
            by_cpu = "" if ratio["by_cpu"] is None else f"  (by CPU time: {ratio['by_cpu']:.2f})"
            print(f"  {name:<36} {ratio['value']:.3f}{target}{by_cpu}")


def machine() -> dict:
    cpu = platform.processor()
    if Path("/proc/cpuinfo").exists():
        models = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        cpu = models[0].split(":", 1)[1].strip() if models else cpu
    versions = {}
    for package in ("av", "simplejpeg", "numpy", "pillow", "opencv-python-headless", "datasets"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
        "versions": versions,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="2 cameras instead of 6, 2 rounds, fewer variants (about 5 minutes)"
    )
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    parser.add_argument("--workdir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "rat7m-bench"))
    parser.add_argument("--cameras", type=int, help="cameras 1..N to fabricate and use (default 6; --quick 2)")
    parser.add_argument("--quality", type=int, default=DEFAULT_QUALITY, help="JPEG quality (default 90)")
    parser.add_argument(
        "--chunks",
        type=int,
        help="chunks of 600 frames per camera (default 2; --quick 1). The release has ~30 chunks of 3500 frames "
        "per camera: a prepare's one-off start-up (~0.6 s) weighs 3-4 %% with 1 chunk, about half that with 2",
    )
    parser.add_argument("--max-frames", type=int, help="frames per chunk to process (default all)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per variant, best counts (default 3; --quick 2)")
    parser.add_argument(
        "--paired-rounds", type=int, help="rounds of 'paired', the median counts (default 5; --quick 2)"
    )
    parser.add_argument(
        "--quiet", type=float, help="seconds in all to wait for other load to pass (default 30; --quick 0)"
    )
    parser.add_argument("--only", help="comma-separated measurements (default all: " + ", ".join(MEASUREMENTS) + ")")
    args = parser.parse_args(argv)

    spec = ClipSpec(
        cameras=tuple(range(1, (args.cameras or (2 if args.quick else 6)) + 1)),
        chunks=args.chunks or (1 if args.quick else 2),
    )
    workdir = Path(args.workdir)
    clip_dir = workdir / f"clips-{len(spec.cameras)}x{spec.chunks}x{spec.chunk_frames}"
    began = time.perf_counter()
    clips = fabricate_clips(clip_dir, spec)
    print(f"clips: {len(clips)} × {spec.chunk_frames} frames in {clip_dir} ({time.perf_counter() - began:.0f} s)")
    max_frames = args.max_frames  # None: whole chunks (a prepare's start-up then weighs as little as it can here)
    # The motion capture refers to the frames the codec measurements decode (max_frames per chunk).
    mocap = fabricate_mocap(clip_dir, spec, max_frames_per_chunk=max_frames)
    print(f"mocap: {mocap}")
    rounds = args.rounds or (2 if args.quick else 3)
    paired_rounds = args.paired_rounds or (2 if args.quick else 5)
    bench = Bench(
        spec,
        clip_dir,
        clips,
        workdir,
        args.quality,
        args.quick,
        max_frames,
        rounds,
        paired_rounds,
        quiet_budget=args.quiet if args.quiet is not None else (0.0 if args.quick else 30.0),
    )
    names = args.only.split(",") if args.only else list(MEASUREMENTS)
    unknown = [name for name in names if name not in MEASUREMENTS]
    if unknown:
        parser.error(f"unknown measurements {unknown}; known: {', '.join(MEASUREMENTS)}")
    overall = CpuMonitor(bench.pids)
    overall.start()
    try:
        for name in names:
            result, seconds = timed(MEASUREMENTS[name], bench)
            result["seconds"] = seconds
            bench.results[name] = result
            print(f"{name}: {result['value']:.1f} {result['unit']} ({seconds:.0f} s)", flush=True)
    finally:
        bench.close()

    others = overall.others()
    ratio_table = ratios(bench.results)
    print_report(bench.results, ratio_table)
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine(),
        "quality": args.quality,
        "max_frames_per_chunk": max_frames,
        "rounds": rounds,
        "paired_rounds": paired_rounds,
        "clips": {"spec": spec.to_json(), "dir": str(clip_dir), "chunks": clip_records(clip_dir)},
        "mocap": str(mocap) if mocap else None,
        "results": bench.results,
        "ratios": ratio_table,
        "seconds": time.perf_counter() - began,
        "others_cores_mean": others,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"\nJSON: {args.json}")
    noise = "" if others is None else f"; other processes used {others:.2f} cores on average meanwhile"
    print(f"total {report['seconds']:.0f} s{noise}")
    return report


if __name__ == "__main__":
    main()
