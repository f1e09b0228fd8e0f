"""The run report: every evaluation's result in a table shaped like the paper's Table 22, plots
of the training losses and of low-shot accuracy against K, as Markdown, HTML and JSON.

Rows are the pretraining methods (MAE, WSP, MAE→WSP, in the paper's order, then any other
lineage a result names, and the control — no pretraining — last); columns are the evaluations,
in the order the results were given. A cell that is a mean over seeded runs shows mean ± std.
The best value of each column is bold, as in the paper. A "Reading" section says, from the
numbers, how MAE→WSP compares with WSP (the paper's claim) and what pretraining adds over the
control, and which differences are within the spread over seeds.

Detection results (`eval-detection`: columns `<set> APbox`, what Table 22 reports for LVIS and
COCO, and `<set> APmask`) also fill a TIDE table per detection set, shaped like the paper's
Table 21: a row per model and IoU threshold (0.5, 0.75), the AP TIDE measured and the AP each
main error type costs (Cls, Loc, Both, Dupl, Bkgd, Miss, progressive mode), read from the
result's `<set>_tide_<IoU>_<error>` metrics.

A sweep (several models per method: mawsflow.orchestration.sweeps) keys its rows by method ×
architecture × pretraining dataset, plus the epochs when they vary, and adds a plot of
accuracy against pretraining FLOPs (a line per method, a point per grid cell; the paper's
Figs. 3 and 5), from each result's `pretrained` facets. Plots are PNGs embedded as
base64 data URIs, so the one file renders in the Kubeflow UI's Markdown and HTML viewers
without side files.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display in a pipeline pod
import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter

from mawsflow import storage
from mawsflow.evaluation.detection_metrics import TIDE_ERRORS
from mawsflow.evaluation.results import (
    CONTROL_ROW,
    PAPER_ROWS,
    EvalResult,
    Pretraining,
    TrainingHistory,
    read_result,
)

REPORT_FORMAT = "mawsflow.report/1"  # report.json
FLOPS_PLOT = "Accuracy against pretraining FLOPs"
# The facets of a pretraining run that name a row when a run has several (a sweep), in order.
ROW_FACETS = ("arch", "dataset", "epochs")
# The steps whose table cells are box AP, not top-1 (Table 22's LVIS and COCO columns).
DETECTION_STEPS = ("eval-detection", "finetune-detection")
# Table 21's columns: the AP TIDE measured, then the AP each main error type costs.
TIDE_COLUMNS = ("AP", *TIDE_ERRORS.values())
# A result's TIDE metric: `[<set>_]tide_<IoU threshold>_<column>`, the set's prefix as
# eval-detection writes it (lvis_tide_0.5_cls, coco_tide_0.75_ap).
_TIDE_METRIC = re.compile(r"^(?:(?P<set>.+)_)?tide_(?P<iou>\d*\.?\d+)_(?P<column>[a-z]+)$", re.I)
# What a detection step's column adds after the set's name: "LVIS APbox", "LVIS APmask".
_AP_KIND = re.compile(r" AP(box|mask)$")


@dataclass
class ReportTable:
    """Table 22's shape: `cells[row][column]` holds a value in percent; `runs[row][column]`
    its value per seed where the cell is a mean over seeded runs."""

    rows: list[str]
    columns: list[str]
    cells: dict[str, dict[str, float]]
    runs: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    # How each row's model was pretrained, where the results say (a sweep's rows).
    pretrained: dict[str, Pretraining] = field(default_factory=dict)

    def method(self, row: str) -> str:
        return self.pretrained[row].method if row in self.pretrained else row

    def spread(self, row: str, column: str) -> tuple[float, int] | None:
        """(sample std, number of seeds) of a cell that is a mean over ≥ 2 seeds."""
        values = self.runs.get(row, {}).get(column, [])
        return (statistics.stdev(values), len(values)) if len(values) > 1 else None

    def best(self, column: str) -> float | None:
        values = [self.cells[r][column] for r in self.rows if column in self.cells[r]]
        return max(values) if values else None


@dataclass
class TideRow:
    """One model's TIDE breakdown at one IoU threshold: Table 21's AP and error columns (AP
    points; a column the result lacks is absent)."""

    row: str
    iou: float
    values: dict[str, float]


@dataclass
class Report:
    table: ReportTable
    results: list[EvalResult]
    histories: list[TrainingHistory] = field(default_factory=list)
    plots: dict[str, bytes] = field(default_factory=dict)  # title → PNG
    # Per detection evaluation (its name: LVIS, COCO), Table 21's rows.
    tide: dict[str, list[TideRow]] = field(default_factory=dict)
    # A scheduled retraining run's promotion gate decision (promotion_gate's gate.json).
    gate: dict[str, Any] | None = None


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


def _pretraining(result: EvalResult) -> Pretraining | None:
    return Pretraining.from_dict(result.pretrained) if result.pretrained else None


def _facet_text(pretraining: Pretraining, facet: str) -> str:
    if facet == "epochs":
        return " + ".join(f"{stage} {epochs:g} ep" for stage, epochs in pretraining.epochs.items())
    value = str(getattr(pretraining, facet))
    # A dataset is named by its folder (…/ig-3b/manifest.json → ig-3b).
    return value.rstrip("/").removesuffix("/manifest.json").rsplit("/", 1)[-1]


def varying_facets(results: Sequence[EvalResult]) -> list[str]:
    """The facets (ROW_FACETS) that differ between the results' pretrained models of one
    method: what a row must name besides the method. None for a run of one model per method."""
    described = [(r.pretraining, p) for r in results if (p := _pretraining(r)) is not None]
    varying = []
    for facet in ROW_FACETS:
        seen: dict[str, set[str]] = {}
        for method, pretraining in described:
            seen.setdefault(method, set()).add(_facet_text(pretraining, facet))
        if any(len(values) > 1 for values in seen.values()):
            varying.append(facet)
    return varying


def row_name(result: EvalResult, facets: Sequence[str]) -> str:
    """The result's row: its method, then the varying facets of its pretrained model
    ("MAE→WSP · vit_b16", "MAE→WSP · MAE 1 ep + WSP 2 ep")."""
    pretraining = _pretraining(result)
    if not facets or pretraining is None:
        return result.pretraining
    named = [text for f in facets if (text := _facet_text(pretraining, f))]
    return " · ".join([result.pretraining, *named])


def _method_rank(method: str) -> int:
    """The paper's rows first, in its order; other lineages next; the control last."""
    if method in PAPER_ROWS:
        return PAPER_ROWS.index(method)
    return len(PAPER_ROWS) + (1 if method == CONTROL_ROW else 0)


