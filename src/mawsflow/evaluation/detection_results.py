"""A detector's outputs as a COCO results list, what `detection_metrics` evaluates.

torchvision-style outputs (per image `boxes` x1, y1, x2, y2; `labels`; `scores`; optionally
`masks` N×1×H×W probabilities) become one dict per detection: `bbox` [x, y, w, h], and for
masks the RLE of the mask thresholded at 0.5 (Mask R-CNN's rule), through pycocotools.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

# A mask probability at or above this is the object's (Mask R-CNN, He et al. 2017, §3).
MASK_THRESHOLD = 0.5


def to_coco_results(
    outputs: Sequence[Mapping[str, torch.Tensor]], image_ids: Sequence[int]
) -> list[dict[str, Any]]:
    """One COCO result dict per detection of `outputs` (one mapping per image of `image_ids`);
    `category_id` is the label as it is (the dataset's category id)."""
    from pycocotools import mask as mask_utils

    results = []
    for output, image_id in zip(outputs, image_ids, strict=True):
        boxes = output["boxes"].detach().cpu().float()
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        labels = output["labels"].tolist()
        scores = output["scores"].tolist()
        rles: list[dict[str, Any] | None] = [None] * len(labels)
        if "masks" in output and len(labels):
            binary = (output["masks"].detach().cpu()[:, 0] >= MASK_THRESHOLD).numpy()
            encoded = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0), np.uint8))
            rles = [{"size": r["size"], "counts": r["counts"].decode("ascii")} for r in encoded]
        for box, label, score, rle in zip(xywh, labels, scores, rles, strict=True):
            result: dict[str, Any] = {
                "image_id": int(image_id),
                "category_id": int(label),
                "bbox": [round(v, 2) for v in box],
                "score": float(score),
            }
            if rle is not None:
                result["segmentation"] = rle
            results.append(result)
    return results
