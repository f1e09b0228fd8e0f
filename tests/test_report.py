"""The report: a Table 22-shaped table holding every evaluation it was given, plots, and the
Markdown / HTML / JSON artifacts, from real step outputs."""

from __future__ import annotations

import base64
import io
import json
import re

import pytest
from PIL import Image

from mawsflow.evaluation.report import build_report, build_table, render_html, render_markdown
from mawsflow.evaluation.results import (
    PAPER_ROWS,
    EvalResult,
    model_lineage,
    read_history,
    read_result,
    write_result,
)
from mawsflow.steps import report as report_step
from trunk_artifacts import write_trunk_output


def _result(pretraining: str, table: dict[str, float], **extra) -> EvalResult:
    column = next(iter(table))
    return EvalResult(
        step=extra.pop("step", "zeroshot"),
        evaluation=extra.pop("evaluation", column),
        pretraining=pretraining,
        metrics={"top1": next(iter(table.values()))},
        table=table,
        **extra,
    )


def _results() -> list[EvalResult]:
    lowshot = {
        "1": {"mean": 40.0, "std": 2.0, "min": 38.0, "max": 42.0, "runs": [38.0, 42.0]},
        "5": {"mean": 70.0, "std": 1.0, "min": 69.0, "max": 71.0, "runs": [69.0, 71.0]},
    }
    return [
        _result("MAE", {"IN1k": 87.2, "iNat18": 86.5}, step="finetune", evaluation="ft MAE"),
        _result("WSP", {"IN1k": 87.6}, step="finetune", evaluation="ft WSP"),
        _result("MAE→WSP", {"IN1k": 88.8}, step="finetune", evaluation="ft MAWS"),
        _result("MAE→WSP", {"IN1k Zero-shot": 78.3}),
        _result(
            "WSP",
            {"IN1k 1-shot": 40.0, "IN1k 5-shot": 70.0},
            step="lowshot",
            evaluation="IN1k low-shot (VPT)",
            lowshot=lowshot,
        ),
        _result("SWAG (timm init)", {"IN1k Linear": 84.9}, step="linear-probe"),
    ]


def test_table_has_the_papers_rows_and_every_evaluations_columns():
    table = build_table(_results())
    assert table.rows[:3] == list(PAPER_ROWS)
    assert table.rows[3] == "SWAG (timm init)"
    assert table.columns == [
        "IN1k", "iNat18", "IN1k Zero-shot", "IN1k 1-shot", "IN1k 5-shot", "IN1k Linear",
    ]  # fmt: skip
    assert table.cells["MAE→WSP"]["IN1k"] == 88.8
    assert table.best("IN1k") == 88.8


def test_a_cell_given_twice_is_an_error():
    with pytest.raises(ValueError, match="each table cell"):
        build_table([_result("WSP", {"IN1k": 1.0}), _result("WSP", {"IN1k": 2.0})])
    with pytest.raises(ValueError, match="at least one"):
        build_table([])


def test_markdown_and_html_contain_every_evaluation_and_bold_the_best():
    results = _results()
    report = build_report(results)
    markdown, html = render_markdown(report), render_html(report)
    for result in results:
        assert result.evaluation in markdown and result.evaluation in html
        for column in result.table:
            assert column in markdown and column in html
    assert "| MAE→WSP | **88.8** |" in markdown
    assert "<td><b>88.8</b></td>" in html
    assert "| MAE | 87.2 | **86.5** | – |" in markdown  # missing cells show the paper's dash
    # The low-shot plot is embedded as a PNG that decodes.
    assert list(report.plots) == ["Low-shot accuracy against K"]
    data = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html).group(1)
    assert Image.open(io.BytesIO(base64.b64decode(data))).format == "PNG"


