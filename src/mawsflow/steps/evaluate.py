"""`mawsflow eval`: evaluate a finetuned classifier on one or more test sets.

`--test-set [NAME=]URI[:SPLIT]` (repeatable) names each set; a set with ReaL-style labels also
reports ReaL accuracy, and a label-subset set (ObjectNet's 113 classes, through its
`class_map.json`) is scored over its own classes. Under torchrun the shards of each set are
split across ranks. Writes `<output>/metrics.json`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from mawsflow.engine.distributed import init_distributed, shutdown
from mawsflow.evaluation.classify import (
    NamedTestSet,
    evaluate_classifier,
    flat_metrics,
    table_cells,
)
from mawsflow.evaluation.eval_cli import eval_parser, pretraining_row
from mawsflow.evaluation.results import EvalResult, write_result
from mawsflow.log import setup_logging
from mawsflow.models.pretrained import load_classifier

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    parser = eval_parser(
        "eval",
        "Evaluate a finetuned classifier on test sets (top-1/top-5, ReaL, label subsets).",
        model_help="the finetune step's output",
    )
    parser.add_argument(
        "--test-set",
        dest="test_sets",
        action="append",
        required=True,
        metavar="[NAME=]URI[:SPLIT]",
        help="a test set (repeatable); the split defaults to test, else val",
    )
    args = parser.parse_args(argv)
    try:
        test_sets = [NamedTestSet.parse(t) for t in args.test_sets]
    except ValueError as exc:
        parser.error(str(exc))
    setup_logging()
    ctx = init_distributed(args.device)
    try:
        model, card = load_classifier(args.model)
        model.to(ctx.device)
        results = []
        for test_set in test_sets:
            metrics = evaluate_classifier(
                model,
                test_set.open(),
                img_size=int(card["img_size"]),
                device=ctx.device,
                batch_size=args.batch_size,
                num_workers=args.num_workers,
                crop_pct=args.crop_pct,
                rank=ctx.rank,
                world_size=ctx.world_size,
            )
            results.append((test_set, metrics))
            if ctx.is_main:
                log.info("evaluated", extra={"test_set": test_set.name, **metrics})
        if ctx.is_main:
            names = ", ".join(t.name for t in test_sets)
            write_result(
                args.output,
                EvalResult(
                    step="eval",
                    evaluation=args.name or f"finetuned model on {names}",
                    pretraining=pretraining_row(args, args.model),
                    metrics=flat_metrics(results),
                    table=table_cells(results),
                    model=args.model,
                    dataset=" ".join(t.dataset for t in test_sets),
                ),
            )
    finally:
        shutdown()
    return 0
