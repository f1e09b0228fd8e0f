"""Where a training run stands: the progress counters a checkpoint saves and a resume restores.

`TrainState` is `Stateful` in torch.distributed.checkpoint's sense (`state_dict` /
`load_state_dict`), as torchtitan's trainer hands its train state to the checkpointer: the
checkpointer saves whatever the state returns as `train.json` and loads it back into the state,
so the trainer never builds or reads that dictionary itself. Model, optimizer, RNG and data
positions are saved beside it by the checkpointer (engine/checkpoint.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or already complete) run reports to its step."""

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


@dataclass
class TrainState:
    """The run's progress. `recipe` is saved with every checkpoint so that a finished output
    can be told apart from one trained with another recipe."""

    recipe: dict[str, Any]
    step: int = 0
    samples_seen: int = 0
    # Seconds spent in the training loop, summed over every run that resumed this output.
    train_seconds: float = 0.0
    # Corrupt samples the loader skipped, summed likewise.
    skipped_samples: int = 0
    # [step, mean loss of the logging window], one entry per logging step.
    loss_history: list[list[float]] = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        # Copies: an asynchronous checkpoint must not see the loop's later appends.
        return {
            "step": self.step,
            "samples_seen": self.samples_seen,
            "train_seconds": self.train_seconds,
            "skipped_samples": self.skipped_samples,
            "loss_history": [list(entry) for entry in self.loss_history],
            "recipe": self.recipe,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.samples_seen = int(state["samples_seen"])
        self.train_seconds = float(state["train_seconds"])
        self.skipped_samples = int(state["skipped_samples"])
        self.loss_history = [list(entry) for entry in state["loss_history"]]
        # The recipe stays this run's: a resume with a changed recipe trains on with the new
        # one (the finished-output check compares them before anything is loaded).

    def result(self, resumed_from_step: int | None) -> TrainResult:
        history = self.loss_history
        return TrainResult(
            steps=self.step,
            samples_seen=self.samples_seen,
            initial_loss=history[0][1] if history else None,
            final_loss=history[-1][1] if history else None,
            samples_per_second=(
                self.samples_seen / self.train_seconds if self.train_seconds else 0.0
            ),
            skipped_samples=self.skipped_samples,
            resumed_from_step=resumed_from_step,
        )
