"""Reading webdataset shards from untrusted sources without letting one bad byte cost more than
the sample it sits in.

A shard is read as a stream (nothing is seeked, so it works on an S3 body) with the standard
library's `tarfile`. Members group into samples webdataset's way: consecutive members sharing a
key, the key being the member path up to the first dot of its file name and the extension the
rest (`a/b/123.labels.json` → key `a/b/123`, extension `labels.json`). What goes wrong is
counted and skipped:

- members with an absolute path or a `..` component, links and devices, members larger than
  the limit (never read), hidden files without a key;
- a key that was already seen in the shard, adjacent (`a.jpg a.txt a.jpg`) or not: the first
  sample with that key is kept, every later one dropped whole;
- an empty shard; a truncated shard (a member's data cut short, or no end-of-archive marker
  where the last member ends); a corrupt header where the next member should start. The
  samples read before the damage are still yielded.

`tarfile` silently treats a missing end marker or a garbage header as the end of the archive,
so the reader watches the bytes it consumed and checks that the archive really ends with a
zero block where `tarfile` stopped.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from mawsflow.dataset.stats import MemberProblem, SampleDrop, ShardProblem

DEFAULT_MAX_MEMBER_BYTES = 64 * 1024 * 1024
_BLOCK = tarfile.BLOCKSIZE
# tarfile reads ahead at most one record (20 blocks) past the header it parses; keeping a few
# records of history is enough to see the bytes where it stopped.
_HISTORY = 8 * tarfile.RECORDSIZE


@dataclass
class TarSample:
    """One sample of a shard: its key, its members by extension, its index among the shard's
    yielded samples (stable for a given shard, whichever process reads it)."""

    key: str
    members: dict[str, bytes] = field(default_factory=dict)
    ordinal: int = 0


class _ConsumedBytes:
    """A read-only stream wrapper that remembers the position and the last chunks read (by
    reference: image bytes are not copied again)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.position = 0
        self._history: deque[bytes] = deque()
        self._history_bytes = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.position += len(data)
        self._history.append(data)
        self._history_bytes += len(data)
        while self._history_bytes - len(self._history[0]) >= _HISTORY:
            self._history_bytes -= len(self._history.popleft())
        return data

    def bytes_from(self, offset: int, count: int) -> bytes:
        """Up to `count` bytes starting at absolute `offset`, from history then the stream."""
        history_start = self.position - self._history_bytes
        if offset < history_start:
            raise ValueError("offset is older than the kept history")
        out = b"".join(self._history)[offset - history_start : offset - history_start + count]
        while len(out) < count:
            more = self.read(count - len(out))
            if not more:
                break
            out += more
        return out


def split_member_name(name: str) -> tuple[str, str] | None:
    """(key, extension) of a member path, or None when the name has no key or extension."""
    directory, _, filename = name.rpartition("/")
    stem, dot, extension = filename.partition(".")
    if not stem or not dot or not extension:
        return None
    key = f"{directory}/{stem}" if directory else stem
    return key, extension.lower()


def _is_unsafe_path(name: str) -> bool:
    return (
        name.startswith("/")
        or posixpath.isabs(name)
        or ".." in name.split("/")
        or "\\" in name
        or "\x00" in name
    )


def iter_tar_samples(
    stream: BinaryIO,
    problems: Counter[str],
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
) -> Iterator[TarSample]:
    """The samples of one shard. Every skipped member, dropped sample and damaged-shard
    condition adds one to `problems` under its MemberProblem/SampleDrop/ShardProblem value."""
    source = _ConsumedBytes(stream)
    seen_keys: set[str] = set()
    current: TarSample | None = None
    skipping_key: str | None = None  # a duplicate key whose members are being discarded
    members_seen = 0
    ordinal = 0
    try:
        # Closed by the `with` below; opening is apart because it fails on a damaged start.
        archive = tarfile.open(fileobj=source, mode="r|")  # noqa: SIM115
    except tarfile.ReadError as exc:
        problems[_open_failure(str(exc)).value] += 1
        return
    try:
        with archive:
            for info in archive:
                members_seen += 1
                name = info.name[2:] if info.name.startswith("./") else info.name
                if info.isdir():
                    continue
                if not info.isfile():
                    problems[MemberProblem.NOT_A_FILE.value] += 1
                    continue
                if _is_unsafe_path(name):
                    problems[MemberProblem.UNSAFE_PATH.value] += 1
                    continue
                parts = split_member_name(name)
                if parts is None:
                    problems[MemberProblem.NO_KEY.value] += 1
                    continue
                if info.size > max_member_bytes:
                    problems[MemberProblem.OVERSIZED.value] += 1
                    continue
                key, extension = parts
                if key == skipping_key:
                    continue
                if current is not None and key == current.key and extension not in current.members:
                    current.members[extension] = _read_member(archive, info)
                    continue
                # A new key starts, or the current key repeats an extension (a second copy).
                if current is not None:
                    yield current
                    ordinal += 1
                    current = None
                if key in seen_keys:
                    problems[SampleDrop.DUPLICATE_KEY.value] += 1
                    skipping_key = key
                    continue
                skipping_key = None
                seen_keys.add(key)
                current = TarSample(key, {extension: _read_member(archive, info)}, ordinal)
    except tarfile.ReadError:
        # Data cut short inside a member: the samples completed before it still count.
        problems[ShardProblem.TRUNCATED.value] += 1
        if current is not None:
            yield current
        return
    if current is not None:
        yield current
    ending = source.bytes_from(archive.offset, _BLOCK)
    if len(ending) < _BLOCK:
        problems[ShardProblem.TRUNCATED.value] += 1
    elif ending.count(0) != _BLOCK:
        problems[ShardProblem.CORRUPT.value] += 1
    elif members_seen == 0:
        problems[ShardProblem.EMPTY.value] += 1


def _open_failure(message: str) -> ShardProblem:
    """Classify tarfile's complaint about the very first header."""
    if message == "empty file":
        return ShardProblem.EMPTY
    if message in ("truncated header", "unexpected end of data"):
        return ShardProblem.TRUNCATED
    return ShardProblem.CORRUPT


def _read_member(archive: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    handle = archive.extractfile(info)
    assert handle is not None  # regular files always have a data stream
    data = handle.read()
    if len(data) != info.size:
        raise tarfile.ReadError("unexpected end of data")
    return data
