"""Detection and instance-segmentation metrics: COCO AP, LVIS AP and TIDE's error breakdown.

The numbers are the reference implementations', not ours: `pycocotools`' COCOeval (AP at IoU
0.50:0.95, AP50, AP75, APs/m/l, Table 19), the `lvis` package's LVISEval (the same plus APr/c/f
for the rare, common and frequent categories, with LVIS's federated rules: detections of a
category that an image neither contains nor lists in `neg_category_ids` are not counted, nor
are unmatched ones of a category in its `not_exhaustive_category_ids`; Table 18) and `tidecv`'s
TIDE (Table 21: how much AP each error type costs, in TIDE's progressive mode).

Predictions are a COCO results list: one dict per detection with `image_id`, `category_id`,
`score`, and a `bbox` [x, y, w, h] (for box AP) and/or a `segmentation` (an RLE or polygons,
for mask AP). Before any evaluator sees them, each one is checked against the ground truth;
an invalid one (an unknown image or category, a box of non-positive size, a non-finite score,
a mask of the wrong size...) is skipped and counted by reason, never fatal: a model's bad
output should cost it AP, not stop the evaluation.

AP values are fractions in [0, 1], as the reference implementations report them; -1 (no ground
truth in that area range or frequency group) becomes None.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mawsflow.errors import ConfigError, DataFormatError

log = logging.getLogger(__name__)

IOU_TYPES = ("bbox", "segm")
# COCOeval.stats[0:6] in order (the rest are recalls).
COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
LVIS_METRICS = (*COCO_METRICS, "APr", "APc", "APf")
# TIDE's six main error types (Bolya et al. 2020, §2.2) under Table 21's column names, in its
# order, keyed by tidecv's short names.
TIDE_ERRORS = {
    "Cls": "Cls",
    "Loc": "Loc",
    "Both": "Both",
    "Dupe": "Dupl",
    "Bkg": "Bkgd",
    "Miss": "Miss",
}
# LVIS is evaluated with up to 300 detections per image (LVIS API's default), COCO with 100.
LVIS_MAX_DETS = 300


@dataclass
class CheckedPredictions:
    """The predictions that passed the checks, and how many were skipped for each reason."""

    valid: list[dict[str, Any]]
    skipped: Counter[str] = field(default_factory=Counter)


@dataclass
class DetectionMetrics:
    """One evaluation: the metric values by name (None where the ground truth has no instance
    in that range or group), and the predictions skipped by reason."""

    iou_type: str
    metrics: dict[str, float | None]
    skipped: dict[str, int]
    evaluated: int


def read_ground_truth(path: str | Path) -> dict[str, Any]:
    """A COCO or LVIS annotation file, checked for the fields every evaluator reads."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataFormatError(f"{path}: cannot read the annotation file: {exc}") from exc
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataFormatError(f"{path}: no {key!r} list; not a COCO/LVIS annotation file")
    return data


