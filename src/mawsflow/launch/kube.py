"""Running a training job as a Kubernetes custom resource and waiting for it to end.

Shared by the PyTorchJob and TrainJob backends, which differ only in their manifest and in how
their status reads (a `JobKind`). The launcher

- creates the job, or re-attaches to it when a previous attempt of the same pipeline task made
  it (same deterministic name, same spec hash): a retried launcher never starts a second job;
- waits with watches: each watch lasts a bounded window and is renewed from the last
  resourceVersion; an expired version (410 Gone) re-reads the job, and dropped connections
  reconnect with backoff, all within the overall timeout;
- streams the master pod's logs to stdout meanwhile (mawsflow.launch.podlogs);
- fails with the job's own failure reason and message, notices the job being deleted under it,
  and deletes or keeps the job according to the cleanup policy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from mawsflow.launch.podlogs import MasterLogStreamer, error_summary

log = logging.getLogger(__name__)

SPEC_HASH_ANNOTATION = "mawsflow.dev/spec-hash"
_CONNECT_TIMEOUT_S = 10.0
_MAX_BACKOFF_S = 30.0
_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

Phase = Literal["Pending", "Running", "Succeeded", "Failed"]
Cleanup = Literal["delete", "delete-on-success", "keep"]


class LaunchError(RuntimeError):
    """The job could not be run to success; the message says what happened to it."""


class JobFailed(LaunchError):
    def __init__(self, job: str, reason: str, message: str) -> None:
        super().__init__(f"{job} failed: {reason or 'no reason given'}: {message or '-'}")
        self.reason = reason
        self.message = message


class JobTimedOut(LaunchError):
    pass


class JobDisappeared(LaunchError):
    pass


class JobConflict(LaunchError):
    pass


@dataclass(frozen=True)
class JobStatus:
    phase: Phase
    reason: str = ""
    message: str = ""

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


@dataclass(frozen=True)
class JobKind:
    """What the shared launcher needs to know about one job CRD."""

    kind: str
    group: str
    version: str
    plural: str
    container: str  # the training container's name, for its logs
    status_of: Callable[[Mapping[str, Any]], JobStatus]
    master_pod_selector: Callable[[Mapping[str, Any]], str]  # label selector, from the job


def true_condition(job: Mapping[str, Any], condition_type: str) -> Mapping[str, Any] | None:
    """The job's status condition of `condition_type` when its status is "True"."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == condition_type and condition.get("status") == "True":
            return condition
    return None


def spec_hash(manifest: Mapping[str, Any]) -> str:
    """A digest of the manifest's spec, stored on the job so a re-attaching launcher can tell
    its own job from a different one that happens to carry the same name."""
    canonical = json.dumps(manifest["spec"], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """In a pod, the service account's credentials; elsewhere, the kubeconfig."""
    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration)
    return config.new_client_from_config(config_file=kubeconfig, context=context)


def current_namespace(kubeconfig: str | None = None, context: str | None = None) -> str:
    """The pod's own namespace in a cluster, else the kubeconfig context's, else "default"."""
    if kubeconfig is None and context is None and _SERVICE_ACCOUNT_NAMESPACE.is_file():
        return _SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except (config.ConfigException, OSError):
        return "default"
    chosen = next((c for c in contexts if c["name"] == context), None) if context else active
    return ((chosen or {}).get("context") or {}).get("namespace") or "default"


