"""Evaluation datasets (docs/data-formats.md): reading and writing classification shards.

```
<eval>/classes.json               class names, index = label
<eval>/class_map.json             optional: test labels → model classes (label-subset sets)
<eval>/<split>/manifest.json      {"format": "mawsflow.classification/1", "shards": [...],
                                   "num_samples": N, "num_classes": C, "samples_per_shard": S}
<eval>/<split>/shard-NNNNNN.tar   <key>.<ext> image, <key>.cls label,
                                  optional <key>.labels.json (ReaL-style correct labels)
```

A split is complete once its manifest exists: the writer puts it last. Splits read by the
training steps (finetuning, VPT) need `samples_per_shard`, which lets the engine's streams
know every shard's size; a manifest without it (written by another tool) has its shards
counted once on reading.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.tariterators import group_by_keys, tar_file_expander

from mawsflow import storage
from mawsflow.engine.data import IMAGE_EXTENSIONS, PretrainManifest, image_member
from mawsflow.evaluation.classification_metrics import LabelSubset

log = logging.getLogger(__name__)

FORMAT = "mawsflow.classification/1"
SPLITS = ("train", "val", "test")
DEFAULT_SAMPLES_PER_SHARD = 1000
# How an evaluation image becomes img_size × img_size. None: resize it straight to that size
# (both sides, aspect ratio not kept), as the maws evaluation of finetuned models does
# (`eval_finetuned.py`, without `--no_rescale`). A fraction f: resize the short side to
# img_size / f and centre-crop; timm's 0.875 (224 of 256) is the common choice, and the maws
# zero-shot evaluation (`eval_zeroshot.py`) resizes the short side to the size and crops, f = 1.
DEFAULT_CROP_PCT: float | None = None
ZEROSHOT_CROP_PCT: float | None = 1.0


# --------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class EvalSplit:
    dataset: str
    split: str
    classes: tuple[str, ...]
    shards: tuple[str, ...]  # absolute URIs
    shard_sizes: tuple[int, ...]
    num_samples: int
    label_subset: LabelSubset | None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def as_training_manifest(self) -> PretrainManifest:
        """The split as the engine's stream input (finetuning and VPT read it that way)."""
        return PretrainManifest(
            uri=storage.join(self.dataset, self.split, "manifest.json"),
            shards=self.shards,
            shard_sizes=self.shard_sizes,
            num_samples=self.num_samples,
            num_classes=self.num_classes,
            vocab=None,
        )


def read_classes(dataset: str) -> list[str]:
    uri = storage.join(dataset, "classes.json")
    try:
        classes = storage.read_json(uri)
    except storage.NotFoundError:
        raise ValueError(f"{dataset}: no classes.json; is this an evaluation dataset?") from None
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"{uri}: must be a non-empty JSON list of class names")
    return classes


def parse_label_subset(data: Any, *, source: str) -> LabelSubset:
    """A class map: {"model_classes": M, "targets": [[model classes of test label 0], …]}."""
    if not isinstance(data, dict) or "model_classes" not in data or "targets" not in data:
        raise ValueError(f"{source}: expected {{'model_classes': M, 'targets': [[…], …]}}")
    targets = data["targets"]
    if not isinstance(targets, list) or not all(
        isinstance(t, list) and all(isinstance(c, int) for c in t) for t in targets
    ):
        raise ValueError(f"{source}: targets must be a list of lists of model class indices")
    try:
        return LabelSubset(int(data["model_classes"]), tuple(tuple(t) for t in targets))
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None


def read_label_subset(dataset: str) -> LabelSubset | None:
    """The dataset's `class_map.json`, or None for a test set in the model's own classes."""
    uri = storage.join(dataset, "class_map.json")
    if not storage.exists(uri):
        return None
    return parse_label_subset(storage.read_json(uri), source=uri)


def _count_samples(shard: str) -> int:
    with storage.open_read(shard) as stream:
        files = tar_file_expander([{"url": shard, "stream": stream}])
        return sum(1 for _ in group_by_keys(files))


