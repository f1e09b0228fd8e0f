"""The command-line options every evaluation step shares (zeroshot, eval, eval-video,
eval-detection, linear-probe, lowshot), and how they name a result."""

from __future__ import annotations

import argparse

from mawsflow.data.transforms import DEFAULT_CROP_PCT, parse_crop_pct
from mawsflow.evaluation.classify import NamedTestSet


def _crop_pct(value: str) -> float | None:
    try:
        return parse_crop_pct(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return number


def parse_test_set(value: str) -> NamedTestSet:
    """`--test-set [NAME=]URI[:SPLIT]` as an argparse type."""
    try:
        return NamedTestSet.parse(value)
    except ValueError as exc:  # argparse would replace the message with a generic one
        raise argparse.ArgumentTypeError(str(exc)) from None


def model_eval_parser(
    prog: str,
    description: str,
    *,
    model_help: str,
    test_set_help: str | None = None,
    epilog: str | None = None,
) -> argparse.ArgumentParser:
    """A parser with the options every evaluation of a model shares: --model, --output, --name,
    --pretraining, --num-workers and --device. With `test_set_help` (which sets it scores and
    their default split), also the required, repeatable `--test-set [NAME=]URI[:SPLIT]`, parsed
    into `args.test_sets` (NamedTestSet). Steps add their own arguments to it."""
    parser = argparse.ArgumentParser(
        prog=f"mawsflow {prog}",
        description=description,
        epilog=epilog,
        # An epilog holds examples, laid out by hand.
        formatter_class=(
            argparse.RawDescriptionHelpFormatter if epilog else argparse.HelpFormatter
        ),
    )
    parser.add_argument("--model", required=True, help=model_help)
    parser.add_argument("--output", required=True, help="where metrics.json is written")
    if test_set_help is not None:
        parser.add_argument(
            "--test-set",
            dest="test_sets",
            action="append",
            required=True,
            type=parse_test_set,
            metavar="[NAME=]URI[:SPLIT]",
            help=f"{test_set_help} (repeatable); NAME is the report's column",
        )
    parser.add_argument(
        "--name",
        help="the evaluation's name in the report, e.g. 'IN1k' (default: named after the "
        "dataset folder or test sets)",
    )
    parser.add_argument(
        "--pretraining",
        help="the report row (MAE, WSP, MAE→WSP); default: read from the models' lineage",
    )
    parser.add_argument(
        "--num-workers", type=_non_negative, default=2, help="data decoding processes"
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    return parser


def eval_parser(
    prog: str,
    description: str,
    *,
    model_help: str,
    crop_pct: float | None = DEFAULT_CROP_PCT,
    test_set_help: str | None = None,
) -> argparse.ArgumentParser:
    """`model_eval_parser` with the options of an evaluation of images
    (mawsflow.step_cli.EvalOptions): --batch-size and --crop-pct."""
    parser = model_eval_parser(
        prog, description, model_help=model_help, test_set_help=test_set_help
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--crop-pct",
        type=_crop_pct,
        default=crop_pct,
        help="evaluation view: 'none' resizes straight to img_size (the maws evaluation of "
        "finetuned models); a fraction f resizes the short side to img_size / f and "
        f"centre-crops img_size (default: {crop_pct})",
    )
    return parser


def dataset_name(dataset: str) -> str:
    """A readable default name: the dataset URI's last folder."""
    return dataset.rstrip("/").rsplit("/", 1)[-1]
