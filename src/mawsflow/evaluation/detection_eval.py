"""Scoring a detector on a detection split: predictions over the split's images, then box and
mask AP and TIDE's error breakdown against the split's ground-truth JSON.

The metrics of one test set (what `mawsflow eval-detection` writes, prefixed by the set's name):

- `box_ap`, `box_ap50`, `box_ap75`, `box_aps`, `box_apm`, `box_apl` and the same `mask_*`:
  COCOeval for a COCO dataset, LVISEval (federated rules, 300 detections per image) for LVIS,
  which adds `box_apr`, `box_apc`, `box_apf`, `mask_apr`, … (rare, common, frequent). AP in
  points (0–100), as Tables 18 and 19 print it; a value the ground truth cannot give (no object
  in that size range or frequency group) is left out rather than written as -1;
- `tide_0.5_<error>` and `tide_0.75_<error>` for error in cls, loc, both, dupl, bkgd, miss:
  the box AP points each of TIDE's main errors costs (progressive mode, Table 21's columns),
  and `tide_0.5_ap`, `tide_0.75_ap`, the AP TIDE measured at that IoU;
- `images` (scored), `skipped_images` (undecodable), `predictions` (valid detections scored)
  and `skipped_predictions_<reason>` (invalid ones left out, by reason).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mawsflow import storage
from mawsflow.data.detection import DetectionSplit
from mawsflow.data.detection_shards import parse_sample
from mawsflow.data.members import CORRUPT_SAMPLE_ERRORS, image_member
from mawsflow.data.shards import samples_in_order
from mawsflow.errors import ConfigError
from mawsflow.evaluation.detection_metrics import (
    IOU_TYPES,
    coco_metrics,
    lvis_metrics,
    tide_errors,
)
from mawsflow.evaluation.detection_results import to_coco_results

log = logging.getLogger(__name__)

TIDE_THRESHOLDS = (0.5, 0.75)
_PREFIX = {"bbox": "box", "segm": "mask"}


class DetectionImages(IterableDataset):
    """(image float [0, 1] 3×H×W or None when it cannot be decoded, source image id) of a
    split, its shards dealt round-robin to the loader's workers."""

    def __init__(self, split: DetectionSplit) -> None:
        self.shards = split.shards.shards

    def __iter__(self) -> Iterator[tuple[torch.Tensor | None, int]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for raw in samples_in_order(self.shards[worker::workers]):
            record = parse_sample(raw)
            try:
                with Image.open(io.BytesIO(image_member(raw))) as img:
                    pixels = np.array(img.convert("RGB"))
            except CORRUPT_SAMPLE_ERRORS:
                yield None, int(record["image_id"])
                continue
            yield torch.from_numpy(pixels).permute(2, 0, 1).float() / 255, int(record["image_id"])


def _as_lists(batch: list[tuple[Any, int]]) -> tuple[list, list]:
    images, ids = zip(*batch, strict=True)
    return list(images), list(ids)


def predict(
    model: torch.nn.Module,
    split: DetectionSplit,
    category_ids: Sequence[int],
    *,
    device: torch.device,
    batch_size: int = 4,
    num_workers: int = 0,
) -> tuple[list[dict[str, Any]], int, int]:
    """The model's detections on every image of `split` as a COCO results list (category ids
    the dataset's), the number of images scored and of images skipped as undecodable."""
    loader = DataLoader(
        DetectionImages(split),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_as_lists,
    )
    ids_of_label = torch.tensor([0, *category_ids])  # label 0 is the background
    results: list[dict[str, Any]] = []
    scored = skipped = 0
    model.eval()
    with torch.no_grad():
        for images, image_ids in loader:
            kept = [(im, i) for im, i in zip(images, image_ids, strict=True) if im is not None]
            skipped += len(images) - len(kept)
            if not kept:
                continue
            outputs = model([im.to(device) for im, _ in kept])
            for output in outputs:
                output["labels"] = ids_of_label[output["labels"].cpu()]
            results += to_coco_results(outputs, [i for _, i in kept])
            scored += len(kept)
    return results, scored, skipped


def score_detections(
    split: DetectionSplit, results: Sequence[Mapping[str, Any]], *, tide: bool = True
) -> dict[str, float]:
    """Box and mask AP (COCO or LVIS rules by the split's format) and box TIDE errors of
    `results` on the split's ground truth: the module doc's keys."""
    with _local_ground_truth(split.ground_truth) as ground_truth:
        return _score(ground_truth, split.annotation_format == "lvis", results, tide=tide)


@contextlib.contextmanager
def _local_ground_truth(uri: str) -> Iterator[str]:
    """A local path to the ground-truth JSON at `uri`: pycocotools, lvis and tidecv open local
    files only, and a detection set usually lives in object storage (s3://), so that one is
    copied to a temporary file for the scoring."""
    if not storage.is_s3(uri):
        yield uri
        return
    with tempfile.TemporaryDirectory(prefix="mawsflow-ground-truth-") as folder:
        path = os.path.join(folder, "ground_truth.json")
        storage.download_file(uri, path)
        yield path


def _score(
    ground_truth: str, lvis: bool, results: Sequence[Mapping[str, Any]], *, tide: bool
) -> dict[str, float]:
    metrics: dict[str, float] = {}
    skipped: Counter[str] = Counter()
    for iou_type in IOU_TYPES:
        evaluate = lvis_metrics if lvis else coco_metrics
        found = evaluate(ground_truth, list(results), iou_type)
        for name, value in found.metrics.items():
            if value is not None:
                metrics[f"{_PREFIX[iou_type]}_{name.lower()}"] = 100.0 * value
        if iou_type == "bbox":
            metrics["predictions"] = float(found.evaluated)
            skipped.update(found.skipped)
    if tide:
        breakdowns, _ = tide_errors(
            ground_truth, list(results), "bbox", lvis=lvis, pos_thresholds=TIDE_THRESHOLDS
        )
        for breakdown in breakdowns:
            at = f"tide_{breakdown.pos_threshold:g}"
            metrics[f"{at}_ap"] = breakdown.ap
            for error, cost in breakdown.errors.items():
                metrics[f"{at}_{error.lower()}"] = cost
    for reason, count in sorted(skipped.items()):
        metrics[f"skipped_predictions_{reason}"] = float(count)
    return metrics


def evaluate_detector(
    model: torch.nn.Module,
    card: Mapping[str, Any],
    split: DetectionSplit,
    *,
    device: torch.device,
    batch_size: int = 4,
    num_workers: int = 0,
    tide: bool = True,
) -> dict[str, float]:
    """Predict on `split` and score: the module doc's metrics."""
    trained = [int(i) for i in card.get("category_ids", [])]
    if trained != list(split.category_ids):
        raise ConfigError(
            f"the detector was trained on categories {trained[:5]}… ({len(trained)}), the test "
            f"set {split.shards.dataset} has {list(split.category_ids)[:5]}… "
            f"({len(split.category_ids)}): evaluate on the dataset it was trained for"
        )
    results, scored, skipped_images = predict(
        model,
        split,
        split.category_ids,
        device=device,
        batch_size=batch_size,
        num_workers=num_workers,
    )
    metrics = score_detections(split, results, tide=tide)
    metrics["images"] = float(scored)
    metrics["skipped_images"] = float(skipped_images)
    return metrics
