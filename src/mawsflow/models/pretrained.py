"""Loading a pretrained image trunk from a step's output, for the transfer steps.

LiT, finetuning, the linear probe and low-shot adaptation all start from the trunk of an MAE,
WSP or MAE→WSP run (or a finetuned model): `<uri>/model.safetensors` under timm's keys and
`<uri>/model.json` naming its architecture. A trunk used at another resolution than it was
trained at (finetuning at 518px from 224px pretraining, §B) gets its position embeddings
resampled to the new patch grid with timm's bicubic interpolation.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer

from mawsflow.engine.artifacts import read_model_card, read_model_weights
from mawsflow.models.vit import create_trunk

log = logging.getLogger(__name__)

# Steps whose model.safetensors is a trunk (a finetuned one adds a timm `head.`).
TRUNK_STEPS = ("mae", "wsp", "finetune")


def resample_position_embedding(
    weights: dict[str, torch.Tensor], trunk: VisionTransformer
) -> dict[str, torch.Tensor]:
    """`weights` with `pos_embed` interpolated to `trunk`'s patch grid when the grids differ."""
    saved = weights.get("pos_embed")
    if saved is None or saved.shape == trunk.pos_embed.shape:
        return weights
    resampled = resample_abs_pos_embed(
        saved,
        new_size=list(trunk.patch_embed.grid_size),
        num_prefix_tokens=trunk.num_prefix_tokens,
        interpolation="bicubic",
    )
    log.info(
        "position embeddings resampled",
        extra={"from": tuple(saved.shape), "to": tuple(resampled.shape)},
    )
    return {**weights, "pos_embed": resampled}


def load_trunk(
    uri: str, *, img_size: int | None = None, drop_path: float = 0.0, arch: str | None = None
) -> tuple[VisionTransformer, dict[str, Any]]:
    """The trunk saved at `uri` (a step output), at `img_size` (default: as trained), and its
    model card. `arch`, when given, must match the card's."""
    card = read_model_card(uri)
    if card.get("step") not in TRUNK_STEPS:
        raise ValueError(
            f"{uri} is the output of step {card.get('step')!r}; a trunk comes from one of "
            f"{TRUNK_STEPS}"
        )
    saved_arch = card.get("arch")
    if arch is not None and saved_arch != arch:
        raise ValueError(f"{uri} holds a {saved_arch} trunk but model.arch is {arch}")
    trunk = create_trunk(
        str(saved_arch), img_size=img_size or int(card["img_size"]), drop_path=drop_path
    )
    weights = {k: v for k, v in read_model_weights(uri).items() if not k.startswith("head.")}
    weights = resample_position_embedding(weights, trunk)
    expected = trunk.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{uri}: weights do not match a {saved_arch} trunk: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    trunk.load_state_dict(weights, strict=True)
    return trunk, card
