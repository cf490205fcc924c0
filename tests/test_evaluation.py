"""`rat7m evaluate`: predictions are read in the documented layout and scored against the right rows."""

from __future__ import annotations

import numpy as np
import pytest

import rat7m
from rat7m_builder.cli import main
from rat7m_builder.evaluation import PredictionsError, read_predictions
from rat7m_builder.sample import (
    FabricatedRelease,
    SampleSpec,
    fabricate_cameras,
    fabricate_recording,
    write_mini_annotation,
)

#: Added to every marker: a rigid shift that puts each valid marker exactly 5 mm off.
SHIFT_5MM = np.array([3.0, 4.0, 0.0])


def run_evaluate(capsys, predictions_path, *options) -> dict[str, tuple[int, float]]:
    """Run ``rat7m evaluate`` and return its report as {"overall" or recording: (samples, MPJPE in mm)}."""
    status = main(["evaluate", str(predictions_path), *map(str, options)])
    output = capsys.readouterr()
    assert status == 0, output.err
    lines = [line.split() for line in output.out.splitlines()[1:] if not line.startswith("note:")]  # the table
    return {name: (int(samples), float(mpjpe)) for name, samples, mpjpe, *_ in lines}


@pytest.fixture
def sample_annotation(sample_release, tmp_path):
    """An annotation of the default sample (every 2nd sample): s1-d1 (train) rows, then s5-d1 (test) rows."""
    return write_mini_annotation(sample_release, str(tmp_path / "annotation.pkl"))


@pytest.fixture(scope="module")
def unordered_annotation(tmp_path_factory):
    """An annotation whose test rows are s5-d2 before s5-d1 (release order is the reverse), and its rows' truth.

    Scoring `mini` needs only the annotation, so no videos are written.
    """
    recordings = ("s1-d1", "s5-d2", "s5-d1")  # the annotation's row order
    spec = SampleSpec(recordings=recordings)
    cameras = fabricate_cameras(spec)
    release = FabricatedRelease("", spec, {name: fabricate_recording(spec, name, cameras) for name in recordings})
    path = write_mini_annotation(release, str(tmp_path_factory.mktemp("unordered") / "annotation.pkl"))
    return path, {name: release.recordings[name].keypoints_3d[::2] for name in recordings}  # every 2nd sample


@pytest.mark.parametrize("extension", [".csv", ".npy"])
def test_flat_rows_hold_xyz_of_one_marker_after_another(sample_release, sample_annotation, tmp_path, capsys, extension):
    truth = sample_release.recordings["s5-d1"].keypoints_3d[::2]  # the test split's rows
    # Marker j is j mm off in x: reading the 60 values in another layout would move the error between markers.
    predictions = (truth + np.arange(20)[:, None] * [1.0, 0.0, 0.0]).reshape(len(truth), 60)
    path = tmp_path / f"pred{extension}"
    if extension == ".csv":
        np.savetxt(path, predictions, delimiter=",")
    else:
        np.save(path, predictions)
    valid = ~np.isnan(truth).any(axis=-1)
    expected = np.mean([np.arange(20)[markers].mean() for markers in valid])  # the mean of j over valid markers
    report = run_evaluate(capsys, path, "--annotation-file", sample_annotation)
    assert report["overall"] == pytest.approx((15, expected), abs=0.005)  # printed with 2 decimals


