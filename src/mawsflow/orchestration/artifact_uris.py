"""KFP artifact URIs as the storage URIs the steps read and write.

KFP gives an artifact a URI in its object store (`minio://bucket/key` for the MinIO or
SeaweedFS that Kubeflow Pipelines installs, `s3://bucket/key` for S3) or, under `kfp.local`, a
local path. The steps read and write through `mawsflow.storage`, which speaks `s3://` to
whatever endpoint `AWS_ENDPOINT_URL` names, and local paths; `minio://` is the same S3 API
under KFP's own name for it.

Components write outputs to the artifact's URI, not to its local `.path`: a training job's pods
are not the component's pod and cannot write into its file system, and writing straight to the
store also spares the launcher an upload.

Big artifacts point at their descriptor file rather than at their folder, because KFP's
launcher copies every input artifact into the consuming pod before the component starts:
a model is its `model.json`. Steps stream the rest from the store.

Data the pipeline does not own (the pretraining dataset the build writes to the `dataset`
prefix, the evaluation dataset at `eval_dataset`) may sit in any bucket, where the backend's
launcher has no credentials (it reads and writes only the pipeline root's store). Such data
enters the DAG as a *reference*: a small JSON object at the artifact's own URI, in the
pipeline root, naming the data's location and the fingerprint of its listing. The same holds
for an artifact that re-publishes another task's (the transfer fan-out's picked model). The
steps follow the reference (`resolve`) and stream the data from where it is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from mawsflow import storage

DATASET_MANIFEST = "manifest.json"
EVAL_CLASSES = "classes.json"
MODEL_CARD = "model.json"

REFERENCE_FORMAT = "mawsflow.reference/1"
# A reference is a few hundred bytes; anything much larger at an artifact URI is data.
_MAX_REFERENCE_BYTES = 64 * 1024

_ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


class ArtifactURIError(ValueError):
    """An artifact URI the steps cannot reach."""


def storage_uri(artifact_uri: str, env: Mapping[str, str] | None = None) -> str:
    """The `mawsflow.storage` URI of a KFP artifact."""
    env = os.environ if env is None else env
    if artifact_uri.startswith("minio://"):
        if not any(env.get(name) for name in _ENDPOINT_VARIABLES):
            raise ArtifactURIError(
                f"{artifact_uri}: a minio:// artifact is reached through the S3 API, but "
                "AWS_ENDPOINT_URL is not set; give the task the object store's endpoint "
                "(the chart's object-store ConfigMap)"
            )
        return "s3://" + artifact_uri.removeprefix("minio://")
    if artifact_uri.startswith(("gs://", "oci://", "http://", "https://")):
        scheme = artifact_uri.split("://", 1)[0]
        raise ArtifactURIError(
            f"{artifact_uri}: {scheme}:// artifacts are not supported; use a pipeline root on "
            "S3-compatible storage (minio:// or s3://)"
        )
    if not artifact_uri:
        raise ArtifactURIError("the artifact has no URI")
    return artifact_uri


def root(uri: str, descriptor: str) -> str:
    """The folder of an artifact that points at its descriptor file (or at the folder)."""
    suffix = "/" + descriptor
    return uri[: -len(suffix)] if uri.endswith(suffix) else uri.rstrip("/")


def descriptor(folder: str, name: str) -> str:
    """The URI an artifact gets once its folder is complete: the folder's descriptor file."""
    return storage.join(folder, name)


def write_reference(uri: str, target: str, **facts: str) -> None:
    """Make the artifact at `uri` a reference to `target` (a storage URI), with `facts`
    (e.g. the data's fingerprint) beside it for people reading the artifact."""
    if not target:
        raise ArtifactURIError(f"{uri}: a reference needs a target URI")
    storage.write_json(uri, {"format": REFERENCE_FORMAT, "target": target, **facts})


def resolve(uri: str) -> str:
    """The URI an artifact stands for: the target of a reference, else the URI itself.

    One request: a read of the object's first bytes (a missing object is a folder, not a
    reference; more than _MAX_REFERENCE_BYTES is data)."""
    if uri.endswith(".json") or _is_local_folder(uri):
        return uri  # a descriptor file (model.json) or a folder, not a reference
    try:
        with storage.open_read(uri) as stream:
            head = stream.read(_MAX_REFERENCE_BYTES + 1)
    except storage.NotFoundError:
        return uri  # no object there: a folder in the store
    if len(head) > _MAX_REFERENCE_BYTES:
        return uri
    try:
        data = json.loads(head)
    except ValueError:  # UnicodeDecodeError is one
        return uri  # not JSON: the artifact is the data itself
    if isinstance(data, dict) and data.get("format") == REFERENCE_FORMAT:
        target = data.get("target")
        if not isinstance(target, str) or not target:
            raise ArtifactURIError(f"{uri}: reference without a target")
        return target
    return uri


def _is_local_folder(uri: str) -> bool:
    return not storage.is_s3(uri) and os.path.isdir(uri.removeprefix("file://"))


def model_folder(artifact_uri: str) -> str:
    """The folder of a Model artifact (its model.json's folder), through a reference."""
    return root(resolve(storage_uri(artifact_uri)), MODEL_CARD)


def dataset_location(artifact_uri: str) -> str:
    """Where a Dataset artifact's data is (a manifest.json, or an evaluation dataset's folder)."""
    return resolve(storage_uri(artifact_uri))
