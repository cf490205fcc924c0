"""Bad input that used to be accepted silently, or to end in a traceback: each is now a clear error.

1. ``mocap-*.mat`` calibration and content: an ``IntrinsicMatrix`` stored transposed (OpenCV layout), a
   ``rotationMatrix`` that is not a rotation, NaN/inf calibration, ±inf marker coordinates, a ``name``
   naming another recording than the file name. Bad files are the fabricated sample's good ones,
   loaded, changed and saved again with ``scipy.io.savemat``.
2. ``rat7m evaluate`` prediction files that are not what their extension says, empty, truncated or
   of the wrong type or shape.
3. A cached figshare ``listing.json`` that is not the form the downloader writes.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest
from helpers import MAT_FIX, load_mat, save_mat
from standins.figshare import fabricate_release, figshare  # noqa: F401 - fixture

import rat7m
from rat7m_builder import evaluation
from rat7m_builder.camera import ROTATION_TOLERANCE
from rat7m_builder.cli import main
from rat7m_builder.download import api_url, article_dir, fetch_listing, figshare_index
from rat7m_builder.errors import DownloadError, MocapFormatError
from rat7m_builder.evaluation import EXPECTED_FORMAT, PredictionsError, read_predictions
from rat7m_builder.manifest import MOCAP_ARTICLE
from rat7m_builder.mocap import read_mocap

MAT = "mocap-s1-d1.mat"
FIX = MAT_FIX

# -- 1. .mat calibration and content ---------------------------------------------------------------


@pytest.fixture
def good_mat(sample_release, tmp_path) -> str:
    """A private copy of the sample's (valid) ``mocap-s1-d1.mat``."""
    path = str(tmp_path / MAT)
    shutil.copyfile(os.path.join(sample_release.root, "annotations", MAT), path)
    return path


def _read(path: str, name: str = MAT):
    with open(path, "rb") as file:
        return read_mocap(file, name)


def _rewritten(path: str, change) -> str:
    variables = load_mat(path)
    change(variables)
    save_mat(path, variables)
    return path


def _refused(path: str, name: str = MAT) -> str:
    with pytest.raises(MocapFormatError) as raised:
        _read(path, name)
    message = str(raised.value)
    assert message.startswith(f"{name}: ") and message.endswith(FIX), message
    return message


def test_every_fabricated_recording_passes_the_new_checks(sample_release):
    """The sample is the reference for a good file: its cameras and names must satisfy every check."""
    for recording, truth in sample_release.recordings.items():
        parsed = _read(
            os.path.join(sample_release.root, "annotations", f"mocap-{recording}.mat"), f"mocap-{recording}.mat"
        )
        for number, camera in parsed.cameras.items():
            np.testing.assert_array_equal(camera.intrinsic_matrix, truth.cameras[number].intrinsic_matrix)
            np.testing.assert_array_equal(camera.rotation_matrix, truth.cameras[number].rotation_matrix)


def test_transposed_intrinsic_matrix_is_refused_not_transposed(good_mat):
    def transpose(variables):
        camera = variables["cameras"]["Camera3"]
        camera["IntrinsicMatrix"] = camera["IntrinsicMatrix"].T  # OpenCV layout: (cx, cy) in the last column

    cx, cy = load_mat(good_mat)["cameras"]["Camera3"]["IntrinsicMatrix"][2, :2]
    message = _refused(_rewritten(good_mat, transpose))
    assert "field 'cameras.Camera3.IntrinsicMatrix' is stored transposed (OpenCV layout)" in message
    assert f"principal point ({cx:.6g}, {cy:.6g}) in the last column" in message
    assert "[[fx, 0, 0], [skew, fy, 0], [cx, cy, 1]]" in message and "Store its transpose" in message


