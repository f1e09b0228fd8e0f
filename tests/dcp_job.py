"""One rank of a torchrun job for tests/test_engine_dcp.py: train a small block model a few steps
under DDP or FSDP2 (gloo), checkpoint it through the engine's Checkpointer, or load such a
checkpoint on another number of ranks and compare with the full state the saving job recorded.

    save <output> <ddp|fsdp>: 2 steps, an asynchronous save, 1 more step while it writes, then
        wait; rank 0 records the full state of step 2 in <output>/expected.pt (gathered here
        only for the comparison, never by the checkpoint itself).
    load <output> <ddp|fsdp>: a fresh model and optimizer load step 2; rank 0 gathers them and
        compares with expected.pt bit for bit.
"""

from __future__ import annotations

import io
import sys

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

from mawsflow import storage
from mawsflow.engine.checkpoint import Checkpointer
from mawsflow.engine.distributed import init_distributed, shutdown, wrap_model
from mawsflow.engine.train_state import TrainState


class BlockNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            *[nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 64)) for _ in range(4)]
        )
        self.head = nn.Linear(64, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x))


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    model_state, optim_state = get_state_dict(
        model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    return {"model": model_state, "optimizer": optim_state}


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, step: int, rank: int) -> None:
    generator = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.randn(8, 64, generator=generator)
    model(x).square().mean().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main(mode: str, output: str, parallelism: str) -> None:
    ctx = init_distributed("cpu")
    torch.manual_seed(0)
    net = BlockNet()
    model = wrap_model(net, [net.blocks], ctx, parallelism, bf16=False)  # type: ignore[arg-type]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    checkpointer = Checkpointer(output, every_steps=1, keep_last=1, ctx=ctx)
    expected_uri = storage.join(output, "expected.pt")
    if mode == "save":
        for step in (1, 2):
            train_step(model, optimizer, step, ctx.rank)
        expected = full_state(model, optimizer)
        if ctx.is_main:
            with storage.open_write(expected_uri) as f:
                torch.save(expected, f)
        checkpointer.save(
            2, model, optimizer, TrainState({}, step=2), {"rank": ctx.rank}, asynchronous=True
        )
        # Training goes on while the checkpoint is written: the parameters and moments change
        # in place, and the checkpoint must still hold step 2.
        train_step(model, optimizer, 3, ctx.rank)
        checkpointer.wait()
    else:
        # The optimizer holds no state before its first step; the loader creates it.
        train_state = TrainState({})
        own = checkpointer.load(2, model, optimizer, train_state)
        assert train_state.step == 2, train_state
        assert own is None or own == {"rank": ctx.rank}, own
        loaded = full_state(model, optimizer)
        if ctx.is_main:
            expected = torch.load(io.BytesIO(storage.read_bytes(expected_uri)), weights_only=True)
            compare(expected, loaded)
            print("LOADED-EXACTLY", flush=True)
    shutdown()


def compare(expected: dict, loaded: dict) -> None:
    assert set(expected["model"]) == set(loaded["model"]), (
        sorted(expected["model"]),
        sorted(loaded["model"]),
    )
    for key, value in expected["model"].items():
        assert torch.equal(value, loaded["model"][key]), f"model {key} differs"
    states_a, states_b = expected["optimizer"]["state"], loaded["optimizer"]["state"]
    assert set(states_a) == set(states_b)
    for key, moments in states_a.items():
        for name, value in moments.items():
            assert torch.equal(value, states_b[key][name]), f"optimizer {key}.{name} differs"
    groups_a, groups_b = expected["optimizer"]["param_groups"], loaded["optimizer"]["param_groups"]
    assert [sorted(g["params"]) for g in groups_a] == [sorted(g["params"]) for g in groups_b]


if __name__ == "__main__":
    main(*sys.argv[1:4])
