"""`mawsflow lit`: LiT text alignment with a frozen image tower (Table 12).

The image tower is the trunk of a WSP or MAE→WSP run (`image_checkpoint`), frozen. The text
tower is a pretrained Hugging Face encoder (`text.model`: XLM-R Large in the paper; any name or
folder, see mawsflow.models.text_tower). Both get a linear projection to `text.embed_dim`, and
a learned temperature starts at log(1/0.07). Captions (the dataset's `.txt` members) are
sanitised, `#` removed, and cut to `text.context_length` tokens (plus the special tokens); the
caption vector is the first token's state (`text.pooling`); the CLIP loss with label smoothing
0.1 sees every rank's features.

Outputs: `model.safetensors` (both towers, projections and temperature), `model.json`,
`metrics.json`, checkpoints, and `text/` (the encoder's config and tokenizer), so zero-shot
evaluation rebuilds the model from this output alone.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mawsflow import storage
from mawsflow.data.captions import sanitize_caption
from mawsflow.data.decoders import SampleDecoder
from mawsflow.data.manifest import read_manifest
from mawsflow.data.members import CorruptSample, image_member
from mawsflow.data.transforms import RandomResizedCropFlip, normalize_images
from mawsflow.engine.distributed import init_distributed
from mawsflow.engine.flops import (
    linear_forward_flops,
    transformer_forward_flops,
    vit_training_flops,
)
from mawsflow.engine.task import TrainTask
from mawsflow.engine.trainer import TrainConfig, TrainResult, train
from mawsflow.errors import ConfigError
from mawsflow.models.artifacts import TEXT_FOLDER
from mawsflow.models.clip_loss import clip_loss
from mawsflow.models.lit import LiTModel
from mawsflow.models.pretrained import init_from_trunk, load_text_encoder
from mawsflow.models.text_tower import (
    CaptionTokenizer,
    TextModelSource,
    build_text_tower,
    load_caption_tokenizer,
    save_text_files,
    text_config,
)
from mawsflow.models.vit import architecture, create_trunk
from mawsflow.recipes import AugmentConfig, LiTRecipe, check_pretraining_augmentation
from mawsflow.step_cli import add_engine_arguments, recipe_parser, run_recipe_step


class ImageCaptionDecoder:
    """Raw sample → {"image", "input_ids", "attention_mask"}: the recipe's crop and flip, and
    the sanitised caption tokenised to the context length (in the loader workers)."""

    def __init__(self, augment: AugmentConfig, tokenizer: CaptionTokenizer) -> None:
        self.augment = RandomResizedCropFlip(augment)
        self.tokenizer = tokenizer

    def __call__(self, raw: Mapping[str, Any], seed: int) -> dict[str, torch.Tensor]:
        if "txt" not in raw:
            raise CorruptSample("no .txt caption member")
        caption = raw["txt"].decode("utf-8")
        if not sanitize_caption(caption):
            raise CorruptSample("caption is empty once sanitised")
        tokens = self.tokenizer([caption])
        return {
            "image": self.augment(image_member(raw), seed),
            "input_ids": tokens["input_ids"][0],
            "attention_mask": tokens["attention_mask"][0],
        }


class LiTTask(TrainTask):
    name = "lit"

    def __init__(self, recipe: LiTRecipe) -> None:
        check_pretraining_augmentation(recipe, batch_mixing=False)
        if not recipe.image_checkpoint:
            raise ConfigError("image_checkpoint is empty: give the WSP or MAE→WSP run's output")
        self.recipe = recipe
        self.text_source = TextModelSource.resolve(recipe.text.model)
        self.text_config = text_config(self.text_source, dropout=recipe.text.dropout)
        self.tokenizer = load_caption_tokenizer(self.text_source, recipe.text.context_length)

    def build_model(self) -> LiTModel:
        r = self.recipe
        trunk = create_trunk(r.model.arch, img_size=r.model.img_size)
        text = build_text_tower(
            self.text_source, dropout=r.text.dropout, pretrained=False, pooling=r.text.pooling
        )
        return LiTModel(
            trunk,
            trunk.embed_dim,
            text,
            embed_dim=r.text.embed_dim,
            init_logit_scale=r.init_logit_scale,
        )

    def initialize(self, model: nn.Module) -> None:
        r = self.recipe
        init_from_trunk(
            model.image_tower, r.image_checkpoint, img_size=r.model.img_size, arch=r.model.arch
        )
        load_text_encoder(model.text_tower.encoder, self.text_source)

    def block_stacks(self, model: nn.Module) -> list[nn.Sequential]:
        return [model.image_tower.blocks]

    def sample_decoder(self) -> SampleDecoder:
        return ImageCaptionDecoder(self.recipe.augment, self.tokenizer)

    def loss(self, model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
        images = normalize_images(batch["image"], normalize=self.recipe.augment.normalize)
        image_features, text_features, scale = model(
            images, batch["input_ids"], batch["attention_mask"]
        )
        return clip_loss(
            image_features.float(),
            text_features.float(),
            scale.float(),
            label_smoothing=self.recipe.loss.label_smoothing,
        )

    def flops_per_sample(self) -> float:
        """The frozen image tower runs forward only; the text tower trains (forward and
        backward, counted at the full context length)."""
        r = self.recipe
        spec = architecture(r.model.arch)
        image_forward = vit_training_flops(spec, img_size=r.model.img_size) / 3
        text = self.text_config
        width = int(text.hidden_size)
        text_forward = transformer_forward_flops(
            self.tokenizer.sequence_length,
            int(text.num_hidden_layers),
            width,
            int(getattr(text, "intermediate_size", 4 * width)),
        )
        projections = linear_forward_flops(1, spec.embed_dim, r.text.embed_dim)
        projections += linear_forward_flops(1, width, r.text.embed_dim)
        return image_forward + 3 * (text_forward + projections)

    def export(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return dict(state_dict)

    def model_card(self) -> dict[str, Any]:
        r = self.recipe
        return {
            "arch": r.model.arch,
            "img_size": r.model.img_size,
            "embed_dim": r.text.embed_dim,
            "text_model": r.text.model,
            "text_files": TEXT_FOLDER,
            "context_length": r.text.context_length,
            "text_pooling": r.text.pooling,
            "image_checkpoint": r.image_checkpoint,
        }


def write_text_files(source: TextModelSource, output: str) -> None:
    """`<output>/text/`: the encoder's config and tokenizer files."""
    with tempfile.TemporaryDirectory() as folder:
        save_text_files(source, folder)
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                relative = path.relative_to(folder).as_posix()
                storage.upload_file(str(path), storage.join(output, TEXT_FOLDER, relative))


def run(
    recipe: LiTRecipe, *, parallelism: str = "auto", micro_batch_size: int | None = None
) -> TrainResult:
    # Tokenizers run in the loader workers; their own thread pool would fight the fork.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    dataset = read_manifest(recipe.data.train)
    task = LiTTask(recipe)
    config = TrainConfig.from_recipe(
        recipe, parallelism=parallelism, micro_batch_size=micro_batch_size
    )
    # Before training: the model card, written last by the trainer, marks a complete output.
    # Joining the torchrun job here tells the rank (train reuses the process group).
    if init_distributed(config.runtime.device).is_main:
        write_text_files(task.text_source, recipe.output)
    return train(task, config, dataset)


def main(argv: Sequence[str] | None = None) -> int:
    parser = recipe_parser(
        "lit",
        "LiT: align a pretrained text tower to a frozen WSP / MAE→WSP image tower (Table 12). "
        "--set image_checkpoint=<wsp output> --set data.train=<dataset with captions>.",
        recipes=["lit"],
    )
    add_engine_arguments(parser)
    return run_recipe_step(
        parser,
        argv,
        lambda recipe, args: run(
            recipe, parallelism=args.parallelism, micro_batch_size=args.micro_batch_size
        ),
    )
