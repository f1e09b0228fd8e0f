"""What a training launch runs and how it is waited on: the typed `LaunchSpec`.

One spec serves every backend. `command` is the program each rank runs (under
`torchrun --no-python`, so any executable works: `mawsflow mae …`, `python train.py …`). The
Kubernetes-only parts (image, pod settings, policies) are ignored by the local backend, and
`validate` rejects settings a backend cannot honour instead of dropping them silently.

S3 credentials never appear in a spec: `s3.secret_name` names a Kubernetes Secret and the pods
read its keys through `secretKeyRef`, so no secret value passes through mawsflow or lands in a
manifest. A plain `env` entry carrying a credential variable is rejected.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from mawsflow.errors import ConfigError
from mawsflow.typed_config import (
    check_key,
    from_dict,
    merge,
    parse_override,
)

Backend = Literal["local", "pytorchjob", "trainjob"]
BACKENDS: tuple[Backend, ...] = ("local", "pytorchjob", "trainjob")

# Environment variables boto3 reads credentials from; they may reach a pod only via secretKeyRef.
CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")

_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@dataclass
class S3Secret:
    """S3 access for the pods: a Secret reference plus the non-secret endpoint settings."""

    secret_name: str
    access_key_id_key: str = "AWS_ACCESS_KEY_ID"
    secret_access_key_key: str = "AWS_SECRET_ACCESS_KEY"
    # An address, not a secret: it travels as a plain env var (AWS_ENDPOINT_URL).
    endpoint_url: str | None = None
    region: str | None = None


@dataclass
class Resources:
    """Per-node (per-pod) compute. Quantities use Kubernetes notation: "8", "500m", "64Gi"."""

    gpus_per_node: int = 0
    gpu_resource: str = "nvidia.com/gpu"
    cpu: str | int | None = None  # request
    memory: str | None = None  # request
    cpu_limit: str | int | None = None
    memory_limit: str | None = None


@dataclass
class Toleration:
    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


@dataclass
class ClaimMount:
    """A PersistentVolumeClaim mounted into the training container."""

    name: str
    claim_name: str
    mount_path: str
    read_only: bool = False


@dataclass
class PodSettings:
    # Size of the memory-backed /dev/shm; DataLoader workers and NCCL need more than the
    # container runtime's 64 MiB default. It counts against the container's memory.
    shm_size: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[Toleration] = field(default_factory=list)
    image_pull_secrets: list[str] = field(default_factory=list)
    service_account: str | None = None
    volumes: list[ClaimMount] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass
class ElasticPolicy:
    """PyTorchJob elastic training: the node count may move between min and max."""

    min_nodes: int
    max_nodes: int
    max_restarts: int = 3


@dataclass
class JobPolicy:
    """How long to wait and what to leave behind.

    cleanup: `delete` removes the job however it ends, `delete-on-success` keeps a failed job
    for inspection, `keep` never deletes. A job the launcher timed out on is still running and
    holding nodes, so it is deleted unless cleanup is `keep`.
    """

    cleanup: Literal["delete", "delete-on-success", "keep"] = "delete-on-success"
    timeout_s: int | None = None  # launcher-side wait; None waits as long as the job runs
    active_deadline_s: int | None = None  # server-side limit on the job's running time
    backoff_limit: int = 3  # PyTorchJob only: pod restarts before the job fails
    ttl_s: int | None = 86400  # PyTorchJob only: the operator deletes a finished job after this
    clean_pod_policy: Literal["None", "Running", "All"] = "Running"  # PyTorchJob only
    restart_policy: Literal["Never", "OnFailure", "ExitCode"] = "OnFailure"  # PyTorchJob only
    # A watch request lasts at most this long before it is renewed from the last resourceVersion.
    watch_window_s: int = 300
    # After the job ends, how long the master's log stream may take to drain.
    log_grace_s: float = 30.0


@dataclass
class TrainingRuntime:
    """The Kubeflow Trainer v2 runtime a TrainJob runs against."""

    name: str = "torch-distributed"
    kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = "ClusterTrainingRuntime"


@dataclass
class LaunchSpec:
    command: list[str] = field(default_factory=list)
    image: str | None = None
    nodes: int = 1
    procs_per_node: int = 1
    resources: Resources = field(default_factory=Resources)
    env: dict[str, str] = field(default_factory=dict)
    s3: S3Secret | None = None
    pod: PodSettings = field(default_factory=PodSettings)
    queue_name: str | None = None  # Kueue LocalQueue; set as the job's queue-name label
    labels: dict[str, str] = field(default_factory=dict)  # on the job and its pods
    policy: JobPolicy = field(default_factory=JobPolicy)
    elastic: ElasticPolicy | None = None
    runtime: TrainingRuntime = field(default_factory=TrainingRuntime)
    # Prometheus: rank r on a node serves on metrics_port + r (LOCAL_RANK), exposed as container
    # port `metrics-<r>` so the chart's PodMonitor finds it. None turns the endpoint off.
    metrics_port: int | None = 9400


def load_launch_spec(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    command: Sequence[str] | None = None,
) -> LaunchSpec:
    """The spec from a YAML file (optional), `key=value` overrides, and a command that replaces
    the file's `command` when given."""
    data: dict = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"launch spec {path}: cannot read it: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"launch spec {path}: not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"launch spec {path}: expected a mapping at the top level")
        data = loaded or {}
    parsed = {}
    for text in overrides:
        key, value = parse_override(text)
        check_key(LaunchSpec, key)
        parsed[key] = value
    data = merge(data, parsed)
    if command:
        data["command"] = list(command)
    return from_dict(LaunchSpec, data)


