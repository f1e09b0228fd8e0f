"""`mawsflow build-dataset`: image+caption shards → multi-label WordNet-synset dataset.

Each phase is its own subcommand, so a pipeline can run the map phases as parallel tasks over
shard groups (`--shards i/N`, 0-based) and the reduce phases once:

    mawsflow build-dataset count    --input URI --out URI --shards i/N     (N tasks)
    mawsflow build-dataset vocab    --out URI --groups N                   (one task)
    mawsflow build-dataset write    --input URI --out URI --shards i/N     (N tasks)
    mawsflow build-dataset finalize --out URI --groups N                   (one task)
    mawsflow build-dataset all      --input URI --out URI --groups N --workers W

`all` runs every phase here, each map phase over W worker processes. Outputs follow
docs/data-formats.md ("Pretraining dataset"); `metrics.json` beside `stats.json` holds the
statistics as flat numbers for KFP Metrics.

Any phase can be run again after a failure (the object store went away, a pod was lost): it
writes the same bytes. A build into a prefix that holds an earlier one replaces it; from the
vocab phase on the prefix reads as incomplete, and finalize leaves only the new dataset
(no `_work/`, no shards of the earlier build).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from mawsflow.dataset.build import DEFAULT_SAMPLES_PER_SHARD, BuildSettings, build_dataset
from mawsflow.dataset.captions import DEFAULT_MAX_CAPTION_BYTES
from mawsflow.dataset.count_phase import run_count
from mawsflow.dataset.finalize_phase import run_finalize
from mawsflow.dataset.layout import ShardGroup
from mawsflow.dataset.resample import DEFAULT_POWER, PAPER_RATIO, ResampleSettings
from mawsflow.dataset.safe_tar import DEFAULT_MAX_MEMBER_BYTES
from mawsflow.dataset.sample_tags import ReadLimits
from mawsflow.dataset.vocab import DEFAULT_MIN_COUNT, PAPER_VOCABULARY_SIZE, VocabSettings
from mawsflow.dataset.vocab_phase import run_vocab
from mawsflow.dataset.wordnet_corpus import WordNetUnavailableError
from mawsflow.dataset.write_phase import run_write
from mawsflow.log import setup_logging
from mawsflow.storage import StorageError

log = logging.getLogger("mawsflow.build_dataset")


def _group(text: str) -> ShardGroup:
    try:
        return ShardGroup.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_input_output(parser: argparse.ArgumentParser, *, with_input: bool = True) -> None:
    if with_input:
        parser.add_argument(
            "--input",
            required=True,
            help="prefix holding the raw *.tar shards (s3:// or local), or a corpus snapshot "
            "(a scheduled run's corpus.snapshot.json: exactly the shards it lists)",
        )
    parser.add_argument("--out", required=True, help="output directory of the dataset")


def _add_read_limits(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-caption-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_CAPTION_BYTES,
        help=f"drop captions longer than this (default {DEFAULT_MAX_CAPTION_BYTES})",
    )
    parser.add_argument(
        "--max-member-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_MEMBER_BYTES,
        help=f"skip tar members larger than this unread (default {DEFAULT_MAX_MEMBER_BYTES})",
    )


def _add_plan_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--min-count",
        type=_positive_int,
        default=DEFAULT_MIN_COUNT,
        help=f"a synset needs this many unique images to be a class (default {DEFAULT_MIN_COUNT})",
    )
    parser.add_argument(
        "--max-classes",
        type=int,
        default=PAPER_VOCABULARY_SIZE,
        help="keep at most this many classes, the most frequent; 0 = no cap "
        f"(default {PAPER_VOCABULARY_SIZE}, the paper's ~28K)",
    )
    parser.add_argument(
        "--resample-ratio",
        type=float,
        default=PAPER_RATIO,
        help="samples written per unique image, by repeating rare-label images; 1 = off "
        "(default 5/3: IG-3B's 3B images → 5B samples)",
    )
    parser.add_argument(
        "--resample-power",
        type=float,
        default=DEFAULT_POWER,
        help=f"flattening power p of the repeat factor (t/count)^p (default {DEFAULT_POWER})",
    )
    parser.add_argument("--seed", type=int, default=0, help="resampling seed (default 0)")
    parser.add_argument(
        "--samples-per-shard",
        type=_positive_int,
        default=DEFAULT_SAMPLES_PER_SHARD,
        help=f"samples in every output shard but the last (default {DEFAULT_SAMPLES_PER_SHARD})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mawsflow build-dataset",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    phases = parser.add_subparsers(dest="phase", required=True, metavar="<phase>")

    count = phases.add_parser("count", help="phase 1: record the usable images of one group")
    _add_input_output(count)
    count.add_argument("--shards", type=_group, required=True, help="group INDEX/COUNT, 0-based")
    _add_read_limits(count)

    vocab = phases.add_parser("vocab", help="phase 2: deduplicate, build vocabulary and plan")
    _add_input_output(vocab, with_input=False)
    vocab.add_argument("--groups", type=_positive_int, required=True, help="number of groups")
    _add_plan_options(vocab)

    write = phases.add_parser("write", help="phase 3: label, resample, write one group")
    _add_input_output(write)
    write.add_argument("--shards", type=_group, required=True, help="group INDEX/COUNT, 0-based")

    finalize = phases.add_parser("finalize", help="pack tails, write stats and manifest")
    _add_input_output(finalize, with_input=False)
    finalize.add_argument("--groups", type=_positive_int, required=True, help="number of groups")

    everything = phases.add_parser("all", help="every phase here, over worker processes")
    _add_input_output(everything)
    everything.add_argument(
        "--groups", type=_positive_int, help="shard groups (default: --workers)"
    )
    everything.add_argument(
        "--workers",
        type=_positive_int,
        default=os.cpu_count() or 1,
        help="worker processes for the map phases (default: CPU count)",
    )
    _add_read_limits(everything)
    _add_plan_options(everything)
    return parser


def _read_limits(args: argparse.Namespace) -> ReadLimits:
    return ReadLimits(args.max_caption_bytes, args.max_member_bytes)


def _vocab_settings(args: argparse.Namespace) -> VocabSettings:
    return VocabSettings(args.min_count, args.max_classes or None)


def _resample_settings(args: argparse.Namespace) -> ResampleSettings:
    return ResampleSettings(args.resample_ratio, args.resample_power, args.seed)


@dataclass(frozen=True)
class CountPhase:
    input: str
    out: str
    group: ShardGroup
    limits: ReadLimits


@dataclass(frozen=True)
class VocabPhase:
    out: str
    groups: int
    vocab: VocabSettings
    resample: ResampleSettings
    samples_per_shard: int


@dataclass(frozen=True)
class WritePhase:
    input: str
    out: str
    group: ShardGroup


@dataclass(frozen=True)
class FinalizePhase:
    out: str
    groups: int


@dataclass(frozen=True)
class AllPhases:
    input: str
    out: str
    groups: int
    workers: int
    settings: BuildSettings


Phase = CountPhase | VocabPhase | WritePhase | FinalizePhase | AllPhases


def phase_from_args(args: argparse.Namespace) -> Phase:
    if args.phase == "count":
        return CountPhase(args.input, args.out, args.shards, _read_limits(args))
    if args.phase == "vocab":
        return VocabPhase(
            args.out,
            args.groups,
            _vocab_settings(args),
            _resample_settings(args),
            args.samples_per_shard,
        )
    if args.phase == "write":
        return WritePhase(args.input, args.out, args.shards)
    if args.phase == "finalize":
        return FinalizePhase(args.out, args.groups)
    settings = BuildSettings(
        _read_limits(args),
        _vocab_settings(args),
        _resample_settings(args),
        args.samples_per_shard,
    )
    return AllPhases(args.input, args.out, args.groups or args.workers, args.workers, settings)


def run(config: Phase) -> dict[str, object]:
    """Run one phase (or all of them); returns its summary, which main prints as JSON."""
    if isinstance(config, CountPhase):
        summary = run_count(config.input, config.out, config.group, config.limits)
        return {key: summary[key] for key in ("samples_read", "records", "problems")}
    if isinstance(config, VocabPhase):
        plan = run_vocab(
            config.out, config.groups, config.vocab, config.resample, config.samples_per_shard
        )
        return {"classes": plan["vocabulary"]["classes"], "shards": plan["full_shards"]}
    if isinstance(config, WritePhase):
        return run_write(config.input, config.out, config.group)
    if isinstance(config, FinalizePhase):
        stats = run_finalize(config.out, config.groups)
    else:
        stats = build_dataset(
            config.input,
            config.out,
            groups=config.groups,
            workers=config.workers,
            settings=config.settings,
        )
    return {"samples": stats["samples"], "classes": stats["vocabulary"]["classes"]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging()
    try:
        result = run(phase_from_args(args))
    except (ValueError, RuntimeError, StorageError, WordNetUnavailableError) as exc:
        log.error("build-dataset %s failed: %s", args.phase, exc)
        return 1
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    return 0
