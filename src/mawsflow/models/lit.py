"""LiT (locked-image text tuning, Table 12): a frozen image tower and a trained text tower,
each followed by a linear projection into a shared embedding space, and a learned temperature.

The image tower (a WSP or MAE→WSP trunk) is frozen and always runs in eval mode under
`no_grad`, so training never changes it; its projection, the text tower, the text projection
and the temperature train. The temperature is kept as a log scale starting at log(1/0.07) and
capped at 100, as CLIP does, so the logits cannot blow up.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mawsflow.errors import ConfigError
from mawsflow.models.text_tower import TextTower

MAX_LOGIT_SCALE = 100.0


class LiTModel(nn.Module):
    def __init__(
        self,
        image_tower: nn.Module,
        image_width: int,
        text_tower: TextTower,
        *,
        embed_dim: int,
        init_logit_scale: float = math.log(1 / 0.07),
    ) -> None:
        super().__init__()
        if embed_dim < 1:
            raise ConfigError(f"text.embed_dim must be positive, got {embed_dim}")
        self.image_tower = image_tower
        self.image_tower.requires_grad_(False)
        self.image_tower.eval()
        self.image_proj = nn.Linear(image_width, embed_dim, bias=False)
        self.text_tower = text_tower
        self.text_proj = nn.Linear(text_tower.width, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))

    def train(self, mode: bool = True) -> LiTModel:
        super().train(mode)
        self.image_tower.eval()
        return self

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """[B, embed_dim] unit-length image embeddings."""
        with torch.no_grad():
            features = self.image_tower(images)
        return F.normalize(self.image_proj(features), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, embed_dim] unit-length caption embeddings."""
        return F.normalize(self.text_proj(self.text_tower(input_ids, attention_mask)), dim=-1)

    def forward(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image embeddings, text embeddings, logit scale) for the CLIP loss."""
        scale = self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
        return self.encode_image(images), self.encode_text(input_ids, attention_mask), scale
