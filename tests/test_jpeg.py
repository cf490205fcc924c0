"""JPEG encoding of decoded frames (`rat7m_builder.video.encode_jpeg`): range stretch, colours, one output.

The stretch from limited-range video to full-range JFIF goes through fixed tables, by OpenCV when
it is installed and by ``bytes.translate`` otherwise: the two must give the same bytes, so a
dataset prepared with or without OpenCV is the same dataset.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from fractions import Fraction

import av
import numpy as np
import pytest
import simplejpeg
from av.video.reformatter import ColorRange

from rat7m_builder import video

rng = np.random.default_rng(7)


def _frame(width: int, height: int, *, smooth: bool = False) -> av.VideoFrame:
    """A yuv420p frame whose planes are padded (``line_size`` > width), limited range by default."""
    if smooth:  # slow waves, well inside the legal range: what a JPEG keeps well, for the colour checks
        rows, cols = np.mgrid[0:height, 0:width]
        luma = 120 + 90 * np.sin(rows / 37.0) * np.cos(cols / 53.0)
        chroma_rows, chroma_cols = np.mgrid[0 : height // 2, 0 : width // 2]
        cb = 128 + 60 * np.sin(chroma_cols / 29.0)
        cr = 128 + 60 * np.cos(chroma_rows / 31.0)
        planes = np.concatenate([np.round(plane).astype(np.uint8).ravel() for plane in (luma, cb, cr)])
    else:  # every byte value, including the illegal ones below 16 and above 235/240
        planes = rng.integers(0, 256, height * width * 3 // 2, dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(planes.reshape(height * 3 // 2, width), format="yuv420p")
    assert frame.planes[0].line_size > width, "the test wants padded rows"
    return frame


def _views(frame: av.VideoFrame) -> list[np.ndarray]:
    return [
        np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]
        for plane in frame.planes
    ]


def test_the_tables_map_the_legal_ranges_onto_0_255():
    luma, chroma = video.LUMA_TO_FULL_RANGE, video.CHROMA_TO_FULL_RANGE
    assert (luma[16], luma[235], luma[0], luma[255]) == (0, 255, 0, 255)
    assert (chroma[16], chroma[128], chroma[240], chroma[0], chroma[255]) == (0, 128, 255, 0, 255)
    assert np.all(np.diff(luma.astype(int)) >= 0) and np.all(np.diff(chroma.astype(int)) >= 0)
    # Inside the legal range every step of the video is kept (no two levels merge).
    assert len(set(luma[16:236])) == 220 and len(set(chroma[16:241])) == 225
    # Y' = (Y − 16)·255/219 rounded: e.g. 126 → 128.08 → 128.
    assert luma[126] == 128 and chroma[72] == round((72 - 128) * 255 / 224 + 128)


def test_the_tables_are_the_formulas_rounded_to_nearest_for_every_value():
    # Exact rationals, rounded half to even (as numpy does; only chroma 16 and 240 fall on a half).
    luma = [min(max(round(Fraction((value - 16) * 255, 219)), 0), 255) for value in range(256)]
    chroma = [min(max(round(Fraction((value - 128) * 255, 224) + 128), 0), 255) for value in range(256)]
    assert video.LUMA_TO_FULL_RANGE.tolist() == luma
    assert video.CHROMA_TO_FULL_RANGE.tolist() == chroma


@pytest.mark.parametrize(("width", "height"), [(1320, 1048), (648, 488), (198, 2002)])
@pytest.mark.parametrize("with_opencv", [True, False])
def test_each_plane_goes_through_its_table_exactly(monkeypatch, width, height, with_opencv):
    if not with_opencv:
        monkeypatch.setattr(video, "_cv2", None)
    elif video._cv2 is None:
        pytest.fail("OpenCV is a test dependency (the [dev] extra): the accelerated path must be tested")
    frame = _frame(width, height)
    for index, (plane, source) in enumerate(zip(frame.planes, _views(frame), strict=True)):
        stretched = video.full_range_plane(plane, index)
        table = video.LUMA_TO_FULL_RANGE if index == 0 else video.CHROMA_TO_FULL_RANGE
        assert stretched.shape == source.shape
        np.testing.assert_array_equal(stretched, table[source])
        np.testing.assert_array_equal(video.full_range_plane(plane, index, use_opencv=False), stretched)
    # The decoder's buffer is a reference picture: it must come out untouched.
    assert np.array_equal(_views(frame)[0], _views(frame)[0].copy())


def test_the_jpeg_bytes_do_not_depend_on_opencv_being_installed(monkeypatch):
    frame = _frame(1320, 1048)
    with_opencv = video.encode_jpeg(frame, 90)
    monkeypatch.setattr(video, "_cv2", None)
    assert video.encode_jpeg(frame, 90) == with_opencv


def test_limited_range_frames_come_out_in_the_colours_ffmpeg_shows():
    # FFmpeg's own limited-range YUV → RGB conversion is the reference; JPEG and 4:2:0 cost a little.
    frame = _frame(648, 488, smooth=True)
    reference = frame.to_ndarray(format="rgb24").astype(np.int16)
    decoded = simplejpeg.decode_jpeg(video.encode_jpeg(frame, 95)).astype(np.int16)
    error = np.abs(decoded - reference).mean()
    assert error < 2.0
    # Negative control: the unstretched planes (what a JPEG of the raw decoder output holds) are
    # visibly washed out, so the check above can tell a missing stretch.
    raw = simplejpeg.decode_jpeg(simplejpeg.encode_jpeg_yuv_planes(*_views(frame), quality=95)).astype(np.int16)
    raw_error = np.abs(raw - reference).mean()
    assert raw_error > 5.0 and raw_error > 4 * error


def test_full_range_frames_are_encoded_as_they_are():
    frame = _frame(648, 488, smooth=True)
    frame.color_range = ColorRange.JPEG
    assert video.encode_jpeg(frame, 90) == simplejpeg.encode_jpeg_yuv_planes(*_views(frame), quality=90)


def test_yuvj420p_frames_are_full_range_even_untagged():
    # yuvj420p means full range whatever the range tag says (here: unspecified); stretching it again
    # would clip the shadows and highlights
    planes = np.concatenate([plane.ravel() for plane in _views(_frame(648, 488))])
    frame = av.VideoFrame.from_ndarray(planes.reshape(488 * 3 // 2, 648), format="yuvj420p")
    assert frame.format.name == "yuvj420p" and frame.color_range != ColorRange.JPEG
    assert video.encode_jpeg(frame, 90) == simplejpeg.encode_jpeg_yuv_planes(*_views(frame), quality=90)


@pytest.mark.parametrize("pixel_format", ["yuv444p", "yuv422p", "rgb24"])
def test_frames_in_other_pixel_formats_keep_their_colours(pixel_format):
    # A chunk that is not 4:2:0 (another H.264 profile, a re-encode) goes through RGB: red stays red.
    rgb = np.zeros((96, 128, 3), np.uint8)
    rgb[:, :48] = (200, 40, 30)
    rgb[:, 48:96] = (30, 180, 60)
    rgb[:, 96:] = (40, 60, 210)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pixel_format)
    assert frame.format.name == pixel_format
    reference = frame.to_ndarray(format="rgb24").astype(np.int16)
    decoded = simplejpeg.decode_jpeg(video.encode_jpeg(frame, 95)).astype(np.int16)
    assert decoded.shape == reference.shape
    assert np.abs(decoded - reference).mean() < 3.0
    # the bands' colours themselves, away from the edges that 4:2:0 subsampling blurs
    np.testing.assert_allclose(decoded[:, 8:40].mean(axis=(0, 1)), reference[:, 8:40].mean(axis=(0, 1)), atol=4)
    assert decoded[:, 8:40, 0].mean() > 150 > decoded[:, 8:40, 2].mean()


def test_the_stretch_starts_no_opencv_threads():
    # OpenCV runs lookups of ≥ 2**18 pixels in its thread pool (started on first use). The builder
    # keeps to the calling thread: its workers are forked processes, each already one per core.
    code = textwrap.dedent(
        """
        import re
        import numpy as np, av
        from rat7m_builder import video
        assert video._cv2 is not None
        def threads():
            return int(re.search(r"Threads:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
        frame = av.VideoFrame.from_ndarray(np.full((1048 * 3 // 2, 1320), 100, np.uint8), format="yuv420p")
        before = threads()
        for _ in range(3):
            video.encode_jpeg(frame, 90)
        after = threads()
        video._cv2.LUT(np.zeros((1048, 1320), np.uint8), video.LUMA_TO_FULL_RANGE)  # one call on a whole plane
        print(before, after, threads())
        """
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, after, whole_plane = map(int, output.split())
    assert after == before
    assert whole_plane > before, "control: a whole-plane lookup does start OpenCV's pool (the check can see threads)"
