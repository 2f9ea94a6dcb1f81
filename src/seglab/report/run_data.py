"""What `seglab report` reads from a run folder. The metrics are read generically, from whatever
keys the evaluation's metrics.json holds, so that a metric added to `seglab.metrics` appears in
the report without a change here."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seglab.data.io import IMAGE_SUFFIXES, read_label, suffix_of
from seglab.data.layouts import IGNORE_INDEX, CaseRef, Dataset
from seglab.data.loading import load_case
from seglab.errors import SeglabError
from seglab.metrics.instances import iou_with_ids
from seglab.run import Run

Stats = dict[str, Any]  # {"mean", "std", "n", "undefined"} as `seglab.metrics.summarize` writes
Column = tuple[str | None, str]  # (class name, or None for a whole-case value; metric)
RANKING = (None, "mean dice")


def optional_json(run: Run, name: str) -> dict[str, Any] | None:
    """The run's JSON file `name`, or None when the run has not written it (yet)."""
    return run.read_json(name) if (run.path / name).is_file() else None


def is_stats(value: Any) -> bool:
    return isinstance(value, dict) and "mean" in value and "std" in value


def _number(value: Any) -> bool:
    """A metric value: a number, or None (NaN as metrics.json writes it)."""
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _value(entry: Any) -> tuple[bool, float | None]:
    """(is a value, the value) of a table cell: a number, or {"value": number, ...}."""
    if isinstance(entry, dict) and "value" in entry:
        entry = entry["value"]
    return _number(entry), entry if _number(entry) else None


