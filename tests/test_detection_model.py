"""ViTDet with Cascade Mask R-CNN heads, tiny: the pyramid's strides, loading a pretrained
trunk, and a brief training on the generated detection dataset whose loss falls and whose
predictions the evaluator and TIDE read."""

from __future__ import annotations

import json

import pytest
import torch

from fashion_mnist_corpus import require_fashion_mnist
from mawsflow.data.detection import CocoDetectionSamples, collate
from mawsflow.dataset.detection_demo import DetectionDemoSpec, generate_detection_demo
from mawsflow.errors import ConfigError
from mawsflow.evaluation.detection_metrics import coco_metrics, read_predictions, tide_errors
from mawsflow.evaluation.detection_results import to_coco_results
from mawsflow.models.vitdet import (
    SimpleFeaturePyramid,
    ViTDetConfig,
    build_vitdet,
    global_block_indices,
)
from trunk_artifacts import write_trunk_output

IMG = 64
# The tiny trunk (patch 4) at 64 px: a 16×16 map; pyramid levels of 16, 8, 4, 2 and 1 cells.
TINY = ViTDetConfig(
    arch="vit_tiny_p4",
    num_classes=10,
    img_size=IMG,
    fpn_channels=16,
    anchor_sizes=(8, 16, 32, 64, 128),
    rpn_pre_nms_top_n=(200, 200),
    rpn_post_nms_top_n=(64, 64),
    box_head_convs=1,
    box_head_fc=64,
    mask_head_convs=1,
    rois_per_image=32,
    score_thresh=0.001,  # a briefly trained model's scores are low; keep its detections
)


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared 2-core machine, two threads of these small kernels
    wait on each other more than they compute (measured: 10x slower under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_simple_feature_pyramid_reaches_strides_4_to_64_from_one_map():
    # A patch-16 map (ViT-B/L's) of 8×8 cells is a 128 px image: strides 4, 8, 16, 32 → 32,
    # 16, 8, 4 cells, and the pooled level 2.
    pyramid = SimpleFeaturePyramid(dim=32, patch_size=16, strides=(4, 8, 16, 32), channels=8)
    features = pyramid(torch.randn(2, 32, 8, 8))
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        "0": (2, 8, 32, 32),
        "1": (2, 8, 16, 16),
        "2": (2, 8, 8, 8),
        "3": (2, 8, 4, 4),
        "pool": (2, 8, 2, 2),
    }
    with pytest.raises(ConfigError, match="pyramid_strides"):
        SimpleFeaturePyramid(dim=32, patch_size=16, strides=(12,), channels=8)


def test_global_blocks_are_vitdets_and_windows_keep_attention_local():
    # ViTDet's global blocks: the last of each quarter (ViT-B: 2, 5, 8, 11; ViT-L, ViT-H).
    cfg = ViTDetConfig(arch="vit_b16", num_classes=1)
    assert global_block_indices(12, cfg) == (2, 5, 8, 11)
    assert global_block_indices(24, cfg) == (5, 11, 17, 23)
    assert global_block_indices(32, cfg) == (7, 15, 23, 31)
    assert global_block_indices(2, cfg) == (0, 1)
    with pytest.raises(ConfigError, match="global_blocks"):
        global_block_indices(2, ViTDetConfig(arch="vit_b16", num_classes=1, global_blocks=(5,)))
    torch.manual_seed(0)
    # vit_small_p4 at 64 px: a 16×16 token map in 5×5 windows (padded to 20×20).
    windowed = ViTDetConfig(
        arch="vit_small_p4", num_classes=1, img_size=IMG, window_size=5, global_blocks=()
    )
    backbone = build_vitdet(windowed).backbone.eval()
    images = torch.rand(1, 3, IMG, IMG)
    changed = images.clone()
    changed[..., :8, :8] = 0  # tokens (0..1, 0..1): the first window only
    with torch.no_grad():
        before, after = backbone.patch_features(images), backbone.patch_features(changed)
    moved = (before - after).abs().amax(dim=1)[0] > 1e-5
    assert moved[:5, :5].any() and not moved[5:, :].any() and not moved[:, 5:].any()
    # With one global block, the change reaches every token.
    backbone.global_blocks = frozenset({3})
    with torch.no_grad():
        moved = (backbone.patch_features(images) - backbone.patch_features(changed)).abs()
    assert (moved.amax(dim=1) > 1e-5).all()
    # One window covering the map is global attention.
    backbone.global_blocks = frozenset()
    backbone.window_size = 16
    with torch.no_grad():
        one_window = backbone.patch_features(images)
        backbone.global_blocks = frozenset(range(4))
        torch.testing.assert_close(backbone.patch_features(images), one_window)


