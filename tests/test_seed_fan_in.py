"""Merging seeded runs (mawsflow.orchestration.seed_fan_in.merge_seed_runs) keeps every seed's
model, through metrics.json and through a merge of merges."""

from __future__ import annotations

import pytest

from mawsflow.evaluation.results import EvalResult, read_result, write_result
from mawsflow.orchestration.seed_fan_in import merge_seed_runs


def _seed(top1: float, model: str) -> EvalResult:
    return EvalResult(
        step="eval",
        evaluation="Fashion-MNIST",
        pretraining="MAE→WSP",
        metrics={"top1": top1},
        table={"Fashion-MNIST": top1},
        model=model,
        dataset="d",
    )


def test_the_merged_result_names_every_seeds_model_in_run_order(tmp_path):
    merged = merge_seed_runs([_seed(60.0, "s3://m0"), _seed(64.0, "s3://m1")])
    assert merged.models == ["s3://m0", "s3://m1"]
    assert merged.runs == {"Fashion-MNIST": [60.0, 64.0]}
    # `model` is still one model, the first seed's: the report reads its lineage from it.
    assert merged.model == "s3://m0"
    write_result(str(tmp_path / "merged"), merged)
    assert read_result(str(tmp_path / "merged")).models == ["s3://m0", "s3://m1"]
    # A merge of merged results keeps each of their seeds' models, as it keeps their values.
    other = merge_seed_runs([_seed(62.0, "s3://m2")])
    again = merge_seed_runs([merged, other])
    assert again.models == ["s3://m0", "s3://m1", "s3://m2"]
    assert again.runs == {"Fashion-MNIST": [60.0, 64.0, 62.0]}


def test_a_single_run_result_has_no_models_and_a_bad_list_is_refused(tmp_path):
    single = _seed(60.0, "s3://m0")
    assert single.models == []
    data = {**single.to_dict(), "models": "s3://m0"}
    with pytest.raises(ValueError, match="models must be a list of model URIs"):
        EvalResult.from_dict(data, source="metrics.json")
    # A result written before `models` existed still reads.
    old = single.to_dict()
    del old["models"]
    assert EvalResult.from_dict(old, source="old.json").models == []
