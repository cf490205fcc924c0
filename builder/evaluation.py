"""``rat7m evaluate``: score 3D predictions against a split, overall and per recording.

Predictions are rows in the order of the dataset they follow: for ``mini``, the annotation's rows of
the split in file order, grouped by recording in release order (the order of the ``mini`` config);
for ``mocap``, the ``mocap`` config's rows of the split.
"""

from __future__ import annotations

import csv
import os

import numpy as np

from .errors import Rat7MError
from .manifest import NUM_MARKERS, RECORDINGS
from .metrics import evaluate


class PredictionsError(Rat7MError, ValueError):
    """The predictions file cannot be read or does not have the right shape."""


def read_predictions(path: str) -> np.ndarray:
    """Read predictions in mm as (N, 20, 3) float64 from ``.npy`` (N×20×3 or N×60) or ``.csv`` (N×60).

    A CSV may start with a header line; it is recognised by not being numbers, so a CSV without one
    keeps its first row.
    """
    if not os.path.isfile(path):
        raise PredictionsError(f"{path}: no such predictions file.")
    if path.endswith(".npy"):
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise PredictionsError(f"{path}: not a plain numeric .npy file ({error}).") from error
    elif path.endswith(".csv"):
        with open(path, newline="") as file:
            rows = [row for row in csv.reader(file) if row]
        if rows and not _is_numeric(rows[0]):
            rows = rows[1:]  # a header line
        try:
            array = np.array([[float(value) for value in row] for row in rows], dtype=np.float64)
        except ValueError as error:
            raise PredictionsError(f"{path}: a row holds something other than numbers ({error}).") from error
    else:
        raise PredictionsError(f"{path}: predictions must be a .npy or a .csv file.")
    if array.ndim == 2 and array.shape[1] == NUM_MARKERS * 3:
        array = array.reshape(-1, NUM_MARKERS, 3)  # x, y, z of marker 0, then marker 1, …
    if array.ndim != 3 or array.shape[1:] != (NUM_MARKERS, 3):
        raise PredictionsError(
            f"{path}: predictions have shape {array.shape}; expected N×20×3 (.npy) or N×60 (.csv: x, y, z of "
            "each marker in marker order)."
        )
    return array.astype(np.float64)


def _is_numeric(row: list[str]) -> bool:
    try:
        [float(value) for value in row]
    except ValueError:
        return False
    return True


def targets(
    config: str, split: str, *, data_dir=None, annotation_file=None, recordings=None, frame_step=1, cache_dir=None
):
    """Ground truth (N, 20, 3) mm and each row's recording, in the order of ``config``'s ``split``."""
    if config == "mini":
        from .mini import find_annotation, load_mini, mini_rows

        annotation = load_mini(find_annotation(data_dir, annotation_file))
        selected = [r for r in RECORDINGS if r in annotation.recordings and (not recordings or r in recordings)]
        rows = np.concatenate(
            [mini_rows(annotation, recording, split, frame_step) for recording in selected] or [np.zeros(0, int)]
        )
        return annotation.keypoints_3d[rows].astype(np.float64), annotation.recording[rows]
    import rat7m

    kwargs = {"frame_step": frame_step, **({"recordings": recordings} if recordings else {})}
    dataset = rat7m.load_dataset("mocap", split=split, data_dir=data_dir, cache_dir=cache_dir, **kwargs)
    dataset = dataset.with_format("numpy")
    return np.asarray(dataset["keypoints_3d"], dtype=np.float64), np.asarray(dataset["recording"])


def format_report(result: dict) -> str:
    lines = [f"{'':<10} {'samples':>8} {'MPJPE':>9} {'PA-MPJPE':>9} {'N-MPJPE':>9}   (mm)"]
    for name, scores in [("overall", result["overall"]), *result["per_recording"].items()]:
        lines.append(
            f"{name:<10} {scores['num_samples']:>8} {scores['mpjpe']:>9.2f} {scores['pa_mpjpe']:>9.2f} "
            f"{scores['n_mpjpe']:>9.2f}"
        )
    return "\n".join(lines)


def evaluate_file(path: str, args) -> str:
    """Read predictions, load the matching targets and return the printed report."""
    predictions = read_predictions(path)
    target, recordings = targets(
        args.config,
        args.split,
        data_dir=args.data_dir,
        annotation_file=getattr(args, "annotation_file", None),
        recordings=args.recordings,
        frame_step=args.frame_step,
        cache_dir=args.cache_dir,
    )
    if predictions.shape[0] != target.shape[0]:
        raise PredictionsError(
            f"{path}: {predictions.shape[0]} predictions, but the {args.config} {args.split} split has "
            f"{target.shape[0]} rows; give one prediction per row, in the dataset's order."
        )
    return format_report(evaluate(predictions, target, list(recordings)))
