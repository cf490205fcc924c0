"""The `mini` benchmark config (annotation pickle + videos) and `rat7m evaluate`."""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import shutil
import warnings

import numpy as np
import pytest
from helpers import decode_jpeg, raw_images

import rat7m
from rat7m_builder.annotation import load_annotation
from rat7m_builder.cli import main
from rat7m_builder.errors import AnnotationFormatError, DuplicateFileError, MissingFileError, UnsafePickleError
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


# ----------------------------------------------------------- pixel convention, rows, file discovery

CONVENTION = "pixel convention of the annotation's 2D keypoints"


def test_a_0_based_annotation_is_kept_and_the_card_says_so(sample_release, tmp_path):
    root = str(tmp_path / "release")
    shutil.copytree(sample_release.root, root)
    write_mini_annotation(sample_release, os.path.join(root, ANNOTATION), one_based=False)
    builder = rat7m.Rat7M(config_name="mini", data_dir=root, cache_dir=str(tmp_path / "c"), cameras=[1])
    rat7m.prepare(builder)
    assert builder.build_notes[CONVENTION] == [
        "s1-d1: table 2D keypoints are 0-based; kept",
        "s5-d1: table 2D keypoints are 0-based; kept",
    ]


def load_annotation_of(root: str):
    with open(os.path.join(root, ANNOTATION), "rb") as file:
        return load_annotation(file, ANNOTATION)


def _with_annotation(monkeypatch, change):
    """Have the builder read the annotation as ``change(annotation)``."""
    from rat7m_builder import examples

    read = examples.load_mini
    monkeypatch.setattr(examples, "load_mini", lambda ref: change(read(ref)))


def test_without_calibration_to_check_them_keypoints_are_kept_as_stored(mini_release, cache_dir, monkeypatch):
    # The convention cannot be decided: nothing is shifted (a guess could be off by a pixel), and said so.
    _with_annotation(monkeypatch, lambda annotation: dataclasses.replace(annotation, cameras={}))
    builder = rat7m.Rat7M(config_name="mini", data_dir=mini_release, cache_dir=cache_dir, cameras=[2])
    rat7m.prepare(builder)
    assert builder.build_notes[CONVENTION][0] == "s1-d1: 2D keypoints kept as stored (no calibration to check them)"
    stored = load_annotation_of(mini_release)
    row = builder.as_dataset(split="train").with_format("numpy")[3]
    np.testing.assert_array_equal(row["keypoints_2d"][0], stored.keypoints_2d[row["annotation_index"], 1])


def test_camera_fields_spelled_k_r_t_are_read(mini_release, cache_dir, monkeypatch):
    # Another spelling of the MATLAB camera fields still decides the convention (1-based here).
    names = {"IntrinsicMatrix": "K", "RotationMatrix": "r", "TranslationVector": "t"}

    def respelled(annotation):
        cameras = {
            subject: {
                day: {name: {names.get(k, k): v for k, v in fields.items()} for name, fields in by_camera.items()}
                for day, by_camera in by_day.items()
            }
            for subject, by_day in annotation.cameras.items()
        }
        return dataclasses.replace(annotation, cameras=cameras)

    _with_annotation(monkeypatch, respelled)
    builder = rat7m.Rat7M(config_name="mini", data_dir=mini_release, cache_dir=cache_dir, cameras=[1])
    rat7m.prepare(builder)
    assert builder.build_notes[CONVENTION][0] == "s1-d1: table 2D keypoints are 1-based; shifted by −1"


def test_frame_step_keeps_the_rows_whose_annotation_index_is_a_multiple(mini_release, cache_dir):
    # As `sample_index` elsewhere: the row's index in the file, not its position in the split (the
    # test split's rows start at 15 here).
    mini = rat7m.load_dataset("mini", data_dir=mini_release, cache_dir=cache_dir, cameras=[1], frame_step=2)
    assert mini["train"]["annotation_index"] == list(range(0, 15, 2))
    assert mini["test"]["annotation_index"] == list(range(16, 30, 2))


def test_com_2d_is_published_0_based_like_the_keypoints(mini_release, cache_dir):
    # The file's centre of mass is the mean of its (1-based) keypoints: published, it is the mean of
    # the published 0-based keypoints, shifted the same way.
    mini = rat7m.load_dataset("mini", split="train", data_dir=mini_release, cache_dir=cache_dir, cameras=[1, 4])
    rows = mini.with_format("numpy")[:]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the all-NaN sample: NaN, as in the file
        expected = np.nanmean(rows["keypoints_2d"], axis=2)
    np.testing.assert_allclose(rows["com_2d"], expected, atol=1e-3)