@pytest.mark.parametrize(
    ("intrinsic", "expected"),
    [
        (np.zeros((3, 3)), r"is not a camera matrix: found \[\[0, 0, 0\]"),
        (np.array([[1000.0, 5, 0], [0, 1000, 0], [660, 524, 1]]), r"is not a camera matrix"),  # neither layout
        (np.array([[1000.0, 0, 0], [0, 1000, 0], [660, 524, 2]]), r"is not a camera matrix"),
        (np.array([[0.0, 0, 0], [0, 1000, 0], [660, 524, 1]]), r"non-positive focal lengths \(fx, fy\) = \(0, 1000\)"),
        (np.array([[1000.0, 0, 0], [0, -1000, 0], [660, 524, 1]]), r"non-positive focal lengths"),
    ],
)
def test_intrinsic_matrix_that_is_no_camera_matrix_is_refused(good_mat, intrinsic, expected):
    message = _refused(
        _rewritten(good_mat, lambda v: v["cameras"]["Camera5"].__setitem__("IntrinsicMatrix", intrinsic))
    )
    assert "field 'cameras.Camera5.IntrinsicMatrix' " in message
    assert re.search(expected, message), message


def _rotation(variables, camera="Camera2"):
    return np.asarray(variables["cameras"][camera]["rotationMatrix"], dtype=np.float64)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: np.zeros((3, 3)), r"is not a rotation: .*max \|R·Rᵀ − I\| = 1 and det R = 0"),
        (lambda r: -r, r"is a reflection, not a rotation: .*det R = -1"),  # det −1: a mirrored frame
        (lambda r: r * 1.01, r"is not a rotation"),  # a scaled rotation
        (lambda r: r * 1.001, r"is not a rotation"),  # scaled by 0.1 %: R·Rᵀ is 0.2 % off, far above rounding
        (lambda r: r + 1e-3 * np.arange(9.0).reshape(3, 3), r"is not a rotation"),  # skewed axes
        (lambda r: r.T, None),  # still a rotation: accepted (a transposed rotation cannot be told)
        (lambda r: r.astype(np.float32), None),  # single precision: ~1e-7 off, within the tolerance
        (lambda r: np.round(r, 6), None),  # re-saved with 6 decimals: ~1e-6 off
    ],
)
def test_rotation_must_be_a_proper_rotation(good_mat, change, expected):
    def mutate(variables):
        variables["cameras"]["Camera2"]["rotationMatrix"] = change(_rotation(variables))

    _rewritten(good_mat, mutate)
    if expected is None:
        stored = _rotation(load_mat(good_mat))
        assert np.max(np.abs(stored @ stored.T - np.eye(3))) < ROTATION_TOLERANCE
        _read(good_mat)
        return
    message = _refused(good_mat)
    assert "field 'cameras.Camera2.rotationMatrix' " in message
    assert re.search(expected, message), message


def test_capitalised_rotation_field_is_checked_too(good_mat):
    def mutate(variables):
        camera = variables["cameras"]["Camera6"]
        camera.pop("rotationMatrix")
        camera["RotationMatrix"] = np.zeros((3, 3))

    assert "'cameras.Camera6.rotationMatrix' is not a rotation" in _refused(_rewritten(good_mat, mutate))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(
    ("field", "at"),
    [
        ("IntrinsicMatrix", (2, 0)),
        ("rotationMatrix", (1, 1)),
        ("translationVector", (0,)),
        ("RadialDistortion", (1,)),
        ("TangentialDistortion", (0,)),  # stored in single precision on Camera4
    ],
)
def test_non_finite_calibration_names_the_field(good_mat, field, at, bad):
    def mutate(variables):
        value = np.array(variables["cameras"]["Camera4"][field])
        value[at] = bad
        variables["cameras"]["Camera4"][field] = value

    message = _refused(_rewritten(good_mat, mutate))
    assert f"field 'cameras.Camera4.{field}' holds NaN or infinite values" in message


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_infinite_marker_is_refused_naming_marker_and_first_sample(good_mat, bad):
    def mutate(variables):
        markers = variables["mocap"]
        markers["ElbowR"] = markers["ElbowR"].copy()
        markers["ElbowR"][[7, 20], 1] = bad

    message = _refused(_rewritten(good_mat, mutate))
    assert "field 'mocap.ElbowR' holds an infinite value at sample 7 (0-based; MATLAB row 8:" in message
    assert "in 2 sample(s) in all" in message and "untracked marker with NaN" in message


