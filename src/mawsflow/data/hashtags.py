"""Finding hashtags in captions written in any language, case and script.

A hashtag is a hash mark (`#`, or the full-width `＃` of CJK keyboards) followed by a run of
letters, combining marks, digits and underscores, in any script. The rules, in the order they
apply:

- URLs are not captions: a `#` inside `https://…#section` or `www.…#x` is a fragment, not a tag.
- A hash mark glued to the end of a word (`C#`, `F#`, `abc#def`) or an HTML entity (`&#39;`)
  starts no tag; one glued to punctuation or emoji (`🔥#sneakers`, `(#dog)`) does, and so does
  one right after another tag (`#dog#cat` is two tags).
- The tag ends at the first character that is not a letter, mark, digit or underscore, so
  `#dog!`, `#dog🐶` and `#dog,` all give `dog`. An apostrophe followed by a letter stays inside
  (`#dog's`, `#rock'n'roll`); synset mapping later strips the possessive.
- A tag needs at least one letter: `#1`, `#2024` and the keycap emoji `#️⃣` are not tags.
- Repeats are reported once, at their first position, comparing case-insensitively
  (`#Dog #dog #DOG` is one tag, kept as first written so CamelCase survives for splitting).
"""

from __future__ import annotations

import re
import unicodedata

HASH_MARKS = frozenset("#＃")
APOSTROPHES = frozenset("'’")
URL_PATTERN = re.compile(r"(?i)\b(?:[a-z][a-z0-9+.-]*://|www\.)\S+")
_MARK_PATTERN = re.compile("[#＃]")
_WORD = re.compile(r"\w+")  # letters (L*), digits (N*) and "_": tag characters but marks


def _is_tag_char(char: str) -> bool:
    return char == "_" or unicodedata.category(char)[0] in "LMN"


def _glued_to_word(text: str, position: int) -> bool:
    """Whether the character before `position` ends a word (or an HTML entity's `&`)."""
    before = position - 1
    # Marks belong to the character they follow: an emoji's variation selector (🛍️ is U+1F6CD
    # U+FE0F) makes no word of it, while the accent of "é" does.
    while before >= 0 and unicodedata.category(text[before])[0] == "M":
        before -= 1
    if before < 0:
        return False
    char = text[before]
    return char == "&" or char == "_" or unicodedata.category(char)[0] in "LN"


def _tag_end(text: str, start: int) -> int:
    """Index just past the tag body that begins at `start` (the character after the mark)."""
    end = start
    length = len(text)
    while end < length:
        # Letters, digits and "_" in one C-speed step; marks and apostrophes one at a time.
        word = _WORD.match(text, end)
        if word:
            end = word.end()
            continue
        char = text[end]
        if _is_tag_char(char) or (
            char in APOSTROPHES
            and end > start
            and end + 1 < length
            and unicodedata.category(text[end + 1])[0] == "L"
        ):
            end += 1
        else:
            break
    return end


def hashtag_spans(text: str) -> list[tuple[int, int]]:
    """(mark index, body end) of every hashtag occurrence in `text`, repeats included."""
    spans: list[tuple[int, int]] = []
    if not any(mark in text for mark in HASH_MARKS):
        return spans
    url_spans = [match.span() for match in URL_PATTERN.finditer(text)]
    url_index = 0
    last_tag_end = -1
    for mark in _MARK_PATTERN.finditer(text):
        position = mark.start()
        if position < last_tag_end:
            continue
        while url_index < len(url_spans) and url_spans[url_index][1] <= position:
            url_index += 1
        if url_index < len(url_spans) and url_spans[url_index][0] <= position:
            continue
        if _glued_to_word(text, position) and position != last_tag_end:
            continue
        end = _tag_end(text, position + 1)
        if any(unicodedata.category(char)[0] == "L" for char in text[position + 1 : end]):
            spans.append((position, end))
            last_tag_end = end
    return spans


def extract_hashtags(text: str) -> list[str]:
    """The distinct hashtags of `text` without the mark, in order of first appearance."""
    tags: list[str] = []
    seen: set[str] = set()
    for start, end in hashtag_spans(text):
        tag = text[start + 1 : end]
        folded = tag.casefold()
        if folded not in seen:
            seen.add(folded)
            tags.append(tag)
    return tags


def remove_hash_marks(text: str) -> str:
    """`text` with the mark of every hashtag removed (`#GoldenRetriever` → `GoldenRetriever`);
    other hash marks (`C#`, URL fragments) stay, and glued tags stay apart (`#dog#cat` →
    `dog cat`)."""
    spans = hashtag_spans(text)
    if not spans:
        return text
    pieces = []
    previous_end = 0
    for start, _ in spans:
        pieces.append(text[previous_end:start])
        if start and _is_tag_char(text[start - 1]):
            pieces.append(" ")
        previous_end = start + 1
    pieces.append(text[previous_end:])
    return "".join(pieces)
