"""The report of a sweep: rows keyed by method × architecture × pretraining data (× epochs)
when a run has several models per method, the pretraining FLOPs read along the models' card
lineage (MAE's included for MAE→WSP), and the plot of accuracy against those FLOPs."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from mawsflow import storage
from mawsflow.evaluation.report import (
    FLOPS_PLOT,
    build_report,
    build_table,
    flops_points,
    headline_columns,
    reading,
    render_json,
    render_markdown,
)
from mawsflow.evaluation.results import (
    CONTROL_ROW,
    EvalResult,
    Pretraining,
    annotate_pretraining,
    describe_pretraining,
)
from mawsflow.steps import report as report_step

DATA = "s3://bucket/ig-tiny/manifest.json"


def _result(method: str, arch: str, table: dict[str, float], **pretraining) -> EvalResult:
    epochs = pretraining.pop("epochs", {"WSP": 1.0})
    flops = pretraining.pop("flops", 1e12)
    return EvalResult(
        step="finetune",
        evaluation=next(iter(table)),
        pretraining=method,
        metrics={"top1": next(iter(table.values()))},
        table=table,
        pretrained=Pretraining(method, arch, DATA, epochs, flops).to_dict(),
    )


def _size_sweep() -> list[EvalResult]:
    """Two model sizes × MAE, WSP, MAE→WSP, the bigger model better and costlier."""
    out = []
    for arch, scale in (("vit_b16", 1.0), ("vit_l16", 3.0)):
        mae, wsp = 1e18 * scale, 4e18 * scale
        out += [
            _result("MAE", arch, {"IN1k": 80 + scale}, epochs={"MAE": 1.0}, flops=mae),
            _result("WSP", arch, {"IN1k": 82 + scale}, flops=wsp),
            _result("MAE→WSP", arch, {"IN1k": 84 + scale}, flops=mae + wsp),
        ]
    return out


def test_a_sweep_keys_rows_by_method_and_architecture_grouped_by_method():
    table = build_table(_size_sweep())
    assert table.rows == [
        "MAE · vit_b16", "MAE · vit_l16", "WSP · vit_b16", "WSP · vit_l16",
        "MAE→WSP · vit_b16", "MAE→WSP · vit_l16",
    ]  # fmt: skip
    assert table.cells["MAE→WSP · vit_l16"]["IN1k"] == 87.0
    assert table.method("WSP · vit_l16") == "WSP"
    # Each MAE→WSP row is read against the WSP row of its own size.
    lines = reading(table)
    assert len(lines) == 2
    assert lines[0].startswith("MAE→WSP · vit_b16 against WSP · vit_b16") and "+2.0" in lines[0]


def test_an_epoch_sweep_names_the_epochs_and_a_single_model_run_keeps_todays_rows():
    results = [
        _result("MAE→WSP", "vit_b16", {"IN1k": 84.0}, epochs={"MAE": 1.0, "WSP": 1.0}),
        _result("MAE→WSP", "vit_b16", {"IN1k": 85.0}, epochs={"MAE": 2.0, "WSP": 1.0}),
        _result("WSP", "vit_b16", {"IN1k": 83.0}, epochs={"WSP": 1.0}),
    ]
    table = build_table(results)
    assert table.rows == [
        "WSP · WSP 1 ep", "MAE→WSP · MAE 1 ep + WSP 1 ep", "MAE→WSP · MAE 2 ep + WSP 1 ep",
    ]  # fmt: skip
    # Every MAE→WSP cell is read against WSP at the same WSP epochs.
    assert [line.split(" against ")[1].split(" (")[0] for line in reading(table)] == [
        "WSP · WSP 1 ep"
    ] * 2
    # WSP from scratch at one WSP schedule is trained alike by every cell of that schedule:
    # one row, from its first evaluation. A different model under the same row name is still
    # an error.
    again = _result("WSP", "vit_b16", {"IN1k": 83.4}, epochs={"WSP": 1.0})
    assert build_table([*results, again]).cells["WSP · WSP 1 ep"] == {"IN1k": 83.0}
    other = _result("WSP", "vit_b16", {"IN1k": 83.4}, epochs={"WSP": 1.0}, flops=2e12)
    with pytest.raises(ValueError, match="each table cell"):
        build_table([*results, other])
    # One model per method: the paper's rows, as before (pretrained facets or not).
    single = build_table(results[1:])
    assert single.rows == ["MAE", "WSP", "MAE→WSP"]
    report = build_report(results[1:])
    assert FLOPS_PLOT not in report.plots and render_json(report)["flops"] == {}


def test_flops_plot_has_a_line_per_method_and_a_point_per_grid_cell():
    results = _size_sweep()
    # A low-shot column per K: only the largest K is a headline column.
    results.append(_result("MAE", "vit_b16", {"IN1k 1-shot": 30.0, "IN1k 5-shot": 50.0}))
    results[-1].pretrained = results[0].pretrained
    control = _result(CONTROL_ROW, "vit_b16", {"IN1k": 10.0}, flops=None, epochs={})
    control.pretrained["dataset"] = ""  # the untrained trunk saw no data
    results.append(control)
    report = build_report(results)
    # Each row of that architecture is read against its control.
    against = [line for line in reading(report.table) if "against Control" in line]
    assert len(against) == 3
    assert all("vit_b16 against Control (no pretraining) · vit_b16:" in x for x in against)
    table = report.table
    assert headline_columns(table) == ["IN1k", "IN1k 5-shot"]
    points = flops_points(table)
    assert set(points["IN1k"]) == {"MAE", "WSP", "MAE→WSP"}  # the control has no FLOPs
    assert [p[:2] for p in points["IN1k"]["MAE→WSP"]] == [(5e18, 85.0), (15e18, 87.0)]
    assert points["IN1k 5-shot"] == {"MAE": [(1e18, 50.0, "MAE · vit_b16")]}
    assert FLOPS_PLOT in report.plots
    image = Image.open(io.BytesIO(report.plots[FLOPS_PLOT]))
    assert image.format == "PNG" and image.width > image.height  # two panels side by side
    summary = render_json(report)
    assert len(summary["flops"]["IN1k"]["WSP"]) == 2
    assert summary["pretrained"]["WSP · vit_l16"]["flops"] == 12e18
    assert f"## {FLOPS_PLOT}" in render_markdown(report)


def _card(folder, **card) -> str:
    uri = str(folder)
    storage.write_json(storage.join(uri, "model.json"), card)
    return uri


def test_pretraining_flops_follow_the_lineage_and_add_mae_to_mae_to_wsp(tmp_path):
    data = {"train": DATA}
    mae = _card(
        tmp_path / "mae", step="mae", arch="vit_b16", training_flops=2e18,
        recipe={"schedule": {"epochs": 1.0}, "data": data},
    )  # fmt: skip
    maws = _card(
        tmp_path / "maws", step="wsp", arch="vit_b16", init="mae", init_checkpoint=mae,
        training_flops=5e18, recipe={"schedule": {"epochs": 2.0}, "data": data, "init": "mae"},
    )  # fmt: skip
    lit = _card(tmp_path / "lit", step="lit", recipe={"image_checkpoint": maws})
    found = describe_pretraining(storage.read_json(f"{lit}/model.json"), _read)
    assert found == Pretraining("MAE→WSP", "vit_b16", DATA, {"MAE": 1.0, "WSP": 2.0}, 7e18)
    # A card from before the FLOPs count: no FLOPs, the rest still known.
    old = _card(tmp_path / "old", step="wsp", arch="vit_b16", init="scratch", recipe={})
    assert describe_pretraining(_read(old), _read).flops is None
    # The report step annotates a result from its model's cards, and leaves one it cannot read.
    result = EvalResult("zeroshot", "zs", "MAE→WSP", {"top1": 1.0}, {"zs": 1.0}, model=lit)
    assert annotate_pretraining(result).pretrained["flops"] == 7e18
    stray = EvalResult("zeroshot", "zs", "WSP", {"top1": 1.0}, {"zs": 1.0}, model=str(tmp_path))
    assert annotate_pretraining(stray).pretrained == {}


def _read(uri: str) -> dict:
    return storage.read_json(storage.join(uri, "model.json"))


def test_report_step_merges_the_cells_reports(tmp_path):
    """What sweep-report does: each cell's report.json in, one report over every cell out."""
    cells = []
    for i, result in enumerate(_size_sweep()):
        folder = tmp_path / f"cell{i}"
        path = folder / "result" / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(result.to_json())
        report_step.run(report_step.ReportConfig((str(path),), (), str(folder)))
        cells.append(str(folder / "report.json"))
    summary = report_step.run(report_step.ReportConfig(tuple(cells), (), str(tmp_path / "all")))
    assert len(summary["rows"]) == 6 and FLOPS_PLOT in summary["plots"]
    assert json.loads((tmp_path / "all" / "report.json").read_text())["flops"]
    with pytest.raises(ValueError, match="not a report"):
        (tmp_path / "x").mkdir()
        (tmp_path / "x" / "report.json").write_text('{"format": "other"}')
        report_step.read_results(str(tmp_path / "x" / "report.json"))
