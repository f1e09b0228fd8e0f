"""The run report: every evaluation's result in a table shaped like the paper's Table 22, plots
of the training losses and of low-shot accuracy against K, as Markdown, HTML and JSON.

Rows are the pretraining methods (MAE, WSP, MAE→WSP, in the paper's order, then any other
lineage a result names, and the control — no pretraining — last); columns are the evaluations,
in the order the results were given. A cell that is a mean over seeded runs shows mean ± std.
The best value of each column is bold, as in the paper. A "Reading" section says, from the
numbers, how MAE→WSP compares with WSP (the paper's claim) and what pretraining adds over the
control, and which differences are within the spread over seeds. Plots are PNGs embedded as
base64 data URIs, so the one file renders in the Kubeflow UI's Markdown and HTML viewers
without side files.
"""

from __future__ import annotations

import base64
import html
import io
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display in a pipeline pod
import matplotlib.pyplot as plt

from mawsflow.evaluation.results import CONTROL_ROW, PAPER_ROWS, EvalResult, TrainingHistory


@dataclass
class ReportTable:
    """Table 22's shape: `cells[row][column]` holds a value in percent; `runs[row][column]`
    its value per seed where the cell is a mean over seeded runs."""

    rows: list[str]
    columns: list[str]
    cells: dict[str, dict[str, float]]
    runs: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def spread(self, row: str, column: str) -> tuple[float, int] | None:
        """(sample std, number of seeds) of a cell that is a mean over ≥ 2 seeds."""
        values = self.runs.get(row, {}).get(column, [])
        return (statistics.stdev(values), len(values)) if len(values) > 1 else None

    def best(self, column: str) -> float | None:
        values = [self.cells[r][column] for r in self.rows if column in self.cells[r]]
        return max(values) if values else None


@dataclass
class Report:
    table: ReportTable
    results: list[EvalResult]
    histories: list[TrainingHistory] = field(default_factory=list)
    plots: dict[str, bytes] = field(default_factory=dict)  # title → PNG


def _seed_values(result: EvalResult) -> dict[str, list[float]]:
    """Each table column's per-seed values: the result's `runs`, or for a low-shot result that
    predates them, its per-K runs (its columns follow its K in order)."""
    if result.runs:
        return result.runs
    if result.lowshot and len(result.lowshot) == len(result.table):
        return {
            column: [float(v) for v in summary.get("runs", [])]
            for column, summary in zip(result.table, result.lowshot.values(), strict=True)
        }
    return {}


def build_table(results: Sequence[EvalResult]) -> ReportTable:
    """Place every result's table cells; a repeated (row, column) is an error, not an overwrite."""
    if not results:
        raise ValueError("the report needs at least one evaluation result")
    rows = list(PAPER_ROWS)
    columns: list[str] = []
    cells: dict[str, dict[str, float]] = {row: {} for row in rows}
    runs: dict[str, dict[str, list[float]]] = {}
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
        for column, values in _seed_values(result).items():
            if column in result.table and values:
                runs.setdefault(result.pretraining, {})[column] = values
    # The control is the reference every pretrained row is read against: last.
    if CONTROL_ROW in rows:
        rows.remove(CONTROL_ROW)
        rows.append(CONTROL_ROW)
    return ReportTable(rows=rows, columns=columns, cells=cells, runs=runs)


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def loss_fall(history: TrainingHistory) -> float | None:
    """How far the loss fell from its first logged value to its last, as a fraction of the
    first (0.3: it ended 30% below where it started)."""
    if len(history.losses) < 2 or history.losses[0] <= 0:
        return None
    return 1.0 - history.losses[-1] / history.losses[0]


