"""The evaluation view of an image (issue 15, item 7): by default resized straight to the
model's size as the maws evaluation of finetuned models does, the maws zero-shot evaluation's
short-side resize and full centre crop for zero-shot, and timm's 87.5% crop on request."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mawsflow.data.eval_loader import EvalSamples
from mawsflow.data.transforms import (
    DEFAULT_CROP_PCT,
    ZEROSHOT_CROP_PCT,
    eval_image,
    parse_crop_pct,
)
from mawsflow.evaluation.eval_cli import eval_parser


def _striped_png(width: int = 48, height: int = 24) -> bytes:
    """Grey image with a green stripe down its leftmost quarter of the width."""
    pixels = np.full((height, width, 3), 128, dtype=np.uint8)
    pixels[:, : width // 4] = (0, 255, 0)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _green(column) -> bool:
    return bool((column[1] > 200).all() and (column[0] < 60).all())


def test_default_view_resizes_straight_to_the_size_keeping_the_whole_image():
    assert DEFAULT_CROP_PCT is None
    image = eval_image(_striped_png(), 16, DEFAULT_CROP_PCT)
    assert tuple(image.shape) == (3, 16, 16)
    # The whole width is kept, squeezed: the stripe still covers the first quarter.
    assert _green(image[:, :, 0]) and _green(image[:, :, 2])
    assert not _green(image[:, :, 8])


def test_centre_crops_cut_the_sides_of_a_wide_image():
    # Short side to 16 / 0.875 ≈ 18 (width 36), crop 16 from the centre: columns 10–25 of
    # 36, the stripe (columns 0–8) is gone. With f = 1 (maws zero-shot): columns 16–31 of 32.
    for crop_pct in (0.875, ZEROSHOT_CROP_PCT):
        image = eval_image(_striped_png(), 16, crop_pct)
        assert tuple(image.shape) == (3, 16, 16)
        assert not _green(image[:, :, 0]), crop_pct
    assert ZEROSHOT_CROP_PCT == 1.0


def test_crop_settings_parse_and_bad_ones_are_named():
    assert parse_crop_pct("none") is None and parse_crop_pct("0.875") == 0.875
    with pytest.raises(ValueError, match="crop_pct"):
        parse_crop_pct("1.5")
    with pytest.raises(ValueError, match="crop_pct"):
        parse_crop_pct("wide")
    with pytest.raises(ValueError, match="crop_pct"):
        eval_image(_striped_png(), 16, 0.0)
    with pytest.raises(ValueError, match="crop_pct"):
        EvalSamples(None, img_size=16, crop_pct=2.0)  # type: ignore[arg-type]


def test_eval_cli_defaults_to_the_straight_resize_and_takes_none_or_a_fraction():
    parser = eval_parser("eval", "x", model_help="m")
    base = ["--model", "m", "--output", "o"]
    assert parser.parse_args(base).crop_pct is None
    assert parser.parse_args([*base, "--crop-pct", "0.875"]).crop_pct == 0.875
    zeroshot = eval_parser("zeroshot", "x", model_help="m", crop_pct=ZEROSHOT_CROP_PCT)
    assert zeroshot.parse_args(base).crop_pct == 1.0
    assert zeroshot.parse_args([*base, "--crop-pct", "none"]).crop_pct is None
    with pytest.raises(SystemExit):
        # argparse reports the bad value on stderr and exits.
        parser.parse_args([*base, "--crop-pct", "2"])
