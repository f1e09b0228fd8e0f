"""The demo corpus's inputs for tests: Debian's Fashion-MNIST images and WordNet (the class
names' synsets), a test skipped where either is not installed, and the demo corpus and its
evaluation set generated into a bucket."""

from __future__ import annotations

from pathlib import Path

import pytest

from mawsflow.data.fashion_mnist import DEBIAN_FASHION_MNIST
from mawsflow.dataset.demo_corpus import DemoCorpusSettings, generate_demo
from mawsflow.dataset.wordnet_corpus import WordNetUnavailableError, find_wordnet_data_dir


def require_demo_sources() -> None:
    """Skip the calling test unless Debian's dataset-fashion-mnist and WordNet are installed."""
    if not Path(DEBIAN_FASHION_MNIST, "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    try:
        find_wordnet_data_dir()
    except WordNetUnavailableError as exc:
        pytest.skip(f"WordNet is not installed: {exc}")


def write_demo_data(bucket: str, settings: DemoCorpusSettings, *more: str) -> dict[str, str]:
    """The demo corpus and evaluation set generated under `bucket`, by name → URI: "corpus",
    "eval", "dataset" (where a run builds its dataset) and a URI for each name in `more`."""
    require_demo_sources()
    data = {name: f"{bucket}/{name}" for name in ("corpus", "eval", "dataset", *more)}
    generate_demo(data["corpus"], data["eval"], settings)
    return data
