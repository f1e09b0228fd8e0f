"""Scheduled retraining's two steps, locally and on SeaweedFS: `mawsflow retrain-plan` (the
corpus snapshot, train or not, warm starts from the registry) and `mawsflow promotion-gate`
(register the new model, promote it only if it passes the rules; the decision kept, shown in
the report and pushed to a real Prometheus Pushgateway)."""

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import replace

import pytest

from mawsflow import storage
from mawsflow.errors import ConfigError
from mawsflow.evaluation.results import EvalResult, write_result
from mawsflow.registry import ModelRecord, Registry
from mawsflow.registry.plan import read_plan
from mawsflow.steps import promotion_gate, retrain_plan
from mawsflow.steps import report as report_step
from mawsflow.steps.promotion_gate import PromotionGateConfig, resolve_headline
from mawsflow.steps.retrain_plan import RetrainPlanConfig, make_plan

EVAL = "Fashion-MNIST"
COLUMNS = [EVAL, f"{EVAL} 1-shot", f"{EVAL} zero-shot", f"{EVAL} Linear"]


@pytest.fixture
def root(storage_root) -> str:
    return storage_root


def add_shard(root: str, day: str, name: str = "part-0") -> None:
    storage.write_bytes(f"{root}/corpus/date={day}/{name}.tar", f"{day}/{name}".encode())


def plan(root: str, run: str, **options) -> retrain_plan.RetrainPlan:
    config = RetrainPlanConfig(
        f"{root}/corpus", f"{root}/registry", f"{root}/runs/{run}/plan", **options
    )
    return make_plan(config)


# --------------------------------------------------------------------------------------------
# retrain-plan


def test_the_plan_trains_on_new_data_only(root):
    add_shard(root, "2026-11-22")
    first = plan(root, "1")
    assert first.action == "train" and first.reason == "no model in the registry yet"
    assert first.shards == 1 and first.partitions == ["2026-11-22"]
    assert read_plan(f"{root}/runs/1/plan/plan.json") == first
    assert storage.read_json(first.corpus)["fingerprint"] == first.fingerprint
    registry = Registry(f"{root}/registry")
    registry.register(
        ModelRecord("m1", "s3://runs/1/wsp", {EVAL: 50.0}, data={"fingerprint": first.fingerprint})
    )
    same = plan(root, "2")
    assert same.action == "unchanged" and "data unchanged since model m1" in same.reason
    assert same.fingerprint == first.fingerprint
    assert plan(root, "2b", force=True).action == "train"
    add_shard(root, "2026-11-29")
    new = plan(root, "3")
    assert new.action == "train" and new.reason == "new data since model m1"
    assert new.partitions == ["2026-11-22", "2026-11-29"]
    # as_of reproduces the first run's data from today's corpus.
    assert plan(root, "4", as_of="2026-11-22").fingerprint == first.fingerprint


def test_the_plan_resolves_warm_starts_from_the_registry(root):
    add_shard(root, "2026-11-22")
    cold = plan(root, "1", mae_warm_start="registry", wsp_warm_start="production")
    assert cold.mae_checkpoint == "" and cold.wsp_init == ""
    assert "no MAE encoder in the registry: MAE trains" in cold.reason
    assert "no production model: WSP starts from the MAE encoder" in cold.reason
    registry = Registry(f"{root}/registry")
    registry.register(ModelRecord("mae-1", "s3://runs/1/mae", {}, role="mae"))
    registry.register(ModelRecord("mae-2", "s3://runs/2/mae", {}, role="mae"))
    registry.register(ModelRecord("m1", "s3://runs/1/wsp", {EVAL: 1.0}, parents={"mae": "mae-1"}))
    registry.promote("m1")
    warm = plan(root, "2", mae_warm_start="registry", wsp_warm_start="production")
    # Production's own MAE encoder, not merely the newest one.
    assert (warm.mae_checkpoint, warm.mae_record) == ("s3://runs/1/mae", "mae-1")
    assert (warm.wsp_init, warm.wsp_record, warm.production) == ("s3://runs/1/wsp", "m1", "m1")
    none = plan(root, "3")
    assert none.mae_checkpoint == "" and none.wsp_init == ""
    with pytest.raises(ConfigError, match="mae_warm_start 'latest'"):
        RetrainPlanConfig("c", "r", "o", mae_warm_start="latest")
    with pytest.raises(ConfigError, match="wsp_warm_start"):
        RetrainPlanConfig("c", "r", "o", wsp_warm_start="registry")


