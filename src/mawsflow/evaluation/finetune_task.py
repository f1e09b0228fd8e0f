"""What the finetuning steps (`finetune` on images, `finetune-video`) share: the engine task
around an `EMAClassifier` initialised from a pretraining output, the train-then-evaluate
flow of a step's `run`, and the evaluation result it writes.

A step subclasses `EMAClassifierTask` with its model, data and loss, and scores its test sets
with its own evaluator through `write_test_results`. `FinetuneTask` is the image one: the
`finetune` step trains it on an evaluation dataset, and `lowshot --method finetune` (MSN's
protocol) on each K-shot split. Its data and loss, `SingleLabelImagesTask`, are lowshot's VPT
task's too.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mawsflow.data.decoders import ImageLabelsDecoder, SampleDecoder
from mawsflow.data.manifest import PretrainManifest
from mawsflow.data.transforms import normalize_images
from mawsflow.engine.distributed import init_distributed, unwrap
from mawsflow.engine.flops import vit_training_flops
from mawsflow.engine.task import TrainTask
from mawsflow.engine.trainer import TrainConfig, train
from mawsflow.errors import ConfigError
from mawsflow.evaluation.classify import NamedTestSet
from mawsflow.evaluation.eval_cli import parse_test_set
from mawsflow.evaluation.features import eval_device
from mawsflow.evaluation.finetune import (
    ClassificationLoss,
    EMAClassifier,
    classifier_weights,
    layer_decay_scale,
)
from mawsflow.evaluation.results import EvalResult, model_lineage
from mawsflow.evaluation.scored_sets import score_test_sets, write_test_set_result
from mawsflow.models.pretrained import init_from_trunk
from mawsflow.models.vit import architecture, create_trunk
from mawsflow.recipes import FinetuneRecipe, check_transfer_augmentation


def require_init_checkpoint(recipe: Any) -> None:
    """Transfer steps start from a pretraining output; an empty one is a configuration error."""
    if not recipe.init_checkpoint:
        raise ConfigError("init_checkpoint is empty: give the pretraining run's output")


def trunk_card(recipe: Any, num_classes: int) -> dict[str, Any]:
    """The model-card fields of a classifier on a pretrained trunk."""
    return {
        "arch": recipe.model.arch,
        "img_size": recipe.model.img_size,
        "num_classes": num_classes,
        "init_checkpoint": recipe.init_checkpoint,
    }


def recipe_loss(recipe: Any, num_classes: int) -> ClassificationLoss:
    """The recipe's mixup/cutmix and label smoothing as the training loss."""
    return ClassificationLoss(
        num_classes,
        mixup=recipe.augment.mixup,
        cutmix=recipe.augment.cutmix,
        label_smoothing=recipe.loss.label_smoothing,
    )


