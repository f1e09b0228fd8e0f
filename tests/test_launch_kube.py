"""The Kubernetes launchers against a real Kubernetes API over HTTP (kmock's emulator).

The launcher runs in a worker thread with the real `kubernetes` client, exactly as in a pipeline
step; the test body plays the operator: it waits for the job to appear, creates the master pod
and serves its log, moves the job's status through Running to Succeeded or Failed, deletes it,
or never finishes it.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import kmock
import pytest
import pytest_asyncio
from aiohttp.test_utils import RawTestServer
from kubernetes import client

from mawsflow.launch.kube import (
    SPEC_HASH_ANNOTATION,
    JobConflict,
    JobDisappeared,
    JobFailed,
    JobKind,
    JobTimedOut,
    KubeJobLauncher,
)
from mawsflow.launch.naming import JobIdentity
from mawsflow.launch.pytorchjob import PYTORCHJOB, build_pytorchjob
from mawsflow.launch.spec import LaunchSpec, S3Secret, validate
from mawsflow.launch.trainjob import TRAINJOB, build_trainjob
from mawsflow.steps import launch as launch_step

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

NS = "ml"
BACKENDS: dict[str, tuple[Callable[..., dict[str, Any]], JobKind]] = {
    "pytorchjob": (build_pytorchjob, PYTORCHJOB),
    "trainjob": (build_trainjob, TRAINJOB),
}
FAILURE = {
    "pytorchjob": (
        "PyTorchJobFailed",
        "PyTorchJob ml/x is failed because 1 Master replica(s) failed.",
    ),
    "trainjob": ("FailedJobs", "jobset failed due to a failed job: node-0 exited with code 3"),
}


class _KubeClientQueryServer(RawTestServer):
    """The kubernetes client sends `watch=True` (a Python bool); the real API server parses it
    with Go's strconv.ParseBool, but kmock only recognises `watch=true`. Normalise it."""

    def __init__(self, handler: Callable[..., Any], **kwargs: Any) -> None:
        async def normalised(request: Any) -> Any:
            if request.query.get("watch") == "True":
                request = request.clone(rel_url=request.rel_url.update_query(watch="true"))
            return await handler(request)

        super().__init__(normalised, **kwargs)


@pytest_asyncio.fixture
async def k8s() -> AsyncIterator[kmock.KubernetesEmulator]:
    async with (
        kmock.KubernetesEmulator() as emulator,
        kmock.Server(emulator, server_cls=_KubeClientQueryServer),
    ):
        yield emulator


def spec() -> LaunchSpec:
    s = LaunchSpec(
        command=["mawsflow", "mae", "--preset", "tiny"],
        image="registry.example/mawsflow:test",
        nodes=2,
        procs_per_node=2,
        s3=S3Secret(secret_name="s3-creds"),
    )
    s.pod.shm_size = "1Gi"
    return s


def launcher(k8s: kmock.KubernetesEmulator, kind: JobKind, out: io.StringIO, **kw: Any):
    configuration = client.Configuration()
    configuration.host = str(k8s.url).rstrip("/")
    return KubeJobLauncher(client.ApiClient(configuration), kind, NS, out=out, **kw)


def jobs_path(kind: JobKind) -> str:
    return f"/apis/{kind.group}/{kind.version}/namespaces/{NS}/{kind.plural}"


def job_path(kind: JobKind, name: str) -> str:
    return f"{jobs_path(kind)}/{name}"


async def wait_until(predicate: Callable[[], Any], what: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def job_exists(k8s: kmock.KubernetesEmulator, kind: JobKind, name: str) -> bool:
    async with k8s.get(job_path(kind, name)) as resp:
        return resp.status == 200


async def set_status(k8s, kind: JobKind, name: str, status: dict[str, Any]) -> None:
    async with k8s.patch(job_path(kind, name) + "/status", json={"status": status}) as resp:
        assert resp.status == 200, await resp.text()


def condition(kind: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2025-01-01T00:00:00Z",
    }


def running(backend: str) -> dict[str, Any]:
    if backend == "pytorchjob":
        return {"conditions": [condition("Created"), condition("Running", "PyTorchJobRunning")]}
    return {
        "conditions": [],
        "jobsStatus": [
            {"name": "node", "active": 2, "ready": 2, "failed": 0, "succeeded": 0, "suspended": 0}
        ],
    }


def succeeded(backend: str) -> dict[str, Any]:
    if backend == "pytorchjob":
        return {"conditions": [condition("Succeeded", "PyTorchJobSucceeded", "done")]}
    return {"conditions": [condition("Complete", "JobSetCompleted", "jobset completed")]}


def failed(backend: str) -> dict[str, Any]:
    reason, message = FAILURE[backend]
    return {"conditions": [condition("Failed", reason, message)]}


def master_pod(backend: str, job: str) -> dict[str, Any]:
    if backend == "pytorchjob":
        name = f"{job}-master-0"
        labels = {
            "training.kubeflow.org/job-name": job,
            "training.kubeflow.org/replica-type": "master",
            "training.kubeflow.org/replica-index": "0",
        }
    else:
        name = f"{job}-node-0-0-x7k2p"
        labels = {
            "jobset.sigs.k8s.io/jobset-name": job,
            "jobset.sigs.k8s.io/replicatedjob-name": "node",
            "batch.kubernetes.io/job-completion-index": "0",
        }
    container = BACKENDS[backend][1].container
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "labels": labels},
        "spec": {"containers": [{"name": container, "image": "registry.example/mawsflow:test"}]},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": container,
                    "image": "registry.example/mawsflow:test",
                    "imageID": "registry.example/mawsflow@sha256:" + "0" * 64,
                    "restartCount": 0,
                    "ready": True,
                    "started": True,
                    "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}},
                }
            ],
        },
    }