def test_retrain_plan_cli(root, capsys):
    add_shard(root, "2026-11-22")
    argv = ["--corpus", f"{root}/corpus", "--registry", f"{root}/registry"]
    assert retrain_plan.main([*argv, "--output", f"{root}/p"]) == 0
    assert capsys.readouterr().out.startswith("train: no model in the registry yet")
    assert retrain_plan.main([*argv, "--output", f"{root}/q", "--as-of", "2026-01-01"]) == 1
    assert "no .tar shards under this prefix in partitions up to 2026-01-01" in (
        capsys.readouterr().err
    )


# --------------------------------------------------------------------------------------------
# promotion-gate


def write_card(uri: str, card: dict) -> str:
    storage.write_json(storage.join(uri, "model.json"), card)
    return uri


def candidate_run(root: str, run: str, values: list[float]) -> PromotionGateConfig:
    """A run's outputs: its plan, MAE and MAE→WSP models, and evaluation results of both rows
    (MAE's a little worse), with `values` as the MAE→WSP row's cells."""
    plan(root, run)
    mae = write_card(f"{root}/runs/{run}/mae", {"step": "mae", "arch": "vit_tiny_p4"})
    wsp = write_card(
        f"{root}/runs/{run}/wsp",
        {"step": "wsp", "arch": "vit_tiny_p4", "init": "mae", "init_checkpoint": mae},
    )
    results = []
    for row, offset in (("MAE", -5.0), ("MAE→WSP", 0.0)):
        for column, value in zip(COLUMNS, values, strict=True):
            uri = f"{root}/runs/{run}/eval/{row}/{column}"
            write_result(
                uri,
                EvalResult(
                    step="eval", evaluation=column, pretraining=row,
                    metrics={"top1": value + offset}, table={column: value + offset},
                ),
            )  # fmt: skip
            results.append(uri)
    return PromotionGateConfig(
        registry=f"{root}/registry",
        plan=f"{root}/runs/{run}/plan/plan.json",
        model=wsp,
        results=tuple(results),
        eval_name=EVAL,
        eval_fingerprint="e" * 64,
        output=f"{root}/runs/{run}/gate",
        mae_model=mae,
        headline=("finetune", "linear"),
        images={"wsp": "ghcr.io/mawsflow/mawsflow-wsp:0.1.0"},
    )


