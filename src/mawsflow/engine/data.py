"""Training data: webdataset shards from a pretraining dataset's manifest, resumable exactly.

A dataset (docs/data-formats.md) lists its shards in `manifest.json`. Every rank × loader worker
reads its own *stream*:

- Shard order: each pass over the shard list is a seeded permutation, and the passes are
  concatenated; stream `s` of `S` takes draws `s, s + S, s + 2S, …` of that endless sequence.
  Every stream therefore gets data even with fewer shards than streams, and all ranks can run
  the same number of steps: the length of training is counted in samples, never in shards.
- Shuffling: a stream is cut into blocks of `shuffle_buffer` raw samples, each block permuted by
  a seed derived from (seed, stream, block). Unlike a rolling shuffle buffer, the sample at any
  position is a pure function of the position, so a stream restarts anywhere by reading at most
  one shard prefix and one block again — that is what makes resume exact.
- Augmentation: each sample's random crop, flip (and RandAugment where the recipe asks) are
  drawn from a seed derived from (seed, stream, position), so they do not depend on worker
  processes or on what came before.
- Corrupt samples (undecodable image, bad labels, a shard cut short) are skipped and counted;
  the count travels with the batches to the trainer's metrics.

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

Tar parsing is webdataset's; I/O goes through `mawsflow.storage`, so shards may be local paths
or `s3://` URIs. Images leave the loader as uint8 CHW tensors and are normalised on the device.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import math
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from timm.data.auto_augment import rand_augment_transform
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.tariterators import group_by_keys, tar_file_expander

from mawsflow import storage
from mawsflow.recipes import AugmentConfig

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "mawsflow.multilabel/1"
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
# ImageNet statistics, as MAE, SWAG and timm normalise.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


class CorruptSample(ValueError):
    """A sample that cannot be used; the loader skips and counts it."""


# What decoding a broken sample raises: PIL's errors (UnidentifiedImageError is an OSError),
# truncated data, bad JSON or text encodings (ValueErrors), and decompression bombs.
CORRUPT_SAMPLE_ERRORS = (
    CorruptSample,
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    Image.DecompressionBombError,
)

# --------------------------------------------------------------------------------------------
# The dataset manifest


@dataclass(frozen=True)
class PretrainManifest:
    uri: str
    shards: tuple[str, ...]  # absolute URIs, in manifest order
    shard_sizes: tuple[int, ...]
    num_samples: int
    num_classes: int
    vocab: str | None

    def read_vocab(self) -> list[dict[str, Any]]:
        if self.vocab is None:
            raise ValueError(f"{self.uri}: the manifest names no vocab file")
        vocab = storage.read_json(self.vocab)
        if not isinstance(vocab, list) or len(vocab) != self.num_classes:
            raise ValueError(
                f"{self.vocab}: expected a list of {self.num_classes} entries (the manifest's "
                f"num_classes), got {type(vocab).__name__} of length {len(vocab)}"
            )
        return vocab


def _manifest_int(data: Mapping[str, Any], key: str, uri: str, minimum: int) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{uri}: {key} must be an integer ≥ {minimum}, got {value!r}")
    return value


def read_manifest(dataset_uri: str) -> PretrainManifest:
    """Read and check `<dataset_uri>/manifest.json` (or a manifest URI given directly)."""
    if not dataset_uri:
        raise ValueError("data.train is empty: set it to the dataset's URI (its manifest.json)")
    if dataset_uri.endswith(".json"):
        manifest_uri = dataset_uri
        root = dataset_uri.rsplit("/", 1)[0] if "/" in dataset_uri else "."
    else:
        root = dataset_uri.rstrip("/")
        manifest_uri = storage.join(root, "manifest.json")
    try:
        data = storage.read_json(manifest_uri)
    except storage.NotFoundError:
        raise ValueError(f"data.train: no dataset manifest at {manifest_uri}") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{manifest_uri}: format must be {MANIFEST_FORMAT!r}, got {found!r}")
    shards = data.get("shards")
    if not isinstance(shards, list) or not shards or not all(isinstance(s, str) for s in shards):
        raise ValueError(f"{manifest_uri}: shards must be a non-empty list of paths")
    num_samples = _manifest_int(data, "num_samples", manifest_uri, 1)
    per_shard = _manifest_int(data, "samples_per_shard", manifest_uri, 1)
    num_classes = _manifest_int(data, "num_classes", manifest_uri, 0)
    last = num_samples - per_shard * (len(shards) - 1)
    if not 0 < last <= per_shard:
        raise ValueError(
            f"{manifest_uri}: {num_samples} samples do not fit {len(shards)} shards of "
            f"{per_shard} (every shard but the last is full)"
        )
    vocab = data.get("vocab")
    return PretrainManifest(
        uri=manifest_uri,
        shards=tuple(storage.join(root, s) for s in shards),
        shard_sizes=(per_shard,) * (len(shards) - 1) + (last,),
        num_samples=num_samples,
        num_classes=num_classes,
        vocab=storage.join(root, vocab) if isinstance(vocab, str) and vocab else None,
    )


# --------------------------------------------------------------------------------------------
# Streams: which raw sample sits at which position


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


def read_shard(uri: str, expected: int, *, skip: int = 0) -> Iterator[dict[str, Any] | None]:
    """Exactly `expected − skip` samples of one shard, after skipping `skip` of them.

    A shard that ends early or breaks mid-way yields None for each missing sample, so positions
    stay aligned with the manifest's counts.
    """
    produced = 0
    try:
        with storage.open_read(uri) as stream:
            files = tar_file_expander([{"url": uri, "stream": stream}])
            for index, sample in enumerate(group_by_keys(files)):
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


# --------------------------------------------------------------------------------------------
# Decoding and augmentation


def image_member(raw: Mapping[str, Any]) -> bytes:
    for ext in IMAGE_EXTENSIONS:
        if ext in raw:
            return raw[ext]
    raise CorruptSample(f"no image member ({'/'.join(IMAGE_EXTENSIONS)})")


@contextlib.contextmanager
def _seeded_host_rngs(seed: int) -> Iterator[None]:
    """Seed the CPU torch, Python and NumPy generators for one sample's augmentation and put
    them back afterwards, so that loading in the training process leaves the training RNG
    stream (masks, drop-path, mixup) untouched."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        # Only the CPU generator: torch.manual_seed would also queue seeds for every
        # accelerator backend, which costs more than the crop itself.
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class RandomResizedCropFlip:
    """Decode an image and apply the recipe's augmentation: RandomResizedCrop, horizontal flip
    and, where the recipe asks (Table 13), timm's RandAugment after them.

    The crop box is drawn by torchvision's `RandomResizedCrop.get_params` from the image's
    header size, before decoding. JPEGs are then decoded at the smallest DCT scale that still
    gives the crop at least the output resolution, and crop + resize is one resampling pass.
    Grayscale and palette images become RGB. Every random choice comes
    from `seed`. Returns a uint8 [3, size, size] tensor.
    """

    def __init__(self, augment: AugmentConfig) -> None:
        crop = augment.crop
        self.size = crop.size
        self.scale = tuple(crop.scale)
        self.ratio = tuple(crop.ratio)
        self.hflip = augment.hflip
        self.resample = {
            "bicubic": Image.Resampling.BICUBIC,
            "bilinear": Image.Resampling.BILINEAR,
        }[crop.interpolation]
        self.rand_augment = None
        if augment.rand_augment is not None:
            ra = augment.rand_augment
            self.rand_augment = rand_augment_transform(
                f"rand-m{ra.magnitude}-n{ra.num_layers}",
                {
                    "translate_const": int(self.size * 0.45),
                    "img_mean": tuple(round(255 * m) for m in IMAGE_MEAN),
                },
            )

    def __call__(self, data: bytes, seed: int) -> torch.Tensor:
        img = Image.open(io.BytesIO(data))
        width, height = img.size
        with _seeded_host_rngs(seed):
            top, left, h, w = T.RandomResizedCrop.get_params(img, self.scale, self.ratio)
            flip = bool(torch.rand(()) < self.hflip)
            if img.format == "JPEG" and min(w, h) >= 2 * self.size:
                img.draft(
                    "RGB",
                    (math.ceil(width * self.size / w), math.ceil(height * self.size / h)),
                )
            sx, sy = img.size[0] / width, img.size[1] / height
            if img.mode not in ("RGB", "L"):
                img = img.convert("RGB")
            img = img.resize(
                (self.size, self.size),
                self.resample,
                box=(left * sx, top * sy, (left + w) * sx, (top + h) * sy),
                # Large downscales first shrink by an integer factor with a box filter; at a
                # gap of 3 the result matches a direct resampling (Pillow's documentation).
                reducing_gap=3.0,
            )
            if flip:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            if img.mode != "RGB":
                img = img.convert("RGB")
            if self.rand_augment is not None:
                img = self.rand_augment(img)
        return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()


