"""Area under the ROC curve of a foreground probability map, per case and over a dataset.

Retinal-vessel benchmarks (DRIVE, STARE, CHASE_DB1) score the probability map inside the field
of view, so every function takes an optional ROI mask.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from scipy.stats import rankdata

from seglab.errors import SeglabError
from seglab.metrics.binary import NAN


def _scores_and_labels(prob: Any, ref: Any, roi: Any | None) -> tuple[np.ndarray, np.ndarray]:
    prob, ref = np.asarray(prob, dtype=float), np.asarray(ref)
    if prob.shape != ref.shape:
        raise SeglabError(f"probability map shape {prob.shape} differs from reference shape {ref.shape}")
    counted = np.ones(ref.shape, dtype=bool)
    if roi is not None:
        roi = np.asarray(roi, dtype=bool)
        if roi.shape != ref.shape:
            raise SeglabError(f"roi shape {roi.shape} differs from reference shape {ref.shape}")
        counted = roi
    scores = prob[counted]
    if not np.isfinite(scores).all():
        raise SeglabError("probability map has NaN or infinite values inside the ROI")
    return scores, ref[counted].astype(bool)


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """The Mann-Whitney U statistic over n_pos * n_neg, with tied scores given their mean rank.

    This equals the trapezoidal area under the ROC curve that scikit-learn's `roc_auc_score`
    computes, ties included (a tie between a positive and a negative counts one half).
    """
    n_pos = int(np.count_nonzero(labels))
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return NAN
    rank_sum = float(rankdata(scores)[labels].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def roc_auc(prob: Any, ref: Any, roi: Any | None = None) -> float:
    """ROC AUC of foreground probabilities `prob` against the binary reference `ref`, inside `roi`.

    NaN (undefined) when the counted pixels hold only one class: an empty reference, or one that
    fills the ROI, has no ROC curve (scikit-learn raises there).
    """
    return _auc(*_scores_and_labels(prob, ref, roi))


def roc_auc_cases(cases: Iterable[tuple[Any, Any, Any | None]]) -> dict[str, Any]:
    """ROC AUC of (prob, ref, roi) cases: each case's, their mean, and the pooled dataset AUC.

    Returns {"per_case": [auc, ...], "mean": mean over the defined cases, "n": cases defined,
    "undefined": cases NaN, "pooled": the AUC of all cases' counted pixels ranked together}.
    The pooled AUC is what vessel benchmarks usually report; it is not the mean of the cases'.
    """
    per_case, all_scores, all_labels = [], [], []
    for prob, ref, roi in cases:
        scores, labels = _scores_and_labels(prob, ref, roi)
        per_case.append(_auc(scores, labels))
        all_scores.append(scores)
        all_labels.append(labels)
    if not per_case:
        raise SeglabError("roc_auc_cases got no cases")
    values = np.asarray(per_case)
    defined = values[~np.isnan(values)]
    return {
        "per_case": per_case,
        "mean": float(defined.mean()) if defined.size else NAN,
        "n": int(defined.size),
        "undefined": int(values.size - defined.size),
        "pooled": _auc(np.concatenate(all_scores), np.concatenate(all_labels)),
    }


def roc_auc_classes(cases: Iterable[tuple[dict[int, Any], Any, Any | None]],
                    classes: list[str], ignore_label: int | None = None) -> dict[str, Any]:
    """ROC AUC per foreground class, one class against the rest, over (scores, ref, roi) cases:
    `scores` maps a class index to that class's probability (or any score) map, and `ref` is the
    integer label map; pixels outside `roi` or labelled `ignore_label` are not counted.

    Returns {class name: roc_auc_cases(...) of that class} for the classes every case has a map
    for.
    """
    cases = list(cases)
    if not cases:
        raise SeglabError("roc_auc_classes got no cases")
    indices = sorted(set.intersection(*(set(scores) for scores, _, _ in cases)))
    result: dict[str, Any] = {}
    for k in indices:
        triples = []
        for scores, ref, roi in cases:
            ref = np.asarray(ref)
            counted = np.ones(ref.shape, bool) if roi is None else np.asarray(roi, dtype=bool)
            if ignore_label is not None:
                counted = counted & (ref != ignore_label)
            triples.append((scores[k], ref == k, counted))
        result[classes[k]] = roc_auc_cases(triples)
    return result


def add_roc_auc(per_case: list[dict[str, Any]], auc: dict[str, Any]) -> dict[str, Any]:
    """`roc_auc_classes`'s result laid out as the evaluation tables take it: each case's AUC
    written into `per_case` (evaluate_case's entries, same order) as the class's "roc_auc", and
    returned per class without the per-case list, for the summary's "roc_auc" entry."""
    for name, values in auc.items():
        for case, value in zip(per_case, values["per_case"]):
            case["classes"][name]["roc_auc"] = value
    return {name: {k: v for k, v in values.items() if k != "per_case"}
            for name, values in auc.items()}
