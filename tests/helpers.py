"""Helpers shared by the tests (imported as a plain module: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import io

import datasets
import numpy as np
from PIL import Image as PILImage


def raw_images(dataset, column: str = "image"):
    """The dataset with its image column(s) left as stored bytes (no decoding)."""
    feature = dataset.features[column]
    if isinstance(feature, datasets.List):
        return dataset.cast_column(column, datasets.List(datasets.Image(decode=False)))
    return dataset.cast_column(column, datasets.Image(decode=False))


def decode_jpeg(jpeg: bytes) -> np.ndarray:
    return np.asarray(PILImage.open(io.BytesIO(jpeg)).convert("RGB"))


def assert_same_rows(rows_a, rows_b) -> None:
    """Row lists equal value for value, NaN equal to NaN (plain ``==`` says NaN ≠ NaN)."""
    rows_a, rows_b = list(rows_a), list(rows_b)
    assert len(rows_a) == len(rows_b), f"{len(rows_a)} rows ≠ {len(rows_b)} rows"
    for index, (a, b) in enumerate(zip(rows_a, rows_b, strict=True)):
        np.testing.assert_equal(a, b, err_msg=f"row {index} differs")
