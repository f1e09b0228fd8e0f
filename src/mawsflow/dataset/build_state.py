"""Which build an output prefix holds: the markers that vouch for each phase's files, how a
phase withdraws them before it replaces anything, the build id, and the removal of what a
finished build leaves over.

A rebuild into the same prefix (other input, other vocabulary, fewer shards) replaces files
in place, and phases run as separate tasks that can fail, retry or straggle. Each phase's
products are vouched for by a marker that the phase writes last, once they are complete:

    _work/count/<group>.json    its group's count records                    (count phase)
    _work/plan.json             vocab.json and the duplicates files          (vocab phase)
    _work/write/<group>.json    its group's shards and tail, from one plan   (write phase)
    manifest.json               the published dataset: shards, vocab, stats  (finalize)

The rule: a phase checks its inputs first, then deletes every marker that vouches for
something it is about to replace (downstream markers included), then writes, then writes its
own marker. So a reader that finds a marker can trust what it names, and one that finds none
sees an unfinished phase, never a mixture of two builds: while a rebuild runs, the prefix has
no manifest and reads as incomplete rather than as the old dataset with new shards under it.

The plan carries a build id, a digest of the plan itself: the same input and settings give the
same id (a rerun writes the same bytes), different ones another. Write reports and the
manifest record it, so a report that a straggling task of an earlier build writes after the
withdrawal is still refused.

Once the manifest is written, the finalize step removes `_work/` (the plan last, so that a
finalize stopped half-way finds the plan and finishes the job) and every shard under
`shards/` that the manifest does not name. Files elsewhere under the prefix are not touched.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from mawsflow import storage
from mawsflow.dataset.layout import BuildLayout

log = logging.getLogger(__name__)

BUILD_ID_HEX_DIGITS = 16


def build_id(plan: dict[str, Any]) -> str:
    """The id of the build a plan describes: a digest of its canonical JSON (without the id)."""
    content = {key: value for key, value in plan.items() if key != "build"}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:BUILD_ID_HEX_DIGITS]


def withdraw(*markers: str) -> None:
    """Delete markers (missing ones are fine): what they vouched for is about to change."""
    for marker in markers:
        storage.delete(marker)


def withdraw_write_reports(layout: BuildLayout) -> None:
    """A new plan invalidates every group's write report, whichever group count made it."""
    withdraw(*storage.list_uris(layout.write_reports_prefix))


def work_files(layout: BuildLayout) -> list[str]:
    return storage.list_uris(layout.work_prefix)


def published_build(layout: BuildLayout) -> str | None:
    """The build id in the prefix's manifest, or None when there is no manifest."""
    if not storage.exists(layout.manifest):
        return None
    return storage.read_json(layout.manifest).get("build")


def remove_leftovers(layout: BuildLayout, manifest: dict[str, Any]) -> None:
    """Delete every shard the manifest does not name, then all of `_work/`, the plan last."""
    current = set(manifest["shards"])
    prefix = layout.out.rstrip("/") + "/"
    stale = [
        uri for uri in storage.list_uris(layout.shards_prefix) if uri[len(prefix) :] not in current
    ]
    withdraw(*stale)
    work = work_files(layout)
    withdraw(*(uri for uri in work if uri != layout.plan))
    withdraw(layout.plan)
    if stale or work:
        log.info(
            "removed %d shards of earlier builds and %d intermediate files", len(stale), len(work)
        )
