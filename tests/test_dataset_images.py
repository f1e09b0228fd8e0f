"""Image validation: the real format from the bytes, full decoding, and the reason a broken
image is dropped."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mawsflow.dataset.images import image_format, validate_image
from mawsflow.dataset.stats import SampleDrop, SampleRejected


def encoded(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(("fmt", "ext"), [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp")])
def test_valid_images_report_their_real_format(fmt, ext):
    data = encoded(fmt)
    assert image_format(data) == ext
    assert validate_image(data) == ext


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"just some text, not an image", SampleDrop.NOT_AN_IMAGE),
        (b"", SampleDrop.NOT_AN_IMAGE),
        (b"GIF89a" + b"\x00" * 100, SampleDrop.NOT_AN_IMAGE),  # not a format the build takes
        (encoded("JPEG")[:300], SampleDrop.CORRUPT_IMAGE),
        (encoded("PNG")[:200], SampleDrop.CORRUPT_IMAGE),
        (encoded("WEBP")[:100], SampleDrop.CORRUPT_IMAGE),
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 50, SampleDrop.CORRUPT_IMAGE),
        (b"\xff\xd8\xff" + b"\x00" * 500, SampleDrop.CORRUPT_IMAGE),
    ],
    ids=["text", "empty", "gif", "jpeg-cut", "png-cut", "webp-cut", "png-garbage", "jpeg-zeros"],
)
def test_broken_images_are_rejected_with_a_reason(data, reason):
    with pytest.raises(SampleRejected) as caught:
        validate_image(data)
    assert caught.value.reason is reason


def test_decompression_bombs_are_rejected(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(SampleRejected) as caught:
        validate_image(encoded("PNG", (64, 48)))
    assert caught.value.reason is SampleDrop.OVERSIZED_IMAGE
