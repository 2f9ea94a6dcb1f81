"""Metrics of one case's integer label maps: per class, the confusion matrix, and pixel accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from seglab.errors import SeglabError
from seglab.metrics.binary import (DEFAULT_NSD_TOLERANCE, NAN, check_spacing, check_tolerance,
                                   dice_from_counts, mask_metrics)


def _counted(ref: np.ndarray, roi: np.ndarray | None, ignore_label: int | None) -> np.ndarray:
    """The pixels taking part: inside `roi` and where the reference is not `ignore_label`."""
    counted = np.ones(ref.shape, dtype=bool)
    if roi is not None:
        roi = np.asarray(roi, dtype=bool)
        if roi.shape != ref.shape:
            raise SeglabError(f"roi shape {roi.shape} differs from reference shape {ref.shape}")
        counted &= roi
    if ignore_label is not None:
        counted &= ref != ignore_label
    return counted


def _check_pair(pred: np.ndarray, ref: np.ndarray) -> None:
    if pred.shape != ref.shape:
        raise SeglabError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")


def _confusion(pred: np.ndarray, ref: np.ndarray, counted: np.ndarray, n_classes: int) -> np.ndarray:
    p, r = pred[counted].astype(np.int64, copy=False), ref[counted].astype(np.int64, copy=False)
    for name, labels in (("reference", r), ("prediction", p)):
        bad = labels[(labels < 0) | (labels >= n_classes)]
        if bad.size:
            raise SeglabError(f"{name} label {int(bad[0])} is outside the {n_classes} classes 0..{n_classes - 1}")
    return np.bincount(r * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def confusion_matrix(
    pred: np.ndarray,
    ref: np.ndarray,
    n_classes: int,
    roi: np.ndarray | None = None,
    ignore_label: int | None = None,
) -> np.ndarray:
    """K x K pixel counts, rows = reference class, columns = predicted class (scikit-learn's layout).

    Pixels outside `roi` or where `ref == ignore_label` are not counted. A counted label outside
    0..K-1 is an error rather than a silently dropped pixel.
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    _check_pair(pred, ref)
    if n_classes < 1:
        raise SeglabError(f"n_classes {n_classes} must be at least 1")
    return _confusion(pred, ref, _counted(ref, roi, ignore_label), n_classes)


def foreground_dice(pred: np.ndarray, ref: np.ndarray, n_classes: int,
                    roi: np.ndarray | None = None, ignore_label: int | None = None) -> np.ndarray:
    """Dice of each foreground class 1..K-1 of integer label maps (1.0 where a class is absent
    from both), counting only the pixels inside `roi` where the reference is not `ignore_label`:
    the Dice that validation, post-processing and the export check average."""
    pred, ref = np.asarray(pred), np.asarray(ref)
    _check_pair(pred, ref)
    confusion = _confusion(pred, ref, _counted(ref, roi, ignore_label), n_classes)
    return dice_from_counts(np.diag(confusion), confusion.sum(axis=0), confusion.sum(axis=1))[1:]


def evaluate_case(
    pred: np.ndarray,
    ref: np.ndarray,
    class_names: Sequence[str],
    spacing: Sequence[float] | None = None,
    roi: np.ndarray | None = None,
    ignore_label: int | None = None,
    include_background: bool = False,
    nsd_tolerance: float = DEFAULT_NSD_TOLERANCE,
) -> dict[str, Any]:
    """Metrics of one case's integer label maps, per class (index = position in `class_names`).

    Pixels outside `roi` or where `ref == ignore_label` are excluded from everything: they are
    not counted for overlap metrics, accuracy or the confusion matrix, and they are background in
    both maps for the surface distances. Returns {"pixel_accuracy": correct / counted pixels over
    all classes, "classes": {name: binary_metrics dict}, "background": class_names[0],
    "class_names": all names, "confusion": K x K nested list (rows = reference),
    "nsd_tolerance": the tolerance of "nsd"}; "classes" holds the foreground classes, and the
    background too when `include_background`. "background" names the class that `summarize`
    leaves out of the foreground means.
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    _check_pair(pred, ref)
    if not class_names:
        raise SeglabError("class_names is empty: at least the background class must be named")
    counted = _counted(ref, roi, ignore_label)
    spacing_t = check_spacing(spacing, ref.ndim)
    tolerance = check_tolerance(nsd_tolerance)
    confusion = _confusion(pred, ref, counted, len(class_names))
    n_counted = int(confusion.sum())
    classes = {
        name: mask_metrics((pred == index) & counted, (ref == index) & counted, n_counted, spacing_t, tolerance)
        for index, name in enumerate(class_names)
        if index > 0 or include_background
    }
    return {
        "pixel_accuracy": int(np.trace(confusion)) / n_counted if n_counted else NAN,
        "classes": classes,
        "background": class_names[0],
        "class_names": list(class_names),
        "confusion": confusion.tolist(),
        "nsd_tolerance": tolerance,
    }
