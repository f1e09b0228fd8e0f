"""The whole MAWS DAG, both baselines, the control, the video branch (K400) and the detection
branch (LVIS) included, end to end on this machine: `pipelines/maws.py --local` runs every task
with kfp.local's SubprocessRunner and the local launcher (torchrun), on a small demo corpus of
real Fashion-MNIST images, the demo videos and the demo detection set (Fashion-MNIST items on
scikit-image's photos, converted by prepare-eval --layout lvis) in S3 (SeaweedFS), with the
`tiny` preset and short lengths. The report must hold every row (MAE, WSP, MAE→WSP, the
control) and every column the run evaluated, the video and detection sets' included, with
finetuning and linear-probe cells over two seeds, and the TIDE table of the detection set. And
the `mae` task starting from a given checkpoint instead of training, under kfp.local too."""

import json
import logging
import re
from pathlib import Path

import pytest
import torch
from kfp import dsl, local
from kfp.dsl import Dataset, Model

from demo_inputs import write_demo_data
from mawsflow import storage
from mawsflow.cli import main as cli_main
from mawsflow.dataset.demo_corpus import DemoCorpusSettings
from mawsflow.dataset.detection_demo import DetectionDemoSpec, generate_detection_demo
from mawsflow.evaluation.results import CONTROL_ROW, pretraining_lineage
from mawsflow.models.artifacts import METRICS_FILE, read_model_card
from mawsflow.models.vit import create_trunk
from mawsflow.orchestration import components
from mawsflow.orchestration.command import main
from mawsflow.steps import prepare_eval
from mawsflow.steps.demo_corpus import DemoCorpusConfig, write_video_datasets

EVAL_NAME = "Fashion-MNIST"
COLUMNS = [
    EVAL_NAME,  # finetuned, then evaluated on the test split
    f"{EVAL_NAME} 1-shot",
    f"{EVAL_NAME} 5-shot",
    f"{EVAL_NAME} zero-shot",
    f"{EVAL_NAME} Linear",
    # The video branch: inflated, finetuned and evaluated on the video set. One set keeps the
    # run's time down; SSv2 takes the same tasks (tests/test_pipeline_dag.py compiles both).
    "K400",
    # The detection branch: each model the trunk of a ViTDet Cascade Mask R-CNN, finetuned and
    # scored on the LVIS-format set (box AP, Table 22's column, and mask AP). COCO takes the
    # same tasks (tests/test_pipeline_dag.py compiles both).
    "LVIS APbox",
    "LVIS APmask",
]
PIPELINE = "maws-with-baselines-and-control-and-k400-and-lvis"
TIDE_COLUMNS = ["AP", "Cls", "Loc", "Both", "Dupl", "Bkgd", "Miss"]


@pytest.fixture
def demo_data(s3_bucket, tmp_path_factory) -> dict[str, str]:
    """The demo corpus and the evaluation dataset in a bucket of a real S3 server (SeaweedFS):
    the run reads its data from S3 while its artifacts stay in local folders."""
    settings = DemoCorpusSettings(
        num_images=1000, eval_train_images=300, eval_test_images=300, samples_per_shard=250
    )
    data = write_demo_data(s3_bucket, settings, "video")
    pytest.importorskip("av")
    # Few, short videos: the video branch is there to run, not to learn.
    video = DemoCorpusConfig("", "", settings, video_out=data["video"], video_train=8, video_test=4)
    write_video_datasets(video)
    # Few, small images: the detection branch is there to run, not to learn. Converted into the
    # bucket like every other set (eval-detection scores a ground truth that is in S3).
    detection = tmp_path_factory.mktemp("detection-demo")
    spec = DetectionDemoSpec(image_size=64, max_items=3, item_sizes=(16, 24, 32))
    generate_detection_demo(
        detection / "source", images_per_split={"train": 8, "val": 4}, spec=spec
    )
    data["lvis"] = f"{s3_bucket}/lvis"
    layout = ["--layout", "lvis", "--source", str(detection / "source"), "--output", data["lvis"]]
    assert prepare_eval.main(layout) == 0
    return data