class KubeJobLauncher:
    """Create-or-attach, wait, stream logs and clean up one kind of training job."""

    def __init__(
        self,
        api: client.ApiClient,
        kind: JobKind,
        namespace: str,
        *,
        out: TextIO | None = None,
        watch_window_s: int = 300,
        log_grace_s: float = 30.0,
    ) -> None:
        self.kind = kind
        self.namespace = namespace
        self.out = out or sys.stdout
        self.watch_window_s = watch_window_s
        self.log_grace_s = log_grace_s
        self._api = api
        self._custom = client.CustomObjectsApi(api)

    def run(
        self, manifest: Mapping[str, Any], *, timeout_s: float | None, cleanup: Cleanup
    ) -> JobStatus:
        """Run the job to its end. Returns its Succeeded status; raises JobFailed, JobTimedOut,
        JobDisappeared or JobConflict otherwise."""
        job, _ = self.submit(manifest)
        name = job["metadata"]["name"]
        logs = MasterLogStreamer(
            self._api,
            self.namespace,
            self.kind.master_pod_selector(job),
            self.kind.container,
            self.out,
            watch_window_s=self.watch_window_s,
        )
        logs.start()
        try:
            status = self.wait(name, timeout_s=timeout_s)
        except JobTimedOut:
            if cleanup != "keep":
                self.delete(name)
            raise
        finally:
            logs.finish(self.log_grace_s)
        if status.phase == "Failed":
            if cleanup == "delete":
                self.delete(name)
            raise JobFailed(self._describe(name), status.reason, status.message)
        if cleanup != "keep":
            self.delete(name)
        return status

    def submit(self, manifest: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create the job, or re-attach to the one an earlier attempt created.

        Returns (job, attached). A job of the same name made from a different spec, or not made
        by mawsflow, is a JobConflict: re-attaching to it would report someone else's result.
        """
        body = json.loads(json.dumps(manifest))
        digest = spec_hash(body)
        body["metadata"].setdefault("annotations", {})[SPEC_HASH_ANNOTATION] = digest
        name = body["metadata"]["name"]
        try:
            created = self._custom.create_namespaced_custom_object(
                self.kind.group, self.kind.version, self.namespace, self.kind.plural, body
            )
        except ApiException as exc:
            if exc.status != 409:
                raise
        else:
            log.info("created %s", self._describe(name))
            return created, False
        existing = self._get(name)
        theirs = ((existing.get("metadata") or {}).get("annotations") or {}).get(
            SPEC_HASH_ANNOTATION
        )
        if theirs != digest:
            raise JobConflict(
                f"{self._describe(name)} already exists but was made from "
                f"{'a different spec' if theirs else 'outside mawsflow'}; delete it or run "
                "under another task name"
            )
        log.info("re-attaching to existing %s", self._describe(name))
        return existing, True

    def wait(self, name: str, *, timeout_s: float | None) -> JobStatus:
        """Watch the job until it succeeds or fails; returns that status."""
        deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
        job = self._get(name)
        status = self._observe(name, job, None)
        version = (job.get("metadata") or {}).get("resourceVersion")
        backoff = 0.5
        while not status.finished:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise JobTimedOut(
                    f"{self._describe(name)} did not finish within {timeout_s:g} s "
                    f"(last seen {status.phase}{_why(status)})"
                )
            window = self.watch_window_s
            if remaining < window:
                window = max(1, math.ceil(remaining))
            try:
                for event_type, obj in self._watch(name, version, window):
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    if event_type == "BOOKMARK":
                        continue
                    if event_type == "DELETED":
                        raise JobDisappeared(f"{self._describe(name)} was deleted while running")
                    status = self._observe(name, obj, status)
                    if status.finished or time.monotonic() >= deadline:
                        break
                backoff = 0.5
            except ApiException as exc:
                if exc.status == 410:
                    # Our resourceVersion is older than the server keeps: read afresh, go on.
                    log.debug("watch of %s expired (410 Gone); re-reading", name)
                    job = self._get(name)
                    version = (job.get("metadata") or {}).get("resourceVersion")
                    status = self._observe(name, job, status)
                    continue
                if not _transient(exc):
                    raise
                backoff = self._pause(name, exc, backoff, deadline)
            except urllib3.exceptions.ReadTimeoutError:
                # The window elapsed without the server closing the stream: just renew it.
                continue
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                backoff = self._pause(name, exc, backoff, deadline)
        return status

    def delete(self, name: str) -> None:
        try:
            self._custom.delete_namespaced_custom_object(
                self.kind.group,
                self.kind.version,
                self.namespace,
                self.kind.plural,
                name,
                body=client.V1DeleteOptions(propagation_policy="Background"),
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
        log.info("deleted %s", self._describe(name))

    def _watch(self, name: str, version: str | None, window: int) -> Iterator[tuple[str, dict]]:
        kwargs: dict[str, Any] = {
            "field_selector": f"metadata.name={name}",
            "allow_watch_bookmarks": True,
            "timeout_seconds": window,
            # A little past the server's own timeout, so a silent connection cannot hang us.
            "_request_timeout": (_CONNECT_TIMEOUT_S, window + 1),
        }
        if version:
            kwargs["resource_version"] = version
        stream = watch.Watch().stream(
            self._custom.list_namespaced_custom_object,
            self.kind.group,
            self.kind.version,
            self.namespace,
            self.kind.plural,
            **kwargs,
        )
        for event in stream:
            obj = event["raw_object"]
            # The field selector already narrows the watch; this guards servers that ignore it.
            if event["type"] == "BOOKMARK" or (obj.get("metadata") or {}).get("name") == name:
                yield event["type"], obj

    def _get(self, name: str) -> dict[str, Any]:
        try:
            return self._custom.get_namespaced_custom_object(
                self.kind.group, self.kind.version, self.namespace, self.kind.plural, name
            )
        except ApiException as exc:
            if exc.status == 404:
                raise JobDisappeared(f"{self._describe(name)} does not exist (deleted?)") from None
            raise

    def _observe(self, name: str, job: Mapping[str, Any], previous: JobStatus | None) -> JobStatus:
        status = self.kind.status_of(job)
        if status != previous:
            log.info("%s: %s%s", self._describe(name), status.phase, _why(status))
        return status

    def _pause(self, name: str, exc: Exception, backoff: float, deadline: float) -> float:
        delay = min(backoff, max(0.0, deadline - time.monotonic()))
        log.warning(
            "watch of %s interrupted (%s); reconnecting in %.1f s", name, error_summary(exc), delay
        )
        time.sleep(delay)
        return min(backoff * 2, _MAX_BACKOFF_S)

    def _describe(self, name: str) -> str:
        return f"{self.kind.kind} {self.namespace}/{name}"


def _transient(exc: ApiException) -> bool:
    return exc.status in (429, 500, 502, 503, 504) or exc.status is None or exc.status == 0


def _why(status: JobStatus) -> str:
    detail = ": ".join(part for part in (status.reason, status.message) if part)
    return f" ({detail})" if detail else ""
