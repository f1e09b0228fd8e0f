"""The CLIP contrastive loss, with label smoothing and features gathered across ranks (LiT).

Each rank scores its own images against every rank's texts, and its own texts against every
rank's images, so the negatives are the whole global batch. The gather is differentiable
(`torch.distributed.nn.functional.all_gather`): its backward sums each rank's gradient for the
features it contributed, and DDP's gradient average then divides that sum by the world size
back down, so the update equals the single-process update on the global batch. The loss a rank
returns covers its own rows; the mean over ranks is the single-process loss.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F


def gather_features(features: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' features concatenated in rank order, and where this rank's rows start.

    Every rank must pass the same batch size: the trainer's equal per-rank batches guarantee it.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features, 0
    gathered = dist_fn.all_gather(features)
    return torch.cat(gathered, dim=0), dist.get_rank() * features.shape[0]


def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Symmetric InfoNCE over the global batch; features must already be L2-normalised.

    image_features, text_features: [B_local, D], row i of each is a matching pair.
    logit_scale: the learned log-temperature's exponential (a scalar tensor).
    """
    if image_features.shape != text_features.shape:
        raise ValueError(
            f"image features {tuple(image_features.shape)} and text features "
            f"{tuple(text_features.shape)} must have the same shape"
        )
    all_images, offset = gather_features(image_features)
    all_texts, _ = gather_features(text_features)
    targets = torch.arange(offset, offset + image_features.shape[0], device=image_features.device)
    logits_per_image = logit_scale * image_features @ all_texts.T
    logits_per_text = logit_scale * text_features @ all_images.T
    return 0.5 * (
        F.cross_entropy(logits_per_image, targets, label_smoothing=label_smoothing)
        + F.cross_entropy(logits_per_text, targets, label_smoothing=label_smoothing)
    )
