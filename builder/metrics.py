"""3D pose error metrics of the mini-RAT7M benchmark: MPJPE, PA-MPJPE and N-MPJPE, in millimetres.

The definitions follow the DANNCE-family evaluation code (adapted from VideoPose3D's ``loss.py``):

- **MPJPE**: mean Euclidean distance between predicted and true markers.
- **PA-MPJPE** ("Protocol #2"): MPJPE after the similarity transform (proper rotation, translation and
  isotropic scale) that best maps the prediction onto the target in the least-squares sense
  (Umeyama / Kabsch, solved per sample with an SVD; reflections are excluded).
- **N-MPJPE**: MPJPE after scaling the prediction by the least-squares optimal factor
  ``s = <pred, target> / <pred, pred>`` (Rhodin et al. 2018), with no rotation and no translation.

Missing markers (the release keeps NaN where motion capture lost a marker) are handled per sample: a
marker takes part only when all three coordinates are finite in both the target and the prediction;
the alignments are fitted on those markers only and the sample's error is the mean over them. Samples
without any such marker have no error (NaN in the per-sample output), are left out of the mean and
are counted by `evaluate`. Every sample weighs the same in the mean (for complete data this equals
the plain mean over all markers of all samples that the reference code computes).

Pure numpy, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .manifest import NUM_MARKERS, RECORDINGS

#: Names of the three metrics, in the order `evaluate` reports them.
METRIC_NAMES: tuple[str, ...] = ("mpjpe", "pa_mpjpe", "n_mpjpe")


def mpjpe(pred: Any, target: Any, *, per_sample: bool = False) -> float | np.ndarray:
    """Mean per-joint position error (no alignment).

    Args:
        pred: predicted 3D markers, shape (N, 20, 3) or (20, 3), in mm. NaN marks a marker with no
            prediction (ignored).
        target: true 3D markers, same shape and unit; NaN where the marker was not tracked (ignored).
        per_sample: return the (N,) array of per-sample errors instead of their mean.

    Returns:
        The mean over samples of each sample's mean marker distance, in mm, as a float (NaN when no
        sample has a valid marker); or, with ``per_sample=True``, an (N,) float64 array in mm with NaN
        for samples without any valid marker ((1,) for a single (20, 3) pose).

    Raises:
        ValueError: the shapes differ or are not (N, 20, 3) / (20, 3), or a value is infinite.
    """
    p, t, valid = _prepare(pred, target)
    return _reduce(_marker_error(p, t, valid), valid, per_sample)


def pa_mpjpe(pred: Any, target: Any, *, per_sample: bool = False) -> float | np.ndarray:
    """MPJPE after Procrustes alignment (rotation, translation and isotropic scale) of pred to target.

    For each sample, the similarity transform ``x ↦ s·x·R + c`` (R a proper rotation, det R = +1;
    s ≥ 0 a scalar; c a translation, all in the row-vector convention) minimising the summed squared
    distance to the target over the valid markers is found in closed form (Umeyama 1991: SVD of the
    3×3 cross-covariance, with the sign of the last singular direction flipped when needed to exclude
    reflections), applied to the prediction, and MPJPE is measured. A rigidly moved and uniformly
    scaled copy of the target therefore scores 0. When every valid predicted marker coincides
    (no spread) the scale is 0 and the aligned prediction is the target's centroid.

    Args:
        pred: predicted 3D markers, shape (N, 20, 3) or (20, 3), in mm; NaN markers are ignored.
        target: true 3D markers, same shape and unit; NaN markers are ignored.
        per_sample: return the (N,) array of per-sample errors instead of their mean.

    Returns:
        Mean error in mm as a float (NaN when no sample has a valid marker), or with
        ``per_sample=True`` an (N,) float64 array in mm, NaN for samples without any valid marker.

    Raises:
        ValueError: the shapes differ or are not (N, 20, 3) / (20, 3), or a value is infinite.
    """
    p, t, valid = _prepare(pred, target)
    return _reduce(_marker_error(procrustes_align(p, t, valid), t, valid), valid, per_sample)


def n_mpjpe(pred: Any, target: Any, *, per_sample: bool = False) -> float | np.ndarray:
    """MPJPE after scaling the prediction by the optimal factor (scale only, as in Rhodin et al.).

    For each sample, ``s = Σ <pred_j, target_j> / Σ <pred_j, pred_j>`` over the valid markers j (the
    least-squares optimal isotropic scale about the world origin; no rotation, no translation), and
    MPJPE of ``s · pred`` is measured. A uniformly scaled copy of the target (about the origin)
    therefore scores 0. When every valid predicted marker is at the origin, s is 0.

    Args:
        pred: predicted 3D markers, shape (N, 20, 3) or (20, 3), in mm; NaN markers are ignored.
        target: true 3D markers, same shape and unit; NaN markers are ignored.
        per_sample: return the (N,) array of per-sample errors instead of their mean.

    Returns:
        Mean error in mm as a float (NaN when no sample has a valid marker), or with
        ``per_sample=True`` an (N,) float64 array in mm, NaN for samples without any valid marker.

    Raises:
        ValueError: the shapes differ or are not (N, 20, 3) / (20, 3), or a value is infinite.
    """
    p, t, valid = _prepare(pred, target)
    return _reduce(_marker_error(scale_align(p, t, valid), t, valid), valid, per_sample)


def evaluate(pred: Any, target: Any, recordings: Sequence[str] | np.ndarray | None = None) -> dict[str, Any]:
    """All three metrics, overall and per recording.

    Args:
        pred: predicted 3D markers, shape (N, 20, 3) or (20, 3), in mm.
        target: true 3D markers, same shape, in mm; NaN markers are ignored (see the module doc).
        recordings: optional length-N sequence giving each sample's recording (``"s5-d1"`` …),
            e.g. ``MiniAnnotation.recording[test_indices]``.

    Returns:
        ``{"overall": summary, "per_recording": {recording: summary, ...}}`` where each ``summary`` is
        ``{"mpjpe": float, "pa_mpjpe": float, "n_mpjpe": float, "num_samples": int,
        "num_excluded": int, "num_unpredicted": int}``: errors in mm (NaN if every sample was
        excluded), ``num_samples`` the samples in the group, ``num_excluded`` those without any valid
        marker (left out of the means) and ``num_unpredicted`` the markers the target tracked but the
        prediction left NaN (left out of the errors: a prediction that leaves hard markers out scores
        better than a complete one, so a comparable score needs ``num_unpredicted == 0``).
        ``per_recording`` lists the recordings present in `RECORDINGS` order and is empty
        when ``recordings`` is None.

    Raises:
        ValueError: bad shapes (see `mpjpe`), ``recordings`` of the wrong length or naming an
            unknown recording.
    """
    pred, target = _as_poses(pred, "pred"), _as_poses(target, "target")  # once: _prepare takes them as they are
    p, t, valid = _prepare(pred, target)
    num = p.shape[0]
    # _prepare zeroed every NaN; the markers only the prediction lacks are counted from the inputs.
    pred_missing = np.isnan(pred.reshape(num, NUM_MARKERS, 3)).any(axis=-1)
    target_missing = np.isnan(target.reshape(num, NUM_MARKERS, 3)).any(axis=-1)
    unpredicted = pred_missing & ~target_missing
    errors = {
        "mpjpe": _marker_error(p, t, valid),
        "pa_mpjpe": _marker_error(procrustes_align(p, t, valid), t, valid),
        "n_mpjpe": _marker_error(scale_align(p, t, valid), t, valid),
    }
    per_sample = {name: _reduce(error, valid, True) for name, error in errors.items()}
    has_marker = valid.any(axis=1)

    def summary(rows: np.ndarray) -> dict[str, Any]:
        kept = rows & has_marker
        result: dict[str, Any] = {
            name: float(values[kept].mean()) if kept.any() else float("nan") for name, values in per_sample.items()
        }
        result["num_samples"] = int(rows.sum())
        result["num_excluded"] = int(rows.sum() - kept.sum())
        result["num_unpredicted"] = int(unpredicted[rows].sum())
        return result

    report: dict[str, Any] = {"overall": summary(np.ones(num, dtype=bool)), "per_recording": {}}
    if recordings is None:
        return report
    labels = np.asarray(recordings)
    if labels.ndim != 1 or labels.shape[0] != num:
        raise ValueError(
            f"recordings must be a sequence of {num} recording names (one per sample), got shape {labels.shape}."
        )
    labels = labels.astype(str)
    unknown = sorted(set(labels.tolist()) - set(RECORDINGS))
    if unknown:
        raise ValueError(
            f"recordings names unknown recording(s) {unknown[:5]}; valid recordings: {', '.join(RECORDINGS)}."
        )
    for recording in RECORDINGS:
        rows = labels == recording
        if rows.any():
            report["per_recording"][recording] = summary(rows)
    return report


def procrustes_align(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Similarity-transform each predicted pose onto its target (Umeyama, no reflection).

    Args:
        pred: (N, M, 3) float64 predictions in mm with invalid markers set to 0 (any finite value).
        target: (N, M, 3) float64 targets in mm with invalid markers set to 0.
        valid: (N, M) bool, the markers the fit uses.

    Returns:
        (N, M, 3) float64: ``s·pred·R + c`` per sample (values at invalid markers are meaningless).
    """
    w = valid[..., None].astype(np.float64)
    count = np.maximum(w.sum(axis=1, keepdims=True), 1.0)  # (N, 1, 1)
    mu_p = (w * pred).sum(axis=1, keepdims=True) / count
    mu_t = (w * target).sum(axis=1, keepdims=True) / count
    p0 = (pred - mu_p) * w
    t0 = (target - mu_t) * w
    # Maximise tr(R · T0ᵀP0): with T0ᵀP0 = U S Vᵀ the optimum is R = V D Uᵀ, D fixing det(R) = +1.
    u, s, vt = np.linalg.svd(np.matmul(t0.transpose(0, 2, 1), p0))
    v = vt.transpose(0, 2, 1)
    sign = np.where(np.linalg.det(np.matmul(v, u.transpose(0, 2, 1))) < 0, -1.0, 1.0)
    d = np.ones_like(s)
    d[:, -1] = sign
    rotation = np.matmul(v * d[:, None, :], u.transpose(0, 2, 1))
    spread = (p0**2).sum(axis=(1, 2))
    trace = (s * d).sum(axis=1)
    scale = np.divide(trace, spread, out=np.zeros_like(trace), where=spread > 0)[:, None, None]
    return scale * np.matmul(pred - mu_p, rotation) + mu_t