def start(k8s, backend: str, out: io.StringIO, **kw: Any):
    """Build the job and run the launcher in a thread, as a pipeline step would."""
    build, kind = BACKENDS[backend]
    s = spec()
    validate(s, backend)
    manifest = build(s, JobIdentity("run-7f3a", "mae"), NS)
    timeout_s = kw.pop("timeout_s", 30)
    cleanup = kw.pop("cleanup", "delete-on-success")
    kw.setdefault("log_grace_s", 2)
    task = asyncio.create_task(
        asyncio.to_thread(
            launcher(k8s, kind, out, **kw).run, manifest, timeout_s=timeout_s, cleanup=cleanup
        )
    )
    return task, manifest, kind


def creates(k8s: kmock.KubernetesEmulator, kind: JobKind) -> int:
    return sum(
        1
        for r in k8s
        if r.method == kmock.method.POST and r.resource and r.resource.plural == kind.plural
    )


@pytest.mark.parametrize("backend", ["pytorchjob", "trainjob"])
async def test_success_streams_master_logs_and_deletes_the_job(k8s, backend):
    out = io.StringIO()
    log_served = threading.Event()

    def serve_log(request: Any) -> bytes:
        log_served.set()
        return b"step 1 loss 6.93\nstep 2 loss 6.12\ntraining done\n"

    task, manifest, kind = start(k8s, backend, out)
    name = manifest["metadata"]["name"]
    pod = master_pod(backend, name)
    k8s[f"get /api/v1/namespaces/{NS}/pods/{pod['metadata']['name']}/log"] << serve_log

    await wait_until(lambda: job_exists(k8s, kind, name), "the job to be created")
    await set_status(k8s, kind, name, running(backend))
    async with k8s.post(f"/api/v1/namespaces/{NS}/pods", json=pod) as resp:
        assert resp.status == 200
    await wait_until(lambda: asyncio.sleep(0, log_served.is_set()), "the log to be requested")
    await set_status(k8s, kind, name, succeeded(backend))

    status = await task
    assert status.phase == "Succeeded"
    assert out.getvalue() == "step 1 loss 6.93\nstep 2 loss 6.12\ntraining done\n"
    assert creates(k8s, kind) == 1
    assert not await job_exists(k8s, kind, name), "delete-on-success must delete the job"
    posted = next(
        r for r in k8s if r.method == kmock.method.POST and r.resource.plural == kind.plural
    )
    assert posted.data["spec"] == manifest["spec"]
    assert posted.data["metadata"]["annotations"][SPEC_HASH_ANNOTATION]


@pytest.mark.parametrize("backend", ["pytorchjob", "trainjob"])
async def test_failure_reports_the_jobs_own_reason_and_keeps_the_job(k8s, backend):
    task, manifest, kind = start(k8s, backend, io.StringIO())
    name = manifest["metadata"]["name"]
    await wait_until(lambda: job_exists(k8s, kind, name), "the job to be created")
    await set_status(k8s, kind, name, running(backend))
    await set_status(k8s, kind, name, failed(backend))

    with pytest.raises(JobFailed) as info:
        await task
    reason, message = FAILURE[backend]
    assert info.value.reason == reason
    assert info.value.message == message
    assert reason in str(info.value) and message in str(info.value)
    assert await job_exists(k8s, kind, name), "delete-on-success keeps a failed job"


async def test_restarted_launcher_reattaches_instead_of_creating_a_second_job(k8s):
    kind = PYTORCHJOB
    out = io.StringIO()
    manifest = build_pytorchjob(spec(), JobIdentity("run-7f3a", "mae"), NS)
    name = manifest["metadata"]["name"]

    # The first launcher created the job, then its pod was killed before the job ended.
    first, attached = await asyncio.to_thread(launcher(k8s, kind, out).submit, manifest)
    assert not attached and first["metadata"]["name"] == name
    await set_status(k8s, kind, name, running("pytorchjob"))

    # The retried launcher re-attaches and follows the same job; its 1 s watch windows end
    # without events, so it also has to renew its watch.
    second = launcher(k8s, kind, out, watch_window_s=1, log_grace_s=0)
    task = asyncio.create_task(
        asyncio.to_thread(second.run, manifest, timeout_s=30, cleanup="keep")
    )
    await asyncio.sleep(2.5)
    assert not task.done()
    await set_status(k8s, kind, name, succeeded("pytorchjob"))
    assert (await task).phase == "Succeeded"

    # A third attempt after the job ended reports its result without running anything again.
    third = launcher(k8s, kind, out, log_grace_s=0)
    status = await asyncio.to_thread(third.run, manifest, timeout_s=30, cleanup="keep")
    assert status.phase == "Succeeded"

    assert creates(k8s, kind) == 3  # every attempt asks; the server created the job once
    assert len([key for key in k8s.objects if key[0].plural == kind.plural]) == 1
    watches = [
        r for r in k8s if r.action == kmock.action.WATCH and r.resource.plural == kind.plural
    ]
    assert len(watches) >= 2, "the idle watch must have been renewed"
    assert all(r.params["fieldSelector"] == f"metadata.name={name}" for r in watches)


