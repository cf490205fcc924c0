"""The fabricated release checked against independent expectations (a mutation audit of `rat7m_builder.sample`).

The rest of the suite proves frame alignment and geometry through the fabricator's own account of what
it wrote (`read_barcode`, `FabricatedRecording`, `marker_colours`): a fabricator bug that those share with
the files, or a release quirk silently not fabricated, would let the builder pass for the wrong reason.
Here the fabricated files are read back with PyAV, scipy and OpenCV only, and compared with the formats
that shared/RAT7M.md and the fabricator's docstrings document, written out by hand below.
"""

from __future__ import annotations

import os
import re
import zipfile

import av
import cv2
import numpy as np
import pytest
import scipy.io

import rat7m
from rat7m_builder.sample import SampleSpec, write_sample

#: The documented marker order (RAT7M.md, "Motion capture"), written out rather than imported.
DOCUMENTED_MARKERS = (
    "HeadF", "HeadB", "HeadL", "SpineF", "SpineM", "SpineL", "Offset1", "Offset2", "HipL", "HipR",
    "ElbowL", "ArmL", "ShoulderL", "ShoulderR", "ElbowR", "ArmR", "KneeR", "KneeL", "ShinL", "ShinR",
)  # fmt: skip
#: The order in which the release stores its camera structs (RAT7M.md).
STORED_CAMERA_ORDER = ("Camera1", "Camera2", "Camera4", "Camera5", "Camera3", "Camera6")
#: Figshare article ids (RAT7M.md, "Release layout") of the default sample's recordings.
VIDEO_ARTICLE_IDS = {"s1-d1": 13751023, "s5-d1": 13770565}
MOCAP_ARTICLE_ID = 13739233

# The barcode as `rat7m_builder.sample` documents it: 20 cells, most significant bit first, each
# `width // 22` pixels wide and centred, across the top 16 rows; a set bit is white, everything else
# in the band black.
BARCODE_BITS = 20
BARCODE_ROWS = 16
WHITE_ABOVE = 225  # grey levels after H.264 (measured: exactly 0 and 255 at crf 12)
BLACK_BELOW = 30

#: The grey of a fabricated frame without sensor noise, outside the barcode and the dots.
FLAT_BACKGROUND = 40
#: Grey level above which a pixel belongs to a marker dot: every marker colour averages ≥ 138 over
#: its channels, the background is `FLAT_BACKGROUND`.
DOT_GREY = 85
#: How close two markers' projections may come before their dots merge (radius-3 dots plus blur).
DOT_SEPARATION = 14
#: Half the side of the window searched around a projection for its dot.
DOT_WINDOW = 6

RECORDING = "s1-d1"
CAMERAS = range(1, 7)


def _chunk_starts(folder: str, recording: str, camera: int) -> list[int]:
    """Numerically sorted starts of a camera's chunks, named exactly ``{recording}-camera{K}-{start}.mp4``."""
    pattern = re.compile(rf"^{recording}-camera{camera}-(0|[1-9][0-9]*)\.mp4$")  # no zero padding
    return sorted(int(match.group(1)) for name in os.listdir(folder) if (match := pattern.match(name)))


def _decode(path: str) -> list[np.ndarray]:
    with av.open(path) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(container.streams.video[0])]


def _load_mat(path: str) -> dict:
    return scipy.io.loadmat(path, simplify_cells=True)


def _keypoints_by_documented_name(mat: dict) -> np.ndarray:
    """(N, 20, 3) markers, in the documented order whatever the struct's field order."""
    return np.stack([np.asarray(mat["mocap"][name], dtype=np.float64) for name in DOCUMENTED_MARKERS], axis=1)


def _opencv_projection(camera: dict, points: np.ndarray) -> np.ndarray:
    """(20, 2) 0-based pixels of ``points`` through ``cv2.projectPoints``, with the OpenCV parameters
    built from the stored MATLAB fields as RAT7M.md spells it out (NaN rows stay NaN)."""
    camera_matrix = np.asarray(camera["IntrinsicMatrix"], dtype=np.float64).T.copy()
    camera_matrix[:2, 2] -= 1.0  # MATLAB's 1-based principal point → 0-based pixels
    rotation = np.asarray(camera["rotationMatrix"], dtype=np.float64).T
    translation = np.asarray(camera["translationVector"], dtype=np.float64).reshape(3)
    radial = np.asarray(camera["RadialDistortion"], dtype=np.float64).reshape(-1)
    p1, p2 = np.asarray(camera["TangentialDistortion"], dtype=np.float64).reshape(2)
    distortion = np.array([radial[0], radial[1], p1, p2, radial[2] if radial.size == 3 else 0.0])
    rvec, _ = cv2.Rodrigues(rotation)
    projected = np.full((len(points), 2), np.nan)
    finite = np.isfinite(points).all(axis=1)
    if finite.any():
        image_points, _ = cv2.projectPoints(points[finite], rvec, translation, camera_matrix, distortion)
        projected[finite] = image_points.reshape(-1, 2)
    return projected


