"""Pictures of examples: every camera of a multiview sample with its skeleton drawn on."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from .manifest import SKELETON_EDGES


def _as_image(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, dict):
        image = image["bytes"]
    if isinstance(image, bytes | bytearray):
        return Image.open(io.BytesIO(image)).convert("RGB")
    return Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")


def draw_skeleton(image, keypoints_2d: np.ndarray, colour=(255, 255, 0), radius: float = 2.5) -> Image.Image:
    """Draw the 21 skeleton edges and the markers on a copy of ``image``.

    Args:
        image: PIL image, JPEG bytes, ``{"bytes": ...}`` or an (H, W, 3) array.
        keypoints_2d: (20, 2) 0-based pixel coordinates; edges touching a NaN marker are skipped.
    """
    picture = _as_image(image).copy()
    draw = ImageDraw.Draw(picture)
    points = np.asarray(keypoints_2d, dtype=np.float64)
    for a, b in SKELETON_EDGES:
        if np.isfinite(points[[a, b]]).all():
            draw.line([tuple(points[a]), tuple(points[b])], fill=colour, width=1)
    for x, y in points:
        if np.isfinite(x) and np.isfinite(y):
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], outline=(255, 255, 255))
    return picture


def render_multiview(example: dict, columns: int = 3) -> Image.Image:
    """A grid of every view of a ``multiview`` example with its skeleton, labelled by camera.

    Args:
        example: a ``multiview`` row (``images``, ``keypoints_2d``, ``cameras``, ``frame_index``,
            ``recording``, ``sample_index``).
        columns: views per row of the grid.
    """
    views = [
        draw_skeleton(image, keypoints)
        for image, keypoints in zip(example["images"], example["keypoints_2d"], strict=True)
    ]
    width, height = views[0].size
    rows = -(-len(views) // columns)
    canvas = Image.new("RGB", (columns * width, rows * height + 18), (0, 0, 0))
    for position, (view, camera, frame) in enumerate(
        zip(views, example["cameras"], example["frame_index"], strict=True)
    ):
        x, y = position % columns * width, position // columns * height + 18
        canvas.paste(view, (x, y))
        ImageDraw.Draw(canvas).text((x + 4, y + height - 14), f"camera {camera}  frame {frame}", fill=(255, 255, 255))
    ImageDraw.Draw(canvas).text(
        (4, 3), f"RAT7M {example['recording']}  sample {example['sample_index']}", fill=(255, 255, 255)
    )
    return canvas
