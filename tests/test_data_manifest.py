"""The pretraining manifest: read and checked, and the shard sizes it implies."""

from __future__ import annotations

import json

import pytest

from mawsflow.data.eval_shards import open_split, write_classes
from mawsflow.data.manifest import read_manifest, shard_sizes
from mawsflow.errors import ConfigError, DataFormatError
from pretrain_shards import NUM_CLASSES, write_pretrain_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_pretrain_dataset(tmp_path_factory.mktemp("pretrain"), corrupt=(5, 70))


def test_manifest_is_read_and_checked(dataset, tmp_path):
    manifest = read_manifest(str(dataset))
    assert manifest.shard_sizes == (32, 32, 32)
    assert manifest.num_classes == NUM_CLASSES
    assert len(manifest.read_vocab()) == NUM_CLASSES
    assert manifest.shards[0] == str(dataset / "shards/train-000000.tar")

    with pytest.raises(ValueError, match="no dataset manifest"):
        read_manifest(str(tmp_path / "missing"))
    bad = json.loads((dataset / "manifest.json").read_text()) | {"num_samples": 200}
    (tmp_path / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="do not fit 3 shards of 32"):
        read_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps(bad | {"format": "other/1"}))
    with pytest.raises(ValueError, match="format must be 'mawsflow.multilabel/1'"):
        read_manifest(str(tmp_path))


def test_shard_sizes_are_full_shards_and_the_rest_for_both_formats(tmp_path):
    assert shard_sizes(70, 32, 3, source="m") == (32, 32, 6)
    assert shard_sizes(64, 32, 2, source="m") == (32, 32)
    for num_samples in (64, 97, 0):  # an empty last shard, one sample too many, nothing
        with pytest.raises(DataFormatError, match=f"m: {num_samples} samples do not fit 3"):
            shard_sizes(num_samples, 32, 3, source="m")
    # An evaluation split's manifest is held to the same rule, and named in the error.
    write_classes(str(tmp_path), ["a", "b"])
    split = tmp_path / "test"
    split.mkdir()
    manifest = {
        "format": "mawsflow.classification/1",
        "shards": ["shard-000000.tar", "shard-000001.tar"],
        "num_samples": 20,
        "num_classes": 2,
        "samples_per_shard": 8,
    }
    (split / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataFormatError, match=r"test/manifest.json: 20 samples do not fit 2"):
        open_split(str(tmp_path), "test")


def test_an_empty_dataset_uri_is_a_configuration_error():
    with pytest.raises(ConfigError, match="data.train is empty"):
        read_manifest("")
