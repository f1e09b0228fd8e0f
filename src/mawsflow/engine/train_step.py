"""One optimizer step with gradient accumulation: the engine's hot path.

The trainer calls it for every step and the GPU benchmark times it as is. It never reads a
value back from the device: the loss comes back as a device tensor that the caller reads only
when it logs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from mawsflow.engine.distributed import gradient_sync
from mawsflow.engine.optim import set_learning_rate
from mawsflow.engine.task import TrainTask


class TrainStep:
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        task: TrainTask,
        *,
        accumulation: int,
        bf16: bool,
        grad_clip: float | None,
        device: torch.device,
    ) -> None:
        self.model, self.optimizer, self.task = model, optimizer, task
        self.accumulation = accumulation
        self.bf16 = bf16
        self.grad_clip = grad_clip
        self.device = device
        self.trainable = [p for p in model.parameters() if p.requires_grad]

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def __call__(self, next_batch: Callable[[], Mapping[str, Any]], lr: float) -> torch.Tensor:
        """Accumulate gradients over `accumulation` micro-batches, then update with rate `lr`.
        Returns the sum of the micro-batch losses, on the device."""
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(self.accumulation):
            batch = next_batch()
            # Gradients are reduced across ranks only on the last micro-batch.
            with gradient_sync(self.model, micro == self.accumulation - 1):
                with self._autocast():
                    loss = self.task.loss(self.model, batch)
                (loss / self.accumulation).backward()
            loss_sum += loss.detach().float()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.grad_clip)
        set_learning_rate(self.optimizer, lr)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.task.after_optimizer_step(self.model)
        return loss_sum
