"""Metrics of one binary prediction against its reference: overlap counts and surface distances.

Computed with numpy/scipy; MONAI, medpy and scikit-learn serve only as independent references in
the tests. NaN means "undefined for this case" (see the empty-mask rules in `binary_metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from seglab.errors import SeglabError

COUNT_METRICS: tuple[str, ...] = ("dice", "iou", "precision", "recall", "f1", "accuracy", "seg_accuracy")
SURFACE_METRICS: tuple[str, ...] = ("nsd", "hd95", "assd")
METRICS: tuple[str, ...] = COUNT_METRICS + SURFACE_METRICS
DEFAULT_NSD_TOLERANCE = 1.0
NAN = float("nan")


def check_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    """One positive finite spacing per axis (None = 1.0 each), or a SeglabError."""
    if spacing is None:
        return (1.0,) * ndim
    values = tuple(float(s) for s in spacing)
    if len(values) != ndim or not all(math.isfinite(s) and s > 0 for s in values):
        raise SeglabError(f"spacing {values} must have one positive value per axis of a {ndim}D array")
    return values


def check_tolerance(tolerance: float) -> float:
    tolerance = float(tolerance)
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise SeglabError(f"surface Dice tolerance {tolerance} must be a finite distance >= 0")
    return tolerance


def _border(mask: np.ndarray) -> np.ndarray:
    """The mask's voxels that have a face-neighbour outside the mask (outside the array counts).

    This is MONAI's `get_mask_edges` and medpy's surface: mask XOR scipy's `binary_erosion` with
    its default structure (connectivity 1). MONAI crops to the foreground box with a margin of one,
    zero-padding where the box leaves the array, which is exactly erosion with border_value=0.
    """
    return mask & ~ndimage.binary_erosion(mask)


def _surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances pred-border -> nearest ref-border voxel, and ref-border -> nearest pred-border voxel.

    Both masks must be non-empty. Work inside the bounding box of their union: every border
    voxel lies in it, so the crop changes neither the borders nor the exact distances.
    """
    box = ndimage.find_objects((pred | ref).astype(np.uint8))[0]
    border_pred, border_ref = _border(pred[box]), _border(ref[box])
    to_ref = ndimage.distance_transform_edt(~border_ref, sampling=spacing)[border_pred]
    to_pred = ndimage.distance_transform_edt(~border_pred, sampling=spacing)[border_ref]
    return to_ref, to_pred


def dice_from_counts(tp, n_pred, n_ref):
    """Dice = 2 TP / (|pred| + |ref|), 1.0 where both are empty; scalars or numpy arrays alike.
    The one Dice of seglab: validation, post-processing, export checks and classical fitting all
    score through it (or through `foreground_dice`, which counts and then calls it)."""
    total = np.asarray(n_pred, dtype=float) + np.asarray(n_ref, dtype=float)
    dice = np.where(total > 0, 2 * np.asarray(tp, dtype=float) / np.maximum(total, 1e-300), 1.0)
    return float(dice) if dice.ndim == 0 else dice


def count_metrics(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """The COUNT_METRICS of one class from its pixel counts, with the empty-mask rules applied.

    seg_accuracy = 1 - (FP + FN) / (TP + FN): the misclassified pixels of the class over the
    reference's area; it is unbounded below (FP alone can exceed the reference's area).
    """
    n_pred, n_ref, n = tp + fp, tp + fn, tp + fp + fn + tn
    accuracy = (tp + tn) / n if n else NAN
    if n_pred == 0 and n_ref == 0:
        return dict(dice=1.0, iou=1.0, precision=1.0, recall=1.0, f1=1.0, accuracy=accuracy, seg_accuracy=1.0)
    dice = dice_from_counts(tp, n_pred, n_ref)
    return dict(
        dice=dice,
        iou=tp / (tp + fp + fn),
        precision=tp / n_pred if n_pred else NAN,
        recall=tp / n_ref if n_ref else NAN,
        f1=dice,
        accuracy=accuracy,
        seg_accuracy=1 - (fp + fn) / n_ref if n_ref else NAN,
    )


def surface_metrics(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], tolerance: float
) -> dict[str, float]:
    """nsd (at `tolerance`), hd95 and assd of boolean masks, with the empty-mask rules applied."""
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    if n_pred == 0 and n_ref == 0:
        return dict(nsd=1.0, hd95=0.0, assd=0.0)
    if n_pred == 0 or n_ref == 0:
        return dict(nsd=0.0, hd95=NAN, assd=NAN)
    to_ref, to_pred = _surface_distances(pred, ref, spacing)
    within = np.count_nonzero(to_ref <= tolerance) + np.count_nonzero(to_pred <= tolerance)
    return dict(
        nsd=within / (to_ref.size + to_pred.size),
        hd95=max(float(np.percentile(to_ref, 95)), float(np.percentile(to_pred, 95))),
        assd=float(np.concatenate([to_ref, to_pred]).mean()),
    )


def mask_metrics(
    pred: np.ndarray, ref: np.ndarray, n_counted: int, spacing: tuple[float, ...], tolerance: float
) -> dict[str, float]:
    """All METRICS of boolean masks `pred`, `ref`, with `n_counted` pixels taking part in the counts."""
    tp = int(np.count_nonzero(pred & ref))
    fp, fn = int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(ref)) - tp
    counts = count_metrics(tp, fp, fn, n_counted - tp - fp - fn)
    return {**counts, **surface_metrics(pred, ref, spacing, tolerance)}


def binary_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float] | None = None,
    nsd_tolerance: float = DEFAULT_NSD_TOLERANCE,
) -> dict[str, float]:
    """Overlap and surface metrics of one binary prediction against its reference (2D or 3D).

    Returns dice, iou, precision, recall, f1 (equal to dice for binary masks), accuracy
    ((TP+TN)/N), seg_accuracy (1 - (FP+FN)/(TP+FN)), nsd, hd95 and assd. Surface metrics are in the
    units of `spacing` (one value per axis, None = 1.0 each), measured between border voxels (see
    `_border`): nsd = fraction of both borders' voxels within `nsd_tolerance` of the other border;
    hd95 = max(95th percentile of pred->ref, 95th percentile of ref->pred) with linear
    interpolation; assd = mean of both directed distance sets together.

    Empty masks (NaN = undefined, never 0 in disguise):
      both empty:            dice = iou = f1 = precision = recall = seg_accuracy = nsd = 1.0;
                             hd95 = assd = 0.0
      ref empty, pred not:   dice = iou = f1 = precision = nsd = 0.0; recall = seg_accuracy = NaN;
                             hd95 = assd = NaN
      pred empty, ref not:   dice = iou = f1 = recall = nsd = 0.0; seg_accuracy = 1 - FN/FN = 0.0;
                             precision = NaN; hd95 = assd = NaN
    accuracy is computed normally in every case.
    """
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise SeglabError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    spacing_t = check_spacing(spacing, pred.ndim)
    return mask_metrics(pred, ref, pred.size, spacing_t, check_tolerance(nsd_tolerance))