def open_split(dataset: str, split: str) -> EvalSplit:
    """Read and check one split of an evaluation dataset."""
    if not dataset:
        raise ValueError("no evaluation dataset given")
    dataset = dataset.rstrip("/")
    classes = read_classes(dataset)
    uri = storage.join(dataset, split, "manifest.json")
    try:
        manifest = storage.read_json(uri)
    except storage.NotFoundError:
        raise ValueError(f"{dataset} has no {split!r} split ({uri} is missing)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ValueError(f"{uri}: format must be {FORMAT!r}, got {found!r}")
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not shards:
        raise ValueError(f"{uri}: shards must be a non-empty list")
    num_samples = manifest.get("num_samples")
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"{uri}: num_samples must be a positive integer, got {num_samples!r}")
    if manifest.get("num_classes") != len(classes):
        raise ValueError(
            f"{uri}: num_classes {manifest.get('num_classes')} differs from the "
            f"{len(classes)} names in classes.json"
        )
    shard_uris = tuple(storage.join(dataset, split, s) for s in shards)
    per_shard = manifest.get("samples_per_shard")
    if isinstance(per_shard, int) and per_shard > 0:
        last = num_samples - per_shard * (len(shards) - 1)
        if not 0 < last <= per_shard:
            raise ValueError(
                f"{uri}: {num_samples} samples do not fit {len(shards)} shards of {per_shard}"
            )
        sizes = (per_shard,) * (len(shards) - 1) + (last,)
    else:
        log.info("%s lists no samples_per_shard: counting the samples of each shard", uri)
        sizes = tuple(_count_samples(s) for s in shard_uris)
        if sum(sizes) != num_samples:
            raise ValueError(f"{uri}: num_samples {num_samples} but the shards hold {sum(sizes)}")
    return EvalSplit(
        dataset=dataset,
        split=split,
        classes=tuple(classes),
        shards=shard_uris,
        shard_sizes=sizes,
        num_samples=num_samples,
        label_subset=read_label_subset(dataset),
    )


def parse_label(raw: Mapping[str, Any], num_classes: int) -> int:
    if "cls" not in raw:
        raise ValueError(f"sample {raw.get('__key__', '?')} has no .cls label")
    label = int(raw["cls"].decode("ascii").strip())
    if not 0 <= label < num_classes:
        raise ValueError(f"sample {raw.get('__key__', '?')}: label {label} outside {num_classes}")
    return label


def parse_real_labels(raw: Mapping[str, Any], num_classes: int) -> torch.Tensor:
    """[C] bool: the sample's ReaL-style correct labels (all False when it has none)."""
    out = torch.zeros(num_classes, dtype=torch.bool)
    if "labels.json" in raw:
        labels = json.loads(raw["labels.json"])
        if not isinstance(labels, list) or not all(
            isinstance(c, int) and 0 <= c < num_classes for c in labels
        ):
            raise ValueError(
                f"sample {raw.get('__key__', '?')}: labels.json must list label indices "
                f"below {num_classes}, got {labels!r}"
            )
        out[labels] = True
    return out


def parse_crop_pct(value: str) -> float | None:
    """A `--crop-pct` value: `none` (resize straight to the size) or a fraction in (0, 1]."""
    if value.strip().lower() == "none":
        return None
    try:
        crop_pct = float(value)
    except ValueError:
        raise ValueError(f"crop_pct must be 'none' or a number in (0, 1], got {value!r}") from None
    check_crop_pct(crop_pct)
    return crop_pct


def check_crop_pct(crop_pct: float | None) -> None:
    if crop_pct is not None and not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1] or None, got {crop_pct}")


def eval_image(data: bytes, img_size: int, crop_pct: float | None) -> torch.Tensor:
    """Evaluation view of an encoded image as RGB uint8 [3, img_size, img_size] (normalised
    later, on the device): resized straight to img_size × img_size when `crop_pct` is None,
    else its short side resized to img_size / crop_pct and the centre cropped. Bicubic, as
    both maws evaluation scripts."""
    check_crop_pct(crop_pct)
    img = Image.open(io.BytesIO(data)).convert("RGB")
    if crop_pct is None:
        img = img.resize((img_size, img_size), Image.Resampling.BICUBIC)
    else:
        scale_to = round(img_size / crop_pct)
        width, height = img.size
        factor = scale_to / min(width, height)
        new_w = max(scale_to, round(width * factor))
        new_h = max(scale_to, round(height * factor))
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
        left, top = (new_w - img_size) // 2, (new_h - img_size) // 2
        img = img.crop((left, top, left + img_size, top + img_size))
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()


class EvalSamples(IterableDataset):
    """(image uint8 [3, H, W], label, ReaL multi-hot [C]) of a split, in shard order.

    Shards are dealt round-robin to (rank, worker) pairs, so every sample is read exactly once
    across a distributed job. `keys` keeps only the named samples (a low-shot split).
    """

    def __init__(
        self,
        split: EvalSplit,
        *,
        img_size: int,
        crop_pct: float | None = DEFAULT_CROP_PCT,
        rank: int = 0,
        world_size: int = 1,
        keys: frozenset[str] | None = None,
    ) -> None:
        check_crop_pct(crop_pct)
        self.split = split
        self.img_size = img_size
        self.crop_pct = crop_pct
        self.rank = rank
        self.world_size = world_size
        self.keys = keys

    def _my_shards(self) -> list[str]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        reader, readers = self.rank * workers + worker, self.world_size * workers
        return list(self.split.shards[reader::readers])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int, torch.Tensor]]:
        shards = self._my_shards()
        if not shards:
            return
        raw_samples = wds.WebDataset(
            shards, shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False
        )
        for raw in raw_samples:
            if self.keys is not None and raw["__key__"] not in self.keys:
                continue
            image = eval_image(image_member(raw), self.img_size, self.crop_pct)
            label = parse_label(raw, self.split.num_classes)
            yield image, label, parse_real_labels(raw, self.split.num_classes)


