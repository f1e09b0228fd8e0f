"""Create, replace or delete the scheduled retraining run of an uploaded Kubeflow pipeline.

The chart's bootstrap Jobs run this with kfp's client from the launch image:

  python recurring_run.py apply    # after install/upgrade: (re)create the recurring run
  python recurring_run.py delete   # before uninstall: remove it

Settings come from the environment (the chart sets them from values.yaml's recurringRun):
KFP_ENDPOINT, KFP_NAMESPACE, PIPELINE_NAME, PIPELINE_VERSION ("" for the newest),
EXPERIMENT_NAME, RECURRING_RUN_NAME, CRON_EXPRESSION, PIPELINE_PARAMETERS (a JSON object) and
RUN_SERVICE_ACCOUNT ("" for the server's default).

`apply` replaces any recurring run of the same name in the experiment, so rerunning it (each
`helm upgrade`) converges on the current values instead of piling up schedules. The run allows
one execution at a time and does not catch up on schedules missed while it was paused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import kfp
import urllib3
from kfp.client import KF_PIPELINES_SA_TOKEN_ENV, KF_PIPELINES_SA_TOKEN_PATH
from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials
from kfp_server_api.exceptions import ApiException

# One training run at a time: two would compete for the same accelerators and outputs.
MAX_CONCURRENCY = 1


class BootstrapError(RuntimeError):
    """A setting or a server state this script cannot work with; printed without a traceback."""


@dataclass(frozen=True)
class Settings:
    endpoint: str
    namespace: str
    pipeline_name: str
    pipeline_version: str
    experiment_name: str
    recurring_run_name: str
    cron: str
    parameters: dict[str, Any]
    run_service_account: str


def settings_from_env(env: Mapping[str, str]) -> Settings:
    def required(name: str) -> str:
        value = env.get(name, "").strip()
        if not value:
            raise BootstrapError(f"environment variable {name} is empty or unset")
        return value

    cron = required("CRON_EXPRESSION")
    if len(cron.split()) != 6:
        raise BootstrapError(
            f"CRON_EXPRESSION {cron!r}: Kubeflow Pipelines takes 6 fields "
            "(second minute hour day-of-month month day-of-week)"
        )
    try:
        parameters = json.loads(env.get("PIPELINE_PARAMETERS") or "{}")
    except json.JSONDecodeError as exc:
        raise BootstrapError(f"PIPELINE_PARAMETERS is not JSON: {exc}") from exc
    if not isinstance(parameters, dict):
        raise BootstrapError("PIPELINE_PARAMETERS must be a JSON object of name → value")
    return Settings(
        endpoint=required("KFP_ENDPOINT"),
        namespace=required("KFP_NAMESPACE"),
        pipeline_name=required("PIPELINE_NAME"),
        pipeline_version=env.get("PIPELINE_VERSION", "").strip(),
        experiment_name=required("EXPERIMENT_NAME"),
        recurring_run_name=required("RECURRING_RUN_NAME"),
        cron=cron,
        parameters=parameters,
        run_service_account=env.get("RUN_SERVICE_ACCOUNT", "").strip(),
    )


def connect(settings: Settings, env: Mapping[str, str]) -> kfp.Client:
    """A client for the API at the endpoint. In a Kubeflow profile the API server authenticates
    the pod by its projected ServiceAccount token; kfp only reads it when told to, because an
    explicit host makes it skip its in-cluster defaults."""
    token_path = env.get(KF_PIPELINES_SA_TOKEN_ENV, KF_PIPELINES_SA_TOKEN_PATH)
    credentials = (
        ServiceAccountTokenVolumeCredentials(token_path) if os.path.exists(token_path) else None
    )
    return kfp.Client(host=settings.endpoint, namespace=settings.namespace, credentials=credentials)


def _name_filter(name: str) -> str:
    return json.dumps(
        {"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]}
    )


def find_pipeline(client: kfp.Client, settings: Settings) -> str:
    """The pipeline's ID: one uploaded to this namespace, else a shared one of that name."""
    for namespace in (settings.namespace, None):
        found = client.list_pipelines(
            filter=_name_filter(settings.pipeline_name), namespace=namespace, page_size=2
        ).pipelines
        if found and len(found) > 1:
            raise BootstrapError(f"more than one pipeline is named {settings.pipeline_name!r}")
        if found:
            return found[0].pipeline_id
    raise BootstrapError(
        f"no pipeline named {settings.pipeline_name!r} in namespace {settings.namespace} or "
        "shared; upload it first (the pipeline CLI's --submit does)"
    )