def test_detector_starts_from_a_pretrained_trunk(tmp_path):
    uri = str(write_trunk_output(tmp_path / "wsp", step="wsp"))  # trained at 32 px
    saved = build_vitdet(TINY, trunk_uri=uri).backbone.trunk
    random = build_vitdet(TINY).backbone.trunk
    from mawsflow.models.pretrained import load_trunk

    trunk, _ = load_trunk(uri)
    assert torch.equal(saved.blocks[0].attn.qkv.weight, trunk.blocks[0].attn.qkv.weight)
    assert not torch.equal(random.blocks[0].attn.qkv.weight, trunk.blocks[0].attn.qkv.weight)
    # Position embeddings resampled from the 8×8 grid to 16×16 (plus the class token).
    assert saved.pos_embed.shape == (1, 1 + 16 * 16, 64)
    with pytest.raises(ConfigError, match="vit_small_p4"):
        build_vitdet(ViTDetConfig(arch="vit_small_p4", num_classes=10, img_size=IMG), trunk_uri=uri)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    require_fashion_mnist()
    spec = DetectionDemoSpec(image_size=IMG, max_items=2, item_sizes=(16, 24, 32))
    out = tmp_path_factory.mktemp("detection_model")
    return generate_detection_demo(out, images_per_split={"train": 8, "val": 4}, spec=spec)


def test_brief_training_lowers_the_loss_and_predictions_evaluate(demo, tmp_path, one_thread):
    torch.manual_seed(0)
    model = build_vitdet(TINY)
    train = CocoDetectionSamples(demo["train"]["images"], demo["train"]["coco"])
    loader = torch.utils.data.DataLoader(train, batch_size=4, shuffle=True, collate_fn=collate)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    history = []
    for _ in range(10):
        for images, targets in loader:
            losses = model(images, targets)
            assert {"loss_objectness", "loss_mask", "loss_classifier_stage2"} <= set(losses)
            loss = sum(losses.values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history.append(loss.item())
    assert sum(history[-3:]) / 3 < 0.7 * sum(history[:3]) / 3, history

    model.eval()
    val = CocoDetectionSamples(demo["val"]["images"], demo["val"]["coco"])
    images, targets = collate([val[i] for i in range(len(val))])
    with torch.no_grad():
        outputs = model(images)
    for image, output in zip(images, outputs, strict=True):
        boxes = output["boxes"]
        assert (boxes[:, 2:] >= boxes[:, :2]).all() and (boxes <= IMG).all()
        assert output["masks"].shape[1:] == (1, *image.shape[-2:])
    results = to_coco_results(outputs, [t["image_id"] for t in targets])
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps(results))
    for iou_type in ("bbox", "segm"):
        metrics = coco_metrics(demo["val"]["coco"], read_predictions(path), iou_type)
        assert metrics.evaluated == len(results) and not metrics.skipped
        assert all(v is None or 0.0 <= v <= 1.0 for v in metrics.metrics.values())
    assert results, "the trained model detected nothing"
    breakdowns, skipped = tide_errors(demo["val"]["coco"], read_predictions(path))
    assert not skipped and len(breakdowns) == 2
    for breakdown in breakdowns:
        assert 0.0 <= breakdown.ap <= 100.0
        assert sum(breakdown.errors.values()) > 0  # a barely trained model makes mistakes
