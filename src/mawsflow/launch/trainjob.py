"""A LaunchSpec as a Kubeflow Trainer v2 TrainJob (`trainer.kubeflow.org/v1alpha1`).

The TrainJob names a training runtime (by default the `torch-distributed`
ClusterTrainingRuntime) and overrides its trainer: image, command, `numNodes`,
`numProcPerNode`, `resourcesPerNode` and env. What the trainer section cannot express (volumes,
/dev/shm, node selectors, tolerations, image pull secrets, service account, pod labels) goes in
as a `runtimePatches` entry, the v2.3 API for patching the runtime's JobSet template: it
targets the runtime's `node` ReplicatedJob and its `node` container, the names the Trainer's
torch runtimes use for the training nodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mawsflow.launch import podspec
from mawsflow.launch.kube import JobKind, JobStatus, true_condition
from mawsflow.launch.naming import JobIdentity
from mawsflow.launch.spec import LaunchSpec

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
NODE = "node"  # the runtime's ReplicatedJob and container of the training nodes
PATCH_MANAGER = "mawsflow.dev/launcher"


def build_trainjob(spec: LaunchSpec, identity: JobIdentity, namespace: str) -> dict[str, Any]:
    command, args = podspec.torchrun_entrypoint(spec)
    trainer: dict[str, Any] = {
        "image": spec.image,
        "command": command,
        "args": args,
        "numNodes": spec.nodes,
        "numProcPerNode": spec.procs_per_node,
    }
    resources = podspec.container_resources(spec)
    if resources:
        trainer["resourcesPerNode"] = resources
    env = podspec.container_env(spec)
    if env:
        trainer["env"] = env
    job_spec: dict[str, Any] = {
        "runtimeRef": {"apiGroup": GROUP, "kind": spec.runtime.kind, "name": spec.runtime.name},
        "trainer": trainer,
    }
    if spec.policy.active_deadline_s is not None:
        job_spec["activeDeadlineSeconds"] = spec.policy.active_deadline_s
    patch = _node_patch(spec)
    if patch:
        job_spec["runtimePatches"] = [
            {
                "manager": PATCH_MANAGER,
                "trainingRuntimeSpec": {
                    "template": {"spec": {"replicatedJobs": [{"name": NODE, "template": patch}]}}
                },
            }
        ]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainJob",
        "metadata": podspec.job_metadata(spec, identity, namespace),
        "spec": job_spec,
    }


def trainjob_status(job: Mapping[str, Any]) -> JobStatus:
    """Complete/Failed conditions end the job; a child Job with active pods means Running."""
    for condition_type, phase in (("Failed", "Failed"), ("Complete", "Succeeded")):
        condition = true_condition(job, condition_type)
        if condition is not None:
            return JobStatus(phase, condition.get("reason", ""), condition.get("message", ""))
    status = job.get("status") or {}
    if any(child.get("active") for child in status.get("jobsStatus") or []):
        return JobStatus("Running")
    suspended = true_condition(job, "Suspended")
    if suspended is not None:  # e.g. Kueue holding it until quota frees up
        return JobStatus("Pending", suspended.get("reason", ""), suspended.get("message", ""))
    return JobStatus("Pending")


def master_pod_selector(job: Mapping[str, Any]) -> str:
    """Node 0 of the JobSet's `node` ReplicatedJob runs rank 0."""
    return (
        f"jobset.sigs.k8s.io/jobset-name={job['metadata']['name']},"
        f"jobset.sigs.k8s.io/replicatedjob-name={NODE},"
        "batch.kubernetes.io/job-completion-index=0"
    )


TRAINJOB = JobKind(
    kind="TrainJob",
    group=GROUP,
    version=VERSION,
    plural="trainjobs",
    container=NODE,
    status_of=trainjob_status,
    master_pod_selector=master_pod_selector,
)


def _node_patch(spec: LaunchSpec) -> dict[str, Any]:
    """The Job-template patch for the `node` ReplicatedJob; empty when nothing needs patching."""
    pod_spec: dict[str, Any] = podspec.scheduling(spec)
    container: dict[str, Any] = {"name": NODE}
    volumes = podspec.volumes(spec)
    if volumes:
        pod_spec["volumes"] = volumes
        container["volumeMounts"] = podspec.volume_mounts(spec)
    # Trainer v2.3.0's runtime patches cannot add container ports, so a TrainJob's metrics ports
    # (MAWSFLOW_METRICS_PORT + LOCAL_RANK) are declared by the ClusterTrainingRuntime, or scraped
    # by number; the pod label below is what the PodMonitor selects on.
    if len(container) > 1:
        pod_spec["containers"] = [container]
    pod_template: dict[str, Any] = {"metadata": podspec.pod_metadata(spec)}
    if pod_spec:
        pod_template["spec"] = pod_spec
    return {"spec": {"template": pod_template}}
