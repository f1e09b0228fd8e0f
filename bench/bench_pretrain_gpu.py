"""Throughput and MFU of the engine's MAE and WSP train steps, bf16 on one GPU.

Each engine step is timed against a reference measured in the same process, on the same
synthetic on-device batch:

- MAE vs a plain eager MAE in the style of facebookresearch/mae: eager PyTorch, bf16 autocast,
  attention written out as softmax(q·kᵀ)·v, a for-loop (unfused, non-foreach) AdamW, and a
  `loss.item()` every step;
- WSP vs timm's VisionTransformer (SDPA attention) with the same head and loss, trained by a
  plain eager step: bf16 autocast, torch's default AdamW, `loss.item()` every step (as timm's
  train.py logs).

The engine step is `mawsflow.engine.train_step.TrainStep` on the models the `mae` and `wsp`
steps build: regionally compiled blocks, fused AdamW, SDPA flash attention, no host reads.
MFU counts model FLOPs (mawsflow.engine.flops) against the GPU's dense bf16 peak
(--peak-tflops, default 989 for H100/H200 SXM).

    python bench/bench_pretrain_gpu.py                 # B/16 and L/16, one GPU (≤ 6 min on H100)
    python bench/bench_pretrain_gpu.py --cpu-smoke     # every code path, tiny model, on the CPU
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from mawsflow.engine.distributed import compile_blocks
from mawsflow.engine.optim import build_optimizer, parameter_groups
from mawsflow.engine.train_step import TrainStep
from mawsflow.models.pos_embed import sincos_2d
from mawsflow.models.vit import architecture, trunk_kwargs
from mawsflow.models.wsp import WSPHead, multi_hot, normalized_label_cross_entropy
from mawsflow.recipes import load_recipe
from mawsflow.steps.mae import MAETask
from mawsflow.steps.wsp import WSPTask

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LABELS_PER_IMAGE = 4

# --------------------------------------------------------------------------------------------
# Reference (a): a plain eager MAE, written the way the original MAE code is.


class EagerAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class EagerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EagerAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class EagerMAE(nn.Module):
    def __init__(self, recipe: Any) -> None:
        super().__init__()
        spec = architecture(recipe.model.arch)
        size, p = recipe.model.img_size, spec.patch_size
        d, dd = spec.embed_dim, recipe.decoder.embed_dim
        self.p, self.n = p, (size // p) ** 2
        self.keep = int(self.n * (1 - recipe.mask_ratio))
        self.patch_embed = nn.Conv2d(3, d, kernel_size=p, stride=p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.register_buffer("pos_embed", sincos_2d(d, size // p, cls_token=True))
        self.blocks = nn.ModuleList(
            EagerBlock(d, spec.heads, spec.mlp_dim) for _ in range(spec.layers)
        )
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.decoder_embed = nn.Linear(d, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.register_buffer("decoder_pos_embed", sincos_2d(dd, size // p, cls_token=True))
        self.decoder_blocks = nn.ModuleList(
            EagerBlock(dd, recipe.decoder.num_heads, 4 * dd) for _ in range(recipe.decoder.depth)
        )
        self.decoder_norm = nn.LayerNorm(dd, eps=1e-6)
        self.decoder_pred = nn.Linear(dd, p * p * 3)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        b = imgs.shape[0]
        x = self.patch_embed(imgs).flatten(2).transpose(1, 2) + self.pos_embed[:, 1:]
        noise = torch.rand(b, self.n, device=imgs.device)
        shuffle = torch.argsort(noise, dim=1)
        restore = torch.argsort(shuffle, dim=1)
        keep = shuffle[:, : self.keep]
        x = torch.gather(x, 1, keep.unsqueeze(-1).repeat(1, 1, x.shape[-1]))
        mask = torch.ones(b, self.n, device=imgs.device)
        mask[:, : self.keep] = 0
        mask = torch.gather(mask, 1, restore)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1)
        x = torch.cat([cls, x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.decoder_embed(self.norm(x))
        tokens = torch.cat([x[:, 1:], self.mask_token.repeat(b, self.n - self.keep, 1)], dim=1)
        tokens = torch.gather(tokens, 1, restore.unsqueeze(-1).repeat(1, 1, x.shape[-1]))
        x = torch.cat([x[:, :1], tokens], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        h = imgs.shape[2] // self.p
        target = imgs.reshape(b, 3, h, self.p, h, self.p)
        target = torch.einsum("nchpwq->nhwpqc", target).reshape(b, h * h, -1)
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
        loss = ((pred - target) ** 2).mean(-1)
        return (loss * mask).sum() / mask.sum()


def _normalize(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def _plain_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    amp: bool,
) -> Callable[[dict[str, torch.Tensor]], None]:
    device_type = next(model.parameters()).device.type

    def step(batch: dict[str, torch.Tensor]) -> None:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()

    return step


# --------------------------------------------------------------------------------------------
# The four setups


def engine_step(task: Any, recipe: Any, device: torch.device, compile_scope: str):
    torch.manual_seed(0)
    model = task.build_model().to(device)
    if compile_scope == "blocks":
        compile_blocks(task.block_stacks(model))
    elif compile_scope == "model":
        model.compile(dynamic=False)
    optimizer = build_optimizer(
        parameter_groups(model, recipe.optimizer.weight_decay), recipe.optimizer, device=device
    )
    step = TrainStep(
        model,
        optimizer,
        task,
        accumulation=1,
        bf16=device.type == "cuda",
        grad_clip=recipe.optimizer.grad_clip,
        device=device,
    )
    lr = recipe.optimizer.lr
    return lambda batch: step(lambda: batch, lr)


def reference_mae_step(task: MAETask, device: torch.device):
    torch.manual_seed(0)
    recipe = task.recipe
    model = EagerMAE(recipe).to(device)
    groups = parameter_groups(model, recipe.optimizer.weight_decay)
    optimizer = torch.optim.AdamW(
        groups, lr=recipe.optimizer.lr, betas=recipe.optimizer.betas, foreach=False, fused=False
    )
    return _plain_step(
        model, optimizer, lambda b: model(_normalize(b["image"])), device.type == "cuda"
    )


def reference_wsp_step(task: WSPTask, device: torch.device):
    torch.manual_seed(0)
    recipe, num_classes = task.recipe, task.num_classes
    kwargs = trunk_kwargs(recipe.model.arch, img_size=recipe.model.img_size)
    trunk = VisionTransformer(**kwargs).to(device)
    head = WSPHead(trunk.embed_dim, num_classes, recipe.head).to(device)
    params = [*trunk.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(
        params,
        lr=recipe.optimizer.lr,
        betas=recipe.optimizer.betas,
        weight_decay=recipe.optimizer.weight_decay,
    )

    def loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = head(trunk.forward_head(trunk.forward_features(_normalize(batch["image"])), True))
        return normalized_label_cross_entropy(logits, multi_hot(batch["labels"], num_classes))

    return _plain_step(trunk, optimizer, loss, device.type == "cuda")


def measure(step: Callable, batch: dict[str, torch.Tensor], warmup: int, steps: int) -> float:
    """Images per second over `steps` steps after `warmup` (compilation happens there)."""
    device = batch["image"].device
    for _ in range(warmup):
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch["image"].shape[0] / (time.perf_counter() - start)


def profile(step: Callable, batch: dict[str, torch.Tensor], steps: int = 3) -> str:
    """Where a warmed-up step spends its time: device busy time against wall time, and the
    kernels that take most of it."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    cuda = batch["image"].device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step(batch)
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    events = prof.key_averages()
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    busy = sum(getattr(e, "self_device_time_total", 0.0) for e in events) / 1e6 if cuda else 0.0
    head = f"wall {1e3 * wall / steps:.1f} ms/step, device busy {1e3 * busy / steps:.1f} ms/step"
    return head + "\n" + events.table(sort_by=sort, row_limit=18, max_name_column_width=60)


