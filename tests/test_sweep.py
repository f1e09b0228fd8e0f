"""The paper's figures as pipelines (mawsflow.orchestration.sweeps): the model-size and
epoch sweeps compile to a spec the Kubeflow Pipelines backend runs, fan the pretraining and
transfer out over the grid parameter into one report, and run end to end here at tiny scale."""

import json
import re
from pathlib import Path

import pytest
from kfp import compiler

from demo_inputs import write_demo_data
from mawsflow.dataset.demo_corpus import DemoCorpusSettings
from mawsflow.orchestration.command import canonical_header, main
from mawsflow.orchestration.conformance import check, pipeline_spec
from mawsflow.orchestration.sweeps import SWEEPS, sweep_pipeline

# The CPU-sized stand-ins for Fig. 3's sizes: two widths/depths of the same block structure.
TINY_ARCHS = ["vit_tiny_p4", "vit_small_p4"]


@pytest.fixture
def demo_data(s3_bucket) -> dict[str, str]:
    """A small demo corpus and evaluation set of real Fashion-MNIST images in S3 (SeaweedFS)."""
    settings = DemoCorpusSettings(
        num_images=500, eval_train_images=200, eval_test_images=200, samples_per_shard=250
    )
    return write_demo_data(s3_bucket, settings)


def _compiled(tmp_path: Path, sweep: str, **options) -> dict:
    path = tmp_path / f"{sweep}.yaml"
    compiler.Compiler().compile(sweep_pipeline(sweep, **options), str(path))
    return pipeline_spec(str(path))


@pytest.mark.parametrize("sweep", SWEEPS)
def test_sweep_fans_the_cells_out_over_the_grid_into_one_report(tmp_path, sweep):
    spec = _compiled(tmp_path, sweep, baselines=True)
    assert check(spec) == []  # every backend rule
    root = spec["root"]["dag"]["tasks"]
    grid = "archs" if sweep == "model-size" else "epoch_grid"
    (loop,) = [t for t in root.values() if "parameterIterator" in t]
    items = loop["parameterIterator"]["items"]["inputParameter"]
    assert grid in loop["inputs"]["parameters"][items]["componentInputParameter"]
    # The loop body is the cell sub-pipeline; sweep-report gathers every cell's report.
    body = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    (cell,) = body.values()
    cell_tasks = spec["components"][cell["componentRef"]["name"]]["dag"]["tasks"]
    assert {"mae", "wsp", "wsp-2", "transfer-rows", "report"} <= set(cell_tasks)
    report = root["sweep-report"]
    source = report["inputs"]["artifacts"]["cells"]["taskOutputArtifact"]
    assert source["producerTask"] == loop["taskInfo"]["name"]
    # The grid parameter's default is the paper's grid.
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    if sweep == "model-size":
        assert parameters["archs"]["defaultValue"] == [
            "vit_b16", "vit_l16", "vit_h14", "vit_2b14",
        ]  # fmt: skip
        assert "arch" not in parameters
    else:
        assert {"mae_epochs", "wsp_epochs"} == set(parameters["epoch_grid"]["defaultValue"][0])
        assert "mae_epochs" not in parameters


