"""Finding WordNet for nltk offline: Debian's files turned into nltk's layout (with the lexnames
file generated from Debian's man page), and clear errors when nothing usable exists."""

from __future__ import annotations

import gzip

import nltk
import pytest

from mawsflow.dataset import wordnet_corpus
from mawsflow.dataset.wordnet_corpus import (
    DEBIAN_LEXNAMES_MAN_PAGE,
    DEBIAN_WORDNET_DIR,
    WordNetUnavailableError,
    build_nltk_wordnet,
    find_wordnet_data_dir,
    lexnames_from_man_page,
    open_wordnet,
)

needs_debian_wordnet = pytest.mark.skipif(
    not (DEBIAN_WORDNET_DIR / "index.noun").is_file() or not DEBIAN_LEXNAMES_MAN_PAGE.is_file(),
    reason="Debian's wordnet-base and wordnet-sense-index are not installed",
)


@pytest.fixture
def isolated_nltk_path(monkeypatch):
    """nltk's search path as a fresh list, restored after the test."""
    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))
    monkeypatch.delenv("MAWSFLOW_WORDNET_DIR", raising=False)


@needs_debian_wordnet
def test_lexnames_from_the_debian_man_page():
    text = gzip.decompress(DEBIAN_LEXNAMES_MAN_PAGE.read_bytes()).decode()
    lines = lexnames_from_man_page(text).splitlines()
    assert len(lines) == 45
    assert lines[0] == "00\tadj.all\t3"
    assert lines[5] == "05\tnoun.animal\t1"
    assert lines[18] == "18\tnoun.person\t1"  # the page pads this name with spaces
    assert lines[44] == "44\tadj.ppl\t3"


def test_lexnames_from_an_incomplete_page_is_an_error():
    with pytest.raises(WordNetUnavailableError, match="numbered 00..44"):
        lexnames_from_man_page("00\tadj.all\tall adjective clusters\n")


@needs_debian_wordnet
def test_debian_files_become_an_nltk_wordnet(tmp_path, isolated_nltk_path):
    data_dir = build_nltk_wordnet(DEBIAN_WORDNET_DIR, DEBIAN_LEXNAMES_MAN_PAGE, tmp_path)
    wordnet_dir = tmp_path / "corpora" / "wordnet"
    assert (wordnet_dir / "lexnames").is_file() and (wordnet_dir / "index.sense").is_file()
    assert not (wordnet_dir / "index.noun").is_symlink()  # nltk refuses links out of its dirs
    # A second build (another worker) leaves the finished copy alone.
    before = (wordnet_dir / "lexnames").stat().st_mtime_ns
    assert build_nltk_wordnet(DEBIAN_WORDNET_DIR, DEBIAN_LEXNAMES_MAN_PAGE, tmp_path) == data_dir
    assert (wordnet_dir / "lexnames").stat().st_mtime_ns == before

    reader = open_wordnet(data_dir)
    dog = reader.synsets("dog", pos="n")[0]
    assert (dog.name(), dog.offset(), dog.lexname()) == ("dog.n.01", 2084071, "noun.animal")


def test_missing_debian_files_say_what_to_install(tmp_path):
    (tmp_path / "index.noun").write_text("")
    with pytest.raises(WordNetUnavailableError, match="apt-get install wordnet-base"):
        build_nltk_wordnet(tmp_path, tmp_path / "lexnames.5WN.gz", tmp_path / "out")


def test_explicit_directory_without_wordnet_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MAWSFLOW_WORDNET_DIR", str(tmp_path))
    with pytest.raises(WordNetUnavailableError, match="MAWSFLOW_WORDNET_DIR"):
        find_wordnet_data_dir()


def test_no_wordnet_anywhere_is_an_error(tmp_path, monkeypatch, isolated_nltk_path):
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "nltk_data")])
    monkeypatch.setattr(wordnet_corpus, "DEBIAN_WORDNET_DIR", tmp_path / "no-wordnet")
    with pytest.raises(WordNetUnavailableError, match=r"nltk\.downloader"):
        find_wordnet_data_dir(cache_dir=tmp_path / "cache")
