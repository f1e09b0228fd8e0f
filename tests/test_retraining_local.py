"""Scheduled retraining end to end: `pipelines/maws.py --retrain --local` run three times in a
row under kfp.local, as a recurring run would, on a corpus of dated partitions in S3 (SeaweedFS)
and a model registry in the same bucket, with the `tiny` preset.

1. The first run trains on the first partition and is promoted (nothing is in production).
2. The second, over the same data, trains nothing: its plan says `unchanged`, and no training
   task runs.
3. A new partition arrives. The third run reads both partitions, reuses the first run's MAE
   encoder from the registry (no MAE training) and continues WSP from the production model,
   head included; and it is a forced regression: its finetuning is cut to a single step. The
   gate decides as its metrics against production dictate (the test checks the decision
   against the rules): rejected, and production stays as it was.
Then an operator promotes the rejected model by hand, and `mawsflow registry rollback` restores
the model that was production before.
"""

import json
import re
from pathlib import Path

import pytest

from demo_inputs import require_demo_sources
from mawsflow import storage
from mawsflow.dataset.demo_corpus import DemoCorpusSettings, generate_demo
from mawsflow.orchestration.command import main
from mawsflow.registry import GateRules, Registry, decide
from mawsflow.steps import registry as registry_step

EVAL_NAME = "Fashion-MNIST"
DAYS = ("2026-11-22", "2026-11-29")


@pytest.fixture
def partitions(s3_bucket) -> dict[str, str]:
    """Two weekly partitions of the demo corpus (different images in each) and the evaluation
    set, in a bucket of a real S3 server."""
    require_demo_sources()
    uris = {name: f"{s3_bucket}/{name}" for name in ("corpus", "eval", "dataset", "registry")}
    for index, day in enumerate(DAYS):
        settings = DemoCorpusSettings(
            num_images=600, eval_train_images=300, eval_test_images=300, samples_per_shard=300,
            seed=index,
        )  # fmt: skip
        # Written aside, then moved into the corpus when its week comes (`arrive`).
        generate_demo(f"{s3_bucket}/incoming/date={day}", uris["eval"], settings)
    return uris


def arrive(bucket: str, corpus: str, day: str) -> None:
    """A partition lands in the corpus, as an ingestion job would put it."""
    prefix = f"{bucket}/incoming/date={day}/"
    for uri in storage.list_uris(prefix, suffix=".tar"):
        storage.copy(uri, f"{corpus}/date={day}/{uri[len(prefix) :]}")


