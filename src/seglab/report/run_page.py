"""`seglab report RUN`: one self-contained HTML page about a run that works offline (no CDN, no
external files; figures embedded as base64 PNG, a few lines of inline script to sort the
per-case table). It shows whatever the run has so far: a run without evaluation gets its data,
plan and learning curves, and a note saying that the test split has not been scored yet."""

from __future__ import annotations

import html
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np

from seglab import __version__
from seglab.data.io import write_text_atomic
from seglab.errors import SeglabError
from seglab.report import run_data
from seglab.report.run_data import Column
from seglab.report.run_figures import (box_plots, cam_figure, learning_curves, overlay_2d,
                                       overlay_3d, uncertainty_plot)
from seglab.report.run_tables import case_table, fmt, pairs_table, summary_tables
from seglab.run import Run

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 1400px; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
table.pairs th, table.pairs td { text-align: left; white-space: normal; }
caption { caption-side: top; text-align: left; color: #555; padding: 2px 0; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[data-order="asc"]::after { content: " \\25B2"; }
table.sortable th[data-order="desc"]::after { content: " \\25BC"; }
.scroll { overflow-x: auto; }
.note { color: #8a5a00; }
small { color: #777; }
img { max-width: 100%; }
nav a { margin-right: 1em; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; }
"""
# Errors go into the page (data-js-errors) so that a headless browser can check them.
HEAD_SCRIPT = """window.onerror = function (message) {
  var root = document.documentElement;
  root.dataset.jsErrors = (root.dataset.jsErrors || "") + message + "\\n";
};"""
# Sorts a table.sortable by the clicked header: numbers by data-value, n/a last either way.
SORT_SCRIPT = """function cellKey(row, column) {
  var cell = row.cells[column], value = cell.dataset.value;
  if (value === undefined) return cell.textContent;
  return value === "" ? null : parseFloat(value);
}
function sortTable(table, column, header) {
  var ascending = header.dataset.order !== "asc";
  table.querySelectorAll("th").forEach(function (th) { delete th.dataset.order; });
  header.dataset.order = ascending ? "asc" : "desc";
  var body = table.tBodies[0], rows = Array.from(body.rows);
  rows.sort(function (a, b) {
    var x = cellKey(a, column), y = cellKey(b, column);
    if (x === null || y === null) return (x === null) - (y === null);
    return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
  });
  rows.forEach(function (row) { body.appendChild(row); });
}
document.querySelectorAll("table.sortable").forEach(function (table) {
  Array.from(table.tHead.rows[0].cells).forEach(function (header, column) {
    header.addEventListener("click", function () { sortTable(table, column, header); });
  });
});
document.documentElement.dataset.reportReady = "1";"""


def write_report(run: Run, out: Path | None = None) -> Path:
    """Writes the run's report (default RUN/report.html) atomically; returns its path."""
    out = Path(out) if out else run.path / "report.html"
    write_text_atomic(out, render_report(run))
    return out


def render_report(run: Run) -> str:
    """The page: data, plan, training, and the evaluation when there is one."""
    plan = run.read_json("plan.json")
    sections = [("data", "Dataset", _dataset(run)), ("plan", "Plan", _plan(plan)),
                ("training", "Training", _training(run.log()))]
    sections += _evaluation(run, plan)
    nav = "".join(f'<a href="#{key}">{title}</a>' for key, title, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{title}</h2>{content}</section>'
                   for key, title, content in sections)
    name = html.escape(run.path.resolve().name)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>seglab run {name}</title>
<style>{STYLE}</style><script>{HEAD_SCRIPT}</script></head><body>
<h1>Run {name}</h1>
<p>{_run_line(run)}</p>
<nav>{nav}</nav>
{body}
<script>{SORT_SCRIPT}</script>
</body></html>
"""


def _run_line(run: Run) -> str:
    info = run_data.optional_json(run, "run.json") or {}
    parts = [f"{k}: {v}" for k, v in info.items() if isinstance(v, (str, int, float))]
    created = datetime.now().astimezone().isoformat(timespec="seconds")
    return html.escape(f"{run.path.resolve()} · {'; '.join(parts)} · report by seglab "
                       f"{__version__}, {created}")


def _dataset(run: Run) -> str:
    fp = run_data.optional_json(run, "fingerprint.json")
    if fp is None:
        return '<p class="note">The run has no fingerprint.json.</p>'
    shapes, spacings = np.array(fp["shapes"]), np.array(fp["spacings"], dtype=float)
    total = max(sum(fp["class_voxels"]), 1)
    classes = ", ".join(f"{k} {name} ({100 * n / total:.2f}%)" for k, (name, n)
                        in enumerate(zip(fp["classes"], fp["class_voxels"])))
    rows = [("name", fp["name"]), ("layout", f"{fp['layout']}: {fp['source']}"),
            ("dimensions", f"{fp['dims']}D, {fp['channels']} channel(s)"),
            ("modality", fp["modality"]),
            ("cases", f"{fp['n_cases']} labelled, {fp['n_unlabeled']} unlabelled"),
            ("classes (share of voxels)", classes)]
    for label, values, digits in (("size", shapes, 0), ("spacing", spacings, 4)):
        rows.append((f"{label} min / median / max", " / ".join(
            "x".join(f"{v:.{digits}f}" for v in row)
            for row in (values.min(0), np.median(values, 0), values.max(0)))))
    split = run_data.optional_json(run, "split.json") or {}
    rows.append(("split", ", ".join(f"{len(ids)} {k}" for k, ids in split.items())))
    rows += [("note", note) for note in fp.get("notes", [])]
    return pairs_table(rows)


def _timing(candidate: dict) -> str:
    """A timed candidate: seconds per patch (segmentation networks) or per step (Mask R-CNN)."""
    seconds = (f"{candidate['seconds_per_sample']} s per patch" if "seconds_per_sample" in
               candidate else f"{candidate['seconds_per_step']} s per step")
    return f"{seconds}, {candidate['params_m']} M parameters"


def _plan(plan: dict[str, Any]) -> str:
    model = plan.get("model", {})
    rows = [("model", f"{model.get('name', '?')}, widths {fmt(model.get('widths', []))}"),
            ("dimensions", plan.get("dims")), ("classes", ", ".join(plan.get("classes", []))),
            ("patch size", plan.get("patch_size")), ("batch size", plan.get("batch_size")),
            ("epochs x iterations", f"{plan.get('epochs')} x {plan.get('iterations_per_epoch')}"),
            ("time budget (minutes)", plan.get("time_budget_minutes") or "none"),
            ("target spacing", plan.get("target_spacing") or "as stored"),
            ("normalization", json.dumps(plan.get("normalization"))),
            ("loss", json.dumps(plan.get("loss"))),
            ("optimizer", json.dumps(plan.get("optimizer"))),
            ("foreground oversampling", plan.get("foreground_oversampling")),
            ("seed", plan.get("seed"))]
    inference = plan.get("inference") or {}
    turns = ", and quarter turns" if inference.get("quarter_turns") else ""
    rows.append(("test-time mirroring", f"axes {inference.get('mirror_axes')}{turns}: "
                                        f"{inference.get('tta_reason', 'as the plan says')}"))
    planning = plan.get("planning") or {}
    if "model" in planning:
        rows.append(("why this model", planning["model"]))
    if "instances" in planning:
        rows.append(("why this instance method", planning["instances"]))
    if budget := planning.get("budget"):
        rows.append(("why this patch, batch and network", budget["reason"]))
        rows += [(f"candidate {c['patch_size']} {c['network']}", _timing(c))
                 for c in budget["candidates"]]
    full = html.escape(json.dumps(plan, indent=2))
    return (f"{pairs_table(rows)}<details><summary>The full plan (plan.json)</summary>"
            f"<pre>{full}</pre></details>")


def _training(log: list[dict[str, Any]]) -> str:
    if not log:
        return '<p class="note">No epoch logged yet (log.jsonl is empty or missing).</p>'
    scored = [r for r in log if isinstance(r.get("mean_dice"), (int, float))
              and not math.isnan(r["mean_dice"])]
    best = max(scored, key=lambda r: r["mean_dice"]) if scored else None
    text = f"{len(log)} epoch(s), {log[-1].get('step', '?')} steps, " \
           f"{fmt(log[-1].get('elapsed_s'))} s of training"
    if best:
        text += f"; best validation Dice {best['mean_dice']:.4f} at epoch {best.get('epoch')}"
    return (f"<p>{html.escape(text)}.</p>"
            f'<img alt="learning curves" src="data:image/png;base64,{learning_curves(log)}">')


def _evaluation(run: Run, plan: dict[str, Any]) -> list[tuple[str, str, str]]:
    metrics = run_data.optional_json(run, "evaluation/metrics.json")
    if metrics is None:
        split = run_data.optional_json(run, "split.json") or {}
        why = ("the run's split has no test cases" if split.get("test") == [] else
               "the test split has not been scored yet (run `seglab evaluate RUN`)")
        return [("evaluation", "Evaluation", f'<p class="note">No evaluation yet: {why}.</p>')]
    per_case, summary = metrics.get("per_case", []), metrics.get("summary", {})
    if not per_case:
        raise SeglabError(f"{run.path / 'evaluation' / 'metrics.json'}: no per-case metrics")
    parts = run_data.split_summary(summary)
    rows = [run_data.case_values(case, parts.settings) for case in per_case]
    sections = [("metrics", "Metrics per class", summary_tables(summary, parts)),
                ("cases", "Per-case metrics", case_table(per_case, rows)),
                ("boxes", "Per-case distributions", _boxes(rows))]
    if uncertainty := summary.get("uncertainty"):
        sections.append(("uncertainty", "Uncertainty", _uncertainty(uncertainty)))
    if any("sizes" in case for case in per_case):
        sections.append(("sizes", "Measurements", _sizes(per_case)))
    return [*sections,
            ("overlays", "Best, median and worst test case", _overlays(run, plan, per_case))]


def _sizes(per_case: list[dict[str, Any]]) -> str:
    """Each test case's predicted and reference size per class, in physical units."""
    rows = [(case["case"], name, values) for case in per_case
            for name, values in case.get("sizes", {}).items()]
    keys = list(rows[0][2]) if rows else []
    head = "".join(f"<th>{html.escape(k.replace('_', ' '))}</th>" for k in keys)
    body = "".join(f"<tr><td>{html.escape(str(case))}</td><td>{html.escape(name)}</td>" +
                   "".join(f"<td>{fmt(values.get(k))}</td>" for k in keys) + "</tr>"
                   for case, name, values in rows)
    return ("<p>Sizes where the metrics count (mm² in 2D, mL in 3D, from the voxel spacing); "
            "components: the prediction's connected pieces. `seglab measure` gives each "
            f"component.</p><table><tr><th>case</th><th>class</th>{head}</tr>{body}</table>")


def _uncertainty(summary: dict[str, Any]) -> str:
    """How well the predictive entropy finds the errors: its ROC AUC, and the error rate per
    entropy bin."""
    auc = summary["error_auc"]
    pooled = "n/a" if auc.get("pooled") is None else f"{auc['pooled']:.4f}"
    text = (f"<p>Predictive entropy (0: certain, 1: every class equally likely), mean "
            f"{summary['mean_entropy']:.4f} over the counted test pixels. As a detector of the "
            f"misclassified pixels its ROC AUC is {pooled} (all test pixels pooled; per-case "
            "values in the table above).</p>")
    return (f'{text}<img alt="error rate against predictive entropy" '
            f'src="data:image/png;base64,{uncertainty_plot(summary)}">')


def _boxes(rows: list[dict[Column, float | None]]) -> str:
    values: dict[str, dict[str, list[float]]] = {}
    for column in run_data.per_case_columns(rows):
        name, metric = column
        defined = [row[column] for row in rows if row.get(column) is not None]
        if defined and column != run_data.RANKING:
            values.setdefault(metric, {})[name or "whole case"] = defined
    if not values:
        return '<p class="note">No defined per-case value to plot.</p>'
    return (f'<img alt="box plots of the per-case metrics" '
            f'src="data:image/png;base64,{box_plots(values)}">')


def _overlays(run: Run, plan: dict[str, Any], per_case: list[dict[str, Any]]) -> str:
    """The best, median and worst case by mean Dice, read back from the dataset and the run's
    predictions/test; a case that cannot be read says why instead."""
    from seglab.data.sequences import own_frame
    from seglab.infer import output_value_map  # torch only where the page needs the dataset
    from seglab.plan import Plan
    from seglab.run_setup import open_dataset

    ranked = run_data.ranked_cases(per_case)
    if not ranked:
        return '<p class="note">No case has a defined Dice to rank by.</p>'
    try:
        dataset = open_dataset(run)
    except SeglabError as error:
        return f'<p class="note">The dataset cannot be read: {html.escape(str(error))}</p>'
    refs = {ref.case_id: ref for ref in dataset.cases}
    predictions = run_data.prediction_files(run.path / "predictions" / "test")
    value_map = output_value_map(Plan.from_dict(plan))
    frames = 1 + 2 * Plan.from_dict(plan).temporal["context"]  # a frame shown without neighbours
    objects = plan.get("task") == "instance"
    explained = _class_maps(run, Plan.from_dict(plan), dataset, refs) if not objects and (
        "classical" not in plan["model"]) else None
    parts = []
    for label, case_id, dice in ranked:
        title = f"{label}: {case_id} (mean Dice {dice:.4f})"
        try:
            if case_id not in refs:
                raise SeglabError(f"{dataset.source}: case {case_id!r} is gone")
            case = run_data.load_shown(dataset, own_frame(refs[case_id], frames), predictions,
                                       value_map, objects)
        except SeglabError as error:
            parts.append(f'<h3>{html.escape(title)}</h3>'
                         f'<p class="note">{html.escape(str(error))}</p>')
            continue
        if case.label.ndim == 3:
            image, where = overlay_3d(case, plan["classes"])
        else:
            image, where = overlay_2d(case, plan["classes"]), ""
        parts.append(f'<h3>{html.escape(title)}</h3><p>{html.escape(where)}</p>'
                     f'<img alt="{html.escape(title)}" src="data:image/png;base64,{image}">')
        if objects:
            parts.append(_worst_objects(case, plan["classes"]))
        if explained is not None:
            parts.append(explained(case))
    return "".join(parts)


def _class_maps(run: Run, plan: Any, dataset: Any,
                refs: dict[str, Any]) -> Callable[[run_data.Shown], str]:
    """A function drawing a shown case's Grad-CAM (`seglab.explain`) for the foreground class
    with the most reference pixels in it; the run's model is loaded on first use."""
    from seglab.data.loading import load_case
    from seglab.device import Precision
    from seglab.explain import explain_case
    from seglab.infer import load_model
    from seglab.plan_temporal import frame_channels

    loaded: list = []
    channels = frame_channels(plan.in_channels, plan.temporal)  # shown without its neighbours

    def draw(shown: run_data.Shown) -> str:
        if not loaded:
            loaded.append(load_model(run, Precision.choose(precision="fp32")))
        counts = np.bincount(shown.label[shown.counted].ravel(), minlength=plan.n_classes)
        index = int(np.argmax(counts[1:plan.n_classes])) + 1
        case = load_case(dataset, refs[shown.case_id])
        cam = explain_case(loaded[0], case, plan, index)
        title = f"Grad-CAM of {plan.classes[index]} (the explained score: its log-odds where " \
                "it is predicted)"
        return (f"<p>{html.escape(title)}</p><img alt=\"{html.escape(title)}\" "
                f"src=\"data:image/png;base64,{cam_figure(case.image[:channels], cam)}\">")

    return draw


def _worst_objects(case: run_data.Shown, class_names: list[str]) -> str:
    """The reference objects the prediction matches worst, as a table."""
    rows = run_data.worst_matched(case, class_names)
    if not rows:
        return '<p class="note">No reference object in this case.</p>'
    body = "".join(
        f"<tr><td>{r['object']}</td><td>{html.escape(r['class'])}</td><td>{r['pixels']}</td>"
        f"<td>{r['best_iou']:.3f}</td><td>{r['matched_by'] or 'none'}</td></tr>" for r in rows)
    return ("<table><caption>The reference objects matched worst (best IoU with any predicted "
            "object; 0.5 counts as found)</caption><tr><th>object</th><th>class</th>"
            f"<th>pixels</th><th>best IoU</th><th>predicted object</th></tr>{body}</table>")
