"""The detection steps end to end at tiny size: prepare-eval → finetune-detection (the engine,
from a pretrained trunk) → eval-detection (the result the report reads), and the scoring keys
on a known case (the ground truth fed back)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fashion_mnist_corpus import require_fashion_mnist
from mawsflow import cli, storage
from mawsflow.data.detection import open_detection_split
from mawsflow.dataset.detection_demo import DetectionDemoSpec, generate_detection_demo
from mawsflow.evaluation.detection_eval import score_detections
from mawsflow.evaluation.results import read_result
from mawsflow.recipes import load_recipe
from mawsflow.steps import eval_detection, finetune_detection, prepare_eval, random_init


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    require_fashion_mnist()
    root = tmp_path_factory.mktemp("detection_steps")
    spec = DetectionDemoSpec(image_size=64, max_items=2, item_sizes=(16, 24, 32))
    generate_detection_demo(
        root / "source", images_per_split={"train": 8, "val": 4}, spec=spec, seed=2
    )
    out = {}
    for layout in ("coco", "lvis"):
        out[layout] = str(root / layout)
        argv = ["--layout", layout, "--source", str(root / "source"), "--output", out[layout]]
        assert prepare_eval.main(argv) == 0
    return out


@pytest.mark.parametrize("step", ["finetune-detection", "eval-detection"])
def test_steps_have_help(step, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([step, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--set" in text if step == "finetune-detection" else "--test-set" in text
    assert "coco" in text.lower() and "lvis" in text.lower()


def _ground_truth_as_predictions(path):
    data = json.loads(Path(path).read_text())
    return [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "segmentation": a["segmentation"],
            "score": 1.0,
        }
        for a in data["annotations"]
    ]


@pytest.mark.parametrize("layout", ["coco", "lvis"])
def test_scores_of_the_ground_truth_fed_back(datasets, layout):
    split = open_detection_split(datasets[layout], "val")
    predictions = _ground_truth_as_predictions(split.ground_truth)
    bad = dict(predictions[0], image_id=999_999)  # an image the split does not have
    metrics = score_detections(split, [*predictions, bad])
    assert metrics["box_ap"] == pytest.approx(100.0) and metrics["mask_ap"] == pytest.approx(100.0)
    assert metrics["predictions"] == len(predictions)
    assert sum(v for k, v in metrics.items() if k.startswith("skipped_predictions_")) == 1
    for threshold in ("0.5", "0.75"):
        assert metrics[f"tide_{threshold}_ap"] == pytest.approx(100.0)
        for error in ("cls", "loc", "both", "dupl", "bkgd", "miss"):
            assert metrics[f"tide_{threshold}_{error}"] == pytest.approx(0.0)
    # LVIS reports the frequency groups the ground truth has (the demo's val: rare ones).
    assert ("box_apr" in metrics) == (layout == "lvis")


def test_a_set_in_object_storage_is_scored_too(datasets, s3_bucket):
    """pycocotools, lvis and tidecv open local files only; a detection set lives in S3 on a
    cluster, and its ground truth must still be scored (copied to a temporary file)."""
    copy = f"{s3_bucket}/lvis"
    for path in sorted(Path(datasets["lvis"]).rglob("*")):
        if path.is_file():
            relative = path.relative_to(datasets["lvis"]).as_posix()
            storage.upload_file(str(path), f"{copy}/{relative}")
    split = open_detection_split(copy, "val")
    assert split.ground_truth.startswith("s3://")
    local = open_detection_split(datasets["lvis"], "val")
    predictions = _ground_truth_as_predictions(local.ground_truth)
    metrics = score_detections(split, predictions)
    assert metrics["box_ap"] == pytest.approx(100.0)
    assert metrics["tide_0.5_ap"] == pytest.approx(100.0)


def test_finetune_then_evaluate_through_the_steps(datasets, tmp_path):
    trunk = str(tmp_path / "trunk")
    assert random_init.main(["--preset", "tiny", "--output", trunk]) == 0
    model = str(tmp_path / "detector")
    argv = [
        "--recipe", "detection-lvis", "--preset", "tiny",
        "--set", f"init_checkpoint={trunk}", "--set", f"data.train={datasets['lvis']}",
        "--set", f"output={model}", "--set", "schedule.epochs=1",
        "--set", "runtime.device=cpu", "--set", "runtime.seed=3",
    ]  # fmt: skip
    assert finetune_detection.main(argv) == 0
    card = json.loads((tmp_path / "detector" / "model.json").read_text())
    assert card["step"] == "finetune-detection" and card["init_checkpoint"] == trunk
    assert card["annotation_format"] == "lvis" and len(card["categories"]) == 10
    assert card["recipe"]["schedule"]["lr_schedule"] == "step"
    assert card["train_steps"] == 4 and card["samples_seen"] == 8

    # Killed after step 2's checkpoint: a rerun resumes there (the engine's checkpoints).
    for name in ("model.json", "model.safetensors"):
        (tmp_path / "detector" / name).unlink()
    shutil.rmtree(tmp_path / "detector" / "checkpoints" / "step-00000004")
    recipe = load_recipe(
        "detection-lvis", preset="tiny", overrides=[a for a in argv[5::2] if "=" in a]
    )
    resumed = finetune_detection.run(recipe)
    assert resumed.resumed_from_step == 2 and resumed.steps == 4
    assert json.loads((tmp_path / "detector" / "model.json").read_text())["train_steps"] == 4

    out = str(tmp_path / "eval")
    argv = ["--model", model, "--test-set", f"LVIS={datasets['lvis']}", "--output", out]
    assert eval_detection.main([*argv, "--num-workers", "0", "--device", "cpu"]) == 0
    result = read_result(out)
    assert result.step == "eval-detection"
    assert result.pretraining == "Control (no pretraining)"  # the trunk's lineage
    assert {"LVIS APbox", "LVIS APmask"} == set(result.table)
    for key in ("lvis_box_ap", "lvis_mask_ap", "lvis_tide_0.5_miss", "lvis_tide_0.75_cls"):
        assert key in result.metrics
    assert result.metrics["lvis_images"] == 4 and result.metrics["lvis_skipped_images"] == 0
    assert 0 <= result.metrics["lvis_box_ap"] <= 100


def test_layer_decay_covers_the_trunk_with_the_tables_floor(datasets):
    recipe = load_recipe(
        "detection-coco",
        preset="tiny",
        overrides=[
            "init_checkpoint=unused",
            f"data.train={datasets['coco']}",
            "optimizer.layer_decay=0.5",
            "optimizer.min_layer_decay=0.3",
        ],
    )
    task = finetune_detection.DetectionTask(recipe, open_detection_split(datasets["coco"], "train"))
    # vit_tiny_p4 has 2 blocks: block 1 is layer 2 (0.5), block 0 layer 1 (0.25 → floor 0.3),
    # the patch embedding layer 0 (0.125 → 0.3); the pyramid and heads train at the full rate.
    assert task.lr_scale("backbone.trunk.blocks.1.attn.qkv.weight") == pytest.approx(0.5)
    assert task.lr_scale("backbone.trunk.blocks.0.mlp.fc1.weight") == pytest.approx(0.3)
    assert task.lr_scale("backbone.trunk.patch_embed.proj.weight") == pytest.approx(0.3)
    assert task.lr_scale("backbone.pyramid.levels.0.0.weight") == 1.0
    assert task.lr_scale("roi_heads.stages.2.cls_score.weight") == 1.0
