"""`mawsflow wsp`: weakly supervised pretraining (Table 11 on IG-3B, Table 13 on IN21k).

The trunk starts from an MAE run's output (`init=mae`, MAE→WSP), from scratch (the WSP
baseline), or from a released checkpoint in timm layout (`init=timm`, a `.safetensors` or
`.pth` file). The head covers the dataset's synset vocabulary (`num_classes` of its
manifest). Outputs: `<output>/model.safetensors` (the trunk, timm keys; the head stays in
the final checkpoint), `model.json`, `metrics.json`, checkpoints.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from mawsflow import storage
from mawsflow.engine.artifacts import read_model_card, read_model_weights
from mawsflow.engine.data import (
    ImageLabelsDecoder,
    PretrainManifest,
    SampleDecoder,
    normalize_images,
    read_manifest,
)
from mawsflow.engine.flops import vit_training_flops
from mawsflow.engine.task import TrainTask
from mawsflow.engine.trainer import TrainConfig, TrainResult, train
from mawsflow.errors import ConfigError
from mawsflow.models.vit import architecture, create_trunk
from mawsflow.models.wsp import (
    WSPClassifier,
    WSPHead,
    multi_hot,
    normalized_label_cross_entropy,
)
from mawsflow.recipes import WSPRecipe
from mawsflow.step_cli import recipe_parser, run_recipe_step
from mawsflow.steps.mae import add_engine_arguments, check_augmentation

log = logging.getLogger(__name__)

TRUNK_PREFIX = "trunk."
# Keys of a full MAE checkpoint that are not part of the encoder.
_MAE_DECODER_KEYS = ("decoder_", "mask_token")


def load_mae_encoder(trunk: VisionTransformer, uri: str, *, arch: str) -> None:
    """Initialise `trunk` from an MAE step's output (or its model.safetensors), exactly."""
    if not uri.endswith(".safetensors"):
        card = read_model_card(uri)
        if card.get("arch") != arch:
            raise ConfigError(
                f"init_checkpoint {uri} holds a {card.get('arch')} encoder but model.arch is {arch}"
            )
    weights = read_model_weights(uri)
    _load_trunk(trunk, weights, source=uri)


def load_timm_checkpoint(trunk: VisionTransformer, uri: str) -> None:
    """Initialise `trunk` from a released checkpoint in timm layout (e.g. a MAE release): a
    safetensors file or a torch file holding a state dict, possibly under "model". Decoder
    and classifier weights are dropped; position embeddings are resampled to the model's grid."""
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
        raise ConfigError(f"init_checkpoint {uri}: expected a state dict")
    state = {
        k: v
        for k, v in state.items()
        if not k.startswith(_MAE_DECODER_KEYS) and not k.startswith(("head.", "fc_norm."))
    }
    _load_trunk(trunk, checkpoint_filter_fn(state, trunk), source=uri)


