"""The metrics files of an evaluation (CSV and JSON) and the plain-text summary table."""

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

from seglab.metrics.binary import COUNT_METRICS, METRICS
from seglab.metrics.summary import AGGREGATES, OBJECT_COUNTS, OBJECT_SCORES

STAT_KEYS = ("mean", "std", "n", "undefined")


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


def _aggregate_rows(summary: dict[str, Any]) -> list[list[Any]]:
    """Long format: one row per aggregate (or pooled class) and count metric."""
    rows = []
    for name in AGGREGATES:
        for metric, value in summary["aggregates"][name].items():
            if isinstance(value, dict):
                rows.append([name, metric, value["value"], value["n_classes"], value["undefined_classes"]])
            else:
                rows.append([name, metric, value, "", ""])
    for name, values in summary["pooled_classes"].items():
        rows.extend([f"pooled:{name}", metric, value, "", ""] for metric, value in values.items())
    return rows


def _table_texts(per_case: Sequence[dict[str, Any]], summary: dict[str, Any]) -> dict[str, str]:
    per_case_rows = [
        [case["case"], name, *(m[metric] for metric in METRICS), case["pixel_accuracy"]]
        for case in per_case
        for name, m in case["classes"].items()
    ]
    summary_rows = [
        [name, *(stats[metric][key] for metric in METRICS for key in STAT_KEYS)]
        for name, stats in [*summary["classes"].items(), ("mean", summary["mean"])]
    ]
    texts = {
        "metrics_per_case.csv": _csv_text(["case", "class", *METRICS, "pixel_accuracy"], per_case_rows),
        "metrics_summary.csv": _csv_text(
            ["class", *(f"{metric}_{key}" for metric in METRICS for key in STAT_KEYS)], summary_rows
        ),
    }
    if "confusion" in summary:
        names, matrix = summary["confusion"]["classes"], summary["confusion"]["matrix"]
        texts["confusion.csv"] = _csv_text(
            ["reference \\ prediction", *names], [[name, *row] for name, row in zip(names, matrix)]
        )
        texts["metrics_aggregates.csv"] = _csv_text(
            ["aggregate", "metric", "value", "n_classes", "undefined_classes"], _aggregate_rows(summary)
        )
    if "objects" in summary:
        texts["objects_per_case.csv"] = _csv_text(
            ["case", *OBJECT_SCORES, *OBJECT_COUNTS],
            [[case["case"], *(case["objects"].get(name, "")
                              for name in (*OBJECT_SCORES, *OBJECT_COUNTS))]
             for case in per_case])
    texts["metrics.json"] = (
        json.dumps(_json_ready({"per_case": list(per_case), "summary": summary}), indent=2, allow_nan=False) + "\n"
    )
    return texts


def write_tables(per_case: Sequence[dict[str, Any]], summary: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write metrics_per_case.csv, metrics_summary.csv, confusion.csv, metrics_aggregates.csv,
    objects_per_case.csv and metrics.json into `out_dir` (created); the confusion and aggregate
    tables only when the summary has them (cases from evaluate_case), the object table only for
    instance cases.

    CSVs write NaN as `nan`; the JSON ({"per_case", "summary"}) writes it as null. Each file is
    replaced atomically, so a reader never sees a half-written table.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in _table_texts(per_case, summary).items():
        _atomic_write(out_dir / name, text)
        paths.append(out_dir / name)
    return paths


def _missing(value: float | None) -> bool:
    """NaN in memory, null once read back from metrics.json."""
    return value is None or math.isnan(value)


def _stats_cell(stats: dict[str, float | int]) -> str:
    text = "n/a" if _missing(stats["mean"]) else f"{stats['mean']:.3f} ± {stats['std']:.3f}"
    return f"{text} ({stats['undefined']} undef.)" if stats["undefined"] else text


def _aggregate_cell(value: Any) -> str:
    if isinstance(value, dict):
        text = "n/a" if _missing(value["value"]) else f"{value['value']:.3f}"
        return f"{text} ({value['undefined_classes']} undef. classes)" if value["undefined_classes"] else text
    return "n/a" if _missing(value) else f"{value:.3f}"


def format_summary_table(
    summary: dict[str, Any], metrics: Sequence[str] = ("dice", "iou", "precision", "recall", "hd95", "assd")
) -> str:
    """A plain-text table, one row per class plus `mean`, cells "mean ± std" (3 decimals), then
    the macro_fg and micro_fg rows of the count metrics when the summary has them, and a line
    per class with its ROC AUC when it has that.

    A cell notes how many cases (classes, for macro) were undefined, so NaNs are never hidden.
    """
    rows = [["class", *metrics]]
    for name, stats in [*summary["classes"].items(), ("mean", summary["mean"])]:
        rows.append([name, *(_stats_cell(stats[metric]) for metric in metrics)])
    for name in ("macro_fg", "micro_fg") if "aggregates" in summary else ():
        values = summary["aggregates"][name]
        rows.append([name, *(_aggregate_cell(values[m]) if m in COUNT_METRICS else "" for m in metrics)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.append(f"({summary['n_cases']} cases)")
    if "objects" in summary:
        objects = summary["objects"]
        lines.append(f"objects: DSB score {_stats_cell(objects['dsb_score'])}, F1 at IoU 0.5 "
                     f"{_stats_cell(objects['f1'])} (pooled {objects['pooled_f1']:.3f}: "
                     f"{objects['tp']} found, {objects['fp']} false, {objects['fn']} missed), "
                     f"PQ {_stats_cell(objects['pq'])}")
    for name, auc in summary.get("roc_auc", {}).items():
        pooled, mean = ("n/a" if _missing(auc[k]) else f"{auc[k]:.4f}" for k in ("pooled", "mean"))
        lines.append(f"ROC AUC {name}: {pooled} pooled over the cases' pixels, {mean} mean over "
                     f"{auc['n']} cases" + (f" ({auc['undefined']} undef.)" if auc["undefined"]
                                            else ""))
    return "\n".join(lines)
