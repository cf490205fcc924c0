"""A chunk whose frame size differs from its camera's other chunks (a re-encoded or foreign file).

The camera's calibration, so every ``keypoints_2d``, fits one frame size: such a chunk must stop the
build with a `FrameSizeError` naming it and the chunk it was compared with, in every config that reads
video and with either ``on_corrupt_video`` (the files cannot tell which of the two is the odd one),
before anything is prepared.
"""

from __future__ import annotations

import glob
import os
import re

import av
import numpy as np
import pytest
from helpers import decode_jpeg

import rat7m
from rat7m_builder.errors import FrameSizeError
from rat7m_builder.sample import read_barcode, write_mp4
from rat7m_builder.sources import scan_local
from rat7m_builder.video import CameraFrames

CAMERA = 3
#: Extra columns of the odd chunk (the sample's frames are 320×256).
WIDER = 32


def _chunk_path(root: str, start: int) -> str:
    return os.path.join(root, "video_sequences", f"s1-d1-camera{CAMERA}-{start}.mp4")


def _widen(path: str) -> None:
    """Rewrite an mp4 with the same frames, ``WIDER`` pixels wider (black columns on the right)."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = int(stream.average_rate)
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    height, width = frames[0].shape[:2]
    wider = [np.pad(frame, ((0, 0), (0, WIDER), (0, 0))) for frame in frames]
    os.remove(path)
    write_mp4(path, wider, rate, width + WIDER, height)


def _starts(root: str) -> list[int]:
    names = glob.glob(os.path.join(root, "video_sequences", f"s1-d1-camera{CAMERA}-*.mp4"))
    return sorted(int(re.search(r"-(\d+)\.mp4$", name).group(1)) for name in names)


def _highest_chunk(sample_release) -> int:
    """Start of the chunk holding the highest frame the motion capture refers to (the one planning probes)."""
    highest = int(sample_release.recordings["s1-d1"].frame_index[CAMERA].max())
    return max(start for start in _starts(sample_release.root) if start <= highest)


def _no_prepared_data(cache_dir: str) -> bool:
    return not glob.glob(os.path.join(cache_dir, "**", "*.arrow"), recursive=True)


@pytest.mark.parametrize(
    ("config", "options"),
    [
        ("frames", {}),
        ("frames", {"on_corrupt_video": "skip"}),
        ("frames", {"streaming": True}),
        ("multiview", {"cameras": [1, CAMERA]}),
        ("videos", {}),
    ],
)
def test_odd_middle_chunk_is_refused_naming_both_chunks(config, options, sample_release, release_copy, cache_dir):
    reference = _highest_chunk(sample_release)
    odd = next(start for start in _starts(release_copy) if 0 < start < reference)
    _widen(_chunk_path(release_copy, odd))
    options = {"cameras": [CAMERA], **options}
    streaming = options.pop("streaming", False)

    with pytest.raises(FrameSizeError) as raised:
        dataset = rat7m.load_dataset(
            config, data_dir=release_copy, cache_dir=cache_dir, recordings=["s1-d1"], streaming=streaming, **options
        )
        if streaming:
            for split in dataset.values():
                for _ in split:
                    pass

    message = str(raised.value)
    assert f"s1-d1-camera{CAMERA}-{odd}.mp4: its frames are 352×256 pixels" in message
    assert f"s1-d1-camera{CAMERA}-{reference}.mp4, another chunk of s1-d1 camera {CAMERA}, has 320×256" in message
    assert "Download the odd one again" in message
    assert _no_prepared_data(cache_dir)


def test_odd_probed_chunk_is_refused_at_the_first_chunk_read(sample_release, release_copy, cache_dir):
    # The chunk planning probes is the odd one: then every other chunk differs from it, and the first
    # one read is named together with it (which of the two is wrong is for the user to see).
    reference = _highest_chunk(sample_release)
    _widen(_chunk_path(release_copy, reference))
    with pytest.raises(FrameSizeError) as raised:
        rat7m.load_dataset("frames", data_dir=release_copy, cache_dir=cache_dir, recordings=["s1-d1"], cameras=[CAMERA])
    message = str(raised.value)
    assert re.search(rf"s1-d1-camera{CAMERA}-\d+\.mp4: its frames are 320×256 pixels", message)
    assert f"s1-d1-camera{CAMERA}-{reference}.mp4, another chunk of s1-d1 camera {CAMERA}, has 352×256" in message
    assert _no_prepared_data(cache_dir)


def test_other_cameras_may_have_another_frame_size(sample_release, release_copy, cache_dir):
    # The check is per camera: a camera whose chunks all share a different size is fine.
    for start in _starts(release_copy):
        _widen(_chunk_path(release_copy, start))
    dataset = rat7m.load_dataset(
        "frames", data_dir=release_copy, cache_dir=cache_dir, recordings=["s1-d1"], cameras=[1, CAMERA], split="train"
    )
    sizes = {(row["camera"], row["image"].size) for row in dataset}
    assert sizes == {(1, (320, 256)), (CAMERA, (352, 256))}


def test_reader_without_a_planned_size_compares_chunks_with_the_first_one_read(sample_release, release_copy):
    # `CameraFrames` used on its own (no planner): the first frame decoded sets the size.
    starts = _starts(release_copy)
    _widen(_chunk_path(release_copy, starts[1]))
    chunks = scan_local(release_copy).chunks("s1-d1", CAMERA)
    with CameraFrames(chunks, 90, f"s1-d1 camera {CAMERA}") as reader:
        for frame_index in range(starts[1]):
            assert read_barcode(decode_jpeg(reader.get(frame_index))) == frame_index
        with pytest.raises(FrameSizeError, match=rf"camera{CAMERA}-{starts[1]}\.mp4: its frames are 352×256.*"):
            reader.get(starts[1])
