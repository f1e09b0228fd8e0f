"""`mawsflow lowshot`: low-shot classification, K ∈ {1, 5, 10} over 5 seeded splits (§4.4).

From the dataset's `train` split, each (K, seed) keeps at most K examples per class
(mawsflow.evaluation.lowshot); the splits are written once to `<output>/splits/` so that both
methods, and reruns, read the same examples. Three methods:

- `--method vpt` (Table 17): deep visual prompts on the frozen trunk, trained with the engine
  for `schedule.epochs_per_shot[K]` passes over the split; only the prompts and the linear head
  train (mawsflow.models.vpt). Each run's output is `<output>/runs/k<K>-seed<S>/`.
- `--method logreg`: multinomial logistic regression on the trunk's frozen features (MSN's
  protocol, which the paper uses for CLIP-like models), swept over `--lambd` values; each K
  reports the value with the best mean over seeds.
- `--method finetune`: full finetuning of the trunk and a linear head on each split, MSN's
  protocol for MAE (Appendix B: "we therefore follow MSN and finetune MAE in low-shot
  settings"; Table 5's MAE row). The finetuning is Table 14's recipe (`finetune-mae`: AdamW,
  layer-wise lr decay, mixup/cutmix, label smoothing, drop path) as MAE's finetuning code runs
  it, which MSN used: no EMA, half-cycle cosine after warmup, the learning rate scaled
  linearly with the batch. The low-shot recipe gives its length and batch (passes over the
  K-shot split, Table 17's `epochs_per_shot`), resolution and seeds;
  docs/paper-deviations.md ("Protocols") says why. `--finetune-set` overrides the finetuning
  recipe. Each run's output (a finetuned classifier) is `<output>/runs/k<K>-seed<S>/`.

Each run is scored top-1 on the test split (`test`, else `val`); `<output>/metrics.json`
holds the mean and spread over seeds per K. Runs one process (each VPT run is short).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from mawsflow import storage
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
from mawsflow.engine.flops import vit_training_flops
from mawsflow.engine.trainer import TrainConfig, train
from mawsflow.errors import ConfigError, DataFormatError
from mawsflow.evaluation.classification_metrics import ClassificationMeter
from mawsflow.evaluation.classify import NamedTestSet
from mawsflow.evaluation.eval_cli import dataset_name
from mawsflow.evaluation.features import batch_outputs, collect_outputs, eval_device
from mawsflow.evaluation.finetune_task import (
    FinetuneTask,
    SingleLabelImagesTask,
    recipe_loss,
    require_init_checkpoint,
    trunk_card,
)
from mawsflow.evaluation.lowshot import (
    MSN_LAMBDAS,
    best_regularization,
    logistic_regression_top1,
    sample_few_shot,
    summarize,
    summary_metrics,
)
from mawsflow.evaluation.results import EvalResult, model_lineage, write_result
from mawsflow.models.pretrained import (
    init_from_trunk,
    load_classifier,
    load_trunk,
    load_vpt_model,
)
from mawsflow.models.vit import architecture, create_trunk
from mawsflow.models.vpt import VPTClassifier
from mawsflow.recipes import (
    CheckpointConfig,
    DataConfig,
    FinetuneRecipe,
    LowShotRecipe,
    ScheduleConfig,
    check_transfer_augmentation,
    load_recipe,
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
    method: Literal["vpt", "logreg", "finetune"] = "vpt"
    # finetune: the finetuning recipe (`lowshot_finetune_recipe`); its length, batch and
    # resolution come from `recipe`.
    finetune: FinetuneRecipe | None = None
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


class VPTTask(SingleLabelImagesTask):
    name = "lowshot"

    def __init__(self, recipe: LowShotRecipe, num_classes: int) -> None:
        # Table 17's ShortSideScale(256) before RandomResizedCrop(224) only changes the
        # resolution the crop is cut from (the crop box is a fraction of the image), so the
        # crop is taken from the original image (SingleLabelImagesTask.sample_decoder).
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


# --------------------------------------------------------------------------------------------
# Full finetuning (MSN's protocol for MAE)

FINETUNE_RECIPE = "finetune-mae"
# Where MAE's finetuning code, which MSN used for its MAE low-shot results, differs from Table 14
# (a 50-epoch finetune on all of IN1k): it keeps no EMA (an average over ~1e4 steps would not
# move in a low-shot run of a few hundred) and decays the learning rate by a half-cycle cosine.
LOWSHOT_FINETUNE_OVERRIDES = ("ema=null", "schedule.lr_schedule=cosine")


def lowshot_finetune_recipe(
    lowshot: LowShotRecipe, *, preset: str | None = None, overrides: Sequence[str] = ()
) -> FinetuneRecipe:
    """Table 14's finetuning recipe at the low-shot recipe's architecture and resolution, as
    MAE's code runs it (`LOWSHOT_FINETUNE_OVERRIDES`); `overrides` (`--finetune-set`) last."""
    return load_recipe(
        FINETUNE_RECIPE,
        preset=preset,
        overrides=[
            f"model.arch={lowshot.model.arch}",
            f"model.img_size={lowshot.model.img_size}",
            f"augment.crop.size={lowshot.augment.crop.size}",
            *LOWSHOT_FINETUNE_OVERRIDES,
            *overrides,
        ],
    )


