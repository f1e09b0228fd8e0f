"""Writing webdataset shards that are byte-identical on every run.

A tar member's header carries a modification time, owner and permissions; here they are fixed
(mtime 0, root:root, 0644, USTAR format), so the same samples in the same order always give the
same bytes. Each shard is streamed to storage through an atomic write: it becomes visible whole
when its last sample is in, and a crash leaves no partial shard behind.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from types import TracebackType

from mawsflow import storage


def member_info(name: str, size: int) -> tarfile.TarInfo:
    """A tar header for a regular file with every run-dependent field pinned."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class ShardWriter(AbstractContextManager["ShardWriter"]):
    """Writes samples into consecutive shards of exactly `samples_per_shard` samples each (the
    last one may hold fewer). `shard_uri(i)` names the i-th shard this writer opens."""

    def __init__(self, shard_uri: Callable[[int], str], samples_per_shard: int) -> None:
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be at least 1, got {samples_per_shard}")
        self._shard_uri = shard_uri
        self._samples_per_shard = samples_per_shard
        self._open: ExitStack | None = None
        self._archive: tarfile.TarFile | None = None
        self._in_shard = 0
        self.shards: list[str] = []
        self.shard_sizes: list[int] = []
        self.samples = 0

    def write(self, key: str, members: Sequence[tuple[str, bytes]]) -> None:
        """Add one sample: `members` are (extension, bytes) in the order they are stored."""
        if self._archive is None:
            self._start_shard()
        assert self._archive is not None
        for extension, data in members:
            self._archive.addfile(member_info(f"{key}.{extension}", len(data)), io.BytesIO(data))
        self._in_shard += 1
        self.samples += 1
        if self._in_shard == self._samples_per_shard:
            self._finish_shard()

    def _start_shard(self) -> None:
        uri = self._shard_uri(len(self.shards))
        stack = ExitStack()
        stream = stack.enter_context(storage.open_write(uri))
        self._archive = stack.enter_context(
            tarfile.open(fileobj=stream, mode="w|", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
        )
        self._open = stack
        self.shards.append(uri)
        self._in_shard = 0

    def _finish_shard(self) -> None:
        assert self._open is not None
        self._open.close()
        self.shard_sizes.append(self._in_shard)
        self._open = None
        self._archive = None

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
            self._archive = None
