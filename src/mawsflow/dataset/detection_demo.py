"""A small real-format detection dataset for the tests and the demo: Fashion-MNIST items pasted
onto real photos, annotated in COCO and LVIS JSON.

No detection data ships on the package registries, so the project makes its own, in the two
formats the evaluator (`mawsflow.evaluation.detection_metrics`) and the converters read. Each
image is a random crop of one of scikit-image's bundled photographs (`skimage.data`: real
camera images under permissive licences) with a few Fashion-MNIST items (Debian's
dataset-fashion-mnist) pasted on at several scales, so the objects span COCO's small, medium and
large area ranges. An item's instance mask is its own pixels above a threshold (the items lie
on a black background), so every box and mask is exact.

```
<out>/images/<split>/<id:06d>.jpg
<out>/annotations/instances_<split>.json   COCO: images, annotations (bbox, polygon
                                           segmentation, area, iscrowd), categories
<out>/annotations/lvis_v1_<split>.json     LVIS v1: the same plus each image's
                                           neg_category_ids / not_exhaustive_category_ids and
                                           each category's frequency (r/c/f)
```

LVIS is a federated dataset: an image lists the categories verified absent from it
(`neg_category_ids`) and those whose instances were not all annotated
(`not_exhaustive_category_ids`); the evaluator ignores unmatched detections of a category an
image neither has nor lists as negative. The generator knows every object, so to exercise those
rules the LVIS file drops all but one instance of a category in some images and marks that
category not exhaustive there, as LVIS's annotators did; the COCO file keeps every instance.

Everything is decided by RNGs seeded with (seed, split, index): the same arguments give the same
files.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mawsflow.data.fashion_mnist import CLASSES, DEBIAN_FASHION_MNIST, load_fashion_mnist
from mawsflow.errors import ConfigError

log = logging.getLogger(__name__)

# scikit-image's bundled photographs (real camera images, no download needed). Grey ones are
# stacked to RGB.
PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "camera",
    "immunohistochemistry",
    "hubble_deep_field",
    "brick",
    "grass",
    "gravel",
)
# A Fashion-MNIST pixel above this (of 255) belongs to the item; the background is 0.
MASK_THRESHOLD = 32
# LVIS's frequency groups: rare in at most 10 training images, common in 11–100, frequent in
# more (Gupta et al., LVIS, §3).
LVIS_FREQUENCY_THRESHOLDS = (10, 100)
# Each Fashion-MNIST class's WordNet synset: LVIS v1 keys its categories by synset (TIDE's LVIS
# loader names classes by it).
SYNSETS = (
    "jersey.n.03",  # T-shirt, tee shirt
    "trouser.n.01",
    "sweater.n.01",  # pullover
    "dress.n.01",
    "coat.n.01",
    "sandal.n.01",
    "shirt.n.01",
    "running_shoe.n.01",  # sneaker
    "bag.n.04",  # handbag
    "boot.n.01",
)
SPLITS = ("train", "val")
# Fashion-MNIST split the items of each detection split come from (no item is in both).
_ITEM_SPLIT = {"train": "train", "val": "test"}
_SPLIT_SALT = {"train": 0, "val": 1}


@dataclass(frozen=True)
class DetectionDemoSpec:
    """Shape of the generated images: square `image_size` canvases holding `min_items` to
    `max_items` items, each resized to a side drawn from `item_sizes` (pixels).

    `class_weights` (one per Fashion-MNIST class, default uniform) skews how often each class is
    drawn, so that LVIS's rare/common/frequent groups are all populated; `frequency_thresholds`
    are the image counts that separate them (LVIS's own are (10, 100), for 100K images: a small
    demo passes smaller ones). `not_exhaustive_rate` is the chance that an image's LVIS
    annotation of one of its categories with several instances keeps only one of them."""

    image_size: int = 160
    min_items: int = 1
    max_items: int = 4
    # Sides whose masks fall in COCO's small (< 32²), medium and large (> 96²) area ranges.
    item_sizes: tuple[int, ...] = (12, 24, 48, 80, 144)
    class_weights: tuple[float, ...] | None = None
    frequency_thresholds: tuple[int, int] = LVIS_FREQUENCY_THRESHOLDS
    negatives_per_image: int = 2
    not_exhaustive_rate: float = 0.25

    def check(self) -> None:
        if self.image_size < 16:
            raise ConfigError(f"image_size: {self.image_size} is below 16 pixels")
        if not 1 <= self.min_items <= self.max_items:
            raise ConfigError(
                f"min_items/max_items: need 1 <= {self.min_items} <= {self.max_items}"
            )
        if not self.item_sizes or min(self.item_sizes) < 4:
            raise ConfigError(f"item_sizes: {self.item_sizes} needs sides of at least 4 px")
        if max(self.item_sizes) > self.image_size:
            raise ConfigError(
                f"item_sizes: {max(self.item_sizes)} px does not fit a {self.image_size} px image"
            )
        if self.class_weights is not None and (
            len(self.class_weights) != len(CLASSES) or min(self.class_weights) < 0
        ):
            raise ConfigError(
                f"class_weights: need {len(CLASSES)} non-negative weights, got {self.class_weights}"
            )
        low, high = self.frequency_thresholds
        if not 0 < low < high:
            raise ConfigError(f"frequency_thresholds: need 0 < rare < common, got {low}, {high}")


@dataclass(frozen=True)
class _Instance:
    category_id: int
    mask: np.ndarray  # bool, image_size × image_size


def load_photos() -> list[np.ndarray]:
    """scikit-image's bundled photographs (`PHOTOS`) as RGB uint8 arrays."""
    try:
        from skimage import data as skdata  # only this generator needs scikit-image
    except ImportError as exc:  # pragma: no cover - scikit-image is in the test extra
        raise ConfigError(
            "the detection demo needs scikit-image's bundled photos: pip install scikit-image"
        ) from exc
    photos = []
    for name in PHOTOS:
        photo = np.asarray(getattr(skdata, name)())
        if photo.ndim == 2:
            photo = np.stack([photo] * 3, axis=-1)
        photos.append(np.ascontiguousarray(photo[..., :3]).astype(np.uint8))
    return photos


