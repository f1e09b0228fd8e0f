"""Deep visual prompt tuning (VPT) on a frozen ViT trunk, for low-shot adaptation (Table 17).

Every transformer block sees `num_tokens` learned prompt tokens between the class token and
the patch tokens; the prompts a block outputs are dropped and the next block's prompts take
their place ("VPT-deep"). Table 17's prompts are 192-d: they live in that small space and one
shared linear map lifts them to the trunk's width, so the trainable size barely grows with the
model. Only the prompts, that map and the linear classifier train; the trunk is frozen and kept
in eval mode so its drop path stays off.
"""

from __future__ import annotations

import math

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from mawsflow.errors import ConfigError


class VPTClassifier(nn.Module):
    def __init__(
        self,
        trunk: VisionTransformer,
        num_classes: int,
        *,
        num_tokens: int = 8,
        dim_tokens: int = 192,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if num_tokens < 1 or dim_tokens < 1:
            raise ConfigError(
                f"vpt.num_tokens and vpt.dim_tokens must be positive, got {num_tokens}, "
                f"{dim_tokens}"
            )
        self.trunk = trunk
        self.trunk.requires_grad_(False)
        self.trunk.eval()
        width = trunk.embed_dim
        self.num_tokens = num_tokens
        self.prompts = nn.Parameter(torch.empty(len(trunk.blocks), num_tokens, dim_tokens))
        # VPT's uniform init, scaled to the patch embedding's fan-in as in the VPT paper.
        patch = trunk.patch_embed.patch_size
        bound = math.sqrt(6.0 / float(3 * patch[0] * patch[1] + dim_tokens))
        nn.init.uniform_(self.prompts, -bound, bound)
        self.prompt_proj = nn.Linear(dim_tokens, width)
        # KMnP/vpt's projection init: Kaiming-normal over the fan-out (its bias keeps
        # PyTorch's default, as there).
        nn.init.kaiming_normal_(self.prompt_proj.weight, a=0, mode="fan_out")
        self.prompt_dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, num_classes)
        nn.init.zeros_(self.head.bias)
        nn.init.trunc_normal_(self.head.weight, std=0.01)

    def train(self, mode: bool = True) -> VPTClassifier:
        super().train(mode)
        self.trunk.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        trunk = self.trunk
        x = trunk.patch_embed(images)
        x = trunk._pos_embed(x)
        x = trunk.patch_drop(x)
        x = trunk.norm_pre(x)
        prefix = trunk.num_prefix_tokens
        prompts = self.prompt_dropout(self.prompt_proj(self.prompts))
        batch = x.shape[0]
        for depth, block in enumerate(trunk.blocks):
            layer_prompts = prompts[depth].unsqueeze(0).expand(batch, -1, -1).to(x.dtype)
            # Block 0 receives no prompts yet; later blocks replace the previous block's.
            patches = x[:, prefix:] if depth == 0 else x[:, prefix + self.num_tokens :]
            x = block(torch.cat([x[:, :prefix], layer_prompts, patches], dim=1))
        x = trunk.norm(x)
        return self.head(trunk.forward_head(x, pre_logits=True))
