"""Train a tiny 2D keypoint regressor for a few steps on streamed RAT7M ``frames``.

A minimal, runnable example of training straight from ``rat7m.load_dataset("frames",
streaming=True)``: nothing is prepared or staged on disk, mp4 chunks are decoded on the fly, and a
``torch.utils.data.DataLoader`` with 2 workers splits the stream by shard (one shard per mp4
chunk), so each worker decodes its own chunks. The model (a few conv layers) predicts the 20
markers' pixel coordinates, normalised by the image size; markers that are NaN (not tracked) are
masked out of the loss.

By default it runs on the embedded sample: a miniature release in the real formats, fabricated into
a temporary folder (no network). ``--data-dir`` points it at a local RAT7M copy instead, and
``--figshare`` streams from figshare (HTTP Range reads, nothing stored).

Usage::

    python scripts/train_example.py [--data-dir DIR | --figshare] [--recordings s1-d1,s2-d1] [--split test]
        [--cameras 1,2] [--steps 20] [--batch-size 8] [--num-workers 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias
from torch import nn

import rat7m
from rat7m_builder.manifest import NUM_MARKERS, SPLIT_RECORDINGS

#: Images are resized to this (height, width) before the network: small enough to run on a CPU.
INPUT_SIZE = (96, 120)


class KeypointRegressor(nn.Module):
    """A few strided convolutions, global pooling, and a linear head to (x, y) per marker in [0, 1]."""

    def __init__(self, num_markers: int = NUM_MARKERS, width: int = 16):
        super().__init__()
        self.num_markers = num_markers
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(4 * width, num_markers * 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.head(self.features(images).flatten(1))
        return torch.sigmoid(out).view(-1, self.num_markers, 2)


def collate(rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize each image to `INPUT_SIZE` and scale its keypoints to [0, 1] by the image size.

    Rows come from ``with_format("torch")``: ``image`` is a (3, H, W) uint8 tensor, ``keypoints_2d``
    a (20, 2) float32 tensor of 0-based pixels (NaN where untracked).
    """
    images, targets = [], []
    for row in rows:
        image = row["image"].float().div(255.0)
        height, width = image.shape[-2:]
        images.append(F.interpolate(image[None], size=INPUT_SIZE, mode="bilinear", align_corners=False)[0])
        scale = torch.tensor([width, height], dtype=torch.float32)
        targets.append(row["keypoints_2d"] / scale)
    return torch.stack(images), torch.stack(targets)


def masked_mse(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """Mean squared error over the coordinates that are not NaN; None when every one is NaN."""
    valid = ~torch.isnan(target)
    if not valid.any():
        return None
    return (predicted[valid] - target[valid]).pow(2).mean()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data-dir", help="a local RAT7M copy (default: fabricate the embedded sample)")
    source.add_argument("--figshare", action="store_true", help="stream from figshare instead")
    parser.add_argument("--recordings", help="comma-separated, e.g. s1-d1,s2-d1 (default: all present)")
    parser.add_argument("--cameras", help="comma-separated camera numbers (default: all six)")
    parser.add_argument("--split", choices=tuple(SPLIT_RECORDINGS), default="train", help="default: train")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for training (the workers decode on the other cores)"
    )
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)  # a tiny model: more threads only contend with the decoding workers
    config: dict = {}
    if args.recordings:
        config["recordings"] = [name.strip() for name in args.recordings.split(",") if name.strip()]
        if not set(config["recordings"]) & set(SPLIT_RECORDINGS[args.split]):
            parser.error(
                f"--recordings {args.recordings} holds no recording of the {args.split} split "
                f"({', '.join(SPLIT_RECORDINGS[args.split])}); choose the split with --split"
            )
    if args.cameras:
        config["cameras"] = [int(camera) for camera in args.cameras.split(",")]

    with tempfile.TemporaryDirectory(prefix="rat7m-train-") as scratch:
        data_dir = args.data_dir
        if data_dir is None and not args.figshare:
            from rat7m_builder.sample import write_sample

            data_dir = write_sample(scratch).root
            print(f"embedded sample fabricated in {data_dir}")
        stream = rat7m.load_dataset("frames", split=args.split, streaming=True, data_dir=data_dir, **config)
        print(f"streaming frames/{args.split}: {stream.num_shards} shards, {args.num_workers} DataLoader workers")
        stream = stream.select_columns(["image", "keypoints_2d"]).shuffle(seed=args.seed, buffer_size=64)
        stream = stream.with_format("torch")
        loader = torch.utils.data.DataLoader(
            stream, batch_size=args.batch_size, num_workers=args.num_workers, collate_fn=collate
        )

        model = KeypointRegressor()
        optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
        step, epoch, started = 0, 0, time.perf_counter()
        while step < args.steps:
            stream.set_epoch(epoch)  # reshuffles shards and the buffer each pass
            seen = 0
            for images, targets in loader:
                seen += 1
                loss = masked_mse(model(images), targets)
                if loss is None:
                    continue  # every marker untracked in this batch
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                step += 1
                rmse_px = math.sqrt(loss.item()) * images.shape[-1]
                print(f"step {step:4d}  epoch {epoch}  loss {loss.item():.5f}  (≈{rmse_px:.1f} px RMS at input scale)")
                if step >= args.steps:
                    break
            if seen == 0:
                raise SystemExit("The stream is empty: check --data-dir / --recordings / --cameras.")
            epoch += 1
        print(f"done: {step} steps in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
