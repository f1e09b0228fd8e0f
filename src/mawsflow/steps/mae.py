"""`mawsflow mae`: MAE pre-pretraining (Table 10).

Reads a pretraining dataset (`data.train`, its manifest.json), trains a masked autoencoder with
the engine and writes `<output>/model.safetensors` (the encoder, timm keys),
`model.json`, `metrics.json` and resumable checkpoints. Launch with torchrun for several GPUs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mawsflow.data.decoders import ImageDecoder, SampleDecoder
from mawsflow.data.manifest import read_manifest
from mawsflow.data.transforms import normalize_images
from mawsflow.engine.flops import mae_training_flops
from mawsflow.engine.task import TrainTask
from mawsflow.engine.trainer import TrainConfig, TrainResult, train
from mawsflow.models.mae import MaskedAutoencoder
from mawsflow.models.vit import architecture, create_trunk
from mawsflow.recipes import MAERecipe, check_pretraining_augmentation
from mawsflow.step_cli import add_engine_arguments, recipe_parser, run_recipe_step

ENCODER_PREFIX = "encoder."


class MAETask(TrainTask):
    name = "mae"

    def __init__(self, recipe: MAERecipe) -> None:
        check_pretraining_augmentation(recipe, batch_mixing=False)
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
