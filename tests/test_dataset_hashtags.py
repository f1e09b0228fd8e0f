"""Hashtag extraction from captions, caption decoding, and the sanitised caption LiT sees."""

from __future__ import annotations

import pytest

from mawsflow.data.captions import sanitize_caption
from mawsflow.data.hashtags import extract_hashtags, remove_hash_marks
from mawsflow.dataset.captions import decode_caption
from mawsflow.dataset.stats import SampleDrop, SampleRejected


@pytest.mark.parametrize(
    ("caption", "tags"),
    [
        ("#GoldenRetriever at the park", ["GoldenRetriever"]),
        ("#golden_retriever", ["golden_retriever"]),
        ("#dogs #dog's", ["dogs", "dog's"]),
        # repeats, in any case, are reported once, as first written
        ("#Dog #dog #DOG #dog", ["Dog"]),
        # glued to punctuation and emoji
        (
            "🔥#sneakers🔥 (#kicks), #tbt! #ootd. #love❤️",
            ["sneakers", "kicks", "tbt", "ootd", "love"],
        ),
        # an emoji's variation selector does not glue the mark to a word
        ("🛍️#style ✨#ootd x\u0301#no", ["style", "ootd"]),
        # two tags typed without a space
        ("#dog#cat", ["dog", "cat"]),
        # URL fragments are not tags
        ("shop https://shop.example.com/p/1#reviews or www.x.org/#top now #real", ["real"]),
        # a mark glued to a word or an HTML entity starts no tag
        ("C# and F# are languages; it&#39;s fine; abc#def", []),
        # a tag needs a letter
        ("#1 #2024 #️⃣ #a1", ["a1"]),
        # other scripts and the full-width mark
        (
            "＃スニーカー #Turnschuhe #zapatos_nuevos #café",
            ["スニーカー", "Turnschuhe", "zapatos_nuevos", "café"],
        ),
        ("#rock'n'roll #dogs'", ["rock'n'roll", "dogs"]),
        ("no tags at all", []),
        ("#", []),
    ],
)
def test_extract_hashtags(caption, tags):
    assert extract_hashtags(caption) == tags


def test_remove_hash_marks_keeps_other_marks_and_separates_glued_tags():
    text = "C# rocks #GoldenRetriever#dog see https://x.io/a#b"
    assert remove_hash_marks(text) == "C# rocks GoldenRetriever dog see https://x.io/a#b"


def test_sanitize_caption():
    caption = (
        "Loving my new\tkicks!! 👟\u200b @best.friend_99 #Sneakers #OOTD\n"
        "shop: https://shop.example.com/p/1#reviews \x07 👩\u200d💻"
    )
    assert sanitize_caption(caption) == "Loving my new kicks!! 👟 Sneakers OOTD shop: 👩\u200d💻"


def test_sanitize_caption_normalises_unicode():
    assert sanitize_caption("cafe\u0301 #caf\u00e9") == "café café"


def test_decode_caption_accepts_utf8_with_bom():
    assert decode_caption("\ufeff#dog".encode()) == "#dog"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ("café #chien".encode("latin-1"), SampleDrop.CAPTION_NOT_UTF8),
        (b"\xff\xfe#\x00d\x00", SampleDrop.CAPTION_NOT_UTF8),
        (b"", SampleDrop.EMPTY_CAPTION),
        (b" \n\t ", SampleDrop.EMPTY_CAPTION),
        (b"#spam " * 200_000, SampleDrop.CAPTION_TOO_LONG),
    ],
    ids=["latin-1", "utf-16", "empty", "blank", "megabyte"],
)
def test_decode_caption_rejects(data, reason):
    with pytest.raises(SampleRejected) as caught:
        decode_caption(data)
    assert caught.value.reason is reason
