"""Issue 18's "done" check: a tiny ViTDet Cascade Mask R-CNN trained briefly from a tiny
MAE→WSP trunk reaches a box AP clearly above the same detector from a random trunk, through the
real steps (prepare-eval → finetune-detection → eval-detection), and TIDE breaks its errors
down.

The trunk (`vit_tiny_p4`, 32 px) is pretrained here, in two phases on Fashion-MNIST items
pasted on scikit-image photo crops: MAE (the project's `MaskedAutoencoder`, 75% masking), then
supervised classification of the item (WSP's role, one label per image); it is saved as a `wsp`
output with `init: mae`, so the report reads it as MAE→WSP. The random trunk is the same
architecture untrained (`random-init`'s card). Both detectors train with the same recipe,
seed and data order on the detection demo and are scored on its val split.

NOT YET A PASSING CHECK: skipped. At sizes that fit ~3 minutes of two CPU cores (the module
constants: 60 MAE + 300 WSP steps of 64 images, which classify the items at 29%; 400 detector
steps of 4 images) the pretrained trunk gives no robust margin. Box AP on a 32-image val split
(one item each), seeds 0, 1, 2 (2026-12-01, this 2-core machine under load 6–12):

    MAE→WSP trunk   5.08  1.88  3.04   (mean 3.33)
    random trunk    3.00  1.59  5.05   (mean 3.21)
    with layer_decay 0.46 (ViT-L's embedding multiplier at depth 2), 96 val images:
                    MAE→WSP 2.54 1.41 1.82 (random not finished)
    WSP phase on items over a black canvas (59% item accuracy in 49 s, vs 29%):
                    MAE→WSP 3.62 2.95 3.86 (mean 3.48; same data and random trunk as above)

The errors are mostly localisation and background (TIDE at 0.5: Bkgd ~38, Both ~30, Cls ~12
AP points), which 400 steps of the heads do not fix whatever the trunk.

bench/bench_detection_transfer.py's longer regime (300 MAE + 800 WSP steps, 1000 detector
steps: ~20 min on CPU) does show the gap (bench/results/detection_transfer-cpu.log: mean box AP
18.8 vs 14.3 over three seeds), but not at a margin one seed would keep every time. What is
needed: a stronger tiny trunk for the same CPU time (or a cached one), then seeds measured and
MARGIN set from them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fashion_mnist_corpus import require_fashion_mnist
from mawsflow.data.fashion_mnist import DEBIAN_FASHION_MNIST, load_fashion_mnist
from mawsflow.dataset.detection_demo import (
    DetectionDemoSpec,
    generate_detection_demo,
    load_photos,
    photo_crop,
)
from mawsflow.evaluation.classify import NamedTestSet
from mawsflow.models.artifacts import write_model
from mawsflow.models.mae import MaskedAutoencoder
from mawsflow.models.vit import create_trunk
from mawsflow.recipes import load_recipe
from mawsflow.steps import eval_detection, finetune_detection, prepare_eval

ARCH, PRETRAIN_SIZE = "vit_tiny_p4", 32
MAE_STEPS, WSP_STEPS, PRETRAIN_BATCH = 60, 300, 64
DETECTION_STEPS, DETECTION_BATCH = 400, 4
SPEC = DetectionDemoSpec(image_size=64, max_items=1, item_sizes=(24, 32, 40))
# The tiny preset with a learning rate and jitter for 400 steps of a 2-block trunk: no drop
# path, a milder jitter than ViTDet's 0.1–2.0 (a 64 px image at 0.1 is 6 px), and every
# detection kept for AP (a briefly trained detector's scores are low).
DETECTION_SETTINGS = [
    "optimizer.lr=1e-3",
    "augment.scale_range=[0.75,1.25]",
    "model.drop_path=0.0",
    "detector.score_thresh=0.001",
]
# Box AP points the pretrained trunk must add: to be set from measured seeds (module doc).
MARGIN = 2.0
MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skip(reason="no robust pretrained-vs-random margin yet at a 3-minute budget"),
]


class PastedItems:
    """Pretraining batches: one Fashion-MNIST item (half to all of the side) on a photo crop,
    normalised, and the item's class."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.photos = load_photos()
        self.items, self.labels = load_fashion_mnist(DEBIAN_FASHION_MNIST, "train")

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for _ in range(n):
            canvas = photo_crop(self.rng, self.photos, PRETRAIN_SIZE)
            index = int(self.rng.integers(len(self.items)))
            side = int(self.rng.integers(PRETRAIN_SIZE // 2, PRETRAIN_SIZE + 1))
            item = Image.fromarray(self.items[index]).resize((side, side), Image.BILINEAR)
            pixels = np.asarray(item, np.float32)
            top, left = self.rng.integers(0, PRETRAIN_SIZE + 1 - side, size=2)
            mask = pixels > 32
            tint = self.rng.uniform(0.35, 1.0, 3).astype(np.float32)
            canvas[top : top + side, left : left + side][mask] = (pixels[..., None] * tint)[mask]
            images.append(torch.from_numpy(canvas).permute(2, 0, 1) / 255)
            labels.append(int(self.labels[index]))
        return (torch.stack(images) - MEAN) / STD, torch.tensor(labels)


def pretrain_mae_wsp(out: str) -> None:
    torch.manual_seed(0)
    data = PastedItems(seed=0)
    trunk = create_trunk(ARCH, img_size=PRETRAIN_SIZE)
    mae = MaskedAutoencoder(trunk, decoder_depth=1, decoder_dim=64, decoder_heads=4)
    params = [p for p in mae.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
    for _ in range(MAE_STEPS):
        loss = mae(data.batch(PRETRAIN_BATCH)[0])[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    head = torch.nn.Linear(trunk.embed_dim, 10)
    params = list(trunk.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
    for _ in range(WSP_STEPS):
        images, labels = data.batch(PRETRAIN_BATCH)
        loss = F.cross_entropy(head(trunk(images)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    card = {"arch": ARCH, "img_size": PRETRAIN_SIZE, "step": "wsp", "init": "mae"}
    write_model(out, trunk.state_dict(), card, {})


def random_trunk(out: str) -> None:
    torch.manual_seed(0)
    trunk = create_trunk(ARCH, img_size=PRETRAIN_SIZE)
    write_model(
        out,
        trunk.state_dict(),
        {"arch": ARCH, "img_size": PRETRAIN_SIZE, "step": "random-init"},
        {},
    )


@pytest.fixture(scope="module")
def detection_data(tmp_path_factory) -> str:
    require_fashion_mnist()
    root = tmp_path_factory.mktemp("detection_transfer")
    generate_detection_demo(root / "source", images_per_split={"train": 64, "val": 96}, spec=SPEC)
    out = str(root / "coco")
    argv = ["--layout", "coco", "--source", str(root / "source"), "--output", out]
    assert prepare_eval.main(argv) == 0
    return out


def finetune_and_evaluate(trunk: str, data: str, out: str, seed: int) -> dict[str, float]:
    settings = [
        f"init_checkpoint={trunk}",
        f"data.train={data}",
        f"output={out}/model",
        f"runtime.seed={seed}",
        "runtime.device=cpu",
        f"schedule.batch_size={DETECTION_BATCH}",
        f"schedule.samples_per_epoch={DETECTION_STEPS * DETECTION_BATCH}",
        "schedule.epochs=1",
        f"checkpoint.every_steps={DETECTION_STEPS}",
        "runtime.log_every_steps=100",
        *DETECTION_SETTINGS,
    ]
    finetune_detection.run(load_recipe("detection-coco", preset="tiny", overrides=settings))
    result = eval_detection.run(
        f"{out}/model",
        [NamedTestSet("COCO", data, None)],
        f"{out}/eval",
        num_workers=0,
        device="cpu",
    )
    assert result is not None
    return {**result.metrics, "_pretraining": result.pretraining}  # type: ignore[dict-item]


def test_pretrained_trunk_detects_clearly_better_than_a_random_one(detection_data, tmp_path):
    torch.set_num_threads(1)  # two threads of these small kernels are slower on 2 cores
    pretrained, random = str(tmp_path / "mae_wsp"), str(tmp_path / "random")
    pretrain_mae_wsp(pretrained)
    random_trunk(random)
    ours = finetune_and_evaluate(pretrained, detection_data, str(tmp_path / "a"), seed=0)
    control = finetune_and_evaluate(random, detection_data, str(tmp_path / "b"), seed=0)
    assert ours["_pretraining"] == "MAE→WSP"
    assert control["_pretraining"] == "Control (no pretraining)"
    assert ours["coco_box_ap"] > control["coco_box_ap"] + MARGIN, (ours, control)
    # TIDE ran on the predictions: each error's cost is a number of AP points, and fixing every
    # error could not take AP above 100.
    for threshold in ("0.5", "0.75"):
        costs = [
            ours[f"coco_tide_{threshold}_{e}"]
            for e in ("cls", "loc", "both", "dupl", "bkgd", "miss")
        ]
        assert all(0 <= c <= 100 for c in costs)
        assert ours[f"coco_tide_{threshold}_ap"] + sum(costs) <= 100 + 1e-6
        assert sum(costs) > 0  # a briefly trained detector makes errors