class SingleLabelImagesTask(TrainTask):
    """The data and loss of a transfer task on single-label images (finetune, lowshot's VPT and
    finetune): each image augmented by the recipe (crop, flip, RandAugment; a short-side resize
    before the crop changes nothing, the crop box being a fraction of the image), normalised,
    and scored by `criterion`, the recipe's mixup/cutmix and label smoothing (`recipe_loss`).
    A subclass sets `recipe`, `num_classes` and `criterion`."""

    recipe: Any
    num_classes: int
    criterion: ClassificationLoss

    def sample_decoder(self) -> SampleDecoder:
        return ImageLabelsDecoder(self.recipe.augment, self.num_classes, single_label=True)

    def loss(self, model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
        images = normalize_images(batch["image"], normalize=self.recipe.augment.normalize)
        return self.criterion(model, images, batch["label"])


class EMAClassifierTask(TrainTask):
    """Finetuning of an `EMAClassifier` (`model.classifier` has the ViT's `blocks`): layer-wise
    learning-rate decay when the recipe sets one, the EMA updated after each optimizer step,
    the (EMA) classifier exported. `recipe` is a `FinetuneRecipe` or `VideoFinetuneRecipe`."""

    def __init__(self, recipe: Any, num_classes: int) -> None:
        require_init_checkpoint(recipe)
        self.recipe = recipe
        self.num_classes = num_classes
        self.depth = architecture(recipe.model.arch).layers
        decay = recipe.optimizer.layer_decay
        self._lr_scale = layer_decay_scale(self.depth, decay) if decay is not None else None

    def block_stacks(self, model: nn.Module) -> list[nn.Sequential]:
        return [model.classifier.blocks]

    def after_optimizer_step(self, model: nn.Module) -> None:
        unwrap(model).update_ema()

    def lr_scale(self, name: str) -> float:
        return self._lr_scale(name) if self._lr_scale is not None else 1.0

    def export(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The classifier (EMA weights when there is an EMA) under the model's own keys."""
        return classifier_weights(state_dict)

    def model_card(self) -> dict[str, Any]:
        r = self.recipe
        return {**trunk_card(r, self.num_classes), "dataset": r.data.train, "ema": r.ema}


# A finetuned model's evaluation on one test set: (model on its device, model card, device,
# test set) → metrics.
Scorer = Callable[[nn.Module, Mapping[str, Any], torch.device, NamedTestSet], dict[str, float]]


def train_then_evaluate(
    task: TrainTask,
    recipe: Any,
    manifest: PretrainManifest,
    test_sets: Sequence[NamedTestSet],
    load: Callable[[str], tuple[nn.Module, dict[str, Any]]],
    score: Scorer,
    *,
    step: str,
    evaluation: str,
    device: str = "auto",
    parallelism: str = "auto",
    micro_batch_size: int | None = None,
    pretraining: str | None = None,
) -> EvalResult | None:
    """A finetuning step's `run`: train `task` on `manifest`, then, on the main rank, load the
    model at `recipe.output` with `load` and `score` it on every test set (`write_test_results`;
    `pretraining` defaults to the trunk's lineage). None on other ranks or without test sets."""
    config = TrainConfig.from_recipe(
        recipe, parallelism=parallelism, micro_batch_size=micro_batch_size
    )
    # Joins the torchrun job (train reuses the process group): the main rank evaluates alone.
    ctx = init_distributed(config.runtime.device)
    result = train(task, config, manifest)
    if not test_sets or not ctx.is_main:
        return None
    model, card = load(recipe.output)
    dev = eval_device(device)
    model.to(dev)
    return write_test_results(
        recipe.output,
        card,
        test_sets,
        lambda test_set: score(model, card, dev, test_set),
        step=step,
        evaluation=evaluation,
        pretraining=pretraining or model_lineage(recipe.init_checkpoint),
        training=result.as_metrics(),
    )


def write_test_results(
    output: str,
    card: Mapping[str, Any],
    test_sets: Sequence[NamedTestSet],
    score: Callable[[NamedTestSet], dict[str, float]],
    *,
    step: str,
    evaluation: str,
    pretraining: str,
    training: Mapping[str, float],
) -> EvalResult:
    """Score the finetuned model at `output` (model card `card`) on every test set with
    `score`; writes and returns the result, described as "<evaluation> on <training set>"."""
    scores = score_test_sets(test_sets, score)
    trained_on = card["dataset"].rstrip("/").rsplit("/", 1)[-1]
    return write_test_set_result(
        output,
        scores,
        step=step,
        evaluation=f"{evaluation} on {trained_on}",
        model=output,
        pretraining=pretraining,
        dataset=card["dataset"],
        extra_metrics={f"train_{k}": float(v) for k, v in training.items()},
    )


def add_evaluation_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """A finetuning step's `--test-set` (repeatable; `what` the datasets it takes) and
    `--pretraining`."""
    parser.add_argument(
        "--test-set",
        dest="test_sets",
        action="append",
        default=[],
        type=parse_test_set,
        metavar="[NAME=]URI[:SPLIT]",
        help=f"evaluate the finetuned model on this {what} (repeatable)",
    )
    parser.add_argument("--pretraining", help="report row (default: the trunk's lineage)")


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed engine options and `--pretraining`, as `train_then_evaluate`'s keywords."""
    return {
        "parallelism": args.parallelism,
        "micro_batch_size": args.micro_batch_size,
        "pretraining": args.pretraining,
    }


class FinetuneTask(SingleLabelImagesTask, EMAClassifierTask):
    """Finetuning of a pretrained image trunk with a linear head (Tables 14 and 15): the
    trunk from a pretraining output, a near-zero head, drop path; single-label images."""

    name = "finetune"  # loaded back with models.pretrained.load_classifier

    def __init__(self, recipe: FinetuneRecipe, num_classes: int) -> None:
        check_transfer_augmentation(recipe, short_side_scale=False)
        super().__init__(recipe, num_classes)
        self.criterion = recipe_loss(recipe, num_classes)

    def build_model(self) -> EMAClassifier:
        r = self.recipe
        classifier = create_trunk(
            r.model.arch, img_size=r.model.img_size, drop_path=r.model.drop_path
        )
        classifier.reset_classifier(self.num_classes)
        # A near-zero head starts the finetuning from the pretrained features (as MAE does).
        nn.init.trunc_normal_(classifier.head.weight, std=2e-5)
        nn.init.zeros_(classifier.head.bias)
        return EMAClassifier(classifier, r.ema)

    def initialize(self, model: nn.Module) -> None:
        r = self.recipe
        # The trunk's weights; the near-zero head of build_model stays.
        init_from_trunk(
            model.classifier,
            r.init_checkpoint,
            img_size=r.model.img_size,
            arch=r.model.arch,
            drop_path=r.model.drop_path,
            missing_ok=("head.",),
        )
        model.reset_ema()

    def flops_per_sample(self) -> float:
        r = self.recipe
        return vit_training_flops(
            architecture(r.model.arch), img_size=r.model.img_size, head_dims=(self.num_classes,)
        )
