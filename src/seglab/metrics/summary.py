"""Summaries of per-case metrics over a dataset: per class, case-wise means, macro and micro means.

NaN per-case values (undefined, see the empty-mask rules) are left out of every mean and counted
as `undefined` next to it, never silently averaged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from seglab.metrics.binary import COUNT_METRICS, METRICS, NAN, count_metrics

AGGREGATES: tuple[str, ...] = ("macro_fg", "macro_all", "micro_fg", "micro_all")


def _stats(values: Sequence[float]) -> dict[str, float | int]:
    """Mean and population std over the defined (non-NaN) values, with how many were (un)defined."""
    array = np.asarray(values, dtype=float)
    defined = array[~np.isnan(array)]
    return {
        "mean": float(defined.mean()) if defined.size else NAN,
        "std": float(defined.std()) if defined.size else NAN,
        "n": int(defined.size),
        "undefined": int(array.size - defined.size),
    }


def class_counts(confusion: np.ndarray, index: int) -> tuple[int, int, int, int]:
    """TP, FP, FN, TN of class `index` from a confusion matrix (rows = reference)."""
    tp = int(confusion[index, index])
    fp = int(confusion[:, index].sum()) - tp
    fn = int(confusion[index, :].sum()) - tp
    return tp, fp, fn, int(confusion.sum()) - tp - fp - fn


def _macro(per_case_confusions: list[np.ndarray], indices: range) -> dict[str, dict[str, float | int]]:
    """Mean over the classes of each class's mean over cases (each mean skips NaN)."""
    result = {}
    for metric in COUNT_METRICS:
        class_means = [
            _stats([count_metrics(*class_counts(m, c))[metric] for m in per_case_confusions])["mean"]
            for c in indices
        ]
        stats = _stats(class_means)
        result[metric] = {"value": stats["mean"], "n_classes": stats["n"], "undefined_classes": stats["undefined"]}
    return result


def _micro(pooled: np.ndarray, indices: range) -> dict[str, float]:
    """Metrics of the TP/FP/FN/TN counts summed over all cases and over the classes in `indices`."""
    totals = np.sum([class_counts(pooled, c) for c in indices], axis=0)
    return count_metrics(*(int(t) for t in totals))


def _confusion_summary(per_case: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The pooled confusion matrix, per-class pooled metrics and the macro/micro aggregates.

    Empty when a case lacks a confusion matrix or the cases name different classes.
    """
    names = per_case[0].get("class_names") if per_case else None
    if names is None or any(case.get("class_names") != names or "confusion" not in case for case in per_case):
        return {}
    matrices = [np.asarray(case["confusion"], dtype=np.int64) for case in per_case]
    pooled = np.sum(matrices, axis=0)
    everything, foreground = range(len(names)), range(1, len(names))
    return {
        "confusion": {"classes": list(names), "matrix": pooled.tolist()},
        "pooled_classes": {name: count_metrics(*class_counts(pooled, c)) for c, name in enumerate(names)},
        "aggregates": {
            "macro_fg": _macro(matrices, foreground),
            "macro_all": _macro(matrices, everything),
            "micro_fg": _micro(pooled, foreground),
            "micro_all": _micro(pooled, everything),
        },
    }


def summarize(per_case: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean/std over cases per class and metric, the case-wise foreground mean, and aggregates.

    `per_case` items are {"case": id, **evaluate_case(...)}. For each class and metric: mean and
    population std (ddof=0) of the defined values, "n" = cases where defined, "undefined" = NaN
    cases. "mean": per case, the mean over its foreground classes of the defined values (NaN when
    none is defined), then mean/std over cases with the same counts. All-undefined gives NaN.

    When the cases carry confusion matrices (evaluate_case's do): "confusion" (summed over cases),
    "pooled_classes" (each class's count metrics from the summed matrix) and "aggregates" of the
    count metrics: macro_fg / macro_all = mean over the foreground / all classes of each class's
    mean over cases; micro_fg / micro_all = from the counts pooled over all cases and over the
    foreground / all classes. See docs/metrics.md.
    """
    names = list(dict.fromkeys(name for case in per_case for name in case["classes"]))
    classes = {
        name: {
            metric: _stats([case["classes"][name][metric] for case in per_case if name in case["classes"]])
            for metric in METRICS
        }
        for name in names
    }
    macro: dict[str, list[float]] = {metric: [] for metric in METRICS}
    for case in per_case:
        foreground = [m for name, m in case["classes"].items() if name != case.get("background")]
        for metric in METRICS:
            defined = [m[metric] for m in foreground if not math.isnan(m[metric])]
            macro[metric].append(float(np.mean(defined)) if defined else NAN)
    tolerances = {case["nsd_tolerance"] for case in per_case if "nsd_tolerance" in case}
    return {
        "n_cases": len(per_case),
        "pixel_accuracy": _stats([case["pixel_accuracy"] for case in per_case]),
        "classes": classes,
        "mean": {metric: _stats(values) for metric, values in macro.items()},
        **({"nsd_tolerance": tolerances.pop()} if len(tolerances) == 1 else {}),
        **_confusion_summary(per_case),
        **_object_summary(per_case),
    }


OBJECT_SCORES = ("dsb_score", "precision", "recall", "f1", "pq", "sq", "rq", "class_accuracy")
OBJECT_COUNTS = ("tp", "fp", "fn", "n_pred", "n_ref", "same_class")


def _object_summary(per_case: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Instance cases (with "objects" from `seglab.metrics.instances.instance_scores`): each
    object score's mean over cases, the counts summed, and from the summed counts the F1 at IoU
    0.5 and the share of matches with the right class."""
    cases = [case["objects"] for case in per_case if "objects" in case]
    if not cases:
        return {}
    counts = {name: int(sum(case.get(name, 0) for case in cases)) for name in OBJECT_COUNTS}
    matched_twice = 2 * counts["tp"]
    pooled_f1 = (matched_twice / (matched_twice + counts["fp"] + counts["fn"])
                 if counts["n_pred"] or counts["n_ref"] else 1.0)
    pooled_class = counts["same_class"] / counts["tp"] if counts["tp"] else NAN
    return {"objects": {**{name: _stats([case.get(name, NAN) for case in cases])
                           for name in OBJECT_SCORES},
                        **counts, "pooled_f1": pooled_f1, "pooled_class_accuracy": pooled_class}}
