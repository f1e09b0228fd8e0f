"""One arm of issue 18's "pretrained trunk beats a random trunk" check, through the real steps:
prepare-eval → finetune-detection → eval-detection on the generated detection demo.

An arm is a trunk (`--arm pretrained`: a tiny MAE→WSP trunk trained here; `--arm random`: the
same architecture untrained, `random-init`'s card) and one seed, which seeds the trunk's
pretraining and the detector's training alike. Both arms train the detector with the same
recipe (the tiny `detection-coco` preset plus `--set` overrides) on the same demo data, and
print one JSON line: box/mask AP and TIDE at IoU 0.5 (AP points) and the seconds of each phase.
Run the two arms side by side, one intra-op thread each:

    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/bench_detection_transfer.py --arm pretrained \
        --seed 0 --wsp-steps 400 --detector-steps 400 --set schedule.warmup_fraction=0.1 &
    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/bench_detection_transfer.py --arm random \
        --seed 0 --detector-steps 400 --set schedule.warmup_fraction=0.1

The pretrained trunk (`vit_tiny_p4` at 32 px) trains in two phases on Fashion-MNIST items
pasted on scikit-image photo crops, as the demo pastes them: MAE (the project's
`MaskedAutoencoder`, 75% masking), then classification of the item through the class token
(WSP's role, one label per image; linear warmup over a tenth of the steps, then cosine). It is
saved as a `wsp` output with `init: mae`, so the report reads it as MAE→WSP; `--trunk-cache`
keeps it (and reuses it when present) so detector settings can be compared on one trunk.

Measurements: bench/results/detection-transfer-ci-cpu.txt. (bench/results/
detection_transfer-cpu.log came from this file's earlier form, a hand-written training loop:
`git show f9c61a8:bench/bench_detection_transfer.py`.)
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import math
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mawsflow.dataset.detection_demo import (
    DetectionDemoSpec,
    PastedItemImages,
    generate_detection_demo,
)
from mawsflow.evaluation.classify import NamedTestSet
from mawsflow.models.artifacts import write_model
from mawsflow.models.mae import MaskedAutoencoder
from mawsflow.models.vit import create_trunk
from mawsflow.recipes import load_recipe
from mawsflow.steps import eval_detection, finetune_detection, prepare_eval

ARCH, PRETRAIN_SIZE = "vit_tiny_p4", 32
MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
# The detector settings every arm shares (the removed test's): the tiny preset with no drop
# path, a milder jitter than ViTDet's 0.1–2.0 (a 64 px image at 0.1 is 6 px), and every
# detection kept for AP (a briefly trained detector's scores are low).
DETECTOR_SETTINGS = [
    "augment.scale_range=[0.75,1.25]",
    "model.drop_path=0.0",
    "detector.score_thresh=0.001",
]


def pasted_items(data: PastedItemImages, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A normalised batch of pasted items (mawsflow.dataset.detection_demo) and their classes."""
    images, labels = data.batch(n)
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2) / 255
    return (tensor - MEAN) / STD, torch.from_numpy(labels)


