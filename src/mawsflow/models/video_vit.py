"""A video ViT inflated from a pretrained image trunk (§5, Appendix B, Table 16).

The paper finetunes on K400 and SSv2 "with weights from our inflated [13] pretrained image
models", with 2×16×16 patches and relative position embeddings for all video finetuning. Built
from any MAE, WSP or MAE→WSP trunk (`from_image_trunk`):

- **Tubelet embedding.** The image trunk's p×p patch convolution becomes a t×p×p convolution
  over (time, height, width). `inflation` says how the 2-D kernel spreads over the t frames:
  `"average"` (the default) repeats it and divides by t, I3D's rule ([13], Carreira &
  Zisserman: a video of identical frames gives the image model's activations); `"central"`
  puts it on the central frame (index t // 2) and zeros elsewhere (ViViT's "central frame"
  initialisation), so the tubelet sees that frame exactly as the image model did. The default
  follows the citation the paper gives for its inflation.
- **Absolute positions.** Separable, as facebookresearch/mae_st's finetuning (`sep_pos_embed`):
  the trunk's spatial position embedding (resampled to the patch grid when the resolution
  differs), repeated over time, plus a temporal embedding per tubelet slice that starts at
  zero; the class token keeps its own.
- **Relative positions.** MViTv2's decomposed relative position embeddings ([24] in the paper),
  in every attention layer: the attention logit of query (t, h, w) and key (t', h', w') gains
  q·R_t[t − t'] + q·R_h[h − h'] + q·R_w[w − w'] with learned tables per layer; the class token
  takes no relative term (MViTv2's `has_cls_embed`). The tables start at zero (MViTv2 draws them
  from N(0, 0.02²)), so the inflated model starts as exactly the image model; the bias is an
  additive mask of PyTorch's scaled-dot-product attention, so the fused kernels still serve it.
- **Classification.** The class token after the final norm (the trunk's own pooling, which
  its pretraining head read; mae_st mean-pools instead), dropout (Table 16: 0.5 for SSv2) and a
  linear head.

`blocks` is an `nn.Sequential` of timm blocks like the image trunk's, so the engine's activation
checkpointing and FSDP2 wrapping (one unit per block) apply unchanged.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Attention, VisionTransformer
from torch import nn

from mawsflow.models.artifacts import read_model_weights
from mawsflow.models.pretrained import load_checked, load_trunk, read_card_of
from mawsflow.models.vit import create_trunk

Inflation = Literal["average", "central"]
INFLATIONS: tuple[str, ...] = ("average", "central")


def inflate_patch_kernel(
    weight: torch.Tensor, tubelet_size: int, rule: Inflation = "average"
) -> torch.Tensor:
    """A 2-D patch kernel [D, C, p, p] as a tubelet kernel [D, C, t, p, p] by `rule`."""
    if weight.ndim != 4:
        raise ValueError(
            f"expected a 2-D convolution kernel [D, C, p, p], got {tuple(weight.shape)}"
        )
    if tubelet_size < 1:
        raise ValueError(f"video.tubelet_size must be positive, got {tubelet_size}")
    if rule == "average":
        return weight.unsqueeze(2).repeat(1, 1, tubelet_size, 1, 1) / tubelet_size
    if rule == "central":
        out = weight.new_zeros(*weight.shape[:2], tubelet_size, *weight.shape[2:])
        out[:, :, tubelet_size // 2] = weight
        return out
    raise ValueError(f"video.inflation: unknown rule {rule!r}; choose one of {INFLATIONS}")


def relative_positions(size: int, table: torch.Tensor) -> torch.Tensor:
    """[size, size, d]: the table row of each (query, key) offset along one axis."""
    if table.shape[0] != 2 * size - 1:
        raise ValueError(f"relative position table of {table.shape[0]} rows for an axis of {size}")
    index = torch.arange(size, device=table.device)
    return table[index[:, None] - index[None, :] + size - 1]


class RelPosAttention(Attention):
    """timm's attention (same modules and keys) with MViTv2's decomposed relative position bias
    over a (T, H, W) token grid that follows `num_prefix` class tokens."""

    def __init__(self, dim: int, num_heads: int, grid: tuple[int, int, int], **kwargs: object):
        super().__init__(dim, num_heads=num_heads, **kwargs)
        self.grid = grid
        self.num_prefix = 1
        t, h, w = grid
        self.rel_pos_t = nn.Parameter(torch.zeros(2 * t - 1, self.head_dim))
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * h - 1, self.head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * w - 1, self.head_dim))

    def position_bias(self, q: torch.Tensor) -> torch.Tensor:
        """[B, heads, N, N] additive logits for queries q [B, heads, N, d] (N counts the class
        token, whose row and column stay zero)."""
        t, h, w = self.grid
        batch, heads, _, dim = q.shape
        p = self.num_prefix
        grid_q = q[:, :, p:].reshape(batch, heads, t, h, w, dim)
        # The unscaled query, as MViTv2's cal_rel_pos_spatial/temporal use it.
        bias_t = torch.einsum("bnthwc,tkc->bnthwk", grid_q, relative_positions(t, self.rel_pos_t))
        bias_h = torch.einsum("bnthwc,hkc->bnthwk", grid_q, relative_positions(h, self.rel_pos_h))
        bias_w = torch.einsum("bnthwc,wkc->bnthwk", grid_q, relative_positions(w, self.rel_pos_w))
        grid_bias = (
            bias_t[..., :, None, None] + bias_h[..., None, :, None] + bias_w[..., None, None, :]
        ).reshape(batch, heads, t * h * w, t * h * w)
        return F.pad(grid_bias, (p, 0, p, 0))

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError("the video attention takes no attention mask")
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        bias = self.position_bias(q).to(q.dtype)
        x = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.attn_drop.p if self.training else 0.0
        )
        x = self.norm(x.transpose(1, 2).reshape(batch, tokens, self.attn_dim))
        return self.proj_drop(self.proj(x))


class VideoViT(nn.Module):
    """Clips [B, 3, T, H, W] → class logits [B, num_classes] (the head may be empty: features)."""

    def __init__(
        self,
        trunk: VisionTransformer,
        *,
        num_frames: int,
        tubelet_size: int = 2,
        num_classes: int = 0,
        inflation: Inflation = "average",
        relative_position: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if trunk.num_prefix_tokens != 1 or trunk.cls_token is None:
            raise ValueError("the image trunk must have exactly one class token (and no registers)")
        if num_frames % tubelet_size:
            raise ValueError(
                f"video.num_frames {num_frames} is not a multiple of video.tubelet_size "
                f"{tubelet_size}"
            )
        conv = trunk.patch_embed.proj
        grid_h, grid_w = trunk.patch_embed.grid_size
        self.grid = (num_frames // tubelet_size, grid_h, grid_w)
        self.num_frames = num_frames
        self.tubelet_size = tubelet_size
        self.img_size = tuple(trunk.patch_embed.img_size)
        dim = trunk.embed_dim
        self.embed_dim = dim
        self.patch_embed = nn.Conv3d(
            conv.in_channels,
            dim,
            kernel_size=(tubelet_size, *conv.kernel_size),
            stride=(tubelet_size, *conv.stride),
            bias=conv.bias is not None,
        )
        with torch.no_grad():
            self.patch_embed.weight.copy_(
                inflate_patch_kernel(conv.weight, tubelet_size, inflation)
            )
            if conv.bias is not None:
                self.patch_embed.bias.copy_(conv.bias)
        self.cls_token = nn.Parameter(trunk.cls_token.detach().clone())
        # timm's layout: the class token's position first, then the patch grid's, row-major.
        self.pos_embed = nn.Parameter(trunk.pos_embed.detach().clone())
        self.pos_embed_temporal = nn.Parameter(torch.zeros(1, self.grid[0], dim))
        blocks = copy.deepcopy(trunk.blocks)
        if relative_position:
            for block in blocks:
                block.attn = self._relative(block.attn)
        self.blocks = nn.Sequential(*blocks)
        self.norm = copy.deepcopy(trunk.norm)
        self.head_drop = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes) if num_classes else nn.Identity()

    def _relative(self, attn: Attention) -> RelPosAttention:
        out = RelPosAttention(
            self.embed_dim,
            attn.num_heads,
            self.grid,
            qkv_bias=attn.qkv.bias is not None,
            attn_drop=attn.attn_drop.p,
            proj_drop=attn.proj_drop.p,
        )
        if not isinstance(attn.q_norm, nn.Identity) or not isinstance(attn.norm, nn.Identity):
            raise ValueError("image trunks with q/k or scale norms are not supported")
        missing, unexpected = out.load_state_dict(attn.state_dict(), strict=False)
        if unexpected or set(missing) != {"rel_pos_t", "rel_pos_h", "rel_pos_w"}:
            raise ValueError(f"attention layout differs: missing {missing}, extra {unexpected}")
        return out

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        # As timm and mae_st: embeddings and tokens are not decayed; MViTv2 exempts the
        # relative position tables too (`zero_decay_pos_cls`).
        names = {"cls_token", "pos_embed", "pos_embed_temporal"}
        for index, block in enumerate(self.blocks):
            if isinstance(block.attn, RelPosAttention):
                names.update(f"blocks.{index}.attn.rel_pos_{a}" for a in "thw")
        return names

    def reset_head(self, num_classes: int) -> None:
        """A fresh near-zero linear head (finetuning starts from the pretrained features)."""
        self.head = nn.Linear(self.embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)

    def position_embedding(self) -> torch.Tensor:
        t, h, w = self.grid
        cls_pos, spatial = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        grid = spatial.unsqueeze(1) + self.pos_embed_temporal.unsqueeze(2)  # [1, T, HW, D]
        return torch.cat([cls_pos, grid.reshape(1, t * h * w, self.embed_dim)], dim=1)

    def tokens(self, clips: torch.Tensor) -> torch.Tensor:
        """[B, 1 + T'·H'·W', D] after the blocks and the final norm."""
        expected = (3, self.num_frames, *self.img_size)
        if clips.ndim != 5 or tuple(clips.shape[1:]) != expected:
            raise ValueError(
                f"expected clips [B, {', '.join(map(str, expected))}], got {tuple(clips.shape)}"
            )
        x = self.patch_embed(clips).flatten(2).transpose(1, 2)  # [B, T'·H'·W', D], t-major
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.blocks(x + self.position_embedding())
        return self.norm(x)

    def forward_features(self, clips: torch.Tensor) -> torch.Tensor:
        """The class token's feature [B, D]."""
        return self.tokens(clips)[:, 0]

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(self.forward_features(clips)))


