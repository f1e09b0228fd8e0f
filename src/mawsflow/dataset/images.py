"""Is this member a usable image, and which format is it really?

The format comes from the bytes' signature, not the member's extension, so a PNG uploaded as
`.jpg` is written out as `.png` (the bytes pass through unchanged; only the name is honest).
Validation decodes the whole image with Pillow, which catches truncated files and garbage
behind a valid header. JPEGs decode in draft mode at 1/8 scale: the entropy-coded data is
still read to the end (so truncation is still caught) at a fraction of the cost.
"""

from __future__ import annotations

import io

from PIL import Image

from mawsflow.dataset.stats import SampleDrop, SampleRejected

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp"})


def image_format(data: bytes) -> str | None:
    """`jpg`, `png` or `webp` from the signature of `data`, or None for anything else."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def validate_image(data: bytes) -> str:
    """Decode `data` fully; returns its format (as `image_format`) or raises SampleRejected."""
    fmt = image_format(data)
    if fmt is None:
        raise SampleRejected(SampleDrop.NOT_AN_IMAGE)
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > Image.MAX_IMAGE_PIXELS:
                raise SampleRejected(SampleDrop.OVERSIZED_IMAGE)
            if fmt == "jpg":
                image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
            image.load()
    except SampleRejected:
        raise
    except Image.DecompressionBombError:
        raise SampleRejected(SampleDrop.OVERSIZED_IMAGE) from None
    except Exception:
        # Pillow's decoders signal malformed input with many exception types (OSError,
        # SyntaxError, ValueError, struct.error, EOFError, …); any of them means unusable.
        raise SampleRejected(SampleDrop.CORRUPT_IMAGE) from None
    return fmt
