"""`pipelines/maws.py --submit` and `--schedule` through kfp's real client and HTTP layer,
against a local stand-in of the Kubeflow Pipelines v2beta1 REST API that records every call;
and the clear errors for a wrong host, missing credentials and bad parameters."""

import socket

import pytest

from kfp_api_standin import empty_state, serve
from mawsflow.orchestration.command import main

ARGS = [
    "--param", "raw_corpus=s3://data/corpus",
    "--param", "dataset=s3://data/maws-dataset",
    "--param", "eval_dataset=s3://data/eval/in1k",
    "--param", "eval_name=ImageNet-1k",
    "--param", "gpus_per_node=4",
    "--param", 'node_selector={"nvidia.com/gpu.product": "H100"}',
]  # fmt: skip


@pytest.fixture
def api(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp reads a context file under $HOME
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.delenv("MAWSFLOW_KFP_TOKEN", raising=False)
    with serve(empty_state()) as server:
        yield server


def _posts(server, path: str) -> list:
    return [body for method, p, body in server.state["calls"] if method == "POST" and p == path]


def test_submit_uploads_the_pipeline_then_a_version_and_starts_runs(api, capsys):
    assert main(["--submit", "--host", api.url, "--baselines", *ARGS]) == 0
    (upload,) = _posts(api, "/apis/v2beta1/pipelines/upload")
    assert upload["pipeline"] == "maws-with-baselines"  # the compiled pipeline itself
    assert upload["query"]["name"] == "maws-with-baselines"
    (experiment,) = api.state["experiments"]
    assert experiment["display_name"] == "mawsflow"
    (run,) = api.state["runs"]
    assert run["pipeline_version_reference"] == {"pipeline_id": "p-1", "pipeline_version_id": "v-1"}
    assert run["experiment_id"] == experiment["experiment_id"]
    parameters = run["runtime_config"]["parameters"]
    assert parameters["eval_dataset"] == "s3://data/eval/in1k"
    assert parameters["gpus_per_node"] == 4 and parameters["node_selector"] == {
        "nvidia.com/gpu.product": "H100"
    }
    assert "started run" in capsys.readouterr().out

    # A second submission is a new version of the same pipeline, in the same experiment.
    assert main([
        "--submit", "--host", api.url, "--baselines", "--version-name", "v2",
        "--run-name", "second", *ARGS,
    ]) == 0  # fmt: skip
    (version,) = _posts(api, "/apis/v2beta1/pipelines/upload_version")
    assert version["query"] == {
        "name": "v2",
        "pipelineid": "p-1",
        "description": version["query"]["description"],
    }
    assert len(api.state["pipelines"]) == 1 and len(api.state["experiments"]) == 1
    second = api.state["runs"][1]
    assert second["display_name"] == "second"
    assert second["pipeline_version_reference"]["pipeline_version_id"] == "v-2"


def test_schedule_creates_one_run_at_a_time_without_catch_up(api, capsys):
    cron = "0 0 3 * * 0"
    assert main(["--schedule", cron, "--host", api.url, "--service-account", "maws", *ARGS]) == 0
    (recurring,) = api.state["recurring_runs"]
    assert recurring["trigger"]["cron_schedule"]["cron"] == cron
    assert int(recurring["max_concurrency"]) == 1
    assert recurring["no_catchup"] is True
    assert recurring["mode"] == "ENABLE"
    assert recurring["service_account"] == "maws"
    assert recurring["pipeline_version_reference"]["pipeline_id"] == "p-1"
    assert recurring["runtime_config"]["parameters"]["eval_name"] == "ImageNet-1k"
    assert api.state["runs"] == []  # scheduling alone starts no run now
    assert "no catch-up" in capsys.readouterr().out
    assert main(["--schedule", cron, "--catchup", "--host", api.url, *ARGS]) == 0
    assert api.state["recurring_runs"][1]["no_catchup"] is False


def test_token_is_sent_and_missing_credentials_are_a_clear_error(api, monkeypatch, capsys):
    api.state["token"] = "s3cr3t"
    assert main(["--submit", "--host", api.url, *ARGS]) == 1
    err = capsys.readouterr().err
    assert "refused the request (401" in err and "MAWSFLOW_KFP_TOKEN" in err
    assert "Traceback" not in err
    assert api.state["runs"] == []
    monkeypatch.setenv("MAWSFLOW_KFP_TOKEN", "s3cr3t")
    assert main(["--submit", "--host", api.url, *ARGS]) == 0
    assert len(api.state["runs"]) == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_wrong_host_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "no-token"))
    url = f"http://127.0.0.1:{_closed_port()}"
    assert main(["--submit", "--host", url, *ARGS]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach Kubeflow Pipelines at {url}" in err and "Traceback" not in err
    assert main(["--submit", "--host", "ml-pipeline:8888", *ARGS]) == 1
    assert "expected the Kubeflow Pipelines API's URL" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--submit", *ARGS])
    assert "need --host" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--param", "backend=slurm"], "backend='slurm': choose one of"),
        (["--param", "nodes=two"], "nodes='two': expected integer"),
        (["--param", "gpus_per_node=-1"], "gpus_per_node=-1: must not be negative"),
        (["--param", "preset=huge"], "preset='huge': choose one of"),
        (["--param", "arch=vit_z99"], "arch='vit_z99': choose one of"),
        (["--param", "lowshot_grouping=task"], "lowshot_grouping='task': choose one of"),
        (["--param", "transfer_seeds=[]"], "transfer_seeds: empty"),
        (["--param", "transfer_seeds=[0, 1.5]"], "expected a list of integers ≥ 0"),
        (["--param", "lowshot_seeds=[-1]"], "lowshot_seeds=[-1]: expected a list of integers"),
        (["--param", "image_tag=bad/tag"], "image_tag: image tag 'bad/tag' is not a valid tag"),
        (["--param", "learning_rate=1"], "--param learning_rate: the pipeline has no such"),
        (["--param", "backend"], "expected name=value"),
        (["--schedule", "0 3 * * 0"], "takes 6 cron fields"),
    ],
)
def test_bad_parameters_are_refused_before_any_call(api, capsys, extra, message):
    argv = ["--submit", "--host", api.url, *ARGS, *extra]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert api.state["calls"] == []


def test_missing_required_parameters_are_named(api, capsys):
    assert main(["--submit", "--host", api.url, "--param", "eval_name=x"]) == 1
    assert "missing required pipeline parameter(s): raw_corpus, dataset, eval_dataset" in (
        capsys.readouterr().err
    )
    assert api.state["calls"] == []
