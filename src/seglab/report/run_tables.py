"""The HTML tables of `seglab report`: label/value pairs, the evaluation's summary (whatever
entries it holds, see `run_data.split_summary`) and the sortable per-case table."""

from __future__ import annotations

import html
import json
import math
from typing import Any, Callable

from seglab.report.run_data import Column, Stats, SummaryParts, per_case_columns


def fmt(value: Any) -> str:
    """A value as the page shows it: 4 significant digits, n/a for undefined, sizes as AxB."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "x".join(fmt(v) for v in value) if value else "none"
    return str(value)


def pairs_table(rows: list[tuple[str, Any]]) -> str:
    """A two-column table of labels and values (escaped here)."""
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(fmt(v))}</td></tr>"
                    for k, v in rows)
    return f'<table class="pairs">{cells}</table>'


def _table(head: list[str], rows: list[list[str]], caption: str = "") -> str:
    """Header cells are escaped here; body cells are HTML already."""
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    caption = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (f'<div class="scroll"><table>{caption}<thead><tr>{header}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _stats_cell(stats: Stats) -> str:
    text = "n/a" if stats.get("mean") is None else f"{stats['mean']:.4g} ± {fmt(stats.get('std'))}"
    if stats.get("undefined"):
        text += f" <small>({stats['undefined']} undef.)</small>"
    return text


def _metric_table(first: str, rows: list[tuple[str, dict[str, Any]]],
                  cell: Callable[[Any], str]) -> str:
    """Rows of {metric: value}, one column per metric any row has."""
    metrics = list(dict.fromkeys(m for _, values in rows for m in values))
    return _table([first, *metrics], [
        [html.escape(name), *(cell(values[m]) if m in values else "" for m in metrics)]
        for name, values in rows])


def _matrix_table(key: str, classes: list[str], matrix: list[list[float]]) -> str:
    """A confusion matrix (rows = reference, as `seglab.metrics` writes it), with row shares."""
    rows = []
    for name, counts in zip(classes, matrix):
        total = sum(counts) or 1
        rows.append([html.escape(name), *(f"{fmt(c)} <small>({100 * c / total:.1f}%)</small>"
                                          for c in counts)])
    return _table([f"{key}: reference \\ predicted", *classes], rows,
                  "pixels summed over the test cases; rows: reference class, columns: predicted "
                  "class, with the share of the row")


def summary_tables(summary: dict[str, Any], parts: SummaryParts) -> str:
    """Stats per class and per average, whole-case stats, value tables, matrices, settings."""
    text = (f"<p>Mean ± std over {fmt(summary.get('n_cases'))} test cases (undefined values "
            "left out and counted); the rows after the classes average over the classes.</p>"
            + _metric_table("class", parts.stats_rows, _stats_cell))
    if parts.whole_case:
        text += _metric_table("whole case", [("all classes", parts.whole_case)], _stats_cell)
    for key, rows in parts.value_tables.items():
        text += _metric_table(key, rows, lambda v: html.escape(fmt(v)))
    for key, (classes, matrix) in parts.matrices.items():
        text += _matrix_table(key, classes, matrix)
    if parts.settings:
        settings = ", ".join(f"{k}: {fmt(v)}" for k, v in parts.settings.items())
        text += f"<p>{html.escape(settings)}</p>"
    if parts.other:
        text += ("<details><summary>Other entries of the summary</summary><pre>"
                 f"{html.escape(json.dumps(parts.other, indent=2))}</pre></details>")
    return text


def _header(column: Column, one_class: bool) -> str:
    name, metric = column
    return metric if name is None or one_class else f"{name} {metric}"


def case_table(per_case: list[dict[str, Any]], rows: list[dict[Column, float | None]]) -> str:
    """One row per case, one column per value any case has; sorted by the page's script."""
    columns = per_case_columns(rows)
    one_class = len({name for name, _ in columns if name is not None}) <= 1
    head = "<th>case</th>" + "".join(f"<th>{html.escape(_header(c, one_class))}</th>"
                                     for c in columns)
    body = ""
    for case, row in zip(per_case, rows):
        cells = "".join(f'<td data-value="{"" if row.get(c) is None else row[c]}">'
                        f"{fmt(row.get(c))}</td>" for c in columns)
        body += f"<tr><td>{html.escape(str(case['case']))}</td>{cells}</tr>"
    return ("<p>Click a header to sort (again to reverse); n/a (undefined) sorts last. "
            "mean dice: the mean over the foreground classes, which ranks the cases below.</p>"
            f'<div class="scroll"><table class="sortable" id="per-case"><thead><tr>{head}</tr>'
            f"</thead><tbody>{body}</tbody></table></div>")
