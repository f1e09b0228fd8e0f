"""Sharded checkpoints (torch.distributed.checkpoint through mawsflow.storage) against the full
gather on rank 0 that the engine used before, for the same FSDP2-sharded model and AdamW state,
in the same run.

Every rank builds the model (ViT-L/16 by default), shards it with FSDP2 over gloo and creates
the optimizer state, then times, in this order:

- `dcp save`: the engine's `Checkpointer.save` (every rank writes its shards, rank 0 the
  metadata and the completion marker last);
- `dcp async stall`: `Checkpointer.save(asynchronous=True)` until it returns (the host copy;
  training would go on from here), and `dcp async total` until the checkpoint is complete;
- `dcp load`: `Checkpointer.load` into a freshly sharded model and optimizer;
- `gather save`: full state dict gathered to rank 0 on the CPU (`full_state_dict=True,
  cpu_offload=True`) and `torch.save`d by rank 0 through `mawsflow.storage`;
- `gather load`: rank 0 reads it, `set_state_dict(broadcast_from_rank0=True)` scatters it.

Peak host memory per rank is the process's peak resident set during the phase (VmHWM, reset
before each phase through /proc/self/clear_refs after malloc_trim): it includes the rank's
model and optimizer shards, which every phase holds. "growth" is that peak less the resident set
at the phase's start: what the phase itself allocates. Ratios are gather / dcp.

    python bench/bench_checkpoint.py                       # ViT-L/16, 2 ranks, a temp dir
    python bench/bench_checkpoint.py --arch vit_b16 --nproc 2 --output s3://bucket/bench
"""

from __future__ import annotations

import argparse
import ctypes
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from mawsflow import storage
from mawsflow.engine.checkpoint import Checkpointer
from mawsflow.engine.distributed import init_distributed, shutdown, wrap_model
from mawsflow.engine.train_state import TrainState
from mawsflow.models.vit import create_trunk

MiB = 1024 * 1024
_LIBC = ctypes.CDLL("libc.so.6")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


class Phase:
    """Wall time and peak resident-set growth of one phase on this rank."""

    def __init__(self, name: str, results: dict) -> None:
        self.name, self.results = name, results

    def __enter__(self) -> Phase:
        dist.barrier()
        # Hand memory freed by earlier phases back to the system, or this phase would reuse it
        # without its resident set growing; then reset the peak (VmHWM) to the current RSS
        # (writing 5 to clear_refs, Linux ≥ 4.0).
        _LIBC.malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        self.rss = _status_kib("VmRSS")
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        seconds = time.perf_counter() - self.start
        peak = _status_kib("VmHWM") * 1024
        self.results[self.name] = {
            "seconds": seconds,
            "peak_bytes": peak,
            "growth_bytes": peak - self.rss * 1024,
        }
        dist.barrier()