@dataclass
class SummaryParts:
    """The summary of metrics.json sorted by the shape of its entries, so that each kind is shown
    the same way whatever its name."""

    stats_rows: list[tuple[str, dict[str, Stats]]] = field(default_factory=list)
    whole_case: dict[str, Stats] = field(default_factory=dict)
    value_tables: dict[str, list[tuple[str, dict[str, float | None]]]] = field(
        default_factory=dict)
    matrices: dict[str, tuple[list[str], list[list[float]]]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    other: dict[str, Any] = field(default_factory=dict)


def split_summary(summary: dict[str, Any]) -> SummaryParts:
    """Rows of per-metric stats (one per class, then e.g. the mean over classes), whole-case
    stats (pixel_accuracy), tables of plain values ({row: {metric: value}}, e.g. aggregates),
    matrices ({"classes", "matrix"}), scalar settings, and what fits none of these."""
    parts = SummaryParts()
    for name, metrics in summary.get("classes", {}).items():
        parts.stats_rows.append((name, {m: s for m, s in metrics.items() if is_stats(s)}))
    for key, entry in summary.items():
        if key == "classes":
            continue
        if is_stats(entry):
            parts.whole_case[key] = entry
        elif _number(entry):
            parts.settings[key] = entry
        elif isinstance(entry, dict) and {"classes", "matrix"} <= set(entry):
            parts.matrices[key] = (entry["classes"], entry["matrix"])
        elif isinstance(entry, dict) and entry and all(is_stats(v) for v in entry.values()):
            parts.stats_rows.append((key, entry))
        elif isinstance(entry, dict) and entry and all(
                isinstance(row, dict) and row and all(_value(v)[0] for v in row.values())
                for row in entry.values()):
            parts.value_tables[key] = [(name, {m: _value(v)[1] for m, v in row.items()})
                                       for name, row in entry.items()]
        else:
            parts.other[key] = entry
    return parts


def case_values(case: dict[str, Any], settings: dict[str, Any] | None = None
                ) -> dict[Column, float | None]:
    """A metrics.json per-case entry flattened to {(class, metric): value}, with the mean Dice over
    its foreground classes first (the report's ranking); nested non-numbers are left out, and so
    are the `settings` that the summary states once (e.g. a tolerance)."""
    values: dict[Column, float | None] = {}
    for name, metrics in case.get("classes", {}).items():
        values.update({(name, m): v for m, v in metrics.items() if _number(v)})
    dice = [v for (name, m), v in values.items()
            if m == "dice" and v is not None and name != case.get("background")]
    whole = {(None, k): v for k, v in case.items()
             if k != "case" and k not in (settings or {}) and _number(v)}
    grouped = {(k, m): v for k, entry in case.items() if k != "classes" and isinstance(entry, dict)
               for m, v in entry.items() if _number(v)}  # e.g. "uncertainty", "objects"
    return {RANKING: float(np.mean(dice)) if dice else None, **whole, **values, **grouped}


def per_case_columns(rows: list[dict[Column, float | None]]) -> list[Column]:
    """Every column any case has, in first-seen order."""
    return list(dict.fromkeys(column for row in rows for column in row))


def ranked_cases(per_case: list[dict[str, Any]]) -> list[tuple[str, str, float]]:
    """(label, case id, mean Dice) of the best, median and worst case, each case once."""
    scored = [(case_values(c)[RANKING], c["case"]) for c in per_case]
    order = sorted((s, i) for s, i in scored if s is not None and not math.isnan(s))
    if not order:
        return []
    picks = [("best", order[-1]), ("median", order[len(order) // 2]), ("worst", order[0])]
    chosen, seen = [], set()
    for label, (score, case_id) in picks:
        if case_id not in seen:
            seen.add(case_id)
            chosen.append((label, case_id, score))
    return chosen


@dataclass
class Shown:
    """One test case, ready to draw: image (C, *spatial) and class-index maps, or for an
    instance run object-id maps with each reference object's class in `objects`."""

    case_id: str
    image: np.ndarray
    label: np.ndarray
    prediction: np.ndarray
    counted: np.ndarray  # where the metrics count (ROI, not the ignore label)
    spacing: tuple[float, ...]
    objects: dict[int, int] | None = None


def prediction_files(folder: Path) -> dict[str, Path]:
    """The run's predicted masks by file stem (as `seglab.data.write.write_mask` names them)."""
    if not folder.is_dir():
        return {}
    return {p.name[: -len(suffix_of(p))]: p for p in sorted(folder.iterdir())
            if p.is_file() and suffix_of(p) in IMAGE_SUFFIXES}


def load_shown(dataset: Dataset, ref: CaseRef, predictions: dict[str, Path],
               value_map: dict[int, int] | None, objects: bool = False) -> Shown:
    """The case with its stored prediction mapped back to class indices (`value_map` is the class
    -> stored value map the prediction was written with); with `objects` (an instance run), the
    reference's and the prediction's object ids."""
    stem = ref.images[0].name[: -len(suffix_of(ref.images[0]))] or ref.images[0].name
    path = predictions.get(stem) or predictions.get(ref.case_id)
    if path is None:
        raise SeglabError(f"no predicted mask for case {ref.case_id!r} in predictions/test")
    case = load_case(dataset, ref)
    raw = read_label(path)
    if case.label is None or raw.shape != case.shape:
        raise SeglabError(f"{path}: size {raw.shape} does not match its case {case.shape}")
    counted = case.label != IGNORE_INDEX
    if case.roi is not None:
        counted &= case.roi
    if objects and case.instances is not None:
        return Shown(ref.case_id, case.image, case.instances.ids, raw.astype(np.int64), counted,
                     case.spacing, dict(case.instances.classes))
    prediction = raw.copy()
    for index, value in (value_map or {}).items():
        prediction[raw == value] = index
    return Shown(ref.case_id, case.image, case.label, prediction, counted, case.spacing)


def worst_matched(case: Shown, class_names: list[str], count: int = 5) -> list[dict[str, Any]]:
    """The `count` reference objects of an instance case that the prediction matches worst:
    each with its class, size in pixels, and its best IoU with any predicted object (and which);
    where the metrics count only."""
    reference = np.where(case.counted, case.label, 0)
    iou, pred_ids, ref_ids = iou_with_ids(np.where(case.counted, case.prediction, 0), reference)
    sizes = np.bincount(reference.ravel(), minlength=int(reference.max(initial=0)) + 1)
    best = iou.max(axis=0) if len(pred_ids) else np.zeros(len(ref_ids))
    which = iou.argmax(axis=0) if len(pred_ids) else np.zeros(len(ref_ids), int)
    rows = [{"object": int(r), "class": class_names[case.objects.get(int(r), 0)],
             "pixels": int(sizes[r]), "best_iou": float(b),
             "matched_by": int(pred_ids[w]) if b > 0 else None}
            for r, b, w in zip(ref_ids, best, which)]
    return sorted(rows, key=lambda row: row["best_iou"])[:count]
