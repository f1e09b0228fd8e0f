"""The label vocabulary: the WordNet synsets frequent enough to train on.

A synset enters when the number of unique images carrying it reaches `min_count`; when more
pass than `max_classes`, the most frequent are kept (the paper's IG-3B vocabulary has about 28K
synsets, §4.1). Indices follow descending image count, ties by wnid, so the file is the same
however the counts were gathered. `vocab.json` is the contract in docs/data-formats.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from nltk.corpus.reader.wordnet import WordNetCorpusReader

from mawsflow import storage

PAPER_VOCABULARY_SIZE = 28_000  # IG-3B's "28K classes" (§4.1)
DEFAULT_MIN_COUNT = 10


@dataclass(frozen=True)
class VocabSettings:
    min_count: int = DEFAULT_MIN_COUNT
    max_classes: int | None = PAPER_VOCABULARY_SIZE

    def __post_init__(self) -> None:
        if self.min_count < 1:
            raise ValueError(f"vocabulary min_count must be at least 1, got {self.min_count}")
        if self.max_classes is not None and self.max_classes < 1:
            raise ValueError(
                f"vocabulary max_classes must be at least 1 (or unset), got {self.max_classes}"
            )


@dataclass(frozen=True)
class VocabEntry:
    index: int
    wnid: str
    synset: str
    lemmas: list[str]
    count: int

    @property
    def offset(self) -> int:
        return int(self.wnid[1:])


def build_vocabulary(
    image_counts: Mapping[int, int], wordnet: WordNetCorpusReader, settings: VocabSettings
) -> list[VocabEntry]:
    """Entries for the synsets (by data.noun offset) that pass the cut, index-ordered."""
    ranked = sorted(
        ((count, offset) for offset, count in image_counts.items() if count >= settings.min_count),
        key=lambda item: (-item[0], item[1]),
    )
    if settings.max_classes is not None:
        ranked = ranked[: settings.max_classes]
    entries = []
    for index, (count, offset) in enumerate(ranked):
        synset = wordnet.synset_from_pos_and_offset(wordnet.NOUN, offset)
        entries.append(
            VocabEntry(
                index=index,
                wnid=f"n{offset:08d}",
                synset=synset.name(),
                lemmas=list(synset.lemma_names()),
                count=count,
            )
        )
    return entries


def write_vocabulary(uri: str, entries: list[VocabEntry]) -> None:
    storage.write_json(uri, [asdict(entry) for entry in entries])


def read_vocabulary(uri: str) -> list[VocabEntry]:
    raw: Any = storage.read_json(uri)
    if not isinstance(raw, list):
        raise ValueError(f"{uri}: a vocabulary is a JSON list of entries")
    entries = []
    for position, item in enumerate(raw):
        try:
            entry = VocabEntry(**item)
        except TypeError as exc:
            raise ValueError(f"{uri}: entry {position} is malformed ({exc})") from None
        if entry.index != position:
            raise ValueError(f"{uri}: entry {position} has index {entry.index}")
        entries.append(entry)
    return entries
