"""`mawsflow random-init`: the control model — the trunk with a random initialisation and no
pretraining.

The report's control row puts this trunk through the same transfer evaluations as the
pretrained ones (finetuning, linear probe, low-shot, LiT and zero-shot), in the same run, so the
table shows what pretraining adds. The trunk is the one WSP from scratch starts from: the WSP
recipe's architecture and resolution (after the preset and `--arch`), built by the same
`create_trunk` with the same (timm) initialisation, seeded. Its model card names the step
`random-init`, which the report reads as the row "Control (no pretraining)".
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mawsflow.log import setup_logging
from mawsflow.models.artifacts import write_model
from mawsflow.models.vit import create_trunk, parameter_count
from mawsflow.recipes import load_recipe

log = logging.getLogger(__name__)

STEP = "random-init"


@dataclass(frozen=True)
class RandomInitConfig:
    output: str
    preset: str | None = None
    arch: str | None = None  # default: the WSP recipe's
    seed: int = 0


def run(config: RandomInitConfig) -> dict[str, object]:
    """Write the seeded, untrained trunk to `config.output`; returns its model card."""
    overrides = [f"model.arch={config.arch}"] if config.arch else []
    recipe = load_recipe("wsp", preset=config.preset, overrides=overrides)
    arch, img_size = recipe.model.arch, recipe.model.img_size
    torch.manual_seed(config.seed)
    trunk = create_trunk(arch, img_size=img_size)
    card = {
        "step": STEP,
        "arch": arch,
        "img_size": img_size,
        "seed": config.seed,
        "recipe": {"model": {"arch": arch, "img_size": img_size}, "source": recipe.source},
    }
    write_model(
        config.output,
        trunk.state_dict(),
        card,
        {"parameters": parameter_count(arch, img_size=img_size), "samples_seen": 0},
    )
    log.info("control model written", extra={"output": config.output, "arch": arch})
    return card


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"mawsflow {STEP}",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "example:\n"
            "  mawsflow random-init --preset demo --output s3://runs/r1/control\n"
            "then use the output wherever a pretrained trunk goes (finetune, linear-probe, "
            "lowshot, lit)."
        ),
    )
    parser.add_argument("--output", required=True, help="model URI to write (local or s3://)")
    parser.add_argument(
        "--preset", choices=("tiny", "demo"), help="the preset of the WSP recipe it stands in for"
    )
    parser.add_argument("--arch", help="architecture (default: the WSP recipe's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    run(RandomInitConfig(args.output, preset=args.preset, arch=args.arch, seed=args.seed))
    return 0
