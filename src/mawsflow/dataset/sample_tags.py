"""From a raw tar sample to its image, caption and synsets: the count phase's checks.

A sample is dropped for the first of these that applies: no image member, several image
members, no caption member, a caption that is too long / not UTF-8 / blank, no hashtag, no
hashtag that maps to a synset (the caller checks this last one, after counting the caption's
hashtags for the statistics). Image decoding comes after, in the caller: it is the expensive
check, so it runs only on samples that passed everything else.
"""

from __future__ import annotations

from dataclasses import dataclass

from mawsflow.data.hashtags import extract_hashtags
from mawsflow.dataset.captions import DEFAULT_MAX_CAPTION_BYTES, decode_caption
from mawsflow.dataset.images import IMAGE_EXTENSIONS
from mawsflow.dataset.safe_tar import DEFAULT_MAX_MEMBER_BYTES, TarSample
from mawsflow.dataset.stats import SampleDrop, SampleRejected
from mawsflow.dataset.synsets import HashtagMapper, Synset


@dataclass(frozen=True)
class ReadLimits:
    """Size limits on input members; part of the build's identity (every phase must agree,
    since the member limit decides which members make up a sample)."""

    max_caption_bytes: int = DEFAULT_MAX_CAPTION_BYTES
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES

    def __post_init__(self) -> None:
        if self.max_caption_bytes < 1 or self.max_member_bytes < 1:
            raise ValueError(f"read limits must be positive, got {self}")


@dataclass(frozen=True)
class TaggedSample:
    image: bytes
    caption: str
    synsets: tuple[Synset, ...]  # empty when no hashtag maps: the caller drops NO_SYNSET
    hashtags: int  # distinct hashtags in the caption, mapped or not


def tag_sample(sample: TarSample, mapper: HashtagMapper, limits: ReadLimits) -> TaggedSample:
    """The sample's image, caption and synsets, or SampleRejected naming the first problem
    (up to, not including, NO_SYNSET)."""
    images = [ext for ext in sample.members if ext in IMAGE_EXTENSIONS]
    if not images:
        raise SampleRejected(SampleDrop.MISSING_IMAGE)
    if len(images) > 1:
        raise SampleRejected(SampleDrop.MULTIPLE_IMAGES)
    caption_bytes = sample.members.get("txt")
    if caption_bytes is None:
        raise SampleRejected(SampleDrop.MISSING_CAPTION)
    caption = decode_caption(caption_bytes, limits.max_caption_bytes)
    tags = extract_hashtags(caption)
    if not tags:
        raise SampleRejected(SampleDrop.NO_HASHTAGS)
    return TaggedSample(
        sample.members[images[0]], caption, mapper.synsets_for_tags(tags), len(tags)
    )