@pytest.fixture(scope="module")
def videos(sample_release) -> dict[int, list[np.ndarray]]:
    """camera → every decoded RGB frame of s1-d1, in global frame order (chunks checked contiguous)."""
    folder = os.path.join(sample_release.root, "video_sequences")
    decoded = {}
    for camera in CAMERAS:
        frames = []
        for start in _chunk_starts(folder, RECORDING, camera):
            assert start == len(frames), f"camera {camera}: chunk {start} does not follow frame {len(frames) - 1}"
            frames += _decode(os.path.join(folder, f"{RECORDING}-camera{camera}-{start}.mp4"))
        decoded[camera] = frames
    return decoded


@pytest.fixture(scope="module")
def mocap(sample_release) -> dict:
    return _load_mat(os.path.join(sample_release.root, "annotations", f"mocap-{RECORDING}.mat"))


def test_chunks_are_h264_yuv420p_with_inter_frames_and_names_that_sort_differently_as_strings(sample_release):
    """Every chunk is H.264 4:2:0 at the spec's size and rate, holds `chunk_frames` frames (the last one
    fewer), has inter-coded frames as a camera's video does, and is named by its unpadded start; the
    starts are such that sorting the names as strings differs from sorting them by number, so the
    builder's numeric sort is exercised."""
    spec = sample_release.spec
    folder = os.path.join(sample_release.root, "video_sequences")
    for camera in CAMERAS:
        starts = _chunk_starts(folder, RECORDING, camera)
        names = [f"{RECORDING}-camera{camera}-{start}.mp4" for start in starts]
        assert len(names) == sum(name.startswith(f"{RECORDING}-camera{camera}-") for name in os.listdir(folder))
        assert starts == list(range(0, starts[-1] + 1, spec.chunk_frames))
        assert sorted(names) != names, "chunk names sort the same as strings and as numbers"
        for start, name in zip(starts, names, strict=True):
            with av.open(os.path.join(folder, name)) as container:
                stream = container.streams.video[0]
                assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p", name
                assert (stream.width, stream.height) == (spec.width, spec.height), name
                assert stream.average_rate == spec.frame_rate, name
                keyframes = [packet.is_keyframe for packet in container.demux(stream) if packet.size]
            if start != starts[-1]:
                assert len(keyframes) == spec.chunk_frames, name
            assert len(keyframes) == 1 or not all(keyframes), f"{name}: every frame is a keyframe"


def test_every_frame_shows_its_global_index_in_the_documented_barcode(videos, sample_release):
    """Pixel by pixel, frame ``g`` of every camera carries ``g`` in the documented encoding (not merely
    something `read_barcode` reads back as ``g``), and the band is 16 rows: the next rows are background."""
    width = sample_release.spec.width
    cell = width // (BARCODE_BITS + 2)
    margin = (width - BARCODE_BITS * cell) // 2
    for camera, frames in videos.items():
        for global_index, image in enumerate(frames):
            grey = image.astype(np.float64).mean(axis=2)
            where = f"camera {camera} frame {global_index}"
            for bit in range(BARCODE_BITS):
                # the cell without its outermost rows and columns, which compression may smear
                inside = grey[1 : BARCODE_ROWS - 1, margin + bit * cell + 2 : margin + (bit + 1) * cell - 2]
                if global_index >> (BARCODE_BITS - 1 - bit) & 1:
                    assert inside.min() > WHITE_ABOVE, f"{where}: bit {bit} (MSB first) should be white"
                else:
                    assert inside.max() < BLACK_BELOW, f"{where}: bit {bit} (MSB first) should be black"
            assert grey[1 : BARCODE_ROWS - 1, : margin - 2].max() < BLACK_BELOW, f"{where}: left margin"
            assert grey[1 : BARCODE_ROWS - 1, margin + BARCODE_BITS * cell + 2 :].max() < BLACK_BELOW, where
            below = np.median(grey[BARCODE_ROWS + 1 : BARCODE_ROWS + 8], axis=1)
            assert (np.abs(below - FLAT_BACKGROUND) <= 3).all(), (
                f"{where}: the rows under the 16-row band are not background"
            )


