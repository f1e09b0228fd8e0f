"""Finding WordNet 3.0 for nltk, offline.

nltk reads WordNet from `<data dir>/corpora/wordnet/` (the layout its downloader produces). The
search order is:

1. `MAWSFLOW_WORDNET_DIR`: an nltk data directory (holding `corpora/wordnet`) or the WordNet
   directory itself (holding `index.noun`);
2. every nltk data directory (`NLTK_DATA`, `nltk.data.path`): what `nltk.downloader wordnet`
   installs, which is how container images get it;
3. Debian's `wordnet-base` + `wordnet-sense-index` (`/usr/share/wordnet`), copied once into the
   nltk layout under a cache directory. Debian lacks the `lexnames` file nltk needs, so it is
   generated from Debian's `lexnames(5WN)` man page, which lists all 45 lexicographer files.

Nothing is ever downloaded. When none of these exists, the error says what to install.
"""

from __future__ import annotations

import functools
import gzip
import logging
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import nltk
from nltk.corpus.reader.wordnet import WordNetCorpusReader

log = logging.getLogger(__name__)

DEBIAN_WORDNET_DIR = Path("/usr/share/wordnet")
DEBIAN_LEXNAMES_MAN_PAGE = Path("/usr/share/man/man5/lexnames.5WN.gz")
# The lexnames man page's table has exactly this many rows (WordNet 3.0 has 45 lexicographer
# files); a different count means the page is not the one this parser understands.
LEXNAME_COUNT = 45
_SYNTACTIC_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
_TABLE_ROW = re.compile(r"^(\d{2})\t(\S+)\s*\t")

INSTALL_HINT = (
    "install WordNet 3.0: `apt-get install wordnet-base wordnet-sense-index` (Debian/Ubuntu), "
    "or `python -m nltk.downloader -d /usr/share/nltk_data wordnet` (container images), or "
    "point MAWSFLOW_WORDNET_DIR at an nltk data directory that holds corpora/wordnet"
)


class WordNetUnavailableError(RuntimeError):
    """No usable WordNet was found; the message says what to install."""


def lexnames_from_man_page(man_page_text: str) -> str:
    """The nltk `lexnames` file ("NN<TAB>name<TAB>category" lines) from lexnames(5WN)'s table."""
    rows = []
    for line in man_page_text.splitlines():
        match = _TABLE_ROW.match(line)
        if not match:
            continue
        number, name = int(match.group(1)), match.group(2)
        category = _SYNTACTIC_CATEGORY.get(name.split(".", 1)[0])
        if category is None:
            raise WordNetUnavailableError(
                f"lexnames man page: lexicographer file {name!r} has no known syntactic category"
            )
        rows.append((number, name, category))
    numbers = [number for number, _, _ in rows]
    if numbers != list(range(LEXNAME_COUNT)):
        raise WordNetUnavailableError(
            f"lexnames man page: expected lexicographer files numbered 00..{LEXNAME_COUNT - 1}, "
            f"found {len(rows)} rows numbered {numbers[:3]}…"
        )
    return "".join(f"{number:02d}\t{name}\t{category}\n" for number, name, category in rows)


def build_nltk_wordnet(source_dir: Path, lexnames_man_page: Path, data_dir: Path) -> Path:
    """Copy a WordNet database into nltk's layout under `data_dir`; returns `data_dir`.

    Files are copied, not linked: nltk refuses paths that resolve outside its data directories.
    The directory appears atomically (built beside it, then renamed), so concurrent workers
    building the same cache never see half of it.
    """
    target = data_dir / "corpora" / "wordnet"
    if (target / "lexnames").is_file():
        return data_dir
    needed = [name for name in WordNetCorpusReader._FILES if name != "lexnames"]
    missing = [name for name in needed if not (source_dir / name).is_file()]
    if missing:
        raise WordNetUnavailableError(
            f"{source_dir} lacks WordNet files {', '.join(missing)}; {INSTALL_HINT}"
        )
    if not lexnames_man_page.is_file():
        raise WordNetUnavailableError(
            f"{lexnames_man_page} (needed to generate nltk's lexnames) is missing; {INSTALL_HINT}"
        )
    lexnames = lexnames_from_man_page(
        gzip.decompress(lexnames_man_page.read_bytes()).decode("utf-8", errors="replace")
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=target.parent))
    try:
        for name in needed:
            shutil.copyfile(source_dir / name, staging / name)
        (staging / "lexnames").write_text(lexnames, encoding="utf-8")
        try:
            staging.rename(target)
        except OSError:
            if not (target / "lexnames").is_file():  # not a lost race with another worker
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("built nltk WordNet layout", extra={"path": str(target), "source": str(source_dir)})
    return data_dir