def build_table(results: Sequence[EvalResult]) -> ReportTable:
    """Place every result's table cells; a repeated (row, column) is an error, not an overwrite.

    A run of one model per method has the rows MAE, WSP, MAE→WSP (the paper's, always shown),
    then any other lineage, then the control. A sweep's rows name each model's varying facets
    (architecture, pretraining dataset, epochs) after its method, grouped by method; a model
    trained alike in several cells is one row, from its first results."""
    if not results:
        raise ValueError("the report needs at least one evaluation result")
    facets = varying_facets(results)
    rows = [] if facets else list(PAPER_ROWS)
    columns: list[str] = []
    cells: dict[str, dict[str, float]] = {row: {} for row in rows}
    runs: dict[str, dict[str, list[float]]] = {}
    pretrained: dict[str, Pretraining] = {}
    methods: dict[str, str] = {}
    for result in results:
        row = row_name(result, facets)
        methods[row] = result.pretraining
        if (pretraining := _pretraining(result)) is not None:
            pretrained.setdefault(row, pretraining)
        if row not in cells:
            rows.append(row)
            cells[row] = {}
        repeat = bool(facets) and pretrained.get(row) == _pretraining(result)
        for column, value in result.table.items():
            if column in cells[row] and repeat:
                # A model the grid trains in several cells alike (WSP from scratch at one
                # WSP schedule across MAE epochs, the control): its first evaluation stands.
                continue
            if column in cells[row]:
                raise ValueError(
                    f"two results give {row!r} / {column!r}; each table cell "
                    "must come from one evaluation"
                )
            if column not in columns:
                columns.append(column)
            cells[row][column] = float(value)
        for column, values in _seed_values(result).items():
            if column in result.table and values:
                runs.setdefault(row, {}).setdefault(column, values)
    # The control is the reference every pretrained row is read against: last. (A stable
    # sort: rows of one method keep the order their results came in, e.g. the sweep's grid.)
    rows.sort(key=lambda row: _method_rank(methods.get(row, row)) if facets else 0)
    if not facets and CONTROL_ROW in rows:
        rows.remove(CONTROL_ROW)
        rows.append(CONTROL_ROW)
    return ReportTable(rows=rows, columns=columns, cells=cells, runs=runs, pretrained=pretrained)


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


