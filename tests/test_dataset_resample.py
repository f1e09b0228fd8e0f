"""Resampling: the repeat-factor formula, solving its threshold for a target ratio, and
deterministic stochastic rounding."""

from __future__ import annotations

import hashlib

import pytest

from mawsflow.dataset.resample import (
    PAPER_RATIO,
    ResampleSettings,
    expected_ratio,
    repeat_count,
    repeat_factor,
    solve_threshold,
)

# {rarest label count: images}: a long tail, as hashtag vocabularies have.
LONG_TAIL = {5000: 4000, 1000: 2000, 200: 1500, 50: 800, 10: 300}


def digest(index: int) -> bytes:
    return hashlib.blake2b(index.to_bytes(8, "big"), digest_size=16).digest()


def test_repeat_factor_boosts_only_labels_below_the_threshold():
    assert repeat_factor(500, threshold=400, power=0.5) == 1.0
    assert repeat_factor(100, threshold=400, power=0.5) == pytest.approx(2.0)
    assert repeat_factor(4, threshold=400, power=0.5) == pytest.approx(10.0)
    assert repeat_factor(4, threshold=400, power=1.0) == pytest.approx(100.0)


@pytest.mark.parametrize("target", [1.05, PAPER_RATIO, 3.0])
def test_threshold_meets_the_target_ratio(target):
    threshold = solve_threshold(LONG_TAIL, target, 0.5)
    assert expected_ratio(LONG_TAIL, threshold, 0.5) == pytest.approx(target, rel=1e-6)


def test_ratio_one_turns_resampling_off():
    assert solve_threshold(LONG_TAIL, 1.0, 0.5) == 0.0
    assert all(repeat_count(digest(i), 10, 0.0, 0.5, seed=0) == 1 for i in range(100))


def test_paper_ratio_is_three_billion_to_five_billion():
    assert ResampleSettings().target_ratio == pytest.approx(5e9 / 3e9)


def test_stochastic_rounding_is_deterministic_and_unbiased():
    factor = repeat_factor(100, threshold=625, power=0.5)  # 2.5
    counts = [repeat_count(digest(i), 100, 625, 0.5, seed=7) for i in range(20_000)]
    assert set(counts) == {2, 3}
    assert sum(counts) / len(counts) == pytest.approx(factor, abs=0.02)
    assert counts == [repeat_count(digest(i), 100, 625, 0.5, seed=7) for i in range(20_000)]
    other_seed = [repeat_count(digest(i), 100, 625, 0.5, seed=8) for i in range(20_000)]
    assert other_seed != counts


def test_achieved_ratio_over_a_corpus_is_close_to_the_target():
    threshold = solve_threshold(LONG_TAIL, PAPER_RATIO, 0.5)
    total = images = 0
    index = 0
    for rarest, n in LONG_TAIL.items():
        for _ in range(n):
            total += repeat_count(digest(index), rarest, threshold, 0.5, seed=0)
            images += 1
            index += 1
    assert total / images == pytest.approx(PAPER_RATIO, abs=0.02)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"target_ratio": 0.5}, "at least 1"), ({"power": 0.0}, "positive")],
)
def test_settings_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResampleSettings(**kwargs)
