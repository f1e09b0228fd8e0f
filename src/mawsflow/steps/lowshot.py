"""`mawsflow lowshot`: low-shot classification, K ∈ {1, 5, 10} over 5 seeded splits (§4.4).

From the dataset's `train` split, each (K, seed) keeps at most K examples per class
(mawsflow.evaluation.lowshot); the splits are written once to `<output>/splits/` so that both
methods, and reruns, read the same examples. Two methods:

- `--method vpt` (Table 17): deep visual prompts on the frozen trunk, trained with the engine
  for `schedule.epochs_per_shot[K]` passes over the split; only the prompts and the linear head
  train (mawsflow.models.vpt). Each run's output is `<output>/runs/k<K>-seed<S>/`.
- `--method logreg`: multinomial logistic regression on the trunk's frozen features (MSN's
  protocol, which the paper uses for CLIP-like models), swept over `--lambd` values; each K
  reports the value with the best mean over seeds.

Each run is scored top-1 on the test split (`test`, else `val`); `<output>/metrics.json`
holds the mean and spread over seeds per K. Runs one process (each VPT run is short).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from mawsflow import storage
from mawsflow.data.decoders import ImageLabelsDecoder, SampleDecoder
from mawsflow.data.eval_loader import eval_loader
from mawsflow.data.eval_shards import (
    EvalSplit,
    SplitWriter,
    open_split,
    parse_label,
    scan_labels,
    write_classes,
)
from mawsflow.data.members import IMAGE_EXTENSIONS
from mawsflow.data.shards import samples_in_order
from mawsflow.data.transforms import normalize_images
from mawsflow.engine.flops import vit_training_flops
from mawsflow.engine.task import TrainTask
from mawsflow.engine.trainer import TrainConfig, train
from mawsflow.errors import ConfigError, DataFormatError
from mawsflow.evaluation.classification_metrics import ClassificationMeter
from mawsflow.evaluation.classify import NamedTestSet
from mawsflow.evaluation.eval_cli import dataset_name
from mawsflow.evaluation.features import batch_outputs, collect_outputs, eval_device
from mawsflow.evaluation.finetune_task import recipe_loss, require_init_checkpoint, trunk_card
from mawsflow.evaluation.lowshot import (
    MSN_LAMBDAS,
    best_regularization,
    logistic_regression_top1,
    sample_few_shot,
    summarize,
    summary_metrics,
)
from mawsflow.evaluation.results import EvalResult, model_lineage, write_result
from mawsflow.models.pretrained import init_from_trunk, load_trunk, load_vpt_model
from mawsflow.models.vit import architecture, create_trunk
from mawsflow.models.vpt import VPTClassifier
from mawsflow.recipes import (
    CheckpointConfig,
    DataConfig,
    LowShotRecipe,
    ScheduleConfig,
    check_transfer_augmentation,
)
from mawsflow.step_cli import recipe_parser, run_recipe_step
from mawsflow.typed_config import to_dict

log = logging.getLogger(__name__)

# The trainable part of a VPT model: what a run exports (the trunk is the init checkpoint's).
VPT_KEYS = ("prompts", "prompt_proj.", "head.")


@dataclass(frozen=True)
class LowShotConfig:
    """A low-shot evaluation: the recipe (Table 17) and how this run uses it."""

    recipe: LowShotRecipe
    method: Literal["vpt", "logreg"] = "vpt"
    # The evaluation's name in the report (default: the dataset's).
    name: str | None = None
    # The report row (default: the trunk's lineage).
    pretraining: str | None = None
    # logreg: the L2 strengths swept, as MSN's λ.
    lambdas: tuple[float, ...] = MSN_LAMBDAS
    # Feature extraction and test-set scoring.
    batch_size: int = 256
    num_workers: int = 2


def split_uri(output: str, shots: int, seed: int) -> str:
    return storage.join(output, "splits", f"k{shots}-seed{seed}")


def write_few_shot_splits(
    train: EvalSplit, output: str, shots: Sequence[int], seeds: Sequence[int]
) -> dict[tuple[int, int], EvalSplit]:
    """Every (K, seed) split as its own evaluation dataset, in one pass over the train split."""
    keys, labels = scan_labels(train)
    wanted: dict[tuple[int, int], set[str]] = {}
    for k in shots:
        for seed in seeds:
            wanted[(k, seed)] = {keys[i] for i in sample_few_shot(labels, k, seed)}
    writers = {}
    for (k, seed), _ in wanted.items():
        uri = split_uri(output, k, seed)
        write_classes(uri, train.classes)
        writers[(k, seed)] = SplitWriter(uri, "train", train.num_classes)
    union = set().union(*wanted.values())
    for raw in samples_in_order(train.shards):
        key = raw["__key__"]
        if key not in union:
            continue
        ext = next(e for e in IMAGE_EXTENSIONS if e in raw)
        label = parse_label(raw, train.num_classes)
        for split_id, members in wanted.items():
            if key in members:
                writers[split_id].write(key, raw[ext], ext, label)
    for writer in writers.values():
        writer.close()
    return {split_id: open_split(split_uri(output, *split_id), "train") for split_id in wanted}


class VPTTask(TrainTask):
    name = "lowshot"

    def __init__(self, recipe: LowShotRecipe, num_classes: int) -> None:
        # Table 17's ShortSideScale is redundant before RandomResizedCrop (sample_decoder).
        check_transfer_augmentation(recipe, short_side_scale=True)
        require_init_checkpoint(recipe)
        self.recipe = recipe
        self.num_classes = num_classes
        self.criterion = recipe_loss(recipe, num_classes)

    def build_model(self) -> VPTClassifier:
        r = self.recipe
        return VPTClassifier(
            create_trunk(r.model.arch, img_size=r.model.img_size),
            self.num_classes,
            num_tokens=r.vpt.num_tokens,
            dim_tokens=r.vpt.dim_tokens,
            dropout=r.vpt.dropout,
        )

    def initialize(self, model: nn.Module) -> None:
        r = self.recipe
        init_from_trunk(
            model.trunk, r.init_checkpoint, img_size=r.model.img_size, arch=r.model.arch
        )

    def block_stacks(self, model: nn.Module) -> list[nn.Sequential]:
        return [model.trunk.blocks]

    def sample_decoder(self) -> SampleDecoder:
        # Table 17's ShortSideScale(256) before RandomResizedCrop(224) only changes the
        # resolution that the crop is cut from; the crop box is a fraction of the image either
        # way, so the crop is taken from the original image.
        return ImageLabelsDecoder(self.recipe.augment, self.num_classes, single_label=True)

    def loss(self, model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
        images = normalize_images(batch["image"], normalize=self.recipe.augment.normalize)
        return self.criterion(model, images, batch["label"])

    def flops_per_sample(self) -> float:
        r = self.recipe
        # The prompts lengthen every block's sequence by num_tokens tokens.
        return vit_training_flops(
            architecture(r.model.arch),
            img_size=r.model.img_size,
            head_dims=(self.num_classes,),
            extra_tokens=r.vpt.num_tokens,
        )

    def export(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v for k, v in state_dict.items() if k.startswith(VPT_KEYS)}

    def model_card(self) -> dict[str, Any]:
        return trunk_card(self.recipe, self.num_classes)


def vpt_train_config(recipe: LowShotRecipe, split: EvalSplit, shots: int, seed: int) -> TrainConfig:
    """The engine's settings for one (K, seed) run: Table 17's length in passes over the split."""
    schedule = ScheduleConfig(
        epochs=recipe.schedule.epochs(shots),
        samples_per_epoch=split.num_samples,
        batch_size=recipe.schedule.batch_size,
        lr_schedule=recipe.schedule.lr_schedule,
        warmup_fraction=recipe.schedule.warmup_fraction,
    )
    return TrainConfig(
        output=storage.join(recipe.output, "runs", f"k{shots}-seed{seed}"),
        model=recipe.model,
        optimizer=recipe.optimizer,
        schedule=schedule,
        data=DataConfig(
            train=split.dataset,
            num_workers=recipe.data.num_workers,
            shuffle_buffer=recipe.data.shuffle_buffer,
        ),
        checkpoint=CheckpointConfig(every_steps=max(1, schedule.total_steps)),
        runtime=replace(recipe.runtime, seed=seed),
        recipe=to_dict(recipe),
    )


def _top1(
    model: nn.Module,
    split: EvalSplit,
    *,
    img_size: int,
    device: torch.device,
    batch_size: int,
    num_workers: int,
) -> float:
    meter = ClassificationMeter(ks=(1,))
    loader = eval_loader(split, img_size=img_size, batch_size=batch_size, num_workers=num_workers)
    for logits, labels, _ in batch_outputs(loader, model, device):
        meter.update(logits, labels)
    return meter.compute()["top1"]


def run(config: LowShotConfig) -> EvalResult:
    recipe = config.recipe
    if not recipe.data.train or not recipe.output:
        raise ConfigError("set data.train (an evaluation dataset) and output")
    train_split = open_split(recipe.data.train, "train")
    test_split = NamedTestSet("test", recipe.data.train, None).open()
    if test_split.classes != train_split.classes:
        raise DataFormatError(f"{recipe.data.train}: the train and test splits differ in classes")
    splits = write_few_shot_splits(train_split, recipe.output, recipe.shots, recipe.seeds)
    device = eval_device(recipe.runtime.device)
    img_size = recipe.model.img_size
    results: dict[int, list[float]] = {k: [] for k in recipe.shots}
    extra_metrics: dict[str, float] = {}
    if config.method == "logreg":
        trunk, _ = load_trunk(recipe.init_checkpoint, img_size=img_size, arch=recipe.model.arch)
        trunk.to(device).eval()

        def features(split: EvalSplit) -> tuple[np.ndarray, np.ndarray]:
            loader = eval_loader(
                split,
                img_size=img_size,
                batch_size=config.batch_size,
                num_workers=config.num_workers,
            )
            x, y = collect_outputs(loader, trunk, device)
            return x.numpy(), y.numpy()

        test_x, test_y = features(test_split)
        sweep: dict[float, dict[int, list[float]]] = {
            lam: {k: [] for k in recipe.shots} for lam in config.lambdas
        }
        for (k, seed), split in splits.items():
            train_x, train_y = features(split)
            for lam in config.lambdas:
                top1 = logistic_regression_top1(
                    train_x, train_y, test_x, test_y, lambd=lam, seed=seed
                )
                sweep[lam][k].append(top1)
                log.info(
                    "low-shot run", extra={"shots": k, "seed": seed, "lambd": lam, "top1": top1}
                )
        chosen = best_regularization(sweep)
        for k, lam in chosen.items():
            results[k] = sweep[lam][k]
            extra_metrics[f"{k}shot_lambd"] = lam
    else:
        for (k, seed), split in splits.items():
            train_config = vpt_train_config(recipe, split, k, seed)
            train(
                VPTTask(recipe, train_split.num_classes),
                train_config,
                split.as_training_manifest(),
            )
            top1 = _top1(
                load_vpt_model(train_config.output).to(device),
                test_split,
                img_size=img_size,
                device=device,
                batch_size=config.batch_size,
                num_workers=config.num_workers,
            )
            results[k].append(top1)
            log.info("low-shot run", extra={"shots": k, "seed": seed, "top1": top1})
    summaries = summarize(results)
    name = config.name or dataset_name(recipe.data.train)
    method = "VPT" if config.method == "vpt" else "logistic regression"
    metrics = {**summary_metrics(summaries), **extra_metrics}
    result = EvalResult(
        step="lowshot",
        evaluation=f"{name} low-shot ({method})",
        pretraining=config.pretraining or model_lineage(recipe.init_checkpoint),
        metrics=metrics,
        # VPT is the paper's protocol (Table 22's "5-shot" columns); logistic regression
        # results get their own columns beside it.
        table={
            f"{name} {s.shots}-shot" + ("" if config.method == "vpt" else " (logreg)"): s.mean
            for s in summaries
        },
        model=recipe.init_checkpoint,
        dataset=recipe.data.train,
        lowshot={str(s.shots): s.as_dict() for s in summaries},
    )
    write_result(recipe.output, result)
    log.info("low-shot", extra={"evaluation": result.evaluation, **metrics})
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = recipe_parser(
        "lowshot",
        "Low-shot classification with K examples per class over seeded splits: VPT (Table 17) "
        "or logistic regression on frozen features. --set init_checkpoint=<pretraining "
        "output> --set data.train=<eval dataset> --set output=<uri>.",
        recipes=["lowshot-vpt"],
    )
    parser.add_argument("--method", choices=("vpt", "logreg"), default="vpt")
    parser.add_argument("--name", help="the evaluation's name in the report")
    parser.add_argument("--pretraining", help="report row (default: the trunk's lineage)")
    parser.add_argument(
        "--lambd",
        type=float,
        nargs="+",
        default=list(MSN_LAMBDAS),
        help="logreg: L2 strengths to sweep, as MSN's λ (each K keeps the best mean; default "
        f"{' '.join(map(str, MSN_LAMBDAS))})",
    )
    parser.add_argument("--batch-size", type=int, default=256, help="feature/eval batch size")
    parser.add_argument("--num-workers", type=int, default=2, help="feature/eval loader workers")
    return run_recipe_step(
        parser,
        argv,
        lambda recipe, args: run(
            LowShotConfig(
                recipe,
                method=args.method,
                name=args.name,
                pretraining=args.pretraining,
                lambdas=tuple(args.lambd),
                batch_size=args.batch_size,
                num_workers=args.num_workers,
            )
        ),
    )
