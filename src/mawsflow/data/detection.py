"""Detection data as torch samples: an image and its boxes, labels and masks.

Two sources: a COCO-format folder read directly (`CocoDetectionSamples`, for benches and
tests), and the detection shards the pipeline trains on (`mawsflow.data.detection_shards`,
re-exported here), decoded with large-scale jitter by `DetectionTrainDecoder`.

torchvision's `CocoDetection` reads the images and the annotation file (through pycocotools)
and its transforms-v2 wrapper turns each image's annotations into tensors: `boxes` (x1, y1,
x2, y2 pixels), `labels` (the annotations' category ids, used as they are: 0 must stay free
for the background, which COCO's and LVIS's ids, starting at 1, leave), `masks` (N×H×W, from
polygons or RLE). Images without annotations get empty tensors.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import datasets, tv_tensors
from torchvision.transforms import v2

from mawsflow.data.detection_shards import (
    DetectionSplit,
    open_detection_split,
    parse_sample,
)
from mawsflow.data.members import CorruptSample, image_member
from mawsflow.data.transforms import seeded_host_rngs
from mawsflow.errors import DataFormatError

TARGET_KEYS = ("image_id", "boxes", "labels", "masks")


class CocoDetectionSamples(torch.utils.data.Dataset):
    """(image float [0, 1] 3×H×W, target dict with `image_id`, `boxes`, `labels`, `masks`)."""

    def __init__(self, images: str | Path, annotations: str | Path) -> None:
        to_tensor = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
        coco = datasets.CocoDetection(str(images), str(annotations), transform=to_tensor)
        self._samples = datasets.wrap_dataset_for_transforms_v2(coco, target_keys=TARGET_KEYS)
        self.ids = list(coco.ids)

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image, target = self._samples[index]
        size = image.shape[-2:]
        target.setdefault("boxes", torch.zeros((0, 4)))
        target.setdefault("labels", torch.zeros((0,), dtype=torch.int64))
        target.setdefault("masks", torch.zeros((0, *size), dtype=torch.uint8))
        return image.as_subclass(torch.Tensor), {
            "image_id": int(target["image_id"]),
            "boxes": target["boxes"].as_subclass(torch.Tensor).float(),
            "labels": target["labels"].as_subclass(torch.Tensor).long(),
            "masks": target["masks"].as_subclass(torch.Tensor).to(torch.uint8),
        }


def collate(batch: list[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[list, list]:
    """Detection batches are lists: images differ in size and in their number of objects."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


# ---------------------------------------------------------------------------------------------
# Detection shards: decoding and large-scale jitter

# ViTDet's large-scale jitter (Ghiasi et al. 2021; detectron2's coco_loader_lsj): the image is
# resized to a random factor of the target size, then padded or cropped to the target square.
LSJ_SCALE_RANGE = (0.1, 2.0)


def segmentation_masks(segmentations: Sequence[Any], height: int, width: int) -> np.ndarray:
    """COCO segmentations (polygons, or an RLE compressed or not) → N×H×W uint8 masks, through
    pycocotools."""
    from pycocotools import mask as mask_utils

    masks = np.zeros((len(segmentations), height, width), dtype=np.uint8)
    for i, segm in enumerate(segmentations):
        if not segm:
            continue  # an object without a mask (boxes-only data) trains only the box heads
        if isinstance(segm, dict) and isinstance(segm.get("counts"), str):
            rle = segm
        else:
            rles = mask_utils.frPyObjects(segm, height, width)
            rle = mask_utils.merge(rles) if isinstance(rles, list) else rles
        masks[i] = mask_utils.decode(rle)
    return masks


def large_scale_jitter(
    size: int, scale_range: tuple[float, float] = LSJ_SCALE_RANGE, hflip: float = 0.5
) -> v2.Transform:
    """Flip, resize so the image fits a `size` square times a factor drawn from `scale_range`
    (torchvision's ScaleJitter), then pad and crop to that square; boxes and masks go with the
    image, and objects cropped away (or to nothing) are dropped with their labels and masks."""
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(hflip),
            v2.ScaleJitter((size, size), scale_range=scale_range, antialias=True),
            v2.RandomCrop((size, size), pad_if_needed=True, fill=0),
            v2.SanitizeBoundingBoxes(min_size=1.0),
        ]
    )


