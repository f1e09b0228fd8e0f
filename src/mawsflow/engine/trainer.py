"""The training loop every training step runs (MAE, WSP, LiT, finetuning).

One optimizer step consumes the recipe's global batch: each rank draws micro-batches and
accumulates gradients until `world_size × micro_batch × accumulation = global batch`, so the
recipe's batch is reached on any number of GPUs. The learning rate follows the samples seen.
bf16 autocast on the GPU, fp32 on the CPU. Checkpoints every N steps (written in the
background) and at the end; on start the run resumes by itself from the newest complete
checkpoint: bit-exactly in deterministic mode when the job has the same shape, and with the
model and optimizer exact but the data regrouped (mawsflow.data.loader) when the world size changed.
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
from mawsflow.data.loader import SKIPPED_KEY, LoaderState, build_loader
from mawsflow.data.manifest import PretrainManifest
from mawsflow.data.shards import sample_seed
from mawsflow.engine.checkpoint import (
    Checkpointer,
    capture_rng_state,
    full_model_state_dict,
    restore_rng_state,
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
from mawsflow.engine.train_state import TrainResult, TrainState
from mawsflow.engine.train_step import TrainStep
from mawsflow.errors import ConfigError
from mawsflow.models.artifacts import MODEL_CARD, write_model
from mawsflow.models.vit import needs_sharding
from mawsflow.recipes import (
    CheckpointConfig,
    DataConfig,
    ModelConfig,
    OptimizerConfig,
    RuntimeConfig,
    ScheduleConfig,
)
from mawsflow.typed_config import to_dict

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
                    state = TrainState(recipe=self.config.recipe)
                    state.load_state_dict(self.checkpointer.read_train_state(latest))
                    finished = state.result(resumed_from_step=latest)
        finished = broadcast_object(finished, self.ctx)
        if isinstance(finished, Exception):
            raise finished
        return finished  # type: ignore[return-value]

    def fit(self) -> TrainResult:
        """Restore (or start), train to the end, export. A finished output returns at once."""
        configure_determinism(self.config.runtime.deterministic)
        latest = self.checkpointer.latest_step()
        done = self._finished(latest)
        if done is not None:
            # A rerun (e.g. a pipeline retry after success): the model is there already.
            log.info(
                "output already complete; not retraining", extra={"output": self.config.output}
            )
            return done
        model, optimizer = self._build(resuming=latest is not None)
        state = TrainState(recipe=self.config.recipe)
        loader_state = self._restore(latest, model, optimizer, state)
        self._log_start(model, state)
        if state.step < self.total_steps:
            self._loop(model, optimizer, loader_state, state)
        return self._export(model, optimizer, state, loader_state, latest)

    def _restore(
        self,
        latest: int | None,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        state: TrainState,
    ) -> LoaderState:
        """Load checkpoint `latest` into model, optimizer and `state` (nothing to load on a
        first start); seed this rank's randomness; return the data streams' positions."""
        cfg, ctx = self.config, self.ctx
        # Each rank draws its own masks and drop-path decisions.
        seed_everything(sample_seed(cfg.runtime.seed, ctx.rank, 0))
        workers = max(1, cfg.data.num_workers)
        saved_loader = None
        if latest is not None:
            rank_state = self.checkpointer.load(latest, model, optimizer, state)
            if rank_state is not None:
                restore_rng_state(rank_state["rng"], ctx.device)
                saved_loader = rank_state["data"]
            else:
                # Another world size: ranks' RNG streams do not map onto each other. Seeded by
                # (seed, rank, step), so no rank replays the masks of the run's first steps.
                seed_everything(sample_seed(cfg.runtime.seed, ctx.rank, state.step))
                saved_ranks = self.checkpointer.saved_rank_states(latest)
                saved_loader = LoaderState.merge([r["data"] for r in saved_ranks])
                log.warning(
                    "resuming %d ranks from a checkpoint of %d: model and optimizer continue "
                    "exactly, the RNG is reseeded and data streams are redistributed",
                    ctx.world_size,
                    len(saved_ranks),
                )
        return LoaderState.restore(
            saved_loader,
            num_streams=ctx.world_size * workers,
            rank_streams=range(ctx.rank * workers, (ctx.rank + 1) * workers),
            samples_seen=state.samples_seen,
        )

    def _log_start(self, model: torch.nn.Module, state: TrainState) -> None:
        """Serve the metrics and log the run's shape once, at the start."""
        ctx = self.ctx
        # Under FSDP each rank holds only its shard: the log shows both counts.
        params = list(model.parameters())
        local_params = sum(
            p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in params
        )
        prom.serve(self.metrics.registry, self.config.runtime.metrics_port)
        log.info(
            "training",
            extra={
                "task": self.task.name,
                "world_size": ctx.world_size,
                "device": str(ctx.device),
                "parallelism": self.parallelism,
                "precision": "bf16" if self.bf16 else "fp32",
                "global_batch": self.global_batch,
                "micro_batch": self.micro_batch,
                "accumulation": self.accumulation,
                "total_steps": self.total_steps,
                "start_step": state.step,
                "dataset_samples": self.dataset.num_samples,
                "parameters": sum(p.numel() for p in params),
                "parameters_local": local_params,
            },
        )

    def _export(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        state: TrainState,
        loader_state: LoaderState,
        latest: int | None,
    ) -> TrainResult:
        """Save the final checkpoint (unless it was the one resumed from), then write the
        model artifacts, model card last, and push the run's metrics."""
        cfg, ctx, task = self.config, self.ctx, self.task
        result = state.result(resumed_from_step=latest)
        self.checkpointer.wait()
        if latest != state.step:
            self.checkpointer.save(
                state.step,
                model,
                optimizer,
                state,
                {"rng": capture_rng_state(ctx.device), "data": loader_state.state_dict()},
            )
        weights = full_model_state_dict(model)
        if ctx.is_main:
            card = {
                **task.model_card(),
                "step": task.name,
                "recipe": cfg.recipe,
                "train_steps": state.step,
                "samples_seen": state.samples_seen,
                # Model FLOPs of this training (engine.flops): the report's x-axis of accuracy
                # against pretraining compute (the paper's Fig. 5).
                "flops_per_sample": float(task.flops_per_sample()),
                "training_flops": float(task.flops_per_sample()) * state.samples_seen,
            }
            write_model(
                cfg.output,
                task.export(weights),
                card,
                result.as_metrics(),
                loss_history=state.loss_history,
                samples_per_step=self.global_batch,
            )
            log.info("model written", extra={"output": cfg.output, **result.as_metrics()})
        prom.push(self.metrics.registry, cfg.runtime.pushgateway, job=f"mawsflow-{task.name}")
        return result

    def _loop(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loader_state: LoaderState,
        state: TrainState,
    ) -> None:
        """Train from `state.step` to the end, keeping `state` current at every checkpoint
        and at the end."""
        cfg, ctx, task, m = self.config, self.ctx, self.task, self.metrics
        loader = build_loader(
            self.dataset,
            task.sample_decoder(),
            batch_size=self.micro_batch,
            num_workers=cfg.data.num_workers,
            seed=cfg.runtime.seed,
            rank=ctx.rank,
            world_size=ctx.world_size,
            shuffle_buffer=cfg.data.shuffle_buffer,
            state=loader_state,
            pin_memory=ctx.device.type == "cuda",
        )
        train_step = TrainStep(
            model,
            optimizer,
            task,
            accumulation=self.accumulation,
            bf16=self.bf16,
            grad_clip=cfg.optimizer.grad_clip,
            device=ctx.device,
        )
        rank_batch = self.global_batch // ctx.world_size
        window = _LogWindow(self, rank_batch)
        # Totals of earlier runs; this run's share is added whenever `state` is brought up to date.
        prior_seconds, prior_skipped = state.train_seconds, state.skipped_samples
        skipped = 0
        start = time.perf_counter()
        batches = iter(loader)

        def next_batch() -> dict[str, Any]:
            nonlocal skipped
            wait_start = time.perf_counter()
            batch = next(batches)
            window.data_wait += time.perf_counter() - wait_start
            loader_state.advance(batch)
            skipped += batch[SKIPPED_KEY]
            m.skipped_samples.labels(**self.labels).inc(batch[SKIPPED_KEY])
            return _to_device(batch, ctx.device)

        def bring_up_to_date(step: int) -> None:
            state.step = step
            state.samples_seen = step * self.global_batch
            state.train_seconds = prior_seconds + time.perf_counter() - start
            state.skipped_samples = prior_skipped + skipped

        step = state.step
        while step < self.total_steps:
            step_start = time.perf_counter()
            lr = self.schedule.lr_for_step(step, self.global_batch)
            window.add(train_step(next_batch, lr))
            step += 1
            m.optimizer_steps.labels(**self.labels).inc()
            m.samples.labels(**self.labels).inc(rank_batch)
            m.learning_rate.labels(**self.labels).set(lr)
            m.step_seconds.labels(**self.labels).observe(time.perf_counter() - step_start)
            if step % cfg.runtime.log_every_steps == 0 or step == self.total_steps:
                state.loss_history.append([step, window.close(step, lr)])
            if self.checkpointer.due(step, self.total_steps) and step < self.total_steps:
                bring_up_to_date(step)
                self.checkpointer.save(
                    step,
                    model,
                    optimizer,
                    state,
                    {"rng": capture_rng_state(ctx.device), "data": loader_state.state_dict()},
                    asynchronous=True,
                )
        bring_up_to_date(step)


