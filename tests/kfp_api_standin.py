"""An in-memory stand-in for the Kubeflow Pipelines v2beta1 REST calls our code makes
(`pipelines/maws.py --submit/--schedule` and the chart's recurring-run bootstrap), so that both
run through kfp's real client and HTTP layer. State lives on the server and every call is
recorded in `state["calls"]`. With `state["token"]` set, requests without
`Authorization: Bearer <token>` get 401."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml


def empty_state() -> dict[str, Any]:
    return {
        "calls": [],
        "token": None,
        "pipelines": [],
        "versions": [],
        "experiments": [],
        "runs": [],
        "recurring_runs": [],
    }


class PipelinesAPI(BaseHTTPRequestHandler):
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

    def _next_id(self, prefix: str) -> str:
        # Ids are never reused, also after a delete (as on the real server).
        return f"{prefix}-{len(self.server.state['calls'])}"

    def do_GET(self):
        state = self.server.state
        path, query = self._route()
        state["calls"].append(("GET", path, query))
        if not self._authorised():
            return None
        if path == "/apis/v2beta1/healthz":
            return self._reply({"multi_user": False})
        if path == "/apis/v2beta1/pipelines":
            pipelines = [
                p for p in state["pipelines"] if p.get("namespace") == query.get("namespace")
            ]
            return self._reply({"pipelines": self._named(pipelines, query)})
        if match := re.fullmatch(r"/apis/v2beta1/pipelines/([^/]+)/versions", path):
            versions = [v for v in state["versions"] if v["pipeline_id"] == match[1]]
            if query.get("sort_by") == "created_at desc":
                versions = sorted(versions, key=lambda v: v["created_at"], reverse=True)
            versions = self._named(versions, query)
            if "page_size" in query:
                versions = versions[: int(query["page_size"])]
            return self._reply({"pipeline_versions": versions})
        if path == "/apis/v2beta1/experiments":
            return self._reply({"experiments": self._named(state["experiments"], query)})
        if path == "/apis/v2beta1/recurringruns":
            runs = [
                r for r in state["recurring_runs"] if r["experiment_id"] == query["experiment_id"]
            ]
            # The one camelCase field of this API (recurringRuns in the proto).
            return self._reply({"recurringRuns": self._named(runs, query)})
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
            body["experiment_id"] = self._next_id("e")
            state["experiments"].append(body)
            return self._reply(body)
        if path == "/apis/v2beta1/runs":
            body["run_id"] = self._next_id("r")
            state["runs"].append(body)
            return self._reply(body)
        if path == "/apis/v2beta1/recurringruns":
            body["recurring_run_id"] = self._next_id("rr")
            state["recurring_runs"].append(body)
            return self._reply(body)
        return self._reply({"error": f"no route {path}"}, 404)

    def do_DELETE(self):
        state = self.server.state
        path, _ = self._route()
        state["calls"].append(("DELETE", path, None))
        if not self._authorised():
            return None
        if match := re.fullmatch(r"/apis/v2beta1/recurringruns/([^/]+)", path):
            state["recurring_runs"] = [
                r for r in state["recurring_runs"] if r["recurring_run_id"] != match[1]
            ]
            return self._reply({})
        return self._reply({"error": f"no route {path}"}, 404)


@contextmanager
def serve(state: dict[str, Any]) -> Iterator[ThreadingHTTPServer]:
    """The stand-in on a free loopback port, with `state`; `server.url` is its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), PipelinesAPI)
    server.state = state
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
