"""A snapshot of the raw corpus: the exact shard listing one run reads.

Scheduled retraining runs over a corpus that grows while it is in use: new images and captions
land as new dated partitions under the corpus prefix,

    <raw_corpus>/date=2026-11-29/part-000.tar
    <raw_corpus>/date=2026-12-06/part-000.tar …

(`YYYY-MM-DD` alone also names a partition; shards outside any dated folder always belong to
the corpus). A run lists the corpus once, at its start, and records that listing, every shard's
URI with the version token object storage gives it (S3's ETag and size), in one JSON file. The
dataset build then reads exactly the shards the snapshot names, in its order, however many
shards arrive while the run is going (`mawsflow.dataset.layout.list_input_shards` takes a
snapshot file wherever it takes a corpus prefix), and a rerun given the same file reads the same
data. `as_of` cuts the corpus at a date: the partitions of later days are left out, which is how
an old run is reproduced from the corpus as it is today.

The snapshot's fingerprint is the digest of its listing (the same digest the build's cache keys
use, mawsflow.orchestration.data_fingerprint): equal fingerprints, equal data.

A shard the snapshot names that has since changed or disappeared is an error when the run reads
it: the run would otherwise train on data it did not record.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from mawsflow import storage
from mawsflow.errors import DataFormatError

SNAPSHOT_FORMAT = "mawsflow.corpus-snapshot/1"
SNAPSHOT_SUFFIX = ".snapshot.json"
SHARD_SUFFIX = ".tar"
# A path component that names a partition's day: `date=2026-12-01` or `2026-12-01`.
_PARTITION = re.compile(r"^(?:[A-Za-z_]+=)?(\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True)
class CorpusSnapshot:
    """The shards of a corpus at one moment, with their version tokens."""

    corpus: str  # the corpus prefix that was listed
    shards: Mapping[str, str]  # shard URI → version token (ETag:size on S3)
    as_of: str = ""  # the last partition day included ("": every partition)
    taken: str = ""  # when the listing was made (UTC, ISO 8601)

    @property
    def fingerprint(self) -> str:
        """sha256 over `uri version` lines in URI order (data_fingerprint.digest's form)."""
        lines = "".join(f"{uri} {self.shards[uri]}\n" for uri in sorted(self.shards))
        return hashlib.sha256(lines.encode("utf-8")).hexdigest()

    @property
    def partitions(self) -> list[str]:
        """The partition days present, oldest first."""
        return sorted({day for uri in self.shards if (day := partition_day(uri, self.corpus))})

    def to_json(self) -> dict:
        return {
            "format": SNAPSHOT_FORMAT,
            "corpus": self.corpus,
            "as_of": self.as_of,
            "taken": self.taken,
            "fingerprint": self.fingerprint,
            "partitions": self.partitions,
            "shards": [{"uri": uri, "version": self.shards[uri]} for uri in sorted(self.shards)],
        }


def partition_day(uri: str, corpus: str) -> str | None:
    """The day of the dated partition `uri` lies in under `corpus`, or None."""
    relative = uri[len(corpus.rstrip("/")) + 1 :]
    for part in relative.split("/")[:-1]:
        if match := _PARTITION.match(part):
            return match.group(1)
    return None


def _check_day(as_of: str) -> str:
    try:
        return datetime.date.fromisoformat(as_of).isoformat()
    except ValueError:
        raise DataFormatError(f"as_of {as_of!r}: expected a day as YYYY-MM-DD") from None


def take_snapshot(corpus: str, as_of: str = "") -> CorpusSnapshot:
    """List `corpus` now: every `*.tar` under it, but those in partitions dated after `as_of`.
    One paginated LIST; an empty result is an error that names the prefix."""
    corpus = corpus.rstrip("/")
    if is_snapshot(corpus):
        raise DataFormatError(f"{corpus}: already a snapshot; give the corpus prefix it lists")
    day = _check_day(as_of) if as_of else ""
    versions = storage.list_versions(corpus + "/", suffix=SHARD_SUFFIX)
    shards = {
        uri: version
        for uri, version in versions.items()
        if not day or (partition_day(uri, corpus) or "") <= day
    }
    if not shards:
        cut = f" in partitions up to {day}" if day else ""
        raise DataFormatError(f"{corpus}: no {SHARD_SUFFIX} shards under this prefix{cut}")
    taken = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return CorpusSnapshot(corpus, shards, day, taken)


def is_snapshot(uri: str) -> bool:
    return uri.endswith(SNAPSHOT_SUFFIX)


def write_snapshot(uri: str, snapshot: CorpusSnapshot) -> None:
    if not is_snapshot(uri):
        raise DataFormatError(f"{uri}: a snapshot's name ends in {SNAPSHOT_SUFFIX}")
    storage.write_json(uri, snapshot.to_json())


def read_snapshot(uri: str) -> CorpusSnapshot:
    """A snapshot file; a file that is not one is a DataFormatError that names it."""
    data = storage.read_json(uri)
    if not isinstance(data, dict) or data.get("format") != SNAPSHOT_FORMAT:
        raise DataFormatError(f"{uri}: not a corpus snapshot (format {SNAPSHOT_FORMAT!r})")
    try:
        shards = {entry["uri"]: entry["version"] for entry in data["shards"]}
        snapshot = CorpusSnapshot(data["corpus"], shards, data["as_of"], data["taken"])
    except (KeyError, TypeError) as exc:
        raise DataFormatError(f"{uri}: malformed corpus snapshot ({exc!r})") from None
    if not shards:
        raise DataFormatError(f"{uri}: the snapshot names no shards")
    if snapshot.fingerprint != data.get("fingerprint"):
        raise DataFormatError(f"{uri}: its fingerprint does not match its listing")
    return snapshot


def snapshot_versions(uri: str, *, verify: bool = True) -> dict[str, str]:
    """The shards a snapshot file names, with their versions. With `verify`, one LIST of the
    corpus checks that each is still there and unchanged."""
    snapshot = read_snapshot(uri)
    if verify:
        now = storage.list_versions(snapshot.corpus + "/", suffix=SHARD_SUFFIX)
        changed = sorted(s for s, version in snapshot.shards.items() if now.get(s) != version)
        if changed:
            more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
            raise DataFormatError(
                f"{uri}: shard(s) {', '.join(changed[:3])}{more} changed or disappeared since "
                "the snapshot was taken; the run would not read the data it recorded"
            )
    return dict(snapshot.shards)
