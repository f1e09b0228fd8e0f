"""Evaluation datasets (docs/data-formats.md): the classification-shard format, read and written.

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

This module imports no torch: prepare-eval, the demo corpus and the pipeline's dataset check
run in the CPU-only image. Decoding images into tensors is `mawsflow.data.eval_loader`'s.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import webdataset as wds

from mawsflow import storage
from mawsflow.data.manifest import PretrainManifest, shard_sizes
from mawsflow.data.members import IMAGE_EXTENSIONS
from mawsflow.data.shards import count_samples, samples_in_order
from mawsflow.errors import DataFormatError

log = logging.getLogger(__name__)

FORMAT = "mawsflow.classification/1"
SPLITS = ("train", "val", "test")
DEFAULT_SAMPLES_PER_SHARD = 1000


@dataclass(frozen=True)
class LabelSubset:
    """A test set whose labels map onto the model's classes (`class_map.json`).

    `targets[i]` lists the model classes that test label `i` stands for.
    """

    num_model_classes: int
    targets: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if self.num_model_classes <= 0:
            raise DataFormatError(
                f"class map: model_classes must be positive, got {self.num_model_classes}"
            )
        for label, accepted in enumerate(self.targets):
            if not accepted:
                raise DataFormatError(f"class map: test label {label} maps to no model class")
            bad = [c for c in accepted if not 0 <= c < self.num_model_classes]
            if bad:
                raise DataFormatError(
                    f"class map: test label {label} maps to {bad}, outside the model's "
                    f"{self.num_model_classes} classes"
                )

    @property
    def num_test_classes(self) -> int:
        return len(self.targets)


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
        raise DataFormatError(
            f"{dataset}: no classes.json; is this an evaluation dataset?"
        ) from None
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise DataFormatError(f"{uri}: must be a non-empty JSON list of class names")
    return classes


def parse_label_subset(data: Any, *, source: str) -> LabelSubset:
    """A class map: {"model_classes": M, "targets": [[model classes of test label 0], …]}."""
    if not isinstance(data, dict) or "model_classes" not in data or "targets" not in data:
        raise DataFormatError(f"{source}: expected {{'model_classes': M, 'targets': [[…], …]}}")
    targets = data["targets"]
    if not isinstance(targets, list) or not all(
        isinstance(t, list) and all(isinstance(c, int) for c in t) for t in targets
    ):
        raise DataFormatError(f"{source}: targets must be a list of lists of model class indices")
    try:
        return LabelSubset(int(data["model_classes"]), tuple(tuple(t) for t in targets))
    except ValueError as exc:
        raise DataFormatError(f"{source}: {exc}") from None


def read_label_subset(dataset: str) -> LabelSubset | None:
    """The dataset's `class_map.json`, or None for a test set in the model's own classes."""
    uri = storage.join(dataset, "class_map.json")
    if not storage.exists(uri):
        return None
    return parse_label_subset(storage.read_json(uri), source=uri)


def open_split(dataset: str, split: str, *, format: str = FORMAT) -> EvalSplit:
    """Read and check one split of an evaluation dataset (of another shard format, such as
    `mawsflow.data.video_shards`, with the same layout)."""
    if not dataset:
        raise DataFormatError("no evaluation dataset given")
    dataset = dataset.rstrip("/")
    classes = read_classes(dataset)
    uri = storage.join(dataset, split, "manifest.json")
    try:
        manifest = storage.read_json(uri)
    except storage.NotFoundError:
        raise DataFormatError(f"{dataset} has no {split!r} split ({uri} is missing)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != format:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise DataFormatError(f"{uri}: format must be {format!r}, got {found!r}")
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not shards or not all(isinstance(s, str) for s in shards):
        raise DataFormatError(f"{uri}: shards must be a non-empty list of file names")
    num_samples = manifest.get("num_samples")
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise DataFormatError(f"{uri}: num_samples must be a positive integer, got {num_samples!r}")
    if manifest.get("num_classes") != len(classes):
        raise DataFormatError(
            f"{uri}: num_classes {manifest.get('num_classes')} differs from the "
            f"{len(classes)} names in classes.json"
        )
    shard_uris = tuple(storage.join(dataset, split, s) for s in shards)
    per_shard = manifest.get("samples_per_shard")
    if isinstance(per_shard, int) and per_shard > 0:
        sizes = shard_sizes(num_samples, per_shard, len(shards), source=uri)
    else:
        log.info("%s lists no samples_per_shard: counting the samples of each shard", uri)
        sizes = tuple(count_samples(s) for s in shard_uris)
        if sum(sizes) != num_samples:
            raise DataFormatError(
                f"{uri}: num_samples {num_samples} but the shards hold {sum(sizes)}"
            )
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
    """The sample's `.cls` member: its class index."""
    if "cls" not in raw:
        raise DataFormatError(f"sample {raw.get('__key__', '?')} has no .cls label")
    label = int(raw["cls"].decode("ascii").strip())
    if not 0 <= label < num_classes:
        raise DataFormatError(
            f"sample {raw.get('__key__', '?')}: label {label} outside {num_classes}"
        )
    return label


