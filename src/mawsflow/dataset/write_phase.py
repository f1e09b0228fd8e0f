"""Phase 3 of the build (map): label, filter, resample and write one group's output shards.

The group's input shards are walked beside the count phase's records in input order: a sample
with no record was dropped by the count phase, a record on the vocabulary phase's duplicate
list is skipped, and every other record already holds the image's content hash and synsets. So
nothing is decoded, hashed or mapped again and no WordNet is loaded: the phase costs the tar
reading and writing plus sanitising the caption. Every kept image is written as

    <hash>.<jpg|png|webp>   the input image bytes, unchanged
    <hash>.labels.json      its vocabulary indices, sorted
    <hash>.txt              its sanitised caption (LiT)

keyed by its content hash (unique after deduplication), then `r - 1` more times as
`<hash>-1`, `<hash>-2`, … (resample.py). Copies are not written next to the original: the
group writes every kept image once, then all second copies, then all third copies, so repeats
of one image sit a whole pass apart and never crowd a shuffle buffer. Copies wait in local
temporary files, not in memory.

The group's shard numbers come from the plan; its last partial shard's worth goes to a tail
file for the finalize step. Shards are written atomically with pinned tar headers, so a rerun
or a retried worker rewrites the same names with the same bytes: a task that failed part-way
(the object store went away) is simply run again. The report, written last, names the plan's
build id (build_state.py).
"""

from __future__ import annotations

import json
import logging
import pickle
import tempfile
from collections import Counter
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any, BinaryIO

from mawsflow import storage
from mawsflow.data.captions import sanitize_caption
from mawsflow.dataset.build_state import withdraw
from mawsflow.dataset.image_records import read_records
from mawsflow.dataset.images import IMAGE_EXTENSIONS, image_format
from mawsflow.dataset.layout import BuildLayout, ShardGroup, input_fingerprint, list_input_shards
from mawsflow.dataset.resample import repeat_count
from mawsflow.dataset.safe_tar import iter_tar_samples
from mawsflow.dataset.sample_tags import ReadLimits
from mawsflow.dataset.shard_writer import ShardWriter
from mawsflow.dataset.vocab import read_vocabulary
from mawsflow.dataset.vocab_phase import PLAN_FORMAT, POSITION
from mawsflow.log import progress

log = logging.getLogger(__name__)

Members = Mapping[str, bytes]


def read_plan(layout: BuildLayout, group_count: int) -> dict[str, Any]:
    """The vocabulary phase's plan, checked against the number of groups this run uses."""
    if not storage.exists(layout.plan):
        raise RuntimeError(f"{layout.plan} does not exist: run the vocab phase first")
    plan = storage.read_json(layout.plan)
    if plan.get("format") != PLAN_FORMAT:
        raise RuntimeError(f"{layout.plan}: format {plan.get('format')!r}, expected {PLAN_FORMAT}")
    if plan["groups"] != group_count:
        raise RuntimeError(
            f"{layout.plan} was made for {plan['groups']} shard groups, not {group_count}; "
            "use the same group count in every phase"
        )
    return plan


class _GroupOutput:
    """Routes the group's i-th output sample to its full shards or, past them, to its tail."""

    def __init__(
        self, stack: ExitStack, layout: BuildLayout, group: ShardGroup, group_plan: dict[str, Any]
    ) -> None:
        samples_per_shard = group_plan["samples_per_shard"]
        first = group_plan["first_shard"]
        self._full_limit = group_plan["full_shards"] * samples_per_shard
        self._planned = group_plan["samples"]
        self._group = group
        self.shards = stack.enter_context(
            ShardWriter(lambda k: layout.shard(first + k), samples_per_shard)
        )
        self.tail = stack.enter_context(
            ShardWriter(lambda _: layout.tail(group), samples_per_shard)
        )

    def write(self, key: str, members: Members) -> None:
        if self.samples == self._planned:
            raise RuntimeError(
                f"{self._group.name}: more samples than the plan's {self._planned}; the input or "
                "the build's code changed since the count phase, so rebuild from the count phase"
            )
        writer = self.shards if self.shards.samples < self._full_limit else self.tail
        writer.write(key, members)

    @property
    def samples(self) -> int:
        return self.shards.samples + self.tail.samples


class _RepeatSpool:
    """Second, third, … copies of images, one local file per copy number."""

    def __init__(self, scratch: Path) -> None:
        self._scratch = scratch
        self._files: dict[int, BinaryIO] = {}

    def add(self, copy: int, key: str, members: Members) -> None:
        if copy not in self._files:
            self._files[copy] = (self._scratch / f"copy-{copy:04d}.pickle").open("w+b")
        pickle.dump((key, dict(members)), self._files[copy], protocol=pickle.HIGHEST_PROTOCOL)

    def drain(self, output: _GroupOutput) -> None:
        for copy in sorted(self._files):
            spool = self._files[copy]
            spool.seek(0)
            while True:
                try:
                    key, members = pickle.load(spool)  # our own file, written above
                except EOFError:
                    break
                output.write(key, members)
        self.close()

    def close(self) -> None:
        for spool in self._files.values():
            spool.close()
        self._files.clear()