def plot_lowshot(results: Sequence[EvalResult], facets: Sequence[str] = ()) -> bytes:
    """Mean top-1 against K with the spread over seeds, one line per low-shot result, named
    by its row (`facets`: a sweep's, see row_name)."""
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
            label=f"{row_name(result, facets)}: {result.evaluation}",
        )
        axis.set_xticks(shots)
    axis.set_xlabel("K (labelled examples per class)")
    axis.set_ylabel("top-1 (%)")
    axis.set_title("Low-shot accuracy")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    return _png(figure)


_SHOTS = re.compile(r" (\d+)-shot$")


def headline_columns(table: ReportTable) -> list[str]:
    """The columns the FLOPs plot draws: every evaluation, low-shot at its largest K only."""
    largest: dict[str, int] = {}
    for column in table.columns:
        if match := _SHOTS.search(column):
            stem = column[: match.start()]
            largest[stem] = max(largest.get(stem, 0), int(match.group(1)))
    return [
        column
        for column in table.columns
        if not (match := _SHOTS.search(column))
        or int(match.group(1)) == largest[column[: match.start()]]
    ]


# (pretraining FLOPs, accuracy, row) of one grid cell.
FlopsPoint = tuple[float, float, str]


def flops_points(table: ReportTable) -> dict[str, dict[str, list[FlopsPoint]]]:
    """column → method → its rows' (pretraining FLOPs, value, row), by FLOPs: the points of the
    FLOPs plot. Rows without a FLOPs count (the control, older model cards) are left out."""
    points: dict[str, dict[str, list[FlopsPoint]]] = {}
    for column in headline_columns(table):
        for row in table.rows:
            pretraining = table.pretrained.get(row)
            value = table.cells[row].get(column)
            if pretraining is None or not pretraining.flops or value is None:
                continue
            if math.isnan(value):
                continue
            lines = points.setdefault(column, {})
            lines.setdefault(pretraining.method, []).append((pretraining.flops, value, row))
        for line in points.get(column, {}).values():
            line.sort()
    return points


def plot_flops(points: dict[str, dict[str, list[FlopsPoint]]]) -> bytes:
    """Accuracy against pretraining FLOPs (log scale), a panel per headline column and a line
    per method through its grid cells: the paper's Fig. 5 (and Fig. 3 over model sizes). Read
    the FLOP-matched comparison off a vertical line."""
    columns = list(points)
    figure, axes = plt.subplots(
        1, len(columns), figsize=(4.6 * len(columns), 3.8), squeeze=False, sharex=True
    )
    for axis, column in zip(axes[0], columns, strict=True):
        for method, line in points[column].items():
            axis.plot([p[0] for p in line], [p[1] for p in line], marker="o", label=method)
            for flops, value, row in line:
                # The grid cell: the row's facets after its method ("vit_l16").
                cell = row.removeprefix(method).removeprefix(" · ")
                axis.annotate(cell, (flops, value), fontsize="x-small", alpha=0.8,
                              xytext=(3, 3), textcoords="offset points")  # fmt: skip
        axis.set_xscale("log")
        axis.xaxis.set_minor_formatter(NullFormatter())  # decades only: no crowded labels
        axis.set_xlabel("pretraining FLOPs (MAE + WSP)")
        axis.set_ylabel("top-1 (%)")
        axis.set_title(column, fontsize="medium")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    return _png(figure)


