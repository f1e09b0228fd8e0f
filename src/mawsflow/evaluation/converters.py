"""Converters from common dataset layouts to evaluation shards (`mawsflow prepare-eval`).

- **ImageFolder**: `<root>/<split>/<class>/<image>` with split folders named train/val/test,
  or `<root>/<class>/<image>` as one split. Classes are the sorted folder names (torchvision's
  rule), taken over every split so that a label means the same class in each.
- **Food-101**: `<root>/meta/{classes,labels,train,test}.txt` and `<root>/images/<class>/<id>.jpg`;
  class names are the readable ones of `labels.txt` ("Apple pie").
- **Fashion-MNIST**: the four IDX files (`train-images-idx3-ubyte[.gz]`, `t10k-…`), written as
  PNGs; `t10k` becomes the test split.
- **iNat18**: iNaturalist 2018's COCO-style annotation files `train2018.json` / `val2018.json`
  (`images` with `id` and `file_name` relative to the root, `annotations` with `image_id` and
  `category_id`, `categories` with `id` and `name`) and the images they name. Labels are the
  category ids in ascending order, renumbered 0..C-1 (iNat18's ids already run 0..8141, so
  there the label is the id); an optional `categories.json` beside them (the un-obfuscated
  names released after the competition) replaces the class names.

Images that are missing or do not decode are skipped and counted (`write_splits` logs the
count per split), never fatal: one bad file among 437k must not stop a conversion.

Sources are local folders or `s3://` prefixes (read through mawsflow.storage). Sample order is
shuffled with a fixed seed before writing, so that class-sorted sources do not give class-sorted
shards (the training loader shuffles within a buffer, not across the whole split), and a rerun
writes the same shards.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mawsflow import storage
from mawsflow.data.eval_shards import SPLITS, SplitWriter, write_classes
from mawsflow.data.fashion_mnist import CLASSES, SPLIT_PREFIX, load_fashion_mnist
from mawsflow.data.members import IMAGE_EXTENSIONS
from mawsflow.errors import DataFormatError
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


class UnreadableImage(Exception):
    """A source image that is missing or does not decode: the sample is skipped and counted."""


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
    number of samples written per split. Samples whose image is missing or unreadable
    (`UnreadableImage`, a missing file) are skipped and counted in the log."""
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
        skipped = 0
        for index in progress(order, desc=f"writing {split}", total=len(order), unit="img"):
            sample = samples[int(index)]
            try:
                data, ext = sample.load()
            except (UnreadableImage, storage.NotFoundError) as exc:
                skipped += 1
                log.warning("%s: skipped %s (%s)", split, sample.name, exc)
                continue
            writer.write(f"{split}-{int(index):08d}", data, ext, sample.label, sample.real_labels)
        if skipped:
            log.warning(
                "%s: skipped %d of %d images (missing or unreadable)", split, skipped, len(order)
            )
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


# --------------------------------------------------------------------------------------------
# iNaturalist 2018

INAT18_SPLITS = {"train": "train2018.json", "val": "val2018.json"}


def _load_verified_image(uri: str) -> Callable[[], tuple[bytes, str]]:
    """As `_load_image`, but the bytes are decoded first: a truncated or garbled file (or a
    missing one) is an `UnreadableImage`, which `write_splits` skips and counts."""
    plain = _load_image(uri)

    def load() -> tuple[bytes, str]:
        try:
            data, ext = plain()
            with Image.open(io.BytesIO(data)) as image:
                image.load()
        except storage.NotFoundError:
            raise UnreadableImage(f"{uri}: no such file") from None
        except Exception as exc:  # Pillow signals bad data with many exception types
            raise UnreadableImage(f"{uri}: {type(exc).__name__}: {exc}") from None
        return data, ext

    return load