def eval_loader(
    split: EvalSplit,
    *,
    img_size: int,
    batch_size: int,
    num_workers: int,
    crop_pct: float | None = DEFAULT_CROP_PCT,
    rank: int = 0,
    world_size: int = 1,
    keys: frozenset[str] | None = None,
) -> DataLoader:
    """Batches of (images uint8 [B, 3, H, W], labels [B], ReaL multi-hot [B, C])."""
    dataset = EvalSamples(
        split, img_size=img_size, crop_pct=crop_pct, rank=rank, world_size=world_size, keys=keys
    )
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)


def scan_labels(split: EvalSplit) -> tuple[list[str], np.ndarray]:
    """Every sample's key and label, without decoding images (to draw low-shot splits)."""
    keys, labels = [], []
    for raw in wds.WebDataset(
        list(split.shards),
        shardshuffle=False,
        nodesplitter=None,
        workersplitter=None,
        empty_check=False,
    ):
        keys.append(raw["__key__"])
        labels.append(parse_label(raw, split.num_classes))
    if len(keys) != split.num_samples:
        raise ValueError(
            f"{split.dataset}/{split.split}: the manifest says {split.num_samples} samples, "
            f"the shards hold {len(keys)}"
        )
    return keys, np.asarray(labels, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Writing


def write_classes(dataset: str, classes: Sequence[str]) -> None:
    if not classes or len(set(classes)) != len(classes):
        raise ValueError("class names must be a non-empty list without duplicates")
    storage.write_json(storage.join(dataset, "classes.json"), list(classes))


def write_label_subset(dataset: str, subset: LabelSubset) -> None:
    storage.write_json(
        storage.join(dataset, "class_map.json"),
        {"model_classes": subset.num_model_classes, "targets": [list(t) for t in subset.targets]},
    )


class SplitWriter:
    """Writes one split's shards and, on `close()`, its manifest.

    Each shard is written through `storage.open_write`, so a shard appears whole or not at all,
    locally and on S3.
    """

    def __init__(
        self,
        dataset: str,
        split: str,
        num_classes: int,
        *,
        samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if samples_per_shard < 1:
            raise ValueError(f"samples_per_shard must be positive, got {samples_per_shard}")
        self.dataset = dataset.rstrip("/")
        self.split = split
        self.num_classes = num_classes
        self.samples_per_shard = samples_per_shard
        self.shards: list[str] = []
        self.num_samples = 0
        self._pending: list[dict[str, Any]] = []

    def write(
        self,
        key: str,
        image: bytes,
        ext: str,
        label: int,
        real_labels: Sequence[int] | None = None,
    ) -> None:
        if ext not in IMAGE_EXTENSIONS:
            raise ValueError(f"sample {key}: image extension {ext!r} not in {IMAGE_EXTENSIONS}")
        if not 0 <= label < self.num_classes:
            raise ValueError(f"sample {key}: label {label} outside {self.num_classes} classes")
        if "." in key:
            raise ValueError(f"sample key {key!r} must not contain '.' (webdataset splits on it)")
        sample: dict[str, Any] = {"__key__": key, ext: image, "cls": str(label).encode("ascii")}
        if real_labels is not None:
            bad = [c for c in real_labels if not 0 <= c < self.num_classes]
            if bad:
                raise ValueError(f"sample {key}: ReaL labels {bad} outside {self.num_classes}")
            sample["labels.json"] = json.dumps(sorted(set(real_labels))).encode()
        self._pending.append(sample)
        if len(self._pending) == self.samples_per_shard:
            self._flush()

    def _flush(self) -> None:
        name = f"shard-{len(self.shards):06d}.tar"
        with storage.open_write(storage.join(self.dataset, self.split, name)) as stream:
            # A fixed mtime makes a rerun write identical bytes (steps are idempotent).
            # An integer mtime: tarfile stores a float one in an extra PAX header per member.
            writer = wds.TarWriter(stream, mtime=0)
            for sample in self._pending:
                writer.write(sample)
            writer.close()
        self.shards.append(name)
        self.num_samples += len(self._pending)
        self._pending = []

    def close(self) -> dict[str, Any]:
        """Write the last shard and the manifest; returns the manifest."""
        if self._pending:
            self._flush()
        if not self.num_samples:
            raise ValueError(f"split {self.split!r} of {self.dataset} received no samples")
        manifest = {
            "format": FORMAT,
            "shards": self.shards,
            "num_samples": self.num_samples,
            "num_classes": self.num_classes,
            "samples_per_shard": self.samples_per_shard,
        }
        storage.write_json(storage.join(self.dataset, self.split, "manifest.json"), manifest)
        return manifest
