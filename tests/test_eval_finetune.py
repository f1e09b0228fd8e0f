"""Finetuning (Tables 14/15): layer-wise lr decay, the weight EMA, mixup, recipe choice by
lineage, higher-resolution position embeddings, and evaluation on ReaL-style and label-subset
test sets through `mawsflow finetune` and `mawsflow eval`."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from fashion_mnist_corpus import write_eval_dataset
from mawsflow.cli import main as cli_main
from mawsflow.engine.checkpoint import read_checkpoint_state
from mawsflow.errors import ConfigError
from mawsflow.evaluation.classify import NamedTestSet
from mawsflow.evaluation.finetune import (
    ClassificationLoss,
    EMAClassifier,
    classifier_weights,
    layer_decay_scale,
)
from mawsflow.models.pretrained import load_classifier
from mawsflow.models.vit import create_trunk
from mawsflow.recipes import load_recipe
from mawsflow.steps import evaluate, finetune
from mawsflow.steps.prepare_eval import PrepareEvalConfig, run
from trunk_artifacts import write_trunk_output


def test_layer_decay_scales_by_depth():
    scale = layer_decay_scale(depth=2, layer_decay=0.5)
    assert scale("classifier.patch_embed.proj.weight") == 0.125
    assert scale("classifier.cls_token") == 0.125
    assert scale("classifier.pos_embed") == 0.125
    assert scale("classifier.blocks.0.attn.qkv.weight") == 0.25
    assert scale("classifier.blocks.1.mlp.fc2.bias") == 0.5
    assert scale("classifier.norm.weight") == 1.0
    assert scale("classifier.head.weight") == 1.0
    with pytest.raises(ValueError, match="layer_decay"):
        layer_decay_scale(2, 1.5)


def test_ema_follows_the_weights_by_the_papers_fraction():
    classifier = torch.nn.Linear(3, 2)
    model = EMAClassifier(classifier, ema=0.25)
    start = classifier.weight.detach().clone()
    with torch.no_grad():
        classifier.weight.add_(4.0)
    model.update_ema()
    exported = classifier_weights(model.state_dict())
    torch.testing.assert_close(exported["weight"], start + 1.0)  # a quarter of the gap
    assert "ema__weight" in model._ddp_params_and_buffers_to_ignore
    model.reset_ema()
    torch.testing.assert_close(classifier_weights(model.state_dict())["weight"], start + 4.0)
    without = EMAClassifier(torch.nn.Linear(3, 2), ema=None)
    assert set(classifier_weights(without.state_dict())) == {"weight", "bias"}
    with pytest.raises(ValueError, match="1 − decay"):
        EMAClassifier(classifier, ema=1.5)


def test_mixup_loss_needs_an_even_batch_and_plain_loss_smooths_labels():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
    images, labels = torch.randn(3, 3, 2, 2), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="must be even"):
        ClassificationLoss(4, mixup=0.8, cutmix=1.0, label_smoothing=0.1)(model, images, labels)
    plain = ClassificationLoss(4, mixup=0.0, cutmix=0.0, label_smoothing=0.1)
    expected = torch.nn.functional.cross_entropy(model(images), labels, label_smoothing=0.1)
    torch.testing.assert_close(plain(model, images, labels), expected)
    mixed = ClassificationLoss(4, mixup=0.8, cutmix=1.0, label_smoothing=0.1)
    assert torch.isfinite(mixed(model, torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 3])))


def test_test_set_names_parse():
    assert NamedTestSet.parse("IN-Real=s3://b/in1k:val") == NamedTestSet(
        "IN-Real", "s3://b/in1k", "val"
    )
    assert NamedTestSet.parse("/data/objectnet") == NamedTestSet(
        "objectnet", "/data/objectnet", None
    )
    with pytest.raises(ValueError, match="NAME="):
        NamedTestSet.parse("x=")


def _pngs_from(dataset: Path, per_class: int) -> list[tuple[bytes, int]]:
    """Up to `per_class` test images of each class of a Fashion-MNIST evaluation dataset."""
    out: list[tuple[bytes, int]] = []
    for shard in sorted((dataset / "test").glob("shard-*.tar")):
        with tarfile.open(shard) as tar:
            members = {m.name: m for m in tar.getmembers()}
            for name in sorted(n for n in members if n.endswith(".png")):
                label = int(tar.extractfile(members[name.replace(".png", ".cls")]).read())
                if sum(1 for _, lbl in out if lbl == label) < per_class:
                    out.append((tar.extractfile(members[name]).read(), label))
    return out


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("finetune")
    fmnist = write_eval_dataset(root / "fmnist", limit=96, samples_per_shard=32)
    images = _pngs_from(fmnist, 3)
    classes = json.loads((fmnist / "classes.json").read_text())

    # A ReaL-style copy of the test images: each also accepts the next class as correct.
    # Folder names sort in the model's label order, so ImageFolder's labels are the model's.
    real_tree = root / "real-tree"
    for i, (png, label) in enumerate(images):
        path = real_tree / f"{label:02d}-{classes[label].replace('/', '-')}" / f"img{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.open(io.BytesIO(png)).save(path)
    assert len(list(real_tree.iterdir())) == 10, "the test images cover every class"
    by_name = {f"img{i:03d}.png": lbl for i, (_, lbl) in enumerate(images)}
    real = [[by_name[n], (by_name[n] + 1) % 10] for n in sorted(by_name)]
    (root / "real.json").write_text(json.dumps(real))
    run(
        PrepareEvalConfig(
            layout="imagefolder",
            source=str(real_tree),
            output=str(root / "real"),
            split="test",
            real_labels=str(root / "real.json"),
            real_split="test",
        )
    )

    # An ObjectNet-like test set: three coarse classes, each one or more of the model's ten.
    subset_tree = root / "subset-tree"
    coarse = {"footwear": [5, 7, 9], "tops": [0, 2, 4, 6], "trousers": [1]}
    for i, (png, label) in enumerate(images):
        for name, members in coarse.items():
            if label in members:
                path = subset_tree / name / f"img{i:03d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.open(io.BytesIO(png)).save(path)
    class_map = root / "class_map.json"
    class_map.write_text(json.dumps({"model_classes": 10, "targets": list(coarse.values())}))
    run(
        PrepareEvalConfig(
            layout="imagefolder",
            source=str(subset_tree),
            output=str(root / "subset"),
            split="test",
            class_map=str(class_map),
        )
    )
    return {
        "fmnist": fmnist,
        "real": root / "real",
        "subset": root / "subset",
        "root": root,
        "count": len(images),
        # Dresses and bags are in no coarse class: the subset set leaves them out.
        "subset_count": sum(1 for _, lbl in images if lbl not in (3, 8)),
    }


def test_recipe_follows_the_trunks_lineage(tmp_path, capsys):
    mae = write_trunk_output(tmp_path / "mae", step="mae")
    mawsp = write_trunk_output(tmp_path / "mawsp", step="wsp", init="mae")
    assert finetune.recipe_for(str(mae)) == "finetune-mae"
    assert finetune.recipe_for(str(mawsp)) == "finetune-wsp"
    assert cli_main(["finetune", "--set", f"init_checkpoint={mae}", "--print-config"]) == 0
    assert "source: Table 14" in capsys.readouterr().out


def test_finetune_at_higher_resolution_then_eval_on_real_and_label_subset_sets(datasets):
    root = datasets["root"]
    trunk = write_trunk_output(root / "wsp", step="wsp", init="mae")
    out = root / "ft"
    code = finetune.main(
        [
            "--preset", "tiny",
            "--set", f"init_checkpoint={trunk}",
            "--set", f"data.train={datasets['fmnist']}",
            "--set", f"output={out}",
            # 48px from a 32px trunk: the position embeddings are interpolated.
            "--set", "model.img_size=48", "--set", "augment.crop.size=48",
            "--set", "schedule.samples_per_epoch=64",
            "--set", "ema=0.5",
            "--test-set", f"F-MNIST={datasets['fmnist']}",
        ]
    )  # fmt: skip
    assert code == 0
    card = json.loads((out / "model.json").read_text())
    assert card["img_size"] == 48 and card["recipe"]["source"] == "Table 15"
    weights = load_file(out / "model.safetensors")
    assert weights["pos_embed"].shape == (1, 1 + 12 * 12, 64)
    assert weights["head.weight"].shape == (10, 64)
    # The export is the EMA, which lags the trained weights.
    checkpoint = next((out / "checkpoints").iterdir())
    state = read_checkpoint_state(str(checkpoint))["model"]
    assert torch.equal(weights["head.weight"], state["ema__head__weight"])
    assert not torch.equal(state["ema__head__weight"], state["classifier.head.weight"])
    result = json.loads((out / "metrics.json").read_text())
    assert result["step"] == "finetune" and result["pretraining"] == "MAE→WSP"
    assert set(result["table"]) == {"F-MNIST"}
    assert result["metrics"]["train_steps"] == 2

    model, _ = load_classifier(str(out))
    assert model.patch_embed.grid_size == (12, 12)

    ev = root / "eval"
    code = evaluate.main(
        [
            "--model", str(out), "--output", str(ev), "--num-workers", "0",
            "--test-set", f"IN-Real-like={datasets['real']}",
            "--test-set", f"ObjectNet-like={datasets['subset']}",
        ]
    )  # fmt: skip
    assert code == 0
    result = json.loads((ev / "metrics.json").read_text())
    assert set(result["table"]) == {"IN-Real-like", "IN-Real-like ReaL", "ObjectNet-like"}
    assert result["metrics"]["in_real_like_real_num_samples"] == datasets["count"]
    assert result["metrics"]["objectnet_like_num_samples"] == datasets["subset_count"]
    # Three coarse classes: no top-5 is reported for the label-subset set.
    assert "objectnet_like_top5" not in result["metrics"]
    # ReaL accepts a second label per image, so it can only score at least the plain top-1.
    assert result["table"]["IN-Real-like ReaL"] >= result["table"]["IN-Real-like"]
    with pytest.raises(ValueError, match="not a finetuned model"):
        load_classifier(str(trunk))
    assert create_trunk("vit_tiny_p4", img_size=48).pos_embed.shape == weights["pos_embed"].shape


def test_augmentations_a_transfer_step_would_ignore_are_refused():
    recipe = load_recipe("finetune-mae", preset="tiny", overrides=["init_checkpoint=x"])
    finetune.FinetuneTask(recipe, num_classes=10)
    erasing = load_recipe(
        "finetune-mae",
        preset="tiny",
        overrides=["init_checkpoint=x", "augment.random_erasing=0.25"],
    )
    with pytest.raises(ConfigError, match="random_erasing"):
        finetune.FinetuneTask(erasing, num_classes=10)
