"""Detection data below the steps: `prepare-eval --layout coco|lvis` into detection shards,
large-scale jitter that keeps boxes and masks on their objects, and LVIS's federated classes in
the detector's loss."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from fashion_mnist_corpus import require_fashion_mnist
from mawsflow.data.detection import (
    DetectionTrainDecoder,
    large_scale_jitter,
    open_detection_split,
)
from mawsflow.data.members import CorruptSample
from mawsflow.data.shards import samples_in_order
from mawsflow.dataset.detection_demo import DetectionDemoSpec, generate_detection_demo
from mawsflow.errors import DataFormatError
from mawsflow.models.vitdet import federated_classes
from mawsflow.steps import prepare_eval


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    require_fashion_mnist()
    out = tmp_path_factory.mktemp("detection_source")
    spec = DetectionDemoSpec(image_size=64, max_items=3, item_sizes=(16, 24, 32))
    generate_detection_demo(out, images_per_split={"train": 10, "val": 6}, spec=spec, seed=1)
    return out


def convert(layout, source, output, *extra):
    return prepare_eval.main(
        ["--layout", layout, "--source", str(source), "--output", str(output), *extra]
    )


@pytest.mark.parametrize("layout", ["coco", "lvis"])
def test_prepare_eval_writes_shards_and_keeps_the_val_ground_truth(source, tmp_path, layout):
    broken = tmp_path / "source"
    shutil.copytree(source, broken)
    (broken / "images" / "train" / "000002.jpg").write_bytes(b"not a jpeg")
    (broken / "images" / "train" / "000005.jpg").unlink()
    assert convert(layout, broken, tmp_path / "out", "--samples-per-shard", "4") == 0
    conversion = json.loads((tmp_path / "out" / "conversion.json").read_text())
    assert conversion["train"] == {"written": 8, "skipped": {"missing": 1, "undecodable": 1}}
    assert conversion["val"] == {"written": 6, "skipped": {}}

    train = open_detection_split(str(tmp_path / "out"), "train")
    assert train.annotation_format == layout and train.num_samples == 8
    assert len(train.shards.shards) == 2  # 4 per shard
    assert train.categories[0] == "T-shirt/top" and len(train.categories) == 10
    name = "lvis_v1_train.json" if layout == "lvis" else "instances_train.json"
    truth = json.loads((broken / "annotations" / name).read_text())
    by_image = {}
    for ann in truth["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    records = [json.loads(raw["detection.json"]) for raw in samples_in_order(train.shards.shards)]
    assert {r["image_id"] for r in records} == {im["id"] for im in truth["images"]} - {2, 5}
    for record in records:
        anns = by_image.get(record["image_id"], [])
        assert [o["bbox"] for o in record["objects"]] == [a["bbox"] for a in anns]
        assert [o["label"] for o in record["objects"]] == [a["category_id"] - 1 for a in anns]
        assert ("neg_labels" in record) == (layout == "lvis")

    val = open_detection_split(str(tmp_path / "out"), "val")
    source_val = (broken / "annotations" / name.replace("train", "val")).read_text()
    assert json.loads(Path(val.ground_truth).read_text()) == json.loads(source_val)


def test_malformed_annotations_name_the_entry(source, tmp_path):
    broken = tmp_path / "source"
    shutil.copytree(source, broken)
    path = broken / "annotations" / "instances_val.json"
    data = json.loads(path.read_text())
    data["annotations"][3]["bbox"] = [1, 2, 3]
    path.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match=r"annotations\[3\].*bbox must be 4 numbers"):
        convert("coco", broken, tmp_path / "out")
    path.write_text("{not json")
    with pytest.raises(DataFormatError, match="instances_val.json: not valid JSON"):
        convert("coco", broken, tmp_path / "out")
    (broken / "annotations" / "lvis_v1_val.json").unlink()
    with pytest.raises(DataFormatError, match="lvis_v1_val.json"):
        convert("lvis", broken, tmp_path / "out")


def test_large_scale_jitter_keeps_boxes_on_their_objects():
    # Two solid rectangles on a black image; after jitter each kept box must still frame the
    # object's pixels (its mask, and the image's bright pixels) exactly.
    image = torch.zeros(3, 80, 120, dtype=torch.uint8)
    boxes = torch.tensor([[10.0, 20.0, 50.0, 60.0], [70.0, 5.0, 110.0, 25.0]])
    masks = torch.zeros(2, 80, 120, dtype=torch.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
        image[:, y1:y2, x1:x2] = 255
        masks[i, y1:y2, x1:x2] = 1
    jitter = large_scale_jitter(64)
    scales = set()
    for seed in range(12):
        torch.manual_seed(seed)
        out = jitter(
            {
                "image": tv_tensors.Image(image),
                "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(80, 120)),
                "masks": tv_tensors.Mask(masks),
                "labels": torch.tensor([1, 2]),
            }
        )
        assert out["image"].shape == (3, 64, 64)
        assert len(out["boxes"]) == len(out["masks"]) == len(out["labels"])
        for box, mask in zip(out["boxes"], out["masks"], strict=True):
            ys, xs = np.nonzero(mask.numpy())
            assert len(xs), "a kept object has mask pixels"
            x1, y1, x2, y2 = box.tolist()
            # Bilinear resizing blurs the mask's edge by at most a pixel.
            assert abs(xs.min() - x1) <= 1.5 and abs(ys.min() - y1) <= 1.5
            assert abs(xs.max() + 1 - x2) <= 1.5 and abs(ys.max() + 1 - y2) <= 1.5
            # The object is under its mask (antialiased edges of a 0.1× object are darker).
            assert out["image"][0][mask.bool()].float().mean() > 128
        scales.add(round(float(out["boxes"][:, 2:].sub(out["boxes"][:, :2]).max()), 1))
    assert len(scales) > 6  # the scale really jitters


def test_train_decoder_gives_jittered_targets_and_lvis_flags(source, tmp_path):
    assert convert("lvis", source, tmp_path / "out") == 0
    split = open_detection_split(str(tmp_path / "out"), "train")
    decoder = DetectionTrainDecoder(64, 10, federated=True)
    raws = list(samples_in_order(split.shards.shards))
    for raw in raws:
        record = json.loads(raw["detection.json"])
        sample = decoder(raw, seed=7)
        again = decoder(raw, seed=7)
        assert torch.equal(sample["image"], again["image"])  # the seed decides the jitter
        target = sample["target"]
        assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == torch.uint8
        assert target["masks"].shape[1:] == (64, 64)
        assert set(target["labels"].tolist()) <= {o["label"] + 1 for o in record["objects"]}
        verified = set(target["verified"].nonzero().flatten().tolist())
        expected = {0} | {o["label"] + 1 for o in record["objects"]}
        assert verified == expected | {n + 1 for n in record["neg_labels"]}
    # COCO is exhaustive: no flags.
    plain = DetectionTrainDecoder(64, 10)(raws[0], seed=0)["target"]
    assert "verified" not in plain
    # A broken record is a corrupt sample, which the training loader skips and counts.
    for member in (b"{not json", b'{"objects": [{"bbox": [1, 2], "label": 0}]}', b'{"objects": 3}'):
        with pytest.raises(CorruptSample):
            decoder({**raws[0], "detection.json": member}, seed=0)


def test_federated_classes_leave_unverified_classes_out_of_the_loss():
    verified = torch.tensor([True, True, False, True, False])  # bg, class 1 annotated, 3 negative
    not_exhaustive = torch.tensor([False, True, False, False, False])
    target = {"verified": verified, "not_exhaustive": not_exhaustive}
    labels = [torch.tensor([1, 0])]  # a class-1 RoI and a background RoI
    allowed = federated_classes(labels, [target])
    assert allowed[0].tolist() == [True, True, False, True, False]
    # The background RoI is not pushed away from class 1 (not exhaustively annotated).
    assert allowed[1].tolist() == [True, False, False, True, False]


@pytest.mark.parametrize("objects", [1, 0])
def test_every_trainable_parameter_gets_a_gradient(objects):
    # DDP (find_unused_parameters off) waits for a gradient of every trainable parameter: the
    # trunk's class token, final norm and head are frozen, and a batch without objects still
    # reaches the mask branch.
    from mawsflow.models.vitdet import ViTDetConfig, build_vitdet

    torch.manual_seed(0)
    config = ViTDetConfig(
        arch="vit_tiny_p4",
        num_classes=3,
        img_size=64,
        fpn_channels=16,
        anchor_sizes=(8, 16, 32, 64, 128),
        rois_per_image=16,
        box_head_fc=32,
        box_head_convs=1,
        mask_head_convs=1,
    )
    model = build_vitdet(config).train()
    masks = torch.zeros(objects, 64, 64, dtype=torch.uint8)
    masks[:, 5:30, 5:30] = 1
    target = {
        "boxes": torch.tensor([[5.0, 5.0, 30.0, 30.0]])[:objects],
        "labels": torch.tensor([1])[:objects],
        "masks": masks,
    }
    loss = sum(model([torch.rand(3, 64, 64)] * 2, [target, target]).values())
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert not model.backbone.trunk.cls_token.requires_grad
