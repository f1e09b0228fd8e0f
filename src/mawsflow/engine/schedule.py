"""Learning-rate schedules counted in samples seen (training length is in samples).

A schedule is a pure function of the samples seen, so resuming needs no scheduler state beyond
the step counter, and the shape does not change with the number of GPUs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from mawsflow.errors import ConfigError

Shape = Literal["cosine", "linear", "constant", "step"]

# The step schedule's drops, as fractions of the whole training, and the factor of each: ViTDet's
# (detectron2 projects/ViTDet configs: COCO's 100 epochs are 184375 iterations with drops at
# 163889 and 177546, LVIS's 156250 with drops at 138889 and 150463; both are 8/9 and 26/27 of
# training, each drop ×0.1).
STEP_MILESTONES = (8 / 9, 26 / 27)
STEP_FACTOR = 0.1


@dataclass(frozen=True)
class LRSchedule:
    """Linear warmup from 0 over `warmup_samples`, then `shape` from 1 down to 0 at the end;
    `step` holds 1 and drops ×0.1 at each of `STEP_MILESTONES` (fractions of all samples,
    warmup included, as detectron2 counts its milestones in iterations from the start)."""

    base_lr: float
    total_samples: int
    warmup_samples: int
    shape: Shape

    def __post_init__(self) -> None:
        if self.shape not in ("cosine", "linear", "constant", "step"):
            raise ConfigError(
                f"schedule.lr_schedule: {self.shape!r} is not a schedule the engine knows; "
                "use cosine, linear, constant or step"
            )
        if self.total_samples <= 0:
            raise ConfigError(f"schedule: total samples must be positive, got {self.total_samples}")
        if not 0 <= self.warmup_samples <= self.total_samples:
            raise ConfigError(
                f"schedule.warmup_fraction gives {self.warmup_samples} warmup samples, outside "
                f"[0, {self.total_samples}]"
            )

    def factor(self, samples: float) -> float:
        """Multiplier of the base learning rate after `samples` samples."""
        if samples < self.warmup_samples:
            return samples / self.warmup_samples
        if self.shape == "constant":
            return 1.0
        if self.shape == "step":
            passed = sum(samples >= m * self.total_samples for m in STEP_MILESTONES)
            return STEP_FACTOR**passed
        decay = self.total_samples - self.warmup_samples
        progress = min(1.0, (samples - self.warmup_samples) / decay) if decay else 1.0
        if self.shape == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - progress

    def lr_for_step(self, step: int, global_batch: int) -> float:
        """The rate for optimizer step `step` (0-based), taken at the middle of its batch so
        that the first warmup step is not a wasted zero and the last decay step is not either."""
        return self.base_lr * self.factor((step + 0.5) * global_batch)


def schedule_from_recipe(
    base_lr: float, *, total_samples: int, warmup_fraction: float, shape: str
) -> LRSchedule:
    """The recipe's schedule section as an `LRSchedule`."""
    if not 0.0 <= warmup_fraction < 1.0:
        raise ConfigError(f"schedule.warmup_fraction must be in [0, 1), got {warmup_fraction}")
    return LRSchedule(
        base_lr=base_lr,
        total_samples=total_samples,
        warmup_samples=round(warmup_fraction * total_samples),
        shape=shape,  # type: ignore[arg-type]
    )