class _LogWindow:
    """The losses and timings of the steps since the last logging step. Losses stay on the
    device until `close`: the one host synchronisation of a logging step."""

    def __init__(self, run: _Run, rank_batch: int) -> None:
        self.run, self.rank_batch = run, rank_batch
        self.flops = run.task.flops_per_sample()
        self.loss_sum = torch.zeros((), device=run.ctx.device)
        self.steps, self.data_wait, self.start = 0, 0.0, time.perf_counter()

    def add(self, loss: torch.Tensor) -> None:
        self.loss_sum += loss
        self.steps += 1

    def close(self, step: int, lr: float) -> float:
        """The window's mean loss over all ranks; sets the gauges, logs, starts a new window."""
        run, m, labels = self.run, self.run.metrics, self.run.labels
        mean_loss = all_reduce_mean(self.loss_sum, run.ctx).item() / (self.steps * run.accumulation)
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"loss is {mean_loss} at step {step}")
        now = time.perf_counter()
        rate = self.steps * self.rank_batch / (now - self.start)
        m.loss.labels(**labels).set(mean_loss)
        m.samples_per_second.labels(**labels).set(rate)
        m.data_wait_seconds.labels(**labels).inc(self.data_wait)
        m.memory_bytes.labels(**labels).set(peak_memory_bytes(run.ctx.device))
        mfu = self.flops * rate / run.peak if run.peak else None
        if mfu is not None:
            m.mfu.labels(**labels).set(mfu)
        log.info(
            "step %d/%d loss %.4f lr %.3g %.1f samples/s/rank data wait %.0f%%%s",
            step,
            run.total_steps,
            mean_loss,
            lr,
            rate,
            100 * self.data_wait / (now - self.start),
            f" MFU {100 * mfu:.1f}%" if mfu is not None else "",
        )
        self.loss_sum.zero_()
        self.steps, self.data_wait, self.start = 0, 0.0, now
        return mean_loss
