"""`mawsflow wsp`: weakly supervised pretraining (Table 11 on IG-3B, Table 13 on IN21k).

The trunk starts from an MAE run's output (`init=mae`, MAE→WSP), from scratch (the WSP
baseline), from a released checkpoint in timm layout (`init=timm`, a `.safetensors` or
`.pth` file), or from an earlier WSP model (`init=wsp`: scheduled retraining continuing the
production model; its trunk, and its head from its last checkpoint, class by class by WordNet
id). The head covers the dataset's synset vocabulary
(`num_classes` of its manifest). Outputs: `<output>/model.safetensors` (the trunk, timm
keys; the head stays in the final checkpoint), `model.json`, `metrics.json`, checkpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from mawsflow import storage
from mawsflow.data.decoders import ImageLabelsDecoder, SampleDecoder
from mawsflow.data.manifest import PretrainManifest, read_manifest
from mawsflow.data.transforms import normalize_images
from mawsflow.engine.checkpoint import latest_complete_checkpoint, read_model_tensors
from mawsflow.engine.flops import vit_training_flops
from mawsflow.engine.task import TrainTask
from mawsflow.engine.trainer import TrainConfig, TrainResult, train
from mawsflow.errors import ConfigError, DataFormatError
from mawsflow.models.artifacts import read_model_card
from mawsflow.models.pretrained import init_from_trunk, load_mae_encoder, load_timm_checkpoint
from mawsflow.models.vit import architecture, create_trunk
from mawsflow.models.wsp import (
    WSPClassifier,
    WSPHead,
    multi_hot,
    normalized_label_cross_entropy,
)
from mawsflow.recipes import WSPRecipe, check_pretraining_augmentation
from mawsflow.step_cli import add_engine_arguments, recipe_parser, run_recipe_step

log = logging.getLogger(__name__)

TRUNK_PREFIX = "trunk."


class WSPTask(TrainTask):
    name = "wsp"

    def __init__(self, recipe: WSPRecipe, num_classes: int, vocabulary: Sequence[str] = ()) -> None:
        check_pretraining_augmentation(recipe, batch_mixing=True)
        if num_classes < 1:
            raise DataFormatError(f"the dataset's vocabulary is empty (num_classes={num_classes})")
        if recipe.init != "scratch" and not recipe.init_checkpoint:
            raise ConfigError(f"init={recipe.init} needs init_checkpoint (a URI)")
        if vocabulary and len(vocabulary) != num_classes:
            raise DataFormatError(
                f"the vocabulary names {len(vocabulary)} classes, the dataset {num_classes}"
            )
        self.recipe = recipe
        self.num_classes = num_classes
        # The classes' WordNet ids in head order: what a continued head is matched by.
        self.vocabulary = list(vocabulary)
        self.head_continued: dict[str, Any] = {}

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
        elif r.init == "wsp":
            # Continuing from a WSP model (a retraining run's warm start): its trunk, and its
            # head from its last checkpoint, class by class where the vocabularies share them.
            init_from_trunk(
                model.trunk, r.init_checkpoint, img_size=r.model.img_size, arch=r.model.arch
            )
            self.head_continued = continue_head(model, r.init_checkpoint, self.vocabulary)

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
        card = {
            "arch": self.recipe.model.arch,
            "img_size": self.recipe.model.img_size,
            "num_classes": self.num_classes,
            "init": self.recipe.init,
            "init_checkpoint": self.recipe.init_checkpoint,
        }
        if self.head_continued:
            card["head_continued"] = self.head_continued
        return card


def _vocabulary_of(manifest: PretrainManifest) -> list[str]:
    """The classes' WordNet ids in head order ([] where the dataset names no vocabulary)."""
    if manifest.vocab is None:
        return []
    return [str(entry.get("wnid") or entry.get("synset", "")) for entry in manifest.read_vocab()]


def continue_head(model: nn.Module, source: str, vocabulary: Sequence[str]) -> dict[str, Any]:
    """Copy the vocabulary head of the WSP model at `source` into `model`'s, from that model's
    last complete checkpoint (a WSP output keeps only the trunk in its weights): the layers
    before the classifier whole, the classifier row by row for the classes both vocabularies
    have (matched by WordNet id; a new class starts afresh). Returns what was carried over, for
    the model card; without a checkpoint or a vocabulary to match by, the head starts afresh
    and the log says why."""
    step = latest_complete_checkpoint(source)
    try:
        old_vocabulary = _vocabulary_of(
            read_manifest(read_model_card(source)["recipe"]["data"]["train"])
        )
    except (KeyError, TypeError, ValueError, storage.StorageError) as exc:
        old_vocabulary, why = [], f"its dataset's vocabulary cannot be read ({exc})"
    else:
        why = "its dataset names no vocabulary"
    if step is None:
        why = "it has no complete checkpoint, which holds the head"
    if step is None or not old_vocabulary or not vocabulary:
        log.warning("the head starts afresh", extra={"source": source, "why": why})
        return {}
    old = read_model_tensors(step, "head.")
    old_index = {wnid: i for i, wnid in enumerate(old_vocabulary)}
    rows = [(new, old_index[wnid]) for new, wnid in enumerate(vocabulary) if wnid in old_index]
    state = model.state_dict()
    with torch.no_grad():
        for name, tensor in old.items():
            target = state.get(name)
            if target is None:
                continue
            if name.startswith("head.fc."):
                if tensor.shape[0] != len(old_vocabulary):
                    raise DataFormatError(
                        f"{step}: {name} has {tensor.shape[0]} rows for a vocabulary of "
                        f"{len(old_vocabulary)}"
                    )
                for new, before in rows:
                    target[new].copy_(tensor[before])
            elif target.shape == tensor.shape:
                target.copy_(tensor)
    carried = {
        "checkpoint": step,
        "classes_carried": len(rows),
        "classes_new": len(vocabulary) - len(rows),
        "classes_dropped": len(old_vocabulary) - len(rows),
    }
    log.info("head continued", extra={"source": source, **carried})
    return carried


def dataset_classes(dataset: PretrainManifest) -> int:
    """The vocabulary size, checked against vocab.json when the manifest names one."""
    if dataset.vocab is not None:
        dataset.read_vocab()
    return dataset.num_classes


def run(
    recipe: WSPRecipe, *, parallelism: str = "auto", micro_batch_size: int | None = None
) -> TrainResult:
    dataset = read_manifest(recipe.data.train)
    num_classes = dataset_classes(dataset)
    task = WSPTask(recipe, num_classes, _vocabulary_of(dataset) if recipe.init == "wsp" else ())
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
