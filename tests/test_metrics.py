"""Tests of rat7m_builder.metrics: MPJPE, PA-MPJPE, N-MPJPE and evaluate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from rat7m_builder.metrics import evaluate, mpjpe, n_mpjpe, pa_mpjpe


def _poses(n: int, seed: int = 0) -> np.ndarray:
    """Random rat-sized poses (mm): a body centre somewhere in the arena plus markers around it."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(-300, 300, size=(n, 1, 3))
    return centre + rng.normal(scale=40.0, size=(n, 20, 3))


def _reference_pa_mpjpe(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-sample PA-MPJPE as the DANNCE-family / VideoPose3D evaluation code computes it (no NaNs)."""
    mu_x = target.mean(axis=1, keepdims=True)
    mu_y = predicted.mean(axis=1, keepdims=True)
    x0, y0 = target - mu_x, predicted - mu_y
    norm_x = np.sqrt((x0**2).sum(axis=(1, 2), keepdims=True))
    norm_y = np.sqrt((y0**2).sum(axis=(1, 2), keepdims=True))
    x0, y0 = x0 / norm_x, y0 / norm_y
    u, s, vt = np.linalg.svd(np.matmul(x0.transpose(0, 2, 1), y0))
    v = vt.transpose(0, 2, 1)
    r = np.matmul(v, u.transpose(0, 2, 1))
    sign = np.sign(np.expand_dims(np.linalg.det(r), axis=1))
    v[:, :, -1] *= sign
    s[:, -1] *= sign.flatten()
    r = np.matmul(v, u.transpose(0, 2, 1))
    a = np.expand_dims(s.sum(axis=1, keepdims=True), axis=2) * norm_x / norm_y
    t = mu_x - a * np.matmul(mu_y, r)
    return np.linalg.norm(a * np.matmul(predicted, r) + t - target, axis=-1).mean(axis=-1)


def _reference_n_mpjpe(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-sample N-MPJPE as the DANNCE-family evaluation code computes it (no NaNs)."""
    norm_predicted = (predicted**2).sum(axis=2, keepdims=True).mean(axis=1, keepdims=True)
    norm_target = (target * predicted).sum(axis=2, keepdims=True).mean(axis=1, keepdims=True)
    return np.linalg.norm(norm_target / norm_predicted * predicted - target, axis=-1).mean(axis=-1)


# ---------------------------------------------------------------------------------------------------
# Hand-computed cases


def test_offset_by_3_4_0_gives_mpjpe_5() -> None:
    target = _poses(4)
    pred = target + np.array([3.0, 4.0, 0.0])
    assert mpjpe(pred, target) == pytest.approx(5.0)
    assert np.allclose(mpjpe(pred, target, per_sample=True), 5.0)
    # A translation is removed by the Procrustes alignment.
    assert pa_mpjpe(pred, target) == pytest.approx(0.0, abs=1e-9)


def test_two_markers_offset_by_3_4_0() -> None:
    # Only two markers tracked (the rest NaN): error 5 at each, MPJPE 5.
    target = np.full((20, 3), np.nan)
    target[0] = [0.0, 0.0, 0.0]
    target[1] = [10.0, 0.0, 0.0]
    pred = np.zeros((20, 3))
    pred[:2] = target[:2] + [3.0, 4.0, 0.0]
    assert mpjpe(pred, target) == pytest.approx(5.0)
    # Two distinct points can always be matched exactly by a similarity transform.
    assert pa_mpjpe(pred, target) == pytest.approx(0.0, abs=1e-9)


def test_mean_over_markers_then_samples() -> None:
    target = np.zeros((2, 20, 3))
    pred = np.zeros((2, 20, 3))
    pred[0, :, 0] = 1.0  # sample 0: every marker 1 mm off
    target[1, 1:] = np.nan  # sample 1: a single valid marker, 3 mm off
    pred[1, 0] = [0.0, 3.0, 0.0]
    assert mpjpe(pred, target, per_sample=True) == pytest.approx([1.0, 3.0])
    assert mpjpe(pred, target) == pytest.approx(2.0)  # every sample weighs the same


def test_marker_errors_3_and_5_average_to_4() -> None:
    target = np.full((20, 3), np.nan)
    target[4] = [1.0, 2.0, 3.0]
    target[7] = [-1.0, 0.0, 2.0]
    pred = np.full((20, 3), 100.0)
    pred[4] = target[4] + [0.0, 3.0, 0.0]
    pred[7] = target[7] + [0.0, 3.0, 4.0]
    assert mpjpe(pred, target) == pytest.approx(4.0)


def test_n_mpjpe_hand_computed() -> None:
    # One valid marker: target (1, 0, 0), pred (1, 1, 0): s = 1/2, scaled pred (0.5, 0.5, 0).
    target = np.full((20, 3), np.nan)
    target[0] = [1.0, 0.0, 0.0]
    pred = np.zeros((20, 3))
    pred[0] = [1.0, 1.0, 0.0]
    assert n_mpjpe(pred, target) == pytest.approx(math.sqrt(0.5))
    assert mpjpe(pred, target) == pytest.approx(1.0)


def test_n_mpjpe_of_a_scaled_copy_is_zero() -> None:
    target = _poses(5, seed=1)
    for scale in (0.5, 1.0, 1.7):
        assert n_mpjpe(scale * target, target) == pytest.approx(0.0, abs=1e-9)
        assert mpjpe(scale * target, target) == pytest.approx(
            abs(scale - 1.0) * np.linalg.norm(target, axis=-1).mean(axis=-1).mean()
        )


def test_n_mpjpe_does_not_undo_rotation_or_translation() -> None:
    target = _poses(3, seed=2)
    assert n_mpjpe(target + [50.0, 0.0, 0.0], target) > 1.0
    rotated = target @ Rotation.from_euler("z", 30, degrees=True).as_matrix().T
    assert n_mpjpe(rotated, target) > 1.0


def test_zero_prediction_has_defined_errors() -> None:
    target = _poses(2, seed=3)
    pred = np.zeros_like(target)
    expected = np.linalg.norm(target, axis=-1).mean(axis=-1)
    assert n_mpjpe(pred, target, per_sample=True) == pytest.approx(expected)
    centred = np.linalg.norm(target - target.mean(axis=1, keepdims=True), axis=-1).mean(axis=-1)
    assert pa_mpjpe(pred, target, per_sample=True) == pytest.approx(centred)


# ---------------------------------------------------------------------------------------------------
# Procrustes alignment


@pytest.mark.parametrize("scale", [1.0, 0.8, 1.3])
def test_rigidly_moved_and_scaled_copy(scale: float) -> None:
    target = _poses(16, seed=4)
    rotations = Rotation.random(16, random_state=5).as_matrix()  # (16, 3, 3), det +1
    translation = np.random.default_rng(6).uniform(-500, 500, size=(16, 1, 3))
    moved = scale * np.einsum("nij,nmj->nmi", rotations, target) + translation
    assert pa_mpjpe(moved, target) == pytest.approx(0.0, abs=1e-8)
    assert np.allclose(pa_mpjpe(moved, target, per_sample=True), 0.0, atol=1e-8)
    known = np.linalg.norm(moved - target, axis=-1).mean(axis=-1)
    assert mpjpe(moved, target, per_sample=True) == pytest.approx(known)
    assert mpjpe(moved, target) == pytest.approx(known.mean())
    assert mpjpe(moved, target) > 10.0


def test_pure_translation_has_known_mpjpe_and_zero_pa_mpjpe() -> None:
    target = _poses(6, seed=7)
    moved = target + [0.0, 12.0, -5.0]  # |(0, 12, -5)| = 13
    assert mpjpe(moved, target) == pytest.approx(13.0)
    assert pa_mpjpe(moved, target) == pytest.approx(0.0, abs=1e-9)


def test_reflections_are_not_aligned() -> None:
    target = _poses(8, seed=8)
    mirrored = target * np.array([1.0, 1.0, -1.0])  # det = -1: not a rotation
    assert pa_mpjpe(mirrored, target) > 1.0


def test_pa_mpjpe_is_invariant_to_a_similarity_of_the_prediction() -> None:
    target = _poses(10, seed=9)
    pred = target + np.random.default_rng(10).normal(scale=15.0, size=target.shape)
    rotation = Rotation.random(random_state=11).as_matrix()
    moved = 2.5 * pred @ rotation.T + [100.0, -40.0, 7.0]
    assert pa_mpjpe(moved, target, per_sample=True) == pytest.approx(pa_mpjpe(pred, target, per_sample=True))


def test_matches_the_reference_implementation_without_nans() -> None:
    target = _poses(50, seed=12)
    pred = target + np.random.default_rng(13).normal(scale=20.0, size=target.shape)
    pred[::7] = pred[::7] * np.array([1.0, -1.0, 1.0])  # some samples need the reflection fix
    assert pa_mpjpe(pred, target, per_sample=True) == pytest.approx(_reference_pa_mpjpe(pred, target))
    assert n_mpjpe(pred, target, per_sample=True) == pytest.approx(_reference_n_mpjpe(pred, target))
    expected = np.linalg.norm(pred - target, axis=-1).mean()
    assert mpjpe(pred, target) == pytest.approx(expected)


def test_vectorised_equals_one_sample_at_a_time() -> None:
    target = _poses(6, seed=14)
    pred = target + np.random.default_rng(15).normal(scale=10.0, size=target.shape)
    target[2, 3] = np.nan
    pred[4, :5] = np.nan
    for metric in (mpjpe, pa_mpjpe, n_mpjpe):
        batched = metric(pred, target, per_sample=True)
        single = [metric(pred[i], target[i]) for i in range(6)]
        assert batched == pytest.approx(single)


# ---------------------------------------------------------------------------------------------------
# NaN handling


@pytest.mark.parametrize("metric", [mpjpe, pa_mpjpe, n_mpjpe])
def test_nan_markers_are_ignored(metric) -> None:
    target = _poses(4, seed=16)
    pred = target + np.random.default_rng(17).normal(scale=5.0, size=target.shape)
    # Markers 0 and 1 missing in the target (with a wild prediction there), missing in the
    # prediction, or with one NaN coordinate: all three must give the same errors.
    garbage = pred.copy()
    garbage[:, :2] = 1e6
    nan_target = target.copy()
    nan_target[:, :2] = np.nan
    nan_pred = pred.copy()
    nan_pred[:, :2] = np.nan
    partial_nan = target.copy()
    partial_nan[:, :2, 1] = np.nan  # one NaN coordinate invalidates the marker
    a = metric(garbage, nan_target, per_sample=True)
    b = metric(nan_pred, target, per_sample=True)
    c = metric(garbage, partial_nan, per_sample=True)
    assert np.all(np.isfinite(a))
    assert a == pytest.approx(b)
    assert a == pytest.approx(c)
    if metric is mpjpe:
        manual = np.linalg.norm(pred[:, 2:] - target[:, 2:], axis=-1).mean(axis=-1)
        assert a == pytest.approx(manual)


@pytest.mark.parametrize("metric", [mpjpe, pa_mpjpe, n_mpjpe])
def test_samples_without_valid_markers_are_excluded(metric) -> None:
    target = _poses(3, seed=18)
    pred = target + 1.0
    target[1] = np.nan
    per = metric(pred, target, per_sample=True)
    assert per.shape == (3,)
    assert np.isnan(per[1]) and np.all(np.isfinite(per[[0, 2]]))
    assert metric(pred, target) == pytest.approx(np.mean(per[[0, 2]]))
    everything_missing = np.full((2, 20, 3), np.nan)
    assert math.isnan(metric(pred[:2], everything_missing))


def test_single_pose_input() -> None:
    target = _poses(1, seed=19)[0]
    pred = target + [0.0, 0.0, 2.0]
    value = mpjpe(pred, target)
    assert isinstance(value, float) and value == pytest.approx(2.0)
    assert mpjpe(pred, target, per_sample=True).shape == (1,)
    assert isinstance(pa_mpjpe(pred.tolist(), target.tolist()), float)


# ---------------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    ("pred_shape", "target_shape"),
    [
        ((5, 19, 3), (5, 19, 3)),
        ((5, 20, 2), (5, 20, 2)),
        ((60,), (60,)),
        ((5, 60), (5, 60)),
        ((2, 5, 20, 3), (2, 5, 20, 3)),
        ((5, 20, 3), (4, 20, 3)),
        ((20, 3), (1, 20, 3)),
    ],
)
@pytest.mark.parametrize("metric", [mpjpe, pa_mpjpe, n_mpjpe, evaluate])
def test_shape_errors(metric, pred_shape, target_shape) -> None:
    with pytest.raises(ValueError, match=r"shape"):
        metric(np.zeros(pred_shape), np.zeros(target_shape))