def test_a_recording_without_samples_is_refused_and_caches_nothing(good_mat, sample_release, tmp_path):
    def empty(variables):
        for marker in variables["mocap"]:
            variables["mocap"][marker] = np.zeros((0, 3))
        for camera in variables["cameras"].values():
            camera["frame"] = np.zeros((1, 0))

    message = _refused(_rewritten(good_mat, empty))
    assert "field 'mocap' holds no samples" in message
    # through the builder: the error, and no finished (empty) cache that a repaired copy would reuse
    root, cache = tmp_path / "release", str(tmp_path / "cache")
    os.makedirs(root / "annotations")
    shutil.copyfile(good_mat, root / "annotations" / MAT)
    with pytest.raises(MocapFormatError, match="holds no samples"):
        rat7m.load_dataset("mocap", data_dir=str(root), cache_dir=cache)
    shutil.copyfile(os.path.join(sample_release.root, "annotations", MAT), root / "annotations" / MAT)
    assert rat7m.load_dataset("mocap", split="train", data_dir=str(root), cache_dir=cache).num_rows == 30


def test_nan_markers_are_still_kept(good_mat):
    parsed = _read(good_mat)
    assert np.isnan(parsed.keypoints_3d).any() and not np.isinf(parsed.keypoints_3d).any()


def test_name_naming_another_recording_is_refused(good_mat):
    message = _refused(_rewritten(good_mat, lambda v: v.__setitem__("name", "Subject2-Day1")))
    assert "'name' variable says 'Subject2-Day1' (recording s2-d1) but its file name says s1-d1" in message
    assert "renamed or mixed up" in message


def test_name_is_compared_with_the_file_name_only(good_mat):
    # The same bytes under the name the content claims are fine; a path or URL in front changes nothing.
    _rewritten(good_mat, lambda v: v.__setitem__("name", "Subject2-Day1"))
    assert _read(good_mat, "mocap-s2-d1.mat").name == "Subject2-Day1"
    _refused(good_mat, "https://example.invalid/files/mocap-s1-d1.mat")
    assert _read(good_mat, "renamed.mat").name == "Subject2-Day1"  # no recording in the file name: no check


@pytest.mark.parametrize("name", [None, "", "rat one", "s1-d1", "Subject1", " subject1 - day1 "])
def test_absent_or_other_name_forms_are_tolerated(good_mat, name):
    _rewritten(good_mat, lambda v: v.pop("name") if name is None else v.__setitem__("name", name))
    assert _read(good_mat).num_samples > 0


# -- 2. prediction files ---------------------------------------------------------------------------


def _predictions(rows: int = 3) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(rows, 20, 3))


def _write_npz_as_npy(path):
    np.savez(str(path) + ".npz", predictions=_predictions())
    os.replace(str(path) + ".npz", path)


def _write_truncated_npy(path):
    np.save(path, _predictions())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _write_pickled_npy(path):
    np.save(path, np.array([{"x": 1}], dtype=object), allow_pickle=True)