def build(arch: str, ctx) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    trunk = create_trunk(arch, img_size=224)
    model = wrap_model(trunk, [trunk.blocks], ctx, "fsdp", bf16=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    # AdamW's moments exist after its first step; DCP's state-dict helper creates them (a step
    # with zero gradients and no learning rate), as a trained optimizer has them.
    get_state_dict(model, optimizer)
    return model, optimizer


def rank_main(arch: str, output: str, result_dir: str) -> None:
    ctx = init_distributed("cpu")
    results: dict = {}
    model, optimizer = build(arch, ctx)
    checkpointer = Checkpointer(output, every_steps=1, keep_last=3, ctx=ctx)

    with Phase("dcp save", results):
        checkpointer.save(1, model, optimizer, TrainState({}, step=1), {"rank": ctx.rank})
    with Phase("dcp async stall", results):
        checkpointer.save(
            2, model, optimizer, TrainState({}, step=2), {"rank": ctx.rank}, asynchronous=True
        )
    stall = results["dcp async stall"]["seconds"]
    with Phase("dcp async total", results):
        checkpointer.wait()
    results["dcp async total"]["seconds"] += stall
    # One model per process at a time (the host is shared with the other rank): the loaded
    # copy replaces the trained one, and is what the full gather then saves.
    del model, optimizer
    model, optimizer = build(arch, ctx)
    with Phase("dcp load", results):
        checkpointer.load(2, model, optimizer, TrainState({}))

    gathered = storage.join(output, "gathered.pt")
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    with Phase("gather save", results):
        model_state, optim_state = get_state_dict(model, optimizer, options=options)
        if ctx.is_main:
            with storage.open_write(gathered) as f:
                torch.save({"model": model_state, "optimizer": optim_state}, f)
        del model_state, optim_state
    params = sum(p.numel() for p in model.parameters())
    del model, optimizer
    fresh, fresh_optimizer = build(arch, ctx)
    with Phase("gather load", results):
        payload: dict = {}
        if ctx.is_main:
            payload = torch.load(
                io.BytesIO(storage.read_bytes(gathered)), map_location="cpu", weights_only=True
            )
        # Model and optimizer separately: set_state_dict with an empty model dict (every rank
        # but 0) would treat the call as optimizer-only and skip the model's broadcast.
        broadcast = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        set_model_state_dict(fresh, payload.get("model", {}), options=broadcast)
        set_optimizer_state_dict(
            fresh, fresh_optimizer, payload.get("optimizer", {}), options=broadcast
        )
        del payload
    checkpoint_bytes = sum(
        storage.size(u) for u in storage.list_uris(checkpointer.step_uri(2) + "/")
    )
    Path(result_dir, f"rank{ctx.rank}.json").write_text(
        json.dumps({"params": params, "checkpoint_bytes": checkpoint_bytes, **results})
    )
    shutdown()


def report(result_dir: str, arch: str, nproc: int) -> None:
    ranks = [json.loads(Path(result_dir, f"rank{r}.json").read_text()) for r in range(nproc)]
    first = ranks[0]
    print(
        f"{arch}: {first['params'] / 1e6:.0f}M parameters, {nproc} ranks (FSDP2, gloo); "
        f"checkpoint {first['checkpoint_bytes'] / MiB:.0f} MiB"
    )
    phases = [k for k in first if isinstance(first[k], dict)]
    header = " ".join(f"{'peak / growth MiB r' + str(r):>22}" for r in range(nproc))
    print(f"{'phase':18} {'seconds (max rank)':>18} {header}")
    for phase in phases:
        seconds = max(r[phase]["seconds"] for r in ranks)
        peaks = " ".join(
            f"{r[phase]['peak_bytes'] / MiB:13.0f} / {r[phase]['growth_bytes'] / MiB:6.0f}"
            for r in ranks
        )
        print(f"{phase:18} {seconds:18.2f} {peaks}")

    def ratio(metric: str, a: str, b: str) -> float:
        if metric == "seconds":
            return max(r[a]["seconds"] for r in ranks) / max(r[b]["seconds"] for r in ranks)
        return max(r[a]["peak_bytes"] for r in ranks) / max(
            1, max(r[b]["peak_bytes"] for r in ranks)
        )

    print()
    for label, metric, slow, fast in (
        ("save time, gather / dcp", "seconds", "gather save", "dcp save"),
        ("training stall, gather / dcp async", "seconds", "gather save", "dcp async stall"),
        ("load time, gather / dcp", "seconds", "gather load", "dcp load"),
        ("peak host memory of the worst rank, save, gather / dcp", "peak_bytes", "gather save",
         "dcp save"),
        ("peak host memory of the worst rank, load, gather / dcp", "peak_bytes", "gather load",
         "dcp load"),
    ):  # fmt: skip
        print(f"{label}: {ratio(metric, slow, fast):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="vit_l16")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--output", help="checkpoint URI (default: a temporary directory)")
    parser.add_argument("--rank-main", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank_main:
        rank_main(*args.rank_main)
        return
    with tempfile.TemporaryDirectory() as scratch:
        output = args.output or str(Path(scratch, "ckpt"))
        subprocess.run(
            [
                sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc-per-node={args.nproc}", __file__,
                "--rank-main", args.arch, output, scratch,
            ],
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            check=True,
        )  # fmt: skip
        report(scratch, args.arch, args.nproc)


if __name__ == "__main__":
    main()
