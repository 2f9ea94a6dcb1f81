"""Object-level scores of instance masks: predicted objects matched to reference objects by IoU.

An instance mask is an integer image or volume: 0 is background, each other value one object
(ids need not be consecutive). Written here rather than taken from a library because the field's
implementations each cover one score with its own conventions (the Kaggle kernel of the 2018 Data
Science Bowl, panopticapi for PQ, StarDist's `matching`); this module computes all of them from
one IoU matrix. COCO mask AP, which ranks scored objects that may overlap, works on mask stacks
(`Objects`) instead.

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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DSB_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2))


def iou_matrix(pred: np.ndarray, ref: np.ndarray,
               ignore: np.ndarray | None = None) -> np.ndarray:
    """IoU (n_pred, n_ref) of every predicted object with every reference object, ordered by id,
    from one count of (pred, ref) id pairs; objects dropped by `ignore` are left out."""
    return iou_with_ids(pred, ref, ignore)[0]


def iou_with_ids(pred: np.ndarray, ref: np.ndarray, ignore: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`iou_matrix` with the object id of each row and each column."""
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
    rows, columns = pred_ids != 0, ref_ids != 0
    return iou[rows][:, columns], pred_ids[rows], ref_ids[columns]


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


def instance_scores(pred: np.ndarray, ref: np.ndarray, ignore: np.ndarray | None = None,
                    pred_classes: dict[int, int] | None = None,
                    ref_classes: dict[int, int] | None = None) -> dict[str, Any]:
    """Every object-level score of one case: DSB score, precision / recall / F1 at IoU 0.5, PQ,
    the object counts, and with both class maps, how many matches (IoU > 0.5) have the
    reference's class (`same_class`, and `class_accuracy` = same_class / tp, NaN without a
    match). Matching itself ignores classes."""
    iou, pred_ids, ref_ids = iou_with_ids(pred, ref, ignore)
    scores = {"dsb_score": dsb_score(iou), **object_scores(iou), **panoptic_quality(iou),
              "n_pred": iou.shape[0], "n_ref": iou.shape[1]}
    if pred_classes is not None and ref_classes is not None:
        rows, columns = np.nonzero(iou > 0.5)
        same = sum(pred_classes[int(pred_ids[r])] == ref_classes[int(ref_ids[c])]
                   for r, c in zip(rows, columns))
        scores["same_class"] = int(same)
        scores["class_accuracy"] = same / len(rows) if len(rows) else float("nan")
    return scores


# COCO mask AP. Written here, rather than taken from pycocotools, because pycocotools scores 2D
# RLE masks only, and seglab's objects are also 3D; tests/test_metrics_instances.py checks it
# against pycocotools' COCOeval (segm, all areas, 100 detections) to 1e-6 on random sets.
AP_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
MAX_DETECTIONS = 100


@dataclass
class Objects:
    """The objects of one image or volume for AP: `masks` (n, *spatial) boolean, `classes` (n,);
    predictions carry `scores` (n,), references may mark `crowd` (n,) regions."""

    masks: np.ndarray
    classes: np.ndarray
    scores: np.ndarray | None = None
    crowd: np.ndarray | None = None


def mask_iou(pred: np.ndarray, ref: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU (n_pred, n_ref) of boolean masks; against a crowd region, COCO's intersection over
    the predicted area."""
    pixels = int(np.prod(pred.shape[1:]))
    p = pred.reshape(len(pred), pixels).astype(np.float32)
    g = ref.reshape(len(ref), pixels).astype(np.float32)
    inter = p @ g.T
    area_p, area_g = p.sum(1)[:, None], g.sum(1)[None]
    union = np.where(crowd[None], area_p, area_p + area_g - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0).astype(np.float64)


def _coco_matches(iou: np.ndarray, crowd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval's greedy matching of detections (rows, by falling score) to references (columns,
    crowds last) at each AP threshold: (matched, matched-to-a-crowd), each (T, n_pred)."""
    matched = np.zeros((len(AP_THRESHOLDS), iou.shape[0]), bool)
    on_crowd = np.zeros_like(matched)
    for t, threshold in enumerate(AP_THRESHOLDS):
        taken = np.zeros(iou.shape[1], bool)
        for d in range(iou.shape[0]):
            best, m = min(threshold, 1 - 1e-10), -1
            for g in range(iou.shape[1]):
                if taken[g] and not crowd[g]:
                    continue
                if m > -1 and not crowd[m] and crowd[g]:
                    break
                if iou[d, g] < best:
                    continue
                best, m = iou[d, g], g
            if m > -1:
                matched[t, d], on_crowd[t, d], taken[m] = True, crowd[m], True
    return matched, on_crowd


def average_precision(predictions: Sequence[Objects], references: Sequence[Objects]
                      ) -> dict[str, Any]:
    """COCO mask AP over IoU 0.50:0.05:0.95 (101 recall points, the 100 best-scored detections
    per image and class), AP50, AP75, and AP per class; classes without reference objects are
    left out, as COCOeval leaves them."""
    classes = sorted({int(c) for ref in references for c in ref.classes})
    precision = np.full((len(AP_THRESHOLDS), len(RECALL_POINTS), len(classes)), -1.0)
    for k, c in enumerate(classes):
        scores, matched, ignored, n_ref = [], [], [], 0
        for pred, ref in zip(predictions, references):
            d = np.flatnonzero(pred.classes == c)
            d = d[np.argsort(-pred.scores[d], kind="mergesort")][:MAX_DETECTIONS]
            crowd_all = (np.asarray(ref.crowd, bool) if ref.crowd is not None
                         else np.zeros(len(ref.classes), bool))  # an empty list reads as float
            g = np.flatnonzero(ref.classes == c)
            g = g[np.argsort(crowd_all[g], kind="mergesort")]
            crowd = crowd_all[g]
            hit, on_crowd = _coco_matches(mask_iou(pred.masks[d], ref.masks[g], crowd), crowd)
            scores.append(pred.scores[d])
            matched.append(hit)
            ignored.append(on_crowd)
            n_ref += int((~crowd).sum())
        if n_ref:
            precision[:, :, k] = _precision_at_recalls(np.concatenate(scores),
                                                       np.concatenate(matched, axis=1),
                                                       np.concatenate(ignored, axis=1), n_ref)
    return {"ap": _mean_valid(precision), "ap50": _mean_valid(precision[0]),
            "ap75": _mean_valid(precision[5]),
            "per_class": {c: _mean_valid(precision[:, :, k]) for k, c in enumerate(classes)}}


def _precision_at_recalls(scores: np.ndarray, matched: np.ndarray, ignored: np.ndarray,
                          n_ref: int) -> np.ndarray:
    """(T, 101) interpolated precision at the recall points, as COCOeval.accumulate."""
    order = np.argsort(-scores, kind="mergesort")
    matched, ignored = matched[:, order], ignored[:, order]
    out = np.zeros((len(AP_THRESHOLDS), len(RECALL_POINTS)))
    for t in range(len(AP_THRESHOLDS)):
        tp = np.cumsum(matched[t] & ~ignored[t]).astype(float)
        fp = np.cumsum(~matched[t] & ~ignored[t]).astype(float)
        if not len(tp):
            continue
        recall = tp / n_ref
        precision = np.maximum.accumulate((tp / (fp + tp + np.spacing(1)))[::-1])[::-1]
        index = np.searchsorted(recall, RECALL_POINTS, side="left")
        inside = index < len(tp)
        out[t, inside] = precision[index[inside]]
    return out


def _mean_valid(precision: np.ndarray) -> float:
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else float("nan")
