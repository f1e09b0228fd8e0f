"""A pretraining dataset's manifest (docs/data-formats.md) and the shard sizes it implies.

`manifest.json` lists the shards in order and says how many samples each holds: every shard but
the last holds `samples_per_shard`, the last the rest. The loader's streams need every shard's
size to place a position without reading; `shard_sizes` is that arithmetic, for the
pretraining manifest here and for evaluation splits (`mawsflow.data.eval_shards`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mawsflow import storage
from mawsflow.errors import ConfigError, DataFormatError

MANIFEST_FORMAT = "mawsflow.multilabel/1"


@dataclass(frozen=True)
class PretrainManifest:
    uri: str
    shards: tuple[str, ...]  # absolute URIs, in manifest order
    shard_sizes: tuple[int, ...]
    num_samples: int
    num_classes: int
    vocab: str | None

    def read_vocab(self) -> list[dict[str, Any]]:
        if self.vocab is None:
            raise DataFormatError(f"{self.uri}: the manifest names no vocab file")
        vocab = storage.read_json(self.vocab)
        if not isinstance(vocab, list) or len(vocab) != self.num_classes:
            raise DataFormatError(
                f"{self.vocab}: expected a list of {self.num_classes} entries (the manifest's "
                f"num_classes), got {type(vocab).__name__} of length {len(vocab)}"
            )
        return vocab


def shard_sizes(
    num_samples: int, samples_per_shard: int, num_shards: int, *, source: str
) -> tuple[int, ...]:
    """Every shard's sample count: all full but the last, which holds the rest (at least one).
    `source` names the manifest in the error when the counts do not fit."""
    last = num_samples - samples_per_shard * (num_shards - 1)
    if not 0 < last <= samples_per_shard:
        raise DataFormatError(
            f"{source}: {num_samples} samples do not fit {num_shards} shards of "
            f"{samples_per_shard} (every shard but the last is full)"
        )
    return (samples_per_shard,) * (num_shards - 1) + (last,)


def _manifest_int(data: Mapping[str, Any], key: str, uri: str, minimum: int) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DataFormatError(f"{uri}: {key} must be an integer ≥ {minimum}, got {value!r}")
    return value


def read_manifest(dataset_uri: str) -> PretrainManifest:
    """Read and check `<dataset_uri>/manifest.json` (or a manifest URI given directly)."""
    if not dataset_uri:
        raise ConfigError("data.train is empty: set it to the dataset's URI (its manifest.json)")
    if dataset_uri.endswith(".json"):
        manifest_uri = dataset_uri
        root = dataset_uri.rsplit("/", 1)[0] if "/" in dataset_uri else "."
    else:
        root = dataset_uri.rstrip("/")
        manifest_uri = storage.join(root, "manifest.json")
    try:
        data = storage.read_json(manifest_uri)
    except storage.NotFoundError:
        raise ConfigError(f"data.train: no dataset manifest at {manifest_uri}") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise DataFormatError(f"{manifest_uri}: format must be {MANIFEST_FORMAT!r}, got {found!r}")
    shards = data.get("shards")
    if not isinstance(shards, list) or not shards or not all(isinstance(s, str) for s in shards):
        raise DataFormatError(f"{manifest_uri}: shards must be a non-empty list of paths")
    num_samples = _manifest_int(data, "num_samples", manifest_uri, 1)
    per_shard = _manifest_int(data, "samples_per_shard", manifest_uri, 1)
    num_classes = _manifest_int(data, "num_classes", manifest_uri, 0)
    vocab = data.get("vocab")
    return PretrainManifest(
        uri=manifest_uri,
        shards=tuple(storage.join(root, s) for s in shards),
        shard_sizes=shard_sizes(num_samples, per_shard, len(shards), source=manifest_uri),
        num_samples=num_samples,
        num_classes=num_classes,
        vocab=storage.join(root, vocab) if isinstance(vocab, str) and vocab else None,
    )
