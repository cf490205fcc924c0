"""Tests from a mutation audit of rat7m_builder.metrics and rat7m_builder.evaluation.

Each test closes a gap that a small deliberate change to those modules slipped through (the change is
named in the test's docstring). Expected values come from hand-built inputs with a known answer (a
rigid shift of known length, a known similarity transform, known per-recording shifts), never from
the modules' own helpers.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from rat7m_builder import evaluation
from rat7m_builder.cli import main
from rat7m_builder.evaluation import EXPECTED_FORMAT, PredictionsError, read_predictions
from rat7m_builder.manifest import mocap_file_name
from rat7m_builder.metrics import evaluate, mpjpe, n_mpjpe, pa_mpjpe, procrustes_align
from rat7m_builder.sample import (
    FabricatedRelease,
    SampleSpec,
    fabricate_cameras,
    fabricate_recording,
    write_mini_annotation,
    write_mocap_mat,
)

#: Added to every marker: a rigid shift that puts each valid marker exactly 5 mm off.
SHIFT_5MM = np.array([3.0, 4.0, 0.0])

#: Added to every marker: a rigid shift that puts each valid marker exactly 13 mm off.
SHIFT_13MM = np.array([0.0, 12.0, -5.0])


def _poses(n: int, seed: int = 0) -> np.ndarray:
    """Random rat-sized poses (mm): a body centre somewhere in the arena plus markers around it."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(-300, 300, size=(n, 1, 3))
    return centre + rng.normal(scale=40.0, size=(n, 20, 3))


def _assert_names_file(error: PredictionsError, path) -> None:
    """The message starts with the file's path and ends with the expected format, as every such message must."""
    message = str(error)
    assert message.startswith(f"{path}: ") and message.endswith(EXPECTED_FORMAT), message


# ---------------------------------------------------------------------------------------------------
# metrics: input checks


@pytest.mark.parametrize("which", ["pred", "target"])
@pytest.mark.parametrize("value", [np.inf, -np.inf])
@pytest.mark.parametrize("metric", [mpjpe, pa_mpjpe, n_mpjpe, evaluate])
def test_infinite_values_are_rejected_in_either_array(metric, which: str, value: float) -> None:
    """±inf in pred or in target is refused and named (kills: the check run on one array only; +inf only)."""
    arrays = {"pred": _poses(2, seed=30), "target": _poses(2, seed=31)}
    arrays[which][1, 7, 2] = value
    with pytest.raises(ValueError, match=f"{which} holds infinite values"):
        metric(arrays["pred"], arrays["target"])


def test_a_non_numeric_element_raises_value_error() -> None:
    """A complex number inside nested lists is a ValueError as documented, not a TypeError (kills: TypeError
    not converted)."""
    target = _poses(1, seed=32)[0]
    pred = target.tolist()
    pred[3][1] = 1j  # numpy raises TypeError for this when converting to float64
    with pytest.raises(ValueError, match="pred must be a numeric array"):
        mpjpe(pred, target)


# ---------------------------------------------------------------------------------------------------
# metrics: known answers with missing markers


def test_alignments_fit_only_the_markers_valid_in_both() -> None:
    """A similarity copy (PA) or an about-origin scaled copy (N) scores 0 although every sample has other
    markers missing and wild finite predictions there: the fits use the valid markers only."""
    target = _poses(5, seed=33)
    rotations = Rotation.random(5, random_state=34).as_matrix()
    scales = np.array([0.7, 1.0, 1.4, 2.0, 0.9])
    similar = scales[:, None, None] * np.einsum("nij,nmj->nmi", rotations, target) + [[[40.0, -80.0, 15.0]]]
    scaled = scales[:, None, None] * target
    # A different set of missing markers in each sample; the prediction there is far off, not NaN.
    missing = np.zeros((5, 20), dtype=bool)
    for sample, markers in enumerate([[0], [1, 2], [5, 9, 13], [19], list(range(10, 17))]):
        missing[sample, markers] = True
    target[missing] = np.nan
    similar[missing] = 5000.0
    scaled[missing] = -5000.0
    assert pa_mpjpe(similar, target, per_sample=True) == pytest.approx(np.zeros(5), abs=1e-8)
    assert n_mpjpe(scaled, target, per_sample=True) == pytest.approx(np.zeros(5), abs=1e-8)


