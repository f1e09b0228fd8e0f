"""Resumable training state under `<output>/checkpoints/step-NNNNNNNN/`.

A checkpoint holds everything a killed run needs to continue as if it had never stopped:

- `.metadata` + `__R_F.distcp` (torch.distributed.checkpoint, DCP): the model and optimizer
  state *as trained*. Every rank writes only what it holds: its FSDP shards, and for DDP's
  replicated tensors an even share (DCP de-duplicates replicas across ranks). No rank ever
  gathers the full state. On load DCP reads each rank's share of the target layout, so a job
  restarted on a different number of ranks (or switched between DDP and FSDP) reshards by itself;
  optimizer moments are keyed by parameter name, not by position.
- `train.json` (rank 0): the step, samples seen, seconds trained, corrupt samples skipped, the
  loss history, the recipe and the job's world size.
- `rank-RRRRR.pt` (every rank): that rank's RNG states (Python, NumPy, torch CPU and CUDA) and
  its data streams' positions.
- `complete.json` (rank 0, last): written only after every rank's files are durable. A
  directory without it is an interrupted save: it is ignored, cleared if the same step is
  saved again, and pruned.

Every file goes through `mawsflow.storage` (DCP's file-system writer and reader run over a
`FileSystemBase` backed by it), so local paths and `s3://` behave the same: atomic objects,
retries with backoff, typed errors naming the URI. Reading a DCP file fetches that one object
into memory (DCP seeks inside it); a rank therefore holds at most one file of one rank's share at
a time, never the full state.

Intermediate checkpoints are saved asynchronously (`dcp.async_save`): the state is copied to
host memory, then a background thread writes it while training goes on, over a process group of
its own (gloo) so its collectives never interleave with training's. The completion marker is
written when the write has finished on every rank; the save before it (or the end of training)
waits for it. The last checkpoint is saved synchronously.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import random
import re
import shutil
import time
from collections.abc import Generator, Mapping
from concurrent.futures import Future
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.filesystem import FileSystemBase
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.checkpoint.stateful import Stateful

from mawsflow import storage
from mawsflow.engine.distributed import DistributedContext, barrier, broadcast_object

log = logging.getLogger(__name__)

# A file directly inside a checkpoint directory: …/checkpoints/step-00000012/train.json
_STEP_FILE = re.compile(r"/step-(\d{8})/[^/]+$")
TRAIN_STATE_FILE = "train.json"
COMPLETE_FILE = "complete.json"


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
    Every rank must call this: gathering FSDP shards is a collective. Only the final export
    uses it (the model alone, without the optimizer)."""
    return get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


class _PositionCountingWriter(io.RawIOBase):
    """DCP records each item's offset with `tell()`; the S3 writer streams parts and cannot
    seek, so the position is counted here. Closing it leaves publishing to storage.open_write."""

    def __init__(self, inner: BinaryIO) -> None:
        super().__init__()
        self.inner = inner
        self.position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        written = self.inner.write(data)
        self.position += written
        return written

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        self.inner.flush()


class StorageFileSystem(FileSystemBase):
    """DCP's file-system interface over `mawsflow.storage`: paths are URIs (local or s3://)."""

    @contextlib.contextmanager
    def create_stream(self, path: str | os.PathLike, mode: str) -> Generator[io.IOBase]:
        uri = str(path)
        if mode == "wb":
            with storage.open_write(uri) as stream:
                yield _PositionCountingWriter(stream)
        elif mode == "rb":
            # DCP seeks within a file; one object (one rank's share at most) in memory.
            yield io.BytesIO(storage.read_bytes(uri))
        else:
            raise ValueError(f"{uri}: checkpoint streams open as 'wb' or 'rb', not {mode!r}")

    def concat_path(self, path: str | os.PathLike, suffix: str) -> str:
        return storage.join(str(path), suffix)

    def rename(self, path: str | os.PathLike, new_path: str | os.PathLike) -> None:
        # Only DCP's `.metadata.tmp` → `.metadata`; every object is atomic already, and the
        # checkpoint counts only once `complete.json` exists, so copy + delete is enough.
        storage.copy(str(path), str(new_path))
        storage.delete(str(path))

    def init_path(self, path: str | os.PathLike) -> str:
        return str(path)

    def mkdir(self, path: str | os.PathLike) -> None:
        # Local writes create their directory; object stores have none.
        return None

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike) -> bool:
        return True

    def exists(self, path: str | os.PathLike) -> bool:
        return storage.exists(str(path))

    def rm_file(self, path: str | os.PathLike) -> None:
        storage.delete(str(path))


class _StorageWriter(dcp.FileSystemWriter):
    def __init__(self, uri: str) -> None:
        # storage.open_write fsyncs local files itself; S3 objects have no descriptor.
        super().__init__(uri, sync_files=False)
        self.fs = StorageFileSystem()
        self.path = uri