def test_infinite_and_non_numeric_values_are_rejected() -> None:
    target = _poses(2)
    pred = target.copy()
    pred[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        mpjpe(pred, target)
    with pytest.raises(ValueError, match="numeric"):
        mpjpe(np.full((20, 3), "x"), target[0])


# ---------------------------------------------------------------------------------------------------
# evaluate


def test_evaluate_overall_and_per_recording() -> None:
    target = _poses(6, seed=20)
    pred = target.copy()
    pred[:3] += [3.0, 4.0, 0.0]  # s5-d2 samples: MPJPE 5
    pred[3:] += [0.0, 0.0, 1.0]  # s5-d1 samples: MPJPE 1
    target[5] = np.nan
    report = evaluate(pred, target, ["s5-d2"] * 3 + ["s5-d1"] * 3)
    assert list(report["per_recording"]) == ["s5-d1", "s5-d2"]  # release order
    overall = report["overall"]
    assert overall["num_samples"] == 6 and overall["num_excluded"] == 1
    assert overall["mpjpe"] == pytest.approx((3 * 5.0 + 2 * 1.0) / 5)
    assert overall["pa_mpjpe"] == pytest.approx(0.0, abs=1e-9)
    assert overall["n_mpjpe"] == pytest.approx(n_mpjpe(pred, target))
    s5d1 = report["per_recording"]["s5-d1"]
    assert s5d1 == {
        "mpjpe": pytest.approx(1.0),
        "pa_mpjpe": pytest.approx(0.0, abs=1e-9),
        "n_mpjpe": pytest.approx(n_mpjpe(pred[3:], target[3:])),
        "num_samples": 3,
        "num_excluded": 1,
        "num_unpredicted": 0,
    }
    assert report["per_recording"]["s5-d2"]["mpjpe"] == pytest.approx(5.0)


def test_evaluate_without_recordings() -> None:
    target = _poses(3)
    report = evaluate(target + 1.0, target)
    assert report["per_recording"] == {}
    assert report["overall"]["mpjpe"] == pytest.approx(math.sqrt(3.0))
    assert set(report["overall"]) == {
        "mpjpe",
        "pa_mpjpe",
        "n_mpjpe",
        "num_samples",
        "num_excluded",
        "num_unpredicted",
    }


def test_evaluate_counts_tracked_markers_the_prediction_left_out() -> None:
    """A NaN prediction at a tracked marker is counted where it happened; a marker nobody tracked is not.

    Leaving a marker out lowers the error (here: the only wrong marker), so the count is what tells a
    reader the score is not that of a complete prediction.
    """
    target = _poses(4, seed=21)
    pred = target.copy()
    pred[0, 7] += [0.0, 0.0, 30.0]  # the one wrong marker ...
    pred[0, 7] = np.nan  # ... left out: sample 0 then scores 0
    pred[2, 1:3] = np.nan  # two more left out, in the other recording
    target[3, 4] = np.nan  # not tracked: NaN in the prediction there is not "unpredicted"
    pred[3, 4] = np.nan
    report = evaluate(pred, target, ["s1-d1", "s1-d1", "s2-d1", "s2-d1"])
    assert report["overall"]["num_unpredicted"] == 3
    assert report["overall"]["mpjpe"] == pytest.approx(0.0, abs=1e-12)
    assert report["per_recording"]["s1-d1"]["num_unpredicted"] == 1
    assert report["per_recording"]["s2-d1"]["num_unpredicted"] == 2
    assert evaluate(target, target)["overall"]["num_unpredicted"] == 0
    single = evaluate(pred[2], target[2])  # one (20, 3) pose
    assert single["overall"]["num_unpredicted"] == 2


def test_evaluate_rejects_bad_recordings() -> None:
    target = _poses(3)
    with pytest.raises(ValueError, match="3 recording names"):
        evaluate(target, target, ["s5-d1"] * 2)
    with pytest.raises(ValueError, match="unknown recording"):
        evaluate(target, target, ["s5-d1", "s5-d3", "s1-d2"])
    report = evaluate(target, target, np.array(["s1-d1", "s1-d1", "s4-d1"]))
    assert list(report["per_recording"]) == ["s1-d1", "s4-d1"]