def _metric_prefix(name: str) -> str:
    """A test set's name as the steps prefix its metrics with ('LVIS v1' → 'lvis_v1'; the
    rule of mawsflow.evaluation.classify.metric_key, which imports torch: the report's image
    has none)."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def tide_breakdown(result: EvalResult) -> dict[str, dict[float, dict[str, float]]]:
    """Detection set → IoU threshold → Table 21's columns, from the result's
    `[<set>_]tide_<IoU>_<column>` metrics (any case: lvis_tide_0.5_cls is LVIS's Cls at IoU
    0.5). The set is named as in the result's table ("LVIS APbox" → LVIS); metrics without a
    set prefix belong to the result's evaluation."""
    by_name = {column.lower(): column for column in TIDE_COLUMNS}
    sets = {_metric_prefix(_AP_KIND.sub("", column)): _AP_KIND.sub("", column) for column in
            result.table}  # fmt: skip
    breakdown: dict[str, dict[float, dict[str, float]]] = {}
    for key, value in result.metrics.items():
        match = _TIDE_METRIC.match(key)
        if match is None or match["column"].lower() not in by_name:
            continue
        prefix = match["set"]
        name = result.evaluation if prefix is None else sets.get(prefix.lower(), prefix)
        columns = breakdown.setdefault(name, {}).setdefault(float(match["iou"]), {})
        columns[by_name[match["column"].lower()]] = float(value)
    return breakdown


def tide_tables(
    results: Sequence[EvalResult], facets: Sequence[str] = (), row_order: Sequence[str] = ()
) -> dict[str, list[TideRow]]:
    """Per detection set, Table 21's rows: the models (named as the main table's rows,
    `facets` as row_name's) at each IoU threshold, the lower threshold first and the models in
    `row_order` (the main table's) within it. Results without TIDE metrics add nothing."""
    found: dict[str, list[TideRow]] = {}
    for result in results:
        for name, thresholds in tide_breakdown(result).items():
            rows = found.setdefault(name, [])
            for iou, values in thresholds.items():
                rows.append(TideRow(row_name(result, facets), iou, values))
    order = {row: i for i, row in enumerate(row_order)}
    for rows in found.values():
        rows.sort(key=lambda r: (r.iou, order.get(r.row, len(order))))
    return found


def _tide_cell(row: TideRow, column: str) -> str:
    value = row.values.get(column)
    return "–" if value is None or math.isnan(value) else f"{value:.2f}"


TIDE_TITLE = "TIDE errors"
TIDE_CAPTION = (
    "TIDE's error breakdown of each detection set, as the paper's Table 21: the AP TIDE "
    "measured at each IoU threshold, then the AP each main error type costs in progressive "
    "mode (classification, localisation, both, duplicate, background, missed); lower is better."
)


def _caption(report: Report) -> str:
    """What the main table's cells are: top-1, and AP for the detection steps' columns."""
    text = (
        "Top-1 accuracy (%) by pretraining method (rows) and evaluation (columns), as the "
        "paper's Table 22; the best value of each column is bold."
    )
    detection = [
        column
        for column in report.table.columns
        if any(r.step in DETECTION_STEPS and column in r.table for r in report.results)
    ]
    if detection:
        text += (
            f" The detection columns ({', '.join(detection)}) are average precision (AP, "
            "0–100): APbox of the boxes, what Table 22 reports for LVIS and COCO, and APmask "
            "of the instance masks (Tables 7 and 8)."
        )
    return text


