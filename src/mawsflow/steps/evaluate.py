"""`mawsflow eval`: evaluate a finetuned classifier on one or more test sets.

`--test-set [NAME=]URI[:SPLIT]` (repeatable) names each set; a set with ReaL-style labels also
reports ReaL accuracy, and a label-subset set (ObjectNet's 113 classes, through its
`class_map.json`) is scored over its own classes. Under torchrun the shards of each set are
split across ranks. Writes `<output>/metrics.json`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from mawsflow.engine.distributed import init_distributed, shutdown
from mawsflow.evaluation.classify import NamedTestSet, evaluate_classifier
from mawsflow.evaluation.eval_cli import eval_parser
from mawsflow.evaluation.results import EvalResult
from mawsflow.evaluation.scored_sets import on_test_sets, score_test_sets, write_test_set_result
from mawsflow.log import setup_logging
from mawsflow.models.pretrained import load_classifier
from mawsflow.step_cli import EvalOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluateConfig:
    options: EvalOptions
    test_sets: tuple[NamedTestSet, ...]


def run(config: EvaluateConfig) -> EvalResult | None:
    """Score the finetuned model on every test set; rank 0 writes and returns the result."""
    opts = config.options
    ctx = init_distributed(opts.device)
    try:
        model, card = load_classifier(opts.model)
        model.to(ctx.device)
        # The start of the compute, for the demo's time split (bench/demo_time_split.py).
        log.info("evaluating", extra={"task": "eval"})
        scores = score_test_sets(
            config.test_sets,
            lambda test_set: evaluate_classifier(
                model,
                test_set.open(),
                img_size=int(card["img_size"]),
                device=ctx.device,
                batch_size=opts.batch_size,
                num_workers=opts.num_workers,
                crop_pct=opts.crop_pct,
                rank=ctx.rank,
                world_size=ctx.world_size,
            ),
            log_scores=ctx.is_main,
        )
        if not ctx.is_main:
            return None
        return write_test_set_result(
            opts.output,
            scores,
            step="eval",
            evaluation=opts.name or on_test_sets("finetuned model", scores),
            model=opts.model,
            pretraining=opts.pretraining,
        )
    finally:
        shutdown()


def build_parser() -> argparse.ArgumentParser:
    return eval_parser(
        "eval",
        "Evaluate a finetuned classifier on test sets (top-1/top-5, ReaL, label subsets).",
        model_help="the finetune step's output",
        test_set_help="a test set; the split defaults to test, else val",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    run(EvaluateConfig(EvalOptions.from_args(args), tuple(args.test_sets)))
    return 0
