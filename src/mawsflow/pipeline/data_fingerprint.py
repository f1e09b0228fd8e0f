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

A digest per shard group lets a corpus that changed in one group re-count only that group;
each phase passes its group's digest on in its output, so the phases that gather every group
(vocab, finalize) are keyed on all of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from mawsflow import storage
from mawsflow.dataset.layout import ShardGroup, list_input_shards


def digest(versions: Mapping[str, str]) -> str:
    """sha256 over `uri version` lines, in URI order."""
    lines = "".join(f"{uri} {versions[uri]}\n" for uri in sorted(versions))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def corpus_groups(raw_corpus: str, shard_groups: int) -> list[dict[str, str]]:
    """The dataset build's fan-out over `raw_corpus`'s `*.tar` shards: one item per group
    (`{"group": "i/N", "fingerprint": …}`, at most one group per shard)."""
    if shard_groups < 1:
        raise ValueError(f"shard_groups must be at least 1, got {shard_groups}")
    shards = list_input_shards(raw_corpus)  # names the prefix when it holds no shard
    versions = storage.list_versions(raw_corpus.rstrip("/") + "/", suffix=".tar")
    count = min(shard_groups, len(shards))
    items = []
    for group in ShardGroup(0, count).all_groups():
        members = [shards[i] for i in group.shard_range(len(shards))]
        items.append(
            {
                "group": f"{group.index}/{group.count}",
                "fingerprint": digest({uri: versions.get(uri, "") for uri in members}),
            }
        )
    return items


def dataset_fingerprint(uri: str) -> str:
    """The digest of every object under a dataset's prefix (an evaluation dataset: its
    classes.json, split manifests and shards). An empty prefix is an error that names it."""
    versions = storage.list_versions(uri.rstrip("/") + "/")
    if not versions:
        raise ValueError(f"{uri}: no objects under this prefix")
    return digest(versions)
