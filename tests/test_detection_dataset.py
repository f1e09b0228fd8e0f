"""The generated detection dataset: real COCO and LVIS files that pycocotools and lvis read, with
exact boxes and masks, COCO's three area ranges, and LVIS's federated fields."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from fashion_mnist_corpus import require_fashion_mnist
from mawsflow.dataset.detection_demo import (
    DetectionDemoSpec,
    PastedItemImages,
    generate_detection_demo,
)
from mawsflow.errors import ConfigError

# Skewed class draws so that LVIS's rare, common and frequent groups all occur in 40 images.
SPEC = DetectionDemoSpec(
    class_weights=(8, 4, 4, 2, 2, 1, 1, 1, 0.3, 0.3), frequency_thresholds=(3, 10)
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    require_fashion_mnist()
    out = tmp_path_factory.mktemp("detection_demo")
    return generate_detection_demo(
        out, images_per_split={"train": 40, "val": 12}, spec=SPEC, seed=3
    )


def test_same_seed_same_files_other_seed_other_files(demo, tmp_path):
    again = generate_detection_demo(tmp_path / "a", images_per_split={"val": 12}, spec=SPEC, seed=3)
    other = generate_detection_demo(tmp_path / "b", images_per_split={"val": 12}, spec=SPEC, seed=4)
    assert again["val"]["coco"].read_text() == demo["val"]["coco"].read_text()
    # LVIS's frequency groups come from the train split's counts, which this run lacks.
    lvis_again, lvis = (json.loads(d["val"]["lvis"].read_text()) for d in (again, demo))
    assert lvis_again["images"] == lvis["images"]
    assert lvis_again["annotations"] == lvis["annotations"]
    name = "000001.jpg"
    assert (again["val"]["images"] / name).read_bytes() == (
        demo["val"]["images"] / name
    ).read_bytes()
    assert other["val"]["coco"].read_text() != demo["val"]["coco"].read_text()


def test_coco_boxes_and_areas_match_the_decoded_masks(demo):
    from pycocotools.coco import COCO

    coco = COCO(str(demo["train"]["coco"]))
    assert len(coco.imgs) == 40 and len(coco.cats) == 10
    assert len(coco.anns) >= 40
    for ann in coco.anns.values():
        mask = coco.annToMask(ann)
        ys, xs = np.nonzero(mask)
        x, y, w, h = ann["bbox"]
        # Polygons drawn through pixel centres rasterise to the item's pixels, give or take
        # one pixel at the outline.
        assert abs(xs.min() - x) <= 1 and abs(ys.min() - y) <= 1
        assert abs(xs.max() + 1 - (x + w)) <= 1 and abs(ys.max() + 1 - (y + h)) <= 1
        assert ann["area"] == pytest.approx(mask.sum(), rel=0.02)
        assert ann["iscrowd"] == 0 and 1 <= ann["category_id"] <= 10
    areas = [a["area"] for a in coco.anns.values()]
    ranges = Counter("s" if a < 32**2 else "m" if a < 96**2 else "l" for a in areas)
    assert ranges["s"] and ranges["m"] and ranges["l"], ranges


def test_lvis_file_has_the_federated_fields_lvis_reads(demo):
    from lvis import LVIS

    lvis = LVIS(str(demo["train"]["lvis"]))
    coco_anns = json.loads(demo["train"]["coco"].read_text())["annotations"]
    coco_per_image = Counter((a["image_id"], a["category_id"]) for a in coco_anns)
    frequencies = {c["id"]: c["frequency"] for c in lvis.dataset["categories"]}
    assert set(frequencies.values()) == {"r", "c", "f"}
    dropped = 0
    for image in lvis.dataset["images"]:
        present = {a["category_id"] for a in lvis.img_ann_map[image["id"]]}
        assert not present & set(image["neg_category_ids"])
        for cat in image["not_exhaustive_category_ids"]:
            kept = sum(a["category_id"] == cat for a in lvis.img_ann_map[image["id"]])
            assert kept == 1 < coco_per_image[image["id"], cat]
            dropped += 1
    assert dropped, "no image exercises not_exhaustive_category_ids"
    for cat in lvis.dataset["categories"]:
        images = len(
            {a["image_id"] for a in lvis.dataset["annotations"] if a["category_id"] == cat["id"]}
        )
        assert cat["image_count"] == images
        expected = "r" if images <= 3 else "c" if images <= 10 else "f"
        assert cat["frequency"] == expected and cat["synset"]


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        (DetectionDemoSpec(image_size=64, item_sizes=(96,)), "item_sizes"),
        (DetectionDemoSpec(min_items=3, max_items=2), "min_items"),
        (DetectionDemoSpec(class_weights=(1.0, 2.0)), "class_weights"),
        (DetectionDemoSpec(frequency_thresholds=(10, 5)), "frequency_thresholds"),
    ],
)
def test_bad_spec_is_a_config_error(spec, key, tmp_path):
    with pytest.raises(ConfigError, match=key):
        generate_detection_demo(tmp_path, images_per_split={"val": 1}, spec=spec)


def test_pasted_item_images_are_seeded_items_on_photos():
    """The pretraining batches the detection transfer check trains its trunk on: one item per
    image on a photo crop, its class the label; the same seed gives the same batch."""
    require_fashion_mnist()
    images, labels = PastedItemImages(seed=3, size=32, pool=8).batch(16)
    assert images.shape == (16, 32, 32, 3) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 255.0
    assert labels.dtype == np.int64 and set(labels.tolist()) <= set(range(10))
    again, again_labels = PastedItemImages(seed=3, size=32, pool=8).batch(16)
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(labels, again_labels)
    other, _ = PastedItemImages(seed=4, size=32, pool=8).batch(16)
    assert not np.array_equal(images, other)
