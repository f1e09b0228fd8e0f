"""A pre-empted training task loses nothing: the training job outlives the task's pod, and the
retried task re-attaches to it.

On Kubernetes a pre-empted node or a deleted pod stops the training component's pod with
SIGTERM (then SIGKILL after the grace period). The PyTorchJob/TrainJob it made is a separate
object with no owner reference to that pod, so it keeps training; the retried task derives the
same job name from the same output URI (Argo retries only the executor template, whose inputs
the driver fixed: kubeflow/pipelines backend/src/v2/compiler/argocompiler/container.go puts the
retryStrategy on the executor, not on the driver) and follows the job to its end.

Here the task is a real `mawsflow launch` process against a real Kubernetes API over HTTP
(kmock's emulator), stopped with a real SIGTERM. Whether Argo retries a deleted pod at all is a
cluster setting: charts/mawsflow/files/argo-workflow-defaults.yaml, checked below.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mawsflow.launch.naming import JobIdentity
from mawsflow.launch.pytorchjob import PYTORCHJOB
from test_launch_kube import (  # noqa: F401 (k8s is a fixture)
    NS,
    creates,
    job_exists,
    k8s,
    running,
    set_status,
    succeeded,
    wait_until,
)

REPO = Path(__file__).resolve().parent.parent


def _kubeconfig(emulator, folder: Path) -> Path:
    path = folder / "kubeconfig"
    server = str(emulator.url).rstrip("/")
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": server}}],
                "users": [{"name": "ci", "user": {"token": "not-a-secret"}}],
                "contexts": [
                    {"name": "ci", "context": {"cluster": "kmock", "user": "ci", "namespace": NS}}
                ],
                "current-context": "ci",
            }
        )
    )
    return path


def _launch(kubeconfig: Path, log: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "mawsflow.cli", "launch", "--backend", "pytorchjob"]
    argv += ["--kubeconfig", str(kubeconfig), "--run-id", "minio://mlpipeline/v2/run-1/mae/uuid"]
    argv += ["--task", "mae", "--set", "image=registry.example/mawsflow:test"]
    argv += ["--set", "policy.log_grace_s=0", "--", "mawsflow", "mae", "--preset", "tiny"]
    return subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT)


@pytest.mark.asyncio
@pytest.mark.timeout(180)
async def test_a_sigtermed_training_task_leaves_its_job_running_and_the_retry_reattaches(
    k8s,  # noqa: F811 (the fixture imported above)
    tmp_path,
):
    kubeconfig = _kubeconfig(k8s, tmp_path)
    name = JobIdentity("minio://mlpipeline/v2/run-1/mae/uuid", "mae").job_name

    first = _launch(kubeconfig, tmp_path / "first.log")
    try:
        await wait_until(lambda: job_exists(k8s, PYTORCHJOB, name), "the job", timeout_s=60)
        await set_status(k8s, PYTORCHJOB, name, running("pytorchjob"))
        await asyncio.sleep(1)
        first.send_signal(signal.SIGTERM)  # the kubelet stopping a pre-empted pod
        await asyncio.to_thread(first.wait, 30)
    finally:
        first.kill()
    assert first.returncode != 0
    assert await job_exists(k8s, PYTORCHJOB, name), "the job must outlive the task's pod"

    second = _launch(kubeconfig, tmp_path / "second.log")
    try:
        await asyncio.sleep(3)
        assert second.poll() is None, (tmp_path / "second.log").read_text()
        await set_status(k8s, PYTORCHJOB, name, succeeded("pytorchjob"))
        assert await asyncio.to_thread(second.wait, 60) == 0, (tmp_path / "second.log").read_text()
    finally:
        second.kill()
    assert "re-attaching" in (tmp_path / "second.log").read_text()
    # Both attempts asked to create the job; the API server made it once.
    assert creates(k8s, PYTORCHJOB) == 2
    assert len([key for key in k8s.objects if key[0].plural == PYTORCHJOB.plural]) <= 1


def _merge_template_defaults(defaults: dict, template: dict) -> dict:
    """Argo's `mergedTemplateDefaultsInto` (workflow/controller/operator.go) applies
    `StrategicMergePatch(defaults, template)`: the template's fields win, nested objects such
    as retryStrategy merge field by field (none of these fields has a merge key)."""
    merged = dict(defaults)
    for key, value in template.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge_template_defaults(merged[key], value)
        else:
            merged[key] = value
    return merged


def test_the_documented_argo_defaults_retry_deleted_pods_within_kfps_limits():
    """Argo retries a node in phase Error (a deleted or evicted pod: "pod deleted",
    operator.go) only under retryPolicy Always or OnError; KFP's compiled retryStrategy sets
    none, and Argo's default is OnFailure. The chart ships the controller default that fixes
    it; merged into KFP's executor template it keeps KFP's limit and backoff, and a template
    without retries gets a limit of 0 rather than Argo's unlimited retries."""
    path = REPO / "charts" / "mawsflow" / "files" / "argo-workflow-defaults.yaml"
    config = yaml.safe_load(path.read_text())
    defaults = yaml.safe_load(config["data"]["workflowDefaults"])["spec"]["templateDefaults"]
    kfp_executor = {
        "name": "retry-system-container-impl",
        "retryStrategy": {
            "limit": "{{inputs.parameters.retry-max-count}}",
            "backoff": {"duration": "{{inputs.parameters.retry-backoff-duration}}"},
        },
    }
    merged = _merge_template_defaults(defaults, kfp_executor)["retryStrategy"]
    assert merged["retryPolicy"] == "Always"
    assert merged["limit"] == "{{inputs.parameters.retry-max-count}}"
    assert merged["backoff"] == kfp_executor["retryStrategy"]["backoff"]
    plain = _merge_template_defaults(defaults, {"name": "system-dag-driver"})["retryStrategy"]
    assert plain["limit"] == "0" and plain["retryPolicy"] == "Always"