def default_cache_dir() -> Path:
    """Where the Debian-derived nltk layout is kept: MAWSFLOW_CACHE_DIR, else XDG cache."""
    base = os.environ.get("MAWSFLOW_CACHE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mawsflow"


def _explicit_data_dir() -> Path | None:
    configured = os.environ.get("MAWSFLOW_WORDNET_DIR")
    if not configured:
        return None
    data_dir = Path(configured)
    wordnet_dir = data_dir / "corpora" / "wordnet"
    if not ((wordnet_dir / "index.noun").is_file() and (wordnet_dir / "lexnames").is_file()):
        raise WordNetUnavailableError(
            f"MAWSFLOW_WORDNET_DIR={configured} is not an nltk data directory with "
            f"corpora/wordnet/ (index.noun, lexnames, …); {INSTALL_HINT}"
        )
    return data_dir


def find_wordnet_data_dir(cache_dir: Path | None = None) -> Path | None:
    """The nltk data directory to put first on nltk's path, or None when nltk already finds
    WordNet on its own path. Builds the Debian-derived copy when that is the only source.
    Raises WordNetUnavailableError with install instructions."""
    explicit = _explicit_data_dir()
    if explicit is not None:
        return explicit
    try:
        nltk.data.find("corpora/wordnet")
        return None
    except LookupError:
        pass
    if (DEBIAN_WORDNET_DIR / "index.noun").is_file():
        return build_nltk_wordnet(
            DEBIAN_WORDNET_DIR, DEBIAN_LEXNAMES_MAN_PAGE, cache_dir or default_cache_dir()
        )
    raise WordNetUnavailableError(f"WordNet was not found; {INSTALL_HINT}")


class EnglishWordNet(WordNetCorpusReader):
    """nltk's reader without the Open Multilingual WordNet. nltk maps the loaded release to
    WordNet 3.0's offsets (reading the 7 MB sense index twice, ~2 s per process) only to
    translate OMW data; with no OMW there is nothing to translate."""

    def map_wn(self, version: str = "wordnet") -> None:
        return None


def open_wordnet(data_dir: Path | None) -> WordNetCorpusReader:
    """An nltk WordNet reader (English only) from `data_dir`, or nltk's own path when None."""
    if data_dir is not None:
        # nltk opens files only under its registered data directories, and its reader looks
        # WordNet up again by name (to map between releases), so the directory goes first.
        resolved = str(data_dir.resolve())
        if resolved in nltk.data.path:
            nltk.data.path.remove(resolved)
        nltk.data.path.insert(0, resolved)
    root = nltk.data.find("corpora/wordnet")
    with warnings.catch_warnings():
        # The missing Open Multilingual WordNet only disables lemma lookups in other languages.
        warnings.filterwarnings("ignore", message="The multilingual functions")
        reader = EnglishWordNet(root, None)
    # Synset offsets (the wnids in vocab.json) are specific to one WordNet release.
    version = reader.get_version()
    if version != "3.0":
        raise WordNetUnavailableError(f"WordNet at {root} is version {version}, expected 3.0")
    return reader


@functools.cache
def load_wordnet() -> WordNetCorpusReader:
    """This process's WordNet reader (loading the index takes a few seconds, once)."""
    return open_wordnet(find_wordnet_data_dir())
