"""The Helm chart (charts/mawsflow): lint and render with helm-python-sdk (Helm compiled in), strict
validation of every rendered manifest for every Kubernetes version the chart claims, least
privilege RBAC, no secret value unless one is given, the values schema, the alerts and dashboard
against the metrics the training engine exposes, and the recurring-run bootstrap against an
in-process stand-in for the Kubeflow Pipelines REST API."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import sys
import tomllib
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, all_versions, schema_contents

from kfp_api_standin import empty_state, serve
from mawsflow.metrics import TrainingMetrics
from mawsflow.orchestration.dag import RETRAIN_PARAMETERS
from mawsflow.steps.promotion_gate import decision_metrics

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "mawsflow"
NAMESPACE = "kubeflow-user-example-com"
RELEASE = "mawsflow"
ACCESS_KEY_ID = "AKIAMAWSFLOWTESTKEY1"
SECRET_ACCESS_KEY = "mawsflow/test+secret=value-0123456789"

# Every switch turned and most values changed from their defaults.
NON_DEFAULT_VALUES = {
    "commonLabels": {"team": "vision"},
    "serviceAccount": {"name": "maws-launcher", "annotations": {"example.com/role": "trainer"}},
    "objectStore": {
        "endpoint": "https://s3.example.com",
        "region": "eu-west-1",
        "extraEnv": {"AWS_REQUEST_CHECKSUM_CALCULATION": "when_required"},
        "credentials": {
            "existingSecret": "",
            "accessKeyId": ACCESS_KEY_ID,
            "secretAccessKey": SECRET_ACCESS_KEY,
        },
    },
    "monitoring": {
        "podSelector": {"app.kubernetes.io/part-of": "mawsflow-training"},
        "podMonitor": {"labels": {"release": "kube-prometheus-stack"}, "interval": "15s"},
        "rules": {
            "labels": {"release": "kube-prometheus-stack"},
            "stalledRun": {"window": "30m", "for": "5m", "severity": "warning"},
            "starvingDataLoader": {"threshold": 0.35, "window": "5m", "for": "20m"},
        },
        "dashboard": {"annotations": {"grafana_folder": "mawsflow"}},
    },
    "recurringRun": {
        "enabled": True,
        "pipelineName": "maws-vit-b16",
        "pipelineVersion": "v3",
        "cron": "0 30 2 * * 1",
        "parameters": {"preset": "demo", "arch": "vit_b16"},
        "runServiceAccount": "maws-launcher",
        "image": {"digest": "sha256:" + "c0" * 32},
        "podAnnotations": {"sidecar.istio.io/inject": "false"},
    },
}
VALUE_SETS = {"default": {}, "non-default": NON_DEFAULT_VALUES}

LAUNCHER_GRANTS = (
    {("kubeflow.org", "pytorchjobs", verb) for verb in ("create", "get", "watch", "delete")}
    | {("trainer.kubeflow.org", "trainjobs", verb) for verb in ("create", "get", "watch", "delete")}
    | {("", "pods", verb) for verb in ("get", "list", "watch")}
    | {("", "pods/log", "get")}
)

MONITORING_GROUP = "monitoring.coreos.com"


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart, values: dict) -> dict[str, str]:
    return chart.render(values, name=RELEASE, namespace=NAMESPACE)


def manifests(rendered: dict[str, str]) -> list[dict]:
    return [
        doc
        for path, text in sorted(rendered.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


# --- Kubernetes versions -------------------------------------------------------------------------

_TERM = re.compile(r"^(>=|<=|!=|>|<|=)?\s*v?(\d+)\.(\d+)(?:\.(\d+))?(?:-[0-9A-Za-z.-]+)?$")
_COMPARE = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


def satisfies(version: str, constraint: str) -> bool:
    """Helm's kubeVersion constraint (comparisons joined by commas or spaces, alternatives by
    ||) for plain release versions; any other syntax fails loudly rather than guessing."""
    release = tuple(int(part) for part in version.split("."))
    for alternative in constraint.split("||"):
        ok = True
        for term in re.split(r"\s*,\s*|\s+(?=[<>=!v\d])", alternative.strip()):
            match = _TERM.match(term)
            assert match, f"kubeVersion term {term!r} is outside what this test understands"
            bound = (int(match[2]), int(match[3]), int(match[4] or 0))
            ok &= _COMPARE[match[1] or "="](release, bound)
        if ok:
            return True
    return False


def claimed_versions() -> list[str]:
    constraint = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    return [v for v in sorted(set(all_versions()), key=_version_key) if satisfies(v, constraint)]


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


CLAIMED = claimed_versions()


def test_chart_claims_the_kubernetes_versions_it_is_validated_against():
    assert CLAIMED, "the chart's kubeVersion admits no version kubernetes-validate knows"
    assert CLAIMED[0] == "1.31.0"  # Kubeflow Trainer v2 needs 1.31
    assert CLAIMED[-1] == sorted(set(all_versions()), key=_version_key)[-1]
    assert not satisfies(
        "1.30.0", yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    )


# --- Prometheus Operator objects: a strict schema from its documented API ----------------------

_K8S_DEFS = "https://kubernetes.io/api/_definitions.json#/$defs/"
_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
    r"(([0-9]+)ms)?)$",
}
_LABEL_NAME = {"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}


def _object(properties: dict, required: tuple[str, ...] = ()) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


def _resource(kind: str, spec: dict) -> dict:
    return _object(
        {
            "apiVersion": {"const": f"{MONITORING_GROUP}/v1"},
            "kind": {"const": kind},
            "metadata": {"$ref": _K8S_DEFS + "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
            "spec": spec,
        },
        ("apiVersion", "kind", "metadata", "spec"),
    )


_RELABEL_CONFIG = _object(
    {
        "sourceLabels": {"type": "array", "items": _LABEL_NAME},
        "separator": {"type": "string"},
        "targetLabel": {"type": "string"},
        "regex": {"type": "string"},
        "modulus": {"type": "integer", "minimum": 0},
        "replacement": {"type": "string"},
        "action": {
            "enum": [
                spelling
                for action in (
                    "replace",
                    "keep",
                    "drop",
                    "hashmod",
                    "labelmap",
                    "labeldrop",
                    "labelkeep",
                    "lowercase",
                    "uppercase",
                    "keepequal",
                    "dropequal",
                )
                for spelling in (action, action[0].upper() + action[1:])
            ]
            + ["HashMod", "LabelMap", "LabelDrop", "LabelKeep", "KeepEqual", "DropEqual"]
        },
    }
)
_POD_METRICS_ENDPOINT = _object(
    {
        "port": {"type": "string"},
        "portNumber": {"type": "integer", "minimum": 1, "maximum": 65535},
        "path": {"type": "string"},
        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
        "params": {"type": "object", "additionalProperties": {"type": "array"}},
        "interval": _DURATION,
        "scrapeTimeout": _DURATION,
        "honorLabels": {"type": "boolean"},
        "honorTimestamps": {"type": "boolean"},
        "trackTimestampsStaleness": {"type": "boolean"},
        "filterRunning": {"type": "boolean"},
        "enableHttp2": {"type": "boolean"},
        "followRedirects": {"type": "boolean"},
        "relabelings": {"type": "array", "items": _RELABEL_CONFIG},
        "metricRelabelings": {"type": "array", "items": _RELABEL_CONFIG},
    }
)
POD_MONITOR_SCHEMA = _resource(
    "PodMonitor",
    _object(
        {
            "jobLabel": {"type": "string"},
            "podTargetLabels": {"type": "array", "items": {"type": "string"}},
            "podMetricsEndpoints": {"type": "array", "items": _POD_METRICS_ENDPOINT},
            "selector": {"$ref": _K8S_DEFS + "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"},
            "namespaceSelector": _object(
                {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {}}}
            ),
            "sampleLimit": {"type": "integer", "minimum": 0},
            "targetLimit": {"type": "integer", "minimum": 0},
            "labelLimit": {"type": "integer", "minimum": 0},
            "labelNameLengthLimit": {"type": "integer", "minimum": 0},
            "labelValueLengthLimit": {"type": "integer", "minimum": 0},
            "scrapeClass": {"type": "string", "minLength": 1},
        },
        ("selector",),
    ),
)
_RULE = {
    **_object(
        {
            "alert": {"type": "string", "minLength": 1},
            "record": _LABEL_NAME,
            "expr": {"type": ["string", "integer"], "minLength": 1},
            "for": _DURATION,
            "keep_firing_for": _DURATION,
            "labels": {"type": "object", "propertyNames": _LABEL_NAME, **_STRING_MAP},
            "annotations": _STRING_MAP,
        },
        ("expr",),
    ),
    # Exactly one of alert and record; annotations only on alerts.
    "oneOf": [
        {"required": ["alert"], "not": {"required": ["record"]}},
        {
            "required": ["record"],
            "not": {"anyOf": [{"required": ["alert"]}, {"required": ["for"]}]},
        },
    ],
}
PROMETHEUS_RULE_SCHEMA = _resource(
    "PrometheusRule",
    _object(
        {
            "groups": {
                "type": "array",
                "items": _object(
                    {
                        "name": {"type": "string", "minLength": 1},
                        "interval": _DURATION,
                        "limit": {"type": "integer"},
                        "query_offset": _DURATION,
                        "labels": _STRING_MAP,
                        "partial_response_strategy": {"type": "string"},
                        "rules": {"type": "array", "items": _RULE},
                    },
                    ("name",),
                ),
            }
        }
    ),
)
MONITORING_SCHEMAS = {"PodMonitor": POD_MONITOR_SCHEMA, "PrometheusRule": PROMETHEUS_RULE_SCHEMA}


def monitoring_validator(kind: str, version: str) -> jsonschema.Draft202012Validator:
    """A strict validator for a Prometheus Operator object, whose metadata and label selector are
    checked against Kubernetes' own (strict) definitions for `version`."""
    definitions = schema_contents(
        f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version
    )
    registry = referencing.Resource.from_contents(definitions) @ referencing.Registry()
    return jsonschema.Draft202012Validator(MONITORING_SCHEMAS[kind], registry=registry)