BAD_PREDICTIONS = {
    "npz renamed .npy": ("pred.npy", _write_npz_as_npy, r"this is a \.npz archive \(numpy\.savez\), not a \.npy"),
    "empty .npy": ("pred.npy", lambda p: p.write_bytes(b""), r"the file is empty \(0 bytes\)"),
    "header only": ("pred.npy", lambda p: p.write_bytes(b"\x93NUMPY\x01\x00"), r"not a readable plain numeric"),
    "truncated .npy": ("pred.npy", _write_truncated_npy, r"not a readable plain numeric .*it may be truncated"),
    "text as .npy": ("pred.npy", lambda p: p.write_text("1,2,3\n"), r"not a \.npy file \(it does not start"),
    "pickled objects": ("pred.npy", _write_pickled_npy, r"Object arrays cannot be loaded"),
    "strings": ("pred.npy", lambda p: np.save(p, np.full((2, 60), "1.0")), r"an array of <U3, not of real numbers"),
    "complex": ("pred.npy", lambda p: np.save(p, np.zeros((2, 60), complex)), r"array of complex128"),
    "wrong shape": ("pred.npy", lambda p: np.save(p, np.zeros((2, 20, 2))), r"predictions have shape \(2, 20, 2\)"),
    "scalar": ("pred.npy", lambda p: np.save(p, np.float64(3.0)), r"predictions have shape \(\)"),
    "binary as .csv": ("pred.csv", lambda p: p.write_bytes(b"\x93NUMPY\xff\xfe\x00"), r"not a text CSV file"),
    "empty .csv": ("pred.csv", lambda p: p.write_text(""), r"holds no rows of numbers"),
    "header only .csv": ("pred.csv", lambda p: p.write_text("x0,y0,z0\n"), r"holds no rows of numbers"),
    "ragged .csv": ("pred.csv", lambda p: p.write_text("1,2,3\n4,5\n"), r"rows have different lengths"),
    "words in .csv": ("pred.csv", lambda p: p.write_text("1,2\n3,x\n"), r"something other than numbers"),
    "npz extension": ("pred.npz", _write_npz_as_npy, r"must be a \.npy or a \.csv file"),
}


@pytest.mark.parametrize("case", list(BAD_PREDICTIONS))
def test_bad_prediction_file_names_file_and_expected_format(case, tmp_path):
    name, write, expected = BAD_PREDICTIONS[case]
    path = tmp_path / name
    write(path)
    with pytest.raises(PredictionsError, match=expected) as raised:
        read_predictions(str(path))
    message = str(raised.value)
    assert message.startswith(f"{path}: ") and message.endswith(EXPECTED_FORMAT), message


