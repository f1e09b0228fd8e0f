"""End-to-end runs of `mawsflow mae` / `mawsflow wsp` on the CPU: two-process (gloo) training,
MAE→WSP initialisation, bit-exact resume after SIGKILL, and one FSDP2 step of a 2B-shaped
model."""

from __future__ import annotations

import io
import json
import math
import random
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import VisionTransformer

from mawsflow.engine.checkpoint import read_checkpoint_state
from mawsflow.models.pretrained import load_timm_checkpoint
from mawsflow.models.vit import trunk_kwargs
from mawsflow.recipes import load_recipe
from mawsflow.steps.wsp import WSPTask
from pretrain_shards import write_pretrain_dataset
from step_process import json_records, run_step, step_command, step_env

TINY = ["--preset", "tiny"]


def sets(*pairs: str) -> list[str]:
    """`--set` options for each `key=value`."""
    return [arg for pair in pairs for arg in ("--set", pair)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_pretrain_dataset(tmp_path_factory.mktemp("pretrain"), num_samples=96)


@pytest.fixture(scope="module")
def mae_output(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mae")
    run_step(
        "mae",
        [*TINY, *sets(f"data.train={dataset}", f"output={out}", "schedule.epochs=3")],
        nproc=2,
    )
    return out


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_tiny_mae_on_two_processes_reduces_its_loss(mae_output):
    metrics = _metrics(mae_output)
    assert metrics["steps"] == 24 and metrics["samples_seen"] == 768
    assert metrics["final_loss"] < 0.8 * metrics["initial_loss"], metrics
    card = json.loads((mae_output / "model.json").read_text())
    assert card["arch"] == "vit_tiny_p4" and card["step"] == "mae" and card["img_size"] == 32
    assert card["recipe"]["mask_ratio"] == 0.75

    # The encoder alone, under timm's keys: timm's ViT with the same arguments loads it.
    weights = load_file(mae_output / "model.safetensors")
    timm_vit = VisionTransformer(**trunk_kwargs("vit_tiny_p4", img_size=32))
    timm_vit.load_state_dict(weights, strict=True)
    assert not any(k.startswith(("decoder", "mask_token")) for k in weights)


def test_tiny_wsp_from_mae_on_two_processes_reduces_its_loss(mae_output, dataset, tmp_path):
    out = tmp_path / "wsp"
    records = run_step(
        "wsp",
        [
            *TINY,
            *sets(
                f"data.train={dataset}",
                f"output={out}",
                "schedule.epochs=3",
                "init=mae",
                f"init_checkpoint={mae_output}",
            ),
        ],
        nproc=2,
    )
    assert any(r["message"] == "trunk initialised" for r in records)
    metrics = _metrics(out)
    assert metrics["steps"] == 24
    # SWAG's zero-initialised output layer: every class starts at the same logit, so the first
    # loss is the uniform prediction's log(9), and 24 tiny steps bring it down by about 7%.
    assert metrics["initial_loss"] == pytest.approx(math.log(9), abs=0.02), metrics
    assert metrics["final_loss"] < 0.95 * metrics["initial_loss"], metrics
    card = json.loads((out / "model.json").read_text())
    assert card["num_classes"] == 9 and card["init"] == "mae"
    timm_vit = VisionTransformer(**trunk_kwargs("vit_tiny_p4", img_size=32))
    timm_vit.load_state_dict(load_file(out / "model.safetensors"), strict=True)


def _wsp_task(dataset: Path, **overrides: str) -> WSPTask:
    sets = [f"{k}={v}" for k, v in {"data.train": str(dataset), **overrides}.items()]
    return WSPTask(load_recipe("wsp", preset="tiny", overrides=sets), num_classes=9)


def test_mae_to_wsp_loads_the_encoder_bit_exact_and_a_fresh_head(mae_output, dataset):
    torch.manual_seed(0)
    task = _wsp_task(dataset, init="mae", init_checkpoint=str(mae_output))
    model = task.build_model()
    task.initialize(model)
    torch.manual_seed(0)
    scratch = _wsp_task(dataset).build_model()

    encoder = load_file(mae_output / "model.safetensors")
    trunk = model.trunk.state_dict()
    assert set(trunk) == set(encoder)
    for key, value in encoder.items():
        assert torch.equal(trunk[key], value), key
        assert not torch.equal(scratch.trunk.state_dict()[key], value) or "norm" in key
    # The head is the freshly initialised one, untouched by the MAE checkpoint.
    for key, value in scratch.head.state_dict().items():
        assert torch.equal(model.head.state_dict()[key], value), key

    wrong_arch = _wsp_task(
        dataset, init="mae", init_checkpoint=str(mae_output), **{"model.arch": "vit_small_p4"}
    )
    with pytest.raises(ValueError, match="holds a vit_tiny_p4 encoder"):
        wrong_arch.initialize(wrong_arch.build_model())


def test_wsp_continues_a_wsp_model_trunk_and_head_matched_by_wordnet_id(
    mae_output, dataset, tmp_path
):
    """Scheduled retraining's warm start (init=wsp): the trunk of the earlier WSP model, and
    its head from its last checkpoint, the classifier row by row for the classes both
    vocabularies have; a class new to the vocabulary starts afresh."""
    before = tmp_path / "wsp-before"
    run_step(
        "wsp",
        [*TINY, *sets(f"data.train={dataset}", f"output={before}", "schedule.epochs=1",
                      "init=mae", f"init_checkpoint={mae_output}")],
        nproc=1,
    )  # fmt: skip
    step = sorted((before / "checkpoints").glob("step-*"))[-1]  # the last: the final state
    trained = read_checkpoint_state(str(step))["model"]
    old_vocabulary = [f"n{i:08d}" for i in range(9)]
    # The new data's vocabulary: class 0 gone, the rest reordered, one new class at the end.
    vocabulary = [*old_vocabulary[8:0:-1], "n99999999"]
    task = WSPTask(
        load_recipe(
            "wsp",
            preset="tiny",
            overrides=[f"data.train={dataset}", "init=wsp", f"init_checkpoint={before}"],
        ),
        num_classes=9,
        vocabulary=vocabulary,
    )
    model = task.build_model()
    task.initialize(model)
    for key, value in load_file(before / "model.safetensors").items():
        assert torch.equal(model.trunk.state_dict()[key], value), key
    head = model.head.state_dict()
    assert torch.equal(head["pre_logits.0.weight"], trained["head.pre_logits.0.weight"])
    for new, wnid in enumerate(vocabulary[:-1]):
        old = old_vocabulary.index(wnid)
        assert torch.equal(head["fc.weight"][new], trained["head.fc.weight"][old]), wnid
        assert torch.equal(head["fc.bias"][new], trained["head.fc.bias"][old]), wnid
    assert not trained["head.fc.weight"].eq(0).all()
    assert head["fc.weight"][-1].eq(0).all()  # the new class: SWAG's zero-initialised row
    card = task.model_card()
    assert card["init"] == "wsp" and card["head_continued"]["classes_carried"] == 8
    assert card["head_continued"]["classes_new"] == 1
    assert card["head_continued"]["classes_dropped"] == 1
    with pytest.raises(ValueError, match="the vocabulary names 2 classes, the dataset 9"):
        WSPTask(task.recipe, num_classes=9, vocabulary=["a", "b"])


def test_timm_init_reads_released_checkpoint_layouts(mae_output, tmp_path):
    encoder = load_file(mae_output / "model.safetensors")
    # An MAE release: a torch file with the encoder, the decoder and the mask token under
    # "model"; and a timm safetensors file with a classifier head.
    mae_release = {
        "model": {
            **encoder,
            "mask_token": torch.zeros(1, 1, 32),
            "decoder_embed.weight": torch.zeros(32, 64),
        }
    }
    buffer = io.BytesIO()
    torch.save(mae_release, buffer)
    (tmp_path / "mae_release.pth").write_bytes(buffer.getvalue())
    save_file(
        {**encoder, "head.weight": torch.zeros(10, 64), "head.bias": torch.zeros(10)},
        tmp_path / "timm.safetensors",
    )
    for name in ("mae_release.pth", "timm.safetensors"):
        trunk = VisionTransformer(**trunk_kwargs("vit_tiny_p4", img_size=32))
        load_timm_checkpoint(trunk, str(tmp_path / name))
        for key, value in encoder.items():
            assert torch.equal(trunk.state_dict()[key], value), (name, key)

    small = VisionTransformer(**trunk_kwargs("vit_small_p4", img_size=32))
    with pytest.raises(ValueError, match="does not match the trunk|has shape"):
        load_timm_checkpoint(small, str(tmp_path / "timm.safetensors"))


def _resume_args(dataset: Path, out: Path) -> list[str]:
    return [
        *TINY,
        *sets(
            f"data.train={dataset}",
            f"output={out}",
            "runtime.deterministic=true",
            "runtime.seed=7",
            "runtime.log_every_steps=1",
            "checkpoint.every_steps=5",
            "checkpoint.keep_last=2",
            "schedule.batch_size=16",
            "schedule.samples_per_epoch=640",
            "data.num_workers=2",
            "data.shuffle_buffer=24",
        ),
        "--micro-batch-size",
        "8",
    ]


def _full_state(out: Path) -> dict:
    last = sorted((out / "checkpoints").iterdir())[-1]
    return read_checkpoint_state(str(last))


def test_resume_after_sigkill_is_bit_exact(dataset, tmp_path):
    """40 steps of 2 micro-batches from 2 loader workers; the second run is SIGKILLed at a
    random step after its first checkpoint, restarted, and must end bit-identical."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_step("mae", _resume_args(dataset, straight))

    kill_at = random.Random().randint(6, 30)
    proc = subprocess.Popen(
        step_command("mae", _resume_args(dataset, killed), 1),
        env=step_env(),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    seen_step, completed = 0, False
    assert proc.stderr is not None
    for line in proc.stderr:
        record = json_records(line)
        message = record[0]["message"] if record else ""
        # Intermediate checkpoints are written in the background: one counts once it is
        # complete ("checkpoint written"), which may be a few steps after it was staged.
        completed = completed or message == "checkpoint written"
        if message.startswith("step "):
            seen_step = int(message.split()[1].split("/")[0])
            if seen_step >= kill_at and completed:
                proc.send_signal(signal.SIGKILL)
                break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"run ended before step {kill_at}"
    assert not (killed / "model.json").exists()

    records = run_step("mae", _resume_args(dataset, killed))
    resumed = [r for r in records if r["message"] == "resumed from checkpoint"]
    assert resumed and 5 <= resumed[0]["train_step"] <= seen_step

    a, b = load_file(straight / "model.safetensors"), load_file(killed / "model.safetensors")
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resume (killed at {seen_step})"
    full_a, full_b = _full_state(straight), _full_state(killed)
    for key in full_a["model"]:  # the decoder too, and every optimizer moment
        assert torch.equal(full_a["model"][key], full_b["model"][key]), key
    for key, state in full_a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, full_b["optimizer"]["state"][key][name]), (key, name)
    assert _metrics(straight)["final_loss"] == _metrics(killed)["final_loss"]
    assert len(list((killed / "checkpoints").iterdir())) == 2, "keep_last prunes the rest"


def test_fsdp_step_of_a_2b_shaped_model_on_cpu(dataset, tmp_path):
    """ViT-2B's block shape (heads of 80, MLP 4×) at reduced width and depth, sharded over 2
    gloo processes with FSDP2, activation checkpointing and 2-step accumulation."""
    out = tmp_path / "fsdp"
    records = run_step(
        "wsp",
        [
            *TINY,
            *sets(
                f"data.train={dataset}",
                f"output={out}",
                "model.arch=vit_2b_shape_p4",
                "schedule.samples_per_epoch=32",
                "model.grad_checkpointing=true",
            ),
            "--parallelism",
            "fsdp",
            "--micro-batch-size",
            "8",
        ],
        nproc=2,
    )
    start = [r for r in records if r["message"] == "training"]
    assert {r["parallelism"] for r in start} == {"fsdp"} and len(start) == 2
    for r in start:  # each rank holds about half of the parameters
        assert r["parameters_local"] < 0.6 * r["parameters"]
    assert _metrics(out)["steps"] == 1
    timm_vit = VisionTransformer(**trunk_kwargs("vit_2b_shape_p4", img_size=32))
    timm_vit.load_state_dict(load_file(out / "model.safetensors"), strict=True)


def test_bad_inputs_are_named(tmp_path):
    proc = subprocess.run(
        step_command("mae", [*TINY, *sets(f"output={tmp_path}")], 1),
        env=step_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "data.train is empty" in proc.stderr


def test_misspelt_recipe_keys_are_named(capsys):
    from mawsflow.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["wsp", *TINY, *sets("schedule.batch_sise=3")])
    assert exit_info.value.code == 2 and "schedule.batch_sise" in capsys.readouterr().err
