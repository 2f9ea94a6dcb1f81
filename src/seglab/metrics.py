"""Segmentation metrics (overlap and surface distance), their summaries over cases, and tables.

Computed with numpy/scipy; MONAI serves only as an independent reference in the tests, and the
surface conventions (border voxels, HD95, ASSD) are chosen to agree with MONAI 1.x to 1e-6.
NaN means "undefined for this case" (see the empty-mask rules in `binary_metrics`); summaries
leave NaNs out of means and count them as `undefined`. See docs/metrics.md.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from seglab.errors import SeglabError

METRICS: tuple[str, ...] = ("dice", "iou", "precision", "recall", "f1", "accuracy", "hd95", "assd")
NAN = float("nan")


def _check_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    values = tuple(float(s) for s in spacing)
    if len(values) != ndim or not all(math.isfinite(s) and s > 0 for s in values):
        raise SeglabError(f"spacing {values} must have one positive value per axis of a {ndim}D array")
    return values


def _border(mask: np.ndarray) -> np.ndarray:
    """The mask's voxels that have a face-neighbour outside the mask (outside the array counts).

    This is MONAI's `get_mask_edges`: mask XOR scipy's `binary_erosion` with its default structure
    (connectivity 1). MONAI crops to the foreground box with a margin of one, zero-padding where the
    box leaves the array, which is exactly erosion with scipy's default border_value=0.
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


def _metrics(pred: np.ndarray, ref: np.ndarray, n_counted: int, spacing: tuple[float, ...]) -> dict[str, float]:
    """All metrics of boolean masks `pred`, `ref`, with `n_counted` pixels taking part in the counts."""
    tp = int(np.count_nonzero(pred & ref))
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    fp, fn = n_pred - tp, n_ref - tp
    tn = n_counted - tp - fp - fn
    if n_pred == 0 and n_ref == 0:
        overlap = dict(dice=1.0, iou=1.0, precision=1.0, recall=1.0, f1=1.0)
        hd95 = assd = 0.0
    else:
        dice = 2 * tp / (2 * tp + fp + fn)
        overlap = dict(
            dice=dice,
            iou=tp / (tp + fp + fn),
            precision=tp / n_pred if n_pred else NAN,
            recall=tp / n_ref if n_ref else NAN,
            f1=dice,
        )
        hd95 = assd = NAN
        if n_pred and n_ref:
            to_ref, to_pred = _surface_distances(pred, ref, spacing)
            hd95 = max(float(np.percentile(to_ref, 95)), float(np.percentile(to_pred, 95)))
            assd = float(np.concatenate([to_ref, to_pred]).mean())
    accuracy = (tp + tn) / n_counted if n_counted else NAN
    return {**overlap, "accuracy": accuracy, "hd95": hd95, "assd": assd}


def binary_metrics(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None
) -> dict[str, float]:
    """Overlap and surface metrics of one binary prediction against its reference (2D or 3D).

    Returns dice, iou, precision, recall, f1 (equal to dice for binary masks), accuracy
    ((TP+TN)/N), hd95 and assd. Surface metrics are in the units of `spacing` (one value per
    axis, None = 1.0 each), measured between border voxels (see `_border`):
    hd95 = max(95th percentile of pred->ref, 95th percentile of ref->pred) with linear
    interpolation; assd = mean of both directed distance sets together.

    Empty masks (NaN = undefined, never 0 in disguise):
      both empty:            dice = iou = f1 = precision = recall = 1.0; hd95 = assd = 0.0
      ref empty, pred not:   dice = iou = f1 = precision = 0.0; recall = NaN; hd95 = assd = NaN
      pred empty, ref not:   dice = iou = f1 = recall = 0.0; precision = NaN; hd95 = assd = NaN
    accuracy is computed normally in every case.
    """
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise SeglabError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    return _metrics(pred, ref, pred.size, _check_spacing(spacing, pred.ndim))


