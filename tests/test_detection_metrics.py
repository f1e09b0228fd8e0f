"""The detection evaluator: pycocotools' and lvis' AP, TIDE's errors, and the prediction checks,
on the generated real-format dataset and on a hand-made case whose AP is worked out by hand."""

from __future__ import annotations

import copy
import json

import pytest

from fashion_mnist_corpus import require_fashion_mnist
from mawsflow.dataset.detection_demo import DetectionDemoSpec, generate_detection_demo
from mawsflow.evaluation.detection_metrics import (
    COCO_METRICS,
    LVIS_METRICS,
    check_predictions,
    coco_metrics,
    lvis_metrics,
    read_predictions,
    tide_errors,
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    require_fashion_mnist()
    spec = DetectionDemoSpec(
        class_weights=(8, 4, 4, 2, 2, 1, 1, 1, 0.3, 0.3), frequency_thresholds=(2, 5)
    )
    out = tmp_path_factory.mktemp("detection_metrics")
    return generate_detection_demo(out, images_per_split={"val": 24}, spec=spec, seed=1)["val"]


def ground_truth_as_predictions(path):
    """Every annotation of the file as a detection of score 1 (polygon masks kept as they are:
    both evaluators accept polygons)."""
    anns = json.loads(path.read_text())["annotations"]
    return [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "segmentation": a["segmentation"],
            "score": 1.0,
        }
        for a in anns
    ]


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_ground_truth_fed_back_scores_ap_one(demo, iou_type):
    predictions = ground_truth_as_predictions(demo["coco"])
    coco = coco_metrics(demo["coco"], predictions, iou_type)
    assert coco.evaluated == len(predictions) and not coco.skipped
    assert set(coco.metrics) == set(COCO_METRICS)
    for name, value in coco.metrics.items():
        assert value == pytest.approx(1.0), name
    lvis = lvis_metrics(demo["lvis"], ground_truth_as_predictions(demo["lvis"]), iou_type)
    assert set(lvis.metrics) == set(LVIS_METRICS)
    for name in ("AP", "AP50", "AP75", "APr", "APc", "APf"):
        assert lvis.metrics[name] == pytest.approx(1.0), name


def hand_made(tmp_path):
    """One image, one category, two ground-truth boxes of 10×10."""
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.jpg"}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100,
             "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 10, 10], "area": 100,
             "iscrowd": 0},
        ],
    }  # fmt: skip
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    predictions = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},  # exact
        {"image_id": 1, "category_id": 1, "bbox": [80, 0, 10, 10], "score": 0.8},  # false
        {"image_id": 1, "category_id": 1, "bbox": [50, 50, 10, 7.2], "score": 0.7},  # IoU 0.72
    ]
    return path, predictions


