"""Small real datasets built from Debian's Fashion-MNIST for the LiT and evaluation tests:
an image–caption pretraining dataset (`mawsflow.multilabel/1`, what build-dataset writes) and
evaluation shards (what prepare-eval writes)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from mawsflow.data.fashion_mnist import read_idx
from mawsflow.steps.prepare_eval import PrepareEvalConfig, run

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
# Caption shapes of a social-media post; the hashtag form exercises '#' removal.
CAPTION_SHAPES = (
    "my new {} #ootd",
    "look at this {}!",
    "{} for sale, barely used",
    "#{} of the day",
    "a {} in the shop window",
    "finally found the perfect {}",
)


def require_fashion_mnist() -> None:
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")


def write_caption_dataset(root: Path, *, num_samples: int, samples_per_shard: int = 128) -> Path:
    """Fashion-MNIST training images with captions naming their class, one label each."""
    require_fashion_mnist()
    images = read_idx(str(FASHION_MNIST / "train-images-idx3-ubyte.gz"))[:num_samples]
    labels = read_idx(str(FASHION_MNIST / "train-labels-idx1-ubyte.gz"))[:num_samples]
    rng = np.random.default_rng(0)
    (root / "shards").mkdir(parents=True, exist_ok=True)
    shards = []
    for start in range(0, num_samples, samples_per_shard):
        name = f"shards/train-{start // samples_per_shard:06d}.tar"
        shards.append(name)
        with wds.TarWriter(str(root / name)) as sink:
            for i in range(start, min(start + samples_per_shard, num_samples)):
                png = io.BytesIO()
                Image.fromarray(images[i], mode="L").save(png, format="PNG")
                shape = CAPTION_SHAPES[rng.integers(len(CAPTION_SHAPES))]
                caption = shape.format(CLASSES[labels[i]].lower())
                sink.write(
                    {
                        "__key__": f"{i:08d}",
                        "png": png.getvalue(),
                        "labels.json": json.dumps([int(labels[i])]).encode(),
                        "txt": caption.encode(),
                    }
                )
    vocab = [
        {"index": i, "wnid": f"n{i:08d}", "synset": f"c{i}.n.01", "lemmas": [c], "count": 1}
        for i, c in enumerate(CLASSES)
    ]
    (root / "vocab.json").write_text(json.dumps(vocab))
    manifest = {
        "format": "mawsflow.multilabel/1",
        "shards": shards,
        "num_samples": num_samples,
        "samples_per_shard": samples_per_shard,
        "num_classes": len(CLASSES),
        "vocab": "vocab.json",
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def write_eval_dataset(root: Path, *, limit: int, samples_per_shard: int = 256) -> Path:
    """Fashion-MNIST evaluation shards (train and test splits, `limit` samples each)."""
    require_fashion_mnist()
    run(
        PrepareEvalConfig(
            layout="fashion-mnist",
            source=str(FASHION_MNIST),
            output=str(root),
            limit=limit,
            samples_per_shard=samples_per_shard,
        )
    )
    return root