def scale_align(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Scale each predicted pose by ``<pred, target> / <pred, pred>`` over its valid markers.

    Args:
        pred: (N, M, 3) float64 predictions in mm with invalid markers set to 0.
        target: (N, M, 3) float64 targets in mm with invalid markers set to 0.
        valid: (N, M) bool.

    Returns:
        (N, M, 3) float64 scaled predictions (scale 0 when the valid predictions are all at the origin).
    """
    w = valid[..., None]
    numerator = np.where(w, pred * target, 0.0).sum(axis=(1, 2))
    denominator = np.where(w, pred * pred, 0.0).sum(axis=(1, 2))
    scale = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)
    return scale[:, None, None] * pred


def _prepare(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate shapes and return (pred, target) as (N, 20, 3) float64 with NaNs zeroed, and valid (N, 20)."""
    p = _as_poses(pred, "pred")
    t = _as_poses(target, "target")
    if p.shape != t.shape:
        raise ValueError(
            f"pred and target must have the same shape, got pred {p.shape} and target {t.shape} "
            f"(expected (N, {NUM_MARKERS}, 3) or ({NUM_MARKERS}, 3), in mm)."
        )
    if p.ndim == 2:
        p, t = p[None], t[None]
    for name, array in (("pred", p), ("target", t)):
        if np.isinf(array).any():
            raise ValueError(f"{name} holds infinite values; use NaN to mark a missing marker.")
    valid = ~(np.isnan(p).any(axis=-1) | np.isnan(t).any(axis=-1))
    mask = valid[..., None]
    return np.where(mask, p, 0.0), np.where(mask, t, 0.0), valid


def _as_poses(value: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a numeric array of 3D markers in mm: {error}") from error
    if array.ndim not in (2, 3) or array.shape[-2:] != (NUM_MARKERS, 3):
        raise ValueError(
            f"{name} must have shape (N, {NUM_MARKERS}, 3) or ({NUM_MARKERS}, 3) (samples, markers, "
            f"x/y/z in mm), got {array.shape}."
        )
    return array


def _marker_error(aligned: np.ndarray, target: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(N, M) Euclidean distances in mm, 0 at invalid markers."""
    return np.where(valid, np.linalg.norm(aligned - target, axis=-1), 0.0)


def _reduce(error: np.ndarray, valid: np.ndarray, per_sample: bool) -> float | np.ndarray:
    count = valid.sum(axis=1)
    per = np.full(error.shape[0], np.nan)
    np.divide(error.sum(axis=1), count, out=per, where=count > 0)
    if per_sample:
        return per
    kept = per[count > 0]
    return float(kept.mean()) if kept.size else float("nan")