def _load_trunk(
    trunk: VisionTransformer, state: Mapping[str, torch.Tensor], *, source: str
) -> None:
    expected = trunk.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ConfigError(
            f"init_checkpoint {source} does not match the trunk: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    wrong = [k for k in expected if expected[k].shape != state[k].shape]
    if wrong:
        k = wrong[0]
        raise ConfigError(
            f"init_checkpoint {source}: {k} has shape {tuple(state[k].shape)}, the trunk needs "
            f"{tuple(expected[k].shape)} (different architecture?)"
        )
    trunk.load_state_dict(state, strict=True)
    log.info("trunk initialised", extra={"init_checkpoint": source, "tensors": len(state)})


class WSPTask(TrainTask):
    name = "wsp"

    def __init__(self, recipe: WSPRecipe, num_classes: int) -> None:
        check_augmentation(recipe, batch_mixing=True)
        if num_classes < 1:
            raise ValueError(f"the dataset's vocabulary is empty (num_classes={num_classes})")
        if recipe.init != "scratch" and not recipe.init_checkpoint:
            raise ConfigError(f"init={recipe.init} needs init_checkpoint (a URI)")
        self.recipe = recipe
        self.num_classes = num_classes

    def build_model(self) -> WSPClassifier:
        r = self.recipe
        trunk = create_trunk(r.model.arch, img_size=r.model.img_size, drop_path=r.model.drop_path)
        return WSPClassifier(trunk, WSPHead(trunk.embed_dim, self.num_classes, r.head))

    def initialize(self, model: nn.Module) -> None:
        r = self.recipe
        if r.init == "mae":
            load_mae_encoder(model.trunk, r.init_checkpoint, arch=r.model.arch)
        elif r.init == "timm":
            load_timm_checkpoint(model.trunk, r.init_checkpoint)

    def block_stacks(self, model: nn.Module) -> list[nn.Sequential]:
        return model.block_stacks()

    def sample_decoder(self) -> SampleDecoder:
        return ImageLabelsDecoder(self.recipe.augment, self.num_classes)

    def loss(self, model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
        images = normalize_images(batch["image"], normalize=self.recipe.augment.normalize)
        labels = multi_hot(batch["labels"], self.num_classes)
        target = labels / labels.sum(dim=-1, keepdim=True).clamp_min(1.0)
        alpha = self.recipe.augment.mixup
        if alpha > 0:
            # Mixup (Table 13): each image blends with its mirror in the batch, and so do the
            # label distributions. The weight comes from the host RNG, which checkpoints
            # restore, and needs no device read.
            lam = float(np.random.beta(alpha, alpha))
            images = images.mul(lam).add_(images.flip(0), alpha=1.0 - lam)
            target = target.mul(lam).add_(target.flip(0), alpha=1.0 - lam)
        logits = model(images)
        return normalized_label_cross_entropy(
            logits, target, label_smoothing=self.recipe.loss.label_smoothing
        )

    def flops_per_sample(self) -> float:
        r = self.recipe
        spec = architecture(r.model.arch)
        head = (spec.embed_dim, self.num_classes) if r.head == "mlp" else (self.num_classes,)
        return vit_training_flops(spec, img_size=r.model.img_size, head_dims=head)

    def export(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The trunk under timm's keys; the vocabulary head is pretraining-only."""
        return {
            k[len(TRUNK_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(TRUNK_PREFIX)
        }

    def model_card(self) -> dict[str, Any]:
        return {
            "arch": self.recipe.model.arch,
            "img_size": self.recipe.model.img_size,
            "num_classes": self.num_classes,
            "init": self.recipe.init,
            "init_checkpoint": self.recipe.init_checkpoint,
        }


def dataset_classes(dataset: PretrainManifest) -> int:
    """The vocabulary size, checked against vocab.json when the manifest names one."""
    if dataset.vocab is not None:
        dataset.read_vocab()
    return dataset.num_classes


def run(
    recipe: WSPRecipe, *, parallelism: str = "auto", micro_batch_size: int | None = None
) -> TrainResult:
    dataset = read_manifest(recipe.data.train)
    task = WSPTask(recipe, dataset_classes(dataset))
    config = TrainConfig.from_recipe(
        recipe, parallelism=parallelism, micro_batch_size=micro_batch_size
    )
    return train(task, config, dataset)


def main(argv: Sequence[str] | None = None) -> int:
    parser = recipe_parser(
        "wsp",
        "Weakly supervised pretraining (Table 11; --recipe wsp-in21k for Table 13). "
        "--set init=mae --set init_checkpoint=<mae output> for MAE→WSP.",
        recipes=["wsp", "wsp-in21k"],
    )
    add_engine_arguments(parser)
    return run_recipe_step(
        parser,
        argv,
        lambda recipe, args: run(
            recipe, parallelism=args.parallelism, micro_batch_size=args.micro_batch_size
        ),
    )