def read_predictions(path: str | Path) -> list[Any]:
    """A COCO results file (a JSON list of detections)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataFormatError(f"{path}: cannot read the predictions: {exc}") from exc
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: predictions must be a JSON list of detections")
    return data


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _segmentation_problem(segm: Any, height: int, width: int) -> str | None:
    """Why `segm` is not a usable mask of an image of this size, or None."""
    if isinstance(segm, dict):
        if list(segm.get("size", [])) != [height, width]:
            return "segmentation size differs from the image"
        if not isinstance(segm.get("counts"), str | bytes | list):
            return "bad segmentation"
        return None
    if isinstance(segm, list) and segm:
        ok = all(
            isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and all(map(_finite, p))
            for p in segm
        )
        return None if ok else "bad segmentation"
    return "bad segmentation"


def check_predictions(
    predictions: Sequence[Any], ground_truth: Mapping[str, Any], iou_type: str
) -> CheckedPredictions:
    """Split `predictions` into the valid ones (deep copies: the evaluators add fields) and
    counts of the skipped ones by reason."""
    if iou_type not in IOU_TYPES:
        raise ConfigError(f"iou_type: {iou_type!r} is not one of {IOU_TYPES}")
    images = {img["id"]: img for img in ground_truth["images"]}
    categories = {cat["id"] for cat in ground_truth["categories"]}
    checked = CheckedPredictions(valid=[])
    for det in predictions:
        problem = None
        if not isinstance(det, dict):
            problem = "not an object"
        elif det.get("image_id") not in images:
            problem = "unknown image"
        elif det.get("category_id") not in categories:
            problem = "unknown category"
        elif not _finite(det.get("score")):
            problem = "bad score"
        elif iou_type == "bbox" or "bbox" in det:
            box = det.get("bbox")
            if not (isinstance(box, list | tuple) and len(box) == 4 and all(map(_finite, box))):
                problem = "bad bbox"
            elif box[2] <= 0 or box[3] <= 0:
                problem = "non-positive box size"
        if problem is None and iou_type == "segm":
            image = images[det["image_id"]]
            problem = _segmentation_problem(
                det.get("segmentation"), int(image["height"]), int(image["width"])
            )
        if problem is None:
            checked.valid.append(copy.deepcopy(det))
        else:
            checked.skipped[problem] += 1
    if checked.skipped:
        log.warning(
            "invalid predictions skipped",
            extra={"iou_type": iou_type, "skipped": dict(checked.skipped)},
        )
    return checked


def _value(x: float) -> float | None:
    return None if x < 0 else float(x)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """pycocotools prints its progress and summary table; keep them out of the step's log."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def coco_metrics(
    ground_truth: str | Path, predictions: Sequence[Any], iou_type: str = "bbox"
) -> DetectionMetrics:
    """COCO AP, AP50, AP75, APs, APm, APl of `predictions` on the annotation file
    `ground_truth`, by pycocotools' COCOeval (100 detections per image)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_data = read_ground_truth(ground_truth)
    checked = check_predictions(predictions, gt_data, iou_type)
    if not checked.valid:
        # COCO.loadRes cannot load an empty list; nothing detected is AP 0 wherever there is
        # ground truth.
        metrics = dict.fromkeys(COCO_METRICS, 0.0)
    else:
        with _quiet():
            gt = COCO()
            gt.dataset = gt_data
            gt.createIndex()
            dt = gt.loadRes(checked.valid)
            evaluator = COCOeval(gt, dt, iouType=iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        metrics = {
            name: _value(v) for name, v in zip(COCO_METRICS, evaluator.stats[:6], strict=True)
        }
    return DetectionMetrics(iou_type, metrics, dict(checked.skipped), len(checked.valid))


@contextlib.contextmanager
def _numpy_float_alias() -> Iterator[None]:
    """lvis 0.5.3 (the latest release, 2020) still calls `np.float`, which NumPy 1.24 removed;
    alias it to `float` (what it meant) for the length of one evaluation only."""
    added = not hasattr(np, "float")
    if added:
        np.float = float  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if added:
            del np.float  # type: ignore[attr-defined]


def lvis_metrics(
    ground_truth: str | Path,
    predictions: Sequence[Any],
    iou_type: str = "bbox",
    *,
    max_dets: int = LVIS_MAX_DETS,
) -> DetectionMetrics:
    """LVIS AP, AP50, AP75, APs/m/l and APr/c/f of `predictions` on the LVIS annotation file
    `ground_truth`, by the `lvis` package's LVISEval (federated rules, `max_dets` per image)."""
    from lvis import LVIS, LVISEval, LVISResults

    gt_data = read_ground_truth(ground_truth)
    for image in gt_data["images"]:
        if "neg_category_ids" not in image or "not_exhaustive_category_ids" not in image:
            raise DataFormatError(
                f"{ground_truth}: image {image.get('id')} has no neg_category_ids / "
                "not_exhaustive_category_ids; not an LVIS annotation file"
            )
    checked = check_predictions(predictions, gt_data, iou_type)
    if not checked.valid:
        metrics = dict.fromkeys(LVIS_METRICS, 0.0)
    else:
        lvis_logger = logging.getLogger("lvis")
        level = lvis_logger.level
        lvis_logger.setLevel(logging.WARNING)  # LVISEval logs every step at INFO
        try:
            gt = LVIS(str(ground_truth))
            dt = LVISResults(gt, checked.valid, max_dets=max_dets)
            evaluator = LVISEval(gt, dt, iou_type=iou_type)
            with _numpy_float_alias():
                evaluator.run()
        finally:
            lvis_logger.setLevel(level)
        results = evaluator.get_results()
        metrics = {name: _value(results[name]) for name in LVIS_METRICS}
    return DetectionMetrics(iou_type, metrics, dict(checked.skipped), len(checked.valid))


