"""A model registry in object storage: append-only model records and a `production` pointer.

Scheduled retraining needs to know which model is in use, what each candidate was trained on
and how it scored, and to change the model in use only on purpose. Object storage holds all of
it without another service, as JSON a person can read:

    <root>/models/<id>.json      one record per registered model, written once, never changed:
                                 its URI, metrics, evaluation data, training data listing,
                                 code version, image references and parent models
    <root>/production.json       the pointer: the production model's id, a revision number and
                                 the ids that were production before it (newest last)
    <root>/events/<rev>.json     one record per change of the pointer (promote, rollback),
                                 written before the pointer, never changed
    <root>/decisions/<id>.json   the promotion gate's decision on a model (promoted or not,
                                 and the comparison with production it was based on)

The pointer is replaced by one atomic write (mawsflow.storage: a single PUT, or rename(2)
locally), so a reader sees the old pointer or the new one, never a mix. Writers are expected
one at a time (the recurring run allows one run at a time); a second writer that raced is
caught afterwards: each change re-reads the pointer and fails if its own revision is not there.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from mawsflow import __version__, storage

RECORD_FORMAT = "mawsflow.registry.model/1"
POINTER_FORMAT = "mawsflow.registry.production/1"
EVENT_FORMAT = "mawsflow.registry.event/1"


class RegistryError(ValueError):
    """A registry operation that cannot be done; the message names the registry and the id."""


@dataclass(frozen=True)
class ModelRecord:
    """What the registry knows of one model."""

    id: str
    uri: str  # the model's folder (a training step's output, with model.json)
    metrics: Mapping[str, float]  # headline evaluation metrics, e.g. {"finetune_top1": 81.2}
    evaluation: Mapping[str, str] = field(default_factory=dict)  # {"name", "fingerprint"}
    data: Mapping[str, Any] = field(default_factory=dict)  # listing/fingerprint it trained on
    code_version: str = __version__
    images: Mapping[str, str] = field(default_factory=dict)  # step → image reference
    parents: Mapping[str, str] = field(default_factory=dict)  # e.g. {"mae": <record id>}
    created: str = ""
    # "model": a candidate for production (a pretrained trunk with its evaluation); "mae": an
    # MAE encoder kept for warm starts, never promoted.
    role: str = "model"

    def to_json(self) -> dict[str, Any]:
        return {"format": RECORD_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> ModelRecord:
        if data.get("format") != RECORD_FORMAT:
            raise RegistryError(f"{where}: not a model record (format {data.get('format')!r})")
        fields = {k: v for k, v in data.items() if k != "format"}
        try:
            return cls(**fields)
        except TypeError as exc:
            raise RegistryError(f"{where}: malformed model record ({exc})") from None


@dataclass(frozen=True)
class Pointer:
    model: str
    revision: int
    previous: tuple[str, ...] = ()


def record_at(records: Iterable[ModelRecord], uri: str) -> ModelRecord | None:
    """The record among `records` (a listing, `Registry.list()`) of the model at `uri`, if any.
    For a caller that looks up several models: it lists the registry once, not once a model."""
    return next((r for r in records if r.uri.rstrip("/") == uri.rstrip("/")), None)


def new_id(uri: str, now: datetime.datetime | None = None) -> str:
    """`<UTC time>-<8 hex of the URI>`: sorts by registration time, readable, unique per URI."""
    now = now or datetime.datetime.now(datetime.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{hashlib.sha256(uri.encode()).hexdigest()[:8]}"


class Registry:
    def __init__(self, root: str) -> None:
        if not root:
            raise RegistryError("registry root: empty; give an s3:// or local URI")
        self.root = root.rstrip("/")

    # ---- records

    def _record_uri(self, model_id: str) -> str:
        if not model_id or "/" in model_id:
            raise RegistryError(f"{self.root}: bad model id {model_id!r}")
        return storage.join(self.root, "models", f"{model_id}.json")

    def register(self, record: ModelRecord) -> ModelRecord:
        """Add a record; an id that exists already is an error (records never change)."""
        uri = self._record_uri(record.id)
        if storage.exists(uri):
            raise RegistryError(f"{self.root}: model {record.id} is registered already")
        if not record.created:
            stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
            record = ModelRecord(**{**asdict(record), "created": stamp})
        storage.write_json(uri, record.to_json())
        return record

    def get(self, model_id: str) -> ModelRecord:
        uri = self._record_uri(model_id)
        try:
            return ModelRecord.from_json(storage.read_json(uri), uri)
        except storage.NotFoundError:
            raise RegistryError(f"{self.root}: no model {model_id!r}") from None

    def list(self) -> list[ModelRecord]:
        """Every record, oldest first."""
        prefix = storage.join(self.root, "models") + "/"
        return [
            ModelRecord.from_json(storage.read_json(uri), uri)
            for uri in storage.list_uris(prefix, suffix=".json")
        ]

    def find_uri(self, uri: str) -> ModelRecord | None:
        """The record of the model at `uri`, if one was registered (a rerun served from the
        cache registers the same output again: it gets the record it had)."""
        return record_at(self.list(), uri)

    def latest(self, role: str = "model") -> ModelRecord | None:
        """The newest record of `role` (ids sort by registration time)."""
        records = [r for r in self.list() if r.role == role]
        return max(records, key=lambda r: (r.created, r.id)) if records else None

    # ---- the production pointer

    @property
    def _pointer_uri(self) -> str:
        return storage.join(self.root, "production.json")

    def pointer(self) -> Pointer | None:
        try:
            data = storage.read_json(self._pointer_uri)
        except storage.NotFoundError:
            return None
        if data.get("format") != POINTER_FORMAT:
            raise RegistryError(f"{self._pointer_uri}: not a production pointer")
        return Pointer(data["model"], int(data["revision"]), tuple(data.get("previous", ())))

    def production(self, records: Iterable[ModelRecord] = ()) -> ModelRecord | None:
        """The production model's record: from `records` (a listing read before) when it is
        there, else read from the registry."""
        pointer = self.pointer()
        if pointer is None:
            return None
        listed = next((r for r in records if r.id == pointer.model), None)
        return listed or self.get(pointer.model)

    def promote(self, model_id: str, reason: str = "") -> Pointer:
        """Make `model_id` production; the model in production before is kept for rollback."""
        if self.get(model_id).role != "model":
            raise RegistryError(f"{self.root}: {model_id} is an MAE encoder, not a model to serve")
        current = self.pointer()
        if current and current.model == model_id:
            return current
        previous = (*current.previous, current.model) if current else ()
        return self._move(Pointer(model_id, _next(current), previous), "promote", reason)

    def rollback(self, reason: str = "") -> Pointer:
        """Make the model that was production before the current one production again."""
        current = self.pointer()
        if current is None or not current.previous:
            raise RegistryError(f"{self.root}: nothing to roll back to")
        *rest, back = current.previous
        return self._move(Pointer(back, _next(current), tuple(rest)), "rollback", reason)

    def record_decision(self, model_id: str, decision: Mapping[str, Any]) -> str:
        """Keep the gate's decision on `model_id` beside its record; returns its URI. A model
        is decided on once: a second decision is an error, as for records."""
        self.get(model_id)
        uri = storage.join(self.root, "decisions", f"{model_id}.json")
        if storage.exists(uri):
            raise RegistryError(f"{self.root}: model {model_id} has been decided on already")
        storage.write_json(uri, dict(decision))
        return uri

    def decision(self, model_id: str) -> dict[str, Any] | None:
        try:
            return storage.read_json(storage.join(self.root, "decisions", f"{model_id}.json"))
        except storage.NotFoundError:
            return None

    def events(self) -> list[dict[str, Any]]:
        prefix = storage.join(self.root, "events") + "/"
        return [storage.read_json(uri) for uri in storage.list_uris(prefix, suffix=".json")]

    def _move(self, new: Pointer, action: str, reason: str) -> Pointer:
        stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        event = {"format": EVENT_FORMAT, "action": action, "model": new.model}
        event |= {"revision": new.revision, "reason": reason, "time": stamp}
        event_uri = storage.join(self.root, "events", f"{new.revision:08d}.json")
        if storage.exists(event_uri):
            raise RegistryError(f"{self.root}: revision {new.revision} was taken by another writer")
        storage.write_json(event_uri, event)
        storage.write_json(
            self._pointer_uri,
            {
                "format": POINTER_FORMAT,
                "model": new.model,
                "revision": new.revision,
                "previous": list(new.previous),
                "time": stamp,
            },
        )
        after = self.pointer()
        if after != new:
            raise RegistryError(
                f"{self.root}: another writer changed the production pointer at the same time "
                f"(now revision {after.revision if after else None}); check `registry show`"
            )
        return new


def _next(current: Pointer | None) -> int:
    return current.revision + 1 if current else 1