def plot_loss_curves(histories: Sequence[TrainingHistory]) -> bytes:
    """Training loss against samples seen, one line per training step, each relative to its
    first logged value: MAE's pixel loss (~1) and WSP's cross-entropy (~ln classes) share one
    axis and read as how much each has learned; the dotted line is 30% below the start."""
    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    for history in histories:
        start = history.losses[0] if history.losses and history.losses[0] > 0 else 1.0
        axis.plot(
            history.samples,
            [loss / start for loss in history.losses],
            label=f"{history.label} (starts at {start:.2f})",
            linewidth=1.2,
        )
    axis.axhline(0.7, color="grey", linestyle=":", linewidth=1.0)
    axis.set_xlabel("samples seen")
    axis.set_ylabel("training loss / its first logged value")
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
    """(text, is best) for one cell: the value, or mean ± std over seeds; a missing cell shows
    the paper's dash."""
    value = table.cells[row].get(column)
    if value is None or math.isnan(value):
        return "–", False
    spread = table.spread(row, column)
    text = f"{value:.1f}" if spread is None else f"{value:.1f} ± {spread[0]:.1f}"
    return text, value == table.best(column)


def _difference(table: ReportTable, row: str, reference: str, column: str) -> str | None:
    """`row` − `reference` on `column`, and whether it exceeds the spread over seeds."""
    a, b = table.cells.get(row, {}).get(column), table.cells.get(reference, {}).get(column)
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return None
    diff = a - b
    spreads = [table.spread(r, column) for r in (row, reference)]
    if all(sp is not None for sp in spreads):
        # The standard error of a difference of two means over seeds.
        error = math.sqrt(sum(sd**2 / n for sd, n in spreads))  # type: ignore[misc]
        verdict = "beyond" if abs(diff) > 2 * error else "within"
        return f"{column} {diff:+.1f} ({verdict} 2 standard errors of the seeds, {error:.1f})"
    return f"{column} {diff:+.1f} (one run each: no spread to judge it by)"


def training_lines(histories: Sequence[TrainingHistory]) -> list[str]:
    """One line per training curve: where its loss started and ended."""
    lines = []
    for h in histories:
        fall = loss_fall(h)
        if fall is not None:
            lines.append(
                f"{h.label}: training loss {h.losses[0]:.3f} → {h.losses[-1]:.3f} "
                f"({-100 * fall:+.0f}% from its start, over {h.samples[-1]} samples)"
            )
    return lines


def reading(table: ReportTable) -> list[str]:
    """What the numbers say about the paper's claim (MAE→WSP matches or beats WSP, §4 and
    Table 22) and about pretraining against the control; empty when those rows are absent."""
    lines = []
    if table.cells.get("MAE→WSP") and table.cells.get("WSP"):
        diffs = [d for c in table.columns if (d := _difference(table, "MAE→WSP", "WSP", c))]
        lines.append(
            "MAE→WSP against WSP (the paper finds MAE→WSP matches or beats WSP on every "
            "evaluation, at billion scale): " + "; ".join(diffs) + "."
        )
    if table.cells.get(CONTROL_ROW):
        for row in table.rows:
            if row == CONTROL_ROW or not table.cells.get(row):
                continue
            diffs = [d for c in table.columns if (d := _difference(table, row, CONTROL_ROW, c))]
            lines.append(f"{row} against the control (no pretraining): " + "; ".join(diffs) + ".")
    return lines


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
    read = reading(table) + training_lines(report.histories)
    if read:
        lines += ["", "## Reading", ""] + [f"- {line}" for line in read]
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
    read = reading(table) + training_lines(report.histories)
    read_html = (
        "<h2>Reading</h2><ul>" + "".join(f"<li>{esc(line)}</li>" for line in read) + "</ul>"
        if read
        else ""
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
        f"</p><table><tr><th>Method</th>{head}</tr>{''.join(body)}</table>{read_html}"
        f"<h2>Evaluations</h2><ul>{items}</ul>{figures}</body></html>\n"
    )


def render_json(report: Report) -> dict[str, Any]:
    table = report.table
    return {
        "format": "mawsflow.report/1",
        "rows": table.rows,
        "columns": table.columns,
        "table": {row: table.cells[row] for row in table.rows},
        "runs": table.runs,
        "reading": reading(table),
        "results": [r.to_dict() for r in report.results],
        "training": [
            {
                "label": h.label,
                "initial_loss": h.losses[0] if h.losses else None,
                "final_loss": h.losses[-1] if h.losses else None,
                "loss_fall": loss_fall(h),
                "points": len(h.losses),
            }
            for h in report.histories
        ],
        "plots": sorted(report.plots),
    }
