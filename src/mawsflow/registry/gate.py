"""The promotion gate: whether a newly trained model may replace the one in production.

Rules are the user's (chart values, pipeline parameters): no headline metric may be worse than
production's by more than `max_drop` points, and at least one must be better by `min_gain` or
more. Only models scored on the same evaluation data (the same fingerprint of its listing) are
compared; a first model passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mawsflow.registry.store import ModelRecord, RegistryError


@dataclass(frozen=True)
class GateRules:
    """When a candidate replaces production: no headline metric worse by more than
    `max_drop` points, and at least one better by `min_gain` points or more."""

    headline: Sequence[str]
    max_drop: float = 0.5
    min_gain: float = 0.0


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reasons: tuple[str, ...]
    # (metric, production value or None, candidate value)
    comparison: tuple[tuple[str, float | None, float], ...]


def decide(
    candidate: ModelRecord, production: ModelRecord | None, rules: GateRules
) -> GateDecision:
    """Whether `candidate` may replace `production`. A first model always may; models scored
    on different evaluation data cannot be compared, and are not promoted."""
    missing = [m for m in rules.headline if m not in candidate.metrics]
    if missing:
        raise RegistryError(f"model {candidate.id}: no headline metric {', '.join(missing)}")
    if production is None:
        rows = tuple((m, None, float(candidate.metrics[m])) for m in rules.headline)
        return GateDecision(True, ("no model in production",), rows)
    if candidate.evaluation.get("fingerprint") != production.evaluation.get("fingerprint"):
        rows = tuple((m, None, float(candidate.metrics[m])) for m in rules.headline)
        why = "evaluated on other data than production (evaluation fingerprints differ)"
        return GateDecision(False, (why,), rows)
    rows = tuple(
        (m, float(production.metrics[m]), float(candidate.metrics[m]))
        for m in rules.headline
        if m in production.metrics
    )
    worse = [f"{m} {new:.2f} < {old:.2f} - {rules.max_drop}" for m, old, new in rows
             if new < old - rules.max_drop]  # fmt: skip
    better = [m for m, old, new in rows if new >= old + rules.min_gain and new > old]
    reasons = [f"worse: {w}" for w in worse]
    if not better:
        reasons.append(f"no headline metric better by {rules.min_gain} or more")
    if worse or not better:
        return GateDecision(False, tuple(reasons), rows)
    return GateDecision(True, tuple(f"better: {m}" for m in better), rows)
