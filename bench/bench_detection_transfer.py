"""Tiny ViTDet Cascade Mask R-CNN from a tiny MAE→WSP-like trunk against the same model from a
random trunk: box AP on the generated detection demo (issue 18's "clearly above" check).

The trunk (`vit_tiny_p4` at 32 px) is pretrained in two phases on Fashion-MNIST items pasted on
scikit-image photo crops: MAE (the project's `MaskedAutoencoder`, 75% masking) and then
supervised classification of the item (WSP's role, with one label per image). It is saved as a
`wsp` step output and loaded by `build_vitdet`, which resamples its position embeddings to the
detector's 64 px. Each detector then trains for the same steps, with the same seeds and data
order, on the demo's train split and is scored with pycocotools on its val split.

    PYTHONPATH=src python bench/bench_detection_transfer.py --mae-steps 300 --wsp-steps 800 \
        --det-steps 1000 --seeds 0 1

One intra-op thread: on a shared 2-core machine two threads of these small kernels are slower.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mawsflow.data.detection import CocoDetectionSamples, collate
from mawsflow.data.fashion_mnist import DEBIAN_FASHION_MNIST, load_fashion_mnist
from mawsflow.dataset.detection_demo import (
    DetectionDemoSpec,
    generate_detection_demo,
    load_photos,
    photo_crop,
)
from mawsflow.evaluation.detection_metrics import coco_metrics
from mawsflow.evaluation.detection_results import to_coco_results
from mawsflow.models.artifacts import write_model
from mawsflow.models.mae import MaskedAutoencoder
from mawsflow.models.vit import create_trunk
from mawsflow.models.vitdet import ViTDetConfig, build_vitdet

# tests/test_detection_model.py's tiny detector: 64 px, a 16×16 token map, small heads.
TINY = ViTDetConfig(
    arch="vit_tiny_p4",
    num_classes=10,
    img_size=64,
    fpn_channels=16,
    anchor_sizes=(8, 16, 32, 64, 128),
    rpn_pre_nms_top_n=(200, 200),
    rpn_post_nms_top_n=(64, 64),
    box_head_convs=1,
    box_head_fc=64,
    mask_head_convs=1,
    rois_per_image=32,
    score_thresh=0.001,
)
MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


class PastedItems:
    """32 px pretraining images: one Fashion-MNIST item (16–32 px) on a photo crop, and its
    class."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.photos = load_photos()
        self.items, self.labels = load_fashion_mnist(DEBIAN_FASHION_MNIST, "train")

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for _ in range(n):
            canvas = photo_crop(self.rng, self.photos, 32)
            index = int(self.rng.integers(len(self.items)))
            side = int(self.rng.integers(16, 33))
            item = Image.fromarray(self.items[index]).resize((side, side), Image.BILINEAR)
            pixels = np.asarray(item, np.float32)
            top, left = self.rng.integers(0, 33 - side, size=2)
            mask = pixels > 32
            tint = self.rng.uniform(0.35, 1.0, 3).astype(np.float32)
            canvas[top : top + side, left : left + side][mask] = (pixels[..., None] * tint)[mask]
            images.append(torch.from_numpy(canvas).permute(2, 0, 1) / 255)
            labels.append(int(self.labels[index]))
        return (torch.stack(images) - MEAN) / STD, torch.tensor(labels)


def pretrain(out: Path, mae_steps: int, wsp_steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    data = PastedItems(seed=0)
    trunk = create_trunk("vit_tiny_p4", img_size=32)
    mae = MaskedAutoencoder(trunk, decoder_depth=1, decoder_dim=64, decoder_heads=4)
    params = [p for p in mae.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
    for _ in range(mae_steps):
        loss = mae(data.batch(64)[0])[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    head = torch.nn.Linear(trunk.embed_dim, 10)
    params = list(trunk.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
    for _ in range(wsp_steps):
        images, labels = data.batch(64)
        loss = F.cross_entropy(head(trunk(images)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    images, labels = data.batch(512)
    with torch.no_grad():
        accuracy = (head(trunk(images)).argmax(1) == labels).float().mean().item()
    card = {"arch": "vit_tiny_p4", "img_size": 32, "step": "wsp", "init": "mae"}
    write_model(str(out), trunk.state_dict(), card, {"steps": mae_steps + wsp_steps})
    return {"classification_accuracy": accuracy}


def finetune(trunk_uri: str | None, demo: dict, steps: int, seed: int) -> dict[str, float]:
    torch.manual_seed(seed)
    model = build_vitdet(TINY, trunk_uri=trunk_uri)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train = CocoDetectionSamples(demo["train"]["images"], demo["train"]["coco"])
    order = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        train, batch_size=4, shuffle=True, collate_fn=collate, generator=order
    )
    model.train()
    step = 0
    while step < steps:
        for images, targets in loader:
            loss = sum(model(images, targets).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step == steps:
                break
    model.eval()
    val = CocoDetectionSamples(demo["val"]["images"], demo["val"]["coco"])
    images, targets = collate([val[i] for i in range(len(val))])
    with torch.no_grad():
        outputs = model(images)
    results = to_coco_results(outputs, [t["image_id"] for t in targets])
    box = coco_metrics(demo["val"]["coco"], results, "bbox").metrics
    mask = coco_metrics(demo["val"]["coco"], results, "segm").metrics
    return {"box_AP": box["AP"], "box_AP50": box["AP50"], "mask_AP": mask["AP"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mae-steps", type=int, default=300)
    parser.add_argument("--wsp-steps", type=int, default=800)
    parser.add_argument("--det-steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--train-images", type=int, default=64)
    parser.add_argument("--val-images", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        started = time.time()
        report: dict = {"pretraining": pretrain(root / "trunk", args.mae_steps, args.wsp_steps)}
        report["pretraining"]["seconds"] = round(time.time() - started, 1)
        spec = DetectionDemoSpec(image_size=TINY.img_size, max_items=2, item_sizes=(16, 24, 32))
        demo = generate_detection_demo(
            root / "demo",
            images_per_split={"train": args.train_images, "val": args.val_images},
            spec=spec,
        )
        for name, uri in (("mae_wsp", str(root / "trunk")), ("random", None)):
            for seed in args.seeds:
                started = time.time()
                result = finetune(uri, demo, args.det_steps, seed)
                result["seconds"] = round(time.time() - started, 1)
                report[f"{name}_seed{seed}"] = result
                print(name, seed, json.dumps(result), flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
