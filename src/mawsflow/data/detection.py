"""COCO-format detection data as torch samples: an image and its boxes, labels and masks.

torchvision's `CocoDetection` reads the images and the annotation file (through pycocotools)
and its transforms-v2 wrapper turns each image's annotations into tensors: `boxes` (x1, y1,
x2, y2 pixels), `labels` (the annotations' category ids, used as they are: 0 must stay free
for the background, which COCO's and LVIS's ids, starting at 1, leave), `masks` (N×H×W, from
polygons or RLE). Images without annotations get empty tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torchvision import datasets
from torchvision.transforms import v2

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
