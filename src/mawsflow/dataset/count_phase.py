"""Phase 1 of the build (map): read one group of input shards and record every usable image.

For each sample that passes the checks of `sample_tags` and whose image decodes, one record
(content hash, position, synsets) is kept; every dropped sample, skipped member and damaged
shard is counted by reason. The records go out in input order (for the write phase) and sorted
by hash (for the vocabulary phase's merge). The summary also holds every input shard's size, so
the write phase can tell that the input it walks is the one that was counted.

Memory grows with the group's size (its records are sorted in memory, ~100 bytes per image),
never with the corpus: a bigger corpus means more groups.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict
from typing import Any

from mawsflow import storage
from mawsflow.dataset.build_state import withdraw
from mawsflow.dataset.image_records import (
    ImageRecord,
    content_hash,
    sort_for_merge,
    write_records,
)
from mawsflow.dataset.images import validate_image
from mawsflow.dataset.layout import BuildLayout, ShardGroup, input_fingerprint, list_input_shards
from mawsflow.dataset.safe_tar import iter_tar_samples
from mawsflow.dataset.sample_tags import ReadLimits, tag_sample
from mawsflow.dataset.stats import SampleDrop, SampleRejected
from mawsflow.dataset.synsets import HashtagMapper, default_mapper
from mawsflow.log import progress

log = logging.getLogger(__name__)

COUNT_FORMAT = "mawsflow.build-count/1"


def run_count(
    input_uri: str,
    out_uri: str,
    group: ShardGroup,
    limits: ReadLimits,
    mapper: HashtagMapper | None = None,
) -> dict[str, Any]:
    """Count one group; writes its records and summary under `out_uri` and returns the summary."""
    mapper = mapper or default_mapper()
    layout = BuildLayout(out_uri)
    shards = list_input_shards(input_uri)
    # The group's records are about to change, and with them what any plan was made from.
    withdraw(layout.count_summary(group), layout.plan)
    ordinals = group.shard_range(len(shards))
    problems: Counter[str] = Counter()
    records: list[bytes] = []
    shard_sizes: dict[str, int] = {}
    yielded = hashtags = synsets = 0
    for ordinal in progress(ordinals, desc=f"count {group.name}", unit="shard", logger=log):
        shard_sizes[str(ordinal)] = storage.size(shards[ordinal])
        with storage.open_read(shards[ordinal]) as stream:
            for sample in iter_tar_samples(stream, problems, limits.max_member_bytes):
                yielded += 1
                try:
                    tagged = tag_sample(sample, mapper, limits)
                except SampleRejected as rejected:
                    problems[rejected.reason.value] += 1
                    continue
                hashtags += tagged.hashtags
                if not tagged.synsets:
                    problems[SampleDrop.NO_SYNSET.value] += 1
                    continue
                synsets += len(tagged.synsets)
                try:
                    validate_image(tagged.image)
                except SampleRejected as rejected:
                    problems[rejected.reason.value] += 1
                    continue
                record = ImageRecord(
                    content_hash(tagged.image),
                    ordinal,
                    sample.ordinal,
                    tuple(synset.offset for synset in tagged.synsets),
                )
                records.append(record.encode())
    with storage.open_write(layout.records_in_order(group)) as stream:
        write_records(records, stream)
    sort_for_merge(records)
    with storage.open_write(layout.records_by_hash(group)) as stream:
        write_records(records, stream)
    summary = {
        "format": COUNT_FORMAT,
        "group": {"index": group.index, "count": group.count},
        "input": {
            "uri": input_uri,
            "num_shards": len(shards),
            "fingerprint": input_fingerprint(shards),
        },
        "limits": asdict(limits),
        "shards_read": len(ordinals),
        "samples_read": yielded + problems[SampleDrop.DUPLICATE_KEY.value],
        "records": len(records),
        "hashtags_found": hashtags,
        "synsets_found": synsets,
        "problems": dict(sorted(problems.items())),
        "shard_sizes": shard_sizes,
    }
    # The summary goes last: its presence says the group's records are complete.
    storage.write_json(layout.count_summary(group), summary)
    log.info(
        "counted %s: %d samples read, %d images recorded",
        group.name,
        summary["samples_read"],
        len(records),
    )
    return summary
