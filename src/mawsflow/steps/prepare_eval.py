"""`mawsflow prepare-eval`: convert a dataset in a common layout into evaluation shards.

Image layouts: `imagefolder` (`<split>/<class>/<image>` or `<class>/<image>`), `food101`
(Food-101's `meta/` and `images/`), `fashion-mnist` (the IDX files) and `inat18` (iNaturalist
2018's `train2018.json` / `val2018.json` and the images they name); missing or unreadable images
are skipped and counted. The output follows
docs/data-formats.md: `classes.json`, one folder of shards + manifest per split, and optionally
`class_map.json` (label-subset test sets such as ObjectNet) and ReaL-style multi-labels.

Video layouts (the video finetuning's K400 and SSv2, docs/data-formats.md "Video"): `kinetics`
(`train.csv`, `val.csv`, `test.csv` of `path,label`) and `ssv2` (`labels.json`, `train.json`,
`validation.json`, videos `<video-dir>/<id>.<ext>`), converted by
`mawsflow.evaluation.video_converters` into video shards, the encoded bytes unchanged. Every video
is probed with PyAV first: missing, corrupt, empty and too-short ones (shorter than half the
paper's clip unless --min-seconds says otherwise) are skipped, counted per split and reason in
the log and in `<output>/conversion.json`.

Detection layouts (ViTDet's LVIS and COCO, docs/data-formats.md "Detection"): `coco`
(`annotations/instances_{train,val}*.json` and the images they name) and `lvis`
(`lvis_v1_{train,val}.json`, images by their `coco_url`), converted by
`mawsflow.evaluation.detection_converters` into detection shards with `train/` and `val/`
splits, the val split's annotation JSON kept for the evaluator. Missing and undecodable images are
skipped and counted in `<output>/conversion.json`; a malformed JSON entry stops the conversion
with an error naming it.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mawsflow import storage
from mawsflow.data.eval_shards import (
    DEFAULT_SAMPLES_PER_SHARD,
    SPLITS,
    parse_label_subset,
    write_label_subset,
)
from mawsflow.data.video_shards import DEFAULT_VIDEOS_PER_SHARD, VIDEO_EXTENSIONS
from mawsflow.errors import ConfigError
from mawsflow.evaluation import converters, detection_converters, video_converters
from mawsflow.log import setup_logging

log = logging.getLogger(__name__)

Layout = Literal[
    "imagefolder", "food101", "fashion-mnist", "inat18", "kinetics", "ssv2", "coco", "lvis"
]
VIDEO_LAYOUTS: tuple[str, ...] = ("kinetics", "ssv2")
DETECTION_LAYOUTS: tuple[str, ...] = detection_converters.DETECTION_LAYOUTS
LAYOUTS: tuple[str, ...] = (
    "imagefolder",
    "food101",
    "fashion-mnist",
    "inat18",
    *VIDEO_LAYOUTS,
    *DETECTION_LAYOUTS,
)


@dataclass
class PrepareEvalConfig:
    layout: Layout
    source: str
    output: str
    split: str | None = None  # imagefolder without split folders: the split it becomes
    samples_per_shard: int | None = None  # default: DEFAULT_(SAMPLES|VIDEOS)_PER_SHARD
    limit: int | None = None  # keep this many samples per split (after the seeded shuffle)
    seed: int = 0
    class_map: str | None = None  # class_map.json to validate and copy into the dataset
    real_labels: str | None = None  # ReaL-style labels (real.json) for one split
    real_split: str = "val"
    # Video layouts only.
    video_dir: str | None = None  # ssv2: the folder of <id>.<ext> (default <source>/videos)
    video_ext: str = "webm"  # ssv2: the videos' container (the release's is WebM)
    class_names: str | None = None  # kinetics with label indices: a file of names, one a line
    probe: bool = True  # probe every video with PyAV; skip and count the unusable ones
    min_seconds: float | None = None  # shortest video kept; None: half the paper's clip
    # Detection layouts only: the dataset's name (default: LVIS or COCO).
    name: str | None = None


def run(config: PrepareEvalConfig) -> dict[str, int]:
    """Convert the source; returns the number of samples written per split."""
    if config.layout in VIDEO_LAYOUTS:
        return {split: c["written"] for split, c in run_video(config).items()}
    if config.layout in DETECTION_LAYOUTS:
        _refuse_image_options(config)
        counts = detection_converters.prepare_detection_dataset(
            config.layout,
            config.source,
            config.output,
            samples_per_shard=config.samples_per_shard,
            name=config.name,
        )
        return {split: c["written"] for split, c in counts.items()}
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
        samples_per_shard=config.samples_per_shard or DEFAULT_SAMPLES_PER_SHARD,
        seed=config.seed,
        limit=config.limit,
    )
    if subset is not None:
        write_label_subset(config.output, subset)
    log.info("wrote %s to %s (%d classes)", counts, config.output, len(classes))
    return counts


def _refuse_image_options(config: PrepareEvalConfig) -> None:
    given = {
        "--split": config.split,
        "--class-map": config.class_map,
        "--real-labels": config.real_labels,
    }
    wrong = [name for name, value in given.items() if value]
    if wrong:
        raise ConfigError(f"{', '.join(wrong)}: image layouts only, not --layout {config.layout}")


def run_video(config: PrepareEvalConfig) -> dict[str, dict[str, Any]]:
    """Convert a `kinetics` or `ssv2` source into video shards; returns, per split, the videos
    written, missing and skipped by reason (also logged and written to conversion.json)."""
    _refuse_image_options(config)
    return video_converters.prepare_video_dataset(
        config.layout,
        config.source,
        config.output,
        video_dir=config.video_dir,
        video_ext=config.video_ext,
        class_names=config.class_names,
        probe=config.probe,
        min_seconds=config.min_seconds,
        samples_per_shard=config.samples_per_shard or DEFAULT_VIDEOS_PER_SHARD,
        seed=config.seed,
        limit=config.limit,
    )


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
            "--output s3://eval/in1k --real-labels real.json --real-split val\n"
            "  mawsflow prepare-eval --layout kinetics --source /data/k400/annotations "
            "--output s3://eval/k400\n"
            "  mawsflow prepare-eval --layout ssv2 --source /data/ssv2/labels "
            "--video-dir /data/ssv2/20bn-something-something-v2 --output s3://eval/ssv2\n"
            "  mawsflow prepare-eval --layout coco --source /data/coco --output s3://eval/coco\n"
            "  mawsflow prepare-eval --layout lvis --source /data/lvis --output s3://eval/lvis\n"
            "\n"
            "Video layouts probe each video with PyAV (mawsflow's train extra: the finetune-video\n"
            "image has it, the CPU-only prepare-eval image does not; there pass --no-probe)."
        ),
    )
    parser.add_argument("--layout", required=True, choices=LAYOUTS)
    parser.add_argument("--source", required=True, help="local folder or s3:// prefix")
    parser.add_argument("--output", required=True, help="evaluation dataset URI to write")
    parser.add_argument(
        "--split", choices=SPLITS, help="imagefolder without split folders: name of its split"
    )
    parser.add_argument(
        "--samples-per-shard",
        type=int,
        help=f"samples per shard (default: {DEFAULT_SAMPLES_PER_SHARD} images, "
        f"{DEFAULT_VIDEOS_PER_SHARD} videos)",
    )
    parser.add_argument("--limit", type=int, help="samples per split to keep (a seeded subset)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample order")
    parser.add_argument("--class-map", help="class_map.json for a label-subset test set")
    parser.add_argument("--real-labels", help="ReaL-style labels: a JSON list of label lists")
    parser.add_argument("--real-split", default="val", choices=SPLITS)
    detection = parser.add_argument_group("detection layouts (coco, lvis)")
    detection.add_argument(
        "--name", help="the dataset's name, e.g. for the report (default: COCO or LVIS)"
    )
    video = parser.add_argument_group("video layouts (kinetics, ssv2)")
    video.add_argument(
        "--video-dir", help="ssv2: the folder of <id>.<ext> videos (default: <source>/videos)"
    )
    video.add_argument(
        "--video-ext",
        default="webm",
        choices=VIDEO_EXTENSIONS,
        help="ssv2: the videos' container (default: webm, as released)",
    )
    video.add_argument(
        "--class-names",
        help="kinetics with integer labels: a text file of class names, one a line, in order",
    )
    video.add_argument(
        "--min-seconds",
        type=float,
        help="skip videos shorter than this (default: half the paper's clip, the loaders' "
        "limit: 1.35 s for kinetics, 2 s for ssv2)",
    )
    video.add_argument(
        "--no-probe",
        dest="probe",
        action="store_false",
        help="copy the videos unchecked (no PyAV needed); the loaders count broken ones",
    )
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
            video_dir=args.video_dir,
            video_ext=args.video_ext,
            class_names=args.class_names,
            probe=args.probe,
            min_seconds=args.min_seconds,
            name=args.name,
        )
    )
    return 0
