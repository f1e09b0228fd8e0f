import http.server
import threading
import typing
import urllib.request

import pytest

from mawsflow import metrics


def test_training_metrics_served_over_http(monkeypatch):
    monkeypatch.delenv("MAWSFLOW_METRICS_PORT", raising=False)
    m = metrics.TrainingMetrics(step="mae", rank=0)
    assert metrics.serve(m.registry, None) is None, "off unless configured"
    m.samples.labels(**m.labels()).inc(4096)
    m.loss.labels(**m.labels()).set(0.75)
    m.step_seconds.labels(**m.labels()).observe(0.2)
    port = metrics.serve(m.registry, 0, addr="127.0.0.1")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'mawsflow_samples_total{rank="0",step="mae"} 4096.0' in body
    assert 'mawsflow_loss{rank="0",step="mae"} 0.75' in body
    assert 'mawsflow_step_seconds_bucket{le="0.25",rank="0",step="mae"} 1.0' in body


def test_port_from_environment_is_offset_by_local_rank(monkeypatch):
    m = metrics.TrainingMetrics(step="wsp", rank=1)
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        base = s.getsockname()[1]
    monkeypatch.setenv("MAWSFLOW_METRICS_PORT", str(base - 1))
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert metrics.serve(m.registry, None, addr="127.0.0.1") == base


class _Recorder(http.server.BaseHTTPRequestHandler):
    received: typing.ClassVar[list[tuple[str, str, bytes]]] = []

    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.command, self.path, body))
        self.send_response(200)
        self.end_headers()

    do_POST = do_PUT

    def log_message(self, *args):
        pass


@pytest.fixture
def pushgateway():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    _Recorder.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", _Recorder.received
    server.shutdown()


def test_push_to_gateway_sends_the_registry(pushgateway):
    address, received = pushgateway
    m = metrics.TrainingMetrics(step="build-dataset")
    m.samples.labels(**m.labels()).inc(12)
    assert metrics.push(m.registry, address, job="mawsflow-build-dataset")
    method, path, body = received[0]
    assert method == "PUT" and path == "/metrics/job/mawsflow-build-dataset"
    assert b'mawsflow_samples_total{rank="0",step="build-dataset"} 12.0' in body


def test_push_failure_is_not_fatal(monkeypatch):
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    m = metrics.TrainingMetrics(step="mae")
    assert metrics.push(m.registry, f"127.0.0.1:{closed}", job="x") is False
    monkeypatch.delenv("MAWSFLOW_PUSHGATEWAY", raising=False)
    assert metrics.push(m.registry, None, job="x") is False
