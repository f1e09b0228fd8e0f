"""Sample decoders: a raw webdataset sample → the tensors a training task reads.

A decoder is called as `decode(raw, seed)`; `seed` (`mawsflow.data.shards.sample_seed`) drives
every random choice of the sample's augmentation. What it raises for a broken sample is one of
`mawsflow.data.members.CORRUPT_SAMPLE_ERRORS`, which the loader skips and counts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import torch

from mawsflow.data.eval_shards import parse_label
from mawsflow.data.members import CorruptSample, image_member
from mawsflow.data.transforms import RandomResizedCropFlip
from mawsflow.recipes import AugmentConfig

SampleDecoder = Callable[[Mapping[str, Any], int], dict[str, Any]]


def parse_labels(raw: Mapping[str, Any], num_classes: int) -> torch.Tensor:
    """The sample's `labels.json`: a non-empty list of vocabulary indices."""
    if "labels.json" not in raw:
        raise CorruptSample("no labels.json member")
    labels = json.loads(raw["labels.json"])
    if (
        not isinstance(labels, list)
        or not labels
        or not all(isinstance(i, int) and not isinstance(i, bool) for i in labels)
    ):
        raise CorruptSample(f"labels.json must be a non-empty list of integers, got {labels!r}")
    if min(labels) < 0 or max(labels) >= num_classes:
        raise CorruptSample(f"labels {labels} outside the vocabulary of {num_classes}")
    return torch.tensor(labels, dtype=torch.int64)


class ImageDecoder:
    """Raw sample → {"image"} (MAE)."""

    def __init__(self, augment: AugmentConfig) -> None:
        self.augment = RandomResizedCropFlip(augment)

    def __call__(self, raw: Mapping[str, Any], seed: int) -> dict[str, torch.Tensor]:
        return {"image": self.augment(image_member(raw), seed)}


class ImageLabelsDecoder:
    """Raw sample → the augmented image and its labels, as one of the two shard formats holds
    them:

    - multi-label pretraining shards (WSP): `labels.json`, vocabulary indices of varying
      number → {"image", "labels"};
    - classification shards (`single_label=True`: finetuning, VPT): `.cls`, one class index →
      {"image", "label"}.
    """

    def __init__(
        self, augment: AugmentConfig, num_classes: int, *, single_label: bool = False
    ) -> None:
        self.augment = RandomResizedCropFlip(augment)
        self.num_classes = num_classes
        self.single_label = single_label

    def __call__(self, raw: Mapping[str, Any], seed: int) -> dict[str, torch.Tensor]:
        if self.single_label:
            label = torch.tensor(parse_label(raw, self.num_classes), dtype=torch.int64)
            return {"image": self.augment(image_member(raw), seed), "label": label}
        labels = parse_labels(raw, self.num_classes)
        return {"image": self.augment(image_member(raw), seed), "labels": labels}
