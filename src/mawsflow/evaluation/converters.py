"""Converters from common dataset layouts to evaluation shards (`mawsflow prepare-eval`).

- **ImageFolder**: `<root>/<split>/<class>/<image>` with split folders named train/val/test,
  or `<root>/<class>/<image>` as one split. Classes are the sorted folder names (torchvision's
  rule), taken over every split so that a label means the same class in each.
- **Food-101**: `<root>/meta/{classes,labels,train,test}.txt` and `<root>/images/<class>/<id>.jpg`;
  class names are the readable ones of `labels.txt` ("Apple pie").
- **Fashion-MNIST**: the four IDX files (`train-images-idx3-ubyte[.gz]`, `t10k-…`), written as
  PNGs; `t10k` becomes the test split.

Sources are local folders or `s3://` prefixes (read through mawsflow.storage). Sample order is
shuffled with a fixed seed before writing, so that class-sorted sources do not give class-sorted
shards (the training loader shuffles within a buffer, not across the whole split), and a rerun
writes the same shards.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mawsflow import storage
from mawsflow.data.eval_shards import SPLITS, SplitWriter, write_classes
from mawsflow.data.fashion_mnist import CLASSES, SPLIT_PREFIX, load_fashion_mnist
from mawsflow.data.members import IMAGE_EXTENSIONS
from mawsflow.log import progress

log = logging.getLogger(__name__)

# Formats a pipeline step may hold as-is, and formats PIL reads that are re-encoded as PNG.
_KEPT = set(IMAGE_EXTENSIONS)
_REENCODED = {"bmp", "gif", "tif", "tiff", "ppm", "pgm"}


@dataclass(frozen=True)
class SourceSample:
    """One image to convert: how to get its bytes and extension, and its label(s)."""

    name: str  # the source file's name (or index), which orders ReaL labels
    load: Callable[[], tuple[bytes, str]]
    label: int
    real_labels: tuple[int, ...] | None = None


def _extension(uri: str) -> str:
    return uri.rsplit(".", 1)[-1].lower() if "." in uri.rsplit("/", 1)[-1] else ""


def _load_image(uri: str) -> Callable[[], tuple[bytes, str]]:
    def load() -> tuple[bytes, str]:
        ext = _extension(uri)
        data = storage.read_bytes(uri)
        if ext in _KEPT:
            return data, ext
        out = io.BytesIO()
        Image.open(io.BytesIO(data)).save(out, format="PNG")
        return out.getvalue(), "png"

    return load


def write_splits(
    out: str,
    classes: Sequence[str],
    splits: dict[str, list[SourceSample]],
    *,
    samples_per_shard: int,
    seed: int = 0,
    limit: int | None = None,
) -> dict[str, int]:
    """Write `classes.json` and each split (shuffled, optionally cut to `limit`); returns the
    number of samples per split."""
    if not splits:
        raise ValueError("no splits to write")
    write_classes(out, classes)
    counts = {}
    for split, samples in splits.items():
        if not samples:
            raise ValueError(f"split {split!r} has no images")
        order = np.random.default_rng(seed).permutation(len(samples))
        if limit is not None:
            order = order[:limit]
        writer = SplitWriter(out, split, len(classes), samples_per_shard=samples_per_shard)
        for index in progress(order, desc=f"writing {split}", total=len(order), unit="img"):
            sample = samples[int(index)]
            data, ext = sample.load()
            writer.write(f"{split}-{int(index):08d}", data, ext, sample.label, sample.real_labels)
        counts[split] = writer.close()["num_samples"]
    return counts


# --------------------------------------------------------------------------------------------
# ImageFolder


def _relative_parts(root: str, uri: str) -> list[str]:
    return uri[len(root.rstrip("/")) + 1 :].split("/")


def imagefolder_samples(
    root: str, *, split: str | None = None
) -> tuple[list[str], dict[str, list[SourceSample]]]:
    """Classes and samples of an ImageFolder tree.

    With split folders (train/val/test) at the top, each is a split; otherwise the tree is one
    split, named by `split` (default `test`).
    """
    files = storage.list_uris(root.rstrip("/") + "/")
    if not files:
        raise ValueError(f"{root}: no files (expected <class>/<image> or <split>/<class>/<image>)")
    top = {_relative_parts(root, f)[0] for f in files}
    has_splits = top <= set(SPLITS) and all(len(_relative_parts(root, f)) == 3 for f in files)
    by_split: dict[str, list[tuple[str, str]]] = {}
    skipped = 0
    for uri in files:
        parts = _relative_parts(root, uri)
        if has_splits:
            name, parts = parts[0], parts[1:]
        else:
            name = split or "test"
        if len(parts) != 2:
            raise ValueError(f"{uri}: expected <class>/<image> below {root}")
        if _extension(uri) not in _KEPT | _REENCODED:
            skipped += 1
            continue
        by_split.setdefault(name, []).append((parts[0], uri))
    if skipped:
        log.warning("%s: skipped %d files that are not images", root, skipped)
    if not by_split:
        raise ValueError(f"{root}: no images with extensions {sorted(_KEPT | _REENCODED)}")
    classes = sorted({cls for pairs in by_split.values() for cls, _ in pairs})
    index = {name: i for i, name in enumerate(classes)}
    splits = {
        name: [
            SourceSample(uri.rsplit("/", 1)[-1], _load_image(uri), index[cls]) for cls, uri in pairs
        ]
        for name, pairs in sorted(by_split.items())
    }
    return classes, splits


def attach_real_labels(
    samples: list[SourceSample], real: Sequence[Sequence[int]]
) -> list[SourceSample]:
    """The split with ReaL-style labels: `real[i]` belongs to the i-th image in file-name
    order (ReaL's `real.json` lists the ImageNet validation images that way)."""
    if len(real) != len(samples):
        raise ValueError(f"ReaL labels list {len(real)} images but the split has {len(samples)}")
    by_name = sorted(range(len(samples)), key=lambda i: samples[i].name)
    out = list(samples)
    for position, labels in enumerate(real):
        if not isinstance(labels, list | tuple) or not all(isinstance(c, int) for c in labels):
            raise ValueError(f"ReaL labels entry {position} must be a list of class indices")
        sample = samples[by_name[position]]
        out[by_name[position]] = SourceSample(sample.name, sample.load, sample.label, tuple(labels))
    return out


# --------------------------------------------------------------------------------------------
# Food-101


def _lines(uri: str) -> list[str]:
    return [line.strip() for line in storage.read_text(uri).splitlines() if line.strip()]


def food101_samples(root: str) -> tuple[list[str], dict[str, list[SourceSample]]]:
    """Classes (readable names) and the train/test samples of a Food-101 tree."""
    meta = storage.join(root, "meta")
    try:
        folders = _lines(storage.join(meta, "classes.txt"))
    except storage.NotFoundError:
        raise ValueError(f"{root}: no meta/classes.txt; is this the Food-101 layout?") from None
    labels_uri = storage.join(meta, "labels.txt")
    names = (
        _lines(labels_uri) if storage.exists(labels_uri) else [f.replace("_", " ") for f in folders]
    )
    if len(names) != len(folders):
        raise ValueError(f"{labels_uri}: {len(names)} names for {len(folders)} classes")
    index = {folder: i for i, folder in enumerate(folders)}
    splits = {}
    for split in ("train", "test"):
        listing = storage.join(meta, f"{split}.txt")
        if not storage.exists(listing):
            continue
        samples = []
        for entry in _lines(listing):
            folder = entry.split("/", 1)[0]
            if folder not in index:
                raise ValueError(f"{listing}: {entry!r} names unknown class {folder!r}")
            uri = storage.join(root, "images", f"{entry}.jpg")
            samples.append(SourceSample(entry, _load_image(uri), index[folder]))
        splits[split] = samples
    if not splits:
        raise ValueError(f"{root}: neither meta/train.txt nor meta/test.txt exists")
    return names, splits


# --------------------------------------------------------------------------------------------
# Fashion-MNIST


def _png(pixels: np.ndarray) -> Callable[[], tuple[bytes, str]]:
    def load() -> tuple[bytes, str]:
        out = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(out, format="PNG")
        return out.getvalue(), "png"

    return load


def fashion_mnist_samples(root: str) -> tuple[list[str], dict[str, list[SourceSample]]]:
    """The Fashion-MNIST class names and its train (60k) and test (10k) samples."""
    splits = {}
    for split, prefix in SPLIT_PREFIX.items():
        images, labels = load_fashion_mnist(root, split)
        splits[split] = [
            SourceSample(f"{prefix}-{i:05d}", _png(pixels), label)
            for i, (pixels, label) in enumerate(zip(images, labels.tolist(), strict=True))
        ]
    return list(CLASSES), splits