def test_report_step_reads_step_outputs_and_writes_three_artifacts(tmp_path):
    # Outputs as the steps leave them: results, and training outputs with their loss history.
    mae = write_trunk_output(tmp_path / "mae", step="mae")
    maws = write_trunk_output(tmp_path / "maws", step="wsp", init="mae")
    (maws / "history.json").write_text(
        json.dumps({"samples_per_step": 64, "steps": [2, 4, 6], "loss": [3.0, 2.5, 2.2]})
    )
    assert model_lineage(str(maws)) == "MAE→WSP" and model_lineage(str(mae)) == "MAE"
    paths = []
    for i, result in enumerate(_results()):
        write_result(str(tmp_path / f"result{i}"), result)
        paths.append(str(tmp_path / f"result{i}"))
    assert read_result(paths[4]).lowshot["5"]["mean"] == 70.0
    history = read_history(str(maws))
    assert history.label == "MAE→WSP · wsp" and history.samples == [128, 256, 384]

    out = tmp_path / "report"
    assert (
        report_step.main(["--result", *paths, "--training", str(maws), "--output", str(out)]) == 0
    )
    summary = json.loads((out / "report.json").read_text())
    assert summary["rows"][:3] == ["MAE", "WSP", "MAE→WSP"]
    assert len(summary["results"]) == len(paths)
    assert summary["plots"] == ["Low-shot accuracy against K", "Training loss"]
    markdown = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for result in _results():
        assert result.evaluation in markdown and result.evaluation in html
    assert markdown.count("data:image/png;base64,") == 2


def test_a_result_file_that_is_not_an_evaluation_is_rejected(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"steps": 3, "final_loss": 1.0}))
    with pytest.raises(ValueError, match="not an evaluation result"):
        read_result(str(tmp_path))
    with pytest.raises(ValueError, match="no evaluation result"):
        read_result(str(tmp_path / "missing"))


# --------------------------------------------------------------------------------------------
# The control row, seeded cells and the reading (issue 16)


def _seeded(pretraining: str, column: str, runs: list[float]) -> EvalResult:
    return _result(
        pretraining, {column: sum(runs) / len(runs)}, step="linear-probe", runs={column: runs}
    )


def test_seeded_cells_show_mean_and_std_and_the_control_comes_last():
    from mawsflow.evaluation.results import CONTROL_ROW

    results = [
        _seeded(CONTROL_ROW, "Linear", [50.0, 52.0, 54.0]),
        _seeded("MAE→WSP", "Linear", [70.0, 71.0, 72.0]),
        _seeded("WSP", "Linear", [69.0, 70.0, 74.0]),
        _result("MAE", {"Linear": 60.0}, step="linear-probe"),
    ]
    report = build_report(results)
    assert report.table.rows[-1] == CONTROL_ROW
    markdown = render_markdown(report)
    assert f"| {CONTROL_ROW} | 52.0 ± 2.0 |" in markdown
    assert "| MAE→WSP | **71.0 ± 1.0** |" in markdown
    assert "| MAE | 60.0 |" in markdown  # one run: no spread shown
    assert "52.0 ± 2.0" in render_html(report)
    # The low-shot result's per-K runs give its cells a spread too.
    lowshot = build_table(_results())
    assert lowshot.spread("WSP", "IN1k 1-shot") == pytest.approx((2.8284, 2), rel=1e-3)


def test_the_reading_compares_mae_wsp_with_wsp_and_every_row_with_the_control():
    from mawsflow.evaluation.report import reading
    from mawsflow.evaluation.results import CONTROL_ROW

    table = build_table(
        [
            _seeded(CONTROL_ROW, "Linear", [50.0, 52.0, 54.0]),
            _seeded("MAE→WSP", "Linear", [70.0, 71.0, 72.0]),
            _seeded("WSP", "Linear", [69.0, 70.0, 74.0]),
        ]
    )
    lines = reading(table)
    # MAE→WSP − WSP = 71 − 71 = 0: within the seeds' spread.
    assert lines[0].startswith("MAE→WSP against WSP")
    assert "Linear +0.0 (within 2 standard errors" in lines[0]
    # Against the control: +19, far beyond the spread.
    control = [line for line in lines if line.startswith("WSP against the control")]
    assert "Linear +19.0 (beyond 2 standard errors" in control[0]
    assert not any(line.startswith(f"{CONTROL_ROW} against") for line in lines)


def test_loss_curves_are_drawn_relative_to_their_start_and_their_fall_is_reported():
    from mawsflow.evaluation.report import loss_fall, render_json
    from mawsflow.evaluation.results import TrainingHistory

    curve = TrainingHistory("MAE · mae", samples=[128, 256, 384], losses=[1.0, 0.8, 0.6])
    assert loss_fall(curve) == pytest.approx(0.4)
    assert loss_fall(TrainingHistory("x", [1], [1.0])) is None
    report = build_report(_results(), [curve])
    (training,) = render_json(report)["training"]
    assert training["loss_fall"] == pytest.approx(0.4) and training["points"] == 3
    assert "training loss 1.000 → 0.600 (-40% from its start" in render_markdown(report)