def from_image_trunk(
    trunk: VisionTransformer,
    *,
    num_frames: int,
    tubelet_size: int,
    num_classes: int,
    inflation: Inflation = "average",
    relative_position: bool = True,
    dropout: float = 0.0,
) -> VideoViT:
    """The inflated video classifier of `trunk` with a fresh near-zero head."""
    model = VideoViT(
        trunk,
        num_frames=num_frames,
        tubelet_size=tubelet_size,
        inflation=inflation,
        relative_position=relative_position,
        dropout=dropout,
    )
    model.reset_head(num_classes)
    return model


def video_classifier_from(
    init_checkpoint: str, *, arch: str, img_size: int, drop_path: float, **inflate: Any
) -> VideoViT:
    """The video classifier inflated from the trunk of a pretraining output (MAE, WSP or
    MAE→WSP), read through the checked loader (position embeddings resampled to `img_size`).
    `inflate`: `from_image_trunk`'s keywords (num_frames, tubelet_size, num_classes, …)."""
    trunk, _ = load_trunk(init_checkpoint, img_size=img_size, drop_path=drop_path, arch=arch)
    return from_image_trunk(trunk, **inflate)


def load_video_classifier(uri: str) -> tuple[VideoViT, dict[str, Any]]:
    """A finetuned video classifier (`mawsflow finetune-video`'s output) and its model card."""
    card = read_card_of(uri, ("finetune-video",), "a finetuned video model")
    video = card["video"]
    model = from_image_trunk(
        create_trunk(str(card["arch"]), img_size=int(card["img_size"])),
        num_frames=int(video["num_frames"]),
        tubelet_size=int(video["tubelet_size"]),
        num_classes=int(card["num_classes"]),
        inflation=video["inflation"],
        relative_position=bool(video["relative_position"]),
    )
    load_checked(
        model, read_model_weights(uri), artifact=uri, what=f"{card['arch']} video classifier"
    )
    return model.eval(), card
