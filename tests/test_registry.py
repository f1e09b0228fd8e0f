"""The model registry in object storage (mawsflow.registry) and the promotion gate, on a local
folder and on SeaweedFS: records written once, an atomic production pointer, promote and
rollback with their events, the gate's rules, and `mawsflow registry` as a user runs it."""

import json
import subprocess
import sys
import threading

import pytest

from mawsflow import storage
from mawsflow.registry import (
    GateRules,
    ModelRecord,
    Registry,
    RegistryError,
    decide,
    new_id,
    record_at,
)
from mawsflow.steps import registry as registry_step

EVAL = {"name": "ImageNet-1k", "fingerprint": "e" * 64}


def record(model_id: str, top1: float, fewshot: float = 50.0, evaluation=EVAL) -> ModelRecord:
    return ModelRecord(
        id=model_id,
        uri=f"s3://runs/{model_id}/wsp/model",
        metrics={"finetune_top1": top1, "lowshot_10": fewshot},
        evaluation=evaluation,
        data={"corpus_fingerprint": "c" * 64},
        images={"wsp": "ghcr.io/mawsflow/mawsflow-wsp:0.1.0"},
        parents={"mae": "m-1"},
    )


@pytest.fixture
def registry(storage_root) -> Registry:
    return Registry(storage.join(storage_root, "registry"))


def test_records_are_written_once_and_read_back(registry):
    first = registry.register(record("a", 80.0))
    assert first.created  # stamped on registration
    assert registry.get("a") == first
    with pytest.raises(RegistryError, match="registered already"):
        registry.register(record("a", 99.0))
    assert registry.get("a").metrics["finetune_top1"] == 80.0  # unchanged
    registry.register(record("b", 81.0))
    assert [r.id for r in registry.list()] == ["a", "b"]
    with pytest.raises(RegistryError, match="no model 'zzz'"):
        registry.get("zzz")
    # Human-readable: the record is plain JSON under models/.
    raw = storage.read_json(storage.join(registry.root, "models", "a.json"))
    assert raw["format"] == "mawsflow.registry.model/1" and raw["uri"].endswith("/wsp/model")


def test_a_listing_answers_lookups_without_reading_the_registry_again(registry, monkeypatch):
    registry.register(record("a", 80.0))
    registry.register(record("b", 81.0))
    registry.promote("b")
    records = registry.list()
    assert record_at(records, "s3://runs/b/wsp/model/").id == "b"  # a trailing slash is alike
    assert record_at(records, "s3://runs/c/wsp/model") is None
    assert registry.find_uri("s3://runs/a/wsp/model") == record_at(records, "s3://runs/a/wsp/model")
    # Production from the listing: no record is read (only the pointer is).
    read_json = storage.read_json
    reads = []
    monkeypatch.setattr(storage, "read_json", lambda uri: reads.append(uri) or read_json(uri))
    assert registry.production(records) == records[1]
    assert reads == [storage.join(registry.root, "production.json")]
    # A listing without it (taken before it was registered): read from the registry.
    assert registry.production(records[:1]) == records[1]
    assert reads[-1] == storage.join(registry.root, "models", "b.json")


def test_promote_and_rollback_move_one_pointer_and_leave_events(registry):
    for model_id, top1 in (("a", 80.0), ("b", 81.0), ("c", 82.0)):
        registry.register(record(model_id, top1))
    assert registry.production() is None
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback()
    registry.promote("a")
    registry.promote("b", reason="better")
    assert registry.promote("b").revision == 2  # promoting production again changes nothing
    registry.promote("c")
    assert registry.pointer().previous == ("a", "b")
    assert registry.rollback(reason="regression in the field").model == "b"
    assert registry.production().id == "b"
    assert registry.rollback().model == "a"
    with pytest.raises(RegistryError, match="no model 'nope'"):
        registry.promote("nope")
    actions = [(e["action"], e["model"], e["revision"]) for e in registry.events()]
    assert actions == [
        ("promote", "a", 1),
        ("promote", "b", 2),
        ("promote", "c", 3),
        ("rollback", "b", 4),
        ("rollback", "a", 5),
    ]


