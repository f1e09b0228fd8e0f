"""Submitting a compiled pipeline to a Kubeflow Pipelines server: a new pipeline version, then a
run of it or a recurring run (kfp.Client over the v2beta1 REST API).

Credentials: a bearer token from `MAWSFLOW_KFP_TOKEN`, or inside a cluster the projected
ServiceAccount token that Kubeflow Pipelines reads (`KF_PIPELINES_SA_TOKEN_PATH`, default
/var/run/secrets/kubeflow/pipelines/token). A server that refuses them, one that cannot be
reached, and one that answers with an error each end in a `SubmissionError` that says which.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import kfp
import urllib3
from kfp.client import KF_PIPELINES_SA_TOKEN_ENV, KF_PIPELINES_SA_TOKEN_PATH
from kfp_server_api.exceptions import ApiException

TOKEN_ENV = "MAWSFLOW_KFP_TOKEN"
# One training run at a time: two would compete for the same accelerators and outputs.
MAX_CONCURRENCY = 1


class SubmissionError(RuntimeError):
    """The server could not be reached, refused us, or refused the request."""


@dataclass(frozen=True)
class Target:
    """Where a pipeline goes and what its runs are called."""

    host: str
    pipeline_name: str
    version_name: str
    experiment: str
    namespace: str | None = None
    description: str = ""


@dataclass(frozen=True)
class RunSettings:
    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    service_account: str | None = None


@dataclass(frozen=True)
class Uploaded:
    pipeline_id: str
    version_id: str
    experiment_id: str


def check_host(host: str) -> str:
    url = urlparse(host)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise SubmissionError(
            f"--host {host!r}: expected the Kubeflow Pipelines API's URL, e.g. "
            "http://ml-pipeline.kubeflow:8888 or https://kubeflow.example.com/pipeline"
        )
    return host.rstrip("/")


def check_cron(cron: str) -> str:
    if len(cron.split()) != 6:
        raise SubmissionError(
            f"--schedule {cron!r}: Kubeflow Pipelines takes 6 cron fields (second minute hour "
            "day-of-month month day-of-week), e.g. '0 0 3 * * 0' for Sundays at 03:00"
        )
    return cron


@contextlib.contextmanager
def _explained(host: str) -> Iterator[None]:
    """kfp's and its HTTP layer's errors, as one SubmissionError that says what happened."""
    try:
        yield
    except ApiException as exc:
        if exc.status in (401, 403):
            raise SubmissionError(
                f"the Kubeflow Pipelines API at {host} refused the request ({exc.status} "
                f"{exc.reason}): give a token in {TOKEN_ENV}, or run where the pipelines "
                f"ServiceAccount token is mounted ({KF_PIPELINES_SA_TOKEN_ENV})"
            ) from None
        raise SubmissionError(
            f"the Kubeflow Pipelines API at {host} answered {exc.status} {exc.reason}: "
            f"{(exc.body or '').strip()[:500]}"
        ) from None
    except urllib3.exceptions.HTTPError as exc:
        reason = getattr(exc, "reason", None) or exc
        raise SubmissionError(f"cannot reach Kubeflow Pipelines at {host}: {reason}") from None


def _token(env: Mapping[str, str]) -> str | None:
    """The bearer token: MAWSFLOW_KFP_TOKEN, else the mounted pipelines ServiceAccount token."""
    if env.get(TOKEN_ENV):
        return env[TOKEN_ENV]
    path = env.get(KF_PIPELINES_SA_TOKEN_ENV, KF_PIPELINES_SA_TOKEN_PATH)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    return None


def check_server(host: str, token: str | None) -> dict[str, Any]:
    """One health request, so that an unreachable server or refused credentials end in a clear
    error at once (kfp's own check retries for half a minute and logs every traceback)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    pool = urllib3.PoolManager(timeout=urllib3.Timeout(connect=10.0, read=30.0))
    with _explained(host):
        response = pool.request(
            "GET", f"{host}/apis/v2beta1/healthz", headers=headers, retries=urllib3.Retry(2)
        )
    if response.status in (401, 403):
        raise SubmissionError(
            f"the Kubeflow Pipelines API at {host} refused the request ({response.status}): "
            f"give a token in {TOKEN_ENV}, or run where the pipelines ServiceAccount token is "
            f"mounted ({KF_PIPELINES_SA_TOKEN_ENV})"
        )
    try:
        health = json.loads(response.data)
    except ValueError:
        health = None
    if response.status != 200 or not isinstance(health, dict):
        raise SubmissionError(
            f"{host} answered {response.status} to Kubeflow Pipelines' health check: is it the "
            "Kubeflow Pipelines API?"
        )
    return health


def connect(target: Target, env: Mapping[str, str] | None = None) -> kfp.Client:
    env = os.environ if env is None else env
    host = check_host(target.host)
    token = _token(env)
    health = check_server(host, token)
    if health.get("multi_user") and not target.namespace:
        raise SubmissionError(
            f"Kubeflow Pipelines at {host} is multi-user: give --namespace, your profile's "
            "namespace"
        )
    with _explained(host), warnings.catch_warnings():
        # kfp warns on every construction that it needs a v2 server; ours is one.
        warnings.filterwarnings("ignore", message="This client only works", category=FutureWarning)
        return kfp.Client(host=host, namespace=target.namespace or "kubeflow", existing_token=token)


def upload(client: kfp.Client, target: Target, package_path: str) -> Uploaded:
    """Upload the package as a new version of the pipeline (creating the pipeline the first
    time), and find or create the experiment its runs go in."""
    with _explained(target.host):
        pipeline_id = client.get_pipeline_id(target.pipeline_name)
        if pipeline_id is None:
            pipeline = client.upload_pipeline(
                package_path,
                pipeline_name=target.pipeline_name,
                description=target.description,
                namespace=target.namespace,
            )
            pipeline_id = pipeline.pipeline_id
            # A new pipeline's upload creates its first version.
            versions = client.list_pipeline_versions(
                pipeline_id, sort_by="created_at desc", page_size=1
            ).pipeline_versions
            if not versions:
                raise SubmissionError(
                    f"pipeline {target.pipeline_name!r} was created without a version"
                )
            version_id = versions[0].pipeline_version_id
        else:
            version = client.upload_pipeline_version(
                package_path,
                pipeline_version_name=target.version_name,
                pipeline_id=pipeline_id,
                description=target.description,
            )
            version_id = version.pipeline_version_id
        experiment = client.create_experiment(target.experiment, namespace=target.namespace)
    return Uploaded(pipeline_id, version_id, experiment.experiment_id)


def start_run(client: kfp.Client, target: Target, uploaded: Uploaded, run: RunSettings) -> str:
    """Start a run of the uploaded version; returns its id."""
    with _explained(target.host):
        created = client.run_pipeline(
            experiment_id=uploaded.experiment_id,
            job_name=run.name,
            params=dict(run.arguments),
            pipeline_id=uploaded.pipeline_id,
            version_id=uploaded.version_id,
            service_account=run.service_account,
        )
    return created.run_id


def schedule(
    client: kfp.Client,
    target: Target,
    uploaded: Uploaded,
    run: RunSettings,
    cron: str,
    *,
    catch_up: bool = False,
) -> str:
    """A recurring run of the uploaded version: one run at a time, and by default no catching
    up on the schedules missed while it was paused. Returns its id."""
    check_cron(cron)
    with _explained(target.host):
        created = client.create_recurring_run(
            experiment_id=uploaded.experiment_id,
            job_name=run.name,
            cron_expression=cron,
            max_concurrency=MAX_CONCURRENCY,
            no_catchup=not catch_up,
            params=dict(run.arguments),
            pipeline_id=uploaded.pipeline_id,
            version_id=uploaded.version_id,
            enabled=True,
            service_account=run.service_account,
        )
    return created.recurring_run_id
