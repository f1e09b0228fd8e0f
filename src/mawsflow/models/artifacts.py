"""The model artifacts a training step leaves in its output (docs/data-formats.md).

The format lives with the models (not the engine that writes it) so that loading a pretrained
artifact (mawsflow.models.pretrained) needs nothing above the models layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mawsflow import storage
from mawsflow.errors import DataFormatError

if TYPE_CHECKING:  # torch loads only where weights are read or written: the CPU-only images
    import torch  # (report, helper tasks) read model cards and metrics here, and hold no torch.

MODEL_FILE = "model.safetensors"
MODEL_CARD = "model.json"
METRICS_FILE = "metrics.json"
# The logged training loss by step, for the report's loss curves.
HISTORY_FILE = "history.json"
# A LiT output's folder with the text encoder's config and tokenizer (the card's `text_files`).
TEXT_FOLDER = "text"


def write_model(
    output: str,
    tensors: Mapping[str, torch.Tensor],
    card: Mapping[str, Any],
    metrics: Mapping[str, float | int],
    *,
    loss_history: Sequence[Sequence[float]] = (),
    samples_per_step: int = 0,
) -> None:
    """`model.safetensors` + `model.json` + `metrics.json` + `history.json` ({"steps",
    "loss", "samples_per_step"}); the card is written after the weights, so a present card
    means a complete model."""
    from safetensors.torch import save as save_safetensors

    weights = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    storage.write_bytes(
        storage.join(output, MODEL_FILE), save_safetensors(weights, metadata={"format": "pt"})
    )
    storage.write_json(storage.join(output, METRICS_FILE), dict(metrics))
    storage.write_json(
        storage.join(output, HISTORY_FILE),
        {
            "samples_per_step": samples_per_step,
            "steps": [int(step) for step, _ in loss_history],
            "loss": [float(loss) for _, loss in loss_history],
        },
    )
    storage.write_json(storage.join(output, MODEL_CARD), dict(card))


def read_model_weights(uri: str) -> dict[str, torch.Tensor]:
    """Weights from a step's output URI or a `.safetensors` file URI."""
    from safetensors.torch import load as load_safetensors

    if not uri.endswith(".safetensors"):
        uri = storage.join(uri, MODEL_FILE)
    try:
        data = storage.read_bytes(uri)
    except storage.NotFoundError:
        raise DataFormatError(f"no model weights at {uri}") from None
    return load_safetensors(data)


def read_model_card(output: str) -> dict[str, Any]:
    """The model card (`model.json`) of a step's output."""
    uri = storage.join(output, MODEL_CARD)
    try:
        card = storage.read_json(uri)
    except storage.NotFoundError:
        raise DataFormatError(
            f"no model card at {uri}: is {output} a finished step's output?"
        ) from None
    if not isinstance(card, dict):
        raise DataFormatError(f"{uri}: expected a JSON object")
    return card
