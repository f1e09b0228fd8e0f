"""A small pretraining dataset (docs/data-formats.md, `mawsflow.multilabel/1`) made of real
photos: scikit-image's bundled ones, cropped and resized, as PNG, JPEG and WebP shards. The data,
engine and launcher tests train and load from it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image
from skimage import data as skdata

from mawsflow.recipes import AugmentConfig, RandomResizedCropConfig

# Source photos; the photo a sample is cut from is its first label, so WSP can learn it.
PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "immunohistochemistry")
EXTRA_LABELS = 3  # a second, content-free label per sample: every sample has two labels
NUM_CLASSES = len(PHOTOS) + EXTRA_LABELS


def _image_bytes(index: int, size: int, rng: np.random.Generator) -> tuple[str, bytes]:
    photo = getattr(skdata, PHOTOS[index % len(PHOTOS)])()
    h, w = photo.shape[:2]
    side = int(rng.integers(min(h, w) // 3, min(h, w)))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    img = Image.fromarray(photo[top : top + side, left : left + side]).resize((size, size))
    out = io.BytesIO()
    # Grayscale photos as PNG (they must come out RGB), colour ones as JPEG and WebP.
    ext = "png" if img.mode == "L" else ("webp" if index % 5 == 0 else "jpg")
    img.save(out, format={"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[ext])
    return ext, out.getvalue()


def write_pretrain_dataset(
    root: Path,
    *,
    num_samples: int = 96,
    samples_per_shard: int = 32,
    image_size: int = 40,
    corrupt: tuple[int, ...] = (),
    seed: int = 0,
) -> Path:
    """A dataset in the `mawsflow.multilabel/1` format; samples listed in `corrupt` get
    undecodable image bytes."""
    rng = np.random.default_rng(seed)
    (root / "shards").mkdir(parents=True, exist_ok=True)
    shards = []
    for start in range(0, num_samples, samples_per_shard):
        name = f"shards/train-{start // samples_per_shard:06d}.tar"
        shards.append(name)
        with wds.TarWriter(str(root / name)) as sink:
            for i in range(start, min(start + samples_per_shard, num_samples)):
                ext, data = _image_bytes(i, image_size, rng)
                if i in corrupt:
                    data = b"not an image" + data[:20]
                labels = sorted({i % len(PHOTOS), len(PHOTOS) + i % EXTRA_LABELS})
                sink.write(
                    {
                        "__key__": f"{i:08d}",
                        ext: data,
                        "labels.json": json.dumps(labels).encode(),
                        "txt": f"a photo, number {i}".encode(),
                    }
                )
    vocab = [
        {
            "index": i,
            "wnid": f"n{i:08d}",
            "synset": f"class{i}.n.01",
            "lemmas": [f"class{i}"],
            "count": 1,
        }
        for i in range(NUM_CLASSES)
    ]
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "stats.json").write_text(json.dumps({"samples_written": num_samples}))
    manifest = {
        "format": "mawsflow.multilabel/1",
        "shards": shards,
        "num_samples": num_samples,
        "samples_per_shard": samples_per_shard,
        "num_classes": NUM_CLASSES,
        "vocab": "vocab.json",
        "stats": "stats.json",
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def augment_config(size: int = 32) -> AugmentConfig:
    """A small RandomResizedCrop + flip, as the tiny presets use."""
    return AugmentConfig(crop=RandomResizedCropConfig(size=size, scale=(0.2, 1.0)), hflip=0.5)
