"""`mawsflow demo-corpus`: the Fashion-MNIST demo corpus and its evaluation datasets.

    mawsflow demo-corpus --corpus-out URI --eval-out URI [--num-images N] …
                         [--video-out URI [--video-train N] [--video-test N]]

The corpus (Instagram-like hashtag captions on real Fashion-MNIST images) is the input of
`mawsflow build-dataset`; the evaluation datasets (train/test, ten class names) are what the
transfer and zero-shot steps read. See mawsflow.dataset.demo_corpus for what the captions hold.

With --video-out, also the video branch's data (the pipeline's --video k400/ssv2): moving
Fashion-MNIST items encoded as H.264 MP4 (mawsflow.dataset.video_demo), annotated in the
Kinetics and the SSv2 formats, and converted by the code of `mawsflow prepare-eval --layout
kinetics|ssv2` into the video datasets <video-out>/k400 (labels: the item's class, visible in
any frame) and <video-out>/ssv2 (labels: the direction of motion, which needs time). This needs
PyAV, in mawsflow's `train` extra (the finetune-video image has it; the demo-corpus image does
not).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from mawsflow.data.fashion_mnist import DEBIAN_FASHION_MNIST
from mawsflow.dataset.demo_corpus import DemoCorpusSettings, generate_demo
from mawsflow.errors import ConfigError
from mawsflow.log import setup_logging
from mawsflow.storage import StorageError

log = logging.getLogger("mawsflow.demo_corpus")
_DEFAULTS = {field.name: field.default for field in fields(DemoCorpusSettings)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mawsflow demo-corpus",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--corpus-out", required=True, help="where the corpus shards go")
    parser.add_argument("--eval-out", required=True, help="where the evaluation datasets go")
    parser.add_argument(
        "--fashion-mnist-dir",
        default=DEBIAN_FASHION_MNIST,
        help=f"directory (or URI) of the Fashion-MNIST IDX files (default {DEBIAN_FASHION_MNIST})",
    )
    for name, help_text in (
        ("num_images", "corpus posts, from Fashion-MNIST's 60K training images"),
        ("eval_train_images", "images in the evaluation train split"),
        ("eval_test_images", "images in the evaluation test split"),
        ("samples_per_shard", "samples per shard"),
        ("seed", "seed of every random choice"),
    ):
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=int,
            default=_DEFAULTS[name],
            help=f"{help_text} (default {_DEFAULTS[name]})",
        )
    for name, help_text in (
        ("repost_rate", "share of posts that re-use an earlier image"),
        ("defect_rate", "share of posts broken on purpose (truncated image, bad caption)"),
    ):
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=float,
            default=_DEFAULTS[name],
            help=f"{help_text} (default {_DEFAULTS[name]})",
        )
    video = parser.add_argument_group("video datasets (needs PyAV: mawsflow's train extra)")
    video.add_argument(
        "--video-out",
        help="also write the demo video datasets: <video-out>/k400 and <video-out>/ssv2",
    )
    video.add_argument(
        "--video-train",
        type=_positive,
        default=VIDEO_TRAIN,
        help=f"videos in each video dataset's train split (default {VIDEO_TRAIN})",
    )
    video.add_argument(
        "--video-test",
        type=_positive,
        default=VIDEO_TEST,
        help=f"videos in each video dataset's test split (default {VIDEO_TEST})",
    )
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


VIDEO_TRAIN, VIDEO_TEST = 64, 32
# 30 frames at 12 fps: 2.5 s. The converters' probe skips videos shorter than half the
# paper's clip (2 s for SSv2's 4 s clips); a video of exactly 2 s would sit on that limit.
VIDEO_FRAMES = 30


@dataclass(frozen=True)
class DemoCorpusConfig:
    corpus_out: str
    eval_out: str
    settings: DemoCorpusSettings
    # Directory (or URI) of Fashion-MNIST's IDX files.
    fashion_mnist_dir: str = DEBIAN_FASHION_MNIST
    # Where the K400- and SSv2-format video datasets go (None: none are written).
    video_out: str | None = None
    video_train: int = VIDEO_TRAIN
    video_test: int = VIDEO_TEST


def run(config: DemoCorpusConfig) -> dict[str, object]:
    """Write the corpus and the evaluation datasets, and the video datasets if asked; returns
    what was written, counted."""
    if config.video_out is not None:
        _require_pyav()  # before anything is written
    summary: dict[str, object] = dict(
        generate_demo(config.corpus_out, config.eval_out, config.settings, config.fashion_mnist_dir)
    )
    if config.video_out is not None:
        summary["video"] = write_video_datasets(config)
    return summary


def _require_pyav() -> None:
    """PyAV encodes the demo videos and probes them in the conversion. It is in the `train`
    extra only: the CPU-only demo-corpus image has no video support, and says so."""
    try:
        import av  # noqa: F401
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"--video-out needs PyAV ({exc}): install mawsflow with its `train` extra, or run "
            "demo-corpus in the finetune-video image"
        ) from None


def write_video_datasets(config: DemoCorpusConfig) -> dict[str, Any]:
    """The demo videos in both annotation formats (in a local scratch folder), converted into
    `<video_out>/k400` and `<video_out>/ssv2` as `prepare-eval --layout kinetics|ssv2` does;
    returns each conversion's per-split counts."""
    if config.video_out is None:
        raise ConfigError("write_video_datasets needs the config's video_out")
    _require_pyav()
    # Imported here: both import PyAV, which the CPU-only image lacks.
    from mawsflow import storage
    from mawsflow.dataset.video_demo import VideoDemoSpec, write_video_demo
    from mawsflow.evaluation.video_converters import prepare_video_dataset

    with tempfile.TemporaryDirectory(prefix="mawsflow-video-demo-") as scratch:
        write_video_demo(
            scratch,
            train=config.video_train,
            val=config.video_test,
            seed=config.settings.seed,
            spec=VideoDemoSpec(frames=VIDEO_FRAMES),
            fashion_mnist=config.fashion_mnist_dir,
        )
        return {
            "k400": prepare_video_dataset(
                "kinetics",
                f"{scratch}/kinetics",
                storage.join(config.video_out, "k400"),
                seed=config.settings.seed,
            ),
            "ssv2": prepare_video_dataset(
                "ssv2",
                f"{scratch}/ssv2",
                storage.join(config.video_out, "ssv2"),
                video_dir=f"{scratch}/videos",
                video_ext="mp4",
                seed=config.settings.seed,
            ),
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = DemoCorpusSettings(
            **{name: getattr(args, name) for name in _DEFAULTS}  # every field is a flag
        )
    except ValueError as exc:
        parser.error(str(exc))
    setup_logging()
    try:
        summary = run(
            DemoCorpusConfig(
                args.corpus_out,
                args.eval_out,
                settings,
                args.fashion_mnist_dir,
                args.video_out,
                args.video_train,
                args.video_test,
            )
        )
    except (OSError, ValueError, StorageError) as exc:  # ConfigError is a ValueError
        log.error("demo-corpus failed: %s", exc)
        return 1
    sys.stdout.write(json.dumps(summary, sort_keys=True) + "\n")
    return 0
