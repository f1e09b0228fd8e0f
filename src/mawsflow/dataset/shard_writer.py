"""Writing webdataset shards of a fixed sample count, byte-identical on every run.

Samples go through webdataset's `TarWriter` with a pinned modification time (its owner, mode
and USTAR format are fixed too), so the same samples in the same order always give the same
bytes. Each shard is streamed to storage through an atomic write: it becomes visible whole when
its last sample is in, and a crash leaves no partial shard behind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, ExitStack
from types import TracebackType

import webdataset as wds

from mawsflow import storage


class ShardWriter(AbstractContextManager["ShardWriter"]):
    """Writes samples into consecutive shards of exactly `samples_per_shard` samples each (the
    last one may hold fewer). `shard_uri(i)` names the i-th shard this writer opens."""

    def __init__(self, shard_uri: Callable[[int], str], samples_per_shard: int) -> None:
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be at least 1, got {samples_per_shard}")
        self._shard_uri = shard_uri
        self._samples_per_shard = samples_per_shard
        self._open: ExitStack | None = None
        self._tar: wds.TarWriter | None = None
        self._in_shard = 0
        self.shards: list[str] = []
        self.shard_sizes: list[int] = []
        self.samples = 0

    def write(self, key: str, members: Mapping[str, bytes]) -> None:
        """Add one sample: `members` maps extensions (`png`, `labels.json`, …) to bytes."""
        if self._tar is None:
            self._start_shard()
        assert self._tar is not None
        self._tar.write({"__key__": key, **members})
        self._in_shard += 1
        self.samples += 1
        if self._in_shard == self._samples_per_shard:
            self._finish_shard()

    def _start_shard(self) -> None:
        uri = self._shard_uri(len(self.shards))
        stack = ExitStack()
        stream = stack.enter_context(storage.open_write(uri))
        # An integer mtime: tarfile stores a float one in an extra PAX header per member.
        self._tar = stack.enter_context(wds.TarWriter(stream, encoder=False, mtime=0))
        self._open = stack
        self.shards.append(uri)
        self._in_shard = 0

    def _finish_shard(self) -> None:
        assert self._open is not None
        self._open.close()
        self.shard_sizes.append(self._in_shard)
        self._open = None
        self._tar = None

    def close(self) -> None:
        """Publish the last, partial shard (if any)."""
        if self._open is not None:
            self._finish_shard()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
        elif self._open is not None:
            # Unwinding through the atomic write's context discards the unfinished shard.
            self._open.__exit__(exc_type, exc, traceback)
            self._open = None
            self._tar = None