def _check_input(input_uri: str, shards: list[str], plan: dict[str, Any], summary: dict) -> None:
    if input_fingerprint(shards) != plan["input"]["fingerprint"]:
        raise RuntimeError(
            f"{input_uri}: the input shards changed since the count phase "
            f"({len(shards)} shards now, {plan['input']['num_shards']} then); rebuild from count"
        )
    for ordinal, size in summary["shard_sizes"].items():
        if storage.size(shards[int(ordinal)]) != size:
            raise RuntimeError(
                f"{shards[int(ordinal)]}: changed since the count phase ({size} bytes then); "
                "rebuild from the count phase"
            )


def _image_member(members: Mapping[str, bytes]) -> tuple[str, bytes]:
    """The sample's one image member (the count phase checked there is exactly one) under the
    extension of its real format."""
    (image,) = (data for ext, data in members.items() if ext in IMAGE_EXTENSIONS)
    fmt = image_format(image)
    if fmt is None:
        raise RuntimeError("a recorded image is no longer an image; the input changed")
    return fmt, image


def run_write(input_uri: str, out_uri: str, group: ShardGroup) -> dict[str, Any]:
    """Write one group's shards and tail; returns (and stores) the group's write report."""
    layout = BuildLayout(out_uri)
    plan = read_plan(layout, group.count)
    shards = list_input_shards(input_uri)
    summary = storage.read_json(layout.count_summary(group))
    _check_input(input_uri, shards, plan, summary)
    # Shards are about to be replaced: the published dataset is no longer current, nor is
    # this group's report of an earlier run.
    withdraw(layout.manifest, layout.write_report(group))
    limits = ReadLimits(**plan["limits"])
    by_offset = {entry.offset: entry for entry in read_vocabulary(layout.vocab)}
    duplicates = set(POSITION.iter_unpack(storage.read_bytes(layout.duplicates(group))))
    resampling = plan["resampling"]
    group_plan = {
        **plan["group_plans"][group.index],
        "samples_per_shard": plan["samples_per_shard"],
    }

    kept = 0
    problems: Counter[str] = Counter()  # counted once already, by the count phase
    records_uri = layout.records_in_order(group)
    with (
        tempfile.TemporaryDirectory(prefix="mawsflow-write-") as scratch,
        ExitStack() as stack,
        storage.open_read(records_uri) as records_stream,
    ):
        output = _GroupOutput(stack, layout, group, group_plan)
        repeats_spool = _RepeatSpool(Path(scratch))
        stack.callback(repeats_spool.close)
        records = read_records(records_stream, records_uri)
        record = next(records, None)
        ordinals = group.shard_range(len(shards))
        for ordinal in progress(ordinals, desc=f"write {group.name}", unit="shard", logger=log):
            if record is None or record.shard != ordinal:
                continue  # nothing usable in this shard
            with storage.open_read(shards[ordinal]) as stream:
                for sample in iter_tar_samples(stream, problems, limits.max_member_bytes):
                    if record is None or (record.shard, record.sample) != (ordinal, sample.ordinal):
                        continue
                    current, record = record, next(records, None)
                    if (current.shard, current.sample) in duplicates:
                        continue
                    labels = sorted(
                        (by_offset[o] for o in current.synsets if o in by_offset),
                        key=lambda entry: entry.index,
                    )
                    if not labels:
                        continue
                    fmt, image = _image_member(sample.members)
                    caption = sample.members["txt"].decode("utf-8-sig")
                    members = {
                        fmt: image,
                        "labels.json": json.dumps([entry.index for entry in labels]).encode(),
                        "txt": sanitize_caption(caption).encode("utf-8"),
                    }
                    key = current.content_hash.hex()
                    output.write(key, members)
                    kept += 1
                    copies = repeat_count(
                        current.content_hash,
                        min(entry.count for entry in labels),
                        resampling["threshold"],
                        resampling["power"],
                        resampling["seed"],
                    )
                    for copy in range(1, copies):
                        repeats_spool.add(copy, f"{key}-{copy}", members)
            if record is not None and record.shard == ordinal:
                raise RuntimeError(
                    f"{shards[ordinal]}: sample {record.sample} was counted but is not there now; "
                    "the input changed since the count phase"
                )
        repeats_spool.drain(output)
        _check_against_plan(group, group_plan, kept, output.samples)
    report = {
        "build": plan["build"],
        "group": {"index": group.index, "count": group.count},
        "kept": kept,
        "samples": output.samples,
        "shards": [
            layout.shard_name(group_plan["first_shard"] + k)
            for k in range(len(output.shards.shards))
        ],
        "tail_samples": output.tail.samples,
    }
    storage.write_json(layout.write_report(group), report)
    log.info("wrote %s: %d images → %d samples", group.name, kept, output.samples)
    return report


def _check_against_plan(
    group: ShardGroup, group_plan: dict[str, Any], kept: int, samples: int
) -> None:
    if (kept, samples) != (group_plan["kept"], group_plan["samples"]):
        raise RuntimeError(
            f"{group.name}: wrote {kept} images as {samples} samples, but the plan expects "
            f"{group_plan['kept']} images as {group_plan['samples']} samples; the input or the "
            "build's code changed since the count phase, so rebuild from the count phase"
        )