def test_procrustes_align_ignores_any_finite_value_at_invalid_markers() -> None:
    """`procrustes_align` maps a similarity copy exactly onto the target at the valid markers, whatever finite
    values the prediction holds at invalid ones, as its docstring promises (kills: unweighted pred centroid)."""
    target = _poses(3, seed=35)
    rotations = Rotation.random(3, random_state=36).as_matrix()
    pred = 1.3 * np.einsum("nij,nmj->nmi", rotations, target) + [[[-25.0, 60.0, 5.0]]]
    valid = np.ones((3, 20), dtype=bool)
    valid[:, :4] = False
    pred[~valid] = 987.0  # "any finite value"
    target[~valid] = 0.0  # the documented convention for targets
    aligned = procrustes_align(pred, target, valid)
    assert np.abs(aligned[valid] - target[valid]).max() < 1e-8


# ---------------------------------------------------------------------------------------------------
# metrics: no numpy warnings on documented inputs


@pytest.mark.filterwarnings("error")
def test_documented_edge_cases_raise_no_numpy_warnings() -> None:
    """Samples without any valid marker, all samples excluded and an all-zero prediction are normal inputs:
    they give NaN / defined values without a numpy RuntimeWarning, which `rat7m evaluate` would print
    (kills: the 0/0 per-sample division; nanmean over all-NaN)."""
    target = _poses(3, seed=37)
    pred = target + SHIFT_5MM
    target[1] = np.nan  # sample 1 has no valid marker
    pred[2] = 0.0  # sample 2: no spread, all at the origin
    for metric in (mpjpe, pa_mpjpe, n_mpjpe):
        per = metric(pred, target, per_sample=True)
        assert np.isnan(per[1]) and np.isfinite(per[[0, 2]]).all()
        assert math.isfinite(metric(pred, target))
        assert math.isnan(metric(pred[1:2], target[1:2]))  # every sample excluded
    report = evaluate(pred[1:2], target[1:2], ["s5-d1"])
    assert math.isnan(report["per_recording"]["s5-d1"]["mpjpe"])


# ---------------------------------------------------------------------------------------------------
# metrics.evaluate: grouping and recordings


def test_excluded_samples_are_counted_in_their_own_recording() -> None:
    """num_excluded of a recording counts its own markerless samples only (kills: the overall count reused)."""
    target = _poses(4, seed=38)
    pred = target.copy()
    pred[:2] += SHIFT_5MM  # s1-d1
    pred[2:] += SHIFT_13MM  # s5-d1
    target[3] = np.nan  # the only excluded sample, in s5-d1
    report = evaluate(pred, target, ["s1-d1", "s1-d1", "s5-d1", "s5-d1"])
    assert report["overall"]["num_excluded"] == 1
    assert report["per_recording"]["s1-d1"]["num_excluded"] == 0
    assert report["per_recording"]["s1-d1"]["num_samples"] == 2
    assert report["per_recording"]["s1-d1"]["mpjpe"] == pytest.approx(5.0)
    assert report["per_recording"]["s5-d1"]["num_excluded"] == 1
    assert report["per_recording"]["s5-d1"]["mpjpe"] == pytest.approx(13.0)


@pytest.mark.parametrize(
    "recordings",
    [
        ["s5-d1"] * 4,  # one too many
        [],  # none at all for 3 samples
        np.array([["s5-d1"], ["s5-d1"], ["s5-d2"]]),  # a column: 3 rows, but not one name per sample
    ],
    ids=["too-long", "empty", "column"],
)
def test_recordings_not_one_name_per_sample_are_refused(recordings) -> None:
    """recordings must be exactly one name per sample: longer, empty or 2-D is refused with the documented
    message (kills: the length check only catching too short; [] taken as None; the ndim check removed)."""
    target = _poses(3, seed=39)
    with pytest.raises(ValueError, match="must be a sequence of 3 recording names"):
        evaluate(target, target, recordings)


def test_recordings_given_as_bytes_are_grouped() -> None:
    """Recording names stored as bytes (numpy "S" arrays, e.g. from HDF5) group like str (kills: no str
    conversion)."""
    target = _poses(3, seed=40)
    pred = target + np.array([SHIFT_5MM, SHIFT_13MM, SHIFT_13MM])[:, None, :]
    report = evaluate(pred, target, np.array([b"s5-d2", b"s1-d1", b"s1-d1"]))
    assert list(report["per_recording"]) == ["s1-d1", "s5-d2"]
    assert report["per_recording"]["s1-d1"]["mpjpe"] == pytest.approx(13.0)
    assert report["per_recording"]["s5-d2"]["mpjpe"] == pytest.approx(5.0)


# ---------------------------------------------------------------------------------------------------
# evaluation.read_predictions


def _rows(n: int = 3) -> np.ndarray:
    """n rows of 60 distinct values (N×60 layout)."""
    return np.arange(n * 60, dtype=np.float64).reshape(n, 60) / 8.0


def _csv_line(row: np.ndarray) -> str:
    """One CSV line holding ``row``'s values exactly (Python's shortest round-trip float text)."""
    return ",".join(repr(value) for value in row.tolist())


