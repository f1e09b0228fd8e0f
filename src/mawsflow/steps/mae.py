"""`mawsflow mae`: MAE pre-pretraining (Table 10).

Reads a pretraining dataset (`data.train`, its manifest.json), trains a masked autoencoder with
the engine and writes `<output>/model.safetensors` (the encoder, timm keys),
`model.json`, `metrics.json` and resumable checkpoints. Launch with torchrun for several GPUs.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mawsflow.engine.data import ImageDecoder, SampleDecoder, normalize_images, read_manifest
from mawsflow.engine.flops import mae_training_flops
from mawsflow.engine.task import TrainTask
from mawsflow.engine.trainer import TrainConfig, TrainResult, train
from mawsflow.errors import ConfigError
from mawsflow.models.mae import MaskedAutoencoder
from mawsflow.models.vit import architecture, create_trunk
from mawsflow.recipes import MAERecipe
from mawsflow.step_cli import recipe_parser, run_recipe_step

ENCODER_PREFIX = "encoder."


def check_crop_matches_model(recipe: Any) -> None:
    if recipe.augment.crop.size != recipe.model.img_size:
        raise ConfigError(
            f"augment.crop.size {recipe.augment.crop.size} must equal model.img_size "
            f"{recipe.model.img_size}: the model trains on the crops"
        )


def check_augmentation(recipe: Any, *, batch_mixing: bool) -> None:
    """The pretraining steps apply crop, flip, RandAugment and (WSP) mixup; other settings of
    the augment section would be silently ignored, so they are refused."""
    check_crop_matches_model(recipe)
    aug = recipe.augment
    unsupported = {"augment.cutmix": aug.cutmix, "augment.random_erasing": aug.random_erasing}
    if not batch_mixing:
        unsupported["augment.mixup"] = aug.mixup
    for key, value in unsupported.items():
        if value:
            raise ConfigError(f"{key}={value} is not supported by this step; set it to 0")
    if aug.short_side_scale is not None:
        raise ConfigError("augment.short_side_scale is not used by pretraining; set it to null")


class MAETask(TrainTask):
    name = "mae"

    def __init__(self, recipe: MAERecipe) -> None:
        check_augmentation(recipe, batch_mixing=False)
        self.recipe = recipe

    def build_model(self) -> MaskedAutoencoder:
        r = self.recipe
        trunk = create_trunk(r.model.arch, img_size=r.model.img_size, drop_path=r.model.drop_path)
        return MaskedAutoencoder(
            trunk,
            decoder_depth=r.decoder.depth,
            decoder_dim=r.decoder.embed_dim,
            decoder_heads=r.decoder.num_heads,
            mask_ratio=r.mask_ratio,
            norm_pix_loss=r.norm_pix_loss,
        )

    def block_stacks(self, model: nn.Module) -> list[nn.Sequential]:
        return model.block_stacks()

    def sample_decoder(self) -> SampleDecoder:
        return ImageDecoder(self.recipe.augment)

    def loss(self, model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
        images = normalize_images(batch["image"], normalize=self.recipe.augment.normalize)
        loss, _, _ = model(images)
        return loss

    def flops_per_sample(self) -> float:
        r = self.recipe
        return mae_training_flops(
            architecture(r.model.arch),
            img_size=r.model.img_size,
            mask_ratio=r.mask_ratio,
            decoder_depth=r.decoder.depth,
            decoder_dim=r.decoder.embed_dim,
        )

    def export(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The encoder alone, under timm's VisionTransformer keys."""
        return {
            k[len(ENCODER_PREFIX) :]: v
            for k, v in state_dict.items()
            if k.startswith(ENCODER_PREFIX)
        }

    def model_card(self) -> dict[str, Any]:
        return {
            "arch": self.recipe.model.arch,
            "img_size": self.recipe.model.img_size,
            "num_classes": 0,
        }


def run(
    recipe: MAERecipe, *, parallelism: str = "auto", micro_batch_size: int | None = None
) -> TrainResult:
    dataset = read_manifest(recipe.data.train)
    config = TrainConfig.from_recipe(
        recipe, parallelism=parallelism, micro_batch_size=micro_batch_size
    )
    return train(MAETask(recipe), config, dataset)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of every engine-driven step: how the work is spread, not what is learnt."""
    parser.add_argument(
        "--parallelism",
        choices=("auto", "ddp", "fsdp"),
        default="auto",
        help="data parallelism: DDP replicas or FSDP2 shards (auto: FSDP for 2B and 6.5B)",
    )
    parser.add_argument(
        "--micro-batch-size",
        type=int,
        default=None,
        help="per-process batch of one forward/backward; gradients accumulate to the "
        "recipe's global batch (default: no accumulation)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = recipe_parser("mae", "MAE pre-pretraining (Table 10).", recipes=["mae"])
    add_engine_arguments(parser)
    return run_recipe_step(
        parser,
        argv,
        lambda recipe, args: run(
            recipe, parallelism=args.parallelism, micro_batch_size=args.micro_batch_size
        ),
    )
