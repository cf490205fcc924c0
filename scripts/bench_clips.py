"""Fabricate a benchmark clip set in the RAT7M release's video format.

Each camera chunk is an mp4 named ``s{S}-d{D}-camera{K}-{start}.mp4``: 1320×1048, 30 frames/s,
H.264 (libx264, yuv420p, High profile, CABAC, B-frames, 250-frame GOP, one slice per frame as
x264 writes by default), about 35 KiB of video per frame (the release: ~300 GB for ~7 M frames,
i.e. ~43 KB per frame). Content that costs what real footage costs to decode and to JPEG-encode:

- a static textured arena per camera (low-frequency shading, fine texture, a bright wall ring,
  mild colour variation);
- a dark "animal" (body, head, tail) walking a smooth path and turning, drawn on all three planes;
- fresh sensor noise on every frame (luma sd ≈ 3.2, some chroma noise), which is what makes the
  bitstream large: x264 cannot predict it away.

The bitrate is held with x264's ABR at the target, so the size per frame does not depend on
the noise realisation. Frames are built directly as yuv420p planes (no RGB conversion) so the
fabrication is limited by the encoder only; cameras are written by up to two processes.

A fabricated set is cached in its folder with ``bench-clips.json``: a rerun with the same spec
reuses it.

Motion capture: see `fabricate_mocap`, the hook for the matching ``mocap-s{S}-d{D}.mat``.

Usable as a module (``from bench_clips import ClipSpec, fabricate_clips``) or on its own:
``python scripts/bench_clips.py OUT_DIR [--cameras 6] [--frames 600] [--chunks 1]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

WIDTH = 1320
HEIGHT = 1048
FRAME_RATE = 30
MANIFEST = "bench-clips.json"
#: Accepted video size per frame (the issue's band); fabrication fails outside it.
KIB_PER_FRAME_RANGE = (25.0, 45.0)


@dataclass(frozen=True)
class ClipSpec:
    """What to fabricate.

    Attributes:
        recording: ``s{S}-d{D}`` of the file names.
        cameras: camera numbers (1–6).
        chunk_frames: frames per chunk (the release: 3500; the benchmark: ≥ 600).
        chunks: chunks per camera; starts are ``0, chunk_frames, 2·chunk_frames, …``.
        kib_per_frame: x264 ABR target, KiB of video per frame.
        preset: x264 preset. ``superfast`` keeps CABAC, deblocking, 8×8 DCT and 3 B-frames (what a
            decoder pays for) while encoding ~3× faster than ``medium``.
        slices: H.264 slices per frame. 1 is x264's and ffmpeg's default and the likely release
            format; >1 (what PyAV writes by default: sliced threads) makes slice-threaded decoding
            look better than it will be on single-slice files.
        noise_bits: luma noise is the sum of two uniform ``noise_bits``-bit values (3 → sd 3.2).
        seed: content seed.
    """

    recording: str = "s1-d1"
    cameras: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    chunk_frames: int = 600
    chunks: int = 1
    kib_per_frame: float = 35.0
    preset: str = "superfast"
    slices: int = 1
    noise_bits: int = 3
    seed: int = 0

    @property
    def frames_per_camera(self) -> int:
        return self.chunk_frames * self.chunks

    def file_name(self, camera: int, start: int) -> str:
        return f"{self.recording}-camera{camera}-{start}.mp4"

    def chunk_names(self) -> list[str]:
        return [
            self.file_name(camera, index * self.chunk_frames) for camera in self.cameras for index in range(self.chunks)
        ]

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "cameras": list(self.cameras), "width": WIDTH, "height": HEIGHT}


# ----------------------------------------------------------------------------------------------
# Scene


class Scene:
    """One camera's view: a static arena and an animal on a smooth path, as yuv420p planes."""

    def __init__(self, spec: ClipSpec, camera: int):
        self.spec = spec
        rng = np.random.default_rng([spec.seed, camera])
        self.rng = rng
        h, w = HEIGHT, WIDTH
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        shading = cv2.resize(rng.normal(0, 1, (h // 32, w // 32)).astype(np.float32), (w, h))
        shading = cv2.GaussianBlur(shading, (0, 0), 12)
        shading /= shading.std()
        texture = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 1.2)
        cx, cy = w * (0.5 + 0.05 * rng.uniform(-1, 1)), h * (0.5 + 0.05 * rng.uniform(-1, 1))
        radius = np.hypot(xx - cx, yy - cy)
        arena_r = 0.42 * h
        vignette = 1.0 - 0.35 * (radius / radius.max()) ** 2
        ring = 60.0 * np.exp(-(((radius - arena_r) / 10.0) ** 2))
        luma = (95 + 18 * shading + 14 * texture) * vignette + ring
        luma += 30.0 * (radius > arena_r + 12)  # the brighter floor outside the wall
        # Noise is added as (noise - offset); keep the base inside [offset, 255 - offset] so uint8
        # arithmetic never wraps (and so the luma stays inside the broadcast range).
        self.noise_mask = (1 << spec.noise_bits) - 1
        offset = self.noise_mask
        self.y_base = np.clip(luma, 16 + offset, 235 - offset).astype(np.uint8) - np.uint8(offset)
        hc, wc = h // 2, w // 2
        u = 128 + 2 * cv2.GaussianBlur(cv2.resize(rng.normal(0, 1, (hc // 24, wc // 24)), (wc, hc)), (0, 0), 8)
        v = 128 + 3 * cv2.GaussianBlur(cv2.resize(rng.normal(0, 1, (hc // 24, wc // 24)), (wc, hc)), (0, 0), 8)
        self.u_base = np.clip(u - 1, 17, 239).astype(np.uint8)  # chroma noise is 0..2, offset 1
        self.v_base = np.clip(v + 3 - 1, 17, 239).astype(np.uint8)
        self.arena = (cx, cy, arena_r - 90)
        self.phases = rng.uniform(0, 2 * np.pi, 6)
        self.buffer = np.empty((h * 3 // 2, w), np.uint8)

    def animal(self, t: float) -> tuple[float, float, float]:
        """Centre (x, y) in pixels and heading (degrees) at time ``t`` seconds."""
        cx, cy, r = self.arena
        p = self.phases
        x = cx + r * (0.6 * math.sin(0.21 * t + p[0]) + 0.35 * math.sin(0.53 * t + p[1]))
        y = cy + r * (0.6 * math.cos(0.17 * t + p[2]) + 0.35 * math.sin(0.61 * t + p[3]))
        dx = r * (0.6 * 0.21 * math.cos(0.21 * t + p[0]) + 0.35 * 0.53 * math.cos(0.53 * t + p[1]))
        dy = r * (-0.6 * 0.17 * math.sin(0.17 * t + p[2]) + 0.35 * 0.61 * math.cos(0.61 * t + p[3]))
        heading = math.degrees(math.atan2(dy, dx)) + 15 * math.sin(2.3 * t + p[4])
        return x, y, heading

    def frame(self, index: int) -> np.ndarray:
        """The yuv420p frame ``index`` as one (1.5·H, W) uint8 array (PyAV's layout)."""
        h, w, buf = HEIGHT, WIDTH, self.buffer
        y_plane = buf[:h]
        u_plane = buf[h : h + h // 4].reshape(h // 2, w // 2)
        v_plane = buf[h + h // 4 :].reshape(h // 2, w // 2)
        np.copyto(y_plane, self.y_base)
        np.copyto(u_plane, self.u_base)
        np.copyto(v_plane, self.v_base)
        x, y, heading = self.animal(index / FRAME_RATE)
        rad = math.radians(heading)
        ux, uy = math.cos(rad), math.sin(rad)
        body, head, tail = (x, y), (x + 95 * ux, y + 95 * uy), (x - 170 * ux, y - 170 * uy)
        # Drawn on the noise-free base (values minus the noise offset), so the noise covers it too.
        luma = 52 - self.noise_mask
        # (plane, subsampling, body, head, tail): a dark brown body, a lighter head, a pink tail.
        for plane, s, body_v, head_v, tail_v in (
            (y_plane, 1, luma, luma + 10, luma + 45),
            (u_plane, 2, 123, 123, 126),
            (v_plane, 2, 133, 133, 140),
        ):

            def pt(p, s=s):
                return (round(p[0] / s), round(p[1] / s))

            cv2.line(plane, pt(body), pt(tail), tail_v, max(1, 9 // s), cv2.LINE_AA)
            cv2.ellipse(plane, pt(body), (80 // s, 42 // s), heading, 0, 360, body_v, -1, cv2.LINE_AA)
            cv2.ellipse(plane, pt(head), (40 // s, 26 // s), heading, 0, 360, head_v, -1, cv2.LINE_AA)

        raw = np.frombuffer(self.rng.bytes(h * w), np.uint8).reshape(h, w)
        y_plane += raw & self.noise_mask
        y_plane += (raw >> self.spec.noise_bits) & self.noise_mask
        chroma = np.frombuffer(self.rng.bytes(h * w // 4), np.uint8).reshape(h // 2, w // 2)
        u_plane += chroma % 3
        v_plane += (chroma >> 4) % 3
        return buf


# ----------------------------------------------------------------------------------------------
# Writing


def _write_camera(spec: ClipSpec, camera: int, directory: str) -> list[dict]:
    """Write all chunks of one camera; returns one record per chunk."""
    scene = Scene(spec, camera)
    records = []
    for chunk in range(spec.chunks):
        start = chunk * spec.chunk_frames
        path = os.path.join(directory, spec.file_name(camera, start))
        tmp = path + ".partial"
        began = time.perf_counter()
        with av.open(tmp, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=FRAME_RATE)
            stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
            stream.bit_rate = int(spec.kib_per_frame * 1024 * 8 * FRAME_RATE)
            stream.options = {"preset": spec.preset, "slices": str(spec.slices)}
            # Frame threads, not PyAV's default sliced threads (those would force 2+ slices).
            stream.thread_type = "FRAME"
            stream.thread_count = 2
            for index in range(start, start + spec.chunk_frames):
                frame = av.VideoFrame.from_ndarray(scene.frame(index), format="yuv420p")
                frame.pts = index - start
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
        size = os.path.getsize(path)
        records.append(
            {
                "file": os.path.basename(path),
                "camera": camera,
                "start": start,
                "frames": spec.chunk_frames,
                "bytes": size,
                "kib_per_frame": size / spec.chunk_frames / 1024,
                "encode_seconds": time.perf_counter() - began,
            }
        )
    return records


def fabricate_clips(directory: str | os.PathLike, spec: ClipSpec = ClipSpec(), workers: int = 2) -> list[Path]:
    """Write (or reuse) the clip set of ``spec`` in ``directory``; returns the chunk paths.

    Chunks are returned camera by camera, by start. Raises RuntimeError when the video size per
    frame leaves `KIB_PER_FRAME_RANGE`.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / name for name in spec.chunk_names()]
    manifest = directory / MANIFEST
    if manifest.exists() and all(path.exists() for path in paths):
        stored = json.loads(manifest.read_text())
        if stored.get("spec") == spec.to_json():
            return paths
    began = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, min(workers, len(spec.cameras)))) as pool:
        futures = [pool.submit(_write_camera, spec, camera, str(directory)) for camera in spec.cameras]
        records = [record for future in futures for record in future.result()]
    low, high = KIB_PER_FRAME_RANGE
    for record in records:
        if not low <= record["kib_per_frame"] <= high:
            raise RuntimeError(f"{record['file']}: {record['kib_per_frame']:.1f} KiB per frame, outside {low}–{high}")
    manifest.write_text(
        json.dumps({"spec": spec.to_json(), "chunks": records, "seconds": time.perf_counter() - began}, indent=1)
    )
    return paths


def clip_records(directory: str | os.PathLike) -> list[dict]:
    """The per-chunk records (file, camera, start, frames, bytes, kib_per_frame) of a fabricated set."""
    return json.loads((Path(directory) / MANIFEST).read_text())["chunks"]


# ----------------------------------------------------------------------------------------------
# Motion capture hook


def fabricate_mocap(
    directory: str | os.PathLike,
    spec: ClipSpec,
    num_samples: int | None = None,
    max_frames_per_chunk: int | None = None,
) -> Path:
    """Write ``mocap-{recording}.mat`` (the released structure) matching the clips.

    Row t refers, on every camera, to the t-th frame of the clips, counting only the first
    ``max_frames_per_chunk`` frames of each chunk when given (so a prepare decodes what the codec
    measurements decode). With ``num_samples`` larger than that (the ``mocap`` throughput figure
    wants ≥ 150,000 rows), frame indices wrap around. Markers move as in `rat7m_builder.sample`,
    projected by its 1320×1048 cameras; all six cameras are in the file, as in the release.
    """
    import numpy as np

    from rat7m_builder.sample import (
        FabricatedRecording,
        SampleSpec,
        fabricate_cameras,
        fabricate_motion,
        write_mocap_mat,
    )

    per_chunk = min(max_frames_per_chunk or spec.chunk_frames, spec.chunk_frames)
    frames = np.concatenate([np.arange(per_chunk) + index * spec.chunk_frames for index in range(spec.chunks)])
    num_samples = num_samples or len(frames)
    sample_spec = SampleSpec(recordings=(spec.recording,), num_samples=num_samples, width=1320, height=1048)
    frame_index = np.resize(frames, num_samples).astype(np.int64)
    recording = FabricatedRecording(
        recording=spec.recording,
        keypoints_3d=fabricate_motion(sample_spec, recording_seed=spec.seed),
        frame_index={camera: frame_index for camera in range(1, 7)},
        cameras=fabricate_cameras(sample_spec),
        num_video_frames=spec.frames_per_camera,
    )
    path = Path(directory) / f"mocap-{spec.recording}.mat"
    write_mocap_mat(str(path), recording, np.random.default_rng(spec.seed))
    return path


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory")
    parser.add_argument("--cameras", type=int, default=6, help="cameras 1..N (default 6)")
    parser.add_argument("--frames", type=int, default=600, help="frames per chunk (default 600)")
    parser.add_argument("--chunks", type=int, default=1, help="chunks per camera (default 1)")
    parser.add_argument("--slices", type=int, default=1, help="H.264 slices per frame (default 1)")
    args = parser.parse_args(argv)
    spec = ClipSpec(
        cameras=tuple(range(1, args.cameras + 1)), chunk_frames=args.frames, chunks=args.chunks, slices=args.slices
    )
    began = time.perf_counter()
    paths = fabricate_clips(args.directory, spec)
    for record in clip_records(args.directory):
        print(f"{record['file']}: {record['frames']} frames, {record['kib_per_frame']:.1f} KiB/frame")
    print(f"{len(paths)} chunks in {time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    main()
