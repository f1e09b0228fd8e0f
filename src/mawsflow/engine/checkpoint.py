"""Resumable training state under `<output>/checkpoints/step-NNNNNNNN/`.

A checkpoint holds everything a killed run needs to continue as if it had never stopped:

- `train.pt` (rank 0): the full, unsharded model and optimizer state (gathered from FSDP
  shards with torch.distributed.checkpoint's state-dict helpers, so a run can resume on a
  different number of GPUs), the step, samples seen and the loss history;
- `rank-RRRRR.pt` (every rank): that rank's RNG states (Python, NumPy, torch CPU and CUDA) and
  its data streams' positions;
- `complete.json` (rank 0, last): written only after every rank's files are durable. A
  directory without it is an interrupted save and is ignored, then pruned.

Each file is written atomically through `mawsflow.storage`, so local paths and `s3://` behave
the same. On start the trainer resumes from the newest complete checkpoint by itself.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import random
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from mawsflow import storage
from mawsflow.engine.distributed import DistributedContext, barrier, broadcast_object

log = logging.getLogger(__name__)

# A file directly inside a checkpoint directory: …/checkpoints/step-00000012/train.pt
_STEP_FILE = re.compile(r"/step-(\d{8})/[^/]+$")


def capture_rng_state(device: torch.device) -> dict[str, Any]:
    """All random generators a training process draws from, in a form torch.load's safe
    (weights-only) unpickler reads back."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": np_state["state"]["key"].tolist(),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": np_state["bit_generator"],
            "state": {"key": np.asarray(np_state["key"], dtype=np.uint32), "pos": np_state["pos"]},
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _save(obj: object, uri: str) -> None:
    with storage.open_write(uri) as f:
        torch.save(obj, f)


def _load(uri: str) -> Any:
    return torch.load(io.BytesIO(storage.read_bytes(uri)), map_location="cpu", weights_only=True)


def full_model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded model state on CPU (rank 0 holds it; other ranks get an empty dict).
    Every rank must call this: gathering FSDP shards is a collective."""
    return get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


class Checkpointer:
    def __init__(
        self, output: str, *, every_steps: int, keep_last: int, ctx: DistributedContext
    ) -> None:
        if not output:
            raise ValueError("output is empty: set it to the URI the step writes to")
        if every_steps < 1:
            raise ValueError(f"checkpoint.every_steps must be ≥ 1, got {every_steps}")
        if keep_last < 1:
            raise ValueError(f"checkpoint.keep_last must be ≥ 1, got {keep_last}")
        self.root = storage.join(output, "checkpoints")
        self.every_steps = every_steps
        self.keep_last = keep_last
        self.ctx = ctx

    def step_uri(self, step: int) -> str:
        return storage.join(self.root, f"step-{step:08d}")

    def due(self, step: int, total_steps: int) -> bool:
        return step % self.every_steps == 0 or step == total_steps

    def _listing(self) -> list[str]:
        try:
            return storage.list_uris(self.root + "/")
        except storage.NotFoundError:
            return []

    def _steps(self, uris: list[str]) -> tuple[list[int], list[int]]:
        """(complete steps, all steps with any file), ascending."""
        complete, present = set(), set()
        for uri in uris:
            match = _STEP_FILE.search(uri)
            if not match:
                continue
            step = int(match.group(1))
            present.add(step)
            if uri.endswith("/complete.json"):
                complete.add(step)
        return sorted(complete), sorted(present)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, agreed by all ranks."""
        latest = None
        if self.ctx.is_main:
            complete, _ = self._steps(self._listing())
            latest = complete[-1] if complete else None
        return broadcast_object(latest, self.ctx)  # type: ignore[return-value]

    def save(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_state: Mapping[str, Any],
        rank_state: Mapping[str, Any],
    ) -> str:
        """Write checkpoint `step` (a collective: every rank calls it)."""
        uri = self.step_uri(step)
        model_state, optim_state = get_state_dict(
            model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        if self.ctx.is_main:
            _save(
                {"model": model_state, "optimizer": optim_state, "train": dict(train_state)},
                storage.join(uri, "train.pt"),
            )
        _save(dict(rank_state), storage.join(uri, f"rank-{self.ctx.rank:05d}.pt"))
        barrier(self.ctx)
        if self.ctx.is_main:
            storage.write_json(
                storage.join(uri, "complete.json"),
                {"step": step, "world_size": self.ctx.world_size},
            )
            self._prune()
            log.info("checkpoint written", extra={"checkpoint": uri, "train_step": step})
        barrier(self.ctx)
        return uri

    def load(
        self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Restore model and optimizer from checkpoint `step` (a collective). Returns the
        train state and this rank's own state (None when the checkpoint was written by a job
        without this rank)."""
        uri = self.step_uri(step)
        distributed = self.ctx.is_distributed
        payload: dict[str, Any] = {}
        if self.ctx.is_main:
            payload = _load(storage.join(uri, "train.pt"))
        set_state_dict(
            model,
            optimizer,
            model_state_dict=payload.get("model", {}),
            optim_state_dict=payload.get("optimizer", {}),
            options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=distributed),
        )
        train_state = broadcast_object(payload.get("train"), self.ctx)
        rank_uri = storage.join(uri, f"rank-{self.ctx.rank:05d}.pt")
        rank_state = _load(rank_uri) if storage.exists(rank_uri) else None
        log.info("resumed from checkpoint", extra={"checkpoint": uri, "train_step": step})
        return dict(train_state), rank_state  # type: ignore[arg-type]

    def _prune(self) -> None:
        """Keep the newest `keep_last` complete checkpoints; drop older and interrupted ones."""
        uris = self._listing()
        complete, present = self._steps(uris)
        keep = set(complete[-self.keep_last :])
        newest = complete[-1] if complete else -1
        doomed = {s for s in present if s not in keep and (s in complete or s < newest)}
        for step in sorted(doomed):
            prefix = self.step_uri(step) + "/"
            for uri in uris:
                if uri.startswith(prefix):
                    storage.delete(uri)
            if not storage.is_s3(prefix):
                # Local directories outlive their files; object stores have no directories.
                with contextlib.suppress(OSError):
                    os.rmdir(prefix)