@pytest.mark.slow
def test_whole_dag_runs_locally_and_reports_every_row_and_column(demo_data, tmp_path, capsys):
    work = tmp_path / "work"
    root_handlers = logging.getLogger().handlers[:]
    code = main(
        [
            "--local", "--baselines", "--control", "--video", "k400", "--detection", "lvis",
            "--work-dir", str(work),
            "--param", "preset=tiny",
            "--param", f"raw_corpus={demo_data['corpus']}",
            "--param", f"eval_dataset={demo_data['eval']}",
            "--param", f"dataset={demo_data['dataset']}",
            "--param", f"eval_name={EVAL_NAME}",
            "--param", "zeroshot_templates=clothing",
            "--param", "shard_groups=2",
            "--param", "vocab_min_count=3",
            "--param", "loader_workers=0",
            # Short lengths: two optimizer steps per training step, two low-shot runs per model.
            "--param", "mae_epochs=0.25",
            "--param", "wsp_epochs=0.25",
            "--param", "lit_epochs=0.25",
            "--param", "finetune_epochs=0.25",
            "--param", "lowshot_epoch_multiplier=0.5",
            "--param", "lowshot_shots=[1, 5]",
            "--param", "lowshot_seeds=[0]",
            # Two finetunes (and probes) per model, merged into mean ± std; each model's
            # low-shot runs in one task.
            "--param", "transfer_seeds=[0, 1]",
            "--param", "lowshot_grouping=model",
            "--param", f"k400_dataset={demo_data['video']}/k400",
            "--param", "k400_epochs=0.25",
            "--param", f"lvis_dataset={demo_data['lvis']}",
            "--param", "lvis_epochs=0.25",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    # kfp.local's per-task logging swaps (from ParallelFor threads) leave nothing behind that
    # writes into the run's closed task log.
    assert logging.getLogger().handlers == root_handlers

    # The terminal shows the table and where the report is.
    assert "| MAE→WSP |" in out and "| Method |" in out
    printed = re.findall(r"(/\S+/report\.(?:md|html|json))", out.split("\nreport: ", 1)[1])
    assert [Path(p).name for p in printed] == ["report.md", "report.html", "report.json"]
    folder = Path(printed[0]).parent
    report = json.loads((folder / "report.json").read_text())
    assert report["rows"] == ["MAE", "WSP", "MAE→WSP", CONTROL_ROW]
    # Finetuning and the linear probe ran per transfer seed: each cell keeps both seeds' values.
    finetune_column, linear_column = COLUMNS[0], f"{EVAL_NAME} Linear"
    for row in report["rows"]:
        assert len(report["runs"][row][finetune_column]) == 2, row
        assert len(report["runs"][row][linear_column]) == 2, row
    assert any(line.startswith("MAE→WSP against WSP") for line in report["reading"])
    assert report["columns"] == COLUMNS
    for row in report["rows"]:
        cells = report["table"][row]
        assert set(cells) == set(COLUMNS), row
        assert all(0.0 <= value <= 100.0 for value in cells.values()), cells
    assert set(report["plots"]) == {"Training loss", "Low-shot accuracy against K"}
    html = (folder / "report.html").read_text()
    assert "<table>" in html and "data:image/png;base64," in html

    # The dataset was built in the bucket, by the fanned-out phases.
    manifest = storage.read_json(f"{demo_data['dataset']}/manifest.json")
    assert manifest["format"] == "mawsflow.multilabel/1" and manifest["num_classes"] > 0
    (run,) = (work / "runs").iterdir()
    (pipeline_run,) = [p for p in run.iterdir() if p.is_dir()]
    assert len(list(pipeline_run.glob("for-loop-*-iteration-*/build-dataset-count"))) == 2

    # Typed artifacts: the trained models point at their model.json, with their lineage.
    executor_output = json.loads((pipeline_run / "mae" / "executor_output.json").read_text())
    (model,) = executor_output["artifacts"]["model"]["artifacts"]
    assert model["uri"].endswith("/model/model.json")
    assert model["metadata"]["pretraining"] == "MAE" and model["metadata"]["arch"] == "vit_tiny_p4"
    card = json.loads(Path(model["uri"]).read_text())
    assert card["step"] == "mae" and card["train_steps"] == 2
    # The control row's trunk: the random-init task's model, untrained.
    (control,) = pipeline_run.glob("**/random-init/executor_output.json")
    (control_model,) = json.loads(control.read_text())["artifacts"]["model"]["artifacts"]
    assert_untrained_control_card(str(Path(control_model["uri"]).parent))
    log = (run / "tasks.log").read_text()
    assert f"Pipeline '{PIPELINE}' finished with status" in _plain(log)
    assert "SUCCESS" in _plain(log).rsplit(f"Pipeline '{PIPELINE}'", 1)[1]
    # The video columns come from the branch's own tasks, one finetune per row and set.
    video_models = list(pipeline_run.glob("**/finetune-video*/executor_output.json"))
    assert len(video_models) == len(report["rows"]), video_models
    # So do the detection columns, and each model's TIDE breakdown at both IoU thresholds
    # (Table 21), in the report's row order.
    detection_models = list(pipeline_run.glob("**/finetune-detection*/executor_output.json"))
    assert len(detection_models) == len(report["rows"]), detection_models
    tide = report["tide"]["LVIS"]
    assert [(t["row"], t["iou"]) for t in tide] == [
        (row, iou) for iou in (0.5, 0.75) for row in report["rows"]
    ]
    for breakdown in tide:
        assert set(breakdown) == {"row", "iou", *TIDE_COLUMNS}, breakdown
        assert all(0.0 <= breakdown[c] <= 100.0 for c in TIDE_COLUMNS), breakdown
    markdown = (folder / "report.md").read_text()
    assert "## TIDE errors" in markdown and "| Method | IoU | AP | Cls |" in markdown
    assert "<h2>TIDE errors</h2>" in html
    assert (folder / "report.md").read_text().startswith("# mawsflow run report")


def assert_untrained_control_card(model: str) -> None:
    """The model at `model` (a step output) is the control row's: a `mawsflow random-init`
    card, which the report reads as the control row, of a trunk that saw 0 training samples."""
    card = read_model_card(model)
    assert card["step"] == "random-init", card
    assert pretraining_lineage(card, read_model_card) == CONTROL_ROW
    # A trained model's card counts its steps, samples and FLOPs; this one trained on nothing.
    assert not {"train_steps", "samples_seen", "training_flops"} & set(card), card
    metrics = storage.read_json(storage.join(model, METRICS_FILE))
    assert metrics["samples_seen"] == 0, metrics


def test_the_control_card_check_takes_random_init_output_and_nothing_trained(tmp_path):
    control = tmp_path / "control"
    assert cli_main(["random-init", "--preset", "tiny", "--output", str(control)]) == 0
    assert_untrained_control_card(str(control))
    # The same trunk said to have seen samples, or written by another step, fails the check.
    metrics_file = control / METRICS_FILE
    metrics = json.loads(metrics_file.read_text())
    metrics_file.write_text(json.dumps({**metrics, "samples_seen": 8}))
    with pytest.raises(AssertionError):
        assert_untrained_control_card(str(control))
    metrics_file.write_text(json.dumps(metrics))
    card_file = control / "model.json"
    card = json.loads(card_file.read_text())
    card_file.write_text(json.dumps({**card, "step": "wsp"}))
    with pytest.raises(AssertionError):
        assert_untrained_control_card(str(control))
    card_file.write_text(json.dumps({**card, "train_steps": 2, "samples_seen": 8}))
    with pytest.raises(AssertionError):
        assert_untrained_control_card(str(control))


def _plain(text: str) -> str:
    """Without the terminal colours kfp.local puts around names."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


# The task names its cluster image, which a local run does not use.
@pytest.mark.filterwarnings("ignore:You may be attemping to run a task")
def test_mae_component_imports_a_given_checkpoint_instead_of_training(tmp_path, capsys):
    """The `mae` task with `mae_checkpoint` set, under kfp.local: the released encoder becomes
    the task's Model (pointing at its model.json) and nothing trains."""
    trunk = create_trunk("vit_tiny_p4", img_size=32)
    torch.save({"model": trunk.state_dict()}, tmp_path / "mae_release.pth")

    @dsl.pipeline(name="mae-from-checkpoint")
    def from_checkpoint(checkpoint: str) -> Model:
        data = dsl.importer(artifact_uri=str(tmp_path / "unused"), artifact_class=Dataset)
        task = components.mae(
            dataset=data.output, preset="tiny", arch="", epochs=0.0, samples_per_epoch=0,
            mae_checkpoint=checkpoint, backend="local", nodes=1, gpus_per_node=0,
            job_image="unused", shm_size="", node_selector={}, tolerations=[],
        )  # fmt: skip
        return task.outputs["model"]

    local.init(local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    model = from_checkpoint(checkpoint=str(tmp_path / "mae_release.pth")).output
    assert model.uri.endswith("/model.json")
    assert model.metadata == {
        "step": "mae",
        "arch": "vit_tiny_p4",
        "img_size": 32,
        "pretraining": "MAE",
    }
    card = json.loads(Path(model.uri).read_text())
    assert card["source"] == str(tmp_path / "mae_release.pth") and "train_steps" not in card
    assert "running 1 local ranks" not in capsys.readouterr().out  # no launcher, no training
