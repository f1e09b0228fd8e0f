"""A corpus snapshot (mawsflow.dataset.corpus_snapshot), locally and on SeaweedFS: the listing of
dated partitions a scheduled run reads, cut at `as_of`, written and read back, refused once a
shard it names changes, and read by the dataset build in place of the corpus prefix."""

import pytest

from mawsflow import storage
from mawsflow.dataset.corpus_snapshot import (
    CorpusSnapshot,
    partition_day,
    read_snapshot,
    snapshot_versions,
    take_snapshot,
    write_snapshot,
)
from mawsflow.dataset.layout import list_input_shards
from mawsflow.errors import DataFormatError
from mawsflow.orchestration.data_fingerprint import corpus_groups


@pytest.fixture
def corpus(storage_root) -> str:
    root = storage.join(storage_root, "corpus")
    for day in ("2026-11-22", "2026-11-29"):
        for part in range(2):
            storage.write_bytes(f"{root}/date={day}/part-{part}.tar", f"{day}/{part}".encode())
    storage.write_bytes(f"{root}/2026-12-06/part-0.tar", b"later")  # `YYYY-MM-DD` alone
    storage.write_bytes(f"{root}/seed/base.tar", b"outside any partition")
    storage.write_bytes(f"{root}/date=2026-11-22/_SUCCESS", b"")  # not a shard
    return root


def test_partition_days_are_read_from_the_path(corpus):
    assert partition_day(f"{corpus}/date=2026-11-22/part-0.tar", corpus) == "2026-11-22"
    assert partition_day(f"{corpus}/2026-12-06/part-0.tar", corpus) == "2026-12-06"
    assert partition_day(f"{corpus}/seed/base.tar", corpus) is None
    # A date in the corpus prefix itself is not a partition of it.
    assert partition_day(f"{corpus}/x.tar", corpus) is None


def test_a_snapshot_lists_the_corpus_now_and_as_of_a_day(corpus):
    everything = take_snapshot(corpus)
    assert len(everything.shards) == 6
    assert everything.partitions == ["2026-11-22", "2026-11-29", "2026-12-06"]
    cut = take_snapshot(corpus, as_of="2026-11-29")
    assert sorted(u.rsplit("/", 2)[1] for u in cut.shards) == [
        "date=2026-11-22", "date=2026-11-22", "date=2026-11-29", "date=2026-11-29", "seed",
    ]  # fmt: skip
    assert cut.fingerprint != everything.fingerprint
    assert take_snapshot(corpus, as_of="2026-11-29").fingerprint == cut.fingerprint
    with pytest.raises(DataFormatError, match="expected a day as YYYY-MM-DD"):
        take_snapshot(corpus, as_of="last week")
    with pytest.raises(DataFormatError, match="no .tar shards under this prefix"):
        take_snapshot(storage.join(corpus, "nothing-here"))


def test_written_snapshots_read_back_and_refuse_changed_shards(corpus, storage_root):
    snapshot = take_snapshot(corpus, as_of="2026-11-29")
    uri = storage.join(storage_root, "run", "corpus.snapshot.json")
    write_snapshot(uri, snapshot)
    assert read_snapshot(uri).shards == snapshot.shards
    assert snapshot_versions(uri) == dict(snapshot.shards)
    # The dataset build and its cache key read the snapshot's shards, not what is there now.
    storage.write_bytes(f"{corpus}/date=2026-11-29/part-9.tar", b"arrived during the run")
    assert list_input_shards(uri) == sorted(snapshot.shards)
    (group,) = corpus_groups(uri, 1)
    assert group["fingerprint"] == corpus_groups(uri, 1)[0]["fingerprint"]
    # A shard the run recorded was replaced: reading it would train on unrecorded data.
    storage.write_bytes(f"{corpus}/date=2026-11-22/part-0.tar", b"rewritten")
    with pytest.raises(DataFormatError, match="changed or disappeared since the snapshot"):
        list_input_shards(uri)


def test_malformed_snapshots_are_named(storage_root):
    uri = storage.join(storage_root, "bad.snapshot.json")
    storage.write_json(uri, {"format": "something else"})
    with pytest.raises(DataFormatError, match="not a corpus snapshot"):
        read_snapshot(uri)
    storage.write_json(
        uri,
        {
            "format": "mawsflow.corpus-snapshot/1", "corpus": "c", "as_of": "", "taken": "",
            "fingerprint": "0" * 64, "shards": [{"uri": "c/a.tar", "version": "1"}],
        },
    )  # fmt: skip
    with pytest.raises(DataFormatError, match="fingerprint does not match its listing"):
        read_snapshot(uri)
    with pytest.raises(DataFormatError, match="ends in .snapshot.json"):
        write_snapshot(storage.join(storage_root, "x.json"), CorpusSnapshot("c", {"c/a": "1"}))
