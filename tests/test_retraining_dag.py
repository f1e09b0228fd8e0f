"""The compiled retraining pipeline (`pipelines/maws.py --retrain --compile`): retrain-plan first
and never cached, everything else under its data-changed condition, the dataset build reading
the plan's snapshot, MAE and WSP warm-started from the plan, the promotion gate between the
evaluations and the report, the retraining parameters declared only in this pipeline, and the
backend conformance rules passed."""

import re

import pytest
import yaml

from mawsflow.orchestration.command import check_arguments, main
from mawsflow.orchestration.conformance import pipeline_spec, require_conformance
from mawsflow.orchestration.dag import RETRAIN_PARAMETERS
from mawsflow.orchestration.parameters import ParameterError
from test_pipeline_dag import walk


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    path = tmp_path_factory.mktemp("retrain") / "pipeline.yaml"
    assert main(["--retrain", "--compile", str(path)]) == 0
    spec, _ = yaml.safe_load_all(path.read_text())
    return {"path": path, "spec": spec, "tasks": {t.path: t for t in walk(spec)}}


def test_everything_but_the_plan_runs_only_on_new_data(compiled):
    root = compiled["spec"]["root"]["dag"]["tasks"]
    assert set(root) == {"step-images", "retrain-plan", "condition-1"}
    assert root["condition-1"]["taskInfo"]["name"] == "data-changed"
    condition = root["condition-1"]["triggerPolicy"]["condition"]
    assert condition == "inputs.parameter_values['pipelinechannel--retrain-plan-Output'] == 'train'"
    inside = {t.key for t in compiled["tasks"].values() if t.path.startswith("condition-1/")}
    assert {"retrain-inputs", "build-dataset", "mae", "wsp", "promotion-gate", "report"} <= inside
    # The plan is never served from the cache: it is what tells one run's data from the next.
    assert root["retrain-plan"]["cachingOptions"] == {}
    assert compiled["spec"]["root"].get("outputDefinitions") is None  # no pipeline outputs


def test_the_run_reads_the_plan_and_warm_starts_from_it(compiled):
    tasks = compiled["tasks"]
    build = tasks["condition-1/build-dataset"].spec["inputs"]["parameters"]
    assert build["raw_corpus"]["taskOutputParameter"] == {
        "outputParameterKey": "corpus", "producerTask": "retrain-inputs",
    }  # fmt: skip
    assert build["dataset"]["taskOutputParameter"]["outputParameterKey"] == "dataset"
    mae = tasks["condition-1/mae"].spec["inputs"]["parameters"]
    assert mae["mae_checkpoint"]["taskOutputParameter"]["outputParameterKey"] == "mae_checkpoint"
    wsp = tasks["condition-1/wsp"].spec["inputs"]
    assert wsp["parameters"]["init_model"]["taskOutputParameter"]["outputParameterKey"] == (
        "wsp_init"
    )
    assert "mae_model" in wsp["artifacts"]


def test_the_gate_sits_between_the_evaluations_and_the_report(compiled):
    tasks = compiled["tasks"]
    gate = tasks["condition-1/promotion-gate"].spec
    assert set(gate["inputs"]["artifacts"]) >= {
        "plan", "candidate", "mae_model", "eval_data", "finetune", "linear",
    }  # fmt: skip
    assert gate["inputs"]["artifacts"]["candidate"]["taskOutputArtifact"]["producerTask"] == "wsp"
    assert gate["cachingOptions"] == {}  # it moves the production pointer
    report = tasks["condition-1/report"].spec["inputs"]["artifacts"]["gate"]
    assert report["taskOutputArtifact"] == {
        "outputArtifactKey": "decision", "producerTask": "promotion-gate",
    }  # fmt: skip


def test_retraining_parameters_exist_only_in_the_retraining_pipeline(compiled, tmp_path):
    declared = compiled["spec"]["root"]["inputDefinitions"]["parameters"]
    assert {"registry", *RETRAIN_PARAMETERS} <= set(declared)
    assert not declared["registry"].get("isOptional")
    assert declared["gate_headline"]["defaultValue"] == ["finetune", "linear"]
    plain = tmp_path / "plain.yaml"
    assert main(["--compile", str(plain)]) == 0
    spec, _ = yaml.safe_load_all(plain.read_text())
    assert not {"registry", *RETRAIN_PARAMETERS} & set(
        spec["root"]["inputDefinitions"]["parameters"]
    )
    assert "retrain-plan" not in spec["root"]["dag"]["tasks"]


def test_the_retraining_pipeline_passes_the_backend_rules(compiled):
    require_conformance(pipeline_spec(str(compiled["path"])))  # raises on a violation


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ({"mae_warm_start": "latest"}, "mae_warm_start='latest': choose one of 'none', 'registry'"),
        ({"wsp_warm_start": "registry"}, "wsp_warm_start='registry': choose one of"),
        ({"as_of": "next week"}, "as_of='next week': expected YYYY-MM-DD"),
        ({"gate_headline": []}, "gate_headline: empty"),
        ({"registry": " "}, "registry: empty"),
        ({"wsp_continue_samples": -1}, "wsp_continue_samples: must not be negative"),
    ],
)
def test_bad_retraining_arguments_are_refused(argument, message):
    with pytest.raises(ParameterError, match=re.escape(message)):
        check_arguments(argument)


def test_the_command_line_refuses_them_before_anything_runs(tmp_path, capsys):
    argv = ["--retrain", "--compile", str(tmp_path / "p.yaml"), "--param", "as_of=soon"]
    assert main(argv) == 1
    assert "as_of='soon': expected YYYY-MM-DD" in capsys.readouterr().err
    assert not (tmp_path / "p.yaml").exists()


def test_retrain_is_not_a_sweep_option(capsys):
    with pytest.raises(SystemExit):
        main(["--retrain", "--sweep", "epochs", "--compile"])
    assert "--retrain is not available with --sweep" in capsys.readouterr().err