def test_marker_dots_sit_at_the_opencv_projection_of_the_stored_calibration(videos, mocap, sample_release):
    """Each marker's dot is centred on the pixel nearest to ``cv2.projectPoints`` of the .mat's marker
    through the .mat's calibration (distortion included, 0-based pixels), in the frame the .mat's
    ``frame`` names for that camera; and a dot's colour tells its marker from every other marker."""
    spec = sample_release.spec
    keypoints = _keypoints_by_documented_name(mocap)
    dot_colours: dict[int, list[np.ndarray]] = {marker: [] for marker in range(len(DOCUMENTED_MARKERS))}
    checked = 0
    for camera in CAMERAS:
        stored = mocap["cameras"][f"Camera{camera}"]
        frame_of_sample = np.asarray(stored["frame"]).reshape(-1).astype(int)
        for sample, frame in enumerate(frame_of_sample):
            projected = _opencv_projection(stored, keypoints[sample])
            grey = videos[camera][frame].astype(np.float64).mean(axis=2)
            for marker, (x, y) in enumerate(projected):
                if not np.isfinite(x):
                    continue
                nearest_other = np.nanmin(np.hypot(*(np.delete(projected, marker, axis=0) - (x, y)).T))
                column, row = int(round(x)), int(round(y))
                inside = DOT_WINDOW <= column < spec.width - DOT_WINDOW
                inside &= BARCODE_ROWS + DOT_WINDOW <= row < spec.height - DOT_WINDOW
                if nearest_other < DOT_SEPARATION or not inside:
                    continue
                window = (
                    slice(row - DOT_WINDOW, row + DOT_WINDOW + 1),
                    slice(column - DOT_WINDOW, column + DOT_WINDOW + 1),
                )
                rows, columns = np.nonzero(grey[window] > DOT_GREY)
                where = f"camera {camera} sample {sample} (frame {frame}) marker {DOCUMENTED_MARKERS[marker]}"
                assert rows.size >= 9, f"{where}: no dot near the projection ({x:.2f}, {y:.2f})"
                centre = (column - DOT_WINDOW + columns.mean(), row - DOT_WINDOW + rows.mean())
                # a symmetric disc decodes centred to ~0.1 px; rounding differently moves it a whole pixel
                assert np.hypot(centre[0] - column, centre[1] - row) <= 0.3, (
                    f"{where}: dot centred at ({centre[0]:.2f}, {centre[1]:.2f}), projection ({x:.2f}, {y:.2f})"
                )
                dot_colours[marker].append(videos[camera][frame][window][rows, columns].mean(axis=0))
                checked += 1
    assert checked > 1000, f"only {checked} isolated dots checked"
    mean_colours = np.array([np.mean(dot_colours[marker], axis=0) for marker in sorted(dot_colours)])
    for marker, colours in dot_colours.items():
        distances = np.linalg.norm(np.asarray(colours)[:, None, :] - mean_colours[None, :, :], axis=2)
        others = np.delete(distances, marker, axis=1)
        assert (distances[:, marker] < others.min(axis=1)).all(), (
            f"a dot of {DOCUMENTED_MARKERS[marker]} is coloured like another marker's"
        )


