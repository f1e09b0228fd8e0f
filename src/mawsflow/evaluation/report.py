"""The run report: every evaluation's result in a table shaped like the paper's Table 22, plots
of the training losses and of low-shot accuracy against K, as Markdown, HTML and JSON.

Rows are the pretraining methods (MAE, WSP, MAE→WSP, in the paper's order, then any other
lineage a result names); columns are the evaluations, in the order the results were given. The
best value of each column is bold, as in the paper. Plots are PNGs embedded as base64 data URIs,
so the one file renders in the Kubeflow UI's Markdown and HTML viewers without side files.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display in a pipeline pod
import matplotlib.pyplot as plt

from mawsflow.evaluation.results import PAPER_ROWS, EvalResult, TrainingHistory


@dataclass
class ReportTable:
    """Table 22's shape: `cells[row][column]` holds a value in percent."""

    rows: list[str]
    columns: list[str]
    cells: dict[str, dict[str, float]]

    def best(self, column: str) -> float | None:
        values = [self.cells[r][column] for r in self.rows if column in self.cells[r]]
        return max(values) if values else None


@dataclass
class Report:
    table: ReportTable
    results: list[EvalResult]
    histories: list[TrainingHistory] = field(default_factory=list)
    plots: dict[str, bytes] = field(default_factory=dict)  # title → PNG


def build_table(results: Sequence[EvalResult]) -> ReportTable:
    """Place every result's table cells; a repeated (row, column) is an error, not an overwrite."""
    if not results:
        raise ValueError("the report needs at least one evaluation result")
    rows = list(PAPER_ROWS)
    columns: list[str] = []
    cells: dict[str, dict[str, float]] = {row: {} for row in rows}
    for result in results:
        if result.pretraining not in cells:
            rows.append(result.pretraining)
            cells[result.pretraining] = {}
        for column, value in result.table.items():
            if column in cells[result.pretraining]:
                raise ValueError(
                    f"two results give {result.pretraining!r} / {column!r}; each table cell "
                    "must come from one evaluation"
                )
            if column not in columns:
                columns.append(column)
            cells[result.pretraining][column] = float(value)
    return ReportTable(rows=rows, columns=columns, cells=cells)


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def plot_loss_curves(histories: Sequence[TrainingHistory]) -> bytes:
    """Training loss against samples seen, one line per training step."""
    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    for history in histories:
        axis.plot(history.samples, history.losses, label=history.label, linewidth=1.2)
    axis.set_xlabel("samples seen")
    axis.set_ylabel("training loss")
    axis.set_title("Training loss")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    return _png(figure)


def plot_lowshot(results: Sequence[EvalResult]) -> bytes:
    """Mean top-1 against K with the spread over seeds, one line per low-shot result."""
    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    for result in results:
        shots = sorted(int(k) for k in result.lowshot)
        means = [result.lowshot[str(k)]["mean"] for k in shots]
        spreads = [result.lowshot[str(k)]["std"] for k in shots]
        axis.errorbar(
            shots,
            means,
            yerr=spreads,
            marker="o",
            capsize=3,
            label=f"{result.pretraining}: {result.evaluation}",
        )
        axis.set_xticks(shots)
    axis.set_xlabel("K (labelled examples per class)")
    axis.set_ylabel("top-1 (%)")
    axis.set_title("Low-shot accuracy")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    return _png(figure)


def build_report(
    results: Sequence[EvalResult], histories: Sequence[TrainingHistory] = ()
) -> Report:
    plots: dict[str, bytes] = {}
    drawable = [h for h in histories if h.samples]
    if drawable:
        plots["Training loss"] = plot_loss_curves(drawable)
    lowshot = [r for r in results if r.lowshot]
    if lowshot:
        plots["Low-shot accuracy against K"] = plot_lowshot(lowshot)
    return Report(build_table(results), list(results), list(histories), plots)


def _cell(table: ReportTable, row: str, column: str) -> tuple[str, bool]:
    """(text, is best) for one cell; a missing cell shows the paper's dash."""
    value = table.cells[row].get(column)
    if value is None or math.isnan(value):
        return "–", False
    return f"{value:.1f}", value == table.best(column)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_markdown(report: Report) -> str:
    table = report.table
    lines = ["# mawsflow run report", ""]
    lines.append(
        "Top-1 accuracy (%) by pretraining method (rows) and evaluation (columns), as the "
        "paper's Table 22; the best value of each column is bold."
    )
    lines.append("")
    escaped = [c.replace("|", "\\|") for c in table.columns]
    lines.append("| Method | " + " | ".join(escaped) + " |")
    lines.append("| --- |" + " ---: |" * len(table.columns))
    for row in table.rows:
        texts = []
        for column in table.columns:
            text, best = _cell(table, row, column)
            texts.append(f"**{text}**" if best else text)
        lines.append(f"| {row} | " + " | ".join(texts) + " |")
    lines += ["", "## Evaluations", ""]
    for result in report.results:
        scalars = ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items())
        lines.append(
            f"- **{result.evaluation}** ({result.pretraining}, `{result.step}`): {scalars}"
        )
    for title, png in report.plots.items():
        lines += ["", f"## {title}", "", f"![{title}]({_data_uri(png)})"]
    return "\n".join(lines) + "\n"


def render_html(report: Report) -> str:
    table = report.table
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in table.columns)
    body = []
    for row in table.rows:
        cells = []
        for column in table.columns:
            text, best = _cell(table, row, column)
            cells.append(f"<td><b>{text}</b></td>" if best else f"<td>{text}</td>")
        body.append(f"<tr><th>{esc(row)}</th>{''.join(cells)}</tr>")
    items = "".join(
        f"<li><b>{esc(r.evaluation)}</b> ({esc(r.pretraining)}, <code>{esc(r.step)}</code>): "
        + esc(", ".join(f"{k} {v:.4g}" for k, v in r.metrics.items()))
        + "</li>"
        for r in report.results
    )
    figures = "".join(
        f'<h2>{esc(title)}</h2><img alt="{esc(title)}" src="{_data_uri(png)}">'
        for title, png in report.plots.items()
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>mawsflow run report</title>"
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
        "th,td{border:1px solid #bbb;padding:4px 10px}td{text-align:right}</style></head><body>"
        "<h1>mawsflow run report</h1><p>Top-1 accuracy (%) by pretraining method (rows) and "
        "evaluation (columns), as the paper's Table 22; the best value of each column is bold."
        f"</p><table><tr><th>Method</th>{head}</tr>{''.join(body)}</table>"
        f"<h2>Evaluations</h2><ul>{items}</ul>{figures}</body></html>\n"
    )


def render_json(report: Report) -> dict[str, Any]:
    table = report.table
    return {
        "format": "mawsflow.report/1",
        "rows": table.rows,
        "columns": table.columns,
        "table": {row: table.cells[row] for row in table.rows},
        "results": [r.to_dict() for r in report.results],
        "training": [
            {"label": h.label, "final_loss": h.losses[-1] if h.losses else None}
            for h in report.histories
        ],
        "plots": sorted(report.plots),
    }
