"""The training loop every training step runs (MAE, WSP, LiT, finetuning).

One optimizer step consumes the recipe's global batch: each rank draws micro-batches and
accumulates gradients until `world_size × micro_batch × accumulation = global batch`, so the
recipe's batch is reached on any number of GPUs. The learning rate follows the samples seen.
bf16 autocast on the GPU, fp32 on the CPU. Checkpoints every N steps (written in the
background) and at the end; on start the run resumes by itself from the newest complete
checkpoint: bit-exactly in deterministic mode when the job has the same shape, and with the
model and optimizer exact but the data regrouped (engine/data.py) when the world size changed.
A run whose output is already complete (final checkpoint and model card present, same recipe)
returns that result without building the model: a retried pipeline step does not retrain.
The loop keeps the device busy: no host synchronisation except on logging steps.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import resource
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from mawsflow import metrics as prom
from mawsflow import storage
from mawsflow.engine.artifacts import MODEL_CARD, write_model
from mawsflow.engine.checkpoint import (
    Checkpointer,
    capture_rng_state,
    full_model_state_dict,
    restore_rng_state,
)
from mawsflow.engine.data import (
    SKIPPED_KEY,
    LoaderState,
    PretrainManifest,
    build_loader,
    sample_seed,
)
from mawsflow.engine.distributed import (
    DistributedContext,
    all_reduce_mean,
    apply_activation_checkpointing,
    broadcast_object,
    compile_blocks,
    init_distributed,
    shutdown,
    unwrap,
    wrap_model,
)
from mawsflow.engine.flops import peak_flops
from mawsflow.engine.optim import build_optimizer, parameter_groups
from mawsflow.engine.schedule import schedule_from_recipe
from mawsflow.engine.task import TrainTask
from mawsflow.engine.train_step import TrainStep
from mawsflow.models.vit import needs_sharding
from mawsflow.recipes import (
    CheckpointConfig,
    DataConfig,
    ModelConfig,
    OptimizerConfig,
    RuntimeConfig,
    ScheduleConfig,
)
from mawsflow.typed_config import ConfigError, to_dict

log = logging.getLogger(__name__)

ParallelismChoice = Literal["auto", "ddp", "fsdp"]


@dataclass(frozen=True)
class TrainConfig:
    """The recipe sections the engine reads, plus how to spread the work over processes."""

    output: str
    model: ModelConfig
    optimizer: OptimizerConfig
    schedule: ScheduleConfig
    data: DataConfig
    checkpoint: CheckpointConfig
    runtime: RuntimeConfig
    recipe: dict[str, Any]
    parallelism: ParallelismChoice = "auto"
    # Per-rank batch of one forward/backward; None means the whole per-rank share of the
    # global batch (no accumulation).
    micro_batch_size: int | None = None

    @classmethod
    def from_recipe(
        cls,
        recipe: Any,
        *,
        parallelism: ParallelismChoice = "auto",
        micro_batch_size: int | None = None,
    ) -> TrainConfig:
        return cls(
            output=recipe.output,
            model=recipe.model,
            optimizer=recipe.optimizer,
            schedule=recipe.schedule,
            data=recipe.data,
            checkpoint=recipe.checkpoint,
            runtime=recipe.runtime,
            recipe=to_dict(recipe),
            parallelism=parallelism,
            micro_batch_size=micro_batch_size,
        )


@dataclass(frozen=True)
class TrainResult:
    steps: int
    samples_seen: int
    initial_loss: float | None
    final_loss: float | None
    samples_per_second: float
    skipped_samples: int
    resumed_from_step: int | None

    def as_metrics(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {
            "steps": self.steps,
            "samples_seen": self.samples_seen,
            "samples_per_second": self.samples_per_second,
            "skipped_samples": self.skipped_samples,
        }
        if self.initial_loss is not None:
            out["initial_loss"] = self.initial_loss
        if self.final_loss is not None:
            out["final_loss"] = self.final_loss
        return out


def micro_batching(global_batch: int, world_size: int, micro_batch: int | None) -> tuple[int, int]:
    """(micro batch per rank, accumulation steps) that add up to exactly `global_batch`."""
    if global_batch % world_size:
        raise ConfigError(
            f"schedule.batch_size {global_batch} is not divisible by the {world_size} processes"
        )
    per_rank = global_batch // world_size
    micro = per_rank if micro_batch is None else micro_batch
    if micro < 1 or per_rank % micro:
        raise ConfigError(
            f"micro batch {micro} does not divide the per-process batch {per_rank} "
            f"(schedule.batch_size {global_batch} over {world_size} processes)"
        )
    return micro, per_rank // micro


def configure_determinism(deterministic: bool) -> None:
    if deterministic:
        # cuBLAS needs a fixed workspace to be reproducible; it must be set before first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        # Input shapes are fixed, so cuDNN's autotuner pays off: its default algorithm for the
        # stride-16 patch-embedding convolution is several times slower than the best one.
        torch.backends.cudnn.benchmark = True


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def peak_memory_bytes(device: torch.device) -> int:
    """Peak accelerator memory on the GPU; the process's peak resident memory on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
        if not k.startswith("_")
    }


