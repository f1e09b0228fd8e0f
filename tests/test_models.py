"""The ViT family, MAE and WSP models against the paper's facts (Tables 1, 10, 11)."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer

from mawsflow.models.mae import MaskedAutoencoder
from mawsflow.models.pos_embed import sincos_2d
from mawsflow.models.vit import (
    TIMM_EQUIVALENTS,
    architecture,
    create_trunk,
    needs_sharding,
    parameter_count,
    trunk_kwargs,
)
from mawsflow.models.wsp import WSPClassifier, WSPHead, multi_hot, normalized_label_cross_entropy

TABLE_1 = {  # layers, width, MLP, heads, patch
    "vit_b16": (12, 768, 3072, 12, 16),
    "vit_l16": (24, 1024, 4096, 16, 16),
    "vit_h14": (32, 1280, 5120, 16, 14),
    "vit_2b14": (24, 2560, 10240, 32, 14),
    "vit_6.5b14": (32, 4096, 16384, 32, 14),
}


@pytest.mark.parametrize("arch", sorted(TABLE_1))
def test_paper_architectures_build_with_table_1_shapes(arch):
    with torch.device("meta"):  # shapes only: the 6.5B model is not materialised
        trunk = create_trunk(arch)
    layers, width, mlp, heads, patch = TABLE_1[arch]
    assert len(trunk.blocks) == layers and trunk.embed_dim == width
    assert trunk.blocks[0].mlp.fc1.out_features == mlp
    assert trunk.blocks[0].attn.num_heads == heads
    assert trunk.patch_embed.patch_size == (patch, patch)
    assert sum(p.numel() for p in trunk.parameters()) == parameter_count(arch)
    printed = architecture(arch).params  # Table 1's count, e.g. "1.89B"
    scale = 1e9 if printed.endswith("B") else 1e6
    assert math.isclose(parameter_count(arch), float(printed[:-1]) * scale, rel_tol=0.02)
    assert needs_sharding(arch) == (arch in ("vit_2b14", "vit_6.5b14"))


@pytest.mark.parametrize("arch", sorted(TIMM_EQUIVALENTS))
def test_trunk_keys_are_timms_own(arch):
    with torch.device("meta"):
        ours = create_trunk(arch).state_dict()
        theirs = timm.create_model(TIMM_EQUIVALENTS[arch], pretrained=False, num_classes=0)
    theirs = theirs.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_unknown_arch_and_bad_size_are_named():
    with pytest.raises(ValueError, match="unknown architecture 'vit_q16'"):
        create_trunk("vit_q16")
    with pytest.raises(ValueError, match="not a multiple of vit_b16's patch size 16"):
        create_trunk("vit_b16", img_size=100)


def test_sincos_position_embedding():
    embed = sincos_2d(8, (2, 3), cls_token=True)
    assert embed.shape == (1, 7, 8)
    assert torch.equal(embed[0, 0], torch.zeros(8)), "the class token carries no position"
    # Patch 5 (row-major: row 1, column 2) is token 6, after the class token; the first half
    # of the channels encodes the column.
    col, row = 2.0, 1.0
    omega = [1.0, 1.0 / 100.0]  # 1/10000^(i/2) for i in 0, 1
    expected = [math.sin(col * w) for w in omega] + [math.cos(col * w) for w in omega]
    expected += [math.sin(row * w) for w in omega] + [math.cos(row * w) for w in omega]
    assert torch.allclose(embed[0, 6], torch.tensor(expected), atol=1e-6)
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(6, 2, cls_token=False)


def _tiny_mae(**kwargs) -> MaskedAutoencoder:
    torch.manual_seed(0)
    trunk = create_trunk("vit_tiny_p4", img_size=32)
    return MaskedAutoencoder(trunk, decoder_depth=1, decoder_dim=32, decoder_heads=4, **kwargs)


def test_mae_defaults_are_table_10():
    mae = MaskedAutoencoder(create_trunk("vit_tiny_p4", img_size=32))
    assert mae.mask_ratio == 0.75 and mae.norm_pix_loss
    assert len(mae.decoder_blocks) == 8
    assert mae.decoder_embed.out_features == 512
    assert mae.decoder_blocks[0].attn.num_heads == 16


def test_mae_encoder_sees_only_visible_patches_and_masks_75_percent_per_sample():
    mae = _tiny_mae()
    seen = []
    mae.encoder.blocks[0].register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    images = torch.randn(3, 3, 32, 32)
    loss, pred, mask = mae(images)
    patches = (32 // 4) ** 2
    assert seen == [(3, 1 + patches // 4, 64)], "class token + 25% of the patches"
    assert pred.shape == (3, patches, 4 * 4 * 3)
    assert torch.equal(mask.sum(dim=1), torch.full((3,), patches * 0.75))
    assert not torch.equal(mask[0], mask[1]), "each sample has its own mask"
    # The encoder's position embedding is the fixed sin-cos table.
    assert not mae.encoder.pos_embed.requires_grad
    assert torch.equal(mae.encoder.pos_embed, sincos_2d(64, 8, cls_token=True))
    loss.backward()
    assert mae.encoder.blocks[0].attn.qkv.weight.grad is not None


def test_mae_loss_is_normalised_pixels_on_masked_patches_only():
    mae = _tiny_mae()
    images = torch.randn(2, 3, 32, 32)
    _, pred, mask = mae(images)
    target = mae.patchify(images)
    norm = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    expected = (((pred - norm) ** 2).mean(-1) * mask).sum() / mask.sum()
    assert torch.allclose(mae.reconstruction_loss(images, pred, mask), expected)
    # Changing the prediction of a visible patch changes nothing.
    visible = (mask[0] == 0).nonzero()[0, 0]
    moved = pred.clone()
    moved[0, visible] += 10.0
    assert torch.equal(
        mae.reconstruction_loss(images, moved, mask), mae.reconstruction_loss(images, pred, mask)
    )


def test_patchify_order_matches_the_patch_embedding():
    mae = _tiny_mae()
    images = torch.randn(1, 3, 32, 32)
    patches = mae.patchify(images)
    # Patch 9 is row 1, column 1: pixels [4:8, 4:8], laid out (row, col, channel).
    assert torch.equal(patches[0, 9], images[0, :, 4:8, 4:8].permute(1, 2, 0).reshape(-1))


def test_wsp_head_and_normalised_label_loss():
    torch.manual_seed(0)
    trunk = create_trunk("vit_tiny_p4", img_size=32)
    head = WSPHead(64, 10, "mlp")
    assert [type(m).__name__ for m in head.pre_logits] == ["Linear", "Tanh"]
    assert head.pre_logits[0].out_features == 64 and head.fc.out_features == 10
    assert isinstance(WSPHead(64, 10, "linear").pre_logits, torch.nn.Identity)
    model = WSPClassifier(trunk, head)
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10)

    labels = multi_hot(torch.tensor([[1, 4, -1], [7, -1, -1]]), 10)
    assert labels.tolist()[0] == [0, 1, 0, 0, 1, 0, 0, 0, 0, 0]
    loss = normalized_label_cross_entropy(logits, labels)
    log_p = torch.log_softmax(logits, dim=-1)
    expected = -(0.5 * log_p[0, 1] + 0.5 * log_p[0, 4] + log_p[1, 7]) / 2
    assert torch.allclose(loss, expected)
    smoothed = normalized_label_cross_entropy(logits, labels, label_smoothing=0.1)
    target0 = torch.full((10,), 0.01)
    target0[[1, 4]] += 0.45
    assert torch.allclose(
        smoothed, (-(target0 * log_p[0]).sum() - (log_p[1] * (0.01 + 0.9 * labels[1])).sum()) / 2
    )


def test_exported_trunk_loads_into_timm_strictly():
    trunk = create_trunk("vit_small_p4", img_size=32)
    timm_vit = VisionTransformer(**trunk_kwargs("vit_small_p4", img_size=32))
    timm_vit.load_state_dict(trunk.state_dict(), strict=True)
