"""Caption bytes → text for the dataset build.

The build reads a caption only if it is UTF-8 (a byte-order mark is tolerated), not blank, and
no longer than a byte limit: Instagram caps captions at 2,200 characters (under 9 KiB even in
4-byte UTF-8), so anything far beyond is spam or a mislabelled member, not a caption. What LiT
trains on is the caption sanitised (`mawsflow.data.captions`).
"""

from __future__ import annotations

from mawsflow.dataset.stats import SampleDrop, SampleRejected

DEFAULT_MAX_CAPTION_BYTES = 16 * 1024


def decode_caption(data: bytes, max_bytes: int = DEFAULT_MAX_CAPTION_BYTES) -> str:
    """The caption text of a `.txt` member, or SampleRejected."""
    if len(data) > max_bytes:
        raise SampleRejected(SampleDrop.CAPTION_TOO_LONG)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SampleRejected(SampleDrop.CAPTION_NOT_UTF8) from None
    if not text.strip():
        raise SampleRejected(SampleDrop.EMPTY_CAPTION)
    return text
