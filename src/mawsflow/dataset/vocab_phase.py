"""Phase 2 of the build (reduce): merge every group's records into the vocabulary and the plan.

One streaming merge over all groups' sorted records does the global deduplication: records of
the same image (same content hash) arrive together, and the one at the earliest position
(input shard ordinal, then sample ordinal) is kept, whichever group it is in; the others are
written to their group's duplicates file. Synsets are counted over the kept images, so a
synset's count is its number of unique images; the vocabulary follows (vocab.py).
Deduplication comes first, so when the earliest copy of an image carries only synsets that
miss the vocabulary cut, the image is gone even if a later copy (another caption) carries a kept
synset: counted once as no_label_in_vocabulary and once as duplicate_image.

Two more passes over the kept images (a local temporary file, not memory) give the resampling
threshold that meets the target ratio (resample.py) and then, image by image, the exact number
of samples every group will write. With those, every group's output shards get their global
numbers before any is written: group g writes shards `first_shard … first_shard+full_shards-1`
and puts its remaining `tail_samples` (< samples_per_shard) in a tail file, which the finalize
step packs into the last shards. So shard names are stable and disjoint across workers, and
every shard but the last holds exactly `samples_per_shard` samples.

Memory: the synset counts (bounded by WordNet's 82K noun synsets), one read buffer per group
for the merge, a bounded spool buffer for duplicates, and a few numbers per group.
"""

from __future__ import annotations

import bisect
import logging
import struct
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nltk.corpus.reader.wordnet import WordNetCorpusReader

from mawsflow import storage
from mawsflow.dataset.build_state import build_id, withdraw, withdraw_write_reports
from mawsflow.dataset.image_records import ImageRecord, merge_sorted, read_records
from mawsflow.dataset.layout import BuildLayout, ShardGroup
from mawsflow.dataset.resample import (
    ResampleSettings,
    expected_ratio,
    repeat_count,
    solve_threshold,
)
from mawsflow.dataset.vocab import VocabEntry, VocabSettings, build_vocabulary, write_vocabulary
from mawsflow.dataset.wordnet_corpus import load_wordnet

log = logging.getLogger(__name__)

PLAN_FORMAT = "mawsflow.build-plan/2"
POSITION = struct.Struct(">II")


def read_count_summaries(layout: BuildLayout, group_count: int) -> list[dict[str, Any]]:
    """Every group's count summary; an error names the groups that have not finished, or
    what differs between groups that counted different inputs or with different limits."""
    groups = ShardGroup(0, group_count).all_groups()
    missing = [group.name for group in groups if not storage.exists(layout.count_summary(group))]
    if missing:
        raise RuntimeError(
            f"{layout.out}: the count phase has not finished for {len(missing)} of "
            f"{group_count} groups ({', '.join(missing[:5])}{'…' if len(missing) > 5 else ''}); "
            "a finished build removes its intermediate files, so a new one counts again"
        )
    summaries = [storage.read_json(layout.count_summary(group)) for group in groups]
    first = summaries[0]
    for group, summary in zip(groups, summaries, strict=True):
        for field in ("input", "limits"):
            if summary[field] != first[field]:
                raise RuntimeError(
                    f"{layout.count_summary(group)}: counted with {field} {summary[field]}, "
                    f"but {groups[0].name} with {first[field]}; rerun the count phase"
                )
    return summaries


class _DuplicateSpool:
    """Duplicate positions per group, spooled to local files with one bounded buffer (a file
    handle per group would run out of descriptors with thousands of groups)."""

    _FLUSH_BYTES = 64 * 1024 * 1024

    def __init__(self, scratch: Path, group_count: int) -> None:
        self._paths = [scratch / f"duplicates-{index:05d}.bin" for index in range(group_count)]
        self._buffers: dict[int, bytearray] = {}
        self._buffered = 0

    def add(self, group_index: int, shard: int, sample: int) -> None:
        self._buffers.setdefault(group_index, bytearray()).extend(POSITION.pack(shard, sample))
        self._buffered += POSITION.size
        if self._buffered >= self._FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        for group_index, buffer in self._buffers.items():
            with self._paths[group_index].open("ab") as file:
                file.write(buffer)
        self._buffers.clear()
        self._buffered = 0

    def publish(self, uris: list[str]) -> None:
        """Upload every group's file (empty ones too: the write phase expects one)."""
        self._flush()
        for path, uri in zip(self._paths, uris, strict=True):
            path.touch()
            storage.upload_file(str(path), uri)


def _group_of_shard(starts: list[int], shard: int) -> int:
    return bisect.bisect_right(starts, shard) - 1


def _read_local_records(path: Path) -> Iterator[ImageRecord]:
    with path.open("rb") as stream:
        yield from read_records(stream, str(path))


