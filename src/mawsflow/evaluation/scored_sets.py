"""One model scored on named test sets, and the evaluation result that says so.

`mawsflow eval`, `mawsflow eval-video`, `mawsflow eval-detection` and the finetuning steps'
final evaluation all score a model on each `--test-set` in turn and hand the report one result:
every set's metrics (`<set>_top1`, `<set>_top5`, …, or `<set>_box_ap`, …), each set's report
cells (by default its top-1, and its ReaL top-1 where it has one; detection's are its box and
mask AP) and the datasets it was scored on. They differ only in how a set is scored and which
of its metrics the report's cells are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mawsflow.evaluation.classify import NamedTestSet, flat_metrics, table_cells
from mawsflow.evaluation.results import EvalResult, model_lineage, write_result

log = logging.getLogger(__name__)

SetScores = list[tuple[NamedTestSet, dict[str, float]]]


def score_test_sets(
    test_sets: Sequence[NamedTestSet],
    score: Callable[[NamedTestSet], dict[str, float]],
    *,
    log_scores: bool = True,
    log_extra: Mapping[str, Any] | None = None,
) -> SetScores:
    """Each test set with its `score`, in order. `log_scores`: log each ("evaluated"), as the
    main rank does (under torchrun every rank scores its shards, one logs the sum)."""
    scores: SetScores = []
    for test_set in test_sets:
        metrics = score(test_set)
        if log_scores:
            log.info("evaluated", extra={"test_set": test_set.name, **(log_extra or {}), **metrics})
        scores.append((test_set, metrics))
    return scores


def on_test_sets(what: str, scores: SetScores) -> str:
    """A default evaluation name: "<what> on <set>, <set>"."""
    return f"{what} on {', '.join(test_set.name for test_set, _ in scores)}"


def write_test_set_result(
    output: str,
    scores: SetScores,
    *,
    step: str,
    evaluation: str,
    model: str,
    pretraining: str | None = None,
    dataset: str | None = None,
    extra_metrics: Mapping[str, float] | None = None,
    cells: Callable[[SetScores], dict[str, float]] = table_cells,
) -> EvalResult:
    """Write `<output>/metrics.json` for `model` scored on the test sets in `scores`, and return
    it. `pretraining` (the report row) defaults to the model's lineage; `dataset` to the test
    sets' URIs; `extra_metrics` join the test sets' (a finetune's training loss, say). `cells`
    picks the report's cells from the scores (default: each set's top-1 and ReaL top-1)."""
    result = EvalResult(
        step=step,
        evaluation=evaluation,
        pretraining=pretraining or model_lineage(model),
        metrics={**flat_metrics(scores), **(extra_metrics or {})},
        table=cells(scores),
        model=model,
        dataset=" ".join(t.dataset for t, _ in scores) if dataset is None else dataset,
    )
    write_result(output, result)
    return result
