"""Finetuning pieces (Tables 14 and 15): a weight EMA that lives in the model, layer-wise
learning-rate decay, and the mixup/cutmix + label-smoothing loss.

The EMA weights are buffers of the model, so the engine's checkpoints carry them and a
resumed run continues the same average; every rank applies the same update to the same
(already all-reduced) weights, so DDP is told not to broadcast them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

EMA_PREFIX = "ema__"


# What activation checkpointing puts into the names of the blocks' parameters
# (torch.distributed.algorithms._checkpoint.checkpoint_wrapper's `_CHECKPOINT_PREFIX`).
_CHECKPOINT_WRAPPER = "_checkpoint_wrapped_module."


def _buffer_name(parameter: str) -> str:
    """The EMA buffer of a parameter, whether or not its block is wrapped for activation
    checkpointing (the wrapping comes after the buffers are made, and changes no weight)."""
    return EMA_PREFIX + parameter.replace(_CHECKPOINT_WRAPPER, "").replace(".", "__")


class EMAClassifier(nn.Module):
    """A classifier and, when `ema` is set, an exponential moving average of its weights.

    `ema` is the paper's number: 1 − decay, the fraction of the gap the average closes per
    optimizer step (Tables 14 and 15: 1e-4).
    """

    def __init__(self, classifier: nn.Module, ema: float | None) -> None:
        super().__init__()
        if ema is not None and not 0 < ema < 1:
            raise ValueError(f"ema must be in (0, 1) (it is 1 − decay), got {ema}")
        self.classifier = classifier
        self.ema = ema
        if ema is not None:
            for name, param in classifier.named_parameters():
                self.register_buffer(_buffer_name(name), param.detach().clone())
            # Identical on every rank by construction: nothing for DDP to broadcast.
            self._ddp_params_and_buffers_to_ignore = [
                _buffer_name(n) for n, _ in classifier.named_parameters()
            ]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(images)

    @torch.no_grad()
    def reset_ema(self) -> None:
        """Start the average at the current weights (after loading pretrained ones)."""
        if self.ema is None:
            return
        for name, param in self.classifier.named_parameters():
            getattr(self, _buffer_name(name)).copy_(param.detach())

    @torch.no_grad()
    def update_ema(self) -> None:
        if self.ema is None:
            return
        for name, param in self.classifier.named_parameters():
            self._ema_like(name, param).lerp_(param.detach(), self.ema)

    def _ema_like(self, name: str, param: torch.Tensor) -> torch.Tensor:
        """The EMA buffer of `param`, laid out as `param` is. Under FSDP2 a parameter is a
        DTensor sharded over the ranks, while buffers stay whole: the first update shards the
        (identical on every rank) buffer the same way, so each rank averages its own shard and
        a full state dict gathers the EMA as it gathers the weights."""
        key = _buffer_name(name)
        buffer = self._buffers[key]
        if isinstance(param, DTensor) and not isinstance(buffer, DTensor):
            buffer = distribute_tensor(buffer.to(param.device), param.device_mesh, param.placements)
            self._buffers[key] = buffer
        return buffer


def classifier_weights(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The classifier's weights from a full EMAClassifier state dict: the EMA weights where
    there is an EMA, the classifier's own buffers (and weights, without one) otherwise."""
    prefix = "classifier."
    out = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    for key, value in state_dict.items():
        if key.startswith(EMA_PREFIX):
            # timm parameter names never hold "__", so the buffer name maps back one to one.
            out[key[len(EMA_PREFIX) :].replace("__", ".")] = value
    return out


_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")
_EMBEDDING = re.compile(r"(?:^|\.)(cls_token|pos_embed|reg_token|patch_embed)(?:\.|$)")


def layer_decay_scale(depth: int, layer_decay: float) -> Callable[[str], float]:
    """Parameter name → lr multiplier (BEiT/MAE layer-wise decay): the embeddings are layer 0,
    block i is layer i + 1, the final norm and head are layer depth + 1 and keep the full rate;
    layer l trains at `layer_decay ** (depth + 1 − l)`."""
    if not 0 < layer_decay <= 1:
        raise ValueError(f"optimizer.layer_decay must be in (0, 1], got {layer_decay}")

    def scale(name: str) -> float:
        block = _BLOCK.search(name)
        if block:
            layer = int(block.group(1)) + 1
        elif _EMBEDDING.search(name):
            layer = 0
        else:
            layer = depth + 1
        return layer_decay ** (depth + 1 - layer)

    return scale


class ClassificationLoss:
    """Cross-entropy with the recipe's label smoothing, after mixup/cutmix when the recipe
    asks for them (timm's batch-wise Mixup, which needs an even batch)."""

    def __init__(
        self, num_classes: int, *, mixup: float, cutmix: float, label_smoothing: float
    ) -> None:
        self.label_smoothing = label_smoothing
        self.mixup = (
            Mixup(
                mixup_alpha=mixup,
                cutmix_alpha=cutmix,
                label_smoothing=label_smoothing,
                num_classes=num_classes,
            )
            if mixup > 0 or cutmix > 0
            else None
        )
        self.soft_cross_entropy = SoftTargetCrossEntropy()

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        if self.mixup is None:
            logits = model(images)
            return F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        if images.shape[0] % 2:
            raise ValueError(
                f"mixup/cutmix pair each image with another: the per-process batch "
                f"{images.shape[0]} must be even"
            )
        mixed, targets = self.mixup(images, labels)
        return self.soft_cross_entropy(model(mixed).float(), targets)