def validate_strictly(doc: dict, version: str) -> None:
    if doc["apiVersion"].split("/")[0] == MONITORING_GROUP:
        monitoring_validator(doc["kind"], version).validate(doc)
    else:
        kubernetes_validate.validate(doc, version, strict=True)


# --- lint and render -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_chart_lints_without_warnings(name):
    report = helm.lint(CHART, VALUE_SETS[name], strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    # Severity 2 is a warning, 3 an error; 1 (info) is only the missing icon.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_chart_renders_what_the_issue_lists(chart, name):
    docs = manifests(render(chart, VALUE_SETS[name]))
    kinds = sorted(doc["kind"] for doc in docs)
    expected = [
        "ConfigMap",  # object store
        "ConfigMap",  # Grafana dashboard
        "PodMonitor",
        "PrometheusRule",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ]
    if name == "non-default":
        expected += ["ConfigMap", "Job", "Job", "Secret"]  # bootstrap script, hooks, S3 keys
    assert kinds == sorted(expected)
    for doc in docs:
        assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "mawsflow"


@pytest.mark.parametrize("version", CLAIMED)
@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_rendered_manifests_validate_strictly(chart, name, version):
    for doc in manifests(render(chart, VALUE_SETS[name])):
        try:
            validate_strictly(doc, version)
        except SchemaNotFoundError as exc:
            pytest.fail(f"{doc['kind']} {doc['apiVersion']}: {exc.message}")


@pytest.mark.parametrize(
    "kind, mutate",
    [
        ("PodMonitor", lambda d: d["spec"].update(podMetricEndpoints=[])),  # misspelt field
        ("PodMonitor", lambda d: d["spec"]["podMetricsEndpoints"][0].update(interval="30 s")),
        ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].update(record="x")),
        ("PrometheusRule", lambda d: d["metadata"].update(lables={})),  # Kubernetes' ObjectMeta
    ],
)
def test_the_monitoring_schema_refuses_what_the_operator_would(chart, kind, mutate):
    doc = of_kind(manifests(render(chart, {})), kind)[0]
    validate_strictly(doc, CLAIMED[0])
    mutate(doc)
    with pytest.raises(jsonschema.ValidationError):
        validate_strictly(doc, CLAIMED[0])