def parse_real_labels(raw: Mapping[str, Any], num_classes: int) -> list[int]:
    """The sample's ReaL-style correct labels (`.labels.json`; none when it has no such member)."""
    if "labels.json" not in raw:
        return []
    labels = json.loads(raw["labels.json"])
    if not isinstance(labels, list) or not all(
        isinstance(c, int) and 0 <= c < num_classes for c in labels
    ):
        raise DataFormatError(
            f"sample {raw.get('__key__', '?')}: labels.json must list label indices "
            f"below {num_classes}, got {labels!r}"
        )
    return labels


def scan_labels(split: EvalSplit) -> tuple[list[str], np.ndarray]:
    """Every sample's key and label, without decoding images (to draw low-shot splits)."""
    keys, labels = [], []
    for raw in samples_in_order(split.shards):
        keys.append(raw["__key__"])
        labels.append(parse_label(raw, split.num_classes))
    if len(keys) != split.num_samples:
        raise DataFormatError(
            f"{split.dataset}/{split.split}: the manifest says {split.num_samples} samples, "
            f"the shards hold {len(keys)}"
        )
    return keys, np.asarray(labels, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Writing


def write_classes(dataset: str, classes: Sequence[str]) -> None:
    if not classes or len(set(classes)) != len(classes):
        raise DataFormatError("class names must be a non-empty list without duplicates")
    storage.write_json(storage.join(dataset, "classes.json"), list(classes))


def write_label_subset(dataset: str, subset: LabelSubset) -> None:
    storage.write_json(
        storage.join(dataset, "class_map.json"),
        {"model_classes": subset.num_model_classes, "targets": [list(t) for t in subset.targets]},
    )


class ShardSplitWriter:
    """Writes one split's shards and, on `close()`, its manifest (last, so a split with a
    manifest is complete). Subclasses build the samples (`SplitWriter` images,
    `mawsflow.data.video_shards.VideoSplitWriter` videos) and name the manifest's `format`.

    Each shard is written through `storage.open_write`, so a shard appears whole or not at all,
    locally and on S3.
    """

    format: str = FORMAT
    default_samples_per_shard = DEFAULT_SAMPLES_PER_SHARD
    # Characters a key must not hold: webdataset splits member names on the first '.'.
    forbidden_key_chars = "."

    def __init__(
        self,
        dataset: str,
        split: str,
        num_classes: int,
        *,
        samples_per_shard: int | None = None,
    ) -> None:
        if samples_per_shard is None:
            samples_per_shard = self.default_samples_per_shard
        if split not in SPLITS:
            raise DataFormatError(f"split must be one of {SPLITS}, got {split!r}")
        if samples_per_shard < 1:
            raise DataFormatError(f"samples_per_shard must be positive, got {samples_per_shard}")
        self.dataset = dataset.rstrip("/")
        self.split = split
        self.num_classes = num_classes
        self.samples_per_shard = samples_per_shard
        self.shards: list[str] = []
        self.num_samples = 0
        self._pending: list[dict[str, Any]] = []

    def _check(self, key: str, label: int) -> None:
        if not 0 <= label < self.num_classes:
            raise DataFormatError(f"sample {key}: label {label} outside {self.num_classes} classes")
        if any(c in key for c in self.forbidden_key_chars):
            raise DataFormatError(
                f"sample key {key!r} must not contain "
                f"{' or '.join(repr(c) for c in self.forbidden_key_chars)} "
                "(webdataset splits on it)"
            )

    def _add(self, sample: dict[str, Any]) -> None:
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
            raise DataFormatError(f"split {self.split!r} of {self.dataset} received no samples")
        manifest = {
            "format": self.format,
            "shards": self.shards,
            "num_samples": self.num_samples,
            "num_classes": self.num_classes,
            "samples_per_shard": self.samples_per_shard,
        }
        storage.write_json(storage.join(self.dataset, self.split, "manifest.json"), manifest)
        return manifest


class SplitWriter(ShardSplitWriter):
    """Writes a split of images (`<key>.<ext>`, `<key>.cls`, optional `<key>.labels.json`)."""

    def write(
        self,
        key: str,
        image: bytes,
        ext: str,
        label: int,
        real_labels: Sequence[int] | None = None,
    ) -> None:
        if ext not in IMAGE_EXTENSIONS:
            raise DataFormatError(
                f"sample {key}: image extension {ext!r} not in {IMAGE_EXTENSIONS}"
            )
        self._check(key, label)
        sample: dict[str, Any] = {"__key__": key, ext: image, "cls": str(label).encode("ascii")}
        if real_labels is not None:
            bad = [c for c in real_labels if not 0 <= c < self.num_classes]
            if bad:
                raise DataFormatError(f"sample {key}: ReaL labels {bad} outside {self.num_classes}")
            sample["labels.json"] = json.dumps(sorted(set(real_labels))).encode()
        self._add(sample)