def build_report(
    results: Sequence[EvalResult], histories: Sequence[TrainingHistory] = ()
) -> Report:
    plots: dict[str, bytes] = {}
    drawable = [h for h in histories if h.samples]
    if drawable:
        plots["Training loss"] = plot_loss_curves(drawable)
    lowshot = [r for r in results if r.lowshot]
    if lowshot:
        plots["Low-shot accuracy against K"] = plot_lowshot(lowshot, varying_facets(results))
    table = build_table(results)
    # Only a run of several models per method (a sweep) has a curve to draw.
    if table.pretrained and varying_facets(results):
        points = flops_points(table)
        if points:
            plots[FLOPS_PLOT] = plot_flops(points)
    tide = tide_tables(results, varying_facets(results), table.rows)
    return Report(table, list(results), list(histories), plots, tide)


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


def _reference(table: ReportTable, row: str, method: str) -> str | None:
    """The row of `method` that `row` is read against: the same architecture and pretraining
    data, and for WSP the same WSP epochs (the paper's comparisons at a matched WSP schedule)."""
    mine = table.pretrained.get(row)
    for other in table.rows:
        if table.method(other) != method or not table.cells.get(other):
            continue
        theirs = table.pretrained.get(other)
        if mine is None or theirs is None:
            if mine is None and theirs is None:
                return other
            continue
        same = mine.arch == theirs.arch
        if method != CONTROL_ROW:  # the control saw no data
            same = same and mine.dataset == theirs.dataset
        if method == "WSP":
            same = same and mine.epochs.get("WSP") == theirs.epochs.get("WSP")
        if same:
            return other
    return None


