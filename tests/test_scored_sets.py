"""A model scored on named test sets → one evaluation result (mawsflow.evaluation.scored_sets),
the result `mawsflow eval`, `mawsflow eval-video` and the finetuning steps write."""

from __future__ import annotations

import json
import logging

import pytest

from mawsflow.evaluation.classify import NamedTestSet
from mawsflow.evaluation.results import read_result
from mawsflow.evaluation.scored_sets import on_test_sets, score_test_sets, write_test_set_result
from mawsflow.steps import eval_detection, eval_video, evaluate

K400 = NamedTestSet("K400", "/data/k400", None)
SSV2 = NamedTestSet("SSv2", "/data/ssv2", "val")
SSV2_UNNAMED = NamedTestSet("ssv2", "/data/ssv2", None)


def _write_card(folder, card):
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps(card))


def test_each_set_is_scored_in_order_and_logged_where_asked(caplog):
    scored = []

    def score(test_set):
        scored.append(test_set.name)
        return {"top1": 10.0 * len(scored)}

    with caplog.at_level(logging.INFO, logger="mawsflow.evaluation.scored_sets"):
        scores = score_test_sets([K400, SSV2], score, log_extra={"views": 6})
        score_test_sets([K400], score, log_scores=False)
    assert scored == ["K400", "SSv2", "K400"]
    assert scores == [(K400, {"top1": 10.0}), (SSV2, {"top1": 20.0})]
    logged = [r for r in caplog.records if r.getMessage() == "evaluated"]
    assert [(r.test_set, r.views, r.top1) for r in logged] == [("K400", 6, 10.0), ("SSv2", 6, 20.0)]
    assert on_test_sets("video model", scores) == "video model on K400, SSv2"


def test_the_result_holds_every_sets_metrics_cells_and_datasets(tmp_path):
    # The model's lineage: a WSP model started from an MAE one, so its row is MAE→WSP.
    _write_card(tmp_path / "mae", {"step": "mae", "recipe": {}})
    _write_card(
        tmp_path / "wsp",
        {"step": "wsp", "recipe": {"init": "mae", "init_checkpoint": str(tmp_path / "mae")}},
    )
    scores = [
        (K400, {"top1": 61.5, "top5": 85.0}),
        (SSV2, {"top1": 40.0, "top5": 70.0, "real_top1": 45.0}),
    ]
    out = tmp_path / "eval"
    written = write_test_set_result(
        str(out), scores, step="eval-video", evaluation="v", model=str(tmp_path / "wsp")
    )
    result = read_result(str(out))
    assert result == written
    assert result.step == "eval-video" and result.evaluation == "v"
    assert result.pretraining == "MAE→WSP"
    assert result.metrics == {
        "k400_top1": 61.5,
        "k400_top5": 85.0,
        "ssv2_top1": 40.0,
        "ssv2_top5": 70.0,
        "ssv2_real_top1": 45.0,
    }
    assert result.table == {"K400": 61.5, "SSv2": 40.0, "SSv2 ReaL": 45.0}
    assert result.dataset == "/data/k400 /data/ssv2"
    assert result.model == str(tmp_path / "wsp")


def test_a_given_row_dataset_and_extra_metrics_are_kept(tmp_path):
    # No model card at all: a given --pretraining row needs none.
    result = write_test_set_result(
        str(tmp_path / "ft"),
        [(K400, {"top1": 50.0})],
        step="finetune",
        evaluation="finetune on k400",
        model=str(tmp_path / "ft"),
        pretraining="WSP",
        dataset="/data/train",
        extra_metrics={"train_loss": 1.5},
    )
    assert read_result(str(tmp_path / "ft")) == result
    assert result.pretraining == "WSP" and result.dataset == "/data/train"
    assert result.metrics == {"k400_top1": 50.0, "train_loss": 1.5}


def test_the_eval_steps_write_their_result_through_it():
    # The steps hold no copy of the result writing (the `duplicates` pairs they were).
    for step in (evaluate, eval_video, eval_detection):
        assert step.write_test_set_result is write_test_set_result
        assert step.score_test_sets is score_test_sets
        assert not hasattr(step, "flat_metrics") and not hasattr(step, "write_result")


def test_a_step_picks_its_own_report_cells(tmp_path):
    # Detection's cells are each set's box and mask AP, not a top-1 it does not have.
    lvis = NamedTestSet("LVIS", "/data/lvis", None)
    result = write_test_set_result(
        str(tmp_path / "det"),
        [(lvis, {"box_ap": 40.0, "mask_ap": 35.0, "images": 4.0})],
        step="eval-detection",
        evaluation="detection on LVIS",
        model=str(tmp_path / "det"),
        pretraining="MAE",
        cells=eval_detection.table_cells,
    )
    assert read_result(str(tmp_path / "det")) == result
    assert result.table == {"LVIS APbox": 40.0, "LVIS APmask": 35.0}
    assert result.metrics == {"lvis_box_ap": 40.0, "lvis_mask_ap": 35.0, "lvis_images": 4.0}


def test_the_eval_steps_share_their_common_options(capsys):
    argv = [
        "--model", "m", "--output", "o", "--test-set", "K400=/data/k400:val",
        "--test-set", "/data/ssv2", "--name", "n", "--pretraining", "MAE",
        "--num-workers", "0", "--device", "cpu",
    ]  # fmt: skip
    for step in (evaluate, eval_video, eval_detection):
        args = step.build_parser().parse_args(argv)
        assert args.test_sets == [NamedTestSet("K400", "/data/k400", "val"), SSV2_UNNAMED]
        assert (args.model, args.output, args.name, args.pretraining) == ("m", "o", "n", "MAE")
        assert (args.num_workers, args.device) == (0, "cpu")
        with pytest.raises(SystemExit):  # a malformed test set is refused by name
            step.build_parser().parse_args([*argv, "--test-set", "X=:val"])
        assert "test set 'X=:val': expected [NAME=]URI[:SPLIT]" in capsys.readouterr().err
