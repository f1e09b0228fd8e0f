"""`mawsflow eval-video`: score a finetuned video classifier with the multi-view test protocol.

The model is `mawsflow finetune-video`'s output; its card says the clip sampling it was trained
with (frames, clip length) and its recipe's test views (`video.test_clips` temporal ×
`video.test_crops` spatial, mae_st's 10 × 3 by default; `--test-clips` / `--test-crops` change
them). Each video's logits are averaged over its views and scored once (top-1, top-5). Corrupt,
empty and too-short videos are skipped and counted per test set (`<set>_skipped_<reason>`), so
a test set that lost videos says so. `--test-set [NAME=]URI[:SPLIT]` (repeatable) names each
video dataset (`mawsflow prepare-eval --layout kinetics|ssv2`); NAME is the report's column,
e.g. K400 or SSv2. Under torchrun the shards are split across ranks. Writes
`<output>/metrics.json`, the evaluation result the report reads.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mawsflow.engine.distributed import init_distributed, shutdown
from mawsflow.evaluation.classify import NamedTestSet
from mawsflow.evaluation.eval_cli import model_eval_parser
from mawsflow.evaluation.results import EvalResult
from mawsflow.evaluation.scored_sets import on_test_sets, score_test_sets, write_test_set_result
from mawsflow.evaluation.video_classify import (
    card_sampling,
    card_views,
    evaluate_video_classifier,
    open_video_test_split,
)
from mawsflow.log import setup_logging
from mawsflow.models.video_vit import load_video_classifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalVideoConfig:
    model: str  # mawsflow finetune-video's output
    output: str  # where metrics.json goes
    test_sets: tuple[NamedTestSet, ...]
    name: str | None = None  # the evaluation's name (default: "video finetuned on <sets>")
    pretraining: str | None = None  # the report row (default: the model's lineage)
    test_clips: int | None = None  # temporal views (default: the model's recipe)
    test_crops: int | None = None  # spatial views (default: the model's recipe)
    views_per_forward: int = 32  # views in one forward pass (memory, not results)
    num_workers: int = 2
    device: Literal["auto", "cpu", "cuda"] = "auto"


def run(config: EvalVideoConfig) -> EvalResult | None:
    """Score the finetuned video model on every test set; rank 0 writes and returns the
    result."""
    ctx = init_distributed(config.device)
    try:
        model, card = load_video_classifier(config.model)
        model.to(ctx.device)
        sampling = card_sampling(card)
        views = card_views(card, config.test_clips, config.test_crops)
        scores = score_test_sets(
            config.test_sets,
            lambda test_set: evaluate_video_classifier(
                model,
                open_video_test_split(test_set),
                sampling,
                views,
                device=ctx.device,
                num_workers=config.num_workers,
                normalize=bool(card["video"].get("normalize", True)),
                views_per_forward=config.views_per_forward,
                rank=ctx.rank,
                world_size=ctx.world_size,
            ),
            log_scores=ctx.is_main,
            log_extra={"views": views.clips * views.crops},
        )
        if not ctx.is_main:
            return None
        return write_test_set_result(
            config.output,
            scores,
            step="eval-video",
            evaluation=config.name or on_test_sets("video finetuned model", scores),
            model=config.model,
            pretraining=config.pretraining,
        )
    finally:
        shutdown()


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = model_eval_parser(
        "eval-video",
        "Score a finetuned video classifier (mawsflow finetune-video's output) with the "
        "multi-view test protocol: temporal clips × spatial crops per video, logits "
        "averaged; corrupt, empty and too-short videos skipped and counted.",
        model_help="mawsflow finetune-video's output",
        test_set_help="a video dataset to score, e.g. K400=URI; the split defaults to test, "
        "else val",
        epilog=(
            "example:\n"
            "  mawsflow eval-video --model s3://runs/k400-finetune "
            "--test-set K400=s3://eval/k400:val --output s3://runs/k400-eval\n\n"
            "The test views default to the model's recipe (video.test_clips × "
            "video.test_crops)."
        ),
    )
    parser.add_argument("--test-clips", type=_positive, help="temporal views per video")
    parser.add_argument("--test-crops", type=_positive, help="spatial views per clip")
    parser.add_argument(
        "--views-per-forward",
        type=_positive,
        default=32,
        help="views in one forward pass: lower it if a video's views do not fit in memory",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    run(
        EvalVideoConfig(
            model=args.model,
            output=args.output,
            test_sets=tuple(args.test_sets),
            name=args.name,
            pretraining=args.pretraining,
            test_clips=args.test_clips,
            test_crops=args.test_crops,
            views_per_forward=args.views_per_forward,
            num_workers=args.num_workers,
            device=args.device,
        )
    )
    return 0