def finetune_run_recipe(
    finetune: FinetuneRecipe, lowshot: LowShotRecipe, split: EvalSplit, shots: int, seed: int
) -> FinetuneRecipe:
    """One (K, seed) run: the finetuning recipe for `schedule.epochs_per_shot[K]` passes over
    the split at the low-shot batch size, its learning rate scaled linearly from the recipe's
    batch to that one (MAE's lr = blr × batch / 256)."""
    batch = lowshot.schedule.batch_size
    schedule = replace(
        finetune.schedule,
        epochs=lowshot.schedule.epochs(shots),
        samples_per_epoch=split.num_samples,
        batch_size=batch,
    )
    lr = finetune.optimizer.lr * batch / finetune.schedule.batch_size
    return replace(
        finetune,
        init_checkpoint=lowshot.init_checkpoint,
        optimizer=replace(finetune.optimizer, lr=lr),
        schedule=schedule,
        data=replace(
            finetune.data,
            train=split.dataset,
            num_workers=lowshot.data.num_workers,
            shuffle_buffer=lowshot.data.shuffle_buffer,
        ),
        output=storage.join(lowshot.output, "runs", f"k{shots}-seed{seed}"),
        checkpoint=CheckpointConfig(every_steps=max(1, schedule.total_steps)),
        runtime=replace(lowshot.runtime, seed=seed),
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


METHOD_NAMES = {"vpt": "VPT", "logreg": "logistic regression", "finetune": "full finetuning"}
TABLE_SUFFIX = {"vpt": "", "logreg": " (logreg)", "finetune": " (finetune)"}


def run(config: LowShotConfig) -> EvalResult:
    recipe = config.recipe
    if not recipe.data.train or not recipe.output:
        raise ConfigError("set data.train (an evaluation dataset) and output")
    require_init_checkpoint(recipe)
    if config.method == "finetune" and config.finetune is None:
        raise ConfigError("--method finetune needs its finetuning recipe (LowShotConfig.finetune)")
    if config.method != "logreg":
        # A K without a training length fails here, before any split is written or run trains.
        for k in recipe.shots:
            recipe.schedule.epochs(k)
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
    elif config.method == "finetune":
        assert config.finetune is not None
        for (k, seed), split in splits.items():
            run_recipe = finetune_run_recipe(config.finetune, recipe, split, k, seed)
            train(
                FinetuneTask(run_recipe, train_split.num_classes),
                TrainConfig.from_recipe(run_recipe),
                split.as_training_manifest(),
            )
            classifier, _ = load_classifier(run_recipe.output)
            top1 = _top1(
                classifier.to(device),
                test_split,
                img_size=img_size,
                device=device,
                batch_size=config.batch_size,
                num_workers=config.num_workers,
            )
            results[k].append(top1)
            log.info("low-shot run", extra={"shots": k, "seed": seed, "top1": top1})
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
    method = METHOD_NAMES[config.method]
    metrics = {**summary_metrics(summaries), **extra_metrics}
    result = EvalResult(
        step="lowshot",
        evaluation=f"{name} low-shot ({method})",
        pretraining=config.pretraining or model_lineage(recipe.init_checkpoint),
        metrics=metrics,
        # VPT is the paper's protocol (Table 22's "5-shot" columns); logistic regression and
        # full finetuning results get their own columns beside it.
        table={f"{name} {s.shots}-shot{TABLE_SUFFIX[config.method]}": s.mean for s in summaries},
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
        "Low-shot classification with K examples per class over seeded splits: VPT (Table 17), "
        "logistic regression on frozen features, or full finetuning (MSN's protocol for MAE "
        "trunks, with Table 14's finetuning recipe; --finetune-set overrides it). "
        "--set init_checkpoint=<pretraining output> --set data.train=<eval dataset> "
        "--set output=<uri>.",
        recipes=["lowshot-vpt"],
    )
    parser.add_argument(
        "--method",
        choices=("vpt", "logreg", "finetune"),
        default="vpt",
        help="vpt: prompts + head on the frozen trunk; logreg: logistic regression on frozen "
        "features; finetune: the whole trunk and a head (MSN's protocol for MAE)",
    )
    parser.add_argument(
        "--finetune-set",
        dest="finetune_overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"finetune: override one value of the finetuning recipe ({FINETUNE_RECIPE}, as "
        "low-shot runs it; see docs/paper-deviations.md), e.g. --finetune-set "
        "optimizer.layer_decay=0.65 (repeatable). Its optimizer.lr is the rate at its "
        "schedule.batch_size, scaled to the low-shot batch",
    )
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

    def run_step(recipe: LowShotRecipe, args: argparse.Namespace) -> EvalResult:
        finetune = None
        if args.method == "finetune":
            try:
                finetune = lowshot_finetune_recipe(
                    recipe, preset=args.preset, overrides=args.finetune_overrides
                )
            except ConfigError as exc:
                parser.error(f"--finetune-set: {exc}")
        elif args.finetune_overrides:
            parser.error("--finetune-set applies to --method finetune only")
        return run(
            LowShotConfig(
                recipe,
                method=args.method,
                finetune=finetune,
                name=args.name,
                pretraining=args.pretraining,
                lambdas=tuple(args.lambd),
                batch_size=args.batch_size,
                num_workers=args.num_workers,
            )
        )

    return run_recipe_step(parser, argv, run_step)
