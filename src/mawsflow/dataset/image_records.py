"""The count phase's per-image records, and merging them across groups.

One record per image that has at least one synset: its content hash, where it is (input shard
ordinal, sample ordinal within the shard) and its synsets (data.noun offsets). Binary, because
there is one per corpus image:

    16 bytes   BLAKE2b-128 of the image bytes
     4 bytes   shard ordinal, big-endian (index in the sorted list of all input shards)
     4 bytes   sample ordinal, big-endian
     2 bytes   number of synsets n
    4n bytes   synset offsets, big-endian

Each count worker writes its records twice: sorted by the first 24 bytes (hash, then position),
so the vocabulary phase can merge all groups in one streaming pass (records of the same image
arrive together, earliest position first, whichever group they came from); and in input order,
so the write phase can walk them beside the input without hashing or checking anything again.
"""

from __future__ import annotations

import hashlib
import heapq
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

HASH_BYTES = 16
_HEADER = struct.Struct(">16sIIH")
_SORT_PREFIX = 24


def content_hash(image: bytes) -> bytes:
    return hashlib.blake2b(image, digest_size=HASH_BYTES).digest()


@dataclass(frozen=True)
class ImageRecord:
    content_hash: bytes
    shard: int
    sample: int
    synsets: tuple[int, ...]

    def encode(self) -> bytes:
        return _HEADER.pack(self.content_hash, self.shard, self.sample, len(self.synsets)) + (
            struct.pack(f">{len(self.synsets)}I", *self.synsets)
        )


def read_records(stream: BinaryIO, source: str) -> Iterator[ImageRecord]:
    """Decode the records of one stream; `source` names it in errors."""
    while True:
        header = stream.read(_HEADER.size)
        if not header:
            return
        if len(header) < _HEADER.size:
            raise ValueError(f"{source}: record file ends inside a record header")
        digest, shard, sample, count = _HEADER.unpack(header)
        body = stream.read(4 * count)
        if len(body) < 4 * count:
            raise ValueError(f"{source}: record file ends inside a record")
        yield ImageRecord(digest, shard, sample, struct.unpack(f">{count}I", body))


def write_records(records: list[bytes], stream: BinaryIO) -> None:
    for record in records:
        stream.write(record)


def sort_for_merge(records: list[bytes]) -> None:
    """Put encoded records in merge order (hash, then position), in place."""
    records.sort(key=lambda record: record[:_SORT_PREFIX])


def merge_sorted(
    streams: Iterable[Iterator[ImageRecord]],
) -> Iterator[tuple[int, ImageRecord]]:
    """(index of the source stream, record) over all sorted streams, in global merge order."""
    tagged = [_tagged(index, stream) for index, stream in enumerate(streams)]
    for record, index in heapq.merge(
        *tagged, key=lambda item: (item[0].content_hash, item[0].shard, item[0].sample)
    ):
        yield index, record


def _tagged(index: int, stream: Iterator[ImageRecord]) -> Iterator[tuple[ImageRecord, int]]:
    for record in stream:
        yield record, index
