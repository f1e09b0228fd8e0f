"""Low-shot protocol (§4.4, Table 17): K-shot splits, logistic regression, mean and spread.

For each K ∈ {1, 5, 10} and each of 5 seeds, a split keeps K training examples per class, or
every example of a class that has fewer (iNat18's "at most K"). A seed draws one random order
per class and every K takes a prefix of it, so a seed's 1-shot split lies inside its 5-shot
split: the K comparison then measures more data, not a different draw.

Three adaptation methods share these splits: VPT (mawsflow.models.vpt); full finetuning, MSN's
protocol for MAE trunks (Appendix B; `mawsflow lowshot --method finetune`); and, as in MSN's
protocol for CLIP-like models (§B), multinomial logistic regression on frozen features (this
module). MSN's `logistic_eval.py` centres and L2-normalises each feature vector,
fits without an intercept under an L2 penalty λ/2·‖W‖² on the summed loss (cyanure's λ scaled by
the sample count), which is scikit-learn's objective with C = 1/λ. The paper states no λ; MSN's
code defaults to 2.5e-4 and its README uses 2.5e-3, so the project sweeps λ over decades around
them (`MSN_LAMBDAS`) and, as such sweeps do, reports for each K the λ with the best mean top-1
over the seeds, scored on the evaluation split (docs/paper-deviations.md).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression


def sample_few_shot(labels: Sequence[int] | np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Sorted indices of a K-shot split: at most `shots` samples of every class present."""
    if shots < 1:
        raise ValueError(f"shots must be at least 1, got {shots}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"labels must be a non-empty 1-D sequence, got shape {labels.shape}")
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        chosen.append(members[rng.permutation(len(members))[:shots]])
    return np.sort(np.concatenate(chosen))


# λ of MSN's logistic regression: its code's default (2.5e-4) and README value (2.5e-3), and a
# decade on either side.
MSN_LAMBDAS = (2.5e-5, 2.5e-4, 2.5e-3, 2.5e-2)


def msn_preprocess(features: np.ndarray) -> np.ndarray:
    """Each feature vector centred (its own mean removed) and scaled to unit L2 norm, as
    cyanure's `preprocess(centering=True, normalize=True, columns=False)` in MSN."""
    centred = features - features.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return centred / np.maximum(norms, 1e-12)


def logistic_regression_top1(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    *,
    lambd: float = MSN_LAMBDAS[1],
    max_iter: int = 1000,
    seed: int = 0,
) -> float:
    """Top-1 (percent) of MSN's L2-regularised multinomial logistic regression (no intercept,
    penalty `lambd`/2·‖W‖² on the summed loss) on preprocessed frozen features."""
    if not lambd > 0:
        raise ValueError(f"the logistic regression's lambda must be positive, got {lambd}")
    if len(np.unique(train_labels)) < 2:
        raise ValueError("logistic regression needs training examples of at least two classes")
    classifier = LogisticRegression(
        C=1.0 / lambd, fit_intercept=False, max_iter=max_iter, random_state=seed
    )
    classifier.fit(msn_preprocess(train_features), train_labels)
    predictions = classifier.predict(msn_preprocess(test_features))
    return 100.0 * float(np.mean(predictions == test_labels))


def best_regularization(
    runs_by_lambda: Mapping[float, Mapping[int, Sequence[float]]],
) -> dict[int, float]:
    """For each K, the λ whose seeded runs have the best mean top-1 (ties: the larger λ, the
    stronger regularisation)."""
    if not runs_by_lambda:
        raise ValueError("no logistic-regression runs to choose a lambda from")
    shots = set().union(*(set(runs) for runs in runs_by_lambda.values()))
    return {
        k: max(
            sorted(runs_by_lambda, reverse=True),
            key=lambda lam: statistics.fmean(runs_by_lambda[lam][k]),
        )
        for k in sorted(shots)
    }


@dataclass(frozen=True)
class ShotSummary:
    """Top-1 over the seeded splits of one K."""

    shots: int
    runs: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.runs)

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (0 for a single seed)."""
        return statistics.stdev(self.runs) if len(self.runs) > 1 else 0.0

    def as_dict(self) -> dict[str, float | list[float]]:
        return {
            "mean": self.mean,
            "std": self.std,
            "min": min(self.runs),
            "max": max(self.runs),
            "runs": list(self.runs),
        }


def summarize(results: Mapping[int, Sequence[float]]) -> list[ShotSummary]:
    """Shot count → per-seed top-1 values, as summaries sorted by K."""
    if not results:
        raise ValueError("no low-shot results to summarise")
    out = []
    for shots in sorted(results):
        if not results[shots]:
            raise ValueError(f"{shots}-shot has no runs")
        out.append(ShotSummary(shots, tuple(float(v) for v in results[shots])))
    return out


def summary_metrics(summaries: Sequence[ShotSummary]) -> dict[str, float]:
    """A low-shot result's flat metrics: the mean and spread of top-1 for every K."""
    metrics: dict[str, float] = {}
    for s in summaries:
        metrics[f"{s.shots}shot_top1_mean"] = s.mean
        metrics[f"{s.shots}shot_top1_std"] = s.std
    return metrics
