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


#: What a predictions file must hold, stated in every error about one.
EXPECTED_FORMAT = (
    "Expected a .npy file holding one real-valued array of shape N×20×3 or N×60 (written with "
    "numpy.save, not savez), or a .csv file with N rows of 60 numbers (empty or nan: no prediction), "
    "optionally after one header line: "
    "x, y, z in mm of each of the 20 markers in marker order, one row per dataset row, in the dataset's order."
)

#: The first bytes of every .npy file (numpy.lib.format), and of every zip archive (a .npz is one).
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def read_predictions(path: str) -> np.ndarray:
    """Read predictions in mm as (N, 20, 3) float64 from ``.npy`` (N×20×3 or N×60) or ``.csv`` (N×60).

    A CSV may start with a header line; it is recognised by not being numbers (or by being pandas'
    column numbers ``0,1,…,59``), so a CSV without one keeps its first row. An empty field is NaN (a
    marker with no prediction), as pandas writes NaN. N×60 rows hold x, y, z of
    marker 0, then of marker 1, and so on.

    Raises:
        PredictionsError: the file is missing, unreadable, not what its extension says (e.g. a ``.npz``
            renamed ``.npy``), empty, not numeric or of the wrong shape; the message names the file,
            what was found and `EXPECTED_FORMAT`.
    """
    if not os.path.isfile(path):
        raise PredictionsError(f"{path}: no such predictions file. {EXPECTED_FORMAT}")
    extension = os.path.splitext(path)[1].lower()
    try:
        if extension == ".npy":
            array = _read_npy(path)
        elif extension == ".csv":
            array = _read_csv(path)
        else:
            raise PredictionsError(f"{path}: predictions must be a .npy or a .csv file. {EXPECTED_FORMAT}")
    except OSError as error:  # permissions, a vanished file, an I/O error
        raise PredictionsError(f"{path}: cannot be read ({error}). {EXPECTED_FORMAT}") from error
    if array.dtype.kind not in "fiu":  # bool, complex, text, structured records: no coordinates
        raise PredictionsError(
            f"{path}: predictions are an array of {array.dtype}, not of real numbers. {EXPECTED_FORMAT}"
        )
    if array.ndim == 2 and array.shape[1] == NUM_MARKERS * 3:
        array = array.reshape(-1, NUM_MARKERS, 3)  # x, y, z of marker 0, then marker 1, …
    if array.ndim != 3 or array.shape[1:] != (NUM_MARKERS, 3):
        raise PredictionsError(f"{path}: predictions have shape {array.shape}. {EXPECTED_FORMAT}")
    return array.astype(np.float64)


def _read_npy(path: str) -> np.ndarray:
    with open(path, "rb") as file:
        magic = file.read(len(_NPY_MAGIC))
    # np.load picks the format from the bytes, not the name: a .npz renamed .npy would come back as
    # an NpzFile, an empty file as EOFError, and text as a misleading "pickled data" error.
    if not magic:
        raise PredictionsError(f"{path}: the file is empty (0 bytes). {EXPECTED_FORMAT}")
    if magic.startswith(_ZIP_MAGIC):
        raise PredictionsError(
            f"{path}: this is a .npz archive (numpy.savez), not a .npy file; save the one array with "
            f"numpy.save instead. {EXPECTED_FORMAT}"
        )
    if magic != _NPY_MAGIC:
        raise PredictionsError(f"{path}: not a .npy file (it does not start with the NumPy header). {EXPECTED_FORMAT}")
    try:
        # allow_pickle=False: an object array would run code from the file when loaded.
        array = np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as error:  # truncated, object arrays, a damaged header
        raise PredictionsError(
            f"{path}: not a readable plain numeric .npy file ({error}); it may be truncated. {EXPECTED_FORMAT}"
        ) from error
    if not isinstance(array, np.ndarray):  # defensive: np.load answers other types for other formats
        raise PredictionsError(f"{path}: holds a {type(array).__name__}, not one array. {EXPECTED_FORMAT}")
    return array


def _read_csv(path: str) -> np.ndarray:
    try:
        # utf-8-sig drops the byte-order mark that Excel's "CSV UTF-8" puts first: read as plain utf-8 it
        # would glue onto the first number, making a header-less first row look like a header and vanish.
        with open(path, newline="", encoding="utf-8-sig") as file:
            rows = [row for row in csv.reader(file) if row]
    except (UnicodeDecodeError, csv.Error) as error:  # binary data (e.g. a .npy renamed .csv)
        raise PredictionsError(f"{path}: not a text CSV file ({error}). {EXPECTED_FORMAT}") from error
    if rows and (not _is_numeric(rows[0]) or rows[0] == _PANDAS_HEADER):
        rows = rows[1:]  # a header line
    if not rows:
        raise PredictionsError(f"{path}: the file holds no rows of numbers. {EXPECTED_FORMAT}")
    lengths = {len(row) for row in rows}
    if len(lengths) > 1:
        line = next(number for number, row in enumerate(rows, start=1) if len(row) != len(rows[0]))
        raise PredictionsError(
            f"{path}: rows have different lengths ({sorted(lengths)} values; data row {line} differs from the "
            f"first). {EXPECTED_FORMAT}"
        )
    try:
        return np.array([[_number(value) for value in row] for row in rows], dtype=np.float64)
    except ValueError as error:
        raise PredictionsError(
            f"{path}: a row holds something other than numbers ({error}). {EXPECTED_FORMAT}"
        ) from error


#: The header pandas writes for an N×60 array's frame (``DataFrame(array).to_csv(index=False)``): column
#: labels that read as numbers. As a data row it would be markers at 0, 1, …, 59 mm: never a prediction.
_PANDAS_HEADER = [str(column) for column in range(NUM_MARKERS * 3)]


def _number(value: str) -> float:
    # An empty field is a missing value, as pandas writes NaN (``to_csv``'s default ``na_rep=""``).
    return float(value) if value.strip() else float("nan")


def _is_numeric(row: list[str]) -> bool:
    try:
        [_number(value) for value in row]
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
    """The table `rat7m evaluate` prints: errors in mm, then the samples and markers left out.

    ``excluded``: samples without any marker both tracked and predicted; ``unpredicted``: markers the
    target tracked but the prediction left NaN. Both are left out of the errors, so a score with
    unpredicted markers is followed by a line saying it is not comparable with a complete prediction.
    """
    header = f"{'':<10} {'samples':>8} {'MPJPE':>9} {'PA-MPJPE':>9} {'N-MPJPE':>9} {'excluded':>9} {'unpredicted':>12}"
    lines = [header + "   (errors in mm)"]
    for name, scores in [("overall", result["overall"]), *result["per_recording"].items()]:
        lines.append(
            f"{name:<10} {scores['num_samples']:>8} {scores['mpjpe']:>9.2f} {scores['pa_mpjpe']:>9.2f} "
            f"{scores['n_mpjpe']:>9.2f} {scores['num_excluded']:>9} {scores['num_unpredicted']:>12}"
        )
    unpredicted = result["overall"]["num_unpredicted"]
    if unpredicted:
        lines.append(
            f"note: {unpredicted} tracked marker(s) have no prediction (NaN) and are left out of the errors; "
            "this score is not comparable with one from complete predictions."
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
