"""Low-shot splits (K per class, at most K, seeded), logistic regression and summaries."""

from __future__ import annotations

import numpy as np
import pytest

from mawsflow.evaluation.lowshot import (
    MSN_LAMBDAS,
    best_regularization,
    logistic_regression_top1,
    msn_preprocess,
    sample_few_shot,
    summarize,
)


def _labels() -> np.ndarray:
    # Class 0 has 20 samples, class 1 has 12, class 2 only 3 (a rare iNat18-like class).
    return np.array([0] * 20 + [1] * 12 + [2] * 3)


def test_k_shot_split_keeps_at_most_k_per_class():
    labels = _labels()
    for shots in (1, 5, 10):
        split = sample_few_shot(labels, shots, seed=0)
        counts = np.bincount(labels[split], minlength=3)
        assert counts.tolist() == [shots, shots, min(shots, 3)]
        assert len(np.unique(split)) == len(split)


def test_splits_are_seeded_distinct_across_seeds_and_nested_across_k():
    labels = _labels()
    assert np.array_equal(sample_few_shot(labels, 5, 3), sample_few_shot(labels, 5, 3))
    splits = {tuple(sample_few_shot(labels, 5, seed)) for seed in range(5)}
    assert len(splits) == 5
    for seed in range(5):
        one, five = sample_few_shot(labels, 1, seed), sample_few_shot(labels, 5, seed)
        assert set(one) <= set(five)


def test_bad_split_requests_are_rejected():
    with pytest.raises(ValueError, match="at least 1"):
        sample_few_shot(_labels(), 0, 0)
    with pytest.raises(ValueError, match="non-empty"):
        sample_few_shot([], 1, 0)


def test_logistic_regression_separates_separable_features():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 4
    train_y = np.repeat(np.arange(3), 5)
    test_y = np.repeat(np.arange(3), 30)
    train_x = centres[train_y] + rng.normal(size=(len(train_y), 16))
    test_x = centres[test_y] + rng.normal(size=(len(test_y), 16))
    assert logistic_regression_top1(train_x, train_y, test_x, test_y) > 90.0
    for lambd in MSN_LAMBDAS:
        assert logistic_regression_top1(train_x, train_y, test_x, test_y, lambd=lambd) > 80.0
    with pytest.raises(ValueError, match="two classes"):
        logistic_regression_top1(train_x[:2], np.zeros(2), test_x, test_y)
    with pytest.raises(ValueError, match="lambda"):
        logistic_regression_top1(train_x, train_y, test_x, test_y, lambd=0.0)


def test_features_are_preprocessed_as_msns_cyanure_call():
    # centering=True, normalize=True, columns=False: per sample, mean removed, unit L2 norm.
    rng = np.random.default_rng(1)
    features = rng.normal(size=(4, 8))
    out = msn_preprocess(features)
    np.testing.assert_allclose(out.mean(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0)
    # So a sample's offset and scale do not matter.
    np.testing.assert_allclose(msn_preprocess(3.0 * features + 5.0), out)
    # MSN's code default (2.5e-4) and README value (2.5e-3) are in the sweep.
    assert {2.5e-4, 2.5e-3} <= set(MSN_LAMBDAS)


def test_the_sweep_keeps_for_each_k_the_lambda_with_the_best_mean():
    runs = {
        2.5e-4: {1: [30.0, 40.0], 5: [70.0, 70.0]},
        2.5e-3: {1: [50.0, 40.0], 5: [60.0, 66.0]},
        2.5e-2: {1: [44.0, 45.0], 5: [70.0, 70.0]},
    }
    # K=5 ties between 2.5e-4 and 2.5e-2: the stronger regularisation wins.
    assert best_regularization(runs) == {1: 2.5e-3, 5: 2.5e-2}
    with pytest.raises(ValueError, match="no logistic-regression runs"):
        best_regularization({})


def test_summary_reports_mean_and_spread_per_k():
    summaries = summarize({5: [60.0, 62.0, 64.0], 1: [40.0]})
    assert [s.shots for s in summaries] == [1, 5]
    one, five = summaries
    assert one.mean == 40.0 and one.std == 0.0
    assert five.mean == pytest.approx(62.0) and five.std == pytest.approx(2.0)
    assert five.as_dict()["runs"] == [60.0, 62.0, 64.0]
    with pytest.raises(ValueError, match="no low-shot"):
        summarize({})
