"""COCO- and LVIS-format sources → detection shards (`mawsflow.data.detection_shards`).

The source layouts (docs/data-formats.md "Detection"):

- `coco`: `<source>/annotations/instances_<split>*.json` (COCO 2017's `instances_train2017.json`,
  `instances_val2017.json`) and each image at `<source>/<split>2017/<file_name>`,
  `<source>/images/<split>/<file_name>` or `<source>/<split>/<file_name>`, the first that exists;
- `lvis`: `<source>/lvis_v1_<split>.json` (or under `annotations/`); LVIS v1 names its images by
  `coco_url` only (its val images come from COCO's train2017 and val2017 both), so an image is
  `<source>/<the url's last two parts>` (`train2017/000000391895.jpg`, the COCO 2017 folders),
  or `<source>/<coco_url>` when the url is a relative path (the generated demo), or found by
  `file_name` as for COCO.

Categories become contiguous labels in the order of their ids in the train file (the val file
must have the same). A missing or undecodable image is skipped and counted; a malformed JSON
entry raises DataFormatError naming it. The val split's ground truth is the source file with
the skipped images and their annotations left out, otherwise as it came.
"""

from __future__ import annotations

import io
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from PIL import Image

from mawsflow import storage
from mawsflow.data.detection_shards import (
    GROUND_TRUTH_FILE,
    DetectionSplitWriter,
    write_detection_metadata,
)
from mawsflow.data.eval_shards import write_classes
from mawsflow.data.members import IMAGE_EXTENSIONS
from mawsflow.errors import DataFormatError

log = logging.getLogger(__name__)

DETECTION_LAYOUTS = ("coco", "lvis")
DETECTION_SPLITS = ("train", "val")
CONVERSION_FILE = "conversion.json"