class _StorageReader(dcp.FileSystemReader):
    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.fs = StorageFileSystem()
        self.path = uri


def _sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Model and optimizer state as each rank holds it (FSDP: DTensor shards), keyed by
    parameter name."""
    model_state, optim_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optimizer": optim_state}


def _bytes_under(uri: str) -> int:
    return sum(storage.size(u) for u in storage.list_uris(uri + "/"))


def read_checkpoint_state(step_uri: str) -> dict[str, Any]:
    """The whole model and optimizer state of one checkpoint directory, unsharded, in this
    process ({"model": {name: tensor}, "optimizer": {"state": …, "param_groups": …}}). For
    inspection and tests: it holds everything in memory, which training never does."""
    # DCP's own offline conversion (format_utils.dcp_to_torch_save) loads this way: an empty
    # target that the planner fills with every item in the metadata.
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    state: dict[str, Any] = {}
    _load_state_dict(
        state,
        storage_reader=_StorageReader(step_uri),
        planner=_EmptyStateDictLoadPlanner(),
        no_dist=True,
    )
    return state


def latest_complete_checkpoint(output: str) -> str | None:
    """The newest complete checkpoint directory of a training step's `output`, or None. One
    process, no collective: for reading another run's checkpoint (a warm start)."""
    root = storage.join(output, "checkpoints")
    try:
        uris = storage.list_uris(root + "/")
    except storage.NotFoundError:
        return None
    steps = sorted(
        int(match.group(1))
        for uri in uris
        if uri.endswith("/" + COMPLETE_FILE) and (match := _STEP_FILE.search(uri))
    )
    return storage.join(root, f"step-{steps[-1]:08d}") if steps else None


