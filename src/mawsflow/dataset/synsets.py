"""Hashtag → WordNet noun synset.

Canonicalisation turns a hashtag into WordNet lemma forms to look up:

1. The possessive goes (`dog's` → `dog`, `dogs'` → `dogs`).
2. The tag splits into words at underscores and hyphens, at CamelCase humps (`GoldenRetriever`,
   `TShirt` → `T Shirt`) and between letters and digits; words are case-folded. Case carries
   no meaning after this: `#Dog`, `#dog` and `#DOG` are the same tag.
3. Tags with fewer than three letters are not looked up: on Instagram they are almost always
   abbreviations (`#me`, `#la`, `#tb`), and WordNet's two-letter nouns are mostly unrelated
   symbols and abbreviations (`me` is Maine, `in` is inch).
4. Forms are tried in this order, and the first that WordNet knows as a noun wins:
   a. the words joined by `_`, WordNet's spelling of compounds (`golden_retriever`, `dogs`);
   b. the words joined by `-` (`t-shirt`);
   c. the words run together (`goldenretriever`, `tshirt`) matched against WordNet's compound
      lemmas with their separators removed, after the noun suffix rules of WordNet's morphology
      (`goldenretrievers` → `goldenretriever` → `golden_retriever`). Where two compounds collapse
      to the same letters, the alphabetically first one that WordNet knows wins.
   Inflections (plurals, irregular forms such as `mice` → `mouse`) go through WordNet's own
   morphology (nltk's `morphy`) at every step. A compound that WordNet does not list
   (`#blackdress`, `#ankleboots`) maps to nothing: it is never guessed from its parts.

The sense-choice rule: of the noun synsets WordNet lists for the winning form, take the first.
nltk lists the senses of the form exactly as written before those of its morphological base
forms (so `glasses` is spectacles before it is the plural of glass, and `shorts` is short pants),
and within one form WordNet orders senses by their frequency in sense-tagged text. So a tag
means its most common English sense; senses WordNet lacks (`kicks` for sneakers, `trainers` for
shoes) fall to the senses it has, which is the label noise a hashtag corpus carries anyway.

Synonymous tags merge because they reach the same synset: `#sneakers`, `#GymShoes` and
`#tennisshoe` all become gym_shoe.n.01.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from nltk.corpus.reader.wordnet import WordNetCorpusReader

from mawsflow.dataset.wordnet_corpus import load_wordnet

MIN_TAG_LETTERS = 3
# Mappings of distinct hashtags to keep per process; hashtag vocabularies are heavy-tailed, so
# a bounded cache holds the frequent ones and memory stays flat on any corpus size.
TAG_CACHE_SIZE = 1 << 18
_POSSESSIVES = ("'s", "’s", "'", "’")


@dataclass(frozen=True, order=True)
class Synset:
    """A WordNet 3.0 noun synset: `offset` is its byte offset in data.noun (the wnid)."""

    offset: int
    name: str  # e.g. "dog.n.01"

    @property
    def wnid(self) -> str:
        return f"n{self.offset:08d}"


def split_words(tag: str) -> list[str]:
    """The case-folded words of a hashtag body (see the module docstring, steps 1 and 2)."""
    for suffix in _POSSESSIVES:
        if tag.endswith(suffix) and len(tag) > len(suffix):
            tag = tag[: -len(suffix)]
            break
    words: list[str] = []
    for part in tag.replace("-", "_").split("_"):
        current = ""
        for index, char in enumerate(part):
            if current and _is_word_boundary(part, index):
                words.append(current)
                current = ""
            current += char
        if current:
            words.append(current)
    return [word.casefold() for word in words]


def _is_word_boundary(part: str, index: int) -> bool:
    char, previous = part[index], part[index - 1]
    if char.isdigit() != previous.isdigit() and (char.isalpha() or previous.isalpha()):
        return True
    if char.isupper() and (previous.islower() or previous.isdigit()):
        return True
    # The last capital of a run starts the next word: "TShirt" → "T", "Shirt".
    following = part[index + 1] if index + 1 < len(part) else ""
    return char.isupper() and previous.isupper() and following.islower()


def _compact(lemma: str) -> str:
    return "".join(char for char in lemma.casefold() if char.isalnum())


class HashtagMapper:
    """Maps hashtags to noun synsets of one WordNet reader, with a bounded per-process cache."""

    def __init__(self, wordnet: WordNetCorpusReader) -> None:
        self._wordnet = wordnet
        self._noun_suffix_rules = wordnet.MORPHOLOGICAL_SUBSTITUTIONS[wordnet.NOUN]
        # Compound lemmas by their letters alone, for tags typed without separators.
        compounds: dict[str, list[str]] = {}
        for lemma in wordnet.all_lemma_names(pos=wordnet.NOUN):
            compact = _compact(lemma)
            if compact != lemma and compact:
                compounds.setdefault(compact, []).append(lemma)
        self._compounds = {key: sorted(lemmas) for key, lemmas in compounds.items()}
        self.synset_for = functools.lru_cache(maxsize=TAG_CACHE_SIZE)(self._synset_for)

    def _first_sense(self, form: str) -> Synset | None:
        senses = self._wordnet.synsets(form, pos=self._wordnet.NOUN)
        if not senses:
            return None
        return Synset(senses[0].offset(), senses[0].name())

    def _compound_forms(self, run_together: str) -> Iterable[str]:
        candidates = [run_together]
        for old, new in self._noun_suffix_rules:
            if run_together.endswith(old):
                candidates.append(run_together[: len(run_together) - len(old)] + new)
        for candidate in candidates:
            yield from self._compounds.get(candidate, ())

    def _synset_for(self, tag: str) -> Synset | None:
        words = split_words(unicodedata.normalize("NFC", tag))
        letters = sum(char.isalpha() for word in words for char in word)
        if letters < MIN_TAG_LETTERS:
            return None
        forms = ["_".join(words)]
        if len(words) > 1:
            forms.append("-".join(words))
        forms.extend(self._compound_forms(_compact("".join(words))))
        for form in forms:
            synset = self._first_sense(form)
            if synset is not None:
                return synset
        return None

    def synsets_for_tags(self, tags: Iterable[str]) -> tuple[Synset, ...]:
        """The distinct synsets of a caption's tags, sorted by offset."""
        found = {synset for tag in tags if (synset := self.synset_for(tag)) is not None}
        return tuple(sorted(found))


@functools.cache
def default_mapper() -> HashtagMapper:
    """This process's mapper over the WordNet that `load_wordnet` finds."""
    return HashtagMapper(load_wordnet())
