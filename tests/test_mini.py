"""The `mini` benchmark config (annotation pickle + videos) and `rat7m evaluate`."""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil

import numpy as np
import pytest
from helpers import decode_jpeg, raw_images

import rat7m
from rat7m_builder.cli import main
from rat7m_builder.errors import AnnotationFormatError, MissingFileError, UnsafePickleError
from rat7m_builder.sample import read_barcode, write_mini_annotation

ANNOTATION = "mini_rat7m_train_test_annotation.pkl"


@pytest.fixture
def mini_release(sample_release, tmp_path):
    """The sample release plus an annotation (1-based 2D keypoints, as MATLAB makes them)."""
    root = str(tmp_path / "release")
    shutil.copytree(sample_release.root, root)
    write_mini_annotation(sample_release, os.path.join(root, ANNOTATION))
    return root


def test_mini_rows_match_frames_rows(mini_release, tmp_path, sample_release):
    mini = rat7m.load_dataset("mini", data_dir=mini_release, cache_dir=str(tmp_path / "m"))
    assert {split: mini[split].num_rows for split in mini} == {"train": 15, "test": 15}  # every 2nd sample
    frames = rat7m.load_dataset("frames", data_dir=mini_release, cache_dir=str(tmp_path / "f"))
    for split in ("train", "test"):
        by_sample = {
            (int(row["camera"]), int(row["sample_index"])): row
            for row in raw_images(frames[split]).with_format("numpy")
        }
        first_row = min(mini[split]["annotation_index"])
        for row in raw_images(mini[split], "images").with_format("numpy"):
            assert list(row["cameras"]) == [1, 2, 3, 4, 5, 6]
            sample = (int(row["annotation_index"]) - first_row) * 2  # the annotation holds every 2nd sample
            for view, camera in enumerate(row["cameras"]):
                reference = by_sample[(int(camera), sample)]
                assert row["frame_index"][view] == reference["frame_index"]
                assert row["images"][view]["bytes"] == reference["image"]["bytes"]
                # the table's 1-based keypoints were detected and published 0-based, like `frames`
                np.testing.assert_allclose(row["keypoints_2d"][view], reference["keypoints_2d"], atol=1e-4)
                np.testing.assert_array_equal(row["keypoints_3d"], reference["keypoints_3d"])
            assert read_barcode(decode_jpeg(row["images"][0]["bytes"])) == row["frame_index"][0]


def test_the_pixel_convention_note_survives_a_load_from_the_cache(mini_release, cache_dir, monkeypatch):
    # The note is found while planning; a later load (prepare, then export or push) plans nothing.
    heading = "pixel convention of the annotation's 2D keypoints"
    first = rat7m.Rat7M(config_name="mini", data_dir=mini_release, cache_dir=cache_dir)
    rat7m.prepare(first)
    assert any("1-based" in line for line in first.build_notes[heading]), first.build_notes

    monkeypatch.setattr(rat7m.Rat7M, "plan", lambda *a, **k: pytest.fail("the cached build was planned again"))
    again = rat7m.Rat7M(config_name="mini", data_dir=mini_release, cache_dir=cache_dir)
    rat7m.prepare(again)
    assert again.build_notes == first.build_notes


def test_older_file_without_split_and_with_image_paths(sample_release, tmp_path):
    root = str(tmp_path / "release")
    shutil.copytree(sample_release.root, root)
    write_mini_annotation(
        sample_release, os.path.join(root, "rat7m_train_test_annotation.pkl"), image_path_key="image_paths",
        with_split=False, one_based=False,
    )  # fmt: skip
    mini = rat7m.load_dataset("mini", data_dir=root, cache_dir=str(tmp_path / "c"), cameras=[2, 6])
    assert set(mini["test"]["recording"]) == {"s5-d1"} and set(mini["train"]["recording"]) == {"s1-d1"}
    row = mini["train"].with_format("numpy")[3]
    truth = sample_release.recordings["s1-d1"]
    sample = int(row["annotation_index"]) * 2  # every 2nd sample of s1-d1, which comes first
    expected = truth.cameras[6].project(truth.keypoints_3d[sample]).astype(np.float32)
    np.testing.assert_allclose(row["keypoints_2d"][1], expected, atol=1e-4)  # 0-based file: kept