def test_the_gate_promotes_better_models_and_keeps_production_otherwise(root):
    add_shard(root, "2026-11-22")
    registry = Registry(f"{root}/registry")
    first = promotion_gate.run(candidate_run(root, "1", [60.0, 20.0, 30.0, 70.0]))
    assert first["promoted"] and first["reasons"] == ["no model in production"]
    production = registry.production()
    assert production.id == first["candidate"] and production.uri.endswith("/runs/1/wsp")
    assert production.metrics == dict(zip(COLUMNS, [60.0, 20.0, 30.0, 70.0], strict=True))
    assert production.data["partitions"] == ["2026-11-22"] and production.data["shards"] == 1
    mae = registry.get(production.parents["mae"])
    assert mae.role == "mae" and mae.uri.endswith("/runs/1/mae")
    assert storage.read_json(f"{root}/runs/1/gate/gate.json") == first
    assert registry.decision(production.id) == first

    # Better on finetuning, within max_drop on the linear probe: promoted.
    add_shard(root, "2026-11-29")
    better = promotion_gate.run(candidate_run(root, "2", [63.0, 10.0, 10.0, 69.8]))
    assert better["promoted"] and registry.production().id == better["candidate"]
    assert better["comparison"] == [
        {"metric": EVAL, "production": 60.0, "candidate": 63.0},
        {"metric": f"{EVAL} Linear", "production": 70.0, "candidate": 69.8},
    ]
    assert registry.pointer().previous == (first["candidate"],)

    # Worse on the linear probe by more than max_drop: rejected, production unchanged.
    add_shard(root, "2026-12-06")
    worse = promotion_gate.run(candidate_run(root, "3", [70.0, 50.0, 50.0, 60.0]))
    assert not worse["promoted"]
    assert worse["reasons"] == [f"worse: {EVAL} Linear 60.00 < 69.80 - 0.5"]
    assert registry.production().id == better["candidate"] == worse["production_after"]
    assert registry.decision(worse["candidate"])["promoted"] is False

    # The report shows the decision, in Markdown, HTML and JSON.
    summary = report_step.run(
        report_step.ReportConfig(
            candidate_run_results(root, "3"),
            (),
            f"{root}/runs/3/report",
            gate=f"{root}/runs/3/gate/gate.json",
        )
    )
    assert summary["gate"]["promoted"] is False
    markdown = storage.read_text(f"{root}/runs/3/report/report.md")
    assert "## Promotion gate" in markdown and "was not promoted" in markdown
    assert f"| {EVAL} Linear | 69.8 | 60.0 | -9.8 |" in markdown
    assert "<h2>Promotion gate</h2>" in storage.read_text(f"{root}/runs/3/report/report.html")


def candidate_run_results(root: str, run: str) -> tuple[str, ...]:
    return tuple(storage.list_uris(f"{root}/runs/{run}/eval/", suffix="metrics.json"))


def test_a_rerun_of_the_same_output_keeps_its_record_and_decision(root):
    add_shard(root, "2026-11-22")
    config = candidate_run(root, "1", [60.0, 20.0, 30.0, 70.0])
    first = promotion_gate.run(config)
    again = promotion_gate.run(config)  # e.g. the gate task retried after a lost pod
    registry = Registry(f"{root}/registry")
    assert again["candidate"] == first["candidate"]
    assert again["promoted"] and again["reasons"] == ["already in production"]
    assert len(registry.list()) == 2  # the MAE encoder and the model, once each
    assert registry.pointer().revision == 1


def test_the_gate_lists_the_registry_once_and_reads_each_record_once(root, monkeypatch):
    add_shard(root, "2026-11-22")
    promotion_gate.run(candidate_run(root, "1", [60.0, 20.0, 30.0, 70.0]))
    add_shard(root, "2026-11-29")
    config = candidate_run(root, "2", [63.0, 10.0, 10.0, 69.8])
    models = f"{root}/registry/models/"
    listings, reads = [], []
    list_uris, read_json = storage.list_uris, storage.read_json

    def listing(prefix, *args, **kwargs):
        listings.extend([prefix] if prefix.startswith(models) else [])
        return list_uris(prefix, *args, **kwargs)

    def reading(uri, *args, **kwargs):
        reads.extend([uri] if uri.startswith(models) else [])
        return read_json(uri, *args, **kwargs)

    registered = list_uris(models, suffix=".json")  # run 1's MAE encoder and model
    monkeypatch.setattr(storage, "list_uris", listing)
    monkeypatch.setattr(storage, "read_json", reading)
    decided = promotion_gate.run(config)
    assert decided["promoted"] and decided["production_before"] is not None
    # One listing: the rerun lookups and the production record all come from it, so each
    # record there is read once (the new one is read back by the promotion's own checks).
    assert listings == [models]
    assert len(registered) == 2
    assert sorted(uri for uri in reads if uri in registered) == sorted(registered)


def test_models_scored_on_other_data_are_not_compared(root):
    add_shard(root, "2026-11-22")
    promotion_gate.run(candidate_run(root, "1", [60.0, 20.0, 30.0, 70.0]))
    add_shard(root, "2026-11-29")
    config = candidate_run(root, "2", [90.0, 90.0, 90.0, 90.0])
    other = replace(config, eval_fingerprint="f" * 64)
    decided = promotion_gate.run(other)
    assert not decided["promoted"]
    assert decided["reasons"] == [
        "evaluated on other data than production (evaluation fingerprints differ)"
    ]


