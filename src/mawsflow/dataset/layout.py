"""Where the build's inputs, intermediate files and outputs live, and how the input is split
into shard groups.

The input is every `*.tar` under the input prefix, in sorted order; a shard's ordinal is its
position in that list, the same for every worker. Group `i` of `N` is a contiguous, balanced
slice of it. The output directory holds the dataset (docs/data-formats.md) plus `_work/`, the
phases' hand-over files:

    _work/count/group-IIIII-of-NNNNN.by-hash   image records sorted by content hash (the merge)
    _work/count/group-IIIII-of-NNNNN.in-order  the same records in input order (the write phase)
    _work/count/group-IIIII-of-NNNNN.json      the group's read statistics; written last
    _work/plan.json                            vocabulary-phase decisions for every group
    _work/duplicates/group-….bin               positions the write phase skips as duplicates
    _work/write/group-IIIII-of-NNNNN.json      the group's write report; written last
    _work/tails/group-IIIII-of-NNNNN.tar       the group's last, partial shard's worth

`_work/` is not part of the dataset. Every file a phase hands on is vouched for by a marker
written after it (a count summary, the plan, a write report, the manifest); a phase first
deletes the markers that vouch for what it is about to replace, so nothing of an earlier build
is ever read as part of the current one (build_state.py). The finalize step removes `_work/`
and every shard its manifest does not name.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from mawsflow import storage
from mawsflow.dataset.corpus_snapshot import is_snapshot, snapshot_versions

WORK_DIR = "_work"
SHARD_DIR = "shards"
_GROUP_SPEC = re.compile(r"^(\d+)/(\d+)$")


@dataclass(frozen=True)
class ShardGroup:
    """Group `index` (0-based) of `count` groups."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(
                f"shard group {self.index}/{self.count}: need 0 <= index < count and count >= 1"
            )

    @classmethod
    def parse(cls, spec: str) -> ShardGroup:
        """`"i/N"` → group i of N (0-based, as KFP ParallelFor indices are)."""
        match = _GROUP_SPEC.match(spec.strip())
        if not match:
            raise ValueError(f"shard group {spec!r}: expected INDEX/COUNT such as 0/3")
        return cls(int(match.group(1)), int(match.group(2)))

    @property
    def name(self) -> str:
        return f"group-{self.index:05d}-of-{self.count:05d}"

    def shard_range(self, num_shards: int) -> range:
        """The ordinals of this group's input shards."""
        return range(
            self.index * num_shards // self.count, (self.index + 1) * num_shards // self.count
        )

    def all_groups(self) -> list[ShardGroup]:
        return [ShardGroup(index, self.count) for index in range(self.count)]


def list_input_shards(input_uri: str) -> list[str]:
    """Every `*.tar` under the input prefix (a directory), sorted; an empty input is an error.
    A corpus snapshot file (corpus_snapshot.py) stands for the shards it names, checked to be
    unchanged: a scheduled run reads what it recorded, not what arrived since."""
    if is_snapshot(input_uri):
        return sorted(snapshot_versions(input_uri))
    prefix = input_uri.rstrip("/") + "/"
    shards = storage.list_uris(prefix, suffix=".tar")
    if not shards:
        raise ValueError(f"{input_uri}: no .tar shards under this input prefix")
    return shards


def input_fingerprint(shards: list[str]) -> str:
    """Identifies the input listing, so later phases can tell that it did not change."""
    return hashlib.sha256("\n".join(shards).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class BuildLayout:
    """The URIs of one build's output directory."""

    out: str

    def _work(self, *parts: str) -> str:
        return storage.join(self.out, WORK_DIR, *parts)

    @property
    def work_prefix(self) -> str:
        """The prefix of every intermediate file (for listing)."""
        return self._work() + "/"

    @property
    def write_reports_prefix(self) -> str:
        return self._work("write") + "/"

    @property
    def shards_prefix(self) -> str:
        return storage.join(self.out, SHARD_DIR) + "/"

    def records_by_hash(self, group: ShardGroup) -> str:
        return self._work("count", f"{group.name}.by-hash")

    def records_in_order(self, group: ShardGroup) -> str:
        return self._work("count", f"{group.name}.in-order")

    def count_summary(self, group: ShardGroup) -> str:
        return self._work("count", f"{group.name}.json")

    @property
    def plan(self) -> str:
        return self._work("plan.json")

    def duplicates(self, group: ShardGroup) -> str:
        return self._work("duplicates", f"{group.name}.bin")

    def write_report(self, group: ShardGroup) -> str:
        return self._work("write", f"{group.name}.json")

    def tail(self, group: ShardGroup) -> str:
        return self._work("tails", f"{group.name}.tar")

    @staticmethod
    def shard_name(index: int) -> str:
        """A shard's path relative to the output directory, as the manifest lists it."""
        return f"{SHARD_DIR}/train-{index:06d}.tar"

    def shard(self, index: int) -> str:
        return storage.join(self.out, self.shard_name(index))

    @property
    def vocab(self) -> str:
        return storage.join(self.out, "vocab.json")

    @property
    def stats(self) -> str:
        return storage.join(self.out, "stats.json")

    @property
    def metrics(self) -> str:
        return storage.join(self.out, "metrics.json")

    @property
    def manifest(self) -> str:
        return storage.join(self.out, "manifest.json")
