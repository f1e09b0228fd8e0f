"""The report's detection part: eval-detection's columns (`LVIS APbox`, Table 22's LVIS column,
and `LVIS APmask`; the same for COCO) after the other evaluations, and a TIDE table per
detection set shaped like Table 21 (a row per model and IoU threshold, the AP and the AP each
error type costs), in Markdown, HTML and report.json."""

from __future__ import annotations

import json
import re

from mawsflow.evaluation.classify import NamedTestSet, flat_metrics
from mawsflow.evaluation.report import (
    TIDE_COLUMNS,
    build_report,
    render_html,
    render_json,
    render_markdown,
    tide_breakdown,
)
from mawsflow.evaluation.results import CONTROL_ROW, EvalResult, write_result
from mawsflow.steps import report as report_step
from mawsflow.steps.eval_detection import table_cells

ERRORS = ("Cls", "Loc", "Both", "Dupl", "Bkgd", "Miss")


def _finetune(row: str, top1: float) -> EvalResult:
    return EvalResult(
        step="eval",
        evaluation="Fashion-MNIST",
        pretraining=row,
        metrics={"top1": top1},
        table={"Fashion-MNIST": top1},
    )


def _detection(row: str, name: str, box_ap: float, ious=(0.5, 0.75), **metrics) -> EvalResult:
    """An eval-detection result as the step builds it (its own table_cells and flat_metrics):
    the set's APbox and APmask columns; its metrics prefixed by the set's name, TIDE's
    breakdown among them (values distinct per row, IoU and error)."""
    base = {"LVIS": 10.0, "COCO": 20.0}[name] + {"MAE": 0, "WSP": 1, "MAE→WSP": 2}.get(row, 3)
    scored = {"box_ap": box_ap, "mask_ap": box_ap - 3.0, "box_ap50": box_ap + 9.0}
    for iou in ious:
        scored[f"tide_{iou:g}_ap"] = base + iou
        for i, error in enumerate(ERRORS):
            scored[f"tide_{iou:g}_{error.lower()}"] = base + iou + i / 10
    per_set = [(NamedTestSet(name, f"/data/{name}", None), scored | metrics)]
    return EvalResult(
        step="eval-detection",
        evaluation=f"detection on {name}",
        pretraining=row,
        metrics=flat_metrics(per_set),
        table=table_cells(per_set),
    )


def _run() -> list[EvalResult]:
    rows = ("MAE", "WSP", "MAE→WSP")
    # Given with the detection results first and the rows out of order: the columns follow
    # the results' order, the rows the paper's.
    return [
        *[_detection(row, "LVIS", 40.0 + i) for i, row in enumerate(reversed(rows))],
        *[_finetune(row, 80.0 + i) for i, row in enumerate(rows)],
        *[_detection(row, "COCO", 50.0 + i) for i, row in enumerate(rows)],
    ]


def test_detection_columns_hold_box_and_mask_ap_and_say_so():
    report = build_report(_run())
    table = report.table
    assert table.rows == ["MAE", "WSP", "MAE→WSP"]
    assert table.columns == [
        "LVIS APbox", "LVIS APmask", "Fashion-MNIST", "COCO APbox", "COCO APmask",
    ]  # fmt: skip
    assert table.cells["MAE"]["LVIS APbox"] == 42.0 and table.cells["MAE"]["LVIS APmask"] == 39.0
    assert table.cells["MAE→WSP"]["LVIS APbox"] == 40.0
    assert table.best("COCO APbox") == table.cells["MAE→WSP"]["COCO APbox"] == 52.0
    markdown = render_markdown(report)
    assert "The detection columns (LVIS APbox, LVIS APmask, COCO APbox, COCO APmask)" in markdown
    assert "APbox of the boxes, what Table 22 reports for LVIS and COCO" in markdown
    header = "| Method | LVIS APbox | LVIS APmask | Fashion-MNIST | COCO APbox | COCO APmask |"
    assert header in markdown
    assert "| MAE | **42.0** | **39.0** | 80.0 | 50.0 | 47.0 |" in markdown
    assert "The detection columns (LVIS APbox" in render_html(report)
    # A run without detection says nothing of AP and has no TIDE section.
    plain = build_report([_finetune("MAE", 80.0)])
    assert "AP" not in render_markdown(plain) and "TIDE" not in render_markdown(plain)
    assert render_json(plain)["tide"] == {}