def validate(spec: LaunchSpec, backend: Backend) -> None:
    """Raise ConfigError naming the first setting `backend` cannot run."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend: {backend!r} is not one of {list(BACKENDS)}")
    if not spec.command:
        raise ConfigError("command: empty; give the program every rank runs")
    _at_least("nodes", spec.nodes, 1)
    _at_least("procs_per_node", spec.procs_per_node, 1)
    _at_least("resources.gpus_per_node", spec.resources.gpus_per_node, 0)
    if 0 < spec.resources.gpus_per_node < spec.procs_per_node:
        raise ConfigError(
            f"procs_per_node: {spec.procs_per_node} ranks per node but "
            f"resources.gpus_per_node is {spec.resources.gpus_per_node}; each rank drives one GPU"
        )
    for key in ("cpu", "memory", "cpu_limit", "memory_limit"):
        _quantity(f"resources.{key}", getattr(spec.resources, key))
    _quantity("pod.shm_size", spec.pod.shm_size)
    for name in spec.env:
        if not _ENV_NAME.match(name):
            raise ConfigError(f"env.{name}: not a valid environment variable name")
        if name in CREDENTIAL_ENV:
            raise ConfigError(
                f"env.{name}: credentials may not be given as plain values; name a Secret in "
                "s3.secret_name (Kubernetes) or export them in the launcher's environment (local)"
            )
    for key, value in spec.labels.items():
        if not _LABEL_VALUE.match(value) or len(value) > 63:
            raise ConfigError(f"labels.{key}: {value!r} is not a valid Kubernetes label value")
    if spec.queue_name is not None and not _DNS_LABEL.match(spec.queue_name):
        raise ConfigError(f"queue_name: {spec.queue_name!r} is not a valid Kueue queue name")
    for i, volume in enumerate(spec.pod.volumes):
        if not _DNS_LABEL.match(volume.name) or volume.name == "dshm":
            raise ConfigError(
                f"pod.volumes[{i}].name: {volume.name!r} must be a DNS label other than 'dshm'"
            )
        if not volume.mount_path.startswith("/"):
            raise ConfigError(f"pod.volumes[{i}].mount_path: {volume.mount_path!r} is not absolute")
    policy = spec.policy
    for key in ("timeout_s", "active_deadline_s", "ttl_s"):
        value = getattr(policy, key)
        if value is not None:
            _at_least(f"policy.{key}", value, 1)
    _at_least("policy.backoff_limit", policy.backoff_limit, 0)
    if (
        spec.metrics_port is not None
        and not 1024 <= spec.metrics_port <= 65535 - spec.procs_per_node
    ):
        raise ConfigError(
            f"metrics_port: {spec.metrics_port} leaves no room for {spec.procs_per_node} ranks' "
            "ports in 1024–65535"
        )
    _at_least("policy.watch_window_s", policy.watch_window_s, 1)
    if policy.log_grace_s < 0:
        raise ConfigError(f"policy.log_grace_s: {policy.log_grace_s} is negative")

    if backend == "local":
        if spec.nodes != 1:
            raise ConfigError(f"nodes: the local backend runs on one machine, got {spec.nodes}")
        if spec.elastic is not None:
            raise ConfigError("elastic: the local backend has no elastic mode")
        return
    if not spec.image:
        raise ConfigError(f"image: the {backend} backend needs a container image")
    if spec.elastic is not None:
        if backend != "pytorchjob":
            raise ConfigError(f"elastic: only the pytorchjob backend supports it, not {backend}")
        el = spec.elastic
        if not 1 <= el.min_nodes <= spec.nodes <= el.max_nodes:
            raise ConfigError(
                f"elastic: need 1 <= min_nodes <= nodes <= max_nodes, got "
                f"{el.min_nodes} <= {spec.nodes} <= {el.max_nodes}"
            )
        _at_least("elastic.max_restarts", el.max_restarts, 0)


def _at_least(key: str, value: int, minimum: int) -> None:
    if value < minimum:
        raise ConfigError(f"{key}: {value} is below the minimum {minimum}")


def _quantity(key: str, value: str | int | None) -> None:
    if value is not None and not _QUANTITY.match(str(value)):
        raise ConfigError(f"{key}: {value!r} is not a Kubernetes quantity such as 8, 500m or 64Gi")