class ImageDecoder:
    """Raw sample → {"image"} (MAE)."""

    def __init__(self, augment: AugmentConfig) -> None:
        self.augment = RandomResizedCropFlip(augment)

    def __call__(self, raw: Mapping[str, Any], seed: int) -> dict[str, torch.Tensor]:
        return {"image": self.augment(image_member(raw), seed)}


def parse_labels(raw: Mapping[str, Any], num_classes: int) -> torch.Tensor:
    """The sample's `labels.json`: a non-empty list of vocabulary indices."""
    if "labels.json" not in raw:
        raise CorruptSample("no labels.json member")
    labels = json.loads(raw["labels.json"])
    if (
        not isinstance(labels, list)
        or not labels
        or not all(isinstance(i, int) and not isinstance(i, bool) for i in labels)
    ):
        raise CorruptSample(f"labels.json must be a non-empty list of integers, got {labels!r}")
    if min(labels) < 0 or max(labels) >= num_classes:
        raise CorruptSample(f"labels {labels} outside the vocabulary of {num_classes}")
    return torch.tensor(labels, dtype=torch.int64)


class ImageLabelsDecoder:
    """Raw sample → {"image", "labels"} (WSP): labels are vocabulary indices, variable length."""

    def __init__(self, augment: AugmentConfig, num_classes: int) -> None:
        self.augment = RandomResizedCropFlip(augment)
        self.num_classes = num_classes

    def __call__(self, raw: Mapping[str, Any], seed: int) -> dict[str, torch.Tensor]:
        labels = parse_labels(raw, self.num_classes)
        return {"image": self.augment(image_member(raw), seed), "labels": labels}


@functools.cache
def _normalization(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Made once per device: a fresh host-to-device copy every step would stall the GPU queue.
    mean = torch.tensor(IMAGE_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, device=device).view(1, 3, 1, 1)
    return mean, std


def normalize_images(images: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
    """uint8 [B, 3, H, W] on any device → float32 scaled to [0, 1] and ImageNet-normalised."""
    x = images.float().div_(255.0)
    if normalize:
        mean, std = _normalization(x.device)
        x = x.sub_(mean).div_(std)
    return x


# --------------------------------------------------------------------------------------------
# The loader

SampleDecoder = Callable[[Mapping[str, Any], int], dict[str, Any]]

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
        raise ValueError(f"batch size per rank must be positive, got {batch_size}")
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
