"""Fingerprints of the data behind a pipeline's URI parameters, for Kubeflow's cache keys.

The KFP backend keys a task's cache on its input parameter *values*, the *ids* of its input
artifacts, its command and its image (`backend/src/v2/cacheutils/cache.go`,
`GenerateCacheKey`, called from `driver/cache.go` `getFingerPrint`). It never looks at what
a URI points to, so a task that takes `raw_corpus=s3://data/ig` would be served from the
cache after the corpus behind that URI changed.

The pipeline therefore lists the data first, in tasks that are never cached and cost one
paginated LIST, and hands the digest of the listing (every object's key, ETag and size) to
the tasks that read the data, as a parameter. Same listing, same digest, same cache key;
one shard replaced, added or removed, and every task that reads it runs again. Tasks further
down inherit the change through the ids of the artifacts those tasks then write.

The build's tasks share one key, the digest of the whole listing and of the build's settings,
rather than one per shard group: a finished build removes its intermediate files
(mawsflow.dataset.build_state), so a count task served from the cache for an unchanged group
would leave the vocabulary phase without that group's counts. Any change re-runs the whole
build; no change runs none of it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

from mawsflow import storage
from mawsflow.dataset.corpus_snapshot import is_snapshot, snapshot_versions
from mawsflow.dataset.layout import ShardGroup
from mawsflow.errors import DataFormatError


def digest(versions: Mapping[str, str]) -> str:
    """sha256 over `uri version` lines, in URI order."""
    lines = "".join(f"{uri} {versions[uri]}\n" for uri in sorted(versions))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def corpus_groups(
    raw_corpus: str, shard_groups: int, settings: Mapping[str, object] | None = None
) -> list[dict[str, str]]:
    """The dataset build's fan-out over `raw_corpus`'s `*.tar` shards: one item per group
    (`{"group": "i/N", "fingerprint": …}`, at most one group per shard). The fingerprint is
    the same in every item: the digest of the whole listing (key, ETag and size of every
    shard) and of `settings` (the build's settings, which change what every phase writes).
    One paginated LIST: the shards are the listing's keys."""
    if shard_groups < 1:
        raise ValueError(f"shard_groups must be at least 1, got {shard_groups}")
    if is_snapshot(raw_corpus):  # a scheduled run's recorded listing (corpus_snapshot.py)
        shards = snapshot_versions(raw_corpus)
    else:
        shards = storage.list_versions(raw_corpus.rstrip("/") + "/", suffix=".tar")
    if not shards:
        raise DataFormatError(f"{raw_corpus}: no .tar shards under this input prefix")
    settings_text = json.dumps(dict(settings or {}), sort_keys=True, default=str)
    fingerprint = digest({**shards, "settings:": settings_text})
    count = min(shard_groups, len(shards))
    return [
        {"group": f"{g.index}/{g.count}", "fingerprint": fingerprint}
        for g in ShardGroup(0, count).all_groups()
    ]


def build_fingerprint(written: Sequence[Mapping[str, object]]) -> str:
    """The fingerprint the build's tasks were keyed on (corpus_groups'), which every write
    task carries on in its output: it names the corpus the dataset was built from. Outputs
    that disagree come from different builds, and nothing is finalized from them."""
    fingerprints = {str(w.get("fingerprint", "")) for w in written}
    if len(fingerprints) != 1 or "" in fingerprints:
        raise DataFormatError(
            f"the write tasks' outputs carry {sorted(fingerprints)} as the build's fingerprint; "
            "every group of one build carries the same one"
        )
    return fingerprints.pop()


def dataset_fingerprint(uri: str) -> str:
    """The digest of every object under a dataset's prefix (an evaluation dataset: its
    classes.json, split manifests and shards). An empty prefix is an error that names it."""
    versions = storage.list_versions(uri.rstrip("/") + "/")
    if not versions:
        raise ValueError(f"{uri}: no objects under this prefix")
    return digest(versions)