def test_unpredicted_markers_are_counted_and_the_score_marked_incomparable(
    sample_release, sample_annotation, tmp_path, capsys
):
    """NaN predictions at tracked markers: the report counts them and says the score is not comparable."""
    truth = sample_release.recordings["s5-d1"].keypoints_3d[::2]
    predictions = truth + SHIFT_5MM
    tracked = np.argwhere(~np.isnan(truth).any(axis=-1))[:4]  # four tracked markers, left out below
    for row, marker in tracked:
        predictions[row, marker] = np.nan
    path = tmp_path / "pred.npy"
    np.save(path, predictions)
    assert main(["evaluate", str(path), "--annotation-file", sample_annotation]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-5:] == ["excluded", "unpredicted", "(errors", "in", "mm)"]
    overall = lines[1].split()
    assert overall[0] == "overall" and overall[-1] == "4"
    assert lines[-1].startswith("note: 4 tracked marker(s) have no prediction")

    np.save(path, truth + SHIFT_5MM)  # complete: no note, nothing unpredicted
    assert main(["evaluate", str(path), "--annotation-file", sample_annotation]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[-1] == "0" and not any(line.startswith("note:") for line in lines)


def test_a_pandas_csv_header_of_column_numbers_is_a_header(sample_release, sample_annotation, tmp_path, capsys):
    """pandas' CSV of an N×60 frame reads as written: its header of column numbers 0, 1, …, 59 (which
    reads as numbers) is a header, and its empty fields (pandas' NaN) are markers with no prediction."""
    import pandas  # a dependency of datasets

    truth = sample_release.recordings["s5-d1"].keypoints_3d[::2]
    path = tmp_path / "pred.csv"
    pandas.DataFrame((truth + SHIFT_5MM).reshape(len(truth), 60)).to_csv(path, index=False)
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(str(column) for column in range(60))
    assert any(",,," in line for line in lines[1:])  # the truth's NaN markers, written as empty fields
    assert read_predictions(str(path)).shape == (len(truth), 20, 3)
    assert run_evaluate(capsys, path, "--annotation-file", sample_annotation)["overall"] == (15, 5.0)


def test_recordings_limits_the_rows_scored(unordered_annotation, tmp_path, capsys):
    annotation, truth = unordered_annotation
    np.save(tmp_path / "pred.npy", truth["s5-d1"] + SHIFT_5MM)
    report = run_evaluate(capsys, tmp_path / "pred.npy", "--annotation-file", annotation, "--recordings", "s5-d1")
    assert report == {"overall": (15, 5.0), "s5-d1": (15, 5.0)}


def test_scores_go_to_the_recording_of_their_rows(unordered_annotation, tmp_path, capsys):
    annotation, truth = unordered_annotation
    # Predictions follow the release order (s5-d1 first), not the file's; only s5-d1's are off.
    np.save(tmp_path / "pred.npy", np.concatenate([truth["s5-d1"] + SHIFT_5MM, truth["s5-d2"]]))
    report = run_evaluate(capsys, tmp_path / "pred.npy", "--annotation-file", annotation)
    assert report == {"overall": (30, 2.5), "s5-d1": (15, 5.0), "s5-d2": (15, 0.0)}


def test_frame_step_scores_the_rows_the_mini_config_keeps(sample_release, sample_annotation, tmp_path, capsys):
    mini = rat7m.load_dataset(
        "mini", split="test", data_dir=sample_release.root, annotation_file=sample_annotation,
        cache_dir=str(tmp_path / "cache"), frame_step=2, cameras=[1],
    )  # fmt: skip
    truth = np.asarray(mini.with_format("numpy")["keypoints_3d"], dtype=np.float64)
    assert 0 < len(truth) < 15  # the step left rows out
    np.save(tmp_path / "pred.npy", truth + SHIFT_5MM)
    report = run_evaluate(capsys, tmp_path / "pred.npy", "--annotation-file", sample_annotation, "--frame-step", 2)
    assert report == {"overall": (len(truth), 5.0), "s5-d1": (len(truth), 5.0)}


@pytest.mark.parametrize("frame_step", [1, 2])
def test_mocap_config(sample_release, cache_dir, tmp_path, capsys, frame_step):
    truth = sample_release.recordings["s5-d1"].keypoints_3d[::frame_step]  # the samples kept, all of the test split
    np.save(tmp_path / "pred.npy", truth + SHIFT_5MM)
    step_option = ["--frame-step", frame_step] if frame_step > 1 else []  # the default, left out
    report = run_evaluate(
        capsys, tmp_path / "pred.npy", "--config", "mocap", "--data-dir", sample_release.root,
        "--cache-dir", cache_dir, *step_option,
    )  # fmt: skip
    assert report == {"overall": (len(truth), 5.0), "s5-d1": (len(truth), 5.0)}


def test_a_boolean_array_is_refused(tmp_path):
    np.save(tmp_path / "pred.npy", np.ones((4, 20, 3), dtype=bool))  # would otherwise score as 0/1 mm
    with pytest.raises(PredictionsError, match="array of bool, not of real numbers"):
        read_predictions(str(tmp_path / "pred.npy"))