def test_frames_that_show_no_tracked_marker_are_plain_background_under_the_barcode(videos, mocap, sample_release):
    """Video frames no sample refers to (after a repeated index, before an offset, the tail) and frames of
    samples with every marker lost show no dots; every camera's video goes on past its last referenced
    frame, by exactly `tail_frames` frames past the latest frame any camera refers to."""
    keypoints = _keypoints_by_documented_name(mocap)
    all_lost = ~np.isfinite(keypoints).any(axis=(1, 2))
    latest_referenced = max(int(np.max(camera["frame"])) for camera in mocap["cameras"].values())
    for camera, frames in videos.items():
        assert len(frames) == latest_referenced + 1 + sample_release.spec.tail_frames, f"camera {camera}"
        frame_of_sample = np.asarray(mocap["cameras"][f"Camera{camera}"]["frame"]).reshape(-1).astype(int)
        assert len(frames) > frame_of_sample.max() + 1, f"camera {camera}: no frame after the last referenced one"
        unreferenced = set(range(len(frames))) - set(frame_of_sample.tolist())
        assert unreferenced, f"camera {camera}: every frame is referenced"
        blank = sorted(unreferenced | set(frame_of_sample[all_lost].tolist()))
        for frame in blank:
            under_the_barcode = frames[frame][BARCODE_ROWS:].astype(np.int16)
            assert np.abs(under_the_barcode - FLAT_BACKGROUND).max() <= 12, (
                f"camera {camera} frame {frame} shows a marker"
            )


@pytest.mark.parametrize("recording", ["s1-d1", "s5-d1"])
def test_mat_keeps_the_release_quirks(sample_release, recording):
    """Read raw with scipy: cameras stored 1, 2, 4, 5, 3, 6; marker fields all present but not in the
    documented order; a 1×3 radial distortion with k3 ≠ 0 on one camera, 1×2 on the others; a
    single-precision tangential distortion on one camera; per-camera offsets (not all equal) with one
    repeated index; a sample with some markers lost and one with all lost; and the name."""
    path = os.path.join(sample_release.root, "annotations", f"mocap-{recording}.mat")
    raw = scipy.io.loadmat(path)  # structs as record arrays: their field order is the stored order
    assert raw["cameras"].dtype.names == STORED_CAMERA_ORDER
    marker_fields = raw["mocap"].dtype.names
    assert sorted(marker_fields) == sorted(DOCUMENTED_MARKERS) and marker_fields != DOCUMENTED_MARKERS
    subject, day = re.fullmatch(r"s(\d+)-d(\d+)", recording).groups()
    assert str(raw["name"][0]) == f"Subject{subject}-Day{day}"

    mat = _load_mat(path)
    cameras = mat["cameras"]
    radial_shapes = {name: np.asarray(camera["RadialDistortion"]).shape for name, camera in cameras.items()}
    assert sorted(radial_shapes.values()) == [(2,)] * 5 + [(3,)], radial_shapes  # simplify_cells drops the 1×
    assert all(np.asarray(camera["RadialDistortion"])[-1] != 0 for camera in cameras.values())
    tangential_types = sorted(np.asarray(camera["TangentialDistortion"]).dtype.name for camera in cameras.values())
    assert tangential_types == ["float32"] + ["float64"] * 5
    assert all("rotationMatrix" in camera for camera in cameras.values())  # lower-case, as released

    spec = sample_release.spec
    repeated = spec.repeated_sample
    for number in CAMERAS:
        stored = raw["cameras"][0, 0][f"Camera{number}"][0, 0]["frame"]
        assert stored.shape == (1, spec.num_samples), f"Camera{number}.frame is not 1×N"
        assert stored.dtype == np.float64, f"Camera{number}.frame is not double, MATLAB's default number class"
        expected = np.arange(spec.num_samples) + spec.frame_offsets[number]
        expected[repeated] = expected[repeated - 1]  # the repeat: frame t + offset is referenced by no sample
        np.testing.assert_array_equal(stored[0], expected, err_msg=f"Camera{number}.frame")
    assert len(set(spec.frame_offsets.values())) >= 3, "the cameras' synchronisation offsets hardly differ"
    assert 0 < repeated < spec.num_samples - 1

    keypoints = _keypoints_by_documented_name(mat)
    tracked = np.isfinite(keypoints).all(axis=2)  # (N, 20)
    assert (~tracked.any(axis=1)).any(), "no sample with every marker lost"
    assert (tracked.any(axis=1) & ~tracked.all(axis=1)).any(), "no sample with only some markers lost"
    # the repeated sample repeats the pose too, as one frame shown twice would (only a marker lost in one of
    # the two may differ: the NaN gaps are cut in after the repeat)
    both = tracked[repeated] & tracked[repeated - 1]
    assert both.sum() >= len(DOCUMENTED_MARKERS) - 1
    np.testing.assert_array_equal(keypoints[repeated][both], keypoints[repeated - 1][both])