def test_a_camera_the_annotation_lacks_is_named(mini_release, cache_dir, monkeypatch):
    from rat7m_builder import examples

    read = examples.load_mini

    def without_camera_6(ref):  # the annotation as if its table held cameras 1–5 only
        annotation = read(ref)
        five = slice(0, 5)
        return dataclasses.replace(
            annotation,
            camera_names=annotation.camera_names[five],
            frame_index=annotation.frame_index[:, five],
            keypoints_2d=annotation.keypoints_2d[:, five],
            com_2d=None if annotation.com_2d is None else annotation.com_2d[:, five],
            image_path=None if annotation.image_path is None else annotation.image_path[:, five],
        )

    monkeypatch.setattr(examples, "load_mini", without_camera_6)
    with pytest.raises(
        AnnotationFormatError,
        match=rf"{ANNOTATION}: the annotation has no table for camera\(s\) 6 "
        r"\(its cameras: 1, 2, 3, 4, 5\)\. Select those it has with cameras=\[\.\.\.\]",
    ):
        rat7m.load_dataset("mini", data_dir=mini_release, cache_dir=cache_dir)
    mini = rat7m.load_dataset("mini", split="train", data_dir=mini_release, cache_dir=cache_dir, cameras=[1, 5])
    assert mini.num_rows == 15


def test_an_annotation_frame_past_the_video_names_the_annotation(mini_release, cache_dir, monkeypatch):
    from rat7m_builder import examples

    read = examples.load_mini

    def one_frame_too_far(ref):
        annotation = read(ref)
        frame_index = annotation.frame_index.copy()
        frame_index[annotation.recording == "s1-d1", 2] += 1000  # camera 3's column
        return dataclasses.replace(annotation, frame_index=frame_index)

    monkeypatch.setattr(examples, "load_mini", one_frame_too_far)
    with pytest.raises(
        MissingFileError,
        match=rf"s1-d1-camera3-32\.mp4: {ANNOTATION} \(its s1-d1 rows\) refers to "
        r"camera 3 frame 10\d\d, but the last chunk",
    ):
        rat7m.load_dataset("mini", data_dir=mini_release, cache_dir=cache_dir)


def test_missing_annotation_says_where_to_get_it(sample_release, cache_dir):
    with pytest.raises(MissingFileError, match=r"drive\.google\.com.*put it in your data_dir"):
        rat7m.load_dataset("mini", data_dir=sample_release.root, cache_dir=cache_dir)


class _Boom:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['RAT7M_TEST_MARKER']}",))


def test_hostile_annotation_is_refused_and_runs_nothing(sample_release, tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    monkeypatch.setenv("RAT7M_TEST_MARKER", str(marker))
    hostile = tmp_path / ANNOTATION
    with open(hostile, "wb") as file:
        pickle.dump({"cameras": {}, "camera_names": _Boom(), "table": {}}, file)
    with pytest.raises(UnsafePickleError, match="os.system|posix.system"):
        rat7m.load_dataset("mini", data_dir=sample_release.root, annotation_file=str(hostile), cache_dir=str(tmp_path))
    assert not marker.exists()


def test_evaluate_command(mini_release, tmp_path, capsys, sample_release):
    truth = sample_release.recordings["s5-d1"].keypoints_3d[::2]  # the test split's rows, in order
    predictions = truth + np.array([3.0, 4.0, 0.0])  # every valid marker 5 mm off
    np.save(tmp_path / "pred.npy", predictions)
    assert main(["evaluate", str(tmp_path / "pred.npy"), "--split", "test", "--data-dir", mini_release]) == 0
    report = capsys.readouterr().out
    overall = report.splitlines()[1].split()
    assert overall[0] == "overall" and overall[1] == "15" and float(overall[2]) == pytest.approx(5.0)
    assert float(overall[3]) == pytest.approx(0.0, abs=1e-6)  # a rigid shift: PA-MPJPE is 0
    assert "s5-d1" in report
    # CSV, N×60, no header: no row is eaten
    np.savetxt(tmp_path / "pred.csv", predictions.reshape(len(predictions), 60), delimiter=",")
    assert main(["evaluate", str(tmp_path / "pred.csv"), "--data-dir", mini_release]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[1] == "15"
    np.save(tmp_path / "short.npy", predictions[:-1])
    assert main(["evaluate", str(tmp_path / "short.npy"), "--data-dir", mini_release]) == 1
    assert "14 predictions, but the mini test split has 15 rows" in capsys.readouterr().err
