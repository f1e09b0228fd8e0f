"""The sanitised caption LiT trains on.

Sanitising follows the paper's LiT setup (Appendix A: "we sanitize the captions and also remove
the pound signs in front of hashtags"): Unicode NFC, no URLs, no @-mentions (user names are
personal data and carry nothing a text tower should learn), no control or format characters
other than emoji joiners, hashtag marks removed, whitespace collapsed. Tokenisation and the
100-token context are the LiT step's business. The dataset build writes captions sanitised
(`mawsflow.dataset.write_phase`), and the text tower sanitises what it is given.
"""

from __future__ import annotations

import re
import unicodedata

from mawsflow.data.hashtags import URL_PATTERN, remove_hash_marks

_MENTION = re.compile(r"(?<![\w@])@[\w.]+")
_WHITESPACE = re.compile(r"\s+")
# Zero-width joiner and variation selectors hold emoji sequences together (👩‍💻, ❤️).
_KEPT_FORMAT_CHARS = frozenset("\u200d\ufe0e\ufe0f")


def _is_dropped_char(char: str) -> bool:
    category = unicodedata.category(char)
    if category == "Cf":
        return char not in _KEPT_FORMAT_CHARS
    # Whitespace controls (newline, tab) become spaces below; the rest carry nothing.
    return category in ("Cc", "Co", "Cs", "Cn") and not char.isspace()


def sanitize_caption(text: str) -> str:
    """The caption as the LiT text tower sees it."""
    text = unicodedata.normalize("NFC", text)
    text = URL_PATTERN.sub(" ", text)
    text = remove_hash_marks(text)
    text = _WHITESPACE.sub(" ", _MENTION.sub(" ", text)).strip()
    # Once whitespace is plain spaces, a printable string holds no control or format character
    # (the common case, checked in C); otherwise filter character by character.
    if not text.isprintable():
        text = _WHITESPACE.sub(" ", "".join(c for c in text if not _is_dropped_char(c))).strip()
    return text