def reading(table: ReportTable) -> list[str]:
    """What the numbers say about the paper's claim (MAE→WSP matches or beats WSP, §4 and
    Table 22) and about pretraining against the control; empty when those rows are absent.
    In a sweep each MAE→WSP row is read against the WSP row of its architecture, data and WSP
    epochs, and each row against the control of its architecture."""

    def differences(row: str, reference: str) -> str:
        return "; ".join(d for c in table.columns if (d := _difference(table, row, reference, c)))

    lines = []
    for row in table.rows:
        if table.method(row) != "MAE→WSP" or not table.cells.get(row):
            continue
        if (wsp := _reference(table, row, "WSP")) is not None:
            against = "MAE→WSP against WSP" if row == "MAE→WSP" else f"{row} against {wsp}"
            lines.append(
                f"{against} (the paper finds MAE→WSP matches or beats WSP on every "
                "evaluation, at billion scale): " + differences(row, wsp) + "."
            )
    for row in table.rows:
        if table.method(row) == CONTROL_ROW or not table.cells.get(row):
            continue
        if (control := _reference(table, row, CONTROL_ROW)) is not None:
            against = "the control (no pretraining)" if control == CONTROL_ROW else control
            lines.append(f"{row} against {against}: " + differences(row, control) + ".")
    return lines


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _gate_rows(gate: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(metric, production, new model, difference) for each headline metric."""
    rows = []
    for item in gate.get("comparison", []):
        old, new = item.get("production"), item.get("candidate")
        rows.append(
            (
                str(item.get("metric")),
                "–" if old is None else f"{old:.1f}",
                "–" if new is None else f"{new:.1f}",
                "–" if old is None or new is None else f"{new - old:+.1f}",
            )
        )
    return rows


def gate_summary(gate: Mapping[str, Any]) -> str:
    """One sentence: what the gate decided, on which model, and why."""
    verdict = "promoted to production" if gate.get("promoted") else "not promoted"
    before = gate.get("production_before") or "none"
    reasons = "; ".join(gate.get("reasons", []))
    rules = gate.get("rules", {})
    return (
        f"The new model ({gate.get('row')}, registry id {gate.get('candidate')}) was {verdict}: "
        f"{reasons}. Production before: {before}; after: {gate.get('production_after')}. "
        f"Rules: no headline metric worse by more than {rules.get('max_drop')} points, one "
        f"better by {rules.get('min_gain')} or more."
    )


def gate_markdown(gate: Mapping[str, Any] | None) -> list[str]:
    if not gate:
        return []
    lines = ["", "## Promotion gate", "", gate_summary(gate), ""]
    lines += ["| Headline metric | Production | New model | Difference |"]
    lines += ["| --- | ---: | ---: | ---: |"]
    lines += [f"| {m} | {old} | {new} | {diff} |" for m, old, new, diff in _gate_rows(gate)]
    return lines


def gate_html(gate: Mapping[str, Any] | None) -> str:
    if not gate:
        return ""
    esc = html.escape
    rows = "".join(
        f"<tr><th>{esc(m)}</th><td>{old}</td><td>{new}</td><td>{diff}</td></tr>"
        for m, old, new, diff in _gate_rows(gate)
    )
    return (
        f"<h2>Promotion gate</h2><p>{esc(gate_summary(gate))}</p><table><tr><th>Headline "
        f"metric</th><th>Production</th><th>New model</th><th>Difference</th></tr>{rows}</table>"
    )


def render_markdown(report: Report) -> str:
    table = report.table
    lines = ["# mawsflow run report", ""]
    lines.append(_caption(report))
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
    if report.tide:
        lines += ["", f"## {TIDE_TITLE}", "", TIDE_CAPTION]
        for evaluation, rows in report.tide.items():
            lines += ["", f"**{evaluation}**", ""]
            lines.append("| Method | IoU | " + " | ".join(TIDE_COLUMNS) + " |")
            lines.append("| --- | ---: |" + " ---: |" * len(TIDE_COLUMNS))
            for tide_row in rows:
                cells = " | ".join(_tide_cell(tide_row, c) for c in TIDE_COLUMNS)
                lines.append(f"| {tide_row.row} | {tide_row.iou:g} | {cells} |")
    read = reading(table) + training_lines(report.histories)
    if read:
        lines += ["", "## Reading", ""] + [f"- {line}" for line in read]
    lines += gate_markdown(report.gate)
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
    tide_html = ""
    if report.tide:
        tide_head = "".join(f"<th>{esc(c)}</th>" for c in TIDE_COLUMNS)
        tide_html = f"<h2>{esc(TIDE_TITLE)}</h2><p>{esc(TIDE_CAPTION)}</p>"
        for evaluation, rows in report.tide.items():
            body_rows = "".join(
                f"<tr><th>{esc(r.row)}</th><td>{r.iou:g}</td>"
                + "".join(f"<td>{_tide_cell(r, c)}</td>" for c in TIDE_COLUMNS)
                + "</tr>"
                for r in rows
            )
            tide_html += (
                f"<h3>{esc(evaluation)}</h3><table class='tide'><tr><th>Method</th><th>IoU</th>"
                f"{tide_head}</tr>{body_rows}</table>"
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
        f"<h1>mawsflow run report</h1><p>{esc(_caption(report))}</p>"
        f"<table><tr><th>Method</th>{head}</tr>{''.join(body)}</table>{tide_html}{read_html}"
        f"{gate_html(report.gate)}"
        f"<h2>Evaluations</h2><ul>{items}</ul>{figures}</body></html>\n"
    )


def render_json(report: Report) -> dict[str, Any]:
    table = report.table
    return {
        "format": REPORT_FORMAT,
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
        # The FLOPs plot's points: column → method → [[FLOPs, top-1, row], …].
        "flops": {
            column: {method: [list(point) for point in line] for method, line in lines.items()}
            for column, lines in flops_points(table).items()
        }
        if FLOPS_PLOT in report.plots
        else {},
        "pretrained": {row: p.to_dict() for row, p in table.pretrained.items()},
        # Table 21 per detection evaluation: [{"row", "iou", "AP", "Cls", …}, …].
        "tide": {
            evaluation: [{"row": r.row, "iou": r.iou, **r.values} for r in rows]
            for evaluation, rows in report.tide.items()
        },
        "gate": report.gate,
    }


def read_results(uri: str) -> list[EvalResult]:
    """An evaluation output's result, or every result of a report's report.json (a sweep's
    report merges its grid cells' reports)."""
    if uri.endswith("report.json"):
        data = storage.read_json(uri)
        if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT:
            raise ValueError(f"{uri}: not a report (expected format {REPORT_FORMAT!r})")
        return [EvalResult.from_dict(r, source=uri) for r in data.get("results", [])]
    return [read_result(uri)]
