"""The inflated video ViT: inflation rules, decomposed relative positions, and the engine hooks."""

from __future__ import annotations

import pytest
import torch

from mawsflow.engine.distributed import apply_activation_checkpointing
from mawsflow.engine.optim import no_weight_decay_names
from mawsflow.models.video_vit import (
    RelPosAttention,
    VideoViT,
    from_image_trunk,
    inflate_patch_kernel,
)
from mawsflow.models.vit import create_trunk


@pytest.fixture(scope="module")
def trunk() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_trunk("vit_tiny_p4", img_size=32).eval()


def test_inflation_rules_spread_the_kernel_over_the_tubelet():
    weight = torch.randn(8, 3, 4, 4)
    average = inflate_patch_kernel(weight, 2, "average")
    assert average.shape == (8, 3, 2, 4, 4)
    torch.testing.assert_close(average.sum(dim=2), weight)
    torch.testing.assert_close(average[:, :, 0], average[:, :, 1])
    central = inflate_patch_kernel(weight, 3, "central")
    assert torch.equal(central[:, :, 1], weight)
    assert not central[:, :, 0].any() and not central[:, :, 2].any()
    with pytest.raises(ValueError, match="unknown rule 'mean'"):
        inflate_patch_kernel(weight, 2, "mean")


@torch.no_grad()
def test_a_video_of_identical_frames_gives_the_image_features_under_the_averaged_rule(trunk):
    images = torch.randn(3, 3, 32, 32)
    video = from_image_trunk(trunk, num_frames=2, tubelet_size=2, num_classes=5).eval()
    clips = images.unsqueeze(2).repeat(1, 1, 2, 1, 1)
    torch.testing.assert_close(video.forward_features(clips), trunk(images), atol=1e-5, rtol=0)


@torch.no_grad()
def test_the_central_rule_sees_only_the_central_frame_as_the_image_model_did(trunk):
    images = torch.randn(2, 3, 32, 32)
    video = from_image_trunk(
        trunk, num_frames=3, tubelet_size=3, num_classes=5, inflation="central"
    ).eval()
    clips = torch.randn(2, 3, 3, 32, 32)
    clips[:, :, 1] = images  # the other two frames are noise the kernel ignores
    torch.testing.assert_close(video.forward_features(clips), trunk(images), atol=1e-5, rtol=0)


@torch.no_grad()
def test_identical_frames_give_the_same_tokens_at_every_time_step(trunk):
    video = from_image_trunk(trunk, num_frames=6, tubelet_size=2, num_classes=5).eval()
    clips = torch.randn(1, 3, 1, 32, 32).repeat(1, 1, 6, 1, 1)
    tokens = video.tokens(clips)[:, 1:].reshape(1, 3, 64, -1)
    torch.testing.assert_close(tokens[:, 0], tokens[:, 1])
    torch.testing.assert_close(tokens[:, 0], tokens[:, 2])


def test_relative_position_tables_and_bias_match_a_direct_sum():
    torch.manual_seed(1)
    attn = RelPosAttention(16, num_heads=2, grid=(2, 3, 4), qkv_bias=True)
    assert attn.rel_pos_t.shape == (3, 8)
    assert attn.rel_pos_h.shape == (5, 8)
    assert attn.rel_pos_w.shape == (7, 8)
    for table in (attn.rel_pos_t, attn.rel_pos_h, attn.rel_pos_w):
        torch.nn.init.normal_(table)
    tokens = 1 + 2 * 3 * 4
    q = torch.randn(1, 2, tokens, 8)
    bias = attn.position_bias(q)
    assert bias.shape == (1, 2, tokens, tokens)
    assert not bias[:, :, 0].any() and not bias[:, :, :, 0].any(), "the class token has none"
    cells = [(t, h, w) for t in range(2) for h in range(3) for w in range(4)]
    for i, (t, h, w) in enumerate(cells):
        for j, (t2, h2, w2) in enumerate(cells):
            expected = q[0, :, 1 + i] @ (
                attn.rel_pos_t[t - t2 + 1] + attn.rel_pos_h[h - h2 + 2] + attn.rel_pos_w[w - w2 + 3]
            )
            torch.testing.assert_close(bias[0, :, 1 + i, 1 + j], expected, atol=1e-5, rtol=1e-5)


def test_relative_positions_start_at_zero_and_change_the_output_once_learnt(trunk):
    video = from_image_trunk(trunk, num_frames=4, tubelet_size=2, num_classes=3).eval()
    plain = from_image_trunk(
        trunk, num_frames=4, tubelet_size=2, num_classes=3, relative_position=False
    ).eval()
    plain.load_state_dict(
        {k: v for k, v in video.state_dict().items() if ".rel_pos_" not in k}, strict=True
    )
    clips = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(video.forward_features(clips), plain.forward_features(clips))
        torch.nn.init.normal_(video.blocks[0].attn.rel_pos_t, std=0.5)
        assert not torch.allclose(video.forward_features(clips), plain.forward_features(clips))


def test_engine_hooks_decay_checkpointing_and_shapes(trunk):
    video = from_image_trunk(trunk, num_frames=4, tubelet_size=2, num_classes=7)
    names = no_weight_decay_names(video)
    assert {"cls_token", "pos_embed", "pos_embed_temporal", "blocks.1.attn.rel_pos_w"} <= names
    assert isinstance(video.blocks, torch.nn.Sequential) and len(video.blocks) == 2
    clips = torch.randn(2, 3, 4, 32, 32)
    torch.manual_seed(0)
    reference = video(clips).sum()
    reference.backward()
    grad = video.patch_embed.weight.grad.clone()
    video.zero_grad()
    apply_activation_checkpointing([video.blocks])
    torch.manual_seed(0)
    checkpointed = video(clips).sum()
    checkpointed.backward()
    torch.testing.assert_close(checkpointed, reference)
    torch.testing.assert_close(video.patch_embed.weight.grad, grad)
    with pytest.raises(ValueError, match=r"expected clips \[B, 3, 4, 32, 32\]"):
        video(torch.randn(1, 3, 2, 32, 32))
    with pytest.raises(ValueError, match="not a multiple of video.tubelet_size"):
        VideoViT(trunk, num_frames=5, tubelet_size=2)
