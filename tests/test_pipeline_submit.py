"""`pipelines/maws.py --submit` and `--schedule` through kfp's real client and HTTP layer,
against a local stand-in of the Kubeflow Pipelines v2beta1 REST API that records every call;
and the clear errors for a wrong host, missing credentials and bad parameters."""

import json
import re
import socket
import threading
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from test_pipeline_dag import maws

ARGS = [
    "--param", "raw_corpus=s3://data/corpus",
    "--param", "dataset=s3://data/maws-dataset",
    "--param", "eval_dataset=s3://data/eval/in1k",
    "--param", "eval_name=ImageNet-1k",
    "--param", "gpus_per_node=4",
    "--param", 'node_selector={"nvidia.com/gpu.product": "H100"}',
]  # fmt: skip


class PipelinesAPI(BaseHTTPRequestHandler):
    """The v2beta1 calls `--submit` and `--schedule` make, with state on the server. With a
    `token` set on the server, requests without `Authorization: Bearer <token>` get 401."""

    def log_message(self, *args):
        pass

    def _reply(self, body: dict, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        token = self.server.state["token"]
        if token and self.headers.get("Authorization") != f"Bearer {token}":
            self._reply({"error": "missing or wrong token", "code": 16}, 401)
            return False
        return True

    def _route(self) -> tuple[str, dict[str, str]]:
        url = urlparse(self.path)
        return url.path, {k: v[0] for k, v in parse_qs(url.query).items()}

    @staticmethod
    def _named(items: list[dict], query: dict[str, str]) -> list[dict]:
        if "filter" not in query:
            return items
        (predicate,) = json.loads(query["filter"])["predicates"]
        return [i for i in items if i["display_name"] == predicate["stringValue"]]

    def do_GET(self):
        state = self.server.state
        path, query = self._route()
        state["calls"].append(("GET", path, query))
        if not self._authorised():
            return None
        if path == "/apis/v2beta1/healthz":
            return self._reply({"multi_user": False})
        if path == "/apis/v2beta1/pipelines":
            return self._reply({"pipelines": self._named(state["pipelines"], query)})
        if match := re.fullmatch(r"/apis/v2beta1/pipelines/([^/]+)/versions", path):
            versions = [v for v in state["versions"] if v["pipeline_id"] == match[1]]
            versions.sort(key=lambda v: v["created_at"], reverse=True)
            return self._reply({"pipeline_versions": versions})
        if path == "/apis/v2beta1/experiments":
            return self._reply({"experiments": self._named(state["experiments"], query)})
        return self._reply({"error": f"no route {path}"}, 404)

    def _upload(self, query: dict[str, str]) -> dict:
        length = int(self.headers["Content-Length"])
        header = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(header + self.rfile.read(length))
        (part,) = list(message.iter_parts())
        package = yaml.safe_load_all(part.get_content())
        return {"query": query, "pipeline": next(package)["pipelineInfo"]["name"]}

    def _new_version(self, pipeline_id: str, name: str) -> dict:
        versions = self.server.state["versions"]
        version = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": f"v-{len(versions) + 1}",
            "display_name": name,
            "created_at": f"2026-01-01T00:00:{len(versions):02d}Z",
        }
        versions.append(version)
        return version

    def do_POST(self):
        state = self.server.state
        path, query = self._route()
        if path.startswith("/apis/v2beta1/pipelines/upload"):
            body = self._upload(query)
        else:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        state["calls"].append(("POST", path, body))
        if not self._authorised():
            return None
        if path == "/apis/v2beta1/pipelines/upload":
            pipeline = {
                "pipeline_id": f"p-{len(state['pipelines']) + 1}",
                "display_name": query["name"],
            }
            state["pipelines"].append(pipeline)
            self._new_version(pipeline["pipeline_id"], query["name"])
            return self._reply(pipeline)
        if path == "/apis/v2beta1/pipelines/upload_version":
            return self._reply(self._new_version(query["pipelineid"], query["name"]))
        if path == "/apis/v2beta1/experiments":
            body["experiment_id"] = f"e-{len(state['experiments']) + 1}"
            state["experiments"].append(body)
            return self._reply(body)
        if path == "/apis/v2beta1/runs":
            body["run_id"] = f"r-{len(state['runs']) + 1}"
            state["runs"].append(body)
            return self._reply(body)
        if path == "/apis/v2beta1/recurringruns":
            body["recurring_run_id"] = f"rr-{len(state['recurring_runs']) + 1}"
            state["recurring_runs"].append(body)
            return self._reply(body)
        return self._reply({"error": f"no route {path}"}, 404)


