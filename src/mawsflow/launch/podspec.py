"""Kubernetes pod pieces from a LaunchSpec, shared by the PyTorchJob and TrainJob builders.

Everything here is plain JSON-ready data (dicts and lists), in the API's camelCase, so the
builders can place it wherever each CRD wants it and the result validates against the CRD schema.
"""

from __future__ import annotations

from typing import Any

from mawsflow.launch.naming import JobIdentity
from mawsflow.launch.spec import LaunchSpec

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
SHM_VOLUME = "dshm"


def torchrun_entrypoint(spec: LaunchSpec) -> tuple[list[str], list[str]]:
    """(command, args) of the training container. Both operators give the node count, node rank,
    procs per node and rendezvous address to torchrun as PET_* environment variables, so the
    container only names the program; `--no-python` lets it be any executable."""
    return ["torchrun"], ["--no-python", *spec.command]


def job_metadata(spec: LaunchSpec, identity: JobIdentity, namespace: str) -> dict[str, Any]:
    labels = {**spec.labels, MANAGED_BY_LABEL: "mawsflow"}
    if spec.queue_name:
        labels[KUEUE_QUEUE_LABEL] = spec.queue_name
    return {
        "name": identity.job_name,
        "namespace": namespace,
        "labels": labels,
        "annotations": identity.annotations(),
    }


def container_env(spec: LaunchSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(spec.env.items())]
    if spec.s3 is not None:
        s3 = spec.s3
        for name, key in (
            ("AWS_ACCESS_KEY_ID", s3.access_key_id_key),
            ("AWS_SECRET_ACCESS_KEY", s3.secret_access_key_key),
        ):
            env.append(
                {"name": name, "valueFrom": {"secretKeyRef": {"name": s3.secret_name, "key": key}}}
            )
        if s3.endpoint_url:
            env.append({"name": "AWS_ENDPOINT_URL", "value": s3.endpoint_url})
        if s3.region:
            env.append({"name": "AWS_DEFAULT_REGION", "value": s3.region})
    if spec.metrics_port is not None:
        env.append({"name": "MAWSFLOW_METRICS_PORT", "value": str(spec.metrics_port)})
    return env


def container_ports(spec: LaunchSpec) -> list[dict[str, Any]]:
    """One named port per local rank (mawsflow.metrics.serve adds LOCAL_RANK to the base)."""
    if spec.metrics_port is None:
        return []
    return [
        {"name": f"metrics-{rank}", "containerPort": spec.metrics_port + rank, "protocol": "TCP"}
        for rank in range(spec.procs_per_node)
    ]


def container_resources(spec: LaunchSpec) -> dict[str, dict[str, str]]:
    res = spec.resources
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    for out, key, value in (
        (requests, "cpu", res.cpu),
        (requests, "memory", res.memory),
        (limits, "cpu", res.cpu_limit),
        (limits, "memory", res.memory_limit),
    ):
        if value is not None:
            out[key] = str(value)
    if res.gpus_per_node:
        # Extended resources cannot be overcommitted: request and limit must be equal.
        requests[res.gpu_resource] = limits[res.gpu_resource] = str(res.gpus_per_node)
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


def volumes(spec: LaunchSpec) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if spec.pod.shm_size:
        out.append(
            {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": spec.pod.shm_size}}
        )
    for claim in spec.pod.volumes:
        out.append(
            {
                "name": claim.name,
                "persistentVolumeClaim": {
                    "claimName": claim.claim_name,
                    "readOnly": claim.read_only,
                },
            }
        )
    return out


def volume_mounts(spec: LaunchSpec) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if spec.pod.shm_size:
        out.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
    for claim in spec.pod.volumes:
        out.append({"name": claim.name, "mountPath": claim.mount_path, "readOnly": claim.read_only})
    return out


def tolerations(spec: LaunchSpec) -> list[dict[str, Any]]:
    out = []
    for t in spec.pod.tolerations:
        item: dict[str, Any] = {"operator": t.operator}
        for key, value in (
            ("key", t.key),
            ("value", t.value),
            ("effect", t.effect),
            ("tolerationSeconds", t.toleration_seconds),
        ):
            if value is not None:
                item[key] = value
        out.append(item)
    return out


def scheduling(spec: LaunchSpec) -> dict[str, Any]:
    """Pod-spec fields for placement and identity: node selector, tolerations, pull secrets,
    service account. Empty settings are left out so the runtime's defaults stay in force."""
    out: dict[str, Any] = {}
    if spec.pod.node_selector:
        out["nodeSelector"] = dict(spec.pod.node_selector)
    if spec.pod.tolerations:
        out["tolerations"] = tolerations(spec)
    if spec.pod.image_pull_secrets:
        out["imagePullSecrets"] = [{"name": name} for name in spec.pod.image_pull_secrets]
    if spec.pod.service_account:
        out["serviceAccountName"] = spec.pod.service_account
    return out


def pod_metadata(spec: LaunchSpec) -> dict[str, Any]:
    # The managed-by label on the pods (not only the job) is what the chart's PodMonitor selects.
    out: dict[str, Any] = {"labels": {**spec.labels, MANAGED_BY_LABEL: "mawsflow"}}
    if spec.pod.annotations:
        out["annotations"] = dict(spec.pod.annotations)
    return out