def read_model_tensors(step_uri: str, prefix: str) -> dict[str, torch.Tensor]:
    """The model tensors whose names start with `prefix` in one checkpoint directory, and only
    those: DCP reads just their bytes, so a head is read without the trunk or the optimizer
    state (which at 2B parameters would not fit in one process)."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    reader = _StorageReader(step_uri)
    stored = reader.read_metadata().state_dict_metadata
    wanted = {
        key[len("model.") :]: torch.empty(meta.size, dtype=meta.properties.dtype)
        for key, meta in stored.items()
        if key.startswith("model." + prefix) and isinstance(meta, TensorStorageMetadata)
    }
    if wanted:
        _load_state_dict({"model": wanted}, storage_reader=_StorageReader(step_uri), no_dist=True)
    return wanted


class Checkpointer:
    def __init__(
        self,
        output: str,
        *,
        every_steps: int,
        keep_last: int,
        ctx: DistributedContext,
        metrics: Any = None,
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
        self.metrics = metrics
        self._pending: tuple[int, Future, float] | None = None
        # A group of its own for the background writer's collectives (gloo works on host
        # memory, where the staged copy lives).
        self._group = dist.new_group(backend="gloo") if ctx.is_distributed else None

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
            if uri.endswith("/" + COMPLETE_FILE):
                complete.add(step)
        return sorted(complete), sorted(present)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, agreed by all ranks."""
        latest = None
        if self.ctx.is_main:
            complete, _ = self._steps(self._listing())
            latest = complete[-1] if complete else None
        return broadcast_object(latest, self.ctx)  # type: ignore[return-value]

    def read_train_state(self, step: int) -> dict[str, Any]:
        """The train state of complete checkpoint `step` (no collective; any rank)."""
        return dict(storage.read_json(storage.join(self.step_uri(step), TRAIN_STATE_FILE)))

    # -- saving ----------------------------------------------------------------------------

    def save(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_state: Stateful,
        rank_state: Mapping[str, Any],
        *,
        asynchronous: bool = False,
    ) -> str:
        """Write checkpoint `step` (a collective: every rank calls it). `train_state` (e.g.
        engine/train_state.TrainState) is saved as its `state_dict()`, taken now. Asynchronous
        saves return once the state is copied to host memory; `wait()` or the next save
        finishes them."""
        self.wait()
        uri = self.step_uri(step)
        if self.ctx.is_main:
            self._clear(step)  # leftovers of an interrupted save of the same step
        barrier(self.ctx)
        start = time.perf_counter()
        _save(dict(rank_state), storage.join(uri, f"rank-{self.ctx.rank:05d}.pt"))
        if self.ctx.is_main:
            storage.write_json(storage.join(uri, TRAIN_STATE_FILE), train_state.state_dict())
        state = _sharded_state(model, optimizer)
        writer = _StorageWriter(uri)
        if asynchronous:
            future = dcp.async_save(state, storage_writer=writer, process_group=self._group)
            self._pending = (step, future, start)  # type: ignore[assignment]
            stalled = time.perf_counter() - start
            log.info(
                "checkpoint staged; writing in the background",
                extra={"checkpoint": uri, "train_step": step, "stall_seconds": round(stalled, 3)},
            )
        else:
            dcp.save(state, storage_writer=writer, process_group=self._group)
            self._complete(step, start)
        return uri

    def wait(self) -> None:
        """Finish the asynchronous save in flight, if any (every rank calls it)."""
        if self._pending is None:
            return
        step, future, start = self._pending
        self._pending = None
        # Raises the writer's error (e.g. storage.UnavailableError) in the training thread.
        future.result()
        self._complete(step, start)

    def _complete(self, step: int, start: float) -> None:
        # Rank 0's DCP save returns only after every rank's data is written and the metadata
        # (which lists all of it) is in place; the rank files were written before any rank
        # entered the save. So rank 0 alone may mark the checkpoint complete.
        if not self.ctx.is_main:
            return
        uri = self.step_uri(step)
        storage.write_json(
            storage.join(uri, COMPLETE_FILE), {"step": step, "world_size": self.ctx.world_size}
        )
        seconds = time.perf_counter() - start
        size = _bytes_under(uri)
        if self.metrics is not None:
            self.metrics.checkpoint_save_seconds.labels(**self.metrics.labels()).observe(seconds)
            self.metrics.checkpoint_bytes.labels(**self.metrics.labels()).set(size)
        self._prune()
        log.info(
            "checkpoint written",
            extra={
                "checkpoint": uri,
                "train_step": step,
                "bytes": size,
                "save_seconds": round(seconds, 3),
            },
        )

    # -- loading ---------------------------------------------------------------------------

    def saved_world_size(self, step: int) -> int:
        complete = storage.read_json(storage.join(self.step_uri(step), COMPLETE_FILE))
        return int(complete["world_size"])

    def saved_rank_states(self, step: int) -> list[dict[str, Any]]:
        """Every rank's own state in checkpoint `step` (small: RNG and data positions), for
        redistributing data streams when the world size changed."""
        uri = self.step_uri(step)
        return [
            _load(storage.join(uri, f"rank-{rank:05d}.pt"))
            for rank in range(self.saved_world_size(step))
        ]

    def load(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_state: Stateful,
    ) -> dict[str, Any] | None:
        """Restore model, optimizer and `train_state` from checkpoint `step` (a collective),
        resharding to this job's layout. Returns this rank's own state (None when the
        checkpoint was written by a job of another world size)."""
        uri = self.step_uri(step)
        start = time.perf_counter()
        state = _sharded_state(model, optimizer)
        dcp.load(state, storage_reader=_StorageReader(uri), process_group=self._group)
        set_state_dict(
            model,
            optimizer,
            model_state_dict=state["model"],
            optim_state_dict=state["optimizer"],
        )
        train_state.load_state_dict(self.read_train_state(step))
        saved_world = self.saved_world_size(step)
        own = None
        if saved_world == self.ctx.world_size:
            own = _load(storage.join(uri, f"rank-{self.ctx.rank:05d}.pt"))
        seconds = time.perf_counter() - start
        if self.metrics is not None:
            self.metrics.checkpoint_load_seconds.labels(**self.metrics.labels()).set(seconds)
        log.info(
            "resumed from checkpoint",
            extra={
                "checkpoint": uri,
                "train_step": step,
                "saved_world_size": saved_world,
                "load_seconds": round(seconds, 3),
            },
        )
        return own

    # -- housekeeping ----------------------------------------------------------------------

    def _delete_step(self, step: int, uris: list[str]) -> None:
        prefix = self.step_uri(step) + "/"
        if not storage.is_s3(prefix):
            # The directory with everything in it, in-progress temporaries of a killed
            # writer included (listings hide those).
            shutil.rmtree(prefix.removeprefix("file://"), ignore_errors=True)
            return
        for uri in uris:
            if uri.startswith(prefix):
                storage.delete(uri)

    def _clear(self, step: int) -> None:
        uris = self._listing()
        if any(u.startswith(self.step_uri(step) + "/") for u in uris):
            log.info("clearing an interrupted save", extra={"checkpoint": self.step_uri(step)})
            self._delete_step(step, uris)

    def _prune(self) -> None:
        """Keep the newest `keep_last` complete checkpoints; drop older and interrupted ones."""
        uris = self._listing()
        complete, present = self._steps(uris)
        keep = set(complete[-self.keep_last :])
        newest = complete[-1] if complete else -1
        doomed = {s for s in present if s not in keep and (s in complete or s < newest)}
        for step in sorted(doomed):
            self._delete_step(step, uris)
