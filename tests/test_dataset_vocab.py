"""The vocabulary: threshold, top-N cap, a stable order, and vocab.json's format."""

from __future__ import annotations

import json

import pytest

from mawsflow.dataset.synsets import default_mapper
from mawsflow.dataset.vocab import (
    VocabSettings,
    build_vocabulary,
    read_vocabulary,
    write_vocabulary,
)
from mawsflow.dataset.wordnet_corpus import WordNetUnavailableError, load_wordnet

DOG, CAT, GYM_SHOE, PULLOVER = 2084071, 2121620, 3472535, 3980874


@pytest.fixture(scope="module")
def wordnet():
    try:
        return load_wordnet()
    except WordNetUnavailableError as exc:
        pytest.skip(f"WordNet is not installed: {exc}")


def test_threshold_cap_and_order(wordnet):
    counts = {DOG: 50, CAT: 50, GYM_SHOE: 80, PULLOVER: 9}
    entries = build_vocabulary(counts, wordnet, VocabSettings(min_count=10, max_classes=None))
    # descending count, ties by wnid; PULLOVER is below min_count
    assert [(e.index, e.synset, e.count) for e in entries] == [
        (0, "gym_shoe.n.01", 80),
        (1, "dog.n.01", 50),
        (2, "cat.n.01", 50),
    ]
    assert entries[1].wnid == "n02084071"
    assert entries[1].lemmas[:2] == ["dog", "domestic_dog"]
    capped = build_vocabulary(counts, wordnet, VocabSettings(min_count=1, max_classes=2))
    assert [e.synset for e in capped] == ["gym_shoe.n.01", "dog.n.01"]


def test_mapper_and_vocabulary_agree_on_wnids(wordnet):
    synset = default_mapper().synset_for("sneakers")
    (entry,) = build_vocabulary({synset.offset: 3}, wordnet, VocabSettings(min_count=1))
    assert (entry.wnid, entry.synset) == (synset.wnid, synset.name)


def test_vocab_json_round_trip(tmp_path, wordnet):
    entries = build_vocabulary({DOG: 5, CAT: 7}, wordnet, VocabSettings(min_count=1))
    uri = str(tmp_path / "vocab.json")
    write_vocabulary(uri, entries)
    raw = json.loads((tmp_path / "vocab.json").read_text())
    assert raw[0] == {
        "index": 0,
        "wnid": "n02121620",
        "synset": "cat.n.01",
        "lemmas": ["cat", "true_cat"],
        "count": 7,
    }
    assert read_vocabulary(uri) == entries


def test_malformed_vocab_json_is_an_error(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_text(
        json.dumps([{"index": 1, "wnid": "n1", "synset": "x", "lemmas": [], "count": 1}])
    )
    with pytest.raises(ValueError, match="entry 0 has index 1"):
        read_vocabulary(str(path))
    path.write_text(json.dumps([{"index": 0}]))
    with pytest.raises(ValueError, match="entry 0 is malformed"):
        read_vocabulary(str(path))


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"min_count": 0}, "min_count"), ({"max_classes": 0}, "max_classes")]
)
def test_settings_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VocabSettings(**kwargs)