def test_tide_table_per_set_has_a_row_per_model_and_threshold_in_table_21s_columns():
    report = build_report(_run())
    assert list(report.tide) == ["LVIS", "COCO"]
    lvis = report.tide["LVIS"]
    # The lower threshold first, the models in the table's order within it.
    assert [(r.row, r.iou) for r in lvis] == [
        ("MAE", 0.5), ("WSP", 0.5), ("MAE→WSP", 0.5),
        ("MAE", 0.75), ("WSP", 0.75), ("MAE→WSP", 0.75),
    ]  # fmt: skip
    assert ("AP", *ERRORS) == TIDE_COLUMNS
    wsp = lvis[4]
    assert wsp.values == {"AP": 11.75, **{e: 11.75 + i / 10 for i, e in enumerate(ERRORS)}}

    markdown = render_markdown(report)
    section = markdown.split("## TIDE errors", 1)[1].split("\n## ", 1)[0]
    assert "progressive" in section
    assert section.count("| Method | IoU | AP | Cls | Loc | Both | Dupl | Bkgd | Miss |") == 2
    lvis_part, coco_part = section.split("**LVIS**")[1].split("**COCO**")
    assert "| WSP | 0.75 | 11.75 | 11.75 | 11.85 | 11.95 | 12.05 | 12.15 | 12.25 |" in lvis_part
    assert "| MAE→WSP | 0.5 | 22.50 |" in coco_part
    assert len(re.findall(r"^\| (MAE|WSP|MAE→WSP) \| 0\.", lvis_part, re.MULTILINE)) == 6

    html = render_html(report)
    assert "<h2>TIDE errors</h2>" in html and html.count("<table class='tide'>") == 2
    assert "<tr><th>WSP</th><td>0.75</td><td>11.75</td><td>11.75</td><td>11.85</td>" in html

    tide = render_json(report)["tide"]
    assert tide["COCO"][0] == {
        "row": "MAE",
        "iou": 0.5,
        "AP": 20.5,
        **{e: 20.5 + i / 10 for i, e in enumerate(ERRORS)},
    }
    assert [(r["row"], r["iou"]) for r in tide["LVIS"]] == [(r.row, r.iou) for r in lvis]


def test_missing_tide_values_show_a_dash_and_missing_models_leave_no_row():
    results = [
        _finetune("MAE", 80.0),
        _finetune("WSP", 81.0),
        # WSP has no detection result at all; the control's TIDE ran at 0.5 only and lacks
        # Both; MAE's carries metrics that are not TIDE's.
        _detection("MAE", "LVIS", 30.0, tide_note_x=1.0, tide_0_5=2.0),
        _detection(CONTROL_ROW, "LVIS", 5.0, ious=(0.5,)),
    ]
    del results[-1].metrics["lvis_tide_0.5_both"]
    report = build_report(results)
    assert report.table.cells["WSP"].get("LVIS APbox") is None
    assert "| WSP | **81.0** | – | – |" in render_markdown(report)
    rows = report.tide["LVIS"]
    assert [(r.row, r.iou) for r in rows] == [
        ("MAE", 0.5), (CONTROL_ROW, 0.5), ("MAE", 0.75),
    ]  # fmt: skip
    assert "Both" not in rows[1].values
    assert f"| {CONTROL_ROW} | 0.5 | 13.50 | 13.50 | 13.60 | – | 13.80 |" in render_markdown(report)
    assert set(rows[0].values) == set(TIDE_COLUMNS)  # the stray metrics are not columns


def test_tide_metrics_are_read_per_set_in_any_case_and_at_any_threshold():
    result = _detection("MAE", "COCO", 1.0, ious=())
    assert tide_breakdown(result) == {}
    result.metrics |= {"COCO_TIDE_0.5_Cls": 3.0, "coco_tide_.75_MISS": 4.0}
    result.metrics |= {"coco_tide_0.9_bkgd": 5.0, "coco_tide_0.5_unknown": 9.0}
    # Unprefixed: the result's evaluation; a prefix of no column: named as it is.
    result.metrics |= {"tide_0.5_loc": 6.0, "objects365_tide_0.5_ap": 7.0}
    assert tide_breakdown(result) == {
        "COCO": {0.5: {"Cls": 3.0}, 0.75: {"Miss": 4.0}, 0.9: {"Bkgd": 5.0}},
        "detection on COCO": {0.5: {"Loc": 6.0}},
        "objects365": {0.5: {"AP": 7.0}},
    }
    # A set's name that is not its prefix as written ("LVIS v1" → lvis_v1) is still found.
    named = _detection("MAE", "LVIS", 1.0, ious=(0.5,))
    named.table = {"LVIS v1 APbox": 1.0}
    named.metrics = {k.replace("lvis_", "lvis_v1_", 1): v for k, v in named.metrics.items()}
    assert list(tide_breakdown(named)) == ["LVIS v1"]


def test_report_step_writes_the_detection_columns_and_tide_from_result_files(tmp_path):
    paths = []
    for i, result in enumerate(_run()):
        write_result(str(tmp_path / f"result{i}"), result)
        paths.append(str(tmp_path / f"result{i}"))
    out = tmp_path / "report"
    assert report_step.main(["--result", *paths, "--output", str(out)]) == 0
    summary = json.loads((out / "report.json").read_text())
    assert summary["columns"][:3] == ["LVIS APbox", "LVIS APmask", "Fashion-MNIST"]
    assert summary["table"]["WSP"]["LVIS APbox"] == 41.0
    assert len(summary["tide"]["LVIS"]) == 6 and len(summary["tide"]["COCO"]) == 6
    assert "## TIDE errors" in (out / "report.md").read_text()
    assert "<h2>TIDE errors</h2>" in (out / "report.html").read_text()