# --- RBAC ----------------------------------------------------------------------------------------


def role_grants(role: dict) -> set[tuple[str, str, str, str]]:
    """(apiGroup, resource, verb, resourceName or "*") for every rule of a Role."""
    grants = set()
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}  # no URLs
        names = rule.get("resourceNames") or ["*"]
        grants |= {
            (group, resource, verb, name)
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
            for name in names
        }
    return grants


def unnamed(grants: set) -> set[tuple[str, str, str, str]]:
    return {(*grant, "*") for grant in grants}


# With serviceAccount.runIdentity: what a pipeline run's pods need beyond the launcher's rights
# when they run as the chart's ServiceAccount. Each is read from the source that needs it:
# Argo's executor role (tests/data/rbac/argo-emissary-executor-role.yaml); KFP's driver reads
# the kfp-launcher ConfigMap (backend/src/v2/config/env.go) and its launcher the artifact
# store's Secret (backend/src/v2/objectstore/object_store.go) and its own pod
# (component/launcher_v2.go, retryIndexFromPodAnnotation: in LAUNCHER_GRANTS already).
RUN_IDENTITY_GRANTS = {
    ("argoproj.io", "workflowtaskresults", "create", "*"),
    ("argoproj.io", "workflowtaskresults", "patch", "*"),
    ("", "configmaps", "get", "*"),
    ("", "secrets", "get", "mlpipeline-minio-artifact"),
}
RBAC_DATA = Path(__file__).parent / "data" / "rbac"


