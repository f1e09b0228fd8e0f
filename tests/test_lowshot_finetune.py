"""`mawsflow lowshot --method finetune`: MSN's low-shot protocol for MAE (full finetuning of
the trunk and a linear head on each seeded K-shot split), at tiny size on Fashion-MNIST."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from fashion_mnist_corpus import write_eval_dataset
from mawsflow.errors import ConfigError
from mawsflow.recipes import load_recipe
from mawsflow.steps import lowshot
from trunk_artifacts import write_trunk_output


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lowshot_finetune")
    return {
        "trunk": write_trunk_output(root / "mae", step="mae"),
        "eval": write_eval_dataset(root / "eval", limit=120, samples_per_shard=64),
        "root": root,
    }


def _args(inputs, out, *extra):
    return [
        "--preset", "tiny", "--method", "finetune", "--name", "F-MNIST",
        "--set", f"init_checkpoint={inputs['trunk']}",
        "--set", f"data.train={inputs['eval']}",
        "--set", f"output={out}",
        "--num-workers", "0",
        *extra,
    ]  # fmt: skip


def test_finetune_runs_every_split_and_reports_mean_and_spread_per_k(inputs):
    out = inputs["root"] / "finetune"
    code = lowshot.main(_args(inputs, out, "--set", "shots=[1, 5]"))
    assert code == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["step"] == "lowshot"
    assert result["evaluation"] == "F-MNIST low-shot (full finetuning)"
    assert result["pretraining"] == "MAE"
    assert set(result["lowshot"]) == {"1", "5"}
    for k in ("1", "5"):
        summary = result["lowshot"][k]
        assert len(summary["runs"]) == 2  # the tiny preset's two seeds
        assert all(0 <= r <= 100 for r in summary["runs"])
        assert summary["mean"] == pytest.approx(sum(summary["runs"]) / 2)
        assert summary["std"] >= 0
        assert result["metrics"][f"{k}shot_top1_mean"] == pytest.approx(summary["mean"])
    # Its own report columns, beside VPT's and logistic regression's.
    assert set(result["table"]) == {"F-MNIST 1-shot (finetune)", "F-MNIST 5-shot (finetune)"}

    # Each run finetuned the whole trunk (not only a head) from the MAE trunk.
    init = load_file(inputs["trunk"] / "model.safetensors")
    tiny = load_recipe("lowshot-vpt", preset="tiny")
    finetune = load_recipe("finetune-mae", preset="tiny")
    for k in (1, 5):
        for seed in (0, 1):
            run_dir = out / "runs" / f"k{k}-seed{seed}"
            weights = load_file(run_dir / "model.safetensors")
            assert weights["head.weight"].shape == (10, init["cls_token"].shape[-1])
            changed = [
                key
                for key in init
                if key.startswith("blocks.") and not torch.equal(init[key], weights[key])
            ]
            assert changed, f"k{k}-seed{seed}: the trunk did not train"
            card = json.loads((run_dir / "model.json").read_text())
            assert card["init_checkpoint"] == str(inputs["trunk"])
            ran = card["recipe"]
            # MAE's finetuning code, as MSN ran it: no EMA, cosine, lr scaled with the batch.
            assert ran["ema"] is None
            assert ran["schedule"]["lr_schedule"] == "cosine"
            assert ran["schedule"]["batch_size"] == tiny.schedule.batch_size
            assert ran["schedule"]["epochs"] == tiny.schedule.epochs(k)
            assert ran["optimizer"]["lr"] == pytest.approx(
                finetune.optimizer.lr * tiny.schedule.batch_size / finetune.schedule.batch_size
            )
            # Table 14's regularisation stays.
            assert ran["optimizer"]["layer_decay"] == finetune.optimizer.layer_decay
            assert ran["augment"]["mixup"] == finetune.augment.mixup
            assert ran["runtime"]["seed"] == seed
    # Each K-shot split holds at most K per class.
    split = json.loads((out / "splits" / "k5-seed1" / "train" / "manifest.json").read_text())
    assert split["num_samples"] <= 50


def test_finetune_refuses_bad_input_before_training(inputs, capsys):
    out = inputs["root"] / "refused"
    # A K without a length in the recipe: refused before any split is written or run trains.
    with pytest.raises(ConfigError, match="epochs_per_shot has no entry for 3 shots"):
        lowshot.main(_args(inputs, out, "--set", "shots=[1, 3]"))
    assert not out.exists()
    # An unknown key of the finetuning recipe names the key.
    with pytest.raises(SystemExit) as exit_info:
        lowshot.main(_args(inputs, out, "--finetune-set", "optimizer.lrr=1e-3"))
    assert exit_info.value.code == 2
    assert "--finetune-set" in capsys.readouterr().err
    # --finetune-set means nothing to the other methods.
    vpt = _args(inputs, out, "--finetune-set", "ema=0.1")
    vpt[vpt.index("finetune")] = "vpt"
    with pytest.raises(SystemExit):
        lowshot.main(vpt)
    assert "--method finetune only" in capsys.readouterr().err
    # No pretrained trunk.
    with pytest.raises(ConfigError, match="init_checkpoint is empty"):
        lowshot.main(_args(inputs, out, "--set", "init_checkpoint="))
    assert not out.exists()
