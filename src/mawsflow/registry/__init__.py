"""The model registry in object storage (store) and the promotion gate (gate)."""

from mawsflow.registry.gate import GateDecision, GateRules, decide
from mawsflow.registry.store import (
    ModelRecord,
    Pointer,
    Registry,
    RegistryError,
    new_id,
    record_at,
)

__all__ = [
    "GateDecision",
    "GateRules",
    "ModelRecord",
    "Pointer",
    "Registry",
    "RegistryError",
    "decide",
    "new_id",
    "record_at",
]