def vendored_roles(name: str) -> list[dict]:
    with open(RBAC_DATA / name, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d and d["kind"] in ("Role", "ClusterRole")]


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_the_role_grants_exactly_what_the_launcher_and_a_run_need(chart, name):
    docs = manifests(render(chart, VALUE_SETS[name]))
    assert not of_kind(docs, "ClusterRole") and not of_kind(docs, "ClusterRoleBinding")
    (role,) = of_kind(docs, "Role")
    assert role_grants(role) == unnamed(LAUNCHER_GRANTS) | RUN_IDENTITY_GRANTS
    (binding,) = of_kind(docs, "RoleBinding")
    (account,) = of_kind(docs, "ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    if name == "non-default":
        assert account["metadata"]["name"] == "maws-launcher"


def test_without_run_identity_the_role_is_the_launchers_alone(chart):
    docs = manifests(render(chart, {"serviceAccount": {"runIdentity": False}}))
    (role,) = of_kind(docs, "Role")
    assert role_grants(role) == unnamed(LAUNCHER_GRANTS)


def test_run_identity_holds_what_argos_executor_and_kfps_runner_role_grant(chart):
    """The run-identity grants are the Argo executor's whole role, and each of the others is
    one that KFP grants its own runner (pipeline-runner) for the same purpose."""
    (role,) = of_kind(manifests(render(chart, {})), "Role")
    granted = {g[:3] for g in role_grants(role)}
    (executor,) = vendored_roles("argo-emissary-executor-role.yaml")
    assert {g[:3] for g in role_grants(executor)} <= granted
    (runner,) = vendored_roles("kfp-2.17.0-pipeline-runner-role.yaml")
    runner_grants = {g[:3] for g in role_grants(runner)}
    for group, resource, verb, _ in RUN_IDENTITY_GRANTS:
        assert (group, resource, verb) in runner_grants or (group, resource, "*") in runner_grants
    # The secret is the one KFP's launcher reads: named, not every Secret of the namespace.
    assert ("", "secrets", "get", "*") not in role_grants(role)


def test_kubeflow_edit_holds_the_job_and_executor_rights_a_run_needs():
    """A multi-user run's default identity is the profile's default-editor, bound to
    kubeflow-edit. Gather what KFP and the training operators aggregate into it (their
    manifests in tests/data/rbac) and check that it holds the run's Argo grants and the
    launcher's job rights for both backends. (Pods and pods/log come from Kubeflow's own
    kubeflow-kubernetes-edit, in kubeflow/manifests, not vendored here; the Trainer also
    aggregates them for TrainJobs.)"""
    roles = [
        r
        for f in (
            "kfp-2.17.0-view-edit-cluster-roles.yaml",
            "training-operator-v1.9.3-kubeflow-training-roles.yaml",
            "trainer-v2.3.0-kubeflow-trainer-roles.yaml",
        )
        for r in vendored_roles(f)
    ]

    def aggregated_into(label: str) -> set[tuple[str, str, str]]:
        grants: set[tuple[str, str, str]] = set()
        for role in roles:
            if role["metadata"].get("labels", {}).get(label) != "true":
                continue
            grants |= {g[:3] for g in role_grants(role)}
            for selector in role.get("aggregationRule", {}).get("clusterRoleSelectors", []):
                for inner_label in selector["matchLabels"]:
                    grants |= aggregated_into(inner_label)
        return grants

    edit = aggregated_into("rbac.authorization.kubeflow.org/aggregate-to-kubeflow-edit")

    def holds(group: str, resource: str, verb: str) -> bool:
        return bool({(group, resource, verb), (group, resource, "*")} & edit)

    for group, resource, verb in [
        ("argoproj.io", "workflowtaskresults", "create"),
        ("argoproj.io", "workflowtaskresults", "patch"),
        *[("kubeflow.org", "pytorchjobs", v) for v in ("create", "get", "watch", "delete")],
        *[("trainer.kubeflow.org", "trainjobs", v) for v in ("create", "get", "watch", "delete")],
        ("", "pods/log", "get"),
    ]:
        assert holds(group, resource, verb), (group, resource, verb)


# --- secrets -------------------------------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_default_render_holds_no_secret_and_points_at_kubeflows_artifact_secret(chart):
    rendered = render(chart, {})
    docs = manifests(rendered)
    assert not of_kind(docs, "Secret")
    store = next(d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("store"))
    assert store["data"] == {
        "AWS_ENDPOINT_URL": "http://minio-service.kubeflow:9000",
        "AWS_DEFAULT_REGION": "us-east-1",
        "MAWSFLOW_S3_SECRET_NAME": "mlpipeline-minio-artifact",
        "MAWSFLOW_S3_ACCESS_KEY_ID_KEY": "accesskey",
        "MAWSFLOW_S3_SECRET_ACCESS_KEY_KEY": "secretkey",
    }
    everything = "\n".join(rendered.values())
    assert "stringData" not in everything
    assert not re.search(r"AWS_(SECRET_ACCESS_KEY|ACCESS_KEY_ID|SESSION_TOKEN):", everything)


def test_given_keys_appear_only_in_the_secret(chart):
    rendered = render(chart, NON_DEFAULT_VALUES)
    (secret,) = of_kind(manifests(rendered), "Secret")
    assert secret["data"] == {
        "AWS_ACCESS_KEY_ID": _b64(ACCESS_KEY_ID),
        "AWS_SECRET_ACCESS_KEY": _b64(SECRET_ACCESS_KEY),
    }
    for path, text in rendered.items():
        for value in (ACCESS_KEY_ID, SECRET_ACCESS_KEY):
            assert value not in text, f"{path} holds a credential in clear"
            if not path.endswith("s3-secret.yaml"):
                assert _b64(value) not in text, f"{path} holds a credential"
    store = next(d for d in of_kind(manifests(rendered), "ConfigMap") if "S3" in str(d["data"]))
    assert store["data"]["MAWSFLOW_S3_SECRET_NAME"] == secret["metadata"]["name"]
    assert store["data"]["MAWSFLOW_S3_ACCESS_KEY_ID_KEY"] == "AWS_ACCESS_KEY_ID"
    assert store["data"]["AWS_REQUEST_CHECKSUM_CALCULATION"] == "when_required"


@pytest.mark.parametrize(
    "credentials, message",
    [
        ({"accessKeyId": "a", "secretAccessKey": "b"}, "either existingSecret or accessKeyId"),
        ({"existingSecret": "", "accessKeyId": "a"}, "must be given together"),
        ({"existingSecret": ""}, "name an existingSecret, or give"),
    ],
)
def test_contradictory_or_missing_credentials_are_refused(chart, credentials, message):
    with pytest.raises(helm.HelmError, match=message):
        render(chart, {"objectStore": {"credentials": credentials}})


# --- values schema -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, where",
    [
        ({"monitoring": {"podMonitr": {}}}, "podMonitr"),
        ({"recurringRun": {"image": {"tag": "latest"}}}, "/recurringRun/image/tag"),
        ({"recurringRun": {"cron": "0 3 * * 0"}}, "/recurringRun/cron"),
        ({"recurringRun": {"image": {"digest": "sha256:abc"}}}, "/recurringRun/image/digest"),
        ({"monitoring": {"rules": {"stalledRun": {"window": "ten minutes"}}}}, "window"),
        ({"monitoring": {"rules": {"starvingDataLoader": {"threshold": 1.5}}}}, "threshold"),
        ({"objectStore": {"endpoint": "minio:9000"}}, "/objectStore/endpoint"),
        ({"objectStore": {"extraEnv": {"AWS_SECRET_ACCESS_KEY": "x"}}}, "AWS_SECRET_ACCESS_KEY"),
        ({"serviceAccount": {"name": "Not_A_Name"}}, "/serviceAccount/name"),
        # null deletes a default key in Helm; an empty selector would scrape every pod.
        ({"monitoring": {"podSelector": {"app.kubernetes.io/managed-by": None}}}, "podSelector"),
    ],
)
def test_values_schema_refuses_bad_values_by_name(chart, values, where):
    with pytest.raises(helm.HelmValuesError) as caught:
        render(chart, values)
    assert where in str(caught.value)