def test_cli_compiles_a_sweep_and_rejects_a_bad_grid(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    assert main(["--compile", str(path), "--sweep", "epochs", "--control"]) == 0
    assert pipeline_spec(str(path))["pipelineInfo"]["name"] == "maws-sweep-epochs-with-control"
    assert main(["--compile", str(path), "--sweep", "model-size", "--param", "archs=[]"]) == 1
    assert "archs: empty" in capsys.readouterr().err
    bad = ["--param", "archs=['vit_b16', 'vit_nope']"]
    assert main(["--compile", str(path), "--sweep", "model-size", *bad]) == 1
    assert "vit_nope" in capsys.readouterr().err
    grid = ["--param", 'epoch_grid=[{"mae_epochs": 1}]']
    assert main(["--compile", str(path), "--sweep", "epochs", *grid]) == 1
    assert "epoch_grid" in capsys.readouterr().err


def test_compiled_header_lists_defaults_in_a_fixed_key_order(tmp_path):
    """kfp writes the header comment's defaults from a protobuf Struct, in arbitrary key order
    (the same epochs sweep compiled to different bytes); compile_checked sorts them."""
    shuffled = (
        "# PIPELINE DEFINITION\n"
        "# Inputs:\n"
        "#    epoch_grid: list [Default: [{'wsp_epochs': 1.0, 'mae_epochs': 0.1}]]\n"
        "#    node_selector: dict [Default: {'zone': 'b', 'pool': 'a100'}]\n"
        "#    preset: str [Default: 'tiny']\n"
        "components:\n"
        "#    epoch_grid: list [Default: [{'wsp_epochs': 1.0, 'mae_epochs': 0.1}]]\n"
    )
    spec = {
        "root": {
            "inputDefinitions": {
                "parameters": {
                    "epoch_grid": {"defaultValue": [{"wsp_epochs": 1.0, "mae_epochs": 0.1}]},
                    "node_selector": {"defaultValue": {"zone": "b", "pool": "a100"}},
                    "preset": {"defaultValue": "tiny"},
                }
            }
        }
    }
    lines = canonical_header(shuffled, spec).split("\n")
    assert lines[2] == "#    epoch_grid: list [Default: [{'mae_epochs': 0.1, 'wsp_epochs': 1.0}]]"
    assert lines[3] == "#    node_selector: dict [Default: {'pool': 'a100', 'zone': 'b'}]"
    assert lines[4] == "#    preset: str [Default: 'tiny']"
    assert lines[6] == shuffled.split("\n")[6]  # below the header nothing is touched

    path = tmp_path / "sweep.yaml"
    assert main(["--compile", str(path), "--sweep", "epochs"]) == 0
    header = next(
        line for line in path.read_text().splitlines() if line.startswith("#    epoch_grid:")
    )
    assert header.startswith("#    epoch_grid: list [Default: [{'mae_epochs': ")


def _run_tiny_sweep(sweep: str, grid: list[str], demo_data, tmp_path, capsys) -> dict:
    """Run `sweep` locally at tiny scale over the `--param` list `grid` (the grid parameter
    and any lengths it does not set): the report.json it printed."""
    code = main(
        [
            "--local", "--sweep", sweep, "--work-dir", str(tmp_path / "work"),
            *grid,
            "--param", "preset=tiny",
            "--param", f"raw_corpus={demo_data['corpus']}",
            "--param", f"eval_dataset={demo_data['eval']}",
            "--param", f"dataset={demo_data['dataset']}",
            "--param", "eval_name=Fashion-MNIST",
            "--param", "zeroshot_templates=clothing",
            "--param", "shard_groups=1",
            "--param", "vocab_min_count=3",
            "--param", "loader_workers=0",
            "--param", "lit_epochs=0.25",
            "--param", "finetune_epochs=0.25",
            "--param", "lowshot_epoch_multiplier=0.5",
            "--param", "lowshot_shots=[1]",
            "--param", "lowshot_seeds=[0]",
            "--param", "lowshot_grouping=model",
            "--param", "transfer_seeds=[0]",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    printed = re.findall(r"(/\S+/report\.json)", out.split("\nreport: ", 1)[1])
    return json.loads(Path(printed[0]).read_text())


# Two cells × two rows × every transfer evaluation: ~50 tasks, each a process (torchrun for
# the training ones). 175 s in the full suite on a quiet 2-core machine, 816 s on a shared one,
# hence a timeout above pyproject's 900 s.
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_model_size_sweep_runs_locally_and_plots_accuracy_against_flops(
    demo_data, tmp_path, capsys
):
    grid = [
        "--param", f"archs={json.dumps(TINY_ARCHS)}",
        "--param", "mae_epochs=0.25",
        "--param", "wsp_epochs=0.25",
    ]  # fmt: skip
    report = _run_tiny_sweep("model-size", grid, demo_data, tmp_path, capsys)
    # Rows: method × architecture, the paper's methods in order.
    assert report["rows"] == [f"{m} · {a}" for m in ("MAE", "MAE→WSP") for a in TINY_ARCHS]
    assert "Accuracy against pretraining FLOPs" in report["plots"]
    # A point per grid cell, per method, in every headline column; MAE→WSP's FLOPs hold MAE's.
    assert report["flops"]
    for lines in report["flops"].values():
        assert set(lines) == {"MAE", "MAE→WSP"}
        assert all(len(points) == len(TINY_ARCHS) for points in lines.values())
        for mae, maws in zip(lines["MAE"], lines["MAE→WSP"], strict=True):
            assert maws[0] > mae[0] > 0


# Fig. 5's grid at tiny size: two cells that differ in MAE epochs, the same WSP epochs.
TINY_EPOCH_GRID = [
    {"mae_epochs": 0.25, "wsp_epochs": 0.25},
    {"mae_epochs": 0.5, "wsp_epochs": 0.25},
]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_epochs_sweep_runs_locally_and_plots_accuracy_against_flops(demo_data, tmp_path, capsys):
    grid = ["--param", f"epoch_grid={json.dumps(TINY_EPOCH_GRID)}"]
    report = _run_tiny_sweep("epochs", grid, demo_data, tmp_path, capsys)
    # Rows: method × epochs, two cells each, MAE's before MAE→WSP's.
    methods = [row.split(" · ")[0] for row in report["rows"]]
    assert methods == ["MAE", "MAE", "MAE→WSP", "MAE→WSP"], report["rows"]
    assert len(set(report["rows"])) == 4
    assert "Accuracy against pretraining FLOPs" in report["plots"]
    for lines in report["flops"].values():
        assert set(lines) == {"MAE", "MAE→WSP"}
        mae = sorted(point[0] for point in lines["MAE"])
        maws = sorted(point[0] for point in lines["MAE→WSP"])
        # Twice the MAE epochs cost twice MAE's FLOPs; MAE→WSP adds its WSP stage to each.
        assert mae[1] == pytest.approx(2 * mae[0], rel=0.05)
        assert maws[0] > mae[0] and maws[1] > mae[1]
