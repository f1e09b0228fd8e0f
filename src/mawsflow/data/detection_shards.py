"""Detection datasets (COCO, LVIS and the generated demo): the evaluation-dataset layout with
each image's objects.

```
<dataset>/classes.json               category names, index = contiguous label
<dataset>/detection.json             {"format": "mawsflow.detection/1",
                                      "name": "LVIS", "annotation_format": "coco" | "lvis",
                                      "category_ids": [the source's id of each label],
                                      "frequencies": ["r"|"c"|"f" per label]  (LVIS only)}
<dataset>/<split>/manifest.json      {"format": "mawsflow.detection/1", "shards": [...], ...}
<dataset>/<split>/shard-NNNNNN.tar   <key>.<jpg|png|…> the image bytes as the source had them;
                                     <key>.detection.json its objects (below)
<dataset>/<split>/ground_truth.json  the source's annotation JSON for the images written (the
                                     evaluator's ground truth, COCO or LVIS as it came)
<dataset>/conversion.json            per split: images written, skipped by reason
```

A sample's `detection.json`: `{"image_id": <source id>, "height": H, "width": W, "objects":
[{"bbox": [x, y, w, h], "label": <contiguous>, "segmentation": <polygons or RLE as in the
source>, "iscrowd": 0|1}, …], "neg_labels": […], "not_exhaustive_labels": […]}` (the last two
for LVIS: the image's `neg_category_ids` / `not_exhaustive_category_ids` as labels).

Shards, like every other dataset the engine trains on: the training loop streams, shuffles
and resumes them as it does classification and video shards (`EvalSplit.as_training_manifest`),
and a shard tar is one object on S3 instead of thousands of small images. The ground truth
stays one JSON per split because the evaluators (pycocotools, lvis, tidecv) read whole files.

This module imports no torch: prepare-eval runs in the CPU-only image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mawsflow import storage
from mawsflow.data.eval_shards import EvalSplit, ShardSplitWriter, open_split
from mawsflow.data.manifest import PretrainManifest
from mawsflow.data.members import IMAGE_EXTENSIONS
from mawsflow.errors import DataFormatError

FORMAT = "mawsflow.detection/1"
ANNOTATION_FORMATS = ("coco", "lvis")
DATASET_FILE = "detection.json"
GROUND_TRUTH_FILE = "ground_truth.json"
SAMPLE_MEMBER = "detection.json"
# Images with their objects' polygons are ~10× a classification sample's metadata, but the
# image dominates: COCO-sized JPEGs (~160 KB) make ~80 MB shards.
DEFAULT_IMAGES_PER_SHARD = 500


@dataclass(frozen=True)
class DetectionSplit:
    """One split of a detection dataset: its shards (what the trainer streams), its categories
    and the ground-truth JSON the evaluator scores against."""

    shards: EvalSplit
    annotation_format: str  # "coco" | "lvis"
    category_ids: tuple[int, ...]  # the source's category id of each contiguous label
    frequencies: tuple[str, ...]  # LVIS's r/c/f per label; empty for COCO
    name: str = ""  # the dataset's name (prepare-eval --name)

    @property
    def categories(self) -> list[str]:
        """Category names, index = contiguous label (0-based; the detector adds 1 for its
        background class)."""
        return list(self.shards.classes)

    @property
    def num_samples(self) -> int:
        return self.shards.num_samples

    @property
    def ground_truth(self) -> str:
        """URI of the split's annotation JSON, as the source had it (for the evaluators)."""
        return storage.join(self.shards.dataset, self.shards.split, GROUND_TRUTH_FILE)

    def as_training_manifest(self) -> PretrainManifest:
        return self.shards.as_training_manifest()


def open_detection_split(dataset: str, split: str) -> DetectionSplit:
    """Read and check one split of a detection dataset (`mawsflow prepare-eval --layout
    coco|lvis`)."""
    shards = open_split(dataset, split, format=FORMAT)
    uri = storage.join(shards.dataset, DATASET_FILE)
    try:
        meta = storage.read_json(uri)
    except storage.NotFoundError:
        raise DataFormatError(
            f"{dataset}: no {DATASET_FILE}; is this a detection dataset?"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataFormatError(f"{uri}: format must be {FORMAT!r}")
    if meta.get("annotation_format") not in ANNOTATION_FORMATS:
        raise DataFormatError(
            f"{uri}: annotation_format must be one of {ANNOTATION_FORMATS}, "
            f"got {meta.get('annotation_format')!r}"
        )
    ids = meta.get("category_ids")
    if not isinstance(ids, list) or len(ids) != shards.num_classes:
        raise DataFormatError(
            f"{uri}: category_ids must list one id per class of classes.json ({shards.num_classes})"
        )
    frequencies = tuple(str(f) for f in meta.get("frequencies", ()))
    if frequencies and len(frequencies) != shards.num_classes:
        raise DataFormatError(f"{uri}: frequencies must give one r/c/f per class")
    return DetectionSplit(
        shards,
        meta["annotation_format"],
        tuple(int(i) for i in ids),
        frequencies,
        str(meta.get("name", "")),
    )


def write_detection_metadata(
    dataset: str,
    annotation_format: str,
    category_ids: list[int],
    frequencies: list[str] | None = None,
    *,
    name: str = "",
) -> None:
    meta: dict[str, Any] = {
        "format": FORMAT,
        "name": name,
        "annotation_format": annotation_format,
        "category_ids": category_ids,
    }
    if frequencies:
        meta["frequencies"] = frequencies
    storage.write_json(storage.join(dataset, DATASET_FILE), meta)


def parse_sample(raw: dict[str, Any]) -> dict[str, Any]:
    """A raw sample's `detection.json` record."""
    if SAMPLE_MEMBER not in raw:
        raise DataFormatError(f"sample {raw.get('__key__', '?')} has no {SAMPLE_MEMBER}")
    record = json.loads(raw[SAMPLE_MEMBER])
    if not isinstance(record, dict) or not isinstance(record.get("objects"), list):
        raise DataFormatError(
            f"sample {raw.get('__key__', '?')}: {SAMPLE_MEMBER} needs an objects list"
        )
    return record


class DetectionSplitWriter(ShardSplitWriter):
    """Writes a split of images (`<key>.<ext>` as the source had it, `<key>.detection.json`)."""

    format = FORMAT
    default_samples_per_shard = DEFAULT_IMAGES_PER_SHARD

    def write(self, key: str, image: bytes, ext: str, record: dict[str, Any]) -> None:
        if ext not in IMAGE_EXTENSIONS:
            raise DataFormatError(
                f"sample {key}: image extension {ext!r} not in {IMAGE_EXTENSIONS}"
            )
        for obj in record["objects"]:
            self._check(key, obj["label"])
        self._add({"__key__": key, ext: image, SAMPLE_MEMBER: json.dumps(record).encode()})
