"""Reading shards: the seeded streams the training loader serves, a shard cut short, and
evaluation splits read in order from local files and from S3 (SeaweedFS)."""

from __future__ import annotations

import pytest

from mawsflow import storage
from mawsflow.data.manifest import read_manifest
from mawsflow.data.shards import SampleStream, count_samples, read_shard, samples_in_order
from pretrain_shards import write_pretrain_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_pretrain_dataset(tmp_path_factory.mktemp("pretrain"), corrupt=(5, 70))


def _stream(manifest, stream: int, num_streams: int, block: int = 10) -> SampleStream:
    return SampleStream(
        manifest.shards,
        manifest.shard_sizes,
        seed=3,
        stream=stream,
        num_streams=num_streams,
        block_size=block,
    )


def _keys(samples, n):
    return [
        (pos, raw["__key__"] if raw else None) for pos, raw in (next(samples) for _ in range(n))
    ]


def test_a_stream_restarts_at_any_position_with_the_same_samples(dataset):
    manifest = read_manifest(str(dataset))
    whole = _keys(_stream(manifest, 1, 2).samples(0), 150)
    for start in (0, 7, 10, 33, 95, 101):
        assert _keys(_stream(manifest, 1, 2).samples(start), 30) == whole[start : start + 30]
    # Within a block the order is shuffled, and over the stream's passes every sample of its
    # shards appears.
    assert [k for _, k in whole[:10]] != sorted(k for _, k in whole[:10])


def test_every_stream_gets_data_even_with_more_streams_than_shards(dataset):
    manifest = read_manifest(str(dataset))
    seen: set[str] = set()
    for stream in range(8):  # 8 streams, 3 shards
        keys = [k for _, k in _keys(_stream(manifest, stream, 8).samples(0), 40)]
        assert len(keys) == 40 and all(k is not None for k in keys)
        seen.update(keys)
    assert len(seen) == 96, "the streams together cover the dataset"


def test_a_truncated_shard_yields_placeholders_to_keep_positions(dataset, tmp_path):
    data = (dataset / "shards/train-000000.tar").read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2])
    samples = list(read_shard(str(cut), 32))
    assert len(samples) == 32
    assert samples[-1] is None and samples[0] is not None
    assert list(read_shard(str(cut), 32, skip=30)) == [None, None]


def test_shards_read_in_order_from_either_store(dataset, storage_root):
    manifest = read_manifest(str(dataset))
    uploaded = []
    for index, shard in enumerate(manifest.shards):
        uri = storage.join(storage_root, f"shard-{index:06d}.tar")
        with open(shard, "rb") as source, storage.open_write(uri) as sink:
            sink.write(source.read())
        uploaded.append(uri)
    keys = [raw["__key__"] for raw in samples_in_order(uploaded)]
    assert keys == [f"{i:08d}" for i in range(96)]
    assert [count_samples(uri) for uri in uploaded] == [32, 32, 32]
    first = next(samples_in_order(uploaded[:1]))
    assert {"labels.json", "txt"} <= set(first) and first["__url__"] == uploaded[0]