def test_readers_see_the_old_pointer_or_the_new_never_a_mix(registry):
    """Rollback is atomic for readers: while the pointer moves back and forth, every read is
    a whole pointer naming one of the two models."""
    registry.register(record("a", 80.0))
    registry.register(record("b", 81.0))
    registry.promote("a")
    seen, stop = [], threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.append(registry.pointer().model)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(5):
            registry.promote("b")
            registry.rollback()
    finally:
        stop.set()
        reader.join()
    assert seen and set(seen) <= {"a", "b"}


def test_a_second_writer_on_the_same_revision_is_refused(registry):
    registry.register(record("a", 80.0))
    registry.register(record("b", 81.0))
    registry.promote("a")
    # Another writer's event for revision 2 is already there: this writer must not overwrite.
    storage.write_json(storage.join(registry.root, "events", "00000002.json"), {"x": 1})
    with pytest.raises(RegistryError, match="revision 2 was taken by another writer"):
        registry.promote("b")
    assert registry.production().id == "a"


def test_the_gate_promotes_only_what_the_rules_allow():
    rules = GateRules(headline=("finetune_top1", "lowshot_10"), max_drop=0.5, min_gain=0.2)
    production = record("p", 80.0, 50.0)
    first = decide(record("n", 10.0), None, rules)
    assert first.promote and first.reasons == ("no model in production",)
    better = decide(record("n", 80.3, 49.8), production, rules)
    assert better.promote and better.reasons == ("better: finetune_top1",)
    assert better.comparison == (("finetune_top1", 80.0, 80.3), ("lowshot_10", 50.0, 49.8))
    regression = decide(record("n", 81.0, 49.0), production, rules)
    assert not regression.promote and "worse: lowshot_10" in regression.reasons[0]
    flat = decide(record("n", 80.1, 50.0), production, rules)
    assert not flat.promote and "no headline metric better by 0.2" in flat.reasons[-1]
    other_data = decide(record("n", 90.0, evaluation={"fingerprint": "x"}), production, rules)
    assert not other_data.promote and "other data" in other_data.reasons[0]
    with pytest.raises(RegistryError, match="no headline metric zeroshot"):
        decide(record("n", 80.0), production, GateRules(headline=("zeroshot",)))


def test_ids_sort_by_time_and_name_the_uri():
    import datetime

    early = new_id("s3://b/x", datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))
    late = new_id("s3://b/x", datetime.datetime(2026, 2, 1, tzinfo=datetime.UTC))
    assert early < late and early.startswith("20260101T000000Z-")
    assert early.split("-")[1] != new_id("s3://b/y").split("-")[1]


def test_cli_registers_gates_and_rolls_back(registry, capsys):
    root = registry.root

    def cli(*argv: str) -> tuple[int, str]:
        code = registry_step.main(["--root", root, *argv])
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    common = ["--eval-name", "IN1k", "--eval-fingerprint", "f" * 8]
    assert (
        cli("register", "--model", "s3://r/1", "--id", "one", "--metric", "top1=80", *common)[0]
        == 0
    )
    assert (
        cli("register", "--model", "s3://r/2", "--id", "two", "--metric", "top1=79", *common)[0]
        == 0
    )
    code, out = cli("gate", "one", "--headline", "top1")
    assert code == 0 and "promoted: no model in production" in out
    code, out = cli("gate", "two", "--headline", "top1", "--max-drop", "0.5")
    assert code == 0 and "rejected: worse: top1" in out  # a rejection is an outcome
    assert registry.production().id == "one"
    cli("register", "--model", "s3://r/3", "--id", "three", "--metric", "top1=81", *common)
    code, out = cli("gate", "three", "--headline", "top1")
    assert "promoted" in out and registry.production().id == "three"
    Registry(root).register(ModelRecord("enc", "s3://r/mae", {}, role="mae"))
    code, out = cli("list")
    assert "* three" in out and "  one" in out and "  enc  [mae]  s3://r/mae" in out
    code, out = cli("promote", "enc")
    assert code == 1 and "an MAE encoder, not a model to serve" in out
    code, out = cli("show")
    assert json.loads(out)["id"] == "three"
    code, out = cli("rollback", "--reason", "field regression")
    assert code == 0 and "production: one" in out
    code, out = cli("register", "--model", "s3://r/4", "--metric", "top1=high")
    assert code == 1 and "not a number" in out
    code, out = cli("promote", "missing")
    assert code == 1 and "error:" in out and "no model 'missing'" in out


def test_cli_help_through_the_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "mawsflow.cli", "registry", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "rollback" in out.stdout and "gate" in out.stdout
