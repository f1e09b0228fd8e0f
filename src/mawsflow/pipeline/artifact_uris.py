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
a pretraining dataset is its `manifest.json`, an evaluation dataset its `classes.json`, a
model its `model.json`. Steps stream the rest from the store.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from mawsflow import storage

DATASET_MANIFEST = "manifest.json"
EVAL_CLASSES = "classes.json"
MODEL_CARD = "model.json"

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
