"""An MAE encoder that was trained elsewhere, as the output of an `mae` step.

The pipeline can start MAE→WSP from a given MAE checkpoint instead of training MAE: another
run's `mae` output, or a released encoder in timm's layout (e.g. facebookresearch/mae's
`.pth`, or a `.safetensors` file). Either is loaded into a trunk of the pipeline's
architecture, which checks every tensor's name and shape, and written as `model.safetensors` +
`model.json` with step `mae`, so that WSP, the transfer steps and the report treat it exactly
as a trained MAE (the report's "MAE" row).
"""

from __future__ import annotations

import logging
from typing import Any

from mawsflow import storage
from mawsflow.errors import ConfigError
from mawsflow.models.artifacts import MODEL_CARD, write_model
from mawsflow.models.pretrained import load_mae_encoder, load_timm_checkpoint
from mawsflow.models.vit import create_trunk

log = logging.getLogger(__name__)


def import_mae_checkpoint(source: str, output: str, *, arch: str, img_size: int) -> dict[str, Any]:
    """Write the encoder at `source` to `output` as an `mae` step output; returns its card."""
    if not source:
        raise ConfigError("mae_checkpoint is empty: give an mae output or a checkpoint file")
    trunk = create_trunk(arch, img_size=img_size)
    if storage.exists(storage.join(source, MODEL_CARD)):
        load_mae_encoder(trunk, source, arch=arch)
    elif storage.exists(source):
        load_timm_checkpoint(trunk, source)
    else:
        raise ConfigError(
            f"mae_checkpoint {source}: neither an mae step output (no {MODEL_CARD}) nor a file"
        )
    card = {
        "arch": arch,
        "img_size": img_size,
        "num_classes": 0,
        "step": "mae",
        "source": source,
        "recipe": {},
    }
    tensors = trunk.state_dict()
    write_model(output, tensors, card, {"imported_tensors": len(tensors)})
    log.info("MAE checkpoint imported", extra={"source": source, "output": output, "arch": arch})
    return card
