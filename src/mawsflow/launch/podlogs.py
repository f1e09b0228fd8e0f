"""Streaming a training job's master pod logs to the launcher's stdout.

A background thread watches the pods matching the master's label selector. Whenever the training
container has started (its first run, a restart, or a pod the operator recreated) it follows that
container's log to its end, so a pipeline's log view shows the training output live. Following
blocks only this thread, never the wait for the job; losing the logs (no permission to read
pods, a broken stream) costs a warning, never the launch. When the launch ends, the thread's
open connection is shut down, so nothing is left reading from the API server.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import logging
import threading
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 10.0
_MAX_BACKOFF_S = 30.0


def container_log_key(pod: Mapping[str, Any], container: str) -> tuple[str, int] | None:
    """(pod uid, restart count) once `container` has started, so each container run is followed
    exactly once; None while it has not started and has no log to read."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") != container:
            continue
        state = status.get("state") or {}
        if "running" in state or "terminated" in state:
            meta = pod.get("metadata") or {}
            return meta.get("uid") or meta["name"], int(status.get("restartCount") or 0)
    return None


class MasterLogStreamer:
    """Copies the master container's logs to `out` while a job runs."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        selector: str,
        container: str,
        out: TextIO,
        *,
        watch_window_s: int = 300,
    ) -> None:
        self._core = client.CoreV1Api(api)
        self._namespace = namespace
        self._selector = selector
        self._container = container
        self._out = out
        self._window = watch_window_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._streamed: set[tuple[str, int]] = set()
        self._following = False
        self._closing = False  # set once finish() has given up on the open connection
        # The watch and, while following, the log stream: what finish() must interrupt.
        self._open: list[urllib3.BaseHTTPResponse] = []
        self._thread = threading.Thread(target=self._run, name="master-logs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def finish(self, grace_s: float) -> None:
        """Stop. A log being followed may drain for up to `grace_s`; if the job ended before its
        master container was ever seen, print that container's log once now."""
        with self._lock:
            self._stop.set()
            following, streamed_any = self._following, bool(self._streamed)
        if following:
            self._thread.join(grace_s)
        with self._lock:
            self._closing = True
            for response in self._open:
                _shutdown(response)
        self._thread.join(_CONNECT_TIMEOUT_S)
        if not following and not streamed_any:
            self._print_once()

    def _run(self) -> None:
        version: str | None = None
        backoff = 0.5
        while not self._stop.is_set():
            try:
                for event_type, pod in self._pod_events(version):
                    version = (pod.get("metadata") or {}).get("resourceVersion") or version
                    if event_type in ("ADDED", "MODIFIED"):
                        key = container_log_key(pod, self._container)
                        if key is not None and self._claim(key):
                            self._follow(pod["metadata"]["name"])
                    if self._stop.is_set():
                        return
                backoff = 0.5
            except ApiException as exc:
                if exc.status == 410:
                    version = None  # expired: start over from the current state
                    continue
                if exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
                    log.warning(
                        "cannot read the master pod's logs (%s %s); the job is still waited on",
                        exc.status,
                        exc.reason,
                    )
                    return
                backoff = self._pause(exc, backoff)
            except urllib3.exceptions.ReadTimeoutError:
                continue  # a quiet window the server did not close itself: renew the watch
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                backoff = self._pause(exc, backoff)

    def _pod_events(self, version: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
        """One watch request's events as (type, pod dict). Plain dicts rather than V1Pod models,
        which reject fields that newer servers leave out."""
        kwargs: dict[str, Any] = {
            "label_selector": self._selector,
            "timeout_seconds": self._window,
            "_request_timeout": (_CONNECT_TIMEOUT_S, self._window + 1),
        }
        if version:
            kwargs["resource_version"] = version
        response = self._core.list_namespaced_pod(
            self._namespace, watch=True, _preload_content=False, **kwargs
        )
        with self._tracked(response):
            for line in iter_resp_lines(response):
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise ApiException(
                        status=status.get("code"),
                        reason=f"{status.get('reason')}: {status.get('message')}",
                    )
                yield event["type"], event["object"]

    def _claim(self, key: tuple[str, int]) -> bool:
        with self._lock:
            if self._stop.is_set() or key in self._streamed:
                return False
            self._streamed.add(key)
            self._following = True
            return True

    def _follow(self, pod: str) -> None:
        try:
            response = self._core.read_namespaced_pod_log(
                pod,
                self._namespace,
                container=self._container,
                follow=True,
                _preload_content=False,
                # No read timeout: training may print nothing for a long time.
                _request_timeout=(_CONNECT_TIMEOUT_S, None),
            )
            with self._tracked(response):
                self._copy(response)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            if not self._stop.is_set():
                log.warning("log stream of pod %s broke off: %s", pod, error_summary(exc))
        finally:
            with self._lock:
                self._following = False

    @contextlib.contextmanager
    def _tracked(self, response: urllib3.BaseHTTPResponse) -> Iterator[None]:
        """Register `response` as a connection `finish` shuts down to unblock this thread."""
        with self._lock:
            self._open.append(response)
            if self._closing:
                _shutdown(response)
        try:
            yield
        finally:
            with self._lock:
                self._open.remove(response)
            response.release_conn()

    def _print_once(self) -> None:
        try:
            listing = self._core.list_namespaced_pod(
                self._namespace,
                label_selector=self._selector,
                _preload_content=False,
                _request_timeout=(_CONNECT_TIMEOUT_S, 60),
            )
            for pod in json.loads(listing.data).get("items") or []:
                key = container_log_key(pod, self._container)
                if key is None or key in self._streamed:
                    continue
                self._streamed.add(key)
                response = self._core.read_namespaced_pod_log(
                    pod["metadata"]["name"],
                    self._namespace,
                    container=self._container,
                    _preload_content=False,
                    _request_timeout=(_CONNECT_TIMEOUT_S, 60),
                )
                try:
                    self._copy(response)
                finally:
                    response.release_conn()
                return
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            log.warning(
                "could not read the master pod's logs after the job ended: %s", error_summary(exc)
            )

    def _copy(self, response: urllib3.BaseHTTPResponse) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for chunk in response.stream(amt=None, decode_content=True):
            self._out.write(decoder.decode(chunk))
            self._out.flush()
        tail = decoder.decode(b"", final=True)
        if tail:
            self._out.write(tail)
            self._out.flush()

    def _pause(self, exc: Exception, backoff: float) -> float:
        log.debug("pod watch for %s interrupted (%s); retrying", self._selector, error_summary(exc))
        self._stop.wait(backoff)
        return min(backoff * 2, _MAX_BACKOFF_S)


def error_summary(exc: Exception) -> str:
    """A one-line account of an API error: an ApiException's str() carries the whole response
    body, where status and reason say enough."""
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}"
    return str(exc)


def _shutdown(response: urllib3.BaseHTTPResponse) -> None:
    # Shutting the socket down (not closing it) is what wakes a read blocked in another thread.
    with contextlib.suppress(ValueError, RuntimeError, OSError):
        response.shutdown()