def _result_from(train_state: Mapping[str, Any], latest: int) -> TrainResult:
    history = train_state["loss_history"]
    seconds = float(train_state["train_seconds"])
    samples = int(train_state["samples_seen"])
    return TrainResult(
        steps=int(train_state["step"]),
        samples_seen=samples,
        initial_loss=history[0][1] if history else None,
        final_loss=history[-1][1] if history else None,
        samples_per_second=samples / seconds if seconds else 0.0,
        skipped_samples=int(train_state["skipped_samples"]),
        resumed_from_step=latest,
    )


def train(task: TrainTask, config: TrainConfig, dataset: PretrainManifest) -> TrainResult:
    """Run (or resume, or finish) training of `task` and write its model artifacts."""
    ctx = init_distributed(config.runtime.device)
    try:
        return _Run(task, config, dataset, ctx).fit()
    finally:
        shutdown()


class _Run:
    def __init__(
        self,
        task: TrainTask,
        config: TrainConfig,
        dataset: PretrainManifest,
        ctx: DistributedContext,
    ) -> None:
        self.task, self.config, self.dataset, self.ctx = task, config, dataset, ctx
        runtime = config.runtime
        self.bf16 = runtime.precision == "bf16" or (
            runtime.precision == "auto" and ctx.device.type == "cuda"
        )
        self.global_batch = config.schedule.batch_size
        self.total_steps = config.schedule.total_steps
        self.micro_batch, self.accumulation = micro_batching(
            self.global_batch, ctx.world_size, config.micro_batch_size
        )
        parallelism = config.parallelism
        if parallelism == "auto":
            parallelism = "fsdp" if needs_sharding(config.model.arch) else "ddp"
        self.parallelism = parallelism
        self.schedule = schedule_from_recipe(
            config.optimizer.lr,
            total_samples=self.total_steps * self.global_batch,
            warmup_fraction=config.schedule.warmup_fraction,
            shape=config.schedule.lr_schedule,
        )
        self.metrics = prom.TrainingMetrics(step=task.name, rank=ctx.rank)
        self.checkpointer = Checkpointer(
            config.output,
            every_steps=config.checkpoint.every_steps,
            keep_last=config.checkpoint.keep_last,
            ctx=ctx,
            metrics=self.metrics,
        )
        self.labels = self.metrics.labels()
        self.peak = peak_flops(ctx.device)

    # ---------------------------------------------------------------------------------------

    def _build(self, resuming: bool) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        cfg, ctx = self.config, self.ctx
        # Same seed on every rank: replicas and shards start from one initialisation.
        seed_everything(cfg.runtime.seed)
        model = self.task.build_model()
        if not resuming:
            self.task.initialize(model)
        model.to(ctx.device)
        stacks = self.task.block_stacks(model)
        if cfg.model.grad_checkpointing:
            apply_activation_checkpointing(stacks)
        if cfg.runtime.compile:
            compile_blocks(stacks)
        wrapped = wrap_model(
            model,
            stacks,
            ctx,
            self.parallelism,
            bf16=self.bf16,
            fixed_buckets=cfg.runtime.deterministic,
        )
        groups = parameter_groups(
            unwrap(wrapped), cfg.optimizer.weight_decay, lr_scale=self.task.lr_scale
        )
        optimizer = build_optimizer(groups, cfg.optimizer, device=ctx.device)
        return wrapped, optimizer

    def _finished(self, latest: int | None) -> TrainResult | None:
        """The result of an earlier run that already finished this output (its model card is
        written last), agreed by all ranks; None when there is training or exporting to do."""
        finished = None
        if self.ctx.is_main and latest == self.total_steps:
            card_uri = storage.join(self.config.output, MODEL_CARD)
            if storage.exists(card_uri):
                card = storage.read_json(card_uri)
                # Compared as JSON, as the card stores it.
                recipe = json.loads(json.dumps(self.config.recipe))
                if card.get("recipe") != recipe:
                    differ = sorted(
                        k
                        for k in set(recipe) | set(card.get("recipe") or {})
                        if recipe.get(k) != (card.get("recipe") or {}).get(k)
                    )
                    finished = ValueError(
                        f"{self.config.output} already holds a finished {self.task.name} model "
                        f"trained with another recipe (sections {', '.join(differ)} differ): "
                        "write to a new output"
                    )
                else:
                    state = self.checkpointer.read_train_state(latest)
                    finished = _result_from(state, latest)
        finished = broadcast_object(finished, self.ctx)
        if isinstance(finished, Exception):
            raise finished
        return finished  # type: ignore[return-value]

    def fit(self) -> TrainResult:
        cfg, ctx, task = self.config, self.ctx, self.task
        configure_determinism(cfg.runtime.deterministic)
        latest = self.checkpointer.latest_step()
        done = self._finished(latest)
        if done is not None:
            # A rerun (e.g. a pipeline retry after success): the model is there already.
            log.info("output already complete; not retraining", extra={"output": cfg.output})
            return done
        model, optimizer = self._build(resuming=latest is not None)
        # Each rank draws its own masks and drop-path decisions.
        seed_everything(sample_seed(cfg.runtime.seed, ctx.rank, 0))

        workers = cfg.data.num_workers
        num_streams = ctx.world_size * max(1, workers)
        rank_streams = range(ctx.rank * max(1, workers), (ctx.rank + 1) * max(1, workers))
        step, samples_seen, train_seconds, skipped = 0, 0, 0.0, 0
        history: list[list[float]] = []
        saved_loader = None
        if latest is not None:
            train_state, rank_state = self.checkpointer.load(latest, model, optimizer)
            step = int(train_state["step"])
            samples_seen = int(train_state["samples_seen"])
            train_seconds = float(train_state["train_seconds"])
            skipped = int(train_state["skipped_samples"])
            history = [list(h) for h in train_state["loss_history"]]
            if rank_state is not None:
                restore_rng_state(rank_state["rng"], ctx.device)
                saved_loader = rank_state["data"]
            else:
                # Another world size: ranks' RNG streams do not map onto each other. Seeded by
                # (seed, rank, step), so no rank replays the masks of the run's first steps.
                seed_everything(sample_seed(cfg.runtime.seed, ctx.rank, step))
                saved_ranks = self.checkpointer.saved_rank_states(latest)
                saved_loader = LoaderState.merge([r["data"] for r in saved_ranks])
                log.warning(
                    "resuming %d ranks from a checkpoint of %d: model and optimizer continue "
                    "exactly, the RNG is reseeded and data streams are redistributed",
                    ctx.world_size,
                    len(saved_ranks),
                )
        # Under FSDP each rank holds only its shard: the log shows both counts.
        params = list(model.parameters())
        local_params = sum(
            p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in params
        )
        loader_state = LoaderState.restore(
            saved_loader,
            num_streams=num_streams,
            rank_streams=rank_streams,
            samples_seen=samples_seen,
        )
        prom.serve(self.metrics.registry, cfg.runtime.metrics_port)
        log.info(
            "training",
            extra={
                "task": task.name,
                "world_size": ctx.world_size,
                "device": str(ctx.device),
                "parallelism": self.parallelism,
                "precision": "bf16" if self.bf16 else "fp32",
                "global_batch": self.global_batch,
                "micro_batch": self.micro_batch,
                "accumulation": self.accumulation,
                "total_steps": self.total_steps,
                "start_step": step,
                "dataset_samples": self.dataset.num_samples,
                "parameters": sum(p.numel() for p in params),
                "parameters_local": local_params,
            },
        )

        if step < self.total_steps:
            loader = build_loader(
                self.dataset,
                task.sample_decoder(),
                batch_size=self.micro_batch,
                num_workers=workers,
                seed=cfg.runtime.seed,
                rank=ctx.rank,
                world_size=ctx.world_size,
                shuffle_buffer=cfg.data.shuffle_buffer,
                state=loader_state,
                pin_memory=ctx.device.type == "cuda",
            )
            step, seconds, skipped_now = self._loop(
                model,
                optimizer,
                loader,
                loader_state,
                step,
                history,
                prior_seconds=train_seconds,
                prior_skipped=skipped,
            )
            train_seconds += seconds
            skipped += skipped_now
            samples_seen = step * self.global_batch

        result = TrainResult(
            steps=step,
            samples_seen=samples_seen,
            initial_loss=history[0][1] if history else None,
            final_loss=history[-1][1] if history else None,
            samples_per_second=samples_seen / train_seconds if train_seconds else 0.0,
            skipped_samples=skipped,
            resumed_from_step=latest,
        )
        self.checkpointer.wait()
        train_state = {
            "step": step,
            "samples_seen": samples_seen,
            "train_seconds": train_seconds,
            "skipped_samples": skipped,
            "loss_history": history,
            "recipe": cfg.recipe,
        }
        if latest != step:
            self.checkpointer.save(
                step,
                model,
                optimizer,
                train_state,
                {"rng": capture_rng_state(ctx.device), "data": loader_state.state_dict()},
            )
        state = full_model_state_dict(model)
        if ctx.is_main:
            card = {
                **task.model_card(),
                "step": task.name,
                "recipe": cfg.recipe,
                "train_steps": step,
                "samples_seen": samples_seen,
            }
            write_model(
                cfg.output,
                task.export(state),
                card,
                result.as_metrics(),
                loss_history=history,
                samples_per_step=self.global_batch,
            )
            log.info("model written", extra={"output": cfg.output, **result.as_metrics()})
        prom.push(self.metrics.registry, cfg.runtime.pushgateway, job=f"mawsflow-{task.name}")
        return result

    def _loop(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loader: torch.utils.data.DataLoader,
        loader_state: LoaderState,
        step: int,
        history: list[list[float]],
        *,
        prior_seconds: float,
        prior_skipped: int,
    ) -> tuple[int, float, int]:
        """Train from `step` to the end; returns (final step, seconds, corrupt samples) of
        this run. `prior_*` are the totals of earlier runs, for the checkpoints."""
        cfg, ctx, task, m = self.config, self.ctx, self.task, self.metrics
        train_step = TrainStep(
            model,
            optimizer,
            task,
            accumulation=self.accumulation,
            bf16=self.bf16,
            grad_clip=cfg.optimizer.grad_clip,
            device=ctx.device,
        )
        flops = task.flops_per_sample()
        rank_batch = self.global_batch // ctx.world_size
        loss_sum = torch.zeros((), device=ctx.device)
        window_steps, window_wait, skipped = 0, 0.0, 0
        start = window_start = time.perf_counter()
        batches = iter(loader)

        def next_batch() -> dict[str, Any]:
            nonlocal window_wait, skipped
            wait_start = time.perf_counter()
            batch = next(batches)
            window_wait += time.perf_counter() - wait_start
            loader_state.advance(batch)
            skipped += batch[SKIPPED_KEY]
            m.skipped_samples.labels(**self.labels).inc(batch[SKIPPED_KEY])
            return _to_device(batch, ctx.device)

        while step < self.total_steps:
            step_start = time.perf_counter()
            lr = self.schedule.lr_for_step(step, self.global_batch)
            loss_sum += train_step(next_batch, lr)
            step += 1
            window_steps += 1
            m.optimizer_steps.labels(**self.labels).inc()
            m.samples.labels(**self.labels).inc(rank_batch)
            m.learning_rate.labels(**self.labels).set(lr)
            m.step_seconds.labels(**self.labels).observe(time.perf_counter() - step_start)

            if step % cfg.runtime.log_every_steps == 0 or step == self.total_steps:
                # The one host sync of a logging step: the averaged loss of the window.
                mean_loss = all_reduce_mean(loss_sum, ctx).item() / (
                    window_steps * self.accumulation
                )
                if not math.isfinite(mean_loss):
                    raise FloatingPointError(f"loss is {mean_loss} at step {step}")
                now = time.perf_counter()
                rate = window_steps * rank_batch / (now - window_start)
                history.append([step, mean_loss])
                m.loss.labels(**self.labels).set(mean_loss)
                m.samples_per_second.labels(**self.labels).set(rate)
                m.data_wait_seconds.labels(**self.labels).inc(window_wait)
                m.memory_bytes.labels(**self.labels).set(peak_memory_bytes(ctx.device))
                mfu = flops * rate / self.peak if self.peak else None
                if mfu is not None:
                    m.mfu.labels(**self.labels).set(mfu)
                log.info(
                    "step %d/%d loss %.4f lr %.3g %.1f samples/s/rank data wait %.0f%%%s",
                    step,
                    self.total_steps,
                    mean_loss,
                    lr,
                    rate,
                    100 * window_wait / (now - window_start),
                    f" MFU {100 * mfu:.1f}%" if mfu is not None else "",
                )
                loss_sum.zero_()
                window_steps, window_wait, window_start = 0, 0.0, now

            if self.checkpointer.due(step, self.total_steps) and step < self.total_steps:
                self.checkpointer.save(
                    step,
                    model,
                    optimizer,
                    {
                        "step": step,
                        "samples_seen": step * self.global_batch,
                        "train_seconds": prior_seconds + time.perf_counter() - start,
                        "skipped_samples": prior_skipped + skipped,
                        "loss_history": history,
                        "recipe": cfg.recipe,
                    },
                    {"rng": capture_rng_state(ctx.device), "data": loader_state.state_dict()},
                    asynchronous=True,
                )
        return step, time.perf_counter() - start, skipped
