"""`mawsflow finetune`: finetune a pretrained trunk with a linear head (Tables 14 and 15),
then evaluate it on one or more test sets.

The recipe follows how the trunk was pretrained (`--recipe auto`, the default): Table 14 for
an MAE trunk (AdamW, layer-wise lr decay 0.75, mixup 0.8 + cutmix 1.0, label smoothing 0.1),
Table 15 for a WSP or MAE→WSP trunk (SGD, gradient clipping, mixup 0.1); both use drop path
0.2 and an EMA of the weights (1e-4). Finetuning at a higher resolution than pretraining
(518px) interpolates the position embeddings.

`data.train` is an evaluation dataset (docs/data-formats.md) whose `train` split is trained
on. `--test-set [NAME=]URI[:SPLIT]` (repeatable) evaluates the finetuned (EMA) weights; a test
set with ReaL labels also reports ReaL accuracy, one with a `class_map.json` (ObjectNet) is
scored over its own classes. Outputs: `model.safetensors` (timm ViT with `head.`, EMA
weights), `model.json`, checkpoints, and `metrics.json` (the evaluation result).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from mawsflow.data.eval_shards import open_split
from mawsflow.errors import ConfigError
from mawsflow.evaluation.classify import NamedTestSet, evaluate_classifier
from mawsflow.evaluation.finetune_task import (
    FinetuneTask,
    add_evaluation_arguments,
    engine_options,
    train_then_evaluate,
)
from mawsflow.evaluation.results import EvalResult, model_lineage
from mawsflow.log import setup_logging
from mawsflow.models.pretrained import load_classifier
from mawsflow.recipes import FinetuneRecipe, describe, load_recipe
from mawsflow.step_cli import add_engine_arguments, recipe_parser
from mawsflow.typed_config import parse_override

log = logging.getLogger(__name__)


def recipe_for(init_checkpoint: str) -> str:
    """Table 14 for an MAE trunk, Table 15 for a WSP or MAE→WSP one (§B)."""
    return "finetune-mae" if model_lineage(init_checkpoint) == "MAE" else "finetune-wsp"


def run(
    recipe: FinetuneRecipe, test_sets: Sequence[NamedTestSet] = (), **engine: Any
) -> EvalResult | None:
    """Finetune, then score the EMA weights on `test_sets` (on the main rank). `engine`:
    `train_then_evaluate`'s parallelism, micro_batch_size and pretraining."""
    split = open_split(recipe.data.train, "train")
    return train_then_evaluate(
        FinetuneTask(recipe, split.num_classes),
        recipe,
        split.as_training_manifest(),
        test_sets,
        load_classifier,
        lambda model, card, device, test_set: evaluate_classifier(
            model,
            test_set.open(),
            img_size=int(card["img_size"]),
            device=device,
            batch_size=256,
            num_workers=2,
        ),
        step="finetune",
        evaluation="finetuned",
        **engine,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = recipe_parser(
        "finetune",
        "Finetune a pretrained trunk with a linear head (Table 14 for MAE, Table 15 for WSP "
        "and MAE→WSP; --recipe auto picks by the trunk's lineage) and evaluate it. "
        "--set init_checkpoint=<pretraining output> --set data.train=<eval dataset>.",
        recipes=["auto", "finetune-mae", "finetune-wsp"],
    )
    add_engine_arguments(parser)
    add_evaluation_arguments(parser, "test set")
    args = parser.parse_args(argv)
    try:
        name = args.recipe
        if name == "auto":
            sets = dict(parse_override(o) for o in args.overrides)
            if not sets.get("init_checkpoint"):
                raise ConfigError("--recipe auto needs --set init_checkpoint=<pretraining output>")
            name = recipe_for(str(sets["init_checkpoint"]))
        recipe = load_recipe(
            name, variant=args.variant, preset=args.preset, overrides=args.overrides
        )
    except ValueError as exc:  # ConfigError, and a malformed --set
        parser.error(str(exc))
    if args.print_config:
        print(describe(recipe), end="")
        return 0
    setup_logging()
    log.info("finetuning with recipe %s (%s)", name, recipe.source)
    run(recipe, args.test_sets, **engine_options(args))
    return 0