@pytest.mark.parametrize("case", ["npz renamed .npy", "empty .npy", "binary as .csv"])
def test_evaluate_command_reports_bad_predictions_without_traceback(case, tmp_path, capsys):
    name, write, expected = BAD_PREDICTIONS[case]
    path = tmp_path / name
    write(path)
    assert main(["evaluate", str(path), "--data-dir", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"rat7m evaluate: error: {path}: ") and "Traceback" not in error
    assert re.search(expected, error) and "N×20×3 or N×60" in error


def test_predictions_are_loaded_without_pickle(tmp_path, monkeypatch):
    calls = []
    load = np.load
    monkeypatch.setattr(evaluation.np, "load", lambda *a, **k: calls.append(k) or load(*a, **k))
    np.save(tmp_path / "pred.npy", _predictions().reshape(3, 60))
    assert read_predictions(str(tmp_path / "pred.npy")).shape == (3, 20, 3)
    assert calls == [{"allow_pickle": False}]


# -- 3. cached figshare listings -------------------------------------------------------------------

_ENTRY = {"id": 1, "name": "mocap-s1-d1.mat", "size": 10, "download_url": "http://x.invalid/1", "computed_md5": "0"}

MALFORMED_LISTINGS = {
    "not JSON": (b"{not json", r"not JSON"),
    "not UTF-8": (b"\xff\xfe\x00garbage", r"not JSON"),
    "a list": (["mocap-s1-d1.mat"], r"a JSON array, expected an object with 'files'"),
    "no files": ({"api_url": "x"}, r"its 'files' is missing, expected a list"),
    "files an object": ({"files": {"mocap-s1-d1.mat": _ENTRY}}, r"its 'files' is a JSON object, expected a list"),
    "entries are names": ({"files": ["mocap-s1-d1.mat"]}, r'files\[0\] is a JSON string \("mocap-s1-d1.mat"\)'),
    "entry null": ({"files": [_ENTRY, None]}, r"files\[1\] is a JSON null"),
    "entry without name": ({"files": [{"id": 3, "size": 5}]}, r"files\[0\] has no file name: its 'name' is missing"),
    "name a number": ({"files": [{**_ENTRY, "name": 7}]}, r"its 'name' is a JSON number \(7\)"),
    "size a string": ({"files": [{**_ENTRY, "size": "10"}]}, r"\('mocap-s1-d1.mat'\): its 'size' is a JSON string"),
    "size a boolean": ({"files": [{**_ENTRY, "size": True}]}, r"its 'size' is a JSON boolean"),
    "size negative": ({"files": [{**_ENTRY, "size": -1}]}, r"its 'size' is negative \(-1\)"),
    "url a list": ({"files": [{**_ENTRY, "download_url": ["a"]}]}, r"its 'download_url' is a JSON array"),
    "link flag a string": ({"files": [{**_ENTRY, "is_link_only": "no"}]}, r"its 'is_link_only' is a JSON string"),
    "another article": ({"article_id": 1, "files": [_ENTRY]}, r"its 'article_id' is 1, expected 13739233"),
}


def _write_listing(cache: str, content) -> str:
    path = os.path.join(article_dir(cache, *MOCAP_ARTICLE), "listing.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as file:
        file.write(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


@pytest.mark.parametrize("case", list(MALFORMED_LISTINGS))
def test_malformed_cached_listing_offline_names_it_and_says_what_to_do(case, tmp_path):
    content, expected = MALFORMED_LISTINGS[case]
    cache = str(tmp_path / "cache")
    path = _write_listing(cache, content)
    with pytest.raises(DownloadError, match=expected) as raised:
        fetch_listing(*MOCAP_ARTICLE, cache, offline=True)
    message = str(raised.value)
    assert message.startswith(f"{path}: the cached listing of figshare article {MOCAP_ARTICLE[0]} v{MOCAP_ARTICLE[1]}")
    assert message.endswith("Delete this file, or run once with network access to fetch the listing again.")


def test_offline_build_with_entries_that_are_names_is_an_error_not_an_attribute_error(tmp_path):
    cache = str(tmp_path / "cache")
    path = _write_listing(cache, {"api_url": "x", "files": ["mocap-s1-d1.mat", "mocap-s5-d1.mat"]})
    with pytest.raises(DownloadError, match=rf"^{path}: .* is malformed"):
        figshare_index(["s1-d1"], [1], cache, need_video=False, offline=True, progress=False)


def test_well_formed_cache_with_extra_keys_and_nulls_is_used_offline(tmp_path):
    cache = str(tmp_path / "cache")
    entries = [{**_ENTRY, "mimetype": "x", "supplied_md5": None, "is_link_only": False}, {"name": "README.txt"}]
    _write_listing(cache, {"article_id": MOCAP_ARTICLE[0], "version": MOCAP_ARTICLE[1], "files": entries})
    assert fetch_listing(*MOCAP_ARTICLE, cache, offline=True) == entries


@pytest.mark.parametrize("case", ["entries are names", "size a string", "not JSON"])
def test_malformed_cached_listing_online_is_fetched_again(case, figshare, tmp_path):  # noqa: F811
    release = fabricate_release(figshare, ["s1-d1"], cameras=(1,), starts=(0,), size=64)
    cache = str(tmp_path / "cache")
    content, _ = MALFORMED_LISTINGS[case]
    if isinstance(content, dict):
        content = {**content, "api_url": api_url()}  # a cache for this very API: used as is before the fix
    path = _write_listing(cache, content)
    listing = fetch_listing(*MOCAP_ARTICLE, cache)
    assert {entry["name"] for entry in listing} == {name for name in release if name.startswith("mocap-")}
    assert len(figshare.listing_requests()) == 1
    with open(path, encoding="utf-8") as file:
        assert json.load(file)["files"] == listing  # the malformed cache was replaced