def run_vocab(
    out_uri: str,
    group_count: int,
    vocab_settings: VocabSettings,
    resample_settings: ResampleSettings,
    samples_per_shard: int,
    wordnet: WordNetCorpusReader | None = None,
) -> dict[str, Any]:
    """Build vocab.json, the plan and the duplicates files; returns the plan."""
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be at least 1, got {samples_per_shard}")
    layout = BuildLayout(out_uri)
    summaries = read_count_summaries(layout, group_count)
    # vocab.json, the duplicates and the plan are about to change, so the published dataset
    # and every group's write report stop being current (build_state.py).
    withdraw(layout.manifest, layout.plan)
    withdraw_write_reports(layout)
    groups = ShardGroup(0, group_count).all_groups()
    num_shards = summaries[0]["input"]["num_shards"]
    starts = [group.shard_range(num_shards).start for group in groups]

    with tempfile.TemporaryDirectory(prefix="mawsflow-vocab-") as scratch:
        kept_path = Path(scratch) / "kept.records"
        duplicates = [0] * group_count
        synset_counts: Counter[int] = Counter()
        with ExitStack() as stack:
            streams = [
                read_records(stack.enter_context(storage.open_read(uri)), uri)
                for uri in (layout.records_by_hash(group) for group in groups)
            ]
            spool = _DuplicateSpool(Path(scratch), group_count)
            kept_file = stack.enter_context(kept_path.open("wb"))
            previous_hash = b""
            for _, record in merge_sorted(streams):
                if record.content_hash == previous_hash:
                    group_index = _group_of_shard(starts, record.shard)
                    spool.add(group_index, record.shard, record.sample)
                    duplicates[group_index] += 1
                    continue
                previous_hash = record.content_hash
                synset_counts.update(record.synsets)
                kept_file.write(record.encode())
        spool.publish([layout.duplicates(group) for group in groups])

        vocabulary = build_vocabulary(synset_counts, wordnet or load_wordnet(), vocab_settings)
        if not vocabulary:
            raise RuntimeError(
                f"no synset reaches the vocabulary's min_count={vocab_settings.min_count} "
                f"(the most frequent has {max(synset_counts.values(), default=0)} images); "
                "lower --min-count or give the build more data"
            )
        by_offset = {entry.offset: entry for entry in vocabulary}

        # Pass 2: how many images have each rarest-label count, to solve the threshold.
        images_by_rarest: Counter[int] = Counter()
        for record in _read_local_records(kept_path):
            counts = [by_offset[o].count for o in record.synsets if o in by_offset]
            if counts:
                images_by_rarest[min(counts)] += 1
        threshold = solve_threshold(
            images_by_rarest, resample_settings.target_ratio, resample_settings.power
        )

        # Pass 3: every image's repeat count, summed per group and per class.
        kept = [0] * group_count
        samples = [0] * group_count
        unlabelled = [0] * group_count
        class_samples = [0] * len(vocabulary)
        for record in _read_local_records(kept_path):
            group_index = _group_of_shard(starts, record.shard)
            labels = [by_offset[o] for o in record.synsets if o in by_offset]
            if not labels:
                unlabelled[group_index] += 1
                continue
            repeats = repeat_count(
                record.content_hash,
                min(entry.count for entry in labels),
                threshold,
                resample_settings.power,
                resample_settings.seed,
            )
            kept[group_index] += 1
            samples[group_index] += repeats
            for entry in labels:
                class_samples[entry.index] += repeats

    write_vocabulary(layout.vocab, vocabulary)
    plan = _plan(
        summaries[0],
        group_count,
        samples_per_shard,
        vocab_settings,
        resample_settings,
        threshold,
        expected_ratio(images_by_rarest, threshold, resample_settings.power),
        kept,
        samples,
        duplicates,
        unlabelled,
        vocabulary,
        class_samples,
        len(synset_counts),
    )
    plan["build"] = build_id(plan)
    storage.write_json(layout.plan, plan)
    log.info(
        "build %s: vocabulary of %d classes; %d unique images → %d samples (threshold %.1f)",
        plan["build"],
        len(vocabulary),
        sum(kept),
        sum(samples),
        threshold,
    )
    return plan


def _plan(
    count_summary: dict[str, Any],
    group_count: int,
    samples_per_shard: int,
    vocab_settings: VocabSettings,
    resample_settings: ResampleSettings,
    threshold: float,
    expected: float,
    kept: list[int],
    samples: list[int],
    duplicates: list[int],
    unlabelled: list[int],
    vocabulary: list[VocabEntry],
    class_samples: list[int],
    synsets_seen: int,
) -> dict[str, Any]:
    group_plans = []
    next_shard = 0
    for index in range(group_count):
        full_shards, tail = divmod(samples[index], samples_per_shard)
        group_plans.append(
            {
                "index": index,
                "kept": kept[index],
                "samples": samples[index],
                "duplicates": duplicates[index],
                "unlabelled": unlabelled[index],
                "first_shard": next_shard,
                "full_shards": full_shards,
                "tail_samples": tail,
            }
        )
        next_shard += full_shards
    class_images = [entry.count for entry in vocabulary]
    return {
        "format": PLAN_FORMAT,
        "groups": group_count,
        "input": count_summary["input"],
        "limits": count_summary["limits"],
        "samples_per_shard": samples_per_shard,
        "vocabulary": {
            **asdict(vocab_settings),
            "classes": len(vocabulary),
            "synsets_seen": synsets_seen,
            "class_images": class_images,
        },
        "resampling": {
            **asdict(resample_settings),
            "threshold": threshold,
            "expected_ratio": expected,
            "class_samples": class_samples,
        },
        "full_shards": next_shard,
        "group_plans": group_plans,
    }
