"""The command-line options every evaluation step shares (zeroshot, eval, linear-probe,
lowshot), and how they name a result."""

from __future__ import annotations

import argparse

from mawsflow.data.transforms import DEFAULT_CROP_PCT, parse_crop_pct


def _crop_pct(value: str) -> float | None:
    try:
        return parse_crop_pct(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def eval_parser(
    prog: str,
    description: str,
    *,
    model_help: str,
    crop_pct: float | None = DEFAULT_CROP_PCT,
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"mawsflow {prog}", description=description)
    parser.add_argument("--model", required=True, help=model_help)
    parser.add_argument("--output", required=True, help="where metrics.json is written")
    parser.add_argument(
        "--name",
        help="the evaluation's name in the report, e.g. 'IN1k' (default: the dataset folder)",
    )
    parser.add_argument(
        "--pretraining",
        help="the report row (MAE, WSP, MAE→WSP); default: read from the models' lineage",
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
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