def _read_annotation_file(uri: str) -> dict:
    try:
        text = storage.read_text(uri)
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{uri}: not UTF-8 text ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{uri}: malformed JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataFormatError(f"{uri}: expected a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataFormatError(f"{uri}: '{key}' must be a list (COCO-style iNat annotations)")
    return data


def _entries(uri: str, items: list, key: str, fields: dict[str, type]) -> list[dict]:
    """Check that every `items` entry is an object with `fields` of the given types."""
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataFormatError(f"{uri}: {key}[{position}] is not an object")
        for name, kind in fields.items():
            value = item.get(name)
            if isinstance(value, bool) or not isinstance(value, kind):
                raise DataFormatError(
                    f"{uri}: {key}[{position}].{name} must be {kind.__name__}, got {value!r}"
                )
    return items


def _inat_categories(uri: str, items: list) -> dict[int, str]:
    categories: dict[int, str] = {}
    for category in _entries(uri, items, "categories", {"id": int, "name": str}):
        if categories.get(category["id"], category["name"]) != category["name"]:
            raise DataFormatError(f"{uri}: category {category['id']} is listed with two names")
        categories[category["id"]] = category["name"]
    return categories


def inat18_samples(root: str) -> tuple[list[str], dict[str, list[SourceSample]]]:
    """Class names and the train/val samples of an iNaturalist 2018 tree (see the module
    docstring); the category ids, sorted, become labels 0..C-1."""
    files = {
        split: storage.join(root, name)
        for split, name in INAT18_SPLITS.items()
        if storage.exists(storage.join(root, name))
    }
    if not files:
        raise DataFormatError(
            f"{root}: neither {' nor '.join(INAT18_SPLITS.values())} exists; is this the "
            "iNaturalist 2018 layout?"
        )
    annotations = {split: _read_annotation_file(uri) for split, uri in files.items()}
    categories: dict[int, str] = {}
    for split, data in annotations.items():
        for cid, name in _inat_categories(files[split], data["categories"]).items():
            if categories.get(cid, name) != name:
                raise DataFormatError(
                    f"{files[split]}: category {cid} is named {name!r}, another file names it "
                    f"{categories[cid]!r}"
                )
            categories[cid] = name
    names_uri = storage.join(root, "categories.json")
    if storage.exists(names_uri):
        try:
            released = json.loads(storage.read_text(names_uri))
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{names_uri}: malformed JSON ({exc})") from None
        if not isinstance(released, list):
            raise DataFormatError(f"{names_uri}: expected a JSON list of categories")
        for cid, name in _inat_categories(names_uri, released).items():
            if cid in categories:
                categories[cid] = name
    if not categories:
        raise DataFormatError(f"{root}: the annotation files list no categories")
    ids = sorted(categories)
    label_of = {cid: label for label, cid in enumerate(ids)}
    splits: dict[str, list[SourceSample]] = {}
    for split, data in annotations.items():
        uri = files[split]
        images = {
            image["id"]: image["file_name"]
            for image in _entries(uri, data["images"], "images", {"id": int, "file_name": str})
        }
        fields = {"image_id": int, "category_id": int}
        category_of: dict[int, int] = {}
        for position, ann in enumerate(_entries(uri, data["annotations"], "annotations", fields)):
            image_id, cid = ann["image_id"], ann["category_id"]
            if image_id not in images:
                raise DataFormatError(
                    f"{uri}: annotations[{position}] names unknown image {image_id}"
                )
            if cid not in label_of:
                raise DataFormatError(
                    f"{uri}: annotations[{position}] names unknown category {cid}"
                )
            if category_of.get(image_id, cid) != cid:
                raise DataFormatError(f"{uri}: image {image_id} is annotated with two categories")
            category_of[image_id] = cid
        unlabelled = len(images) - len(category_of)
        if unlabelled:
            log.warning("%s: %d images have no annotation and are left out", uri, unlabelled)
        if not category_of:
            raise DataFormatError(f"{uri}: no annotated images")
        splits[split] = [
            SourceSample(
                images[image_id],
                _load_verified_image(storage.join(root, images[image_id])),
                label_of[cid],
            )
            for image_id, cid in sorted(category_of.items())
        ]
    return [categories[cid] for cid in ids], splits