def test_every_value_is_documented_in_the_schema(chart):
    def leaves(values, schema, path=""):
        assert "description" in schema or path == "", f"{path or '/'} has no description"
        for key, value in values.items():
            assert key in schema["properties"], f"{path}/{key} is not in values.schema.json"
            child = schema["properties"][key]
            if isinstance(value, dict) and "properties" in child:
                leaves(value, child, f"{path}/{key}")
            else:
                assert "description" in child, f"{path}/{key} has no description"

    leaves(chart.values, json.loads((CHART / "values.schema.json").read_text()))


# --- monitoring against the metrics the engine exposes -------------------------------------------


def exposed_metric_names() -> dict[str, set[str]]:
    """Family name → the sample names Prometheus sees for it (counters get _total, histograms
    _bucket/_sum/_count)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    families = TrainingMetrics(step="mae").registry.collect()
    return {f.name: {f.name + s for s in suffixes[f.type]} for f in families}


def referenced_metrics(text: str) -> set[str]:
    return set(re.findall(r"\bmawsflow_[a-z_]+\b", text))


def test_alerts_are_the_three_the_issue_asks_for_on_real_metrics(chart):
    (rule,) = of_kind(manifests(render(chart, {})), "PrometheusRule")
    groups = {group["name"]: group["rules"] for group in rule["spec"]["groups"]}
    rules = {r["alert"]: r for r in groups["mawsflow-training"]}
    assert set(rules) == {
        "MawsflowTrainingStalled",
        "MawsflowLossNotFinite",
        "MawsflowDataLoaderStarving",
    }
    # Scheduled retraining's alert reads what the promotion gate pushes.
    (rejected,) = groups["mawsflow-retraining"]
    pushed = {f.name for f in decision_metrics(False, "m").collect()}
    assert rejected["alert"] == "MawsflowPromotionRejected"
    assert referenced_metrics(rejected["expr"]) <= pushed
    assert "{{ $labels.candidate }}" in rejected["annotations"]["description"]
    known = set().union(*exposed_metric_names().values())
    for alert in rules.values():
        assert referenced_metrics(alert["expr"]) <= known, alert["alert"]
        assert alert["labels"]["severity"] in {"critical", "warning"}
        assert "{{ $labels.pod }}" in alert["annotations"]["description"]
    assert "mawsflow_optimizer_steps_total[10m]" in rules["MawsflowTrainingStalled"]["expr"]
    assert "mawsflow_loss != mawsflow_loss" in rules["MawsflowLossNotFinite"]["expr"]
    assert "Inf" in rules["MawsflowLossNotFinite"]["expr"]
    starving = rules["MawsflowDataLoaderStarving"]["expr"]
    assert "rate(mawsflow_data_wait_seconds_total[10m])" in starving
    assert starving.rstrip().endswith("> 0.2")


def test_alert_settings_follow_the_values(chart):
    (rule,) = of_kind(manifests(render(chart, NON_DEFAULT_VALUES)), "PrometheusRule")
    rules = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    stalled, starving = rules["MawsflowTrainingStalled"], rules["MawsflowDataLoaderStarving"]
    assert "[30m]" in stalled["expr"] and stalled["for"] == "5m"
    assert stalled["labels"]["severity"] == "warning"
    assert starving["expr"].rstrip().endswith("> 0.35") and "[5m]" in starving["expr"]
    assert starving["annotations"]["summary"].endswith("more than 35% of the time")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_dashboard_charts_every_training_metric_and_nothing_else(chart):
    (dashboard_map,) = [
        d for d in of_kind(manifests(render(chart, {})), "ConfigMap") if "dashboard" in str(d)
    ]
    assert dashboard_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(dashboard_map["data"]["mawsflow-training.json"])
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = referenced_metrics("\n".join(expressions))
    exposed = exposed_metric_names()
    assert used <= set().union(*exposed.values())
    for family, names in exposed.items():
        assert used & names, f"no panel shows {family}"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "namespace", "step", "pod"}
    for expression in expressions:
        assert 'namespace="$namespace"' in expression


def test_pod_monitor_keeps_one_port_per_rank(chart):
    (monitor,) = of_kind(manifests(render(chart, {})), "PodMonitor")
    assert monitor["spec"]["selector"] == {
        "matchLabels": {"app.kubernetes.io/managed-by": "mawsflow"}
    }
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (keep,) = endpoint["relabelings"]
    assert keep["action"] == "keep"
    assert keep["sourceLabels"] == ["__meta_kubernetes_pod_container_port_name"]
    # Prometheus anchors relabel regexes at both ends.
    pattern = re.compile(keep["regex"])
    assert all(pattern.fullmatch(name) for name in ("metrics", "metrics-0", "metrics-7"))
    assert not any(pattern.fullmatch(name) for name in ("http", "metrics-x", "nccl"))


def test_monitoring_can_be_turned_off_where_the_operator_is_absent(chart):
    values = {"monitoring": {k: {"enabled": False} for k in ("podMonitor", "rules", "dashboard")}}
    kinds = {doc["kind"] for doc in manifests(render(chart, values))}
    assert kinds == {"ConfigMap", "Role", "RoleBinding", "ServiceAccount"}


# --- recurring run -------------------------------------------------------------------------------


def test_recurring_run_bootstrap_hooks(chart):
    docs = manifests(render(chart, NON_DEFAULT_VALUES))
    jobs = {job["metadata"]["annotations"]["helm.sh/hook"]: job for job in of_kind(docs, "Job")}
    assert set(jobs) == {"post-install,post-upgrade", "pre-delete"}
    script = (CHART / "files" / "recurring_run.py").read_text()
    (script_map,) = [d for d in of_kind(docs, "ConfigMap") if "recurring_run.py" in d["data"]]
    assert script_map["data"]["recurring_run.py"] == script.rstrip("\n")
    for hook, action in (("post-install,post-upgrade", "apply"), ("pre-delete", "delete")):
        pod = jobs[hook]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"][-1] == action
        assert container["image"] == "ghcr.io/mawsflow/mawsflow-launch@sha256:" + "c0" * 32
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["PIPELINE_NAME"] == "maws-vit-b16"
        assert env["PIPELINE_VERSION"] == "v3"
        assert env["CRON_EXPRESSION"] == "0 30 2 * * 1"
        assert json.loads(env["PIPELINE_PARAMETERS"]) == {"preset": "demo", "arch": "vit_b16"}
        assert env["RUN_SERVICE_ACCOUNT"] == "maws-launcher"
        assert env["KFP_NAMESPACE"] == NAMESPACE
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        token = next(v for v in pod["volumes"] if v["name"] == "kfp-token")
        source = token["projected"]["sources"][0]["serviceAccountToken"]
        assert source["audience"] == "pipelines.kubeflow.org"
        template = jobs[hook]["spec"]["template"]["metadata"]
        assert template["annotations"] == {"sidecar.istio.io/inject": "false"}


def test_recurring_retraining_passes_the_gate_rules_and_warm_starts(chart):
    retraining = {
        "enabled": True,
        "registry": "s3://models/maws",
        "warmStart": {"mae": "registry", "wsp": "production", "wspSamples": 1000000},
        "gate": {"headline": ["finetune", "10-shot"], "maxDrop": 0.25, "minGain": 0.1},
        "pushgateway": "http://pushgateway.monitoring:9091",
    }
    values = {"recurringRun": {"enabled": True, "parameters": {"preset": "demo"}}}
    values["recurringRun"]["retraining"] = retraining
    job = of_kind(manifests(render(chart, values)), "Job")[0]
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    parameters = json.loads(env["PIPELINE_PARAMETERS"])
    assert parameters == {
        "preset": "demo",
        "registry": "s3://models/maws",
        "mae_warm_start": "registry",
        "wsp_warm_start": "production",
        "wsp_continue_samples": 1000000,
        "gate_headline": ["finetune", "10-shot"],
        "gate_max_drop": 0.25,
        "gate_min_gain": 0.1,
        "pushgateway": "http://pushgateway.monitoring:9091",
    }
    # Every one is a parameter the retraining pipeline declares, of its type.
    for name, value in parameters.items():
        if name not in ("preset", "registry"):
            assert isinstance(value, RETRAIN_PARAMETERS[name][0]), name
    # Enabled without a registry: the chart refuses to render.
    del retraining["registry"]
    with pytest.raises(Exception, match="recurringRun.retraining.registry"):
        render(
            chart, {"recurringRun": {"enabled": True, "retraining": {**retraining, "registry": ""}}}
        )
    # Off (the default): the parameters are `parameters` alone.
    job = of_kind(manifests(render(chart, {"recurringRun": {"enabled": True}})), "Job")[0]
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["PIPELINE_PARAMETERS"]) == {}


def test_chart_app_version_is_the_package_version():
    with (REPO / "pyproject.toml").open("rb") as f:
        version = tomllib.load(f)["project"]["version"]
    assert yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"] == version


def test_bootstrap_image_defaults_to_the_launch_image_the_components_use(chart):
    values = {"recurringRun": {"enabled": True}}
    job = of_kind(manifests(render(chart, values)), "Job")[0]
    image = job["spec"]["template"]["spec"]["containers"][0]["image"]
    references = yaml.safe_load((REPO / "components" / "images.yaml").read_text())
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert image == f"ghcr.io/mawsflow/mawsflow-launch:{app_version}"
    # The same image name and version as the components' launch image, wherever it was pushed.
    assert references["launch"].split("@")[0].endswith(f"/mawsflow-launch:{app_version}")


def _load_bootstrap():
    path = CHART / "files" / "recurring_run.py"
    spec = importlib.util.spec_from_file_location("mawsflow_chart_recurring_run", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


bootstrap = _load_bootstrap()
# kfp's client warns on every construction that it needs a v2 server, which the stand-in is.
quiet_kfp_client = pytest.mark.filterwarnings("ignore:This client only works:FutureWarning")


@pytest.fixture
def pipelines_api(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp reads a context file under $HOME
    state = empty_state()
    state["pipelines"] = [
        {"pipeline_id": "p-shared", "display_name": "maws", "namespace": None},
        {"pipeline_id": "p-other", "display_name": "other", "namespace": NAMESPACE},
    ]
    state["versions"] = [
        {
            "pipeline_id": "p-shared",
            "pipeline_version_id": "v-old",
            "display_name": "v1",
            "created_at": "2026-01-01T00:00:00Z",
        },
        {
            "pipeline_id": "p-shared",
            "pipeline_version_id": "v-new",
            "display_name": "v2",
            "created_at": "2026-02-01T00:00:00Z",
        },
    ]
    with serve(state) as server:
        yield server


def _bootstrap_env(server, **overrides) -> dict[str, str]:
    env = {
        "KFP_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
        "KFP_NAMESPACE": NAMESPACE,
        "PIPELINE_NAME": "maws",
        "PIPELINE_VERSION": "",
        "EXPERIMENT_NAME": "retraining",
        "RECURRING_RUN_NAME": "weekly",
        "CRON_EXPRESSION": "0 0 3 * * 0",
        "PIPELINE_PARAMETERS": '{"preset": "demo"}',
        "RUN_SERVICE_ACCOUNT": "",
        "KF_PIPELINES_SA_TOKEN_PATH": "/nonexistent/token",
    }
    env.update(overrides)
    return env


@quiet_kfp_client
def test_bootstrap_creates_one_run_at_a_time_without_catch_up(pipelines_api):
    env = _bootstrap_env(pipelines_api)
    assert bootstrap.main(["apply"], env) == 0
    (run,) = pipelines_api.state["recurring_runs"]
    assert run["display_name"] == "weekly"
    assert run["max_concurrency"] == "1" or run["max_concurrency"] == 1
    assert run["no_catchup"] is True
    assert run["mode"] == "ENABLE"
    assert run["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 0"
    # The shared pipeline (none of that name in the namespace), at its newest version.
    assert run["pipeline_version_reference"] == {
        "pipeline_id": "p-shared",
        "pipeline_version_id": "v-new",
    }
    assert run["runtime_config"]["parameters"] == {"preset": "demo"}
    assert "service_account" not in run or not run["service_account"]
    (experiment,) = pipelines_api.state["experiments"]
    assert experiment["display_name"] == "retraining" and experiment["namespace"] == NAMESPACE


@quiet_kfp_client
def test_bootstrap_rerun_replaces_the_recurring_run_and_delete_removes_it(pipelines_api):
    env = _bootstrap_env(pipelines_api, PIPELINE_VERSION="v1", RUN_SERVICE_ACCOUNT="maws")
    assert bootstrap.main(["apply"], env) == 0
    first = pipelines_api.state["recurring_runs"][0]["recurring_run_id"]
    assert bootstrap.main(["apply"], env) == 0
    (run,) = pipelines_api.state["recurring_runs"]
    assert run["recurring_run_id"] != first
    assert run["pipeline_version_reference"]["pipeline_version_id"] == "v-old"
    assert run["service_account"] == "maws"
    assert len(pipelines_api.state["experiments"]) == 1  # found again, not created twice
    assert bootstrap.main(["delete"], env) == 0
    assert pipelines_api.state["recurring_runs"] == []


@quiet_kfp_client
@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"PIPELINE_NAME": "missing"}, "no pipeline named 'missing'"),
        ({"PIPELINE_VERSION": "v9"}, "has no version 'v9'"),
        ({"CRON_EXPRESSION": "0 3 * * 0"}, "takes 6 fields"),
        ({"PIPELINE_PARAMETERS": "[1]"}, "must be a JSON object"),
        ({"KFP_NAMESPACE": ""}, "KFP_NAMESPACE is empty"),
    ],
)
def test_bootstrap_fails_with_a_clear_message(pipelines_api, capsys, overrides, message):
    assert bootstrap.main(["apply"], _bootstrap_env(pipelines_api, **overrides)) == 1
    assert message in capsys.readouterr().err
    assert pipelines_api.state["recurring_runs"] == []
