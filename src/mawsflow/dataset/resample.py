"""Resampling: repeat the images that carry rare labels, to flatten the label distribution.

The paper's IG-3B holds 3B unique images resampled to 5B samples per epoch (§4.1), i.e. a
ratio of 5/3 ≈ 1.67 samples per unique image. Each kept image `i` gets a repeat factor

    r_i = max(1, (t / c_i) ** p),      c_i = min over i's labels of the label's image count

(repeat-factor sampling: an image is repeated as much as its rarest label needs). `p` is the
flattening power (0.5 by default: a label 100× rarer than `t` gets 10× the repeats); `t` is the
count threshold below which labels are boosted. The knob is the target ratio `R` = mean of
`r_i` over kept images: the vocabulary phase knows how many images have each `c_i`, so it
solves `t` for `R` exactly (the mean grows continuously and monotonically with `t`) by
bisection. `R = 1` turns resampling off; the default is the paper's 5/3.

Repeats are whole numbers by stochastic rounding: floor(r_i), plus one with probability
frac(r_i), decided by a uniform number hashed from the image's content hash and the seed. The
decision depends only on the image, never on which worker sees it or in what order, so any
split of the build writes the same samples; the achieved ratio lands within sampling noise of
`R` and is reported in the statistics.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass

PAPER_RATIO = 5 / 3  # IG-3B: 3B unique images → 5B samples per epoch (§4.1)
DEFAULT_POWER = 0.5


@dataclass(frozen=True)
class ResampleSettings:
    target_ratio: float = PAPER_RATIO
    power: float = DEFAULT_POWER
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.target_ratio >= 1.0:
            raise ValueError(
                f"resample target ratio must be at least 1 (1 = off), got {self.target_ratio}"
            )
        if not self.power > 0:
            raise ValueError(f"resample power must be positive, got {self.power}")


def repeat_factor(rarest_label_count: int, threshold: float, power: float) -> float:
    """r_i for an image whose rarest label has `rarest_label_count` images."""
    if threshold <= rarest_label_count:
        return 1.0
    return (threshold / rarest_label_count) ** power


def expected_ratio(
    images_by_rarest_count: Mapping[int, int], threshold: float, power: float
) -> float:
    """Mean repeat factor over images, from {rarest label count: number of images}."""
    images = sum(images_by_rarest_count.values())
    if images == 0:
        return 1.0
    total = sum(
        n * repeat_factor(count, threshold, power) for count, n in images_by_rarest_count.items()
    )
    return total / images


def solve_threshold(
    images_by_rarest_count: Mapping[int, int], target_ratio: float, power: float
) -> float:
    """The threshold `t` whose expected ratio is `target_ratio` (0 when resampling is off)."""
    if target_ratio <= 1.0 or not images_by_rarest_count:
        return 0.0
    low = float(min(images_by_rarest_count))  # at or below the rarest count nothing repeats
    high = max(low, 1.0) * 2
    while expected_ratio(images_by_rarest_count, high, power) < target_ratio:
        high *= 2
    while high - low > 1e-9 * high:
        middle = (low + high) / 2
        if expected_ratio(images_by_rarest_count, middle, power) < target_ratio:
            low = middle
        else:
            high = middle
    return high


def _uniform(content_hash: bytes, seed: int) -> float:
    digest = hashlib.blake2b(
        content_hash, digest_size=8, key=seed.to_bytes(8, "big", signed=True), person=b"resample"
    ).digest()
    return int.from_bytes(digest, "big") / 2**64


def repeat_count(
    content_hash: bytes, rarest_label_count: int, threshold: float, power: float, seed: int
) -> int:
    """How many times the image is written: r_i stochastically rounded, deterministically."""
    factor = repeat_factor(rarest_label_count, threshold, power)
    whole = math.floor(factor)
    return whole + (1 if _uniform(content_hash, seed) < factor - whole else 0)
