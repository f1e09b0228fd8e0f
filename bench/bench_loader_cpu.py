"""Decode-and-augment throughput of the engine's loader per CPU core, against torchvision's
plain PIL pipeline on the same shards.

Both read the same webdataset shards of JPEG photos (scikit-image's bundled pictures, cut and
scaled to 400–1000 px a side, web-photo sizes; quality 90) in one process with one thread,
and produce 224 px uint8 crops:

- engine: `mawsflow.data.loader.StreamDataset` with the recipe's RandomResizedCrop + flip
  (crop box from the header, reduced-scale JPEG decoding when the crop allows, one resampling
  pass, per-sample seeding, block shuffling and position tracking included);
- torchvision: `Image.open(...).convert("RGB")`, `T.RandomResizedCrop(224, bicubic)`,
  `T.RandomHorizontalFlip()`, `T.PILToTensor()` — the usual pipeline.

    python bench/bench_loader_cpu.py [--samples 600]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
import webdataset as wds
from PIL import Image
from skimage import data as skdata
from webdataset.tariterators import group_by_keys, tar_file_expander

from mawsflow.data.decoders import ImageDecoder
from mawsflow.data.loader import StreamDataset
from mawsflow.data.manifest import read_manifest
from mawsflow.recipes import load_recipe

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina")


def write_shards(root: Path, num_samples: int, per_shard: int = 100) -> Path:
    rng = np.random.default_rng(0)
    photos = [getattr(skdata, name)() for name in PHOTOS]
    (root / "shards").mkdir(parents=True)
    shards = []
    for start in range(0, num_samples, per_shard):
        name = f"shards/train-{start // per_shard:06d}.tar"
        shards.append(name)
        with wds.TarWriter(str(root / name)) as sink:
            for i in range(start, min(start + per_shard, num_samples)):
                photo = photos[i % len(photos)]
                h, w = photo.shape[:2]
                side = int(rng.integers(min(h, w) // 2, min(h, w)))
                top = int(rng.integers(0, h - side + 1))
                left = int(rng.integers(0, w - side + 1))
                img = Image.fromarray(photo[top : top + side, left : left + side])
                img = img.resize((int(rng.integers(400, 1001)), int(rng.integers(400, 1001))))
                out = io.BytesIO()
                img.save(out, format="JPEG", quality=90)
                sink.write({"__key__": f"{i:08d}", "jpg": out.getvalue(), "labels.json": b"[0]"})
    last = num_samples - per_shard * (len(shards) - 1)
    manifest = {
        "format": "mawsflow.multilabel/1",
        "shards": shards,
        "num_samples": num_samples,
        "samples_per_shard": per_shard if len(shards) > 1 else last,
        "num_classes": 1,
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def engine_rate(root: Path, recipe_name: str, samples: int) -> float:
    recipe = load_recipe(recipe_name)
    dataset = StreamDataset(
        read_manifest(str(root)),
        ImageDecoder(recipe.augment),
        seed=0,
        rank=0,
        world_size=1,
        shuffle_buffer=recipe.data.shuffle_buffer,
    )
    it = iter(dataset)
    next(it)  # open the first shard and fill the first block outside the timing
    start = time.perf_counter()
    for _ in range(samples):
        next(it)
    return samples / (time.perf_counter() - start)


def torchvision_rate(root: Path, recipe_name: str, samples: int) -> float:
    crop = load_recipe(recipe_name).augment.crop
    transform = T.Compose(
        [
            T.RandomResizedCrop(
                crop.size,
                scale=crop.scale,
                ratio=crop.ratio,
                interpolation=T.InterpolationMode.BICUBIC,
            ),
            T.RandomHorizontalFlip(),
            T.PILToTensor(),
        ]
    )
    shards = json.loads((root / "manifest.json").read_text())["shards"]

    def raw():
        while True:
            for shard in shards:
                with open(root / shard, "rb") as stream:
                    yield from group_by_keys(tar_file_expander([{"url": shard, "stream": stream}]))

    it = raw()
    next(it)
    start = time.perf_counter()
    for _ in range(samples):
        sample = next(it)
        transform(Image.open(io.BytesIO(sample["jpg"])).convert("RGB"))
    return samples / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=600)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_shards(Path(tmp), args.samples)
        print("| recipe (crop scale) | engine img/s/core | torchvision img/s/core | ratio |")
        print("| --- | --- | --- | --- |")
        for name in ("mae", "wsp"):
            scale = load_recipe(name).augment.crop.scale
            ours = engine_rate(root, name, args.samples)
            theirs = torchvision_rate(root, name, args.samples)
            print(
                f"| {name} ({scale[0]}–{scale[1]}) | {ours:.0f} | {theirs:.0f} | "
                f"{ours / theirs:.2f}× |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
