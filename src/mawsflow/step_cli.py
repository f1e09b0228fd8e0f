"""The command-line shape every recipe-driven step shares.

`mawsflow <step> --recipe NAME [--variant V] [--preset tiny|demo] [--set key=value …]`
resolves a typed recipe (mawsflow.recipes) and hands it to the step's `run`. `--print-config`
shows the resolved recipe without running anything.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mawsflow.errors import ConfigError
from mawsflow.log import setup_logging
from mawsflow.recipes import PRESETS, describe, load_recipe


@dataclass(frozen=True)
class EvalOptions:
    """The options every evaluation step shares (the arguments of
    mawsflow.evaluation.eval_cli.eval_parser), as part of the step's typed config."""

    # The step output that is evaluated, and where metrics.json goes.
    model: str
    output: str
    # The evaluation's view of an image (data.transforms.parse_crop_pct).
    crop_pct: float | None
    # The evaluation's name in the report (default: the dataset folder).
    name: str | None = None
    # The report row (default: the model's lineage).
    pretraining: str | None = None
    batch_size: int = 256
    num_workers: int = 2
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EvalOptions:
        return cls(
            model=args.model,
            output=args.output,
            crop_pct=args.crop_pct,
            name=args.name,
            pretraining=args.pretraining,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            device=args.device,
        )


def recipe_parser(
    prog: str, description: str, *, recipes: Sequence[str]
) -> argparse.ArgumentParser:
    """A parser with the shared recipe options; steps add their own arguments to it."""
    parser = argparse.ArgumentParser(
        prog=f"mawsflow {prog}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            f"  mawsflow {prog} --preset tiny --print-config\n"
            f"  mawsflow {prog} --recipe {recipes[0]} --set optimizer.lr=1e-4 "
            "--set model.arch=vit_b16\n\n"
            "Any key of the resolved recipe can be set with --set; see --print-config."
        ),
    )
    parser.add_argument(
        "--recipe",
        choices=list(recipes),
        default=recipes[0],
        help=f"which of the paper's recipes to start from (default: {recipes[0]})",
    )
    parser.add_argument("--variant", help="a named column of the recipe's table, e.g. inat18")
    parser.add_argument(
        "--preset",
        choices=PRESETS,
        help="shrink sizes and lengths: tiny (tests) or demo (the local demo run)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one recipe value, e.g. --set schedule.batch_size=64 (repeatable)",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved recipe and exit"
    )
    return parser


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of every engine-driven step: how the work is spread, not what is learnt."""
    parser.add_argument(
        "--parallelism",
        choices=("auto", "ddp", "fsdp"),
        default="auto",
        help="data parallelism: DDP replicas or FSDP2 shards (auto: FSDP for 2B and 6.5B)",
    )
    parser.add_argument(
        "--micro-batch-size",
        type=int,
        default=None,
        help="per-process batch of one forward/backward; gradients accumulate to the "
        "recipe's global batch (default: no accumulation)",
    )


def run_recipe_step(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    run: Callable[[Any, argparse.Namespace], Any],
) -> int:
    """Parse, resolve the recipe, and call `run(recipe, args)`; config errors exit with 2."""
    args = parser.parse_args(argv)
    try:
        recipe = load_recipe(
            args.recipe, variant=args.variant, preset=args.preset, overrides=args.overrides
        )
    except ConfigError as exc:
        parser.error(str(exc))
    if args.print_config:
        sys.stdout.write(describe(recipe))
        return 0
    setup_logging()
    run(recipe, args)
    return 0
