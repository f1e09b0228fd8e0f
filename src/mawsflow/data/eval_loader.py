"""Evaluation splits (`mawsflow.data.eval_shards`) as a torch dataset and loader.

Each sample becomes (image uint8 [3, H, W], label, ReaL multi-hot [C]); the image is the
evaluation view of `mawsflow.data.transforms.eval_image`.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mawsflow.data.eval_shards import EvalSplit, parse_label, parse_real_labels
from mawsflow.data.members import image_member
from mawsflow.data.shards import samples_in_order
from mawsflow.data.transforms import DEFAULT_CROP_PCT, check_crop_pct, eval_image


def real_labels_multi_hot(labels: list[int], num_classes: int) -> torch.Tensor:
    """[C] bool: True at the sample's ReaL-style correct labels (all False when it has none)."""
    out = torch.zeros(num_classes, dtype=torch.bool)
    out[labels] = True
    return out


class EvalSamples(IterableDataset):
    """(image uint8 [3, H, W], label, ReaL multi-hot [C]) of a split, in shard order.

    Shards are dealt round-robin to (rank, worker) pairs, so every sample is read exactly once
    across a distributed job. `keys` keeps only the named samples (a low-shot split).
    """

    def __init__(
        self,
        split: EvalSplit,
        *,
        img_size: int,
        crop_pct: float | None = DEFAULT_CROP_PCT,
        rank: int = 0,
        world_size: int = 1,
        keys: frozenset[str] | None = None,
    ) -> None:
        check_crop_pct(crop_pct)
        self.split = split
        self.img_size = img_size
        self.crop_pct = crop_pct
        self.rank = rank
        self.world_size = world_size
        self.keys = keys

    def _my_shards(self) -> list[str]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        reader, readers = self.rank * workers + worker, self.world_size * workers
        return list(self.split.shards[reader::readers])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int, torch.Tensor]]:
        num_classes = self.split.num_classes
        for raw in samples_in_order(self._my_shards()):
            if self.keys is not None and raw["__key__"] not in self.keys:
                continue
            image = eval_image(image_member(raw), self.img_size, self.crop_pct)
            label = parse_label(raw, num_classes)
            real = real_labels_multi_hot(parse_real_labels(raw, num_classes), num_classes)
            yield image, label, real


def eval_loader(
    split: EvalSplit,
    *,
    img_size: int,
    batch_size: int,
    num_workers: int,
    crop_pct: float | None = DEFAULT_CROP_PCT,
    rank: int = 0,
    world_size: int = 1,
    keys: frozenset[str] | None = None,
) -> DataLoader:
    """Batches of (images uint8 [B, 3, H, W], labels [B], ReaL multi-hot [B, C])."""
    dataset = EvalSamples(
        split, img_size=img_size, crop_pct=crop_pct, rank=rank, world_size=world_size, keys=keys
    )
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