def retrain(work: Path, uris: dict[str, str], capsys, *params: str) -> str:
    """One scheduled run; returns what it printed."""
    code = main(
        [
            "--local", "--retrain", "--work-dir", str(work),
            "--param", "preset=tiny",
            "--param", f"raw_corpus={uris['corpus']}",
            "--param", f"eval_dataset={uris['eval']}",
            "--param", f"dataset={uris['dataset']}",
            "--param", f"registry={uris['registry']}",
            "--param", f"eval_name={EVAL_NAME}",
            "--param", "zeroshot_templates=clothing",
            "--param", "shard_groups=1",
            "--param", "vocab_min_count=3",
            "--param", "loader_workers=0",
            "--param", "mae_epochs=0.25",
            "--param", "wsp_epochs=0.5",
            "--param", "lit_epochs=0.25",
            "--param", "lowshot_epoch_multiplier=0.5",
            "--param", "lowshot_shots=[1]",
            "--param", "lowshot_seeds=[0]",
            "--param", "lowshot_grouping=model",
            "--param", 'gate_headline=["finetune"]',
            *params,
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    return out


def newest_run(work: Path) -> Path:
    (pipeline_run,) = [p for p in sorted((work / "runs").iterdir())[-1].iterdir() if p.is_dir()]
    return pipeline_run


def trained(run: Path) -> set[str]:
    """The training tasks that ran (their executor outputs exist)."""
    steps = ("mae", "wsp", "lit", "finetune")
    return {
        p.parent.name
        for p in run.glob("**/executor_output.json")
        if re.sub(r"-\d+$", "", p.parent.name) in steps
    }


def card_of(run: Path, task: str) -> dict:
    (output,) = list(run.glob(f"**/{task}/executor_output.json"))
    (model,) = json.loads(output.read_text())["artifacts"]["model"]["artifacts"]
    return json.loads(storage.read_text(model["uri"]))


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_scheduled_runs_train_new_data_warm_start_and_gate(partitions, s3_bucket, tmp_path, capsys):
    uris, work = partitions, tmp_path / "work"
    registry = Registry(uris["registry"])

    # 1. The first week: trained, registered, promoted.
    arrive(s3_bucket, uris["corpus"], DAYS[0])
    out = retrain(work, uris, capsys, "--param", "finetune_epochs=1")
    assert "retraining plan: train (no model in the registry yet)" in out
    assert "promotion gate: promoted" in out
    first = registry.production()
    assert first is not None and first.role == "model"
    assert first.data["partitions"] == [DAYS[0]] and first.data["shards"] == 2
    assert first.evaluation["name"] == EVAL_NAME and len(first.evaluation["fingerprint"]) == 64
    assert set(first.metrics) >= {EVAL_NAME, f"{EVAL_NAME} Linear"}
    mae_record = registry.get(first.parents["mae"])
    assert mae_record.role == "mae"
    assert set(first.images) >= {"mae", "wsp", "report"}
    run1 = newest_run(work)
    assert {"mae", "wsp"} <= trained(run1)
    # The snapshot the run read: both shards of the first partition, with their versions.
    snapshot = storage.read_json(first.data["corpus"])
    assert [s["uri"].rsplit("/", 2)[1] for s in snapshot["shards"]] == [f"date={DAYS[0]}"] * 2
    (report_json,) = list(run1.rglob("report.json"))
    report = json.loads(report_json.read_text())
    assert report["gate"]["promoted"] and report["gate"]["candidate"] == first.id
    assert "## Promotion gate" in next(run1.rglob("report.md")).read_text()

    # 2. Nothing new: nothing trains, nothing is registered.
    out = retrain(work, uris, capsys, "--param", "finetune_epochs=1")
    assert "retraining plan: unchanged" in out and "(no report: the run trained nothing)" in out
    assert trained(newest_run(work)) == set()
    assert {r.id for r in registry.list()} == {mae_record.id, first.id}
    assert registry.production().id == first.id

    # 3. A new week: both partitions; MAE from the registry, WSP continued from production;
    # and a forced regression: a single step of finetuning.
    arrive(s3_bucket, uris["corpus"], DAYS[1])
    out = retrain(
        work, uris, capsys,
        "--param", "finetune_epochs=0.01",
        "--param", "mae_warm_start=registry",
        "--param", "wsp_warm_start=production",
        "--param", "wsp_continue_samples=64",
    )  # fmt: skip
    assert "retraining plan: train (new data since model" in out
    run3 = newest_run(work)
    mae_card = card_of(run3, "mae")
    assert mae_card["source"] == mae_record.uri and "train_steps" not in mae_card  # reused
    wsp_card = card_of(run3, "wsp")
    assert wsp_card["init"] == "wsp" and wsp_card["init_checkpoint"] == first.uri
    # Its head came along: the second week's vocabulary shares the first's synsets.
    assert wsp_card["head_continued"]["classes_carried"] > 0
    third = registry.latest("model")
    assert third.id != first.id and third.data["partitions"] == list(DAYS[:2])
    assert third.parents == {"mae": mae_record.id, "wsp": first.id}
    decision = registry.decision(third.id)
    with capsys.disabled():  # the gate's numbers, for whoever runs this with -s
        print(f"\nthird run (forced regression): {decision['comparison']}")
    assert decision["promoted"] == decide(third, first, GateRules((EVAL_NAME,))).promote
    assert "promotion gate: not promoted" in out and decision["promoted"] is False
    assert third.metrics[EVAL_NAME] < first.metrics[EVAL_NAME] - 0.5
    assert registry.production().id == first.id  # unchanged
    # The report of the rejected run shows the comparison.
    (report_md,) = list(run3.rglob("report.md"))
    assert "was not promoted" in report_md.read_text()

    # An operator overrides the gate, then thinks better of it: rollback restores, in one
    # write of the pointer, the model that was production before.
    assert registry_step.main(["--root", uris["registry"], "promote", third.id]) == 0
    assert registry.production().id == third.id
    assert registry_step.main(["--root", uris["registry"], "rollback", "--reason", "test"]) == 0
    assert registry.production().id == first.id
    assert registry.events()[-1]["action"] == "rollback"
