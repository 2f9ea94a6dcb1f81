"""The tables of `seglab compare` (CSV, Markdown, plain text) and its HTML page, which works
offline: the bar charts are drawn with matplotlib's Agg canvas and embedded as base64 PNG."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from typing import Any, Callable

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

METRIC_COLUMNS = ("dice", "iou", "pixel_accuracy", "precision", "recall", "f1", "dsb_score",
                  "object_f1")
CSV_COLUMNS = ("model", "status", *(f"{m}_{s}" for m in METRIC_COLUMNS for s in ("mean", "std")),
               "roc_auc", "test_cases", "train_s", "epochs", "steps", "peak_ram_mb", "peak_gpu_mb",
               "params_m", "images_per_s", "device", "compute_precision", "settings", "reason",
               "run")
# (key, chart title, key of the error bar)
CHARTS = (("dice_mean", "Dice (test, mean ± std)", "dice_std"),
          ("iou_mean", "IoU (test, mean ± std)", "iou_std"),
          ("train_s", "training time (s)", None),
          ("images_per_s", "inference (test images/s)", None),
          ("peak_ram_mb", "peak RAM (MB)", None),
          ("params_m", "parameters (M)", None),
          ("peak_gpu_mb", "peak GPU memory (MB)", None))


def _metric(name: str) -> Callable[[dict], str]:
    def cell(row: dict) -> str:
        if f"{name}_mean" not in row:
            return ""
        mean, std = row[f"{name}_mean"], row[f"{name}_std"]
        return "n/a" if mean is None else f"{mean:.3f} ± {std:.3f}"
    return cell


def _number(key: str, digits: int) -> Callable[[dict], str]:
    def cell(row: dict) -> str:
        value = row.get(key)
        return "" if value is None else f"{value:.{digits}f}"
    return cell


def _params(row: dict) -> str:
    value = row.get("params_m")
    return "" if value is None else f"{value:.2f}" if value >= 1 else f"{value:.2g}"


def _settings(row: dict) -> str:
    """A classical method's parameters (fitted or given), e.g. `channel=1, polarity=dark`."""
    return row.get("params") or ""


def _device(row: dict) -> str:
    return " ".join(str(row[k]) for k in ("device", "compute_precision") if row.get(k))


def _budget(row: dict) -> str:
    return f"{row['epochs']} / {row['steps']}" if "steps" in row else ""


COLUMNS: tuple[tuple[str, Callable[[dict], str]], ...] = (
    ("model", lambda row: row["model"]), ("status", lambda row: row["status"]),
    ("Dice", _metric("dice")), ("IoU", _metric("iou")), ("pixel acc.", _metric("pixel_accuracy")),
    ("precision", _metric("precision")), ("recall", _metric("recall")), ("F1", _metric("f1")),
    ("ROC AUC", _number("roc_auc", 4)), ("DSB score", _metric("dsb_score")),
    ("object F1", _metric("object_f1")),
    ("train (s)", _number("train_s", 1)), ("epochs / steps", _budget),
    ("peak RAM (MB)", _number("peak_ram_mb", 0)), ("peak GPU (MB)", _number("peak_gpu_mb", 0)),
    ("params (M)", _params), ("images/s", _number("images_per_s", 2)),
    ("device", _device), ("settings", _settings))
LEGEND = ("Metrics: mean ± std over the {test} test cases of the mean over the foreground "
          "classes. ROC AUC: of the model's probability map (a classical method's score) against "
          "the reference, all test pixels (inside the ROI) pooled, mean over the foreground "
          "classes. DSB score and object F1 (instance methods): per test image, the mean over IoU "
          "thresholds 0.5:0.05:0.95 of TP / (TP + FP + FN), and F1 of the objects matched at "
          "IoU 0.5. "
          "train (s): time in the training loop (validation excluded); epochs / steps done; peak "
          "RAM: the resident memory of the model's own process; images/s: test images (volumes) "
          "through the whole prediction.")
SHORT = ("model", "status", "Dice", "IoU", "F1", "DSB score", "train (s)", "epochs / steps", "peak RAM (MB)",
         "params (M)", "images/s")