def test_hand_made_case_by_hand_and_by_pycocotools(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    path, predictions = hand_made(tmp_path)
    result = coco_metrics(path, predictions, "bbox")
    # IoU thresholds 0.50–0.70 (5 of 10) match the third box: precision 1 up to recall 0.5,
    # then 2/3 up to recall 1; on COCO's 101 recall points that is (51·1 + 50·2/3) / 101.
    # From 0.75 up it is a false positive: precision 1 up to recall 0.5, 0 beyond: 51 / 101.
    ap_matched = (51 + 50 * 2 / 3) / 101
    ap_unmatched = 51 / 101
    assert result.metrics["AP50"] == pytest.approx(ap_matched)
    assert result.metrics["AP75"] == pytest.approx(ap_unmatched)
    assert result.metrics["AP"] == pytest.approx((ap_matched + ap_unmatched) / 2)
    assert result.metrics["APs"] == pytest.approx(result.metrics["AP"])  # areas of 100 < 32²
    assert result.metrics["APm"] is None and result.metrics["APl"] is None  # no such objects
    # The same with pycocotools called directly.
    gt = COCO(str(path))
    evaluator = COCOeval(gt, gt.loadRes(copy.deepcopy(predictions)), iouType="bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert [result.metrics[k] for k in ("AP", "AP50", "AP75")] == pytest.approx(
        list(evaluator.stats[:3])
    )


def test_invalid_predictions_are_skipped_and_counted(demo):
    valid = ground_truth_as_predictions(demo["coco"])
    first = valid[0]
    bad = [
        {**first, "image_id": 99999},
        {**first, "category_id": 77},
        {**first, "bbox": [1, 1, -3, 4]},
        {**first, "bbox": [1, 1, 0, 4]},
        {**first, "bbox": [1, 1, 4]},
        {**first, "score": float("nan")},
        "not a detection",
        {**first, "segmentation": {"size": [5, 5], "counts": "abc"}},
    ]
    checked = check_predictions(bad + valid, json.loads(demo["coco"].read_text()), "segm")
    assert checked.skipped == {
        "unknown image": 1,
        "unknown category": 1,
        "non-positive box size": 2,
        "bad bbox": 1,
        "bad score": 1,
        "not an object": 1,
        "segmentation size differs from the image": 1,
    }
    # Box AP does not read masks: all but the mask-size fault are still skipped.
    result = coco_metrics(demo["coco"], bad[:-1] + valid, "bbox")
    assert result.skipped["unknown image"] == 1 and result.evaluated == len(valid)
    assert result.metrics["AP"] == pytest.approx(1.0)
    empty = coco_metrics(demo["coco"], bad[:2], "bbox")
    assert empty.evaluated == 0 and empty.metrics["AP"] == 0.0


def test_lvis_federated_rules(demo):
    lvis_gt = json.loads(demo["lvis"].read_text())
    predictions = ground_truth_as_predictions(demo["lvis"])
    image = next(i for i in lvis_gt["images"] if i["neg_category_ids"])
    present = {a["category_id"] for a in lvis_gt["annotations"] if a["image_id"] == image["id"]}
    unverified = next(
        c for c in range(1, 11) if c not in present and c not in image["neg_category_ids"]
    )
    box = {"image_id": image["id"], "bbox": [1, 1, 5, 5], "score": 1.0}
    # A confident false positive of a category not verified either way is not counted...
    unchecked = lvis_metrics(demo["lvis"], [*predictions, {**box, "category_id": unverified}])
    assert unchecked.metrics["AP"] == pytest.approx(1.0)
    # ...one of a category verified absent is.
    negative = image["neg_category_ids"][0]
    counted = lvis_metrics(demo["lvis"], [*predictions, {**box, "category_id": negative}])
    assert counted.metrics["AP"] < 1.0
    # The instances the LVIS file left out (its categories are not exhaustive there) cost
    # nothing when detected: the COCO file's complete annotations still score AP 1.
    assert any(i["not_exhaustive_category_ids"] for i in lvis_gt["images"])
    complete = ground_truth_as_predictions(demo["coco"])
    assert len(complete) > len(predictions)
    assert lvis_metrics(demo["lvis"], complete).metrics["AP"] == pytest.approx(1.0)


def test_tide_breaks_down_a_real_prediction_file(demo, tmp_path):
    predictions = ground_truth_as_predictions(demo["coco"])
    perfect, skipped = tide_errors(demo["coco"], predictions)
    assert not skipped and [b.pos_threshold for b in perfect] == [0.5, 0.75]
    assert all(b.ap == pytest.approx(100.0) for b in perfect)
    assert all(v == 0 for b in perfect for v in b.errors.values())
    # Each kind of mistake, made on its own detections.
    flawed = copy.deepcopy(predictions)
    # Class 1 is the demo's most frequent (its class weights): AP is per class, and a false
    # positive costs AP only if a true positive of its class ranks below it.
    ones = [i for i, p in enumerate(flawed) if p["category_id"] == 1]
    duplicated, later = ones[:2]
    cls_i, loc_i, miss_i = [i for i in range(len(flawed)) if i not in ones][:3]
    flawed[cls_i]["category_id"] = flawed[cls_i]["category_id"] % 10 + 1  # classification
    x, y, w, h = flawed[loc_i]["bbox"]
    flawed[loc_i]["bbox"] = [x + 0.3 * w, y, w, h]  # localisation: IoU ≈ 0.54
    flawed[later]["score"] = 0.3
    flawed.append({**flawed[duplicated], "score": 0.95})  # a duplicate
    flawed.append({"image_id": flawed[duplicated]["image_id"], "category_id": 1, "score": 0.9,
                   "bbox": [0, 0, 2, 2]})  # background  # fmt: skip
    del flawed[miss_i]  # a missed object
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps(flawed))
    breakdowns, _ = tide_errors(demo["coco"], read_predictions(path))
    at_50 = breakdowns[0]
    assert set(at_50.errors) == {"Cls", "Loc", "Both", "Dupl", "Bkgd", "Miss"}
    assert at_50.ap < 100.0
    for error in ("Cls", "Dupl", "Bkgd", "Miss"):
        assert at_50.errors[error] > 0, error
    # At IoU 0.75 the shifted box is a localisation error; at 0.5 it is still a match.
    assert breakdowns[1].errors["Loc"] > at_50.errors["Loc"]
    lvis_breakdowns, _ = tide_errors(demo["lvis"], flawed, "segm", lvis=True)
    assert lvis_breakdowns[0].ap < 100.0
    nothing, _ = tide_errors(demo["coco"], [])
    assert [b.ap for b in nothing] == [0.0, 0.0]


def test_unreadable_or_wrong_ground_truth_is_a_data_format_error(demo, tmp_path):
    from mawsflow.errors import DataFormatError

    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DataFormatError, match="broken.json"):
        coco_metrics(broken, [])
    with pytest.raises(DataFormatError, match="not an LVIS annotation file"):
        lvis_metrics(demo["coco"], ground_truth_as_predictions(demo["coco"]))
    with pytest.raises(DataFormatError, match="JSON list"):
        read_predictions(demo["coco"])
