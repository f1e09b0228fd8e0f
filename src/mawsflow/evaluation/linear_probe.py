"""Linear probe: a linear classifier trained on frozen trunk features (Table 22, "IN1k Linear").

Features are extracted once at the trunk's pretraining resolution (224px) and cached; the
classifier then trains on them alone, which is cheap even for ImageNet-scale sets on a GPU.
As in MAE's protocol, features are standardised with the training set's statistics (a
BatchNorm without affine parameters, folded in), then one linear layer is trained with SGD,
momentum 0.9 and a cosine learning rate, without weight decay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LinearProbeConfig:
    epochs: int = 90
    batch_size: int = 1024
    lr: float = 0.1
    momentum: float = 0.9
    seed: int = 0


class LinearProbe(nn.Module):
    """Standardisation by fixed training-set statistics, then a linear layer."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.linear = nn.Linear(mean.numel(), num_classes)
        nn.init.trunc_normal_(self.linear.weight, std=0.01)
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear((features - self.mean) / self.std)


def train_linear_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    config: LinearProbeConfig,
    *,
    device: torch.device,
) -> LinearProbe:
    """Fit a linear probe on [N, D] features with [N] integer labels."""
    if features.ndim != 2 or len(features) != len(labels):
        raise ValueError(
            f"features {tuple(features.shape)} and labels {tuple(labels.shape)} do not match"
        )
    if config.epochs < 1 or config.batch_size < 1:
        raise ValueError("linear probe epochs and batch size must be positive")
    generator = torch.Generator().manual_seed(config.seed)
    mean = features.mean(dim=0)
    std = features.std(dim=0).clamp_min(1e-6)
    torch.manual_seed(config.seed)
    probe = LinearProbe(mean, std, num_classes).to(device)
    optimizer = torch.optim.SGD(probe.parameters(), lr=config.lr, momentum=config.momentum)
    steps_per_epoch = math.ceil(len(features) / config.batch_size)
    total = config.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total))
    )
    x, y = features.to(device), labels.to(device)
    for _ in range(config.epochs):
        order = torch.randperm(len(x), generator=generator).to(device)
        for start in range(0, len(x), config.batch_size):
            batch = order[start : start + config.batch_size]
            loss = F.cross_entropy(probe(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return probe.eval()