def test_the_current_annotation_name_wins_over_the_older_one(sample_release, tmp_path):
    root = str(tmp_path / "release")
    shutil.copytree(sample_release.root, root)
    write_mini_annotation(sample_release, os.path.join(root, ANNOTATION))  # every 2nd sample
    write_mini_annotation(sample_release, os.path.join(root, "rat7m_train_test_annotation.pkl"), sample_step=3)
    mini = rat7m.load_dataset("mini", split="test", data_dir=root, cache_dir=str(tmp_path / "c"), cameras=[1])
    assert mini.num_rows == 15


def test_the_current_annotation_name_wins_wherever_it_is(sample_release, tmp_path):
    """The current name in a subfolder wins over the older name at the top (the search was folder by folder)."""
    root = tmp_path / "release"
    shutil.copytree(sample_release.root, root)
    (root / "mini" / "v2").mkdir(parents=True)
    write_mini_annotation(sample_release, str(root / "mini" / "v2" / ANNOTATION))  # every 2nd sample: 15 test rows
    write_mini_annotation(sample_release, str(root / "rat7m_train_test_annotation.pkl"), sample_step=3)
    mini = rat7m.load_dataset("mini", split="test", data_dir=str(root), cache_dir=str(tmp_path / "c"), cameras=[1])
    assert mini.num_rows == 15


def test_two_different_annotations_under_one_name_are_refused(sample_release, tmp_path):
    """Which benchmark table is meant is unknown: the error lists both; a copy of the same file is fine."""
    root = tmp_path / "release"
    shutil.copytree(sample_release.root, root)
    (root / "a").mkdir()
    (root / "b").mkdir()
    write_mini_annotation(sample_release, str(root / "a" / ANNOTATION))
    shutil.copy(root / "a" / ANNOTATION, root / "b" / ANNOTATION)
    cache = str(tmp_path / "c")
    mini = rat7m.load_dataset("mini", split="test", data_dir=str(root), cache_dir=cache, cameras=[1])
    assert mini.num_rows == 15
    write_mini_annotation(sample_release, str(root / "b" / ANNOTATION), sample_step=3)
    with pytest.raises(DuplicateFileError) as raised:
        rat7m.load_dataset("mini", split="test", data_dir=str(root), cache_dir=cache, cameras=[1])
    message = str(raised.value)
    assert str(root / "a" / ANNOTATION) in message and str(root / "b" / ANNOTATION) in message
    assert "annotation_file=" in message
    chosen = rat7m.load_dataset(
        "mini",
        split="test",
        data_dir=str(root),
        cache_dir=cache,
        cameras=[1],
        annotation_file=str(root / "b" / ANNOTATION),
    )
    assert chosen.num_rows == 10


def test_the_cache_follows_the_annotation_found(sample_release, tmp_path):
    """A copy that gains the current-named pickle builds again instead of reusing the older one's build."""
    root = tmp_path / "release"
    shutil.copytree(sample_release.root, root)
    write_mini_annotation(sample_release, str(root / "rat7m_train_test_annotation.pkl"), sample_step=3)
    cache = str(tmp_path / "c")
    older = rat7m.load_dataset("mini", split="test", data_dir=str(root), cache_dir=cache, cameras=[1])
    assert older.num_rows == 10
    (root / "new").mkdir()
    write_mini_annotation(sample_release, str(root / "new" / ANNOTATION))
    newer = rat7m.load_dataset("mini", split="test", data_dir=str(root), cache_dir=cache, cameras=[1])
    assert newer.num_rows == 15


def test_an_annotation_file_that_does_not_exist_is_named(sample_release, tmp_path):
    missing = str(tmp_path / "mini.pkl")
    with pytest.raises(MissingFileError, match=rf"annotation_file '{re.escape(missing)}' does not exist\. Download"):
        rat7m.load_dataset("mini", data_dir=sample_release.root, annotation_file=missing, cache_dir=str(tmp_path))


def test_stored_arrow_types_are_the_documented_ones(mini_release, cache_dir):
    # int32 indices, float32 pixels (com_2d too): pinned in the Arrow schema, which `with_format`
    # would hide (it hands float columns over as float32, int columns as int64 to torch).
    mini = rat7m.load_dataset("mini", split="test", data_dir=mini_release, cache_dir=cache_dir, cameras=[1])
    types = {field.name: str(field.type) for field in mini.data.schema}
    assert types["annotation_index"] == types["subject"] == types["day"] == "int32"
    assert types["cameras"] == types["frame_index"] == "list<item: int32>"
    assert types["com_2d"] == "list<item: fixed_size_list<item: float>[2]>"
    assert types["keypoints_2d"] == "list<item: fixed_size_list<item: fixed_size_list<item: float>[2]>[20]>"
    assert types["keypoints_3d"] == "fixed_size_list<item: fixed_size_list<item: float>[3]>[20]"