def pretrain_mae_wsp(out: Path, args: argparse.Namespace) -> dict[str, float]:
    """MAE then item classification; returns the held-out item accuracy and phase seconds."""
    torch.manual_seed(args.seed)
    data = PastedItemImages(seed=args.seed, size=PRETRAIN_SIZE)
    trunk = create_trunk(ARCH, img_size=PRETRAIN_SIZE)
    started = time.time()
    mae = MaskedAutoencoder(trunk, decoder_depth=1, decoder_dim=64, decoder_heads=4)
    params = [p for p in mae.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.pretrain_lr, weight_decay=0.05)
    for _ in range(args.mae_steps):
        loss = mae(pasted_items(data, args.pretrain_batch)[0])[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    mae_seconds = time.time() - started
    if args.wsp_steps == 0:  # an MAE trunk alone, to compare the phases
        card = {"arch": ARCH, "img_size": PRETRAIN_SIZE, "step": "mae"}
        write_model(str(out), trunk.state_dict(), card, {})
        return {"mae_seconds": round(mae_seconds, 1)}
    head = torch.nn.Linear(trunk.embed_dim, 10)
    params = list(trunk.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.pretrain_lr, weight_decay=0.05)
    warmup = max(1, args.wsp_steps // 10)

    def shape(step: int) -> float:
        return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / args.wsp_steps))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, shape)
    for _ in range(args.wsp_steps):
        images, labels = pasted_items(data, args.pretrain_batch)
        loss = F.cross_entropy(head(trunk(images)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    images, labels = pasted_items(
        PastedItemImages(seed=10_000 + args.seed, size=PRETRAIN_SIZE, pool=512), 512
    )
    with torch.no_grad():
        accuracy = (head(trunk(images)).argmax(1) == labels).float().mean().item()
    card = {"arch": ARCH, "img_size": PRETRAIN_SIZE, "step": "wsp", "init": "mae"}
    write_model(str(out), trunk.state_dict(), card, {})
    return {
        "item_accuracy": round(accuracy, 3),
        "mae_seconds": round(mae_seconds, 1),
        "wsp_seconds": round(time.time() - started - mae_seconds, 1),
    }


def random_trunk(out: Path, seed: int) -> None:
    torch.manual_seed(seed)
    trunk = create_trunk(ARCH, img_size=PRETRAIN_SIZE)
    card = {"arch": ARCH, "img_size": PRETRAIN_SIZE, "step": "random-init"}
    write_model(str(out), trunk.state_dict(), card, {})


def demo_dataset(args: argparse.Namespace) -> str:
    """The demo in COCO layout (prepare-eval's output), made once per shape under --data-root."""
    sizes = tuple(args.item_sizes)
    name = f"demo_{args.train_images}_{args.val_images}_{'-'.join(map(str, sizes))}"
    root = Path(args.data_root) / name
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other arm, started alongside, waits for it
        if not (root / "coco").exists():
            spec = DetectionDemoSpec(image_size=64, max_items=1, item_sizes=sizes)
            images = {"train": args.train_images, "val": args.val_images}
            generate_detection_demo(root / "source", images_per_split=images, spec=spec)
            argv = ["--layout", "coco", "--source", str(root / "source")]
            if prepare_eval.main([*argv, "--output", str(root / "coco")]) != 0:
                raise SystemExit("prepare-eval failed")
    return str(root / "coco")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--arm", choices=("pretrained", "random"), required=True)
    parser.add_argument("--seed", type=int, default=0, help="pretraining and detector seed")
    parser.add_argument("--mae-steps", type=int, default=30)
    parser.add_argument("--wsp-steps", type=int, default=400)
    parser.add_argument("--pretrain-batch", type=int, default=64)
    parser.add_argument("--pretrain-lr", type=float, default=3e-3)
    parser.add_argument("--trunk-cache", help="keep the pretrained trunk here; reuse it if there")
    parser.add_argument("--detector-steps", type=int, default=400)
    parser.add_argument("--detector-batch", type=int, default=4)
    parser.add_argument("--detector-lr", type=float, default=1e-3)
    parser.add_argument("--train-images", type=int, default=64)
    parser.add_argument("--val-images", type=int, default=96)
    parser.add_argument("--item-sizes", type=int, nargs="+", default=[24, 32, 40])
    parser.add_argument(
        "--set", dest="settings", action="append", default=[], help="recipe key=value"
    )
    parser.add_argument("--data-root", default="/tmp/bench_detection_transfer")
    args = parser.parse_args()
    torch.set_num_threads(1)  # two threads of these small kernels are slower on 2 busy cores
    logging.disable(logging.INFO)
    report: dict = {"args": vars(args)}
    started = time.time()
    data = demo_dataset(args)
    report["data_seconds"] = round(time.time() - started, 1)
    scratch = Path(args.data_root) / f"{args.arm}_seed{args.seed}_{time.time_ns()}"
    trunk = scratch / "trunk"
    if args.arm == "random":
        random_trunk(trunk, args.seed)
    elif args.trunk_cache and Path(args.trunk_cache).exists():
        trunk = Path(args.trunk_cache)
        report["pretraining"] = "cached"
    else:
        report["pretraining"] = pretrain_mae_wsp(trunk, args)
        if args.trunk_cache:
            shutil.copytree(trunk, args.trunk_cache)
    steps, batch = args.detector_steps, args.detector_batch
    settings = [
        f"init_checkpoint={trunk}",
        f"data.train={data}",
        f"output={scratch}/model",
        f"runtime.seed={args.seed}",
        "runtime.device=cpu",
        f"schedule.batch_size={batch}",
        f"schedule.samples_per_epoch={steps * batch}",
        "schedule.epochs=1",
        f"checkpoint.every_steps={steps}",
        "runtime.log_every_steps=100",
        f"optimizer.lr={args.detector_lr}",
        *DETECTOR_SETTINGS,
        *args.settings,
    ]
    started = time.time()
    finetune_detection.run(load_recipe("detection-coco", preset="tiny", overrides=settings))
    report["detector_seconds"] = round(time.time() - started, 1)
    started = time.time()
    result = eval_detection.run(
        f"{scratch}/model",
        [NamedTestSet("COCO", data, None)],
        f"{scratch}/eval",
        num_workers=0,
        device="cpu",
    )
    assert result is not None
    report["eval_seconds"] = round(time.time() - started, 1)
    report["lineage"] = result.pretraining
    keep = ("coco_box_ap", "coco_box_ap50", "coco_mask_ap")
    report["metrics"] = {
        k: round(v, 2) for k, v in result.metrics.items() if k in keep or "tide_0.5_" in k
    }
    print(json.dumps(report), flush=True)
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