def test_headline_names_resolve_to_report_columns():
    assert resolve_headline(COLUMNS, EVAL, ["finetune", "linear", "zero-shot", "1-shot"]) == [
        EVAL, f"{EVAL} Linear", f"{EVAL} zero-shot", f"{EVAL} 1-shot",
    ]  # fmt: skip
    assert resolve_headline(COLUMNS, EVAL, [f"{EVAL} Linear"]) == [f"{EVAL} Linear"]
    with pytest.raises(ConfigError, match="no column 'Fashion-MNIST 10-shot'; its columns are"):
        resolve_headline(COLUMNS, EVAL, ["10-shot"])
    with pytest.raises(ConfigError, match="empty"):
        resolve_headline(COLUMNS, EVAL, [])


def test_promotion_gate_cli_exits_0_on_a_rejection(root, capsys):
    add_shard(root, "2026-11-22")
    promotion_gate.run(candidate_run(root, "1", [60.0, 20.0, 30.0, 70.0]))
    add_shard(root, "2026-11-29")
    config = candidate_run(root, "2", [50.0, 20.0, 30.0, 50.0])
    argv = [
        "--registry", config.registry, "--plan", config.plan, "--model", config.model,
        "--mae-model", config.mae_model, "--result", *config.results,
        "--eval-name", EVAL, "--eval-fingerprint", config.eval_fingerprint,
        "--headline", "finetune", "--output", config.output,
    ]  # fmt: skip
    assert promotion_gate.main(argv) == 0
    assert capsys.readouterr().out.startswith("rejected ")
    assert promotion_gate.main([*argv[:-2], "--headline", "5-shot", "--output", "x"]) == 1
    assert "no column 'Fashion-MNIST 5-shot'" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# The decision on a real Pushgateway (Debian's prometheus-pushgateway)


@pytest.fixture
def pushgateway(tmp_path):
    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if binary is None:
        pytest.skip("prometheus-pushgateway is not installed (scripts/setup.sh --test installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        process.kill()
        process.wait(timeout=10)


def scrape(url: str) -> list[str]:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    return [line for line in text.splitlines() if line.startswith("mawsflow_promotion_gate")]


def test_the_decision_is_pushed_where_the_alert_reads_it(root, pushgateway):
    add_shard(root, "2026-11-22")
    config = candidate_run(root, "1", [60.0, 20.0, 30.0, 70.0])
    first = promotion_gate.run(replace(config, pushgateway=pushgateway))
    assert first["pushed"]
    (passed,) = [line for line in scrape(pushgateway) if "gate_passed" in line]
    assert passed.endswith(" 1") and 'job="mawsflow-promotion-gate"' in passed
    add_shard(root, "2026-11-29")
    config = candidate_run(root, "2", [10.0, 20.0, 30.0, 10.0])
    worse = promotion_gate.run(replace(config, pushgateway=pushgateway))
    assert not worse["promoted"]
    # The push replaces the registry's group: one series, now 0, naming the rejected model.
    (passed,) = [line for line in scrape(pushgateway) if "gate_passed" in line]
    assert passed.endswith(" 0") and f'candidate="{worse["candidate"]}"' in passed
    assert any("decision_timestamp_seconds" in line for line in scrape(pushgateway))


def test_an_unreachable_pushgateway_does_not_undo_the_decision(root, caplog):
    add_shard(root, "2026-11-22")
    config = candidate_run(root, "1", [60.0, 20.0, 30.0, 70.0])
    decided = promotion_gate.run(replace(config, pushgateway="http://127.0.0.1:9"))
    assert decided["promoted"] and not decided["pushed"]
    assert "could not push the gate's decision" in caplog.text
    assert json.loads(json.dumps(decided))  # gate.json stays plain JSON
