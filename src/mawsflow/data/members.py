"""The members of one webdataset sample, and what a sample that cannot be used raises.

A sample is the group of tar members that share a key (`<key>.jpg`, `<key>.cls`, …); webdataset
hands it over as a dict from extension to bytes. Its image is the first member with one of
`IMAGE_EXTENSIONS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PIL import Image

from mawsflow.errors import DataFormatError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


class CorruptSample(DataFormatError):
    """A sample that cannot be used; the training loader skips and counts it."""


# What decoding a broken sample raises: PIL's errors (UnidentifiedImageError is an OSError),
# truncated data, bad JSON or text encodings (ValueErrors), and decompression bombs.
CORRUPT_SAMPLE_ERRORS = (
    CorruptSample,
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    Image.DecompressionBombError,
)


def image_member(raw: Mapping[str, Any]) -> bytes:
    """The encoded image of a raw sample."""
    for ext in IMAGE_EXTENSIONS:
        if ext in raw:
            return raw[ext]
    raise CorruptSample(f"no image member ({'/'.join(IMAGE_EXTENSIONS)})")
