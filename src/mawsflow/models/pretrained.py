"""Loading every pretrained artifact the pipeline reads, through one checked path.

The artifacts (docs/data-formats.md; mawsflow.models.artifacts writes a step's output):

- a trunk from a step's output (`mae`, `wsp`, or a finetuned model without its head):
  `load_trunk`, and `init_from_trunk` for the transfer steps that start a larger model from it
  (finetuning, LiT's image tower, VPT). A trunk used at another resolution than it was trained
  at (finetuning at 518px from 224px pretraining, §B) gets its position embeddings resampled to
  the new patch grid with timm's bicubic interpolation;
- an MAE encoder from another run's `mae` output, or its `model.safetensors`: `load_mae_encoder`;
- a released checkpoint in timm's layout (e.g. facebookresearch/mae's `.pth`, or a timm
  `.safetensors` file): `load_timm_checkpoint`;
- a finetuned classifier, a LiT model, a VPT run: `load_classifier`, `load_lit_model`,
  `load_vpt_model`; and the pretrained Hugging Face text encoder LiT starts from:
  `load_text_encoder`.

Every loader ends in `load_checked`, the one place that compares an artifact's tensor names and
shapes with the model's and raises `DataFormatError` naming the artifact. A model card naming
another step or architecture than the configuration asks for is a `ConfigError`: the
configuration points at the wrong artifact.
"""

from __future__ import annotations

import io
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load as load_safetensors
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from mawsflow import storage
from mawsflow.errors import ConfigError, DataFormatError
from mawsflow.models.artifacts import read_model_card, read_model_weights
from mawsflow.models.vit import create_trunk
from mawsflow.models.vpt import VPTClassifier

if TYPE_CHECKING:
    # The text tower imports transformers (~1.5 s of CPU per process): only LiT's loaders
    # need it, and they import it when called, so finetuning, evaluation, low-shot and the
    # linear probe (most of a pipeline's processes) start without it.
    from mawsflow.models.lit import LiTModel
    from mawsflow.models.text_tower import CaptionTokenizer, TextModelSource

log = logging.getLogger(__name__)

# Steps whose model.safetensors is a trunk (a finetuned one adds a timm `head.`).
# random-init: the control row's untrained trunk (mawsflow.steps.random_init).
TRUNK_STEPS = ("mae", "wsp", "finetune", "random-init")
# Keys of a full MAE checkpoint that are not part of the encoder.
_MAE_DECODER_KEYS = ("decoder_", "mask_token")
# Keys of a released classifier that are not part of the trunk (timm's head, MAE's fc_norm).
_CLASSIFIER_KEYS = ("head.", "fc_norm.")