@pytest.fixture
def api(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp reads a context file under $HOME
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.delenv("MAWSFLOW_KFP_TOKEN", raising=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), PipelinesAPI)
    server.state = {
        "calls": [],
        "token": None,
        "pipelines": [],
        "versions": [],
        "experiments": [],
        "runs": [],
        "recurring_runs": [],
    }
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _posts(server, path: str) -> list:
    return [body for method, p, body in server.state["calls"] if method == "POST" and p == path]


def test_submit_uploads_the_pipeline_then_a_version_and_starts_runs(api, capsys):
    assert maws.main(["--submit", "--host", api.url, "--baselines", *ARGS]) == 0
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
    assert maws.main([
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
    assert (
        maws.main(["--schedule", cron, "--host", api.url, "--service-account", "maws", *ARGS]) == 0
    )
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
    assert maws.main(["--schedule", cron, "--catchup", "--host", api.url, *ARGS]) == 0
    assert api.state["recurring_runs"][1]["no_catchup"] is False


def test_token_is_sent_and_missing_credentials_are_a_clear_error(api, monkeypatch, capsys):
    api.state["token"] = "s3cr3t"
    assert maws.main(["--submit", "--host", api.url, *ARGS]) == 1
    err = capsys.readouterr().err
    assert "refused the request (401" in err and "MAWSFLOW_KFP_TOKEN" in err
    assert "Traceback" not in err
    assert api.state["runs"] == []
    monkeypatch.setenv("MAWSFLOW_KFP_TOKEN", "s3cr3t")
    assert maws.main(["--submit", "--host", api.url, *ARGS]) == 0
    assert len(api.state["runs"]) == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_wrong_host_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "no-token"))
    url = f"http://127.0.0.1:{_closed_port()}"
    assert maws.main(["--submit", "--host", url, *ARGS]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach Kubeflow Pipelines at {url}" in err and "Traceback" not in err
    assert maws.main(["--submit", "--host", "ml-pipeline:8888", *ARGS]) == 1
    assert "expected the Kubeflow Pipelines API's URL" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        maws.main(["--submit", *ARGS])
    assert "need --host" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--param", "backend=slurm"], "backend='slurm': choose one of"),
        (["--param", "nodes=two"], "nodes='two': expected integer"),
        (["--param", "gpus_per_node=-1"], "gpus_per_node=-1: must not be negative"),
        (["--param", "preset=huge"], "preset='huge': choose one of"),
        (["--param", "arch=vit_z99"], "arch='vit_z99': choose one of"),
        (["--param", "image_tag=bad/tag"], "image_tag: image tag 'bad/tag' is not a valid tag"),
        (["--param", "learning_rate=1"], "--param learning_rate: the pipeline has no such"),
        (["--param", "backend"], "expected name=value"),
        (["--schedule", "0 3 * * 0"], "takes 6 cron fields"),
    ],
)
def test_bad_parameters_are_refused_before_any_call(api, capsys, extra, message):
    argv = ["--submit", "--host", api.url, *ARGS, *extra]
    assert maws.main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert api.state["calls"] == []


def test_missing_required_parameters_are_named(api, capsys):
    assert maws.main(["--submit", "--host", api.url, "--param", "eval_name=x"]) == 1
    assert "missing required pipeline parameter(s): raw_corpus, dataset, eval_dataset" in (
        capsys.readouterr().err
    )
    assert api.state["calls"] == []
