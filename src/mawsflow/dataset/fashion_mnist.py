"""Fashion-MNIST from its IDX files (Debian `dataset-fashion-mnist`, or any copy of the four
`*-idx?-ubyte[.gz]` files).

IDX is a tiny format: a big-endian magic number (0x0000, a type code, the number of
dimensions), the dimensions as big-endian uint32, then the data row-major. Fashion-MNIST uses
unsigned bytes: images 28×28, labels 0–9.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = (
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
_FILE_PREFIX = {"train": "train", "test": "t10k"}
_UNSIGNED_BYTE = 0x08


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) of unsigned bytes as a numpy array."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    type_code, ndim = raw[2], raw[3]
    if type_code != _UNSIGNED_BYTE:
        raise ValueError(f"{path}: IDX type 0x{type_code:02x}, only unsigned bytes are supported")
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: {len(raw) - header} data bytes for shape {shape} ({expected} expected)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, f"{stem}.gz"):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(
        f"{directory}: no {stem}[.gz]; install Debian's dataset-fashion-mnist "
        "(apt-get install dataset-fashion-mnist) or pass the directory holding the IDX files"
    )


def load_split(split: str, directory: Path = DEBIAN_DIR) -> tuple[np.ndarray, np.ndarray]:
    """(images N×28×28 uint8, labels N uint8) of the `train` or `test` split."""
    if split not in _FILE_PREFIX:
        raise ValueError(f"Fashion-MNIST split {split!r}: expected train or test")
    prefix = _FILE_PREFIX[split]
    images = read_idx(_find(directory, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(directory, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"{directory}: {split} images {images.shape} and labels {labels.shape} do not match"
        )
    if labels.max(initial=0) >= len(CLASS_NAMES):
        raise ValueError(f"{directory}: {split} labels exceed the {len(CLASS_NAMES)} classes")
    return images, labels
