"""Process groups and model wrapping for torchrun launches.

One process per accelerator (or per CPU worker in tests). torchrun's environment (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) decides whether a process group is created; NCCL on
GPUs, gloo on the CPU. Replicated data parallelism (DDP) serves models up to ViT-H; the 2B and
6.5B models are sharded with FSDP2 (`fully_shard`), one unit per transformer block plus the
root, as torchtitan does.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    CheckpointImpl,
    checkpoint_wrapper,
)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel

log = logging.getLogger(__name__)

Parallelism = Literal["ddp", "fsdp"]


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def init_distributed(
    device: Literal["auto", "cpu", "cuda"] = "auto", *, timeout_s: float = 1800.0
) -> DistributedContext:
    """Join the torchrun job this process belongs to (or run alone without one)."""
    rank = _env_int("RANK", 0)
    world_size = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device is cuda but no CUDA device is visible")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            timeout=timedelta(seconds=timeout_s),
            device_id=dev if use_cuda else None,
        )
    return DistributedContext(rank, world_size, local_rank, dev)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistributedContext) -> None:
    if ctx.is_distributed:
        dist.barrier()


def all_reduce_mean(value: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    if ctx.is_distributed:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= ctx.world_size
    return value


def broadcast_object(obj: object, ctx: DistributedContext) -> object:
    """Rank 0's `obj` on every rank."""
    if not ctx.is_distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def apply_activation_checkpointing(stacks: Sequence[nn.Sequential]) -> None:
    """Recompute each block's activations in the backward pass instead of storing them."""
    for stack in stacks:
        for index, block in enumerate(stack):
            stack[index] = checkpoint_wrapper(block, checkpoint_impl=CheckpointImpl.NO_REENTRANT)


def compile_blocks(stacks: Sequence[nn.Sequential]) -> None:
    """Compile each block in place. Blocks share one code object, so compilation happens once
    per block type and the embedding, masking and loss code stays eager (torchtitan's
    regional compilation). Shapes are static: the encoder's and decoder's blocks differ in
    width, and dynamic-shape kernels for either would be slower."""
    for stack in stacks:
        for block in stack:
            block.compile(dynamic=False)


def wrap_model(
    model: nn.Module,
    stacks: Sequence[nn.Sequential],
    ctx: DistributedContext,
    parallelism: Parallelism,
    *,
    bf16: bool,
    fixed_buckets: bool = False,
) -> nn.Module:
    """DDP or FSDP2 around `model` (already on its device); unchanged without a process group.
    `fixed_buckets` keeps DDP's gradient buckets the same in every iteration of every run (what
    bit-exact resume needs; see below)."""
    if parallelism == "fsdp":
        if not ctx.is_distributed:
            log.info("FSDP requested with a single process; training unsharded")
            return model
        # Parameters are gathered in bf16 and gradients reduced in fp32 on the GPU; the CPU
        # (gloo) path stays fp32 throughout.
        policy = (
            MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
            if bf16
            else MixedPrecisionPolicy()
        )
        for stack in stacks:
            for block in stack:
                fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        return model
    if parallelism == "ddp":
        if not ctx.is_distributed:
            return model
        device_ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
        # DDP normally re-buckets gradients after its first iteration, by the order they became
        # ready. A resumed job's first iteration would then all-reduce in a different bucket
        # layout than the uninterrupted run at the same step, and with more than two ranks
        # the summation order (which element falls in which ring chunk) and hence the bits of
        # the result differ. Unused-parameter search is the only mode that never re-buckets:
        # every iteration of every run uses the same layout. It costs one walk of the autograd
        # graph per iteration on the host and buckets in registration order (less overlap of
        # communication with the backward pass), so only deterministic runs ask for it.
        return DistributedDataParallel(
            model,
            device_ids=device_ids,
            gradient_as_bucket_view=True,
            find_unused_parameters=fixed_buckets,
        )
    raise ValueError(f"parallelism: unknown strategy {parallelism!r}; choose ddp or fsdp")


def unwrap(model: nn.Module) -> nn.Module:
    """The model without its DDP wrapper (FSDP2 shards in place and needs no unwrapping)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce / reduce-scatter on accumulation micro-steps."""
    if isinstance(model, DistributedDataParallel) and not enabled:
        with model.no_sync():
            yield
        return
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(enabled)
    yield
