"""A LaunchSpec as a Kubeflow Training Operator PyTorchJob (`kubeflow.org/v1`).

A fixed-size job is one Master plus `nodes - 1` Workers; an elastic job is Workers only, as the
operator's elastic mode expects, with torchrun's c10d rendezvous between them. The operator
requires the training container to be named `pytorch`, and hands torchrun its world shape
through PET_* variables derived from `nprocPerNode` and the replica counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mawsflow.launch import podspec
from mawsflow.launch.kube import JobKind, JobStatus, true_condition
from mawsflow.launch.naming import JobIdentity
from mawsflow.launch.spec import LaunchSpec

GROUP = "kubeflow.org"
VERSION = "v1"
CONTAINER = "pytorch"  # the operator finds the training container by this name


def build_pytorchjob(spec: LaunchSpec, identity: JobIdentity, namespace: str) -> dict[str, Any]:
    policy = spec.policy

    def replica(count: int) -> dict[str, Any]:
        # A fresh template each: shared dicts would serialise as YAML anchors.
        return {
            "replicas": count,
            "restartPolicy": policy.restart_policy,
            "template": _pod_template(spec),
        }

    if spec.elastic is None:
        replicas = {"Master": replica(1)}
        if spec.nodes > 1:
            replicas["Worker"] = replica(spec.nodes - 1)
    else:
        replicas = {"Worker": replica(spec.nodes)}
    run_policy: dict[str, Any] = {
        "cleanPodPolicy": policy.clean_pod_policy,
        "backoffLimit": policy.backoff_limit,
    }
    if policy.ttl_s is not None:
        run_policy["ttlSecondsAfterFinished"] = policy.ttl_s
    if policy.active_deadline_s is not None:
        run_policy["activeDeadlineSeconds"] = policy.active_deadline_s
    job_spec: dict[str, Any] = {
        "nprocPerNode": str(spec.procs_per_node),
        "pytorchReplicaSpecs": replicas,
        "runPolicy": run_policy,
    }
    if spec.elastic is not None:
        job_spec["elasticPolicy"] = {
            "minReplicas": spec.elastic.min_nodes,
            "maxReplicas": spec.elastic.max_nodes,
            "maxRestarts": spec.elastic.max_restarts,
            "rdzvBackend": "c10d",
        }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PyTorchJob",
        "metadata": podspec.job_metadata(spec, identity, namespace),
        "spec": job_spec,
    }


def pytorchjob_status(job: Mapping[str, Any]) -> JobStatus:
    """Phase from the operator's conditions; a terminal condition carries its reason."""
    for condition_type, phase in (
        ("Failed", "Failed"),
        ("Succeeded", "Succeeded"),
        ("Running", "Running"),
    ):
        condition = true_condition(job, condition_type)
        if condition is not None:
            return JobStatus(phase, condition.get("reason", ""), condition.get("message", ""))
    conditions = (job.get("status") or {}).get("conditions") or []
    latest = conditions[-1] if conditions else {}
    return JobStatus("Pending", latest.get("reason", ""), latest.get("message", ""))


def master_pod_selector(job: Mapping[str, Any]) -> str:
    """Rank 0 runs in the Master pod, or in Worker 0 when an elastic job has no Master."""
    replica_specs = job["spec"]["pytorchReplicaSpecs"]
    replica_type = "master" if "Master" in replica_specs else "worker"
    return (
        f"training.kubeflow.org/job-name={job['metadata']['name']},"
        f"training.kubeflow.org/replica-type={replica_type},"
        "training.kubeflow.org/replica-index=0"
    )


PYTORCHJOB = JobKind(
    kind="PyTorchJob",
    group=GROUP,
    version=VERSION,
    plural="pytorchjobs",
    container=CONTAINER,
    status_of=pytorchjob_status,
    master_pod_selector=master_pod_selector,
)


def _pod_template(spec: LaunchSpec) -> dict[str, Any]:
    command, args = podspec.torchrun_entrypoint(spec)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image,
        "command": command,
        "args": args,
    }
    for key, value in (
        ("env", podspec.container_env(spec)),
        ("resources", podspec.container_resources(spec)),
        ("volumeMounts", podspec.volume_mounts(spec)),
        ("ports", podspec.container_ports(spec)),
    ):
        if value:
            container[key] = value
    pod_spec: dict[str, Any] = {"containers": [container], **podspec.scheduling(spec)}
    volumes = podspec.volumes(spec)
    if volumes:
        pod_spec["volumes"] = volumes
    return {"metadata": podspec.pod_metadata(spec), "spec": pod_spec}
