"""Running a frozen model over an evaluation split: batches in, outputs (features or logits)
out, with the labels they belong to.

Images leave the loader as uint8 and are normalised on the device (as in training). On a GPU
the forward runs under bf16 autocast; outputs come back as float32 on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader

from mawsflow.data.transforms import normalize_images


def eval_device(requested: str = "auto") -> torch.device:
    """cuda when asked for or available (auto), else cpu."""
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {requested!r}")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda was requested but no CUDA device is visible")
    use_cuda = requested == "cuda" or (requested == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if use_cuda else "cpu")


@torch.no_grad()
def batch_outputs(
    loader: DataLoader,
    forward: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    *,
    normalize: bool = True,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(outputs [B, D] float32 on the CPU, labels [B], ReaL multi-hot [B, C]) per batch."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    for images, labels, real in loader:
        pixels = normalize_images(images.to(device, non_blocking=True), normalize=normalize)
        with autocast:
            outputs = forward(pixels)
        yield outputs.float().cpu(), labels, real


def collect_outputs(
    loader: DataLoader,
    forward: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    *,
    normalize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All outputs [N, D] and labels [N] of a split (features for linear classifiers)."""
    outputs, labels = [], []
    for out, lbl, _ in batch_outputs(loader, forward, device, normalize=normalize):
        outputs.append(out)
        labels.append(lbl)
    if not outputs:
        raise ValueError("the split yielded no samples")
    return torch.cat(outputs), torch.cat(labels)