def test_helper_and_flat_layouts_hold_exactly_the_release_files(sample_release, sample_flat):
    """The helper layout is ``video_sequences/`` (mp4 chunks only) and ``annotations/`` (.mat only); the
    flat layout holds the same files side by side, with no folders."""
    root = sample_release.root
    assert sorted(os.listdir(root)) == ["annotations", "video_sequences"]
    mats = sorted(os.listdir(os.path.join(root, "annotations")))
    assert mats == ["mocap-s1-d1.mat", "mocap-s5-d1.mat"]
    chunks = sorted(os.listdir(os.path.join(root, "video_sequences")))
    assert all(re.fullmatch(r"s[15]-d1-camera[1-6]-(0|[1-9][0-9]*)\.mp4", name) for name in chunks), chunks
    flat = sorted(os.listdir(sample_flat.root))
    assert flat == sorted(mats + chunks)
    assert all(os.path.isfile(os.path.join(sample_flat.root, name)) for name in flat)


def test_zips_layout_is_one_flat_stored_zip_per_article(sample_release, sample_zips):
    """The zips layout is figshare's article zips only: one per recording's videos named by its article id,
    one for the .mat files, each flat (members at its root) and stored uncompressed, and nothing else."""
    expected_zips = {f"{article}.zip" for article in (*VIDEO_ARTICLE_IDS.values(), MOCAP_ARTICLE_ID)}
    assert set(os.listdir(sample_zips.root)) == expected_zips
    helper_chunks = os.listdir(os.path.join(sample_release.root, "video_sequences"))
    members = {}
    for article in (*VIDEO_ARTICLE_IDS.values(), MOCAP_ARTICLE_ID):
        with zipfile.ZipFile(os.path.join(sample_zips.root, f"{article}.zip")) as archive:
            infos = archive.infolist()
        assert all(info.compress_type == zipfile.ZIP_STORED for info in infos), article
        assert all("/" not in info.filename for info in infos), article
        members[article] = sorted(info.filename for info in infos)
    for recording, article in VIDEO_ARTICLE_IDS.items():
        assert members[article] == sorted(name for name in helper_chunks if name.startswith(f"{recording}-camera"))
    assert members[MOCAP_ARTICLE_ID] == ["mocap-s1-d1.mat", "mocap-s5-d1.mat"]


def test_repeated_sample_0_repeats_nothing_and_keeps_sample_0_its_own_pose(tmp_path):
    """``repeated_sample=0`` has no previous sample to repeat: every camera's frames are plainly
    ``t + offset`` and sample 0's pose leads smoothly into sample 1's (a negative index once copied the
    last sample's pose, here the all-NaN one, into sample 0)."""
    spec = SampleSpec(recordings=(RECORDING,), num_samples=18, repeated_sample=0, chunk_frames=64, layout="flat")
    release = write_sample(str(tmp_path / "release"), spec)
    mat = _load_mat(os.path.join(release.root, f"mocap-{RECORDING}.mat"))
    for number in CAMERAS:
        frames = np.asarray(mat["cameras"][f"Camera{number}"]["frame"]).reshape(-1)
        np.testing.assert_array_equal(frames, np.arange(spec.num_samples) + spec.frame_offsets[number])
    keypoints = _keypoints_by_documented_name(mat)
    assert np.isfinite(keypoints[0]).all(), "sample 0 lost its markers"
    # one sample of the rigid walk turns the body by 0.08 rad: no marker moves 40 mm
    assert np.linalg.norm(keypoints[1] - keypoints[0], axis=1).max() < 40


def test_a_second_fabrication_writes_the_same_chunks_after_a_zip_release_was_read(
    sample_release, sample_zips, tmp_path
):
    """Fabricating is reproducible: once the builder has read a zip-layout release (after which
    multi-threaded x264 wrote different bytes for a few chunks in 60), fabricating the same spec again
    writes byte-identical mp4 chunks, as the tests comparing two layouts' rows assume."""
    rat7m.load_dataset("frames", split="test", data_dir=sample_zips.root, cache_dir=str(tmp_path / "cache"))
    again = write_sample(str(tmp_path / "again"), SampleSpec(layout="flat"))
    folder = os.path.join(sample_release.root, "video_sequences")
    differing = []
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as first, open(os.path.join(again.root, name), "rb") as second:
            if first.read() != second.read():
                differing.append(name)
    assert not differing, f"{len(differing)} chunks differ between two fabrications: {differing}"