def synthetic_batch(
    batch_size: int, img_size: int, num_classes: int, device: torch.device
) -> dict[str, torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(0)
    images = torch.randint(
        0, 256, (batch_size, 3, img_size, img_size), dtype=torch.uint8, generator=g
    )
    labels = torch.randint(0, num_classes, (batch_size, LABELS_PER_IMAGE), generator=g)
    return {"image": images.to(device), "labels": labels.to(device)}


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    preset = "tiny" if args.cpu_smoke else None
    results: list[dict[str, Any]] = []

    def record(row: dict[str, Any]) -> None:
        results.append(row)
        print(json.dumps(row), flush=True)
        if args.json_out:
            with open(args.json_out, "a", encoding="utf-8") as out:
                out.write(json.dumps(row) + "\n")

    for arch in args.archs:
        for step_name in ("mae", "wsp"):
            overrides = [f"model.arch={arch}"]
            if step_name == "mae":
                recipe = load_recipe("mae", preset=preset, overrides=overrides)
                task = MAETask(recipe)
            else:
                recipe = load_recipe("wsp", preset=preset, overrides=overrides)
                task = WSPTask(recipe, args.num_classes)
            batch_size = args.batch_size or (
                8 if args.cpu_smoke else (128 if step_name == "wsp" and arch == "vit_l16" else 256)
            )
            batch = synthetic_batch(batch_size, recipe.model.img_size, args.num_classes, device)
            flops = task.flops_per_sample()
            reference = reference_mae_step if step_name == "mae" else reference_wsp_step
            setups = [
                ("engine", engine_step, (task, recipe, device, args.compile)),
                ("reference", reference, (task, device)),
            ]
            for variant, build, build_args in setups:
                _release(device)
                started = time.perf_counter()
                step = build(*build_args)
                rate = measure(step, batch, args.warmup, args.steps)
                if args.profile:
                    print(f"== profile: {step_name} {arch} {variant}")
                    print(profile(step, batch))
                record(
                    {
                        "step": step_name,
                        "arch": arch,
                        "variant": variant,
                        "batch": batch_size,
                        "images_per_s": rate,
                        "mfu": flops * rate / (args.peak_tflops * 1e12),
                        "peak_gib": _peak_gib(device),
                        "seconds": time.perf_counter() - started,
                    }
                )
    return results


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| step | arch | batch | engine img/s | engine MFU | reference img/s | reference MFU "
        "| speed-up |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        if r["variant"] != "engine":
            continue
        ref = next(
            x
            for x in results
            if x["variant"] == "reference" and x["step"] == r["step"] and x["arch"] == r["arch"]
        )
        lines.append(
            f"| {r['step']} | {r['arch']} | {r['batch']} | {r['images_per_s']:.0f} | "
            f"{100 * r['mfu']:.1f}% | {ref['images_per_s']:.0f} | {100 * ref['mfu']:.1f}% | "
            f"{r['images_per_s'] / ref['images_per_s']:.2f}× |"
        )
    return "\n".join(lines)


def goals(results: list[dict[str, Any]]) -> list[str]:
    """The issue's targets for B/16, checked on the measured numbers."""
    out = []

    def find(step: str, variant: str) -> dict[str, Any] | None:
        return next(
            (
                r
                for r in results
                if (r["step"], r["arch"], r["variant"]) == (step, "vit_b16", variant)
            ),
            None,
        )

    mae, mae_ref = find("mae", "engine"), find("mae", "reference")
    if mae and mae_ref:
        speedup = mae["images_per_s"] / mae_ref["images_per_s"]
        out.append(
            f"MAE-B/16 speed-up {speedup:.2f}× (goal ≥ 1.6×): "
            f"{'met' if speedup >= 1.6 else 'NOT met'}"
        )
        out.append(
            f"MAE-B/16 MFU {100 * mae['mfu']:.1f}% (goal ≥ 45%): "
            f"{'met' if mae['mfu'] >= 0.45 else 'NOT met'}"
        )
    wsp, wsp_ref = find("wsp", "engine"), find("wsp", "reference")
    if wsp and wsp_ref:
        speedup = wsp["images_per_s"] / wsp_ref["images_per_s"]
        out.append(
            f"WSP-B/16 speed-up {speedup:.2f}× (goal ≥ 1.3×): "
            f"{'met' if speedup >= 1.3 else 'NOT met'}"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=None)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="per GPU (default 256; 128 for WSP-L)"
    )
    parser.add_argument(
        "--num-classes", type=int, default=28000, help="WSP vocabulary (IG-3B: 28K)"
    )
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=989.0,
        help="dense bf16 peak of the GPU (H100/H200 SXM: 989)",
    )
    parser.add_argument("--json-out", help="append each result as a JSON line to this file")
    parser.add_argument(
        "--compile",
        choices=("blocks", "model", "none"),
        default="blocks",
        help="what the engine variant compiles: each block (the engine's choice), the whole "
        "model, or nothing",
    )
    parser.add_argument("--profile", action="store_true", help="print a kernel profile of each")
    parser.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="tiny model on the CPU, fp32, a few steps: checks every code path",
    )
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        args.archs = args.archs or ["vit_tiny_p4"]
        args.num_classes = min(args.num_classes, 100)
        args.warmup, args.steps = args.warmup or 1, args.steps or 2
    else:
        if not torch.cuda.is_available():
            parser.error("no CUDA device: run on a GPU, or pass --cpu-smoke")
        args.archs = args.archs or ["vit_b16", "vit_l16"]
        args.warmup, args.steps = args.warmup or 8, args.steps or 25
        # Both sides get the settings the engine (and the MAE and timm training scripts) use.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        print(f"device: {torch.cuda.get_device_name()} torch {torch.__version__}", flush=True)
    results = run(args)
    print(table(results))
    for line in goals(results):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