def test_a_missing_file_is_named(tmp_path) -> None:
    """A missing file gets the "no such predictions file" message, not an I/O error (kills: the check removed)."""
    path = tmp_path / "absent.npy"
    with pytest.raises(PredictionsError, match="no such predictions file") as raised:
        read_predictions(str(path))
    _assert_names_file(raised.value, path)


@pytest.mark.parametrize("name", ["PRED.NPY", "pred.Csv"])
def test_the_extension_is_case_insensitive(tmp_path, name: str) -> None:
    """Upper- or mixed-case extensions are read (kills: the extension compared case-sensitively)."""
    path = tmp_path / name
    if name.lower().endswith(".npy"):
        with open(path, "wb") as file:  # np.save would append ".npy" to a name ending ".NPY"
            np.save(file, _rows())
    else:
        np.savetxt(path, _rows(), delimiter=",")
    assert read_predictions(str(path)) == pytest.approx(_rows().reshape(3, 20, 3))


@pytest.mark.parametrize("name", ["pred.npy", "pred.csv"])
def test_an_unreadable_file_is_a_predictions_error(tmp_path, monkeypatch, name: str) -> None:
    """An OSError other than "not found" while reading (here: permission denied) becomes a PredictionsError
    naming the file (kills: only FileNotFoundError converted). The tests run as root, so the error is
    injected through the module's ``open``."""
    path = tmp_path / name
    path.write_bytes(b"1")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(evaluation, "open", denied, raising=False)
    with pytest.raises(PredictionsError, match=r"cannot be read \(.*Permission denied") as raised:
        read_predictions(str(path))
    _assert_names_file(raised.value, path)


@pytest.mark.parametrize("dtype", [np.int64, np.int16, np.uint8, np.float32])
def test_integer_and_single_precision_arrays_are_read_as_float64(tmp_path, dtype) -> None:
    """Integer and float32 predictions are accepted and returned as float64, as documented (kills: only
    float kinds accepted; the final float64 conversion dropped)."""
    values = np.arange(2 * 60).reshape(2, 60) % 200
    np.save(tmp_path / "pred.npy", values.astype(dtype))
    array = read_predictions(str(tmp_path / "pred.npy"))
    assert array.dtype == np.float64
    assert np.array_equal(array, values.reshape(2, 20, 3).astype(np.float64))


@pytest.mark.parametrize("shape", [(3, 19, 3), (3, 21, 3), (3, 57), (3, 20, 3, 1)])
def test_a_wrong_marker_count_is_refused_with_the_file_name(tmp_path, shape) -> None:
    """Only 20 markers × 3 pass; other marker counts are refused at reading, naming the file (kills: only the
    last axis checked)."""
    path = tmp_path / "pred.npy"
    np.save(path, np.zeros(shape))
    with pytest.raises(PredictionsError, match=rf"predictions have shape \({', '.join(map(str, shape))}\)") as raised:
        read_predictions(str(path))
    _assert_names_file(raised.value, path)


def test_a_damaged_npy_signature_is_not_called_truncated(tmp_path) -> None:
    """Bytes that only begin like the NumPy signature are "not a .npy file", not numpy's misleading pickle
    error (kills: a shorter magic comparison)."""
    path = tmp_path / "pred.npy"
    path.write_bytes(b"\x93NUMBERS\x01\x00" + b"0" * 64)
    with pytest.raises(PredictionsError, match=r"not a \.npy file \(it does not start with the NumPy header\)"):
        read_predictions(str(path))


def test_a_csv_header_is_skipped_and_blank_lines_ignored(tmp_path) -> None:
    """A header line followed by rows is read as the rows, in order; blank lines between and after rows
    are ignored (kills: the header test made on another row; blank lines kept as empty rows)."""
    header = ",".join(f"{marker}_{axis}" for marker in range(20) for axis in "xyz")
    lines = [_csv_line(row) for row in _rows()]
    path = tmp_path / "pred.csv"
    path.write_text(f"{header}\n{lines[0]}\n\n{lines[1]}\n{lines[2]}\n\n\n", encoding="utf-8")
    assert read_predictions(str(path)) == pytest.approx(_rows().reshape(3, 20, 3))


def test_a_ragged_csv_names_the_data_row_that_differs(tmp_path) -> None:
    """The message counts data rows from 1 after the header (kills: an off-by-one row number)."""
    header = ",".join(f"v{index}" for index in range(60))
    lines = [_csv_line(row) for row in _rows(4)]
    lines[2] = lines[2].rsplit(",", 1)[0]  # the third data row has 59 values
    path = tmp_path / "pred.csv"
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    with pytest.raises(PredictionsError, match=r"\[59, 60\] values; data row 3 differs from the first"):
        read_predictions(str(path))


