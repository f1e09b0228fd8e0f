"""Evaluating a finetuned video classifier with the multi-view test protocol.

Each video gives `test_clips` temporal × `test_crops` spatial views (`mawsflow.data.video`);
the model's logits are averaged over them and the average is scored as one prediction (top-1,
top-5). Videos that cannot be used are skipped and counted by reason (corrupt, empty, too
short); the accuracy is over the videos that were scored, and the counts go into the metrics so
that a test set that lost videos says so.

A finetuned model's card (`mawsflow finetune-video`'s `model.json`) says how it was trained to see
video: its clip sampling and the recipe's test views, which `mawsflow eval-video` reads back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist

from mawsflow import storage
from mawsflow.data.eval_shards import EvalSplit
from mawsflow.data.transforms import normalize_images
from mawsflow.data.video import ClipSampling, MultiView, video_eval_loader
from mawsflow.data.video_probe import SKIP_REASONS
from mawsflow.data.video_shards import open_video_split
from mawsflow.evaluation.classification_metrics import ClassificationMeter
from mawsflow.evaluation.classify import NamedTestSet
from mawsflow.recipes import VideoConfig


def open_video_test_split(test_set: NamedTestSet) -> EvalSplit:
    """The named split, else `test`, else `val` (K400 and SSv2 are scored on their val sets)."""
    if test_set.split is not None:
        return open_video_split(test_set.dataset, test_set.split)
    has_test = storage.exists(storage.join(test_set.dataset, "test", "manifest.json"))
    return open_video_split(test_set.dataset, "test" if has_test else "val")


def card_sampling(card: Mapping[str, Any]) -> ClipSampling:
    """The clip sampling a finetuned video model was trained with (its card's `video`)."""
    video = card["video"]
    return ClipSampling(int(video["num_frames"]), float(video["clip_seconds"]))


def card_views(
    card: Mapping[str, Any], clips: int | None = None, crops: int | None = None
) -> MultiView:
    """The multi-view protocol for a finetuned video model: `clips` × `crops` views, by default
    its recipe's (the card's `video`; VideoConfig's for cards that predate them), at its size."""
    video, default = card["video"], VideoConfig()
    return MultiView(
        clips or int(video.get("test_clips", default.test_clips)),
        crops or int(video.get("test_crops", default.test_crops)),
        int(card["img_size"]),
    )


def normalize_clips(clips: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
    """uint8 [B, 3, T, H, W] → float32 in [0, 1], ImageNet-normalised per channel."""
    batch, chans, frames, height, width = clips.shape
    flat = normalize_images(
        clips.reshape(batch, chans, frames * height, width), normalize=normalize
    )
    return flat.reshape(batch, chans, frames, height, width)


@torch.no_grad()
def evaluate_video_classifier(
    model: torch.nn.Module,
    split: EvalSplit,
    sampling: ClipSampling,
    views: MultiView,
    *,
    device: torch.device,
    num_workers: int,
    normalize: bool = True,
    views_per_forward: int = 32,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, float]:
    """Accuracies (percent) of `model` on `split` and the skipped-video counts, summed over
    ranks."""
    model.eval()
    meter = ClassificationMeter(ks=(1, 5))
    skipped = torch.zeros(len(SKIP_REASONS), dtype=torch.int64)
    no_real = torch.zeros(1, split.num_classes, dtype=torch.bool)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    loader = video_eval_loader(
        split, sampling, views, num_workers=num_workers, rank=rank, world_size=world_size
    )
    for video_views, label, reason in loader:
        if video_views is None:
            skipped[SKIP_REASONS.index(reason)] += 1
            continue
        logits = []
        for chunk in video_views.split(views_per_forward):
            with autocast:
                clips = normalize_clips(chunk.to(device, non_blocking=True), normalize=normalize)
                logits.append(model(clips).float().cpu())
        mean = torch.cat(logits).mean(dim=0, keepdim=True)
        meter.update(mean, torch.tensor([label]), no_real)
    meter.all_reduce()
    if dist.is_initialized():
        dist.all_reduce(skipped)
    metrics = meter.compute()
    for reason, count in zip(SKIP_REASONS, skipped.tolist(), strict=True):
        metrics[f"skipped_{reason}"] = float(count)
    return metrics