def evaluate_case(
    pred: np.ndarray,
    ref: np.ndarray,
    class_names: Sequence[str],
    spacing: Sequence[float] | None = None,
    roi: np.ndarray | None = None,
    ignore_label: int | None = None,
    include_background: bool = False,
) -> dict[str, Any]:
    """Metrics of one case's integer label maps, per class (index = position in `class_names`).

    Pixels outside `roi` or where `ref == ignore_label` are excluded from everything: they are
    not counted for overlap metrics or accuracy, and they are background in both maps for the
    surface distances. Returns {"pixel_accuracy": correct / counted pixels over all classes,
    "classes": {name: binary_metrics dict}, "background": class_names[0]}; "classes" holds the
    foreground classes, and the background too when `include_background`. "background" names
    the class that `summarize` leaves out of the macro mean.
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise SeglabError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if not class_names:
        raise SeglabError("class_names is empty: at least the background class must be named")
    counted = np.ones(ref.shape, dtype=bool)
    if roi is not None:
        roi = np.asarray(roi, dtype=bool)
        if roi.shape != ref.shape:
            raise SeglabError(f"roi shape {roi.shape} differs from reference shape {ref.shape}")
        counted &= roi
    if ignore_label is not None:
        counted &= ref != ignore_label
    spacing_t = _check_spacing(spacing, ref.ndim)
    n_counted = int(np.count_nonzero(counted))
    correct = int(np.count_nonzero((pred == ref) & counted))
    classes = {
        name: _metrics((pred == index) & counted, (ref == index) & counted, n_counted, spacing_t)
        for index, name in enumerate(class_names)
        if index > 0 or include_background
    }
    return {
        "pixel_accuracy": correct / n_counted if n_counted else NAN,
        "classes": classes,
        "background": class_names[0],
    }


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


def summarize(per_case: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean/std over cases per class and metric, plus the macro average over foreground classes.

    `per_case` items are {"case": id, **evaluate_case(...)}. For each class and metric: mean and
    population std (ddof=0) of the defined values, "n" = cases where defined, "undefined" = NaN
    cases. "mean": per case, the mean over its foreground classes of the defined values (NaN when
    none is defined), then mean/std over cases with the same counts. All-undefined gives NaN.
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
    return {
        "n_cases": len(per_case),
        "pixel_accuracy": _stats([case["pixel_accuracy"] for case in per_case]),
        "classes": classes,
        "mean": {metric: _stats(values) for metric, values in macro.items()},
    }


def _atomic_write(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, then rename it over `path` in one step."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _json_ready(value: Any) -> Any:
    """Plain JSON types, with NaN as null (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_tables(per_case: Sequence[dict[str, Any]], summary: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write metrics_per_case.csv, metrics_summary.csv and metrics.json into `out_dir` (created).

    CSVs write NaN as `nan`; the JSON ({"per_case", "summary"}) writes it as null. Each file is
    replaced atomically, so a reader never sees a half-written table.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_case_rows = [
        [case["case"], name, *(m[metric] for metric in METRICS), case["pixel_accuracy"]]
        for case in per_case
        for name, m in case["classes"].items()
    ]
    stat_keys = ("mean", "std", "n", "undefined")
    summary_rows = [
        [name, *(stats[metric][key] for metric in METRICS for key in stat_keys)]
        for name, stats in [*summary["classes"].items(), ("mean", summary["mean"])]
    ]
    texts = {
        "metrics_per_case.csv": _csv_text(["case", "class", *METRICS, "pixel_accuracy"], per_case_rows),
        "metrics_summary.csv": _csv_text(
            ["class", *(f"{metric}_{key}" for metric in METRICS for key in stat_keys)], summary_rows
        ),
        "metrics.json": json.dumps(
            _json_ready({"per_case": list(per_case), "summary": summary}), indent=2, allow_nan=False
        )
        + "\n",
    }
    paths = []
    for name, text in texts.items():
        _atomic_write(out_dir / name, text)
        paths.append(out_dir / name)
    return paths


def format_summary_table(
    summary: dict[str, Any], metrics: Sequence[str] = ("dice", "iou", "precision", "recall", "hd95", "assd")
) -> str:
    """A plain-text table, one row per class plus `mean`, cells "mean ± std" (3 decimals).

    A cell notes how many cases were undefined for that metric, so NaNs are never hidden.
    """

    def cell(stats: dict[str, float | int]) -> str:
        text = "n/a" if math.isnan(stats["mean"]) else f"{stats['mean']:.3f} ± {stats['std']:.3f}"
        return f"{text} ({stats['undefined']} undef.)" if stats["undefined"] else text

    rows = [["class", *metrics]]
    for name, stats in [*summary["classes"].items(), ("mean", summary["mean"])]:
        rows.append([name, *(cell(stats[metric]) for metric in metrics)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join([*lines, f"({summary['n_cases']} cases)"])