class DetectionTrainDecoder:
    """Raw detection sample + seed → {"image": uint8 3×S×S, "target": {"boxes" (x1, y1, x2,
    y2), "labels" (contiguous label + 1: 0 is the detector's background), "masks" N×S×S,
    and for LVIS "verified" / "not_exhaustive" class flags}} after large-scale jitter.

    Crowd objects are left out (detectron2 filters them from training too). LVIS's federated
    rules: `verified` marks the classes an image says anything about (its annotated ones, its
    `neg_category_ids` and the background); the detector's classification loss ignores the
    others for this image, so a detection of a class nobody checked in it is not penalised.
    `not_exhaustive` marks annotated classes with missing instances: background RoIs are not
    pushed away from them. Runs in loader workers, so it pickles."""

    def __init__(
        self,
        size: int,
        num_classes: int,
        *,
        scale_range: tuple[float, float] = LSJ_SCALE_RANGE,
        hflip: float = 0.5,
        federated: bool = False,
    ) -> None:
        self.size = size
        self.num_classes = num_classes
        self.scale_range = tuple(scale_range)
        self.hflip = hflip
        self.federated = federated

    def __call__(self, raw: Mapping[str, Any], seed: int) -> dict[str, Any]:
        with Image.open(io.BytesIO(image_member(raw))) as img:
            pixels = np.array(img.convert("RGB"))
        height, width = pixels.shape[:2]
        try:
            record = parse_sample(dict(raw))
            objects = [o for o in record["objects"] if not o.get("iscrowd")]
            labels = torch.tensor([int(o["label"]) for o in objects], dtype=torch.int64)
            xywh = torch.tensor([o["bbox"] for o in objects], dtype=torch.float32).reshape(-1, 4)
            masks = segmentation_masks([o.get("segmentation") for o in objects], height, width)
        except (
            DataFormatError,
            KeyError,
            TypeError,
            ValueError,
            IndexError,
            AttributeError,
            RuntimeError,
        ) as exc:
            # The loader skips and counts a CorruptSample; a broken record must not stop a run.
            key = raw.get("__key__", "?")
            raise CorruptSample(f"sample {key}: bad detection record ({exc})") from exc
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise CorruptSample(f"labels {labels.tolist()} outside {self.num_classes} classes")
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
        sample = {
            "image": tv_tensors.Image(torch.from_numpy(pixels).permute(2, 0, 1)),
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
            "masks": tv_tensors.Mask(torch.from_numpy(masks)),
            "labels": labels + 1,
        }
        with seeded_host_rngs(seed):
            out = large_scale_jitter(self.size, self.scale_range, self.hflip)(sample)
        target: dict[str, torch.Tensor] = {
            "boxes": out["boxes"].as_subclass(torch.Tensor).float(),
            "labels": out["labels"],
            "masks": out["masks"].as_subclass(torch.Tensor).to(torch.uint8),
        }
        if self.federated:
            verified = torch.zeros(self.num_classes + 1, dtype=torch.bool)
            verified[0] = True
            verified[labels + 1] = True
            verified[torch.tensor(record.get("neg_labels", []), dtype=torch.int64) + 1] = True
            not_exhaustive = torch.zeros(self.num_classes + 1, dtype=torch.bool)
            ne = torch.tensor(record.get("not_exhaustive_labels", []), dtype=torch.int64)
            not_exhaustive[ne + 1] = True
            target["verified"] = verified
            target["not_exhaustive"] = not_exhaustive
        return {"image": out["image"].as_subclass(torch.Tensor), "target": target}


__all__ = [
    "CocoDetectionSamples",
    "DetectionSplit",
    "DetectionTrainDecoder",
    "collate",
    "large_scale_jitter",
    "open_detection_split",
    "segmentation_masks",
]
