"""Initialisations and weight-decay groups as the paper's reference implementations set them
(issue 15, items 2, 4 and 8): fb/mae's `initialize_weights` and optimiser groups, SWAG's WSP
head, KMnP/vpt's prompt projection. Each check measures the initial weights' statistics, which
timm's or PyTorch's default init would fail."""

from __future__ import annotations

import math

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from mawsflow.engine.optim import parameter_groups
from mawsflow.models.mae import MaskedAutoencoder
from mawsflow.models.vit import create_trunk, trunk_kwargs
from mawsflow.models.vpt import VPTClassifier
from mawsflow.models.wsp import WSPClassifier, WSPHead


def _std_close(tensor: torch.Tensor, want: float, rel: float = 0.1) -> bool:
    return math.isclose(float(tensor.detach().float().std()), want, rel_tol=rel)


def _mae() -> MaskedAutoencoder:
    torch.manual_seed(0)
    trunk = create_trunk("vit_small_p4", img_size=32)
    return MaskedAutoencoder(trunk, decoder_depth=1, decoder_dim=64, decoder_heads=4)


def _xavier_std(fan_in: int, fan_out: int) -> float:
    return math.sqrt(2.0 / (fan_in + fan_out))


def test_mae_encoder_starts_as_fb_maes_initialize_weights():
    mae = _mae()
    enc = mae.encoder
    for block in enc.blocks:
        for linear in (block.attn.qkv, block.attn.proj, block.mlp.fc1, block.mlp.fc2):
            fan_out, fan_in = linear.weight.shape
            # Xavier-uniform; timm's default is a truncated normal of std 0.02.
            assert _std_close(linear.weight, _xavier_std(fan_in, fan_out)), linear
            assert float(linear.weight.abs().max()) <= math.sqrt(3) * _xavier_std(fan_in, fan_out)
            assert torch.count_nonzero(linear.bias) == 0
        assert torch.equal(block.norm1.weight, torch.ones(128))
        assert torch.count_nonzero(block.norm1.bias) == 0
    # The patch embedding is initialised as a linear layer on the flattened 4×4×3 patch.
    proj = enc.patch_embed.proj.weight
    assert _std_close(proj, _xavier_std(3 * 4 * 4, 128))
    # Class and mask tokens: normal(0.02); timm starts the class token at std 1e-6.
    assert _std_close(enc.cls_token, 0.02, rel=0.35)
    assert _std_close(mae.mask_token, 0.02, rel=0.35)


def test_mae_decays_the_class_and_mask_tokens_as_fb_mae_while_finetuning_does_not():
    mae = _mae()
    names = {id(p): n for n, p in mae.named_parameters()}
    groups = parameter_groups(mae, 0.05)
    decayed = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    plain = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert {"encoder.cls_token", "mask_token", "encoder.blocks.0.attn.qkv.weight"} <= decayed
    assert {"encoder.norm.weight", "encoder.blocks.0.attn.qkv.bias"} <= plain
    # A trunk outside MAE (WSP, finetuning: fb/mae's main_finetune) keeps timm's exclusion.
    trunk = create_trunk("vit_tiny_p4", img_size=32)
    trunk_names = {id(p): n for n, p in trunk.named_parameters()}
    plain = {
        trunk_names[id(p)]
        for g in parameter_groups(trunk, 0.05)
        if g["weight_decay"] == 0
        for p in g["params"]
    }
    assert {"cls_token", "pos_embed"} <= plain


def test_mae_refuses_an_encoder_whose_decay_rule_it_cannot_set():
    with pytest.raises(TypeError, match="create_trunk"):
        MaskedAutoencoder(VisionTransformer(**trunk_kwargs("vit_tiny_p4", img_size=32)))


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_wsp_head_starts_as_swags_and_predicts_uniformly(kind):
    torch.manual_seed(0)
    head = WSPHead(256, 1000, kind)
    # The output layer starts at zero (SWAG; big_vision for the single linear head).
    assert torch.count_nonzero(head.fc.weight) == 0 and torch.count_nonzero(head.fc.bias) == 0
    if kind == "mlp":
        hidden = head.pre_logits[0]
        # LeCun normal: std sqrt(1 / fan_in); PyTorch's default has std 1 / sqrt(3 fan_in).
        assert _std_close(hidden.weight, math.sqrt(1.0 / 256), rel=0.05)
        assert torch.count_nonzero(hidden.bias) == 0
    model = WSPClassifier(create_trunk("vit_tiny_p4", img_size=32), WSPHead(64, 10, kind))
    logits = model(torch.randn(2, 3, 32, 32))
    assert torch.count_nonzero(logits) == 0, "every class starts at the same logit"


def test_vpt_prompt_projection_is_kaiming_normal_over_the_fan_out():
    torch.manual_seed(0)
    trunk = create_trunk("vit_small_p4", img_size=32)
    model = VPTClassifier(trunk, 10, num_tokens=8, dim_tokens=192)
    # Kaiming normal, fan-out mode: std sqrt(2 / 128). PyTorch's default would give
    # 1 / sqrt(3 · 192) ≈ 0.042.
    assert _std_close(model.prompt_proj.weight, math.sqrt(2.0 / 128), rel=0.05)