def find_pipeline_version(client: kfp.Client, pipeline_id: str, settings: Settings) -> str:
    """The version named in the settings, or the newest one."""
    if settings.pipeline_version:
        versions = client.list_pipeline_versions(
            pipeline_id, filter=_name_filter(settings.pipeline_version), page_size=2
        ).pipeline_versions
        what = f"version {settings.pipeline_version!r}"
    else:
        versions = client.list_pipeline_versions(
            pipeline_id, sort_by="created_at desc", page_size=1
        ).pipeline_versions
        what = "version"
    if not versions:
        raise BootstrapError(f"pipeline {settings.pipeline_name!r} has no {what}")
    return versions[0].pipeline_version_id


def _recurring_runs_named(client: kfp.Client, experiment_id: str, name: str) -> list[Any]:
    runs: list[Any] = []
    page_token = ""
    while True:
        page = client.list_recurring_runs(
            experiment_id=experiment_id,
            filter=_name_filter(name),
            page_token=page_token,
            page_size=100,
        )
        runs.extend(page.recurring_runs or [])
        page_token = page.next_page_token or ""
        if not page_token:
            return runs


def delete_recurring_runs(client: kfp.Client, experiment_id: str, name: str) -> int:
    runs = _recurring_runs_named(client, experiment_id, name)
    for run in runs:
        client.delete_recurring_run(run.recurring_run_id)
        print(f"deleted recurring run {name!r} ({run.recurring_run_id})")
    return len(runs)


def apply(client: kfp.Client, settings: Settings) -> str:
    """Create the recurring run, replacing one of the same name; returns its ID."""
    pipeline_id = find_pipeline(client, settings)
    version_id = find_pipeline_version(client, pipeline_id, settings)
    experiment = client.create_experiment(settings.experiment_name, namespace=settings.namespace)
    delete_recurring_runs(client, experiment.experiment_id, settings.recurring_run_name)
    created = client.create_recurring_run(
        experiment_id=experiment.experiment_id,
        job_name=settings.recurring_run_name,
        cron_expression=settings.cron,
        max_concurrency=MAX_CONCURRENCY,
        no_catchup=True,
        params=settings.parameters,
        pipeline_id=pipeline_id,
        version_id=version_id,
        enabled=True,
        service_account=settings.run_service_account or None,
    )
    print(
        f"created recurring run {settings.recurring_run_name!r} ({created.recurring_run_id}): "
        f"pipeline {settings.pipeline_name!r} version {version_id}, cron {settings.cron!r}"
    )
    return created.recurring_run_id


def delete(client: kfp.Client, settings: Settings) -> int:
    """Remove the recurring run of this name; returns how many were removed."""
    try:
        experiment = client.get_experiment(
            experiment_name=settings.experiment_name, namespace=settings.namespace
        )
    except ValueError as exc:  # kfp's way of saying it found no experiment, or several
        if not str(exc).startswith("No experiment is found"):
            raise BootstrapError(str(exc)) from exc
        print(f"no experiment {settings.experiment_name!r}: nothing to delete")
        return 0
    return delete_recurring_runs(client, experiment.experiment_id, settings.recurring_run_name)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("apply", "delete"))
    args = parser.parse_args(argv)
    env = os.environ if env is None else env
    try:
        settings = settings_from_env(env)
        client = connect(settings, env)
        if args.action == "apply":
            apply(client, settings)
        else:
            delete(client, settings)
    except BootstrapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ApiException as exc:
        print(
            f"error: the Kubeflow Pipelines API answered {exc.status}: {exc.body}", file=sys.stderr
        )
        return 1
    except urllib3.exceptions.HTTPError as exc:
        print(f"error: cannot reach the Kubeflow Pipelines API: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
