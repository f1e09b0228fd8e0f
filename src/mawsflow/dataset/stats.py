"""Why the build skipped something, and the build statistics as KFP-Metrics numbers.

Problems are counted at the level where they happen, so the accounting adds up:
`samples read = samples kept + Σ samples dropped`, while shard and member problems are counted
separately (a truncated shard still gives the samples before the cut; an unsafe member is
skipped and its sample may survive without it).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class ShardProblem(StrEnum):
    EMPTY = "empty_shard"  # no members at all (a 0-byte file or only the end-of-archive marker)
    TRUNCATED = "truncated_shard"  # ends inside a member or without the end-of-archive marker
    CORRUPT = "corrupt_shard"  # an unreadable header where the next member should start


class MemberProblem(StrEnum):
    UNSAFE_PATH = "unsafe_member_path"  # absolute, or with a `..` component
    NOT_A_FILE = "non_file_member"  # link, device, FIFO (directories are ignored silently)
    OVERSIZED = "oversized_member"  # larger than the reader's member limit; not read
    NO_KEY = "member_without_key"  # hidden files such as `.DS_Store`: nothing before the dot


class SampleDrop(StrEnum):
    DUPLICATE_KEY = "duplicate_key"  # a key already seen in this shard; the first one is kept
    MISSING_IMAGE = "missing_image"
    MULTIPLE_IMAGES = "multiple_images"  # e.g. both .jpg and .png: which one is the sample?
    NOT_AN_IMAGE = "not_an_image"  # bytes of no image format mawsflow accepts
    CORRUPT_IMAGE = "corrupt_image"  # right signature, but the decoder fails (truncated, …)
    OVERSIZED_IMAGE = "oversized_image"  # more pixels than PIL's decompression-bomb limit
    MISSING_CAPTION = "missing_caption"
    EMPTY_CAPTION = "empty_caption"
    CAPTION_NOT_UTF8 = "caption_not_utf8"
    CAPTION_TOO_LONG = "caption_too_long"
    NO_HASHTAGS = "no_hashtags"
    NO_SYNSET = "no_synset"  # hashtags, but none maps to a WordNet noun synset
    DUPLICATE_IMAGE = "duplicate_image"  # same content hash as an earlier sample (global)
    NO_LABEL_IN_VOCAB = "no_label_in_vocabulary"  # all its synsets fell below the vocabulary cut


class SampleRejected(ValueError):
    """A sample cannot be used; `reason` says why."""

    def __init__(self, reason: SampleDrop) -> None:
        super().__init__(reason.value)
        self.reason = reason


def add_counts(total: dict[str, int], part: Mapping[str, int]) -> dict[str, int]:
    """Add `part` into `total` key by key; returns `total`."""
    for key, value in part.items():
        total[key] = total.get(key, 0) + value
    return total


def flatten_metrics(stats: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Every number in nested `stats` as one flat {name: number} dict for KFP Metrics
    (`dropped.no_hashtags` → `dropped_no_hashtags`); lists and strings are left out."""
    flat: dict[str, float] = {}
    for key, value in stats.items():
        name = f"{prefix}_{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, name))
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int | float):
            flat[name] = float(value)
    return flat
