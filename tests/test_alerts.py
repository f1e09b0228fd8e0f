"""The chart's alert rules, checked by Prometheus's own tool: `promtool check rules` on what the
chart renders, and `promtool test rules` on the unit tests in charts/mawsflow/tests/ (each alert
fires from synthetic series of its fault and stays quiet on healthy ones)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import helm_python as helm
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "mawsflow"
UNIT_TESTS = CHART / "tests" / "alerts_test.yaml"
ALERTS = {
    "MawsflowTrainingStalled",
    "MawsflowLossNotFinite",
    "MawsflowDataLoaderStarving",
    "MawsflowPromotionRejected",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is missing: apt-get install prometheus (scripts/setup.sh does)")
    return path


def rendered_groups(values: dict) -> list[dict]:
    """The PrometheusRule's rule groups, as the chart renders them with `values`."""
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name="maws", namespace="ml")
    docs = [
        doc
        for path, text in sorted(rendered.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    (rule,) = [doc for doc in docs if doc["kind"] == "PrometheusRule"]
    return rule["spec"]["groups"]


def write_rules(folder: Path, groups: list[dict]) -> Path:
    """A Prometheus rule file (what the operator hands Prometheus) beside the unit tests."""
    folder.mkdir(parents=True, exist_ok=True)
    rules = folder / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    shutil.copy(UNIT_TESTS, folder / UNIT_TESTS.name)
    return rules


def run_promtool(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "values",
    [
        {},
        {
            "monitoring": {
                "rules": {
                    "stalledRun": {"window": "30m", "for": "5m"},
                    "starvingDataLoader": {"threshold": 0.5, "window": "5m", "for": "30m"},
                }
            }
        },
    ],
    ids=["defaults", "other-settings"],
)
def test_the_rendered_rules_pass_promtool_check(promtool, tmp_path, values):
    groups = rendered_groups(values)
    assert {rule["alert"] for group in groups for rule in group["rules"]} == ALERTS
    rules = write_rules(tmp_path, groups)
    done = run_promtool(promtool, "check", "rules", str(rules), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout


def test_each_alert_fires_on_its_fault_and_stays_quiet_on_healthy_series(promtool, tmp_path):
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"]}
    assert tested == ALERTS
    for test in tests:  # each alert is expected to fire somewhere, not only to stay quiet
        assert any(case["exp_alerts"] for case in test["alert_rule_test"]), test["name"]
    write_rules(tmp_path, rendered_groups({}))
    done = run_promtool(promtool, "test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.parametrize(
    ("alert", "broken_expr", "test_name"),
    [
        # Without the NaN clause, a NaN loss goes unnoticed.
        (
            "MawsflowLossNotFinite",
            "count by (namespace, pod, step) (abs(mawsflow_loss) == +Inf) > 0",
            "non-finite loss",
        ),
        # Per rank instead of per pod: the pod with one stepping rank would alert.
        (
            "MawsflowTrainingStalled",
            "increase(mawsflow_optimizer_steps_total[10m]) == 0",
            "stalled run",
        ),
        # On any decision instead of a rejection: the passed model would page too.
        (
            "MawsflowPromotionRejected",
            "min by (registry, candidate) (mawsflow_promotion_gate_passed) >= 0",
            "promotion rejected",
        ),
        # At or above the threshold: the pod exactly at 20% would alert.
        (
            "MawsflowDataLoaderStarving",
            "max by (namespace, pod, step) (rate(mawsflow_data_wait_seconds_total[10m])) >= 0.2",
            "starving data loader",
        ),
    ],
)
def test_the_unit_tests_catch_a_broken_rule(promtool, tmp_path, alert, broken_expr, test_name):
    groups = rendered_groups({})
    for group in groups:
        for rule in group["rules"]:
            if rule["alert"] == alert:
                rule["expr"] = broken_expr
    write_rules(tmp_path, groups)
    done = run_promtool(promtool, "test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert done.returncode != 0, done.stdout
    assert test_name in done.stdout + done.stderr
