"""Weakly supervised pretraining (WSP): a ViT trunk with a classifier over the synset vocabulary.

Table 11 (IG-3B, following SWAG): head Linear(embed, embed) → Tanh → Linear(embed, classes);
Table 13 (IN21k): a single Linear. The loss is softmax cross-entropy against each image's label
vector normalised to sum to one, so an image with k labels puts 1/k on each.

The head starts as SWAG's does: the hidden layer LeCun-normal (truncated normal, std
sqrt(1 / fan_in)) with zero bias, the output layer all zeros, so every class starts at the same
logit. The single linear head of Table 13 starts at zero too, as big_vision's does.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from mawsflow.errors import ConfigError


class WSPHead(nn.Module):
    """Maps the trunk's class-token feature to vocabulary logits."""

    def __init__(self, embed_dim: int, num_classes: int, kind: Literal["mlp", "linear"]) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if kind == "mlp":
            self.pre_logits: nn.Module = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.Tanh())
        elif kind == "linear":
            self.pre_logits = nn.Identity()
        else:
            raise ConfigError(f"head: unknown kind {kind!r}; choose mlp or linear")
        self.fc = nn.Linear(embed_dim, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if isinstance(self.pre_logits, nn.Sequential):
            hidden = self.pre_logits[0]
            nn.init.trunc_normal_(hidden.weight, std=math.sqrt(1.0 / hidden.in_features))
            nn.init.zeros_(hidden.bias)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pre_logits(features))


class WSPClassifier(nn.Module):
    """Trunk + head. `trunk` keeps timm's layout so it is exported on its own."""

    def __init__(self, trunk: VisionTransformer, head: WSPHead) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.trunk.forward_head(self.trunk.forward_features(images), pre_logits=True)
        return self.head(features)

    def block_stacks(self) -> list[nn.Sequential]:
        return [self.trunk.blocks]


def multi_hot(label_indices: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[B, L] vocabulary indices padded with −1 → [B, num_classes] float 0/1 matrix."""
    padded = torch.where(label_indices < 0, num_classes, label_indices)
    out = torch.zeros(label_indices.shape[0], num_classes + 1, device=label_indices.device)
    out.scatter_(1, padded, 1.0)
    return out[:, :num_classes]


def normalized_label_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, *, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean softmax cross-entropy against `labels` (multi-hot) normalised to sum to one.

    Optional label smoothing mixes the target with the uniform distribution (Table 13 leaves
    it at 0). An all-zero label row would be an image with no label, which the dataset build
    drops; it is clamped so it cannot divide by zero.
    """
    target = labels / labels.sum(dim=-1, keepdim=True).clamp_min(1.0)
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + label_smoothing / target.shape[-1]
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
