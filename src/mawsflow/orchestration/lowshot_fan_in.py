"""One low-shot result from the pipeline's fan-out over K × seeds.

The pipeline runs `mawsflow lowshot` once per (K, seed), each task with a one-K, one-seed
recipe, so that the runs spread over the cluster. Each leaves an ordinary low-shot result whose
`lowshot` entry holds its single run; this module puts them back together as the result one
`mawsflow lowshot` over every K and seed would have written: per K, the mean and spread over
seeds (mawsflow.evaluation.lowshot.summarize), under the table column the runs name.
"""

from __future__ import annotations

from collections.abc import Sequence

from mawsflow.evaluation.lowshot import summarize, summary_metrics
from mawsflow.evaluation.results import EvalResult


def merge_lowshot_runs(runs: Sequence[EvalResult]) -> EvalResult:
    if not runs:
        raise ValueError("no low-shot runs to merge")
    first = runs[0]
    top1: dict[int, list[float]] = {}
    column: dict[int, str] = {}
    for run in runs:
        same = (run.step, run.evaluation, run.pretraining, run.model, run.dataset)
        if same != (first.step, first.evaluation, first.pretraining, first.model, first.dataset):
            raise ValueError(
                f"low-shot runs of different evaluations: {run.evaluation!r} of {run.model} "
                f"({run.pretraining}) beside {first.evaluation!r} of {first.model} "
                f"({first.pretraining})"
            )
        if run.step != "lowshot" or len(run.lowshot) != 1 or len(run.table) != 1:
            raise ValueError(
                f"{run.evaluation!r}: expected a low-shot result of one K, got step "
                f"{run.step!r} with K {sorted(run.lowshot)} and columns {sorted(run.table)}"
            )
        ((shots, summary),) = run.lowshot.items()
        ((name, _),) = run.table.items()
        top1.setdefault(int(shots), []).extend(float(v) for v in summary["runs"])
        column[int(shots)] = name
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
    )
