"""Reading webdataset shards, and the seeded streams of samples the training loader serves.

Tar parsing is webdataset's; I/O goes through `mawsflow.storage`, so shards may be local paths
or `s3://` URIs. Training and evaluation read shards through `shard_samples`; the dataset build
reads the untrusted raw corpus with its own guarded reader (`mawsflow.dataset.safe_tar`).

A training *stream* (one per rank × loader worker, `mawsflow.data.loader`) is an endless,
deterministic sequence of raw samples:

- Shard order: each pass over the shard list is a seeded permutation, and the passes are
  concatenated; stream `s` of `S` takes draws `s, s + S, s + 2S, …` of that endless sequence.
  Every stream therefore gets data even with fewer shards than streams, and all ranks can run
  the same number of steps: the length of training is counted in samples, never in shards.
- Shuffling: a stream is cut into blocks of `block_size` raw samples, each block permuted by
  a seed derived from (seed, stream, block). Unlike a rolling shuffle buffer, the sample at any
  position is a pure function of the position, so a stream restarts anywhere by reading at most
  one shard prefix and one block again — that is what makes resume exact.
- Augmentation: each sample's random choices are drawn from `sample_seed(seed, stream,
  position)`, so they do not depend on worker processes or on what came before.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np
from webdataset.tariterators import group_by_keys, tar_file_expander

from mawsflow import storage

log = logging.getLogger(__name__)

# webdataset is loaded here anyway; code that hands it `s3://` URLs itself (wds.WebDataset)
# finds them routed through mawsflow.storage (whose import stays free of webdataset and torch).
storage.register_webdataset()


def shard_samples(uri: str) -> Iterator[dict[str, Any]]:
    """Every sample of one shard, in order: {"__key__", "__url__", <extension>: bytes, …}."""
    with storage.open_read(uri) as stream:
        yield from group_by_keys(tar_file_expander([{"url": uri, "stream": stream}]))


def samples_in_order(shards: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Every sample of the shards, shard after shard (evaluation reads a split this way)."""
    for uri in shards:
        yield from shard_samples(uri)


def count_samples(uri: str) -> int:
    return sum(1 for _ in shard_samples(uri))


def read_shard(uri: str, expected: int, *, skip: int = 0) -> Iterator[dict[str, Any] | None]:
    """Exactly `expected − skip` samples of one shard, after skipping `skip` of them.

    A shard that ends early or breaks mid-way yields None for each missing sample, so positions
    stay aligned with the manifest's counts.
    """
    produced = 0
    try:
        # closing: a shard with surplus samples is left early, and its stream closed at once.
        with contextlib.closing(shard_samples(uri)) as samples:
            for index, sample in enumerate(samples):
                if index < skip:
                    continue
                if produced == expected - skip:
                    log.warning("shard %s holds more than the manifest's %d samples", uri, expected)
                    break
                produced += 1
                yield sample
    except (OSError, ValueError, EOFError, storage.StorageError) as exc:
        log.warning("shard %s broke after %d samples: %s", uri, skip + produced, exc)
    if produced < expected - skip:
        log.warning("shard %s is %d samples short", uri, expected - skip - produced)
        for _ in range(expected - skip - produced):
            yield None


def _seeded_rng(*words: int) -> np.random.Generator:
    return np.random.default_rng([int(w) for w in words])


def sample_seed(seed: int, stream: int, position: int) -> int:
    """Seed of the random augmentation of one sample."""
    return int(np.random.SeedSequence([seed, stream, position]).generate_state(1)[0])


# Distinguishes the seed sequences of the different uses below.
_SHARD_ORDER, _BLOCK_ORDER = 1, 2


@dataclass
class SampleStream:
    """The endless, deterministic sequence of raw samples of stream `stream` of `num_streams`."""

    shards: tuple[str, ...]
    shard_sizes: tuple[int, ...]
    seed: int
    stream: int
    num_streams: int
    block_size: int
    _orders: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def shard_of_draw(self, draw: int) -> int:
        """Index of the shard this stream reads as its `draw`-th shard."""
        index = self.stream + draw * self.num_streams
        epoch, slot = divmod(index, len(self.shards))
        if epoch not in self._orders:
            self._orders = {
                epoch: _seeded_rng(self.seed, _SHARD_ORDER, epoch).permutation(len(self.shards))
            }
        return int(self._orders[epoch][slot])

    def locate(self, raw_index: int) -> tuple[int, int]:
        """(draw, offset in that shard) of the stream's `raw_index`-th raw sample."""
        draw = 0
        while True:
            size = self.shard_sizes[self.shard_of_draw(draw)]
            if raw_index < size:
                return draw, raw_index
            raw_index -= size
            draw += 1

    def raw_samples(self, start: int) -> Iterator[dict[str, Any] | None]:
        """Raw samples from `start` on; None stands for one the shard should hold but did not."""
        draw, offset = self.locate(start)
        while True:
            shard = self.shard_of_draw(draw)
            yield from read_shard(self.shards[shard], self.shard_sizes[shard], skip=offset)
            draw, offset = draw + 1, 0

    def block_order(self, block: int) -> np.ndarray:
        if self.block_size <= 1:
            return np.zeros(1, dtype=np.int64)
        return _seeded_rng(self.seed, _BLOCK_ORDER, self.stream, block).permutation(self.block_size)

    def samples(self, start: int) -> Iterator[tuple[int, dict[str, Any] | None]]:
        """(position, raw sample) in shuffled order, from position `start` on."""
        size = max(1, self.block_size)
        block, within = divmod(start, size)
        raw = self.raw_samples(block * size)
        while True:
            chunk = list(islice(raw, size))
            order = self.block_order(block)
            for i in range(within, size):
                yield block * size + i, chunk[order[i]]
            block, within = block + 1, 0
