"""`mawsflow demo-corpus`: the Fashion-MNIST demo corpus and its evaluation datasets.

    mawsflow demo-corpus --corpus-out URI --eval-out URI [--num-images N] …

The corpus (Instagram-like hashtag captions on real Fashion-MNIST images) is the input of
`mawsflow build-dataset`; the evaluation datasets (train/test, ten class names) are what the
transfer and zero-shot steps read. See mawsflow.dataset.demo_corpus for what the captions hold.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields

from mawsflow.data.fashion_mnist import DEBIAN_FASHION_MNIST
from mawsflow.dataset.demo_corpus import DemoCorpusSettings, generate_demo
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
    return parser


@dataclass(frozen=True)
class DemoCorpusConfig:
    corpus_out: str
    eval_out: str
    settings: DemoCorpusSettings
    # Directory (or URI) of Fashion-MNIST's IDX files.
    fashion_mnist_dir: str = DEBIAN_FASHION_MNIST


def run(config: DemoCorpusConfig) -> dict[str, object]:
    """Write the corpus and the evaluation datasets; returns what was written, counted."""
    return generate_demo(
        config.corpus_out, config.eval_out, config.settings, config.fashion_mnist_dir
    )


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
            DemoCorpusConfig(args.corpus_out, args.eval_out, settings, args.fashion_mnist_dir)
        )
    except (OSError, ValueError, StorageError) as exc:
        log.error("demo-corpus failed: %s", exc)
        return 1
    sys.stdout.write(json.dumps(summary, sort_keys=True) + "\n")
    return 0
