"""What a training step plugs into the engine.

The trainer knows nothing about MAE, WSP, LiT or finetuning: a step hands it a `TrainTask`
that builds the model, says which parameters train (by `requires_grad`), decodes samples,
computes the loss of a batch and says what to export. Tasks subclass this protocol to inherit
the defaults of the optional hooks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import nn

from mawsflow.data.decoders import SampleDecoder


class TrainTask(Protocol):
    # Names the step in metrics, logs and model.json ("mae", "wsp", …).
    name: str

    def build_model(self) -> nn.Module:
        """A freshly initialised model on the CPU. Called after seeding, identically on every
        rank; parameters that must not train have `requires_grad=False`."""
        ...

    def initialize(self, model: nn.Module) -> None:
        """Load starting weights (e.g. the MAE encoder for MAE→WSP). Called only when the run
        starts from scratch; a resumed run takes every weight from its checkpoint."""

    def block_stacks(self, model: nn.Module) -> list[nn.Sequential]:
        """The stacks of repeated blocks: units of FSDP, activation checkpointing, compile."""
        ...

    def sample_decoder(self) -> SampleDecoder:
        """Raw webdataset sample + augmentation seed → tensors (runs in loader workers, so it
        must pickle)."""
        ...

    def loss(self, model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
        """The scalar loss of a batch already on the device. `model` is the wrapped (DDP or
        FSDP) model, so call it rather than its submodules for gradients to synchronise."""
        ...

    def flops_per_sample(self) -> float:
        """Model FLOPs of one training sample (forward + backward), for MFU."""
        ...

    def export(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The tensors of `<output>/model.safetensors`, from the full model state dict."""
        ...

    def model_card(self) -> dict[str, Any]:
        """Fields of `<output>/model.json` besides the step and recipe: arch, img_size, …"""
        ...

    def lr_scale(self, name: str) -> float:
        """Learning-rate multiplier of parameter `name` (layer-wise decay hooks in here)."""
        return 1.0

    def after_optimizer_step(self, model: nn.Module) -> None:
        """Called after every optimizer step with the (wrapped) model, e.g. to update an
        EMA of the weights that the model keeps in buffers (finetuning)."""
