"""Phase 1 of the build (map): read one group of input shards and record every usable image.

For each sample that passes the checks of `sample_tags` and whose image decodes, one record
(content hash, position, synsets) goes to the group's sorted record file; every dropped sample,
skipped member and damaged shard is counted by reason. Positions of images that failed to
decode are kept in the summary, so the write phase can skip them without decoding again.

Memory grows with the group's size (its records are sorted in memory, ~100 bytes per image),
never with the corpus: a bigger corpus means more groups.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict
from typing import Any

from mawsflow import storage
from mawsflow.dataset.image_records import ImageRecord, content_hash, write_sorted
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
    ordinals = group.shard_range(len(shards))
    problems: Counter[str] = Counter()
    records: list[bytes] = []
    rejected_images: list[list[int]] = []
    yielded = hashtags = synsets = 0
    for ordinal in progress(ordinals, desc=f"count {group.name}", unit="shard", logger=log):
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
                    rejected_images.append([ordinal, sample.ordinal])
                    continue
                record = ImageRecord(
                    content_hash(tagged.image),
                    ordinal,
                    sample.ordinal,
                    tuple(synset.offset for synset in tagged.synsets),
                )
                records.append(record.encode())
    with storage.open_write(layout.count_records(group)) as stream:
        write_sorted(records, stream)
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
        "rejected_images": rejected_images,
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
