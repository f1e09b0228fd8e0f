"""Pretraining outputs for the downstream tests, written with the engine's own artifact
writer: a tiny ViT trunk (timm keys) and a model card saying which step made it."""

from __future__ import annotations

from pathlib import Path

import torch

from mawsflow.models.artifacts import write_model
from mawsflow.models.vit import create_trunk


def write_trunk_output(
    out: Path, *, step: str = "wsp", init: str = "scratch", seed: int = 0
) -> Path:
    """A `vit_tiny_p4` trunk at 32px as the `step` step would leave it (MAE or WSP)."""
    torch.manual_seed(seed)
    trunk = create_trunk("vit_tiny_p4", img_size=32)
    card = {
        "arch": "vit_tiny_p4",
        "img_size": 32,
        "step": step,
        "recipe": {"init": init} if step == "wsp" else {},
    }
    if step == "wsp":
        card["init"] = init
    write_model(str(out), trunk.state_dict(), card, {"steps": 0})
    return out
