"""Engine parts on their own: schedule, optimizer groups, batching arithmetic, FLOPs, RNG and
checkpoint bookkeeping."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from mawsflow.engine.checkpoint import Checkpointer, capture_rng_state, restore_rng_state
from mawsflow.engine.distributed import DistributedContext
from mawsflow.engine.flops import (
    mae_training_flops,
    transformer_forward_flops,
    vit_training_flops,
)
from mawsflow.engine.optim import build_optimizer, parameter_groups, set_learning_rate
from mawsflow.engine.schedule import LRSchedule, schedule_from_recipe
from mawsflow.engine.train_state import TrainState
from mawsflow.engine.trainer import micro_batching
from mawsflow.errors import ConfigError
from mawsflow.models.mae import MaskedAutoencoder
from mawsflow.models.vit import architecture, create_trunk
from mawsflow.recipes import OptimizerConfig, load_recipe


def test_schedule_warms_up_then_decays_by_samples():
    cosine = LRSchedule(base_lr=1.0, total_samples=1000, warmup_samples=100, shape="cosine")
    assert cosine.factor(0) == 0 and cosine.factor(50) == 0.5 and cosine.factor(100) == 1
    assert math.isclose(cosine.factor(550), 0.5) and cosine.factor(1000) == 0
    linear = LRSchedule(base_lr=2.0, total_samples=1000, warmup_samples=0, shape="linear")
    assert math.isclose(linear.factor(250), 0.75)
    # Per step the rate is taken at the middle of the step's samples.
    assert math.isclose(linear.lr_for_step(0, 100), 2.0 * (1 - 50 / 1000))
    const = LRSchedule(base_lr=1.0, total_samples=10, warmup_samples=2, shape="constant")
    assert const.factor(9) == 1.0
    with pytest.raises(ConfigError, match="'poly' is not a schedule"):
        LRSchedule(base_lr=1.0, total_samples=10, warmup_samples=0, shape="poly")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="warmup_fraction"):
        schedule_from_recipe(1.0, total_samples=10, warmup_fraction=1.5, shape="cosine")


def test_step_schedule_drops_tenfold_at_vitdet_milestones():
    # ViTDet COCO: 184375 iterations, drops at iterations 163889 and 177546 (detectron2).
    total = 184375
    step = LRSchedule(base_lr=1e-4, total_samples=total, warmup_samples=250, shape="step")
    assert step.factor(125) == 0.5  # warmup still applies
    assert step.factor(250) == 1.0 and step.factor(163888) == 1.0
    assert math.isclose(step.factor(163889), 0.1) and math.isclose(step.factor(177545), 0.1)
    # 26/27 of 184375 is 177546.3: detectron2's integer milestone rounds it down.
    assert math.isclose(step.factor(177547), 0.01) and math.isclose(step.factor(total), 0.01)
    # LVIS's 156250 iterations with drops at 138889 and 150463: the same fractions.
    lvis = LRSchedule(base_lr=1.0, total_samples=156250, warmup_samples=0, shape="step")
    assert lvis.factor(138888) == 1.0 and math.isclose(lvis.factor(138889), 0.1)
    assert math.isclose(lvis.factor(150462), 0.1) and math.isclose(lvis.factor(150463), 0.01)
    # In optimizer steps of 10 samples, each taken at its middle sample: 8/9 of 900 samples
    # (800) falls in step 80, 26/27 (866.7) just after step 86's middle, so step 87.
    small = LRSchedule(base_lr=1.0, total_samples=900, warmup_samples=0, shape="step")
    lrs = [small.lr_for_step(s, 10) for s in range(90)]
    assert sorted(set(lrs), reverse=True) == pytest.approx([1.0, 0.1, 0.01])
    assert lrs.index(pytest.approx(0.1)) == 80 and lrs.index(pytest.approx(0.01)) == 87


def test_no_weight_decay_on_norms_biases_and_embeddings():
    mae = MaskedAutoencoder(
        create_trunk("vit_tiny_p4", img_size=32), decoder_depth=1, decoder_dim=32, decoder_heads=4
    )
    groups = parameter_groups(mae, 0.05)
    names = {id(p): n for n, p in mae.named_parameters()}
    decayed = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    plain = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert "encoder.blocks.0.attn.qkv.weight" in decayed
    assert "decoder_embed.weight" in decayed and "encoder.patch_embed.proj.weight" in decayed
    # fb/mae decays MAE's class and mask tokens (tests/test_model_init.py).
    assert {"encoder.cls_token", "mask_token"} <= decayed
    for name in (
        "encoder.norm.weight",
        "encoder.blocks.0.attn.qkv.bias",
        "decoder_blocks.0.norm1.weight",
    ):
        assert name in plain, name
    # The fixed sin-cos embedding does not train at all.
    assert "encoder.pos_embed" not in decayed | plain

    opt = build_optimizer(
        groups,
        OptimizerConfig(name="adamw", lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95)),
        device=torch.device("cpu"),
    )
    assert opt.param_groups[0]["betas"] == (0.9, 0.95)
    scaled = parameter_groups(mae, 0.05, lr_scale=lambda n: 0.5 if "blocks.0" in n else 1.0)
    opt = build_optimizer(
        scaled, OptimizerConfig(name="sgd", lr=0.1, momentum=0.9), device=torch.device("cpu")
    )
    set_learning_rate(opt, 0.2)
    assert sorted({g["lr"] for g in opt.param_groups}) == [0.1, 0.2]
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9


def test_recipe_betas_reach_the_optimizer():
    assert load_recipe("mae").optimizer.betas == (0.9, 0.95)
    assert load_recipe("wsp", arch="vit_2b14").optimizer.grad_clip == 1.0


def test_micro_batching_reaches_the_global_batch_on_any_world_size():
    assert micro_batching(4096, 64, None) == (64, 1)
    assert micro_batching(4096, 8, 128) == (128, 4)
    assert micro_batching(32, 2, 8) == (8, 2)
    with pytest.raises(ConfigError, match="not divisible by the 3 processes"):
        micro_batching(32, 3, None)
    with pytest.raises(ConfigError, match="micro batch 5 does not divide"):
        micro_batching(32, 2, 5)


def test_flops_match_the_known_vit_b16_count():
    # ViT-B/16 at 224 px: 17.6 GMACs per image forward (timm's and the literature's figure).
    vit_b16 = architecture("vit_b16")
    flops = vit_training_flops(vit_b16, img_size=224)
    assert math.isclose(flops / 3 / 2, 17.6e9, rel_tol=0.02)
    mae = mae_training_flops(
        vit_b16, img_size=224, mask_ratio=0.75, decoder_depth=8, decoder_dim=512
    )
    # VPT's 8 prompt tokens lengthen all 12 blocks' sequences (197 → 205 tokens).
    prompted = vit_training_flops(vit_b16, img_size=224, extra_tokens=8)
    added = transformer_forward_flops(205, 12, 768, 3072) - transformer_forward_flops(
        197, 12, 768, 3072
    )
    assert math.isclose(prompted - flops, 3 * added)
    # The encoder on a quarter of the patches plus a light decoder: well under the full cost.
    assert 0.3 * flops < mae < 0.7 * flops


def test_rng_state_round_trips():
    capture = capture_rng_state(torch.device("cpu"))
    draws = (random.random(), np.random.rand(), torch.rand(3))
    random.random(), np.random.rand(), torch.rand(3)
    restore_rng_state(capture, torch.device("cpu"))
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert draws[:2] == again[:2] and torch.equal(draws[2], again[2])


def test_checkpointer_resumes_from_newest_complete_and_prunes(tmp_path):
    ctx = DistributedContext(0, 1, 0, torch.device("cpu"))
    ckpt = Checkpointer(str(tmp_path), every_steps=2, keep_last=2, ctx=ctx)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    assert ckpt.latest_step() is None
    for step in (2, 4, 6):
        ckpt.save(step, model, opt, TrainState({}, step=step), {"data": step})
    # An interrupted save (no complete.json) is ignored.
    (tmp_path / "checkpoints/step-00000008").mkdir()
    (tmp_path / "checkpoints/step-00000008/train.pt").write_bytes(b"partial")
    assert ckpt.latest_step() == 6
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step-00000004",
        "step-00000006",
        "step-00000008",
    ]
    fresh = torch.nn.Linear(2, 2)
    fresh_opt = torch.optim.AdamW(fresh.parameters())
    train_state = TrainState({})
    rank_state = ckpt.load(6, fresh, fresh_opt, train_state)
    assert train_state.step == 6 and rank_state == {"data": 6}
    assert torch.equal(fresh.weight, model.weight)
    assert fresh_opt.state_dict()["state"][0]["exp_avg"].equal(
        opt.state_dict()["state"][0]["exp_avg"]
    )
    assert ckpt.due(4, 9) and ckpt.due(9, 9) and not ckpt.due(5, 9)
    with pytest.raises(ValueError, match="keep_last"):
        Checkpointer(str(tmp_path), every_steps=1, keep_last=0, ctx=ctx)


def test_train_state_round_trips_through_a_checkpoint_and_snapshots_its_history(tmp_path):
    ctx = DistributedContext(0, 1, 0, torch.device("cpu"))
    ckpt = Checkpointer(str(tmp_path), every_steps=1, keep_last=1, ctx=ctx)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    state = TrainState({"a": 1}, step=3, samples_seen=24, train_seconds=2.0, skipped_samples=1)
    state.loss_history.append([3, 2.5])
    ckpt.save(3, model, opt, state, {})
    # The loop appends after the save: the checkpoint holds the history as it was.
    state.loss_history.append([4, 2.0])
    restored = TrainState({"a": 2})
    fresh = torch.nn.Linear(2, 2)
    ckpt.load(3, fresh, torch.optim.AdamW(fresh.parameters()), restored)
    assert restored.loss_history == [[3, 2.5]] and restored.skipped_samples == 1
    # The recipe is the resuming run's own, not the checkpoint's.
    assert restored.recipe == {"a": 2}
    result = restored.result(resumed_from_step=3)
    assert (result.steps, result.samples_seen, result.samples_per_second) == (3, 24, 12.0)
    assert result.initial_loss == result.final_loss == 2.5 and result.resumed_from_step == 3


def test_wsp_mixup_blends_images_and_label_distributions():
    from mawsflow.steps.wsp import WSPTask

    recipe = load_recipe("wsp-in21k", preset="tiny")
    assert recipe.augment.mixup == 0.5 and recipe.head == "linear"
    task = WSPTask(recipe, num_classes=5)
    seen = {}

    def model(images):
        seen["images"] = images
        return torch.zeros(images.shape[0], 5)

    batch = {
        "image": torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8),
        "labels": torch.tensor([[0, 1], [3, -1]]),
    }
    np.random.seed(0)
    loss = task.loss(model, batch)
    np.random.seed(0)
    lam = np.random.beta(0.5, 0.5)
    from mawsflow.data.transforms import normalize_images

    images = normalize_images(batch["image"])
    assert torch.allclose(seen["images"][0], lam * images[0] + (1 - lam) * images[1], atol=1e-5)
    # Zero logits: the loss is log(5) whatever the (normalised, mixed) target.
    assert math.isclose(loss.item(), math.log(5), rel_tol=1e-6)


def test_pretraining_refuses_augmentations_it_does_not_apply():
    from mawsflow.steps.mae import MAETask
    from mawsflow.steps.wsp import WSPTask

    with pytest.raises(ConfigError, match=r"augment.cutmix=0.5 is not supported"):
        WSPTask(load_recipe("wsp", preset="tiny", overrides=["augment.cutmix=0.5"]), 9)
    with pytest.raises(ConfigError, match=r"augment.mixup=0.2 is not supported"):
        MAETask(load_recipe("mae", preset="tiny", overrides=["augment.mixup=0.2"]))
    with pytest.raises(ConfigError, match="must equal model.img_size"):
        MAETask(load_recipe("mae", preset="tiny", overrides=["augment.crop.size=48"]))
