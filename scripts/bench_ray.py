"""Time the ``frames`` export on Ray with 1 and with 2 local workers, on the benchmark clip set.

Fabricates (or reuses) a clip set with ``bench_clips.py`` (1320×1048 H.264 at the release's bytes
per frame), writes a matching ``mocap-s1-d1.mat`` (one sample per video frame, all cameras in sync)
with the project's sample writer, then runs `rat7m_builder.ray_export.export_with_ray` on a fresh
local Ray of ``num_cpus`` = 1 and = 2, alternating, ``--rounds`` times each. Ray's start-up is timed
apart; the export time includes starting the workers (as a real export does).

    python scripts/bench_ray.py /tmp/bench-ray [--cameras 4] [--frames 300] [--chunks 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import CpuMonitor  # noqa: E402
from bench_clips import HEIGHT, WIDTH, ClipSpec, fabricate_clips  # noqa: E402

from rat7m_builder.manifest import CAMERAS, mocap_file_name  # noqa: E402
from rat7m_builder.sample import SampleSpec, fabricate_cameras, fabricate_recording, write_mocap_mat  # noqa: E402


def write_bench_mocap(directory: Path, spec: ClipSpec) -> Path:
    """``mocap-<recording>.mat`` with one sample per frame of a camera (frame index = sample index)."""
    sample_spec = SampleSpec(
        recordings=(spec.recording,),
        num_samples=spec.frames_per_camera,
        chunk_frames=spec.chunk_frames,
        width=WIDTH,
        height=HEIGHT,
        frame_offsets=dict.fromkeys(CAMERAS, 0),
        tail_frames=0,
    )
    recording = fabricate_recording(sample_spec, spec.recording, fabricate_cameras(sample_spec))
    path = directory / mocap_file_name(spec.recording)
    write_mocap_mat(str(path), recording, np.random.default_rng(0))
    return path


def descendants() -> list[int]:
    """This process and all below it (the local Ray: GCS, raylet, workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])  # fields after the name: state, ppid, …
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [os.getpid()]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def run(num_cpus: int, data_dir: Path, out: Path, spec: ClipSpec, monitor: CpuMonitor) -> dict:
    """Ray start-up, export seconds, rows, and cores used by us and by others during one export."""
    import ray

    from rat7m_builder.ray_export import export_with_ray

    shutil.rmtree(out, ignore_errors=True)
    monitor.wait_for_quiet(60)  # the machine may be shared: let other load pass first (60 s at most)
    began = time.perf_counter()
    ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    ours0 = _jiffies(descendants())
    monitor.start()
    started = time.perf_counter()
    try:
        result = export_with_ray(
            "frames",
            str(out),
            data_dir=str(data_dir),
            cache_dir=str(out) + "-cache",
            recordings=[spec.recording],
            cameras=list(spec.cameras),
            progress=False,
        )
        ended = time.perf_counter()
        ours = (_jiffies(descendants()) - ours0) / os.sysconf("SC_CLK_TCK") / (ended - started)
        others = monitor.others()
    finally:
        ray.shutdown()
    return {
        "startup": started - began,
        "seconds": ended - started,
        "rows": result["num_examples"],
        "ours": ours,
        "others": others,
    }


def _jiffies(pids: list[int]) -> int:
    from bench import _process_jiffies

    return _process_jiffies(pids)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir")
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--frames", type=int, default=300, help="frames per chunk")
    parser.add_argument("--chunks", type=int, default=2, help="chunks per camera")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    spec = ClipSpec(cameras=tuple(range(1, args.cameras + 1)), chunk_frames=args.frames, chunks=args.chunks)
    clips = workdir / "clips"
    began = time.perf_counter()
    fabricate_clips(clips, spec)
    write_bench_mocap(clips, spec)
    print(
        f"clip set: {len(spec.chunk_names())} chunks of {spec.chunk_frames} frames ({WIDTH}×{HEIGHT}), "
        f"{len(spec.cameras) * spec.frames_per_camera} camera-frames; ready in {time.perf_counter() - began:.0f} s"
    )
    times: dict[int, list[float]] = {1: [], 2: []}
    monitor = CpuMonitor(descendants)
    for round_ in range(args.rounds):
        for num_cpus in (1, 2):
            r = run(num_cpus, clips, workdir / f"out-{num_cpus}", spec, monitor)
            times[num_cpus].append(r["seconds"])
            print(
                f"round {round_ + 1}, num_cpus={num_cpus}: Ray start {r['startup']:.1f} s, "
                f"export {r['seconds']:.1f} s, "
                f"{r['rows']} rows, {r['rows'] / r['seconds']:.1f} frames/s; Ray used {r['ours']:.2f} cores, "
                f"other processes {r['others']:.2f}"
            )
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(f"median export: 1 worker {one:.1f} s, 2 workers {two:.1f} s: speed-up {one / two:.2f}×")


if __name__ == "__main__":
    main()
