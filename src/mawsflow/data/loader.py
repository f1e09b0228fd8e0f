"""The training loader: this rank's streams of a dataset, batched, resumable exactly.

Every rank × loader worker reads its own *stream* (`mawsflow.data.shards.SampleStream`: a
seeded shard order and block shuffle, where the sample at any position is a pure function of
the position). Corrupt samples (undecodable image, bad labels, a shard cut short) are skipped
and counted; the count travels with the batches to the trainer's metrics.

Changing the job's shape (world size or loader workers) keeps the streams. A run's number of
streams is fixed when it first starts; a restarted job with `slots = world_size × workers`
loader workers gives slot `j` the streams `s ≡ j (mod slots)`, each continuing from its saved
position, and a worker that owns several streams serves them one whole batch at a time (the
stream with the fewest batches served first). So across a restart on fewer ranks no sample is
repeated or skipped: every stream is read exactly as it would have been, only the grouping into
batches and ranks differs, so the run continues but is not bit-exact. A job that grows beyond its
stream count cannot split streams: its streams are cut anew for the new count, each starting at an
even share of the samples seen (logged as a warning; samples may then repeat or be skipped
relative to the old layout).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mawsflow.data.decoders import SampleDecoder
from mawsflow.data.manifest import PretrainManifest
from mawsflow.data.members import CORRUPT_SAMPLE_ERRORS, CorruptSample
from mawsflow.data.shards import SampleStream, sample_seed
from mawsflow.errors import ConfigError

log = logging.getLogger(__name__)

# Keys each batch carries besides the task's fields: the stream the batch came from, the
# position after its last sample, and how many corrupt samples were skipped to fill it.
STREAM_KEY, POSITION_KEY, SKIPPED_KEY = "_stream", "_position", "_skipped"


class StreamDataset(IterableDataset):
    """The samples of this rank's streams, one stream per loader worker."""

    def __init__(
        self,
        manifest: PretrainManifest,
        decode: SampleDecoder,
        *,
        seed: int,
        rank: int,
        world_size: int,
        shuffle_buffer: int,
        start_positions: Mapping[int, int] | None = None,
        first_worker_stream: int = 0,
        num_streams: int | None = None,
        served: Mapping[int, int] | None = None,
        batch_size: int = 1,
    ) -> None:
        self.manifest = manifest
        self.decode = decode
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle_buffer = shuffle_buffer
        self.start_positions = dict(start_positions or {})
        # The loader takes batches from its workers in turn, starting with worker 0; a resumed
        # loader rotates which slot each worker reads so the turns continue where they were.
        self.first_worker_stream = first_worker_stream
        # The run's stream count (None: one stream per loader slot, as a fresh job has) and
        # batches served per stream, for slots that own several streams after a shrink.
        self.num_streams = num_streams
        self.served = dict(served or {})
        self.batch_size = batch_size

    def _stream_samples(self, stream: int, num_streams: int) -> Iterator[dict[str, Any]]:
        source = SampleStream(
            self.manifest.shards,
            self.manifest.shard_sizes,
            seed=self.seed,
            stream=stream,
            num_streams=num_streams,
            block_size=self.shuffle_buffer,
        )
        skipped = 0
        for position, raw in source.samples(self.start_positions.get(stream, 0)):
            try:
                if raw is None:
                    raise CorruptSample("missing from its shard")
                sample = self.decode(raw, sample_seed(self.seed, stream, position))
            except CORRUPT_SAMPLE_ERRORS as exc:
                skipped += 1
                key = raw.get("__key__", "?") if raw else "?"
                log.warning("skipping corrupt sample %s (stream %d): %s", key, stream, exc)
                continue
            sample[STREAM_KEY] = stream
            sample[POSITION_KEY] = position + 1
            sample[SKIPPED_KEY] = skipped
            skipped = 0
            yield sample

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        slots = self.world_size * workers
        slot = self.rank * workers + (worker + self.first_worker_stream) % workers
        num_streams = self.num_streams or slots
        streams = range(slot, num_streams, slots)
        if len(streams) == 1:
            yield from self._stream_samples(slot, num_streams)
            return
        # Several streams on one slot: one whole batch from each in turn (the DataLoader cuts
        # a worker's samples into batches in order, so each batch still has one stream).
        sources = {s: self._stream_samples(s, num_streams) for s in streams}
        served = {s: self.served.get(s, 0) for s in streams}
        while True:
            stream = min(streams, key=lambda s: (served[s], s))
            yield from islice(sources[stream], self.batch_size)
            served[stream] += 1


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack same-shaped tensors; pad 1-D integer tensors of varying length with −1 (label
    lists); keep other values as lists."""
    batch: dict[str, Any] = {}
    for key in samples[0]:
        if key in (STREAM_KEY, POSITION_KEY, SKIPPED_KEY):
            continue
        values = [s[key] for s in samples]
        if isinstance(values[0], torch.Tensor):
            if all(v.shape == values[0].shape for v in values):
                batch[key] = torch.stack(values)
            elif values[0].ndim == 1 and not values[0].is_floating_point():
                batch[key] = torch.nn.utils.rnn.pad_sequence(
                    values, batch_first=True, padding_value=-1
                )
            else:
                raise ValueError(f"cannot batch {key!r}: shapes differ and it is not a 1-D index")
        else:
            batch[key] = values
    # A batch comes whole from one worker, hence from one stream.
    batch[STREAM_KEY] = samples[-1][STREAM_KEY]
    batch[POSITION_KEY] = samples[-1][POSITION_KEY]
    batch[SKIPPED_KEY] = sum(s[SKIPPED_KEY] for s in samples)
    return batch


@dataclass
class LoaderState:
    """Where each of a rank's streams stands: enough to restart them exactly."""

    num_streams: int  # streams of the run (world size × workers per rank when it started)
    positions: dict[int, int] = field(default_factory=dict)
    batches: int = 0  # batches this rank has consumed: whose turn is next
    served: dict[int, int] = field(default_factory=dict)  # batches taken from each stream

    def advance(self, batch: Mapping[str, Any]) -> None:
        stream = int(batch[STREAM_KEY])
        self.positions[stream] = int(batch[POSITION_KEY])
        self.served[stream] = self.served.get(stream, 0) + 1
        self.batches += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "num_streams": self.num_streams,
            "positions": dict(self.positions),
            "batches": self.batches,
            "served": dict(self.served),
        }

    @staticmethod
    def merge(saved: list[Mapping[str, Any]]) -> dict[str, Any] | None:
        """One state from every rank's saved state of a job of another shape (each rank saved
        only its own streams); the turn of workers restarts."""
        if not saved or any(s.get("num_streams") != saved[0].get("num_streams") for s in saved):
            return None
        positions: dict[int, int] = {}
        served: dict[int, int] = {}
        for state in saved:
            positions.update({int(k): int(v) for k, v in state["positions"].items()})
            served.update({int(k): int(v) for k, v in state.get("served", {}).items()})
        return {"num_streams": saved[0]["num_streams"], "positions": positions, "served": served}

    @classmethod
    def restore(
        cls,
        saved: Mapping[str, Any] | None,
        *,
        num_streams: int,
        rank_streams: range,
        samples_seen: int,
    ) -> LoaderState:
        """This rank's streams where the saved state left them.

        `num_streams` is the job's loader slots now (world size × workers) and `rank_streams`
        this rank's slots. A job of the same shape continues exactly; a smaller one keeps the
        run's streams and hands each to slot `stream mod slots` (see the module docstring). A
        job with more slots than the run has streams cuts them anew: every stream of this rank
        starts at its even share of the samples seen."""
        saved_streams = int(saved["num_streams"]) if saved else None
        if saved and saved_streams is not None and saved_streams >= num_streams:
            slots = set(rank_streams)
            positions = {
                int(k): int(v)
                for k, v in saved["positions"].items()
                if int(k) % num_streams in slots
            }
            served = {
                int(k): int(v)
                for k, v in saved.get("served", {}).items()
                if int(k) % num_streams in slots
            }
            batches = int(saved.get("batches", 0))
            if saved_streams != num_streams:
                log.info(
                    "data streams redistributed: %d streams over %d loader slots",
                    saved_streams,
                    num_streams,
                )
            return cls(saved_streams, positions, batches, served)
        if samples_seen:
            log.warning(
                "data loader layout grew (%s → %d streams): streams are cut anew, each starting "
                "at an even share of %d samples seen; samples may repeat or be skipped relative "
                "to the old layout, and the resumed run is not bit-exact",
                saved_streams if saved else "unknown",
                num_streams,
                samples_seen,
            )
        share = samples_seen // num_streams
        return cls(num_streams, {s: share for s in rank_streams})


def build_loader(
    manifest: PretrainManifest,
    decode: SampleDecoder,
    *,
    batch_size: int,
    num_workers: int,
    seed: int,
    rank: int,
    world_size: int,
    shuffle_buffer: int,
    state: LoaderState,
    pin_memory: bool,
) -> DataLoader:
    """An endless loader of `batch_size` batches for this rank, starting where `state` says."""
    if batch_size < 1:
        raise ConfigError(f"batch size per rank must be positive, got {batch_size}")
    dataset = StreamDataset(
        manifest,
        decode,
        seed=seed,
        rank=rank,
        world_size=world_size,
        shuffle_buffer=shuffle_buffer,
        start_positions=state.positions,
        first_worker_stream=state.batches % max(1, num_workers),
        num_streams=state.num_streams,
        served=state.served,
        batch_size=batch_size,
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
        # A private generator: creating the iterator must not draw from the global RNG, whose
        # state the checkpoint restores for the model's own randomness (masks, drop-path).
        generator=torch.Generator(),
    )
