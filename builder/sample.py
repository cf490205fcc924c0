"""Fabricate a miniature RAT7M release in the exact released formats, with provable content.

Videos are H.264 mp4 chunks written with PyAV, named ``s{S}-d{D}-camera{K}-{start}.mp4``; motion
capture and calibration go in ``mocap-s{S}-d{D}.mat`` written with scipy (MATLAB v5), with the
release's quirks: cameras stored in the order 1, 2, 4, 5, 3, 6, marker fields in a shuffled order,
per-camera frame offsets, a repeated frame index, NaN markers, a 1×3 radial distortion on one
camera and single-precision tangential distortion on another.

Every video frame shows its own global frame index as a barcode along its top edge
(`read_barcode` reads it back, also after JPEG) and a coloured dot at each marker's projection
through the camera model, so tests can prove frame alignment and geometry, not just shapes.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from dataclasses import dataclass, field

import av
import numpy as np
import scipy.io

from .camera import Camera
from .manifest import CAMERAS, MARKER_NAMES, MOCAP_ARTICLE, VIDEO_ARTICLES, mocap_file_name, subject_and_day

#: Bits of the frame-index barcode (enough for 2**20 frames per camera).
BARCODE_BITS = 20
#: Height in pixels of the barcode band along the top edge (two 8-px JPEG / 16-px H.264 blocks).
BARCODE_HEIGHT = 16
#: Radius in pixels of the marker dots.
DOT_RADIUS = 3
BACKGROUND = 40

LAYOUTS = ("helper", "flat", "zips")


@dataclass(frozen=True)
class SampleSpec:
    """What to fabricate.

    Attributes:
        recordings: recording names; the default has one train and one test recording.
        num_samples: motion-capture samples per recording.
        chunk_frames: frames per mp4 chunk (8 gives starts 0, 8, 16, … so numeric and string
            sorting differ from the second chunk on: "16" sorts before "8").
        width, height: frame size in pixels.
        frame_rate: frames per second.
        frame_offsets: camera → synchronisation offset: ``frame[t] = t + offset`` (before the repeat).
        repeated_sample: sample whose frame index repeats the previous sample's on every camera
            (its pose repeats too), leaving one video frame per camera that no sample refers to.
        tail_frames: extra video frames after the last referenced one.
        layout: ``"helper"`` (``video_sequences/`` + ``annotations/``), ``"flat"``, or ``"zips"``
            (one figshare-like article zip per recording's videos and one for the .mat files).
        seed: for the marker layout and motion.
        sensor_noise: 0 for flat frames (tiny, fast); else the amplitude (grey levels) of per-frame
            noise over a textured background, for realistic bytes per frame.
    """

    recordings: tuple[str, ...] = ("s1-d1", "s5-d1")
    num_samples: int = 30
    chunk_frames: int = 8
    width: int = 320
    height: int = 256
    frame_rate: int = 30
    frame_offsets: dict[int, int] = field(default_factory=lambda: {1: 0, 2: 2, 3: 1, 4: 3, 5: 0, 6: 5})
    repeated_sample: int = 11
    tail_frames: int = 3
    layout: str = "helper"
    seed: int = 7
    sensor_noise: int = 0

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")


@dataclass
class FabricatedRecording:
    """Ground truth of one fabricated recording (what the .mat holds, in project conventions)."""

    recording: str
    keypoints_3d: np.ndarray  # (N, 20, 3) mm, NaN where untracked
    frame_index: dict[int, np.ndarray]  # camera → (N,) global frame index
    cameras: dict[int, Camera]
    num_video_frames: int  # frames per camera


@dataclass
class FabricatedRelease:
    root: str
    spec: SampleSpec
    recordings: dict[str, FabricatedRecording]


# ----------------------------------------------------------------------------------------------
# Barcode


def _barcode_cells(width: int) -> tuple[int, int]:
    """(cell width, left margin) of the barcode for an image ``width`` pixels wide."""
    cell = width // (BARCODE_BITS + 2)
    return cell, (width - cell * BARCODE_BITS) // 2


def draw_barcode(image: np.ndarray, value: int) -> None:
    """Draw ``value`` (< 2**20) as black/white cells across the top `BARCODE_HEIGHT` rows, in place."""
    if not 0 <= value < 2**BARCODE_BITS:
        raise ValueError(f"barcode value {value} out of range")
    cell, margin = _barcode_cells(image.shape[1])
    image[:BARCODE_HEIGHT] = 0
    for bit in range(BARCODE_BITS):
        if value >> (BARCODE_BITS - 1 - bit) & 1:
            image[:BARCODE_HEIGHT, margin + bit * cell : margin + (bit + 1) * cell] = 255


def read_barcode(image: np.ndarray) -> int:
    """Read back the value `draw_barcode` drew, from an RGB or grey (H, W[, 3]) uint8 image."""
    grey = image.mean(axis=2) if image.ndim == 3 else image.astype(np.float64)
    cell, margin = _barcode_cells(grey.shape[1])
    value = 0
    for bit in range(BARCODE_BITS):
        left = margin + bit * cell
        # the middle of the cell, away from edges that compression smears
        centre = grey[4 : BARCODE_HEIGHT - 4, left + cell // 4 : left + cell - cell // 4]
        value = value << 1 | int(centre.mean() > 127)
    return value


def marker_colours() -> np.ndarray:
    """(20, 3) uint8 distinct, bright RGB colours, one per marker."""
    hues = np.arange(len(MARKER_NAMES)) / len(MARKER_NAMES)
    colours = []
    for hue in hues:
        h = hue * 6
        x = 1 - abs(h % 2 - 1)
        rgb = [(1, x, 0), (x, 1, 0), (0, 1, x), (0, x, 1), (x, 0, 1), (1, 0, x)][int(h) % 6]
        colours.append([int(80 + 175 * channel) for channel in rgb])
    return np.array(colours, dtype=np.uint8)


def render_frame(spec: SampleSpec, frame_index: int, keypoints_2d: np.ndarray | None) -> np.ndarray:
    """One fabricated RGB frame: background, barcode of ``frame_index``, marker dots at ``keypoints_2d``.

    Args:
        keypoints_2d: (20, 2) 0-based pixel coordinates (NaN = not drawn), or None for no markers.
    """
    if spec.sensor_noise:
        # A camera-like frame: a fixed textured floor plus fresh noise, so the H.264 stream costs
        # realistic bytes per frame. Seeded by the frame index: the same frame renders the same.
        rng = np.random.default_rng(frame_index)
        texture = np.random.default_rng(spec.seed).integers(0, 24, size=(spec.height, spec.width, 1))
        noise = rng.integers(-spec.sensor_noise, spec.sensor_noise + 1, size=(spec.height, spec.width, 1))
        image = np.clip(BACKGROUND - 12 + texture + noise, 0, 255).astype(np.uint8).repeat(3, axis=2)
    else:
        image = np.full((spec.height, spec.width, 3), BACKGROUND, dtype=np.uint8)
    draw_barcode(image, frame_index)
    if keypoints_2d is not None:
        ys, xs = np.mgrid[-DOT_RADIUS : DOT_RADIUS + 1, -DOT_RADIUS : DOT_RADIUS + 1]
        disc = xs**2 + ys**2 <= DOT_RADIUS**2
        for colour, (x, y) in zip(marker_colours(), keypoints_2d, strict=True):
            if not (np.isfinite(x) and np.isfinite(y)):
                continue
            cx, cy = int(round(x)), int(round(y))
            px, py = xs[disc] + cx, ys[disc] + cy
            inside = (px >= 0) & (px < spec.width) & (py >= BARCODE_HEIGHT) & (py < spec.height)
            image[py[inside], px[inside]] = colour
    return image


# ----------------------------------------------------------------------------------------------
# Geometry and motion


def _look_at_camera(position: np.ndarray, target: np.ndarray, focal: float, spec: SampleSpec, index: int) -> Camera:
    """A MATLAB-convention camera at ``position`` (mm) looking at ``target`` (world z up)."""
    forward = (target - position) / np.linalg.norm(target - position)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation_cv = np.stack([right, down, forward])  # world → camera, column vectors
    translation = -rotation_cv @ position
    # MATLAB stores the transpose of the OpenCV camera matrix, with a 1-based principal point.
    cx = (spec.width - 1) / 2 + 1 + 3.0 * np.sin(index)
    cy = (spec.height - 1) / 2 + 1 + 2.0 * np.cos(index)
    intrinsic = np.array([[focal, 0, 0], [0, focal * 1.01, 0], [cx, cy, 1]])
    radial = [-0.12 + 0.01 * index, 0.04] + ([-0.01] if index == 3 else [])
    tangential = np.array([0.0008 * (-1) ** index, -0.0005], dtype=np.float32 if index == 4 else np.float64)
    return Camera.from_matlab(intrinsic, rotation_cv.T, translation, radial, tangential)


def fabricate_cameras(spec: SampleSpec) -> dict[int, Camera]:
    """Six cameras on a ring 900 mm from the arena centre, 450–650 mm up, all looking at it."""
    cameras = {}
    for number in CAMERAS:
        angle = 2 * np.pi * (number - 1) / len(CAMERAS) + 0.3
        position = np.array([900 * np.cos(angle), 900 * np.sin(angle), 450 + 40 * number])
        cameras[number] = _look_at_camera(position, np.array([0.0, 0.0, 60.0]), 1.4 * spec.width, spec, number)
    return cameras


#: A rat-shaped marker layout in the body frame (mm; x forward, y left, z up), about twice life
#: size so that every pair of markers is ≥ 55 mm apart and their dots stay distinct in the images.
_BODY_TEMPLATE = np.array(
    [
        [200, 0, 90], [130, 0, 110], [160, 55, 100], [70, 0, 110], [-20, 0, 120],  # HeadF … SpineM
        [-110, 0, 105], [20, -55, 130], [-70, -60, 135], [-140, 60, 70], [-140, -60, 70],  # SpineL … HipR
        [60, 90, 40], [110, 80, 5], [60, 60, 90], [60, -60, 90], [60, -90, 40],  # ElbowL … ElbowR
        [110, -80, 5], [-90, -90, 40], [-90, 90, 40], [-150, 110, 5], [-150, -110, 5],  # ArmR … ShinR
    ],
    dtype=np.float64,
)  # fmt: skip


def _body_offsets(rng: np.random.Generator) -> np.ndarray:
    """(20, 3) marker offsets (mm) in the body frame: the rat-shaped template, slightly jittered."""
    return _BODY_TEMPLATE + rng.uniform(-3, 3, size=_BODY_TEMPLATE.shape)


def fabricate_motion(spec: SampleSpec, recording_seed: int) -> np.ndarray:
    """(N, 20, 3) marker trajectories in mm: a rigid body turning and walking, with NaN gaps."""
    rng = np.random.default_rng(spec.seed * 1000 + recording_seed)
    body = _body_offsets(rng)
    keypoints = np.empty((spec.num_samples, len(MARKER_NAMES), 3))
    for t in range(spec.num_samples):
        source_t = t - 1 if 0 < t == spec.repeated_sample else t  # the repeated sample repeats the pose
        heading = 0.08 * source_t + recording_seed
        rotation = np.array([[np.cos(heading), -np.sin(heading), 0], [np.sin(heading), np.cos(heading), 0], [0, 0, 1]])
        centre = np.array([40 * np.cos(0.05 * source_t), 30 * np.sin(0.07 * source_t), 0.0])
        keypoints[t] = body @ rotation.T + centre
    # as in `fabricate_frame_index`: sample 0 has no previous sample to repeat (index -1 would copy the last)
    if 0 < spec.repeated_sample < spec.num_samples:
        keypoints[spec.repeated_sample] = keypoints[spec.repeated_sample - 1]
    # NaN as in the release: one marker lost briefly, one sample with nothing tracked.
    keypoints[3, 5] = np.nan
    keypoints[8:11, 12] = np.nan
    keypoints[min(17, spec.num_samples - 1)] = np.nan
    return keypoints


def fabricate_frame_index(spec: SampleSpec) -> dict[int, np.ndarray]:
    """camera → (N,) global frame index: ``t + offset``, with the repeat at `repeated_sample`."""
    frames = {}
    for camera in CAMERAS:
        index = np.arange(spec.num_samples, dtype=np.int64) + spec.frame_offsets[camera]
        if 0 < spec.repeated_sample < spec.num_samples:
            index[spec.repeated_sample] = index[spec.repeated_sample - 1]
        frames[camera] = index
    return frames


# ----------------------------------------------------------------------------------------------
# Writers


def write_mp4(path: str, frames, frame_rate: int, width: int, height: int, crf: int = 12) -> None:
    """Write RGB uint8 frames (an iterable) as an H.264 yuv420p mp4 with PyAV."""
    tmp = path + ".partial"
    with av.open(tmp, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=frame_rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # One encoder thread: multi-threaded x264 wrote different bytes for the same frames once the
        # process had read a zip-layout release (a few chunks in 60), so two fabrications of one spec
        # differed and tests comparing them flaked. One thread is deterministic, and as fast at this size.
        stream.options = {"crf": str(crf), "preset": "veryfast", "g": "12", "threads": "1"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)


def write_mocap_mat(path: str, recording: FabricatedRecording, rng: np.random.Generator) -> None:
    """Write a ``mocap-*.mat`` in the released structure (MATLAB v5, structs, quirks included)."""
    subject, day = subject_and_day(recording.recording)
    shuffled = rng.permutation(len(MARKER_NAMES))  # struct field order ≠ marker order in the release
    mocap = {MARKER_NAMES[i]: recording.keypoints_3d[:, i, :] for i in shuffled}
    cameras = {}
    for number in (1, 2, 4, 5, 3, 6):  # the release's stored order
        camera = recording.cameras[number]
        tangential = camera.tangential_distortion
        radial = camera.radial_distortion if number == 3 else camera.radial_distortion[:2]
        cameras[f"Camera{number}"] = {
            "frame": recording.frame_index[number].astype(np.float64)[None, :],
            "IntrinsicMatrix": camera.intrinsic_matrix,
            "rotationMatrix": camera.rotation_matrix,
            "translationVector": camera.translation_vector[None, :],
            "TangentialDistortion": tangential.astype(np.float32 if number == 4 else np.float64)[None, :],
            "RadialDistortion": radial[None, :],
        }
    scipy.io.savemat(
        path,
        {"cameras": cameras, "mocap": mocap, "name": f"Subject{subject}-Day{day}"},
        format="5",
        oned_as="row",
    )


def fabricate_recording(spec: SampleSpec, recording: str, cameras: dict[int, Camera]) -> FabricatedRecording:
    subject, day = subject_and_day(recording)
    frame_index = fabricate_frame_index(spec)
    num_video_frames = max(int(index.max()) for index in frame_index.values()) + 1 + spec.tail_frames
    return FabricatedRecording(
        recording=recording,
        keypoints_3d=fabricate_motion(spec, recording_seed=10 * subject + day),
        frame_index=frame_index,
        cameras=cameras,
        num_video_frames=num_video_frames,
    )


def video_frames(spec: SampleSpec, recording: FabricatedRecording, camera: int, start: int, stop: int):
    """Yield the RGB frames ``start … stop-1`` of one camera, each drawn with its own content."""
    projected = recording.cameras[camera].project(recording.keypoints_3d)  # (N, 20, 2)
    sample_of_frame = {int(f): t for t, f in enumerate(recording.frame_index[camera])}
    for frame_index in range(start, stop):
        t = sample_of_frame.get(frame_index)
        yield render_frame(spec, frame_index, None if t is None else projected[t])


def write_sample(root: str, spec: SampleSpec | None = None) -> FabricatedRelease:
    """Write a miniature release below ``root`` and return its ground truth.

    Args:
        root: output folder (created).
        spec: what to fabricate; defaults to `SampleSpec()`.
    """
    spec = spec or SampleSpec()
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    cameras = fabricate_cameras(spec)
    video_dir = os.path.join(root, "video_sequences") if spec.layout == "helper" else root
    mat_dir = os.path.join(root, "annotations") if spec.layout == "helper" else root
    if spec.layout == "zips":
        video_dir = mat_dir = os.path.join(root, ".staging")
    os.makedirs(video_dir, exist_ok=True)
    os.makedirs(mat_dir, exist_ok=True)
    release = FabricatedRelease(root=root, spec=spec, recordings={})
    for recording_name in spec.recordings:
        recording = fabricate_recording(spec, recording_name, cameras)
        release.recordings[recording_name] = recording
        write_mocap_mat(os.path.join(mat_dir, mocap_file_name(recording_name)), recording, rng)
        for camera in CAMERAS:
            for start in range(0, recording.num_video_frames, spec.chunk_frames):
                stop = min(start + spec.chunk_frames, recording.num_video_frames)
                write_mp4(
                    os.path.join(video_dir, f"{recording_name}-camera{camera}-{start}.mp4"),
                    video_frames(spec, recording, camera, start, stop),
                    spec.frame_rate,
                    spec.width,
                    spec.height,
                )
    if spec.layout == "zips":
        _zip_articles(root, video_dir, spec)
    return release


def _zip_articles(root: str, staging: str, spec: SampleSpec) -> None:
    """Pack the staged files like figshare's article zips (flat, stored), then drop the staging."""
    names = sorted(os.listdir(staging))
    articles = {VIDEO_ARTICLES[r][0]: [n for n in names if n.startswith(f"{r}-camera")] for r in spec.recordings}
    articles[MOCAP_ARTICLE[0]] = [n for n in names if n.startswith("mocap-")]
    for article_id, members in articles.items():
        with zipfile.ZipFile(os.path.join(root, f"{article_id}.zip"), "w", zipfile.ZIP_STORED) as archive:
            for name in members:
                archive.write(os.path.join(staging, name), arcname=name)
    for name in names:
        os.remove(os.path.join(staging, name))
    os.rmdir(staging)


def write_mini_annotation(
    release: FabricatedRelease,
    path: str,
    *,
    one_based: bool = True,
    image_path_key: str = "image_path",
    with_split: bool = True,
    sample_step: int = 2,
) -> str:
    """Write a mini-RAT7M-style annotation pickle for a fabricated release.

    Every ``sample_step``-th sample of each recording becomes a row; its ``2D_keypoints`` are the
    camera model's projections of its 3D keypoints, stored 1-based (as MATLAB would make them) when
    ``one_based``, so the ``mini`` config must detect and undo the shift.

    Args:
        image_path_key: ``"image_path"`` (current file) or ``"image_paths"`` (older file).
        with_split: write ``train_test``; False imitates the older file, split by animal.
    """
    from .annotation import write_annotation
    from .manifest import split_of

    camera_names = [f"Camera{number}" for number in CAMERAS]
    shift = 1.0 if one_based else 0.0
    columns: dict[str, list] = {key: [] for key in ("subject", "day", "split", "frames", "k2", "k3", "paths")}
    cameras: dict = {}
    for name, recording in release.recordings.items():
        subject, day = subject_and_day(name)
        cameras.setdefault(subject, {})[day] = {
            f"Camera{number}": {
                "IntrinsicMatrix": camera.intrinsic_matrix,
                "RotationMatrix": camera.rotation_matrix,
                "TranslationVector": camera.translation_vector[None, :],
                "RadialDistortion": camera.radial_distortion[None, :],
                "TangentialDistortion": camera.tangential_distortion[None, :],
            }
            for number, camera in recording.cameras.items()
        }
        for t in range(0, len(recording.keypoints_3d), sample_step):
            frames = [int(recording.frame_index[c][t]) for c in CAMERAS]
            columns["subject"].append(subject)
            columns["day"].append(day)
            columns["split"].append(split_of(name))
            columns["frames"].append(frames)
            columns["k3"].append(recording.keypoints_3d[t])
            columns["k2"].append([recording.cameras[c].project(recording.keypoints_3d[t]) + shift for c in CAMERAS])
            columns["paths"].append([f"{name}/Camera{c}/{f:06d}.jpg" for c, f in zip(CAMERAS, frames, strict=True)])
    keypoints_2d = np.array(columns["k2"])
    with warnings.catch_warnings():  # an all-NaN sample has no centre of mass: NaN, as MATLAB gives
        warnings.simplefilter("ignore", RuntimeWarning)
        com_2d = np.nanmean(keypoints_2d, axis=2)
    write_annotation(
        path,
        camera_names=camera_names,
        cameras=cameras,
        subject=np.array(columns["subject"]),
        day=np.array(columns["day"]),
        frame_index=np.array(columns["frames"]),
        keypoints_2d=keypoints_2d,
        keypoints_3d=np.array(columns["k3"]),
        split=np.array(columns["split"]) if with_split else None,
        image_path=np.array(columns["paths"]),
        com_2d=com_2d,
        image_path_key=image_path_key,
    )
    return path