def _cells(rows: list[dict], headers: tuple[str, ...] | None = None) -> list[list[str]]:
    chosen = [(h, f) for h, f in COLUMNS if headers is None or h in headers]
    return [[h for h, _ in chosen], *([f(row) for _, f in chosen] for row in rows)]


def _problems(rows: list[dict]) -> list[str]:
    return [f"{row['model']}: {row['status']}: {row['reason']}" for row in rows
            if row.get("reason")]


def format_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({**row, "settings": _settings(row)} for row in rows)
    return buffer.getvalue()


def format_text(comparison: dict[str, Any]) -> str:
    """The short table printed at the end of `seglab compare`."""
    table = _cells(comparison["rows"], SHORT)
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([*lines, *_problems(comparison["rows"])])


def format_markdown(comparison: dict[str, Any]) -> str:
    """The table, the reasons of the rows that failed, and what the cells mean (no paths, so that
    it can be pasted into a report as it is)."""
    table = [[c.replace("|", "\\|") for c in row] for row in _cells(comparison["rows"])]
    lines = ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0]),
             *("| " + " | ".join(row) + " |" for row in table[1:])]
    problems = _problems(comparison["rows"])
    if problems:
        lines += ["", *(f"- {p}" for p in problems)]
    return "\n".join([*lines, "", LEGEND.format(test=len(comparison["split"]["test"]))]) + "\n"


def _description(comparison: dict[str, Any]) -> str:
    settings, split = comparison["settings"], comparison["split"]
    sizes = ", ".join(f"{len(split[k])} {k}" for k in ("train", "val", "test"))
    return (f"Data: {settings['data']}. The same split for every model ({sizes}). Plan "
            f"overrides for every model: {json.dumps(settings['overrides'])}. Device "
            f"{settings['device']}, precision {settings['precision']}. seglab "
            f"{comparison['seglab']}, {comparison['created']}.")


def render_html(comparison: dict[str, Any]) -> str:
    """A self-contained page (no scripts, no external resources): table, problems, charts."""
    table = _cells(comparison["rows"])
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in table[1:])
    problems = "".join(f"<li>{html.escape(p)}</li>" for p in _problems(comparison["rows"]))
    chart = _chart_png([r for r in comparison["rows"] if r["status"] == "ok"])
    image = (f'<img alt="bar charts of the table" src="data:image/png;base64,{chart}">'
             if chart else "<p>No model has finished yet.</p>")
    split = "".join(f"<p><b>{k}</b> ({len(ids)}): {html.escape(', '.join(ids))}</p>"
                    for k, ids in comparison["split"].items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>seglab model comparison</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; white-space: nowrap; }}
th:first-child, td:first-child, td:nth-child(2) {{ text-align: left; }}
th {{ background: #f3f3f3; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>Model comparison</h1>
<p>{html.escape(_description(comparison))}</p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<ul>{problems}</ul>
<p>{html.escape(LEGEND.format(test=len(comparison["split"]["test"])))}</p>
{image}
<details><summary>The split shared by all models</summary>{split}</details>
</body></html>
"""


def _chart_png(rows: list[dict]) -> str | None:
    """One bar chart per measured quantity, the models in table order; base64 PNG, or None."""
    charts = [c for c in CHARTS if any(row.get(c[0]) is not None for row in rows)]
    if not charts:
        return None
    columns = 3
    height = 1.0 + 0.35 * len(rows)
    figure = Figure(figsize=(4.5 * columns, height * -(-len(charts) // columns)),
                    layout="constrained")
    FigureCanvasAgg(figure)
    for index, (key, title, error) in enumerate(charts):
        axes = figure.add_subplot(-(-len(charts) // columns), columns, index + 1)
        values = [row.get(key) or 0.0 for row in rows]
        errors = [row.get(error) or 0.0 for row in rows] if error else None
        bars = axes.barh(range(len(rows)), values, xerr=errors, color="#4c78a8", capsize=3)
        axes.bar_label(bars, labels=[_short_number(v) for v in values], padding=3, fontsize=8)
        axes.set_yticks(range(len(rows)), [row["model"] for row in rows])
        axes.invert_yaxis()
        axes.set_title(title, fontsize=10)
        axes.margins(x=0.25)
        if error:
            axes.set_xlim(0, 1.15)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _short_number(value: float) -> str:
    """Three significant digits, without switching to exponents for thousands."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
