"""The CLIP loss: label smoothing, and the gathered 2-process loss (gloo) equal to 1-process."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from mawsflow.models.clip_loss import clip_loss

BATCH, IN_DIM, EMBED = 8, 12, 6


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.nn.Linear, torch.nn.Linear]:
    """A fixed global batch and two projection layers (the trainable part of LiT)."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH, IN_DIM, generator=gen)
    texts = images @ torch.randn(IN_DIM, IN_DIM, generator=gen) * 0.5
    torch.manual_seed(1)
    return images, texts, torch.nn.Linear(IN_DIM, EMBED), torch.nn.Linear(IN_DIM, EMBED)


def _loss(images, texts, image_proj, text_proj):
    return clip_loss(
        F.normalize(image_proj(images), dim=-1),
        F.normalize(text_proj(texts), dim=-1),
        torch.tensor(1 / 0.07),
        label_smoothing=0.1,
    )


def _worker(rank: int, world: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        images, texts, image_proj, text_proj = _batch()
        share = BATCH // world
        rows = slice(rank * share, (rank + 1) * share)
        loss = _loss(images[rows], texts[rows], image_proj, text_proj)
        loss.backward()
        # What the trainer reports (mean of the ranks' losses) and what DDP applies (mean of
        # the ranks' gradients).
        reported = loss.detach().clone()
        dist.all_reduce(reported)
        grads = torch.cat([image_proj.weight.grad.flatten(), text_proj.weight.grad.flatten()])
        dist.all_reduce(grads)
        if rank == 0:
            queue.put((float(reported / world), (grads / world).tolist()))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_gathered_loss_equals_single_process_loss():
    images, texts, image_proj, text_proj = _batch()
    single = _loss(images, texts, image_proj, text_proj)
    single.backward()
    single_grads = torch.cat([image_proj.weight.grad.flatten(), text_proj.weight.grad.flatten()])

    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(_worker, args=(2, _free_port(), queue), nprocs=2, start_method="spawn")
    reported, grads = queue.get()

    assert math.isclose(reported, single.item(), rel_tol=1e-6)
    torch.testing.assert_close(torch.tensor(grads), single_grads, rtol=1e-5, atol=1e-7)


def test_label_smoothing_matches_the_smoothed_cross_entropy_definition():
    gen = torch.Generator().manual_seed(3)
    image = F.normalize(torch.randn(4, 5, generator=gen), dim=-1)
    text = F.normalize(torch.randn(4, 5, generator=gen), dim=-1)
    scale = torch.tensor(10.0)
    loss = clip_loss(image, text, scale, label_smoothing=0.1)

    def smoothed(logits):
        target = torch.full_like(logits, 0.1 / 4) + 0.9 * torch.eye(4)
        return (-(target * logits.log_softmax(dim=1)).sum(dim=1)).mean()

    logits = scale * image @ text.T
    expected = 0.5 * (smoothed(logits) + smoothed(logits.T))
    torch.testing.assert_close(loss, expected)


def test_matching_pairs_score_lower_loss_than_shuffled_pairs():
    features = F.normalize(torch.randn(16, 8), dim=-1)
    scale = torch.tensor(1 / 0.07)
    aligned = clip_loss(features, features, scale, label_smoothing=0.1)
    shuffled = clip_loss(features, features.roll(1, dims=0), scale, label_smoothing=0.1)
    assert aligned < shuffled


def test_mismatched_batch_shapes_are_rejected():
    with pytest.raises(ValueError, match="same shape"):
        clip_loss(torch.zeros(4, 8), torch.zeros(3, 8), torch.tensor(1.0))
