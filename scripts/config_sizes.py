"""Bytes per camera-frame of each config's Hub export, measured on a fabricated sample.

Fabricates a release with textured, noisy frames (realistic bytes per frame for its size), exports
every config with `rat7m export`'s code, and prints the Parquet bytes per camera-frame next to the
source mp4 bytes per frame. Usage: ``python scripts/config_sizes.py [--width 640 --height 512]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import rat7m
from rat7m_builder.hub import export_dataset
from rat7m_builder.sample import SampleSpec, write_mini_annotation, write_sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--samples", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rat7m-sizes-") as work:
        spec = SampleSpec(
            recordings=("s1-d1",), num_samples=args.samples, chunk_frames=30, width=args.width, height=args.height,
            sensor_noise=6,
        )  # fmt: skip
        release = write_sample(os.path.join(work, "release"), spec)
        write_mini_annotation(
            release, os.path.join(release.root, "mini_rat7m_train_test_annotation.pkl"), sample_step=1
        )
        videos = os.path.join(release.root, "video_sequences")
        video_bytes = sum(os.path.getsize(os.path.join(videos, name)) for name in os.listdir(videos))
        video_frames = 6 * release.recordings["s1-d1"].num_video_frames
        camera_frames = 6 * spec.num_samples  # every sample seen by six cameras
        print(f"sample: {spec.width}×{spec.height} px, {spec.num_samples} samples × 6 cameras, textured + noise")
        print(f"{'source mp4':<12} {video_bytes / video_frames:>10.0f} bytes per video frame")
        for config in ("frames", "multiview", "mini", "videos", "mocap", "cameras"):
            dataset = rat7m.load_dataset(config, data_dir=release.root, cache_dir=os.path.join(work, "cache"))
            out = os.path.join(work, "hub")
            export_dataset(dataset, config, out)
            folder = os.path.join(out, config)
            size = sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder))
            if config == "videos":  # it keeps every video frame, also those no sample refers to
                ratio = size / video_bytes
                print(f"{config:<12} {size / video_frames:>10.0f} bytes per video frame ({ratio:.3f}× the mp4s)")
            else:
                print(f"{config:<12} {size / camera_frames:>10.0f} bytes per camera-frame (Parquet, {size} bytes)")


if __name__ == "__main__":
    main()
