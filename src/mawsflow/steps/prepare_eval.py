"""`mawsflow prepare-eval`: convert a dataset in a common layout into evaluation shards.

Layouts: `imagefolder` (`<split>/<class>/<image>` or `<class>/<image>`), `food101` (Food-101's
`meta/` and `images/`), `fashion-mnist` (the IDX files) and `inat18` (iNaturalist 2018's
`train2018.json` / `val2018.json` and the images they name; missing or unreadable images are
skipped and counted). The output follows
docs/data-formats.md: `classes.json`, one folder of shards + manifest per split, and optionally
`class_map.json` (label-subset test sets such as ObjectNet) and ReaL-style multi-labels.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mawsflow import storage
from mawsflow.data.eval_shards import (
    DEFAULT_SAMPLES_PER_SHARD,
    SPLITS,
    parse_label_subset,
    write_label_subset,
)
from mawsflow.evaluation import converters
from mawsflow.log import setup_logging

log = logging.getLogger(__name__)

Layout = Literal["imagefolder", "food101", "fashion-mnist", "inat18"]
LAYOUTS: tuple[str, ...] = ("imagefolder", "food101", "fashion-mnist", "inat18")


@dataclass
class PrepareEvalConfig:
    layout: Layout
    source: str
    output: str
    split: str | None = None  # imagefolder without split folders: the split it becomes
    samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD
    limit: int | None = None  # keep this many samples per split (after the seeded shuffle)
    seed: int = 0
    class_map: str | None = None  # class_map.json to validate and copy into the dataset
    real_labels: str | None = None  # ReaL-style labels (real.json) for one split
    real_split: str = "val"


def run(config: PrepareEvalConfig) -> dict[str, int]:
    """Convert the source; returns the number of samples written per split."""
    if config.layout == "imagefolder":
        classes, splits = converters.imagefolder_samples(config.source, split=config.split)
    elif config.layout == "food101":
        classes, splits = converters.food101_samples(config.source)
    elif config.layout == "fashion-mnist":
        classes, splits = converters.fashion_mnist_samples(config.source)
    elif config.layout == "inat18":
        classes, splits = converters.inat18_samples(config.source)
    else:
        raise ValueError(f"unknown layout {config.layout!r}; choose one of {LAYOUTS}")
    if config.real_labels:
        if config.real_split not in splits:
            raise ValueError(
                f"--real-split {config.real_split!r}: the source has splits {sorted(splits)}"
            )
        real = storage.read_json(config.real_labels)
        if not isinstance(real, list):
            raise ValueError(f"{config.real_labels}: expected a JSON list of label lists")
        splits[config.real_split] = converters.attach_real_labels(splits[config.real_split], real)
    subset = (
        parse_label_subset(storage.read_json(config.class_map), source=config.class_map)
        if config.class_map
        else None
    )
    if subset is not None and subset.num_test_classes != len(classes):
        raise ValueError(
            f"{config.class_map}: maps {subset.num_test_classes} test labels but the source "
            f"has {len(classes)} classes"
        )
    counts = converters.write_splits(
        config.output,
        classes,
        splits,
        samples_per_shard=config.samples_per_shard,
        seed=config.seed,
        limit=config.limit,
    )
    if subset is not None:
        write_label_subset(config.output, subset)
    log.info("wrote %s to %s (%d classes)", counts, config.output, len(classes))
    return counts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mawsflow prepare-eval",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  mawsflow prepare-eval --layout fashion-mnist "
            "--source /usr/share/datasets/fashion-mnist --output s3://eval/fashion-mnist\n"
            "  mawsflow prepare-eval --layout food101 --source /data/food-101 "
            "--output s3://eval/food101\n"
            "  mawsflow prepare-eval --layout inat18 --source /data/inat2018 "
            "--output s3://eval/inat18\n"
            "  mawsflow prepare-eval --layout imagefolder --source /data/imagenet "
            "--output s3://eval/in1k --real-labels real.json --real-split val"
        ),
    )
    parser.add_argument("--layout", required=True, choices=LAYOUTS)
    parser.add_argument("--source", required=True, help="local folder or s3:// prefix")
    parser.add_argument("--output", required=True, help="evaluation dataset URI to write")
    parser.add_argument(
        "--split", choices=SPLITS, help="imagefolder without split folders: name of its split"
    )
    parser.add_argument("--samples-per-shard", type=int, default=DEFAULT_SAMPLES_PER_SHARD)
    parser.add_argument("--limit", type=int, help="samples per split to keep (a seeded subset)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample order")
    parser.add_argument("--class-map", help="class_map.json for a label-subset test set")
    parser.add_argument("--real-labels", help="ReaL-style labels: a JSON list of label lists")
    parser.add_argument("--real-split", default="val", choices=SPLITS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    run(
        PrepareEvalConfig(
            layout=args.layout,
            source=args.source,
            output=args.output,
            split=args.split,
            samples_per_shard=args.samples_per_shard,
            limit=args.limit,
            seed=args.seed,
            class_map=args.class_map,
            real_labels=args.real_labels,
            real_split=args.real_split,
        )
    )
    return 0