def annotation_file(layout: str, source: str, split: str, files: Iterable[str]) -> str:
    """The source's annotation JSON of `split`, among the source's `files` (URIs)."""
    source = source.rstrip("/")
    found = []
    for uri in files:
        rel = uri[len(source) + 1 :]
        name = rel.rsplit("/", 1)[-1]
        folder = rel[: -len(name)].rstrip("/")
        if layout == "coco" and folder == "annotations" and name.startswith(f"instances_{split}"):
            found.append(uri)
        if layout == "lvis" and folder in ("", "annotations") and name == f"lvis_v1_{split}.json":
            found.append(uri)
    if len(found) != 1:
        wanted = (
            f"annotations/instances_{split}*.json"
            if layout == "coco"
            else f"lvis_v1_{split}.json (or annotations/lvis_v1_{split}.json)"
        )
        raise DataFormatError(
            f"{source}: expected one {wanted} for the {split} split, found {len(found) or 'none'}"
            + (f": {found}" if found else "")
        )
    return found[0]


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def check_annotations(data: Any, source: str, layout: str) -> None:
    """The fields the converter and the evaluators read; DataFormatError naming the entry."""
    if not isinstance(data, dict):
        raise DataFormatError(f"{source}: expected a JSON object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataFormatError(f"{source}: {key!r} must be a list")
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or not all(
            isinstance(image.get(k), int) for k in ("id", "width", "height")
        ):
            raise DataFormatError(f"{source}: images[{i}] needs integer id, width and height")
        if layout == "lvis":
            for k in ("neg_category_ids", "not_exhaustive_category_ids"):
                if not isinstance(image.get(k), list):
                    raise DataFormatError(f"{source}: images[{i}] (id {image['id']}) lacks {k}")
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or "name" not in cat:
            raise DataFormatError(f"{source}: categories[{i}] needs an integer id and a name")
    for i, ann in enumerate(data["annotations"]):
        where = f"{source}: annotations[{i}]"
        if not isinstance(ann, dict):
            raise DataFormatError(f"{where} is not an object")
        where += f" (id {ann.get('id')})"
        if not isinstance(ann.get("image_id"), int) or not isinstance(ann.get("category_id"), int):
            raise DataFormatError(f"{where}: needs integer image_id and category_id")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(map(_is_number, bbox)):
            raise DataFormatError(f"{where}: bbox must be 4 numbers [x, y, w, h], got {bbox!r}")
        if "segmentation" in ann and not isinstance(ann["segmentation"], list | dict):
            raise DataFormatError(f"{where}: segmentation must be polygons or an RLE")


def image_location(image: dict[str, Any], source: str, split: str, files: set[str]) -> str | None:
    """Where the source holds `image` (see the module doc), or None when it is not there."""
    candidates = []
    url = image.get("coco_url")
    if isinstance(url, str) and url:
        if "://" in url:
            candidates.append(storage.join(source, *url.rsplit("/", 2)[-2:]))
        else:
            candidates.append(storage.join(source, url))
    name = image.get("file_name")
    if isinstance(name, str) and name:
        for folder in (f"{split}2017", f"images/{split}", split, ""):
            candidates.append(
                storage.join(source, folder, name) if folder else storage.join(source, name)
            )
    return next((c for c in candidates if c in files), None)


def _decodable(data: bytes) -> str | None:
    """The image's extension for the shard, or None when PIL cannot read it."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = (img.format or "").lower()
            img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    ext = {"jpeg": "jpg", "mpo": "jpg"}.get(fmt, fmt)
    return ext if ext in IMAGE_EXTENSIONS else None


def convert_split(
    layout: str,
    data: dict[str, Any],
    *,
    source: str,
    split: str,
    files: set[str],
    output: str,
    labels: dict[int, int],
    samples_per_shard: int | None,
) -> dict[str, Any]:
    """Write one split's shards (and, for val, its ground truth); returns its counts."""
    per_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in data["annotations"]:
        per_image[ann["image_id"]].append(ann)
    writer = DetectionSplitWriter(output, split, len(labels), samples_per_shard=samples_per_shard)
    skipped: Counter[str] = Counter()
    kept: set[int] = set()
    for image in sorted(data["images"], key=lambda im: im["id"]):
        uri = image_location(image, source, split, files)
        if uri is None:
            skipped["missing"] += 1
            continue
        payload = storage.read_bytes(uri)
        ext = _decodable(payload)
        if ext is None:
            skipped["undecodable"] += 1
            log.warning("skipping undecodable image %s", uri)
            continue
        objects = []
        for ann in per_image.get(image["id"], []):
            if ann["category_id"] not in labels:
                raise DataFormatError(
                    f"{source}: annotation {ann.get('id')} has category {ann['category_id']}, "
                    "not among the categories"
                )
            objects.append(
                {
                    "bbox": ann["bbox"],
                    "label": labels[ann["category_id"]],
                    "segmentation": ann.get("segmentation"),
                    "iscrowd": int(ann.get("iscrowd", 0)),
                }
            )
        record: dict[str, Any] = {
            "image_id": image["id"],
            "height": image["height"],
            "width": image["width"],
            "objects": objects,
        }
        if layout == "lvis":
            record["neg_labels"] = [labels[c] for c in image["neg_category_ids"] if c in labels]
            record["not_exhaustive_labels"] = [
                labels[c] for c in image["not_exhaustive_category_ids"] if c in labels
            ]
        writer.write(f"{image['id']:012d}", payload, ext, record)
        kept.add(image["id"])
    if not kept:
        raise DataFormatError(
            f"{source}: no image of the {split} split could be read ({dict(skipped)})"
        )
    writer.close()
    if split == "val":
        ground_truth = dict(data)
        ground_truth["images"] = [im for im in data["images"] if im["id"] in kept]
        ground_truth["annotations"] = [a for a in data["annotations"] if a["image_id"] in kept]
        storage.write_json(storage.join(output, split, GROUND_TRUTH_FILE), ground_truth)
    counts = {"written": len(kept), "skipped": dict(skipped)}
    log.info("converted %s split", split, extra={"split": split, **counts})
    return counts


def prepare_detection_dataset(
    layout: str,
    source: str,
    output: str,
    *,
    samples_per_shard: int | None = None,
    name: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Convert a COCO or LVIS source into a detection dataset at `output`; returns (and writes
    to conversion.json) per split the images written and skipped by reason."""
    if layout not in DETECTION_LAYOUTS:
        raise DataFormatError(f"layout {layout!r} is not one of {DETECTION_LAYOUTS}")
    source = source.rstrip("/")
    files = set(storage.list_uris(source))
    annotations = {}
    for split in DETECTION_SPLITS:
        uri = annotation_file(layout, source, split, files)
        try:
            data = json.loads(storage.read_text(uri))
        except ValueError as exc:
            raise DataFormatError(f"{uri}: not valid JSON ({exc})") from None
        check_annotations(data, uri, layout)
        annotations[split] = data
    categories = sorted(annotations["train"]["categories"], key=lambda c: c["id"])
    val_ids = sorted(c["id"] for c in annotations["val"]["categories"])
    if [c["id"] for c in categories] != val_ids:
        raise DataFormatError(f"{source}: the train and val files list different categories")
    labels = {c["id"]: i for i, c in enumerate(categories)}
    counts = {
        split: convert_split(
            layout,
            annotations[split],
            source=source,
            split=split,
            files=files,
            output=output,
            labels=labels,
            samples_per_shard=samples_per_shard,
        )
        for split in DETECTION_SPLITS
    }
    write_classes(output, [str(c["name"]) for c in categories])
    frequencies = [str(c.get("frequency", "")) for c in categories] if layout == "lvis" else None
    write_detection_metadata(
        output, layout, [c["id"] for c in categories], frequencies, name=name or layout.upper()
    )
    storage.write_json(storage.join(output, CONVERSION_FILE), counts)
    return counts