def _compressed_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """A detection's mask as a compressed RLE (TIDE compares masks only in that form, while
    COCO results may also hold polygons or an uncompressed RLE)."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), str | bytes):
        return segmentation
    rles = mask_utils.frPyObjects(segmentation, height, width)
    return mask_utils.merge(rles) if isinstance(rles, list) else rles


@dataclass
class TideBreakdown:
    """TIDE at one IoU threshold: the AP it measured, and the AP each main error type costs
    (dAP), under Table 21's column names (Cls, Loc, Both, Dupl, Bkgd, Miss); both in AP points
    (0–100) as TIDE and Table 21 report them."""

    pos_threshold: float
    ap: float
    errors: dict[str, float]


def tide_errors(
    ground_truth: str | Path,
    predictions: Sequence[Any],
    iou_type: str = "bbox",
    *,
    lvis: bool = False,
    pos_thresholds: Sequence[float] = (0.5, 0.75),
    progressive: bool = True,
) -> tuple[list[TideBreakdown], dict[str, int]]:
    """TIDE's main-error breakdown (Cls, Loc, Both, Dupl, Bkgd, Miss) of `predictions` at each IoU
    threshold in `pos_thresholds` (Table 21 uses 0.5 and 0.75, progressive mode), and the
    skipped predictions by reason. `lvis` reads the ground truth with TIDE's LVIS loader, which
    emulates the federated rules with ignore regions."""
    from tidecv import TIDE, datasets
    from tidecv.data import Data

    gt_data = read_ground_truth(ground_truth)
    checked = check_predictions(predictions, gt_data, iou_type)
    if lvis:
        for cat in gt_data["categories"]:
            if "synset" not in cat:
                raise DataFormatError(
                    f"{ground_truth}: category {cat.get('id')} has no synset (TIDE's LVIS "
                    "loader names classes by it)"
                )
    gt = (datasets.LVIS if lvis else datasets.COCO)(str(ground_truth), name="ground truth")
    sizes = {img["id"]: (int(img["height"]), int(img["width"])) for img in gt_data["images"]}
    detections = Data("predictions", max_dets=gt.max_dets)
    for det in checked.valid:
        segmentation = det.get("segmentation")
        if segmentation is not None and iou_type == "segm":
            segmentation = _compressed_rle(segmentation, *sizes[det["image_id"]])
        detections.add_detection(
            det["image_id"],
            det["category_id"],
            det["score"],
            box=det.get("bbox"),
            mask=segmentation,
        )
    mode = TIDE.BOX if iou_type == "bbox" else TIDE.MASK
    if not checked.valid:
        # TIDE divides by the number of classes it saw detections of; with none there is no
        # breakdown to make: AP 0, every object missed.
        log.warning("no valid detections: TIDE has nothing to break down")
        empty = [
            TideBreakdown(float(t), 0.0, {**dict.fromkeys(TIDE_ERRORS.values(), 0.0)})
            for t in pos_thresholds
        ]
        return empty, dict(checked.skipped)
    breakdowns = []
    for threshold in pos_thresholds:
        tide = TIDE(pos_threshold=threshold, mode=mode)
        run = tide.evaluate(gt, detections, name=f"iou{threshold}")
        errors = run.fix_main_errors(progressive=progressive)
        breakdowns.append(
            TideBreakdown(
                pos_threshold=float(threshold),
                ap=float(run.ap),
                errors={TIDE_ERRORS[error.short_name]: float(v) for error, v in errors.items()},
            )
        )
    return breakdowns, dict(checked.skipped)