async def test_existing_job_from_another_spec_is_a_conflict(k8s):
    kind = PYTORCHJOB
    manifest = build_pytorchjob(spec(), JobIdentity("run-7f3a", "mae"), NS)
    stranger = json.loads(json.dumps(manifest))
    stranger["spec"]["nprocPerNode"] = "8"
    async with k8s.post(jobs_path(kind), json=stranger) as resp:
        assert resp.status == 200

    with pytest.raises(JobConflict, match="outside mawsflow"):
        await asyncio.to_thread(
            launcher(k8s, kind, io.StringIO()).run, manifest, timeout_s=5, cleanup="delete"
        )
    assert await job_exists(k8s, kind, manifest["metadata"]["name"]), "never delete theirs"


async def test_timeout_raises_and_deletes_the_still_running_job(k8s):
    started = time.monotonic()
    task, manifest, kind = start(k8s, "pytorchjob", io.StringIO(), timeout_s=1.5, log_grace_s=0)
    name = manifest["metadata"]["name"]
    await wait_until(lambda: job_exists(k8s, kind, name), "the job to be created")
    await set_status(k8s, kind, name, running("pytorchjob"))

    with pytest.raises(JobTimedOut, match=r"within 1.5 s \(last seen Running"):
        await task
    assert time.monotonic() - started < 8
    assert not await job_exists(k8s, kind, name), "a timed-out job must not hold nodes"


@pytest.mark.parametrize("backend", ["pytorchjob", "trainjob"])
async def test_job_deleted_while_waiting(k8s, backend):
    task, manifest, kind = start(k8s, backend, io.StringIO(), log_grace_s=0)
    name = manifest["metadata"]["name"]
    await wait_until(lambda: job_exists(k8s, kind, name), "the job to be created")
    await set_status(k8s, kind, name, running(backend))
    await asyncio.sleep(0.3)  # let the launcher settle into its watch
    async with k8s.delete(job_path(kind, name)) as resp:
        assert resp.status == 200

    with pytest.raises(JobDisappeared, match="deleted while running"):
        await task


async def test_expired_resource_version_rereads_the_job_and_keeps_waiting(k8s):
    gone = {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "code": 410,
            "reason": "Expired",
            "message": "too old resource version: 1 (2)",
        },
    }
    served: list[Any] = []

    def first_job_watch(request: Any) -> bool:
        if (
            served
            or request.action != kmock.action.WATCH
            or request.resource.plural != "pytorchjobs"
        ):
            return False
        served.append(request)
        return True

    k8s[first_job_watch] << (json.dumps(gone) + "\n").encode()
    task, manifest, kind = start(k8s, "pytorchjob", io.StringIO(), log_grace_s=0)
    name = manifest["metadata"]["name"]
    await wait_until(lambda: job_exists(k8s, kind, name), "the job to be created")
    await wait_until(lambda: asyncio.sleep(0, bool(served)), "the expiring watch")
    await set_status(k8s, kind, name, succeeded("pytorchjob"))

    assert (await task).phase == "Succeeded"
    gets = [r for r in k8s if r.action == kmock.action.FETCH and r.resource.plural == "pytorchjobs"]
    assert len(gets) >= 2, "a 410 must be answered by re-reading the job"


async def test_cli_against_the_api_exits_with_the_jobs_failure(k8s, tmp_path, capsys):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": str(k8s.url).rstrip("/")}}],
                "users": [{"name": "ci", "user": {"token": "not-a-secret"}}],
                "contexts": [
                    {"name": "ci", "context": {"cluster": "kmock", "user": "ci", "namespace": NS}}
                ],
                "current-context": "ci",
            }
        )
    )
    argv = ["--backend", "pytorchjob", "--kubeconfig", str(kubeconfig), "--run-id", "run-9"]
    argv += ["--task", "wsp", "--set", "image=registry.example/mawsflow:test"]
    argv += ["--set", "policy.log_grace_s=0", "--", "mawsflow", "wsp"]
    task = asyncio.create_task(asyncio.to_thread(launch_step.main, argv))
    name = JobIdentity("run-9", "wsp").job_name  # the namespace came from the kubeconfig
    await wait_until(lambda: job_exists(k8s, PYTORCHJOB, name), "the job to be created")
    await set_status(k8s, PYTORCHJOB, name, failed("pytorchjob"))

    assert await task == launch_step.EXIT_JOB_FAILED
    assert FAILURE["pytorchjob"][1] in capsys.readouterr().err