@pytest.mark.parametrize("with_header", [False, True])
def test_a_csv_with_a_byte_order_mark_keeps_every_row(tmp_path, with_header: bool) -> None:
    """A CSV starting with a UTF-8 byte-order mark (Excel's "CSV UTF-8") keeps its first row of numbers.

    Regression: read as plain utf-8, the mark glued onto the first value, so a header-less first row was
    taken for a header and dropped (N-1 predictions, and `rat7m evaluate` refused a correct file).
    """
    lines = [_csv_line(row) for row in _rows()]
    if with_header:
        lines.insert(0, ",".join(f"v{index}" for index in range(60)))
    path = tmp_path / "pred.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert read_predictions(str(path)) == pytest.approx(_rows().reshape(3, 20, 3))


# ---------------------------------------------------------------------------------------------------
# `rat7m evaluate`: options reach the rows scored


def _run_evaluate(capsys, *argv) -> dict[str, tuple[int, float, float]]:
    """Run ``rat7m evaluate`` and return {"overall" or recording: (samples, MPJPE, PA-MPJPE)} from its report."""
    status = main(["evaluate", *map(str, argv)])
    output = capsys.readouterr()
    assert status == 0, output.err
    lines = [line.split() for line in output.out.splitlines()[1:] if not line.startswith("note:")]  # the table
    return {name: (int(samples), float(mpjpe_mm), float(pa_mm)) for name, samples, mpjpe_mm, pa_mm, *_ in lines}


@pytest.fixture(scope="module")
def train_and_test_annotation(tmp_path_factory):
    """A mini annotation (no videos) with s1-d1 (train) and s5-d1 (test) rows, and each recording's rows' truth."""
    spec = SampleSpec(recordings=("s1-d1", "s5-d1"))
    cameras = fabricate_cameras(spec)
    release = FabricatedRelease("", spec, {name: fabricate_recording(spec, name, cameras) for name in spec.recordings})
    path = write_mini_annotation(release, str(tmp_path_factory.mktemp("audit") / "annotation.pkl"))
    return path, {name: release.recordings[name].keypoints_3d[::2] for name in spec.recordings}  # every 2nd sample


def test_split_option_selects_the_rows_scored(train_and_test_annotation, tmp_path, capsys) -> None:
    """``--split train`` scores the train rows (kills: the split ignored, always "test")."""
    annotation, truth = train_and_test_annotation
    np.save(tmp_path / "pred.npy", truth["s1-d1"] + SHIFT_5MM)
    report = _run_evaluate(capsys, tmp_path / "pred.npy", "--annotation-file", annotation, "--split", "train")
    assert report == {"overall": (15, 5.0, 0.0), "s1-d1": (15, 5.0, 0.0)}


def test_a_row_count_mismatch_names_the_file(train_and_test_annotation, tmp_path, capsys) -> None:
    """Too few predictions are refused with a message that starts with the file name (kills: the name dropped)."""
    annotation, truth = train_and_test_annotation
    path = tmp_path / "short.npy"
    np.save(path, truth["s5-d1"][:-1])
    assert main(["evaluate", str(path), "--annotation-file", annotation]) == 1
    error = capsys.readouterr().err
    assert f"error: {path}: 14 predictions, but the mini test split has 15 rows" in error


def test_mocap_config_honours_recordings_and_cache_dir(tmp_path, capsys) -> None:
    """With ``--config mocap``, ``--recordings`` limits the rows to that recording and ``--cache-dir`` is where
    the dataset is built (kills: either option not passed on to the loader)."""
    spec = SampleSpec(recordings=("s5-d1", "s5-d2"))  # both test recordings; no videos needed for mocap
    cameras = fabricate_cameras(spec)
    annotations = tmp_path / "release" / "annotations"
    os.makedirs(annotations)
    rng = np.random.default_rng(41)
    truth = {}
    for name in spec.recordings:
        recording = fabricate_recording(spec, name, cameras)
        write_mocap_mat(str(annotations / mocap_file_name(name)), recording, rng)
        truth[name] = recording.keypoints_3d
    np.save(tmp_path / "pred.npy", truth["s5-d2"] + SHIFT_5MM)
    cache = tmp_path / "my-cache"
    report = _run_evaluate(
        capsys, tmp_path / "pred.npy", "--config", "mocap", "--data-dir", tmp_path / "release",
        "--recordings", "s5-d2", "--cache-dir", cache,
    )  # fmt: skip
    rows = len(truth["s5-d2"])
    assert report == {"overall": (rows, 5.0, 0.0), "s5-d2": (rows, 5.0, 0.0)}
    assert cache.is_dir() and any(cache.iterdir())
