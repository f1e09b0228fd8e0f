"""`--param name=value`: values are read as the type the pipeline declares, and a wrong name,
type or missing required parameter is an error that names it."""

import pytest

from mawsflow.orchestration.dag import maws_pipeline
from mawsflow.orchestration.parameters import ParameterError, declared_parameters, parse_arguments


@pytest.fixture(scope="module")
def spec():
    return maws_pipeline().component_spec


REQUIRED = ["raw_corpus=s3://b/c", "dataset=s3://b/d", "eval_dataset=s3://b/e", "eval_name=x"]


def test_values_take_the_declared_types(spec):
    arguments = parse_arguments(
        spec,
        [
            *REQUIRED,
            "nodes=4",
            "mae_epochs=2",
            "samples_per_shard=1000",
            "node_selector={pool: gpu}",
            "lowshot_seeds=[0, 1]",
            "preset=123",  # a string parameter keeps its text
        ],
    )
    assert arguments["nodes"] == 4
    assert arguments["mae_epochs"] == 2.0 and isinstance(arguments["mae_epochs"], float)
    assert arguments["node_selector"] == {"pool": "gpu"}
    assert arguments["lowshot_seeds"] == [0, 1]
    assert arguments["preset"] == "123"


def test_later_values_win_over_defaults(spec):
    arguments = parse_arguments(spec, [*REQUIRED, "backend=trainjob"], {"backend": "local"})
    assert arguments["backend"] == "trainjob"
    assert parse_arguments(spec, REQUIRED, {"backend": "local"})["backend"] == "local"


@pytest.mark.parametrize(
    "text, message",
    [
        ("nodes=1.5", "nodes='1.5': expected integer, got float"),
        ("nodes=true", "nodes='true': expected integer, got bool"),
        ("tolerations={a: 1}", "tolerations='{a: 1}': expected list, got dict"),
        ("node_selector=[1", "node_selector='[1': not a value"),
        ("epochs=3", "--param epochs: the pipeline has no such parameter"),
        ("=3", "expected name=value"),
    ],
)
def test_bad_values_are_named(spec, text, message):
    with pytest.raises(ParameterError, match=message.replace("[", r"\[")):
        parse_arguments(spec, [*REQUIRED, text])


def test_required_parameters_only_for_a_run(spec):
    with pytest.raises(ParameterError, match="missing required pipeline parameter"):
        parse_arguments(spec, ["eval_name=x"])
    assert parse_arguments(spec, ["nodes=2"], complete=False) == {"nodes": 2}
    required = [p.name for p in declared_parameters(spec).values() if p.required]
    assert required == ["raw_corpus", "dataset", "eval_dataset", "eval_name"]
