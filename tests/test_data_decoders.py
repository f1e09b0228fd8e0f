"""Sample decoders: multi-label pretraining samples and single-label classification samples
through one decoder, and what a broken sample raises (the loader skips and counts it)."""

from __future__ import annotations

import tarfile

import pytest
import torch

from mawsflow.data.decoders import ImageDecoder, ImageLabelsDecoder
from mawsflow.data.manifest import read_manifest
from mawsflow.data.members import CORRUPT_SAMPLE_ERRORS
from mawsflow.data.shards import read_shard
from pretrain_shards import augment_config, write_pretrain_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_pretrain_dataset(tmp_path_factory.mktemp("pretrain"), corrupt=(5, 70))


def test_corrupt_members_are_counted(dataset, tmp_path):
    manifest = read_manifest(str(dataset))
    decoder = ImageLabelsDecoder(augment_config(), manifest.num_classes)
    raw = next(iter(read_shard(manifest.shards[0], 32)))
    assert set(decoder(raw, 0)) == {"image", "labels"}
    for broken, message in (
        ({**raw, "labels.json": b"[]"}, "non-empty list"),
        ({**raw, "labels.json": b"[99]"}, "outside the vocabulary"),
        ({k: v for k, v in raw.items() if k != "labels.json"}, "no labels.json"),
    ):
        with pytest.raises(ValueError, match=message):
            decoder(broken, 0)
    with tarfile.open(manifest.shards[0]) as tar:
        assert len(tar.getnames()) == 32 * 3


def test_classification_samples_decode_their_class_through_the_same_decoder(dataset):
    manifest = read_manifest(str(dataset))
    raw = {**next(iter(read_shard(manifest.shards[0], 32))), "cls": b"4\n"}
    multi = ImageLabelsDecoder(augment_config(), manifest.num_classes)
    single = ImageLabelsDecoder(augment_config(), manifest.num_classes, single_label=True)
    out = single(raw, 7)
    assert set(out) == {"image", "label"} and out["label"].dtype == torch.int64
    assert int(out["label"]) == 4 and out["label"].ndim == 0
    # The same crop whichever labels the sample carries; MAE's decoder gives the image alone.
    assert torch.equal(out["image"], multi(raw, 7)["image"])
    assert torch.equal(out["image"], ImageDecoder(augment_config())(raw, 7)["image"])
    for broken, message in (
        ({k: v for k, v in raw.items() if k != "cls"}, "has no .cls label"),
        ({**raw, "cls": b"9"}, "label 9 outside 9"),
    ):
        with pytest.raises(CORRUPT_SAMPLE_ERRORS, match=message):
            single(broken, 0)
