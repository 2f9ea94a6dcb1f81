"""Object-level scores of instance masks: predicted objects matched to reference objects by IoU.

An instance mask is an integer image or volume: 0 is background, each other value one object
(ids need not be consecutive). Written here rather than taken from a library because the field's
implementations each cover one score with its own conventions (the Kaggle kernel of the 2018 Data
Science Bowl, panopticapi for PQ, StarDist's `matching`); this module computes all of them from
one IoU matrix. COCO mask AP, which ranks objects by their scores, is pycocotools' own.

Rules, each checked by tests/test_metrics_instances.py:
- A predicted and a reference object match when their IoU is above the threshold (strictly, as
  the DSB kernel has it). For thresholds of 0.5 and above a match is one-to-one without an
  assignment solver: two objects cannot both cover more than half of a third.
- No objects on either side: every score is 1 (nothing to find, nothing found that is not
  there). Objects on one side only: 0.
- `ignore` (crowd regions, void): reference pixels there do not count, and a predicted object
  lying more than half inside it is dropped rather than counted as a false positive, as
  panopticapi treats void and crowd regions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DSB_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2))


def iou_matrix(pred: np.ndarray, ref: np.ndarray,
               ignore: np.ndarray | None = None) -> np.ndarray:
    """IoU (n_pred, n_ref) of every predicted object with every reference object, ordered by id,
    from one count of (pred, ref) id pairs; objects dropped by `ignore` are left out."""
    if pred.shape != ref.shape:
        raise ValueError(f"instance masks differ in shape: {pred.shape} and {ref.shape}")
    pred, ref = _kept_objects(pred, ref, ignore)
    pred_ids, pred_index = np.unique(pred, return_inverse=True)
    ref_ids, ref_index = np.unique(ref, return_inverse=True)
    pairs = np.bincount(pred_index.ravel() * len(ref_ids) + ref_index.ravel(),
                        minlength=len(pred_ids) * len(ref_ids)).reshape(len(pred_ids),
                                                                        len(ref_ids))
    pred_sizes, ref_sizes = pairs.sum(1, keepdims=True), pairs.sum(0, keepdims=True)
    union = pred_sizes + ref_sizes - pairs
    iou = pairs / np.maximum(union, 1)
    return iou[pred_ids != 0][:, ref_ids != 0]


def _kept_objects(pred: np.ndarray, ref: np.ndarray,
                  ignore: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """`ignore` applied: reference pixels there become background; predicted objects more than
    half inside it are removed, the pixels of the others there become background."""
    if ignore is None or not ignore.any():
        return pred, ref
    ignore = ignore.astype(bool)
    ids, sizes = np.unique(pred, return_counts=True)
    inside = np.bincount(np.searchsorted(ids, pred[ignore]), minlength=len(ids))
    dropped = ids[(inside > sizes / 2) & (ids != 0)]
    pred = np.where(np.isin(pred, dropped) | ignore, 0, pred)
    return pred, np.where(ignore, 0, ref)


def matches_at(iou: np.ndarray, threshold: float) -> int:
    """True positives at `threshold` (>= 0.5): pairs with IoU above it, one-to-one."""
    if threshold < 0.5:
        raise ValueError(f"IoU threshold {threshold} < 0.5: matching would need an assignment")
    return int((iou > threshold).sum())


def object_scores(iou: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Object-level precision, recall and F1 at an IoU threshold, with the counts."""
    n_pred, n_ref = iou.shape
    tp = matches_at(iou, threshold)
    fp, fn = n_pred - tp, n_ref - tp
    if n_pred == n_ref == 0:
        precision = recall = f1 = 1.0
    else:
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_ref if n_ref else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn)
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


def dsb_score(iou: np.ndarray, thresholds: tuple[float, ...] = DSB_THRESHOLDS) -> float:
    """The 2018 Data Science Bowl score of one image: the mean over IoU thresholds
    0.50:0.05:0.95 of TP / (TP + FP + FN) (Caicedo et al., Nature Methods 2019)."""
    n_pred, n_ref = iou.shape
    if n_pred == n_ref == 0:
        return 1.0
    scores = []
    for t in thresholds:
        tp = matches_at(iou, t)
        scores.append(tp / (n_pred + n_ref - tp))
    return float(np.mean(scores))


def panoptic_quality(iou: np.ndarray) -> dict[str, float]:
    """PQ = SQ x RQ of one class (Kirillov et al., "Panoptic Segmentation", CVPR 2019): SQ the
    mean IoU of the matches (IoU > 0.5), RQ = TP / (TP + FP/2 + FN/2)."""
    n_pred, n_ref = iou.shape
    if n_pred == n_ref == 0:
        return {"pq": 1.0, "sq": 1.0, "rq": 1.0}
    matched = iou[iou > 0.5]
    tp = len(matched)
    rq = tp / (tp + 0.5 * (n_pred - tp) + 0.5 * (n_ref - tp))
    sq = float(matched.mean()) if tp else 0.0
    return {"pq": sq * rq, "sq": sq, "rq": rq}


def instance_scores(pred: np.ndarray, ref: np.ndarray,
                    ignore: np.ndarray | None = None) -> dict[str, Any]:
    """Every object-level score of one case: DSB score, precision / recall / F1 at IoU 0.5, PQ,
    and the object counts."""
    iou = iou_matrix(pred, ref, ignore)
    return {"dsb_score": dsb_score(iou), **object_scores(iou), **panoptic_quality(iou),
            "n_pred": iou.shape[0], "n_ref": iou.shape[1]}
