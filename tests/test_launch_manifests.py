"""Generated PyTorchJob and TrainJob objects against the real Kubeflow CRD schemas.

The schemas are the CustomResourceDefinitions' openAPIV3Schema, looked for in $MAWSFLOW_K8S_SCHEMAS,
then the repository's copy (tests/data/k8s-schemas), then ../shared/k8s-schemas beside the
repository. The API server prunes fields a schema does not declare, silently; to catch such
typos here, every object schema that does not preserve unknown fields is closed
(additionalProperties: false) before validating.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from mawsflow.launch.naming import JobIdentity
from mawsflow.launch.podspec import KUEUE_QUEUE_LABEL
from mawsflow.launch.pytorchjob import build_pytorchjob, master_pod_selector
from mawsflow.launch.spec import (
    ClaimMount,
    ElasticPolicy,
    LaunchSpec,
    PodSettings,
    Resources,
    S3Secret,
    Toleration,
    validate,
)
from mawsflow.launch.trainjob import build_trainjob

REPO = Path(__file__).resolve().parent.parent
SCHEMA_FILES = {
    "pytorchjob": "kubeflow.org_pytorchjobs.v1.9.yaml",
    "trainjob": "trainer.kubeflow.org_trainjobs.v2.3.0.yaml",
}
BUILDERS = {"pytorchjob": build_pytorchjob, "trainjob": build_trainjob}
IDENTITY = JobIdentity("0f8c2a6e-5b1d-4c3e-9a7f-2d4b6e8f0a1c", "wsp-pretrain")
SECRET_VALUES = ("AKIAEXAMPLEKEYID0000", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")


def schema_dir() -> Path | None:
    candidates = [os.environ.get("MAWSFLOW_K8S_SCHEMAS")]
    candidates += [REPO / "tests" / "data" / "k8s-schemas", REPO.parent / "shared" / "k8s-schemas"]
    for candidate in candidates:
        if candidate and all((Path(candidate) / f).is_file() for f in SCHEMA_FILES.values()):
            return Path(candidate)
    return None


def closed(node: Any) -> Any:
    if isinstance(node, dict):
        if (
            node.get("type") == "object"
            and "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for value in node.values():
            closed(value)
    elif isinstance(node, list):
        for value in node:
            closed(value)
    return node


@functools.cache
def crd(backend: str) -> tuple[dict[str, Any], jsonschema.Draft7Validator]:
    folder = schema_dir()
    if folder is None:
        pytest.skip(
            "Kubeflow CRD schemas not found: set MAWSFLOW_K8S_SCHEMAS or restore "
            "tests/data/k8s-schemas"
        )
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    document = yaml.load((folder / SCHEMA_FILES[backend]).read_text(), Loader=loader)
    (version,) = document["spec"]["versions"]
    schema = closed(version["schema"]["openAPIV3Schema"])
    return document, jsonschema.Draft7Validator(schema)


def assert_valid(backend: str, manifest: dict[str, Any]) -> None:
    document, validator = crd(backend)
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
    group = document["spec"]["group"]
    (version,) = document["spec"]["versions"]
    assert manifest["apiVersion"] == f"{group}/{version['name']}"
    assert manifest["kind"] == document["spec"]["names"]["kind"]
    # The CRDs' CEL rule (the API server checks it, jsonschema cannot): an RFC 1035 label.
    name = manifest["metadata"]["name"]
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63


def full_spec() -> LaunchSpec:
    return LaunchSpec(
        command=["mawsflow", "wsp", "--recipe", "wsp", "--set", "model.arch=vit_h14"],
        image="registry.example/mawsflow:0.1.0",
        nodes=4,
        procs_per_node=8,
        resources=Resources(
            gpus_per_node=8, cpu=96, memory="1000Gi", cpu_limit="96", memory_limit="1100Gi"
        ),
        env={"MAWSFLOW_LOG_LEVEL": "INFO", "NCCL_DEBUG": "WARN"},
        s3=S3Secret(
            secret_name="mlpipeline-minio-artifact",
            access_key_id_key="accesskey",
            secret_access_key_key="secretkey",
            endpoint_url="http://seaweedfs.kubeflow:8333",
            region="us-east-1",
        ),
        pod=PodSettings(
            shm_size="64Gi",
            node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            tolerations=[
                Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"),
                Toleration(key="spot", value="true", effect="NoExecute", toleration_seconds=60),
            ],
            image_pull_secrets=["regcred"],
            service_account="mawsflow-trainer",
            volumes=[ClaimMount(name="cache", claim_name="dataset-cache", mount_path="/cache")],
            annotations={"sidecar.istio.io/inject": "false"},
        ),
        queue_name="gpu-team-a",
        labels={"team": "vision", "stage": "wsp"},
    )


def build(backend: str, spec: LaunchSpec) -> dict[str, Any]:
    validate(spec, backend)
    return BUILDERS[backend](spec, IDENTITY, "ml-team")


def containers(backend: str, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    if backend == "pytorchjob":
        return [
            c
            for replica in manifest["spec"]["pytorchReplicaSpecs"].values()
            for c in replica["template"]["spec"]["containers"]
        ]
    return [manifest["spec"]["trainer"]]


@pytest.mark.parametrize("backend", ["pytorchjob", "trainjob"])
def test_full_spec_validates_against_the_crd(backend):
    assert_valid(backend, build(backend, full_spec()))


@pytest.mark.parametrize("backend", ["pytorchjob", "trainjob"])
def test_minimal_spec_validates_against_the_crd(backend):
    spec = LaunchSpec(command=["python", "train.py"], image="img:1")
    assert_valid(backend, build(backend, spec))


def test_closed_schema_rejects_a_misspelt_field():
    manifest = build("pytorchjob", full_spec())
    manifest["spec"]["runPolicy"]["backofLimit"] = 3
    _, validator = crd("pytorchjob")
    assert any("backofLimit" in e.message for e in validator.iter_errors(manifest))


def test_pytorchjob_shape():
    manifest = build("pytorchjob", full_spec())
    spec = manifest["spec"]
    assert spec["nprocPerNode"] == "8"
    replicas = spec["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 3
    assert spec["runPolicy"] == {
        "cleanPodPolicy": "Running",
        "backoffLimit": 3,
        "ttlSecondsAfterFinished": 86400,
    }
    for replica in replicas.values():
        pod = replica["template"]["spec"]
        (container,) = pod["containers"]
        assert container["name"] == "pytorch"
        assert container["command"] == ["torchrun"]
        assert container["args"][:3] == ["--no-python", "mawsflow", "wsp"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
        assert container["resources"]["requests"]["nvidia.com/gpu"] == "8"
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
        shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
        assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Gi"}
        assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        assert pod["serviceAccountName"] == "mawsflow-trainer"
        assert pod["tolerations"][0] == {
            "operator": "Exists",
            "key": "nvidia.com/gpu",
            "effect": "NoSchedule",
        }
    assert manifest["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "gpu-team-a"
    assert master_pod_selector(manifest) == (
        f"training.kubeflow.org/job-name={IDENTITY.job_name},"
        "training.kubeflow.org/replica-type=master,training.kubeflow.org/replica-index=0"
    )


def test_pytorchjob_elastic_is_workers_only_with_c10d():
    spec = full_spec()
    spec.elastic = ElasticPolicy(min_nodes=2, max_nodes=8, max_restarts=5)
    spec.policy.active_deadline_s = 7 * 86400
    manifest = build("pytorchjob", spec)
    assert_valid("pytorchjob", manifest)
    assert set(manifest["spec"]["pytorchReplicaSpecs"]) == {"Worker"}
    assert manifest["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 4
    assert manifest["spec"]["elasticPolicy"] == {
        "minReplicas": 2,
        "maxReplicas": 8,
        "maxRestarts": 5,
        "rdzvBackend": "c10d",
    }
    assert manifest["spec"]["runPolicy"]["activeDeadlineSeconds"] == 7 * 86400
    assert "replica-type=worker" in master_pod_selector(manifest)


def test_trainjob_shape():
    manifest = build("trainjob", full_spec())
    spec = manifest["spec"]
    assert spec["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
        "name": "torch-distributed",
    }
    trainer = spec["trainer"]
    assert trainer["numNodes"] == 4 and trainer["numProcPerNode"] == 8
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    (patch,) = spec["runtimePatches"]
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert node["name"] == "node"
    pod = node["template"]["spec"]["template"]
    assert pod["metadata"]["labels"] == {
        "team": "vision",
        "stage": "wsp",
        "app.kubernetes.io/managed-by": "mawsflow",
    }
    assert {"name": "MAWSFLOW_METRICS_PORT", "value": "9400"} in trainer["env"]
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["dshm", "cache"]
    (container,) = pod["spec"]["containers"]
    assert container["name"] == "node"
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/dev/shm", "/cache"]
    assert manifest["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "gpu-team-a"


@pytest.mark.parametrize("backend", ["pytorchjob", "trainjob"])
def test_s3_credentials_reach_pods_only_as_secret_key_refs(backend, monkeypatch):
    # Whatever the launcher's own environment holds must not leak into a manifest.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", SECRET_VALUES[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_VALUES[1])
    manifest = build(backend, full_spec())
    text = json.dumps(manifest)
    for value in SECRET_VALUES:
        assert value not in text
    for container in containers(backend, manifest):
        env = {e["name"]: e for e in container["env"]}
        assert env["AWS_ACCESS_KEY_ID"] == {
            "name": "AWS_ACCESS_KEY_ID",
            "valueFrom": {
                "secretKeyRef": {"name": "mlpipeline-minio-artifact", "key": "accesskey"}
            },
        }
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "mlpipeline-minio-artifact",
            "key": "secretkey",
        }
        assert "value" not in env["AWS_SECRET_ACCESS_KEY"]
        assert env["AWS_ENDPOINT_URL"]["value"] == "http://seaweedfs.kubeflow:8333"


def test_job_identity_lands_on_the_job():
    manifest = build("trainjob", full_spec())
    meta = manifest["metadata"]
    assert meta["name"] == IDENTITY.job_name
    assert meta["namespace"] == "ml-team"
    assert meta["annotations"]["mawsflow.dev/run-id"] == IDENTITY.run_id
    assert meta["annotations"]["mawsflow.dev/task"] == "wsp-pretrain"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "mawsflow"


def test_training_pods_are_labelled_and_expose_one_metrics_port_per_rank():
    """The chart's PodMonitor selects pods by the managed-by label and scrapes ports named
    metrics-<local rank>; each rank serves on MAWSFLOW_METRICS_PORT + LOCAL_RANK."""
    manifest = build("pytorchjob", full_spec())
    for replica in manifest["spec"]["pytorchReplicaSpecs"].values():
        template = replica["template"]
        assert template["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mawsflow"
        (container,) = template["spec"]["containers"]
        assert {"name": "MAWSFLOW_METRICS_PORT", "value": "9400"} in container["env"]
        assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [
            (f"metrics-{rank}", 9400 + rank) for rank in range(8)
        ]
    off = build("pytorchjob", replace(full_spec(), metrics_port=None))
    container = off["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert "ports" not in container
    assert all(e["name"] != "MAWSFLOW_METRICS_PORT" for e in container["env"])
