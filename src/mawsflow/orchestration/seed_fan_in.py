"""Putting seeded runs back together: the fan-ins of the pipeline's seed and low-shot fan-outs.

- Low-shot: the pipeline runs `mawsflow lowshot` over groups of (K, seed) — one run per task on
  a cluster, all of a model's runs in one task on a laptop (`lowshot_runs_per_task`). Each task
  leaves an ordinary low-shot result over its own runs; `merge_lowshot_runs` makes the result
  one `mawsflow lowshot` over every K and seed would have written: per K, the mean and spread
  over seeds (mawsflow.evaluation.lowshot.summarize), under the table column the runs name.
- Seeds: finetuning (then its evaluation) and the linear probe run once per transfer seed;
  `merge_seed_runs` gives one result whose table cells are the mean over seeds and whose `runs`
  keep every seed's value, which the report shows as mean ± std; its `models` name every
  seed's model (`model`, the one the report reads the lineage of, is the first seed's).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from mawsflow.evaluation.lowshot import summarize, summary_metrics
from mawsflow.evaluation.results import EvalResult


def _check_same_evaluation(runs: Sequence[EvalResult], *, same_model: bool) -> EvalResult:
    if not runs:
        raise ValueError("no runs to merge")
    first = runs[0]

    def key(r: EvalResult) -> tuple[str, ...]:
        return (r.step, r.evaluation, r.pretraining, r.dataset) + ((r.model,) if same_model else ())

    for run in runs[1:]:
        if key(run) != key(first):
            raise ValueError(
                f"runs of different evaluations: {run.evaluation!r} of {run.model} "
                f"({run.pretraining}) beside {first.evaluation!r} of {first.model} "
                f"({first.pretraining})"
            )
    return first


def merge_lowshot_runs(runs: Sequence[EvalResult]) -> EvalResult:
    first = _check_same_evaluation(runs, same_model=True)
    top1: dict[int, list[float]] = {}
    column: dict[int, str] = {}
    for run in runs:
        # The step writes one table column per K, in the order of its `lowshot` entries.
        if run.step != "lowshot" or not run.lowshot or len(run.lowshot) != len(run.table):
            raise ValueError(
                f"{run.evaluation!r}: expected a low-shot result with a column per K, got step "
                f"{run.step!r} with K {sorted(run.lowshot)} and columns {sorted(run.table)}"
            )
        for (shots, summary), name in zip(run.lowshot.items(), run.table, strict=True):
            top1.setdefault(int(shots), []).extend(float(v) for v in summary["runs"])
            if column.setdefault(int(shots), name) != name:
                raise ValueError(
                    f"{shots}-shot runs name two columns: {column[int(shots)]!r}, {name!r}"
                )
    summaries = summarize(top1)
    return EvalResult(
        step="lowshot",
        evaluation=first.evaluation,
        pretraining=first.pretraining,
        metrics=summary_metrics(summaries),
        table={column[s.shots]: s.mean for s in summaries},
        model=first.model,
        dataset=first.dataset,
        lowshot={str(s.shots): s.as_dict() for s in summaries},
        runs={column[s.shots]: list(s.runs) for s in summaries},
    )


def merge_seed_runs(runs: Sequence[EvalResult]) -> EvalResult:
    """One result from the same evaluation run with different seeds (the models differ: each
    seed finetunes its own). Cells and metrics are means; `runs` holds each seed's cells and
    `models` each seed's model, in the same order; every metric gets a `<name>_std` (sample
    standard deviation; 0 for one seed)."""
    first = _check_same_evaluation(runs, same_model=False)
    columns = list(first.table)
    metrics: dict[str, float] = {}
    for name in first.metrics:
        values = [r.metrics[name] for r in runs if name in r.metrics]
        if len(values) != len(runs):
            raise ValueError(f"{first.evaluation!r}: metric {name!r} is missing from some seeds")
        metrics[name] = statistics.fmean(values)
        metrics[f"{name}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    per_column: dict[str, list[float]] = {}
    for column in columns:
        for run in runs:
            if column not in run.table:
                raise ValueError(f"{first.evaluation!r}: column {column!r} is missing from a seed")
            # A run that already averaged seeds contributes each of its seeds.
            per_column.setdefault(column, []).extend(run.runs.get(column, [run.table[column]]))
    # A run that already merged seeds contributes each of its seeds' models.
    models = [model for run in runs for model in (run.models or [run.model])]
    return EvalResult(
        step=first.step,
        evaluation=first.evaluation,
        pretraining=first.pretraining,
        metrics=metrics,
        table={c: statistics.fmean(v) for c, v in per_column.items()},
        model=first.model,
        dataset=first.dataset,
        runs=per_column,
        models=models,
    )
