"""Fashion-MNIST's files: the IDX arrays and the ten class names.

The class names are Zalando's, in label order, from the "Labels" table of the dataset's README
(https://github.com/zalandoresearch/fashion-mnist#labels; Debian ships it as
/usr/share/doc/dataset-fashion-mnist/README.md.gz). torchvision's `FashionMNIST.classes` is the
same list; holding it here keeps the CPU-only steps free of torch.
"""

from __future__ import annotations

import gzip

import numpy as np

from mawsflow import storage
from mawsflow.errors import DataFormatError

CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Debian's dataset-fashion-mnist installs the four IDX files here.
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
# The file-name prefix of each split: the test set's files are `t10k-…`.
SPLIT_PREFIX = {"train": "train", "test": "t10k"}

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(uri: str) -> np.ndarray:
    """An IDX array (gzip-compressed or not), as LeCun's MNIST format defines it."""
    data = storage.read_bytes(uri)
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_TYPES:
        raise DataFormatError(f"{uri}: not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=_IDX_TYPES[data[2]], offset=header)
    if array.size != int(np.prod(shape)):
        raise DataFormatError(f"{uri}: header says {shape} but holds {array.size} values")
    return array.reshape(shape)


def _idx_file(directory: str, stem: str) -> str:
    for name in (stem, f"{stem}.gz"):
        uri = storage.join(directory, name)
        if storage.exists(uri):
            return uri
    raise FileNotFoundError(
        f"{directory}: no {stem}[.gz]; install Debian's dataset-fashion-mnist "
        "(apt-get install dataset-fashion-mnist) or pass the directory of the IDX files"
    )


def load_fashion_mnist(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images N×28×28 uint8, labels N) of Fashion-MNIST's `train` or `test` split from the IDX
    files (gzipped or not) in `directory`, a local path or URI."""
    prefix = SPLIT_PREFIX[split]
    images = read_idx(_idx_file(directory, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_idx_file(directory, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataFormatError(
            f"{directory}: {prefix} images {images.shape} and labels {labels.shape} do not match"
        )
    if len(labels) and labels.max() >= len(CLASSES):
        raise DataFormatError(
            f"{directory}: {prefix} label {labels.max()} outside the {len(CLASSES)} classes"
        )
    return images, labels
