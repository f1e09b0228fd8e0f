"""`mawsflow build-in21k`: ImageNet-21k as a multi-label pretraining dataset (§A).

Reads an ImageFolder of WordNet-id class folders (`<source>/n01440764/<image>`), merges
byte-identical images found in several classes into one sample carrying all their labels,
drops every image that is also in one of the `--dedup-against` evaluation datasets (by content
hash, BLAKE2b-128 of the file bytes), and writes the pretraining format the `wsp` step reads
(`--recipe wsp-in21k`): shards, `vocab.json`, `stats.json`, `manifest.json`
(docs/data-formats.md). mawsflow.dataset.in21k says what each rule is and why.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field

from mawsflow.dataset.in21k import DEFAULT_SAMPLES_PER_SHARD, In21kStats, build_in21k
from mawsflow.log import setup_logging


@dataclass(frozen=True)
class BuildIn21kConfig:
    source: str
    output: str
    # Evaluation datasets (name → prepare-eval output) whose images must not be pretrained on.
    dedup_against: dict[str, str] = field(default_factory=dict)
    samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD


def run(config: BuildIn21kConfig) -> In21kStats:
    return build_in21k(
        config.source,
        config.output,
        evaluation=config.dedup_against,
        samples_per_shard=config.samples_per_shard,
    )


def _named_dataset(value: str) -> tuple[str, str]:
    name, sep, uri = value.partition("=")
    if not sep:
        # No name given: the dataset's last path component names it in the statistics.
        name, uri = value.rstrip("/").rsplit("/", 1)[-1], value
    if not name or not uri:
        raise argparse.ArgumentTypeError(f"{value!r}: expected [NAME=]URI")
    return name, uri


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mawsflow build-in21k",
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "example:\n"
            "  mawsflow build-in21k --source /data/imagenet21k --output s3://data/in21k \\\n"
            "      --dedup-against in1k=s3://eval/in1k --dedup-against inat18=s3://eval/inat18\n"
            "  mawsflow wsp --recipe wsp-in21k --set data.train=s3://data/in21k "
            "--set output=s3://runs/wsp-in21k"
        ),
    )
    parser.add_argument(
        "--source", required=True, help="ImageFolder of <wnid>/<image> (local or s3://)"
    )
    parser.add_argument("--output", required=True, help="pretraining dataset URI to write")
    parser.add_argument(
        "--dedup-against",
        action="append",
        default=[],
        type=_named_dataset,
        metavar="[NAME=]URI",
        help="an evaluation dataset (prepare-eval output) whose images, in any split, are "
        "dropped from the pretraining set and counted under NAME (repeatable)",
    )
    parser.add_argument(
        "--samples-per-shard",
        type=int,
        default=DEFAULT_SAMPLES_PER_SHARD,
        help=f"samples in every shard but the last (default {DEFAULT_SAMPLES_PER_SHARD})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    names = [name for name, _ in args.dedup_against]
    if len(set(names)) != len(names):
        parser.error(f"--dedup-against: each evaluation dataset needs its own name, got {names}")
    setup_logging()
    run(
        BuildIn21kConfig(
            source=args.source,
            output=args.output,
            dedup_against=dict(args.dedup_against),
            samples_per_shard=args.samples_per_shard,
        )
    )
    return 0
