"""Fashion-MNIST's files: the class names held to Zalando's README (as Debian ships it) and to
torchvision's list, the IDX arrays of Debian's dataset-fashion-mnist, and a missing or broken
file named."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
from torchvision.datasets import FashionMNIST

from fashion_mnist_corpus import FASHION_MNIST, require_fashion_mnist
from mawsflow.data.fashion_mnist import CLASSES, load_fashion_mnist, read_idx
from mawsflow.errors import DataFormatError

DEBIAN_README = Path("/usr/share/doc/dataset-fashion-mnist/README.md.gz")


def test_class_names_are_the_labels_table_of_zalandos_readme():
    if not DEBIAN_README.is_file():
        pytest.skip("Debian's dataset-fashion-mnist (with its README) is not installed")
    readme = gzip.decompress(DEBIAN_README.read_bytes()).decode("utf-8")
    table = dict(re.findall(r"^\| (\d) \| ([^|]+?) \|$", readme, re.MULTILINE))
    assert [table[str(label)] for label in range(10)] == list(CLASSES)


def test_class_names_are_torchvisions():
    assert list(CLASSES) == FashionMNIST.classes


def test_debians_idx_files_load_as_images_and_labels():
    require_fashion_mnist()
    images, labels = load_fashion_mnist(str(FASHION_MNIST), "test")
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10_000,) and set(labels.tolist()) == set(range(10))


def test_missing_or_broken_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no t10k-images-idx3-ubyte\[\.gz\]; install"):
        load_fashion_mnist(str(tmp_path), "test")
    bad = tmp_path / "t10k-images-idx3-ubyte"
    bad.write_bytes(b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") * 3 + b"\x00" * 7)
    with pytest.raises(DataFormatError, match=r"header says \(2, 2, 2\) but holds 7 values"):
        read_idx(str(bad))
