"""Hashtag → WordNet noun synset on the real WordNet 3.0: canonicalisation, compounds, the
sense-choice rule on tricky tags, and synonym merging."""

from __future__ import annotations

import pytest

from mawsflow.dataset.synsets import HashtagMapper, Synset, default_mapper, split_words
from mawsflow.dataset.wordnet_corpus import WordNetUnavailableError, find_wordnet_data_dir


@pytest.fixture(scope="module")
def mapper() -> HashtagMapper:
    try:
        find_wordnet_data_dir()
    except WordNetUnavailableError as exc:
        pytest.skip(f"WordNet is not installed: {exc}")
    return default_mapper()


@pytest.mark.parametrize(
    ("tag", "words"),
    [
        ("GoldenRetriever", ["golden", "retriever"]),
        ("golden_retriever", ["golden", "retriever"]),
        ("goldenretriever", ["goldenretriever"]),
        ("TShirt", ["t", "shirt"]),
        ("iPhone12", ["i", "phone", "12"]),
        ("Dog's", ["dog"]),
        ("dogs'", ["dogs"]),
        ("flip-flops", ["flip", "flops"]),
        ("NYC", ["nyc"]),
        ("スニーカー", ["スニーカー"]),
    ],
)
def test_split_words(tag, words):
    assert split_words(tag) == words


@pytest.mark.parametrize(
    ("tag", "synset"),
    [
        # CamelCase, snake_case and run-together compounds reach WordNet's compound
        ("GoldenRetriever", "golden_retriever.n.01"),
        ("golden_retriever", "golden_retriever.n.01"),
        ("goldenretriever", "golden_retriever.n.01"),
        ("GOLDENRETRIEVERS", "golden_retriever.n.01"),
        # a hyphenated WordNet lemma from any spelling
        ("TShirt", "jersey.n.03"),
        ("tshirts", "jersey.n.03"),
        ("teeshirt", "jersey.n.03"),
        # plurals, possessives and irregular inflections through WordNet's morphology
        ("dogs", "dog.n.01"),
        ("dog's", "dog.n.01"),
        ("Puppies", "puppy.n.01"),
        ("mice", "mouse.n.01"),
        ("leaves", "leaf.n.01"),
        # the form as written wins over its base form
        ("glasses", "spectacles.n.01"),
        ("shorts", "short_pants.n.01"),
        # apostrophes inside WordNet lemmas
        ("rocknroll", "rock_'n'_roll.n.01"),
        ("rock'n'roll", "rock_'n'_roll.n.01"),
    ],
)
def test_canonicalisation(mapper, tag, synset):
    assert mapper.synset_for(tag).name == synset


@pytest.mark.parametrize(
    ("tag", "synset"),
    [
        # the most frequent sense, even where a photo tag meant another one: WordNet lacks
        # the slang sense (kicks, trainers = shoes) or ranks the place first (jersey)
        ("kicks", "kick.n.01"),
        ("trainers", "trainer.n.01"),
        ("jersey", "new_jersey.n.01"),
        ("apple", "apple.n.01"),
        ("paris", "paris.n.01"),
        ("pants", "bloomers.n.01"),
        ("FlipFlops", "reversal.n.04"),
    ],
)
def test_sense_choice_takes_the_most_frequent_sense(mapper, tag, synset):
    assert mapper.synset_for(tag).name == synset


@pytest.mark.parametrize(
    "tag",
    [
        "blackdress",  # compound WordNet does not list: never guessed from its parts
        "AnkleBoots",
        "instagood",  # not English
        "chien",
        "スニーカー",
        "Turnschuhe",
        "me",  # fewer than three letters
        "tv",
        "a1",
        "top10",  # digits make no lemma
    ],
)
def test_unmappable_tags(mapper, tag):
    assert mapper.synset_for(tag) is None


def test_synonymous_tags_merge_into_one_synset(mapper):
    tags = ["sneakers", "sneaker", "GymShoes", "tennisshoe", "TennisShoes", "#ignored"]
    assert mapper.synsets_for_tags(tags) == (Synset(3472535, "gym_shoe.n.01"),)
    assert mapper.synset_for("sneakers").wnid == "n03472535"


def test_caption_synsets_are_distinct_and_sorted(mapper):
    synsets = mapper.synsets_for_tags(["sweater", "dogs", "pullover", "Dog", "nofilter"])
    assert [s.name for s in synsets] == ["dog.n.01", "pullover.n.01", "sweater.n.01"]
    assert list(synsets) == sorted(synsets)