def load_checked(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    artifact: str,
    what: str,
    missing_ok: tuple[str, ...] = (),
) -> None:
    """Load `state` into `module` after checking that every tensor's name and shape match.

    `artifact` names where the tensors came from and `what` the model they are meant for;
    both are in the error. Keys under a prefix in `missing_ok` (a fresh head) may be absent
    from `state`; every other difference is a `DataFormatError`."""
    expected = module.state_dict()
    missing = sorted(k for k in set(expected) - set(state) if not k.startswith(missing_ok))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise DataFormatError(
            f"{artifact} does not match the {what}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    wrong = [k for k in state if expected[k].shape != state[k].shape]
    if wrong:
        k = wrong[0]
        raise DataFormatError(
            f"{artifact}: {k} has shape {tuple(state[k].shape)}, the {what} needs "
            f"{tuple(expected[k].shape)} (different architecture?)"
        )
    module.load_state_dict(state, strict=not missing_ok)


def read_card_of(uri: str, steps: tuple[str, ...], what: str) -> dict[str, Any]:
    """The model card at `uri`, which must come from one of `steps`."""
    card = read_model_card(uri)
    if card.get("step") not in steps:
        raise ConfigError(
            f"{uri} is the output of step {card.get('step')!r}, not {what} (one of {steps})"
        )
    return card


def check_arch(card: Mapping[str, Any], arch: str | None, uri: str, what: str) -> None:
    """`arch`, when given, must be the architecture the card names."""
    if arch is not None and card.get("arch") != arch:
        raise ConfigError(f"{uri} holds a {card.get('arch')} {what} but model.arch is {arch}")


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
    card = read_card_of(uri, TRUNK_STEPS, "a trunk")
    check_arch(card, arch, uri, "trunk")
    saved_arch = str(card.get("arch"))
    trunk = create_trunk(
        saved_arch, img_size=img_size or int(card["img_size"]), drop_path=drop_path
    )
    weights = {k: v for k, v in read_model_weights(uri).items() if not k.startswith("head.")}
    weights = resample_position_embedding(weights, trunk)
    load_checked(trunk, weights, artifact=uri, what=f"{saved_arch} trunk")
    return trunk, card


def init_from_trunk(
    module: nn.Module,
    uri: str,
    *,
    img_size: int,
    arch: str,
    drop_path: float = 0.0,
    missing_ok: tuple[str, ...] = (),
) -> None:
    """Initialise `module` (a trunk, or a classifier whose `missing_ok` head stays fresh) from
    the trunk saved at `uri`, which must be of architecture `arch`."""
    trunk, _ = load_trunk(uri, img_size=img_size, drop_path=drop_path, arch=arch)
    load_checked(
        module, trunk.state_dict(), artifact=uri, what=f"{arch} model", missing_ok=missing_ok
    )


def load_mae_encoder(trunk: VisionTransformer, uri: str, *, arch: str) -> None:
    """Initialise `trunk` from an MAE step's output (or its model.safetensors), exactly."""
    if not uri.endswith(".safetensors"):
        check_arch(read_model_card(uri), arch, uri, "encoder")
    load_checked(trunk, read_model_weights(uri), artifact=uri, what="trunk")
    log.info("trunk initialised", extra={"init_checkpoint": uri})


def load_timm_checkpoint(trunk: VisionTransformer, uri: str) -> None:
    """Initialise `trunk` from a released checkpoint in timm layout (e.g. a MAE release): a
    safetensors file or a torch file holding a state dict, possibly under "model". Decoder
    and classifier weights are dropped; position embeddings are resampled to the model's grid
    (timm's checkpoint_filter_fn)."""
    try:
        data = storage.read_bytes(uri)
    except storage.NotFoundError:
        raise ConfigError(f"init_checkpoint: no file at {uri}") from None
    if uri.endswith(".safetensors"):
        state = load_safetensors(data)
    else:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        for key in ("model", "state_dict"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict):
        raise DataFormatError(f"init_checkpoint {uri}: expected a state dict")
    state = {
        k: v
        for k, v in state.items()
        if not k.startswith(_MAE_DECODER_KEYS) and not k.startswith(_CLASSIFIER_KEYS)
    }
    load_checked(trunk, checkpoint_filter_fn(state, trunk), artifact=uri, what="trunk")
    log.info("trunk initialised", extra={"init_checkpoint": uri})


def load_classifier(uri: str) -> tuple[VisionTransformer, dict[str, Any]]:
    """A finetuned classifier (timm ViT with a linear `head.`) and its model card."""
    card = read_card_of(uri, ("finetune",), "a finetuned model")
    model = create_trunk(str(card["arch"]), img_size=int(card["img_size"]))
    model.reset_classifier(int(card["num_classes"]))
    load_checked(model, read_model_weights(uri), artifact=uri, what=f"{card['arch']} classifier")
    return model.eval(), card


def load_vpt_model(uri: str) -> VPTClassifier:
    """A trained VPT run: its init checkpoint's trunk plus its prompts and head."""
    card = read_model_card(uri)
    trunk, _ = load_trunk(card["init_checkpoint"], img_size=int(card["img_size"]))
    spec = card["recipe"]["vpt"]
    model = VPTClassifier(
        trunk,
        int(card["num_classes"]),
        num_tokens=int(spec["num_tokens"]),
        dim_tokens=int(spec["dim_tokens"]),
    )
    # A run saves only its trainable part; the frozen trunk is its init checkpoint's.
    load_checked(
        model, read_model_weights(uri), artifact=uri, what="VPT model", missing_ok=("trunk.",)
    )
    return model.eval()


def load_text_encoder(encoder: nn.Module, source: TextModelSource) -> None:
    """Initialise LiT's text encoder from the pretrained Hugging Face model `source` names."""
    from transformers import AutoModel

    pretrained = AutoModel.from_pretrained(source.path, local_files_only=source.local)
    load_checked(encoder, pretrained.state_dict(), artifact=source.path, what="text encoder")


def load_lit_model(uri: str) -> tuple[LiTModel, CaptionTokenizer, dict[str, Any]]:
    """A trained LiT model, its tokenizer and model card, rebuilt from a `lit` output alone."""
    from mawsflow.models.lit import LiTModel
    from mawsflow.models.text_tower import (
        TextModelSource,
        build_text_tower,
        load_caption_tokenizer,
    )

    card = read_card_of(uri, ("lit",), "a LiT model")
    prefix = storage.join(uri, card["text_files"]) + "/"
    files = storage.list_uris(prefix)
    if not files:
        raise DataFormatError(f"{uri}: no {card['text_files']}/ folder with the text tower's files")
    with tempfile.TemporaryDirectory() as folder:
        for file in files:
            target = Path(folder) / file[len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            storage.download_file(file, str(target))
        source = TextModelSource.resolve(folder)
        # Outputs written before `text_pooling` was recorded were mean-pooled.
        pooling = card.get("text_pooling", "mean")
        text = build_text_tower(source, dropout=0.0, pretrained=False, pooling=pooling)
        tokenizer = load_caption_tokenizer(source, int(card["context_length"]))
    trunk = create_trunk(card["arch"], img_size=int(card["img_size"]))
    model = LiTModel(trunk, trunk.embed_dim, text, embed_dim=int(card["embed_dim"]))
    load_checked(model, read_model_weights(uri), artifact=uri, what="LiT model")
    return model.eval(), tokenizer, card