def photo_crop(rng: np.random.Generator, photos: list[np.ndarray], size: int) -> np.ndarray:
    """A random square crop of a random photo, resized to `size`: float32 RGB in [0, 255]."""
    photo = photos[rng.integers(len(photos))]
    height, width = photo.shape[:2]
    side = int(rng.integers(min(size, height, width), min(height, width) + 1))
    top = int(rng.integers(height - side + 1))
    left = int(rng.integers(width - side + 1))
    crop = Image.fromarray(photo[top : top + side, left : left + side])
    return np.asarray(crop.resize((size, size), Image.BILINEAR), dtype=np.float32)


class PastedItemImages:
    """Classification batches pasted the way the demo pastes its items, for pretraining a tiny
    trunk on what a detector will see (tests/test_detection_transfer.py and its bench): one
    Fashion-MNIST training item per image (half to all of the side, tinted, inside its mask) on
    a photo crop, with the item's class. The crops come from a pool made once: cropping and
    resizing a whole photo per image costs more than a tiny trunk's training step."""

    def __init__(
        self,
        seed: int,
        size: int,
        pool: int = 2048,
        fashion_mnist_dir: str = DEBIAN_FASHION_MNIST,
    ) -> None:
        self.size = size
        self.rng = np.random.default_rng(seed)
        photos = load_photos()
        self.backgrounds = [photo_crop(self.rng, photos, size) for _ in range(pool)]
        self.items, self.labels = load_fashion_mnist(fashion_mnist_dir, "train")

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """`n` images, (n, size, size, 3) float32 RGB in [0, 255], and their classes (int64)."""
        images, labels = [], []
        for _ in range(n):
            canvas = self.backgrounds[int(self.rng.integers(len(self.backgrounds)))].copy()
            index = int(self.rng.integers(len(self.items)))
            side = int(self.rng.integers(self.size // 2, self.size + 1))
            item = Image.fromarray(self.items[index]).resize((side, side), Image.BILINEAR)
            pixels = np.asarray(item, np.float32)
            top, left = self.rng.integers(0, self.size + 1 - side, size=2)
            mask = pixels > MASK_THRESHOLD
            tint = self.rng.uniform(0.35, 1.0, 3).astype(np.float32)
            canvas[top : top + side, left : left + side][mask] = (pixels[..., None] * tint)[mask]
            images.append(canvas)
            labels.append(int(self.labels[index]))
        return np.stack(images), np.asarray(labels, dtype=np.int64)


def _place(
    rng: np.random.Generator, side: int, size: int, taken: list[tuple[int, int, int]]
) -> tuple[int, int] | None:
    """A top-left corner for a `side`-pixel item that overlaps no item already placed (so no
    mask is occluded and every box stays exact), or None after a few tries."""
    for _ in range(20):
        top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        if all(
            top + side <= other_top
            or other_top + other_side <= top
            or left + side <= other_left
            or other_left + other_side <= left
            for other_top, other_left, other_side in taken
        ):
            return top, left
    return None


def _render(
    rng: np.random.Generator,
    spec: DetectionDemoSpec,
    photos: list[np.ndarray],
    items: np.ndarray,
    labels: np.ndarray,
    class_p: np.ndarray,
) -> tuple[np.ndarray, list[_Instance]]:
    size = spec.image_size
    canvas = photo_crop(rng, photos, size)
    taken: list[tuple[int, int, int]] = []
    instances: list[_Instance] = []
    for _ in range(int(rng.integers(spec.min_items, spec.max_items + 1))):
        label = int(rng.choice(len(CLASSES), p=class_p))
        candidates = np.flatnonzero(labels == label)
        item = items[candidates[rng.integers(len(candidates))]]
        side = int(rng.choice(spec.item_sizes))
        corner = _place(rng, side, size, taken)
        if corner is None:
            continue
        top, left = corner
        taken.append((top, left, side))
        pixels = np.asarray(Image.fromarray(item).resize((side, side), Image.BILINEAR))
        local = pixels > MASK_THRESHOLD
        if not local.any():
            continue
        # The item's own shading, tinted a random colour, replaces the photo inside its mask.
        tint = rng.uniform(0.35, 1.0, size=3).astype(np.float32)
        shade = pixels[..., None].astype(np.float32) * tint
        window = canvas[top : top + side, left : left + side]
        window[local] = shade[local]
        mask = np.zeros((size, size), dtype=bool)
        mask[top : top + side, left : left + side] = local
        instances.append(_Instance(category_id=label + 1, mask=mask))
    return np.clip(canvas, 0, 255).astype(np.uint8), instances


def _polygons(mask: np.ndarray) -> list[list[float]]:
    """The mask's outlines as COCO polygons [x1, y1, x2, y2, ...] in pixel-corner coordinates."""
    from skimage import measure

    padded = np.pad(mask, 1).astype(np.float32)
    polygons = []
    for contour in measure.find_contours(padded, 0.5):
        contour = measure.approximate_polygon(contour, tolerance=0.5) - 1  # undo the pad
        if len(contour) < 3:
            continue
        # find_contours gives (row, col) of pixel centres; COCO's pixel (x, y) covers
        # [x, x+1), so the centre of pixel x is x + 0.5.
        xy = contour[:, ::-1] + 0.5
        polygons.append([round(float(v), 2) for v in xy.reshape(-1)])
    return polygons


def _annotation(instance: _Instance, ann_id: int, image_id: int) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    ys, xs = np.nonzero(instance.mask)
    x0, y0 = int(xs.min()), int(ys.min())
    bbox = [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0]
    polygons = _polygons(instance.mask)
    height, width = instance.mask.shape
    # The area COCOeval and LVISEval compare with the area ranges is the segmentation's, as
    # they decode it: the polygons' rasterised area.
    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": instance.category_id,
        "bbox": bbox,
        "segmentation": polygons,
        "area": float(mask_utils.area(rle)),
        "iscrowd": 0,
    }


def _lvis_frequency(image_count: int, thresholds: tuple[int, int]) -> str:
    rare, common = thresholds
    return "r" if image_count <= rare else "c" if image_count <= common else "f"


def generate_detection_demo(
    out_dir: str | Path,
    *,
    images_per_split: dict[str, int],
    spec: DetectionDemoSpec | None = None,
    seed: int = 0,
    fashion_mnist_dir: str = DEBIAN_FASHION_MNIST,
) -> dict[str, dict[str, Path]]:
    """Write the demo detection dataset under `out_dir`; returns, per split, the paths of its
    `images` directory and its `coco` and `lvis` annotation files."""
    spec = spec or DetectionDemoSpec()
    spec.check()
    unknown = set(images_per_split) - set(SPLITS)
    if unknown:
        raise ConfigError(f"images_per_split: unknown splits {sorted(unknown)}; known {SPLITS}")
    out = Path(out_dir)
    photos = load_photos()
    weights = np.asarray(spec.class_weights or [1.0] * len(CLASSES), dtype=np.float64)
    class_p = weights / weights.sum()
    written: dict[str, dict[str, Path]] = {}
    lvis_categories: list[dict[str, Any]] | None = None
    for split in SPLITS:
        if split not in images_per_split:
            continue
        items, labels = load_fashion_mnist(fashion_mnist_dir, _ITEM_SPLIT[split])
        image_dir = out / "images" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        images: list[dict[str, Any]] = []
        coco_anns: list[dict[str, Any]] = []
        lvis_anns: list[dict[str, Any]] = []
        for index in range(images_per_split[split]):
            rng = np.random.default_rng([seed, _SPLIT_SALT[split], index])
            pixels, instances = _render(rng, spec, photos, items, labels, class_p)
            image_id = index + 1
            file_name = f"{image_id:06d}.jpg"
            Image.fromarray(pixels).save(image_dir / file_name, quality=95)
            anns = [
                _annotation(inst, len(coco_anns) + k + 1, image_id)
                for k, inst in enumerate(instances)
            ]
            coco_anns.extend(anns)
            present = sorted({a["category_id"] for a in anns})
            absent = [c for c in range(1, len(CLASSES) + 1) if c not in present]
            negatives = sorted(
                int(c)
                for c in rng.choice(
                    absent, size=min(spec.negatives_per_image, len(absent)), replace=False
                )
            )
            counts = Counter(a["category_id"] for a in anns)
            several = [c for c in present if counts[c] > 1]
            not_exhaustive: list[int] = []
            kept = anns
            if several and rng.random() < spec.not_exhaustive_rate:
                dropped_category = int(rng.choice(several))
                not_exhaustive = [dropped_category]
                first = next(a for a in anns if a["category_id"] == dropped_category)
                kept = [a for a in anns if a["category_id"] != dropped_category or a is first]
            lvis_anns.extend(kept)
            images.append(
                {
                    "id": image_id,
                    "file_name": file_name,
                    # LVIS v1 names an image by its COCO URL; here, its relative path.
                    "coco_url": f"images/{split}/{file_name}",
                    "height": spec.image_size,
                    "width": spec.image_size,
                    "neg_category_ids": negatives,
                    "not_exhaustive_category_ids": not_exhaustive,
                }
            )
        coco_categories = [
            {"id": i + 1, "name": name, "supercategory": "fashion"}
            for i, name in enumerate(CLASSES)
        ]
        if lvis_categories is None:
            # Frequency groups come from the training split's image counts, as LVIS's do; a
            # validation-only dataset counts its own images.
            image_counts = Counter((a["image_id"], a["category_id"]) for a in lvis_anns)
            per_category = Counter(cat for _, cat in image_counts)
            instance_counts = Counter(a["category_id"] for a in lvis_anns)
            lvis_categories = [
                {
                    **cat,
                    "frequency": _lvis_frequency(
                        per_category[cat["id"]], spec.frequency_thresholds
                    ),
                    "image_count": per_category[cat["id"]],
                    "instance_count": instance_counts[cat["id"]],
                    "synonyms": [cat["name"]],
                    "synset": synset,
                }
                for cat, synset in zip(coco_categories, SYNSETS, strict=True)
            ]
        ann_dir = out / "annotations"
        ann_dir.mkdir(parents=True, exist_ok=True)
        info = {"description": "mawsflow detection demo", "seed": seed, "split": split}
        coco_images = [
            {k: v for k, v in img.items() if k in ("id", "file_name", "height", "width")}
            for img in images
        ]
        coco_path = ann_dir / f"instances_{split}.json"
        coco_path.write_text(
            json.dumps(
                {
                    "info": info,
                    "images": coco_images,
                    "annotations": coco_anns,
                    "categories": coco_categories,
                }
            )
        )
        lvis_path = ann_dir / f"lvis_v1_{split}.json"
        lvis_path.write_text(
            json.dumps(
                {
                    "info": info,
                    "images": images,
                    "annotations": lvis_anns,
                    "categories": lvis_categories,
                }
            )
        )
        written[split] = {"images": image_dir, "coco": coco_path, "lvis": lvis_path}
        log.info(
            "detection demo split written",
            extra={"split": split, "images": len(images), "instances": len(coco_anns)},
        )
    return written
