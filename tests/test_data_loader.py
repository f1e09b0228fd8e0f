"""The training loader on real image shards in the pretraining dataset format: batches, corrupt
samples skipped and counted, and exact resume (tests/pretrain_shards.py builds the dataset)."""

from __future__ import annotations

import pytest
import torch

from mawsflow.data.decoders import ImageLabelsDecoder
from mawsflow.data.loader import POSITION_KEY, SKIPPED_KEY, STREAM_KEY, LoaderState, build_loader
from mawsflow.data.manifest import read_manifest
from pretrain_shards import augment_config, write_pretrain_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_pretrain_dataset(tmp_path_factory.mktemp("pretrain"), corrupt=(5, 70))


def _loader(manifest, state, workers):
    return build_loader(
        manifest,
        ImageLabelsDecoder(augment_config(), manifest.num_classes),
        batch_size=8,
        num_workers=workers,
        seed=0,
        rank=1,
        world_size=2,
        shuffle_buffer=16,
        state=state,
        pin_memory=False,
    )


def test_loader_batches_skip_corrupt_samples_and_resume_exactly(dataset):
    manifest = read_manifest(str(dataset))
    state = LoaderState(num_streams=4)
    batches = []
    for batch in _loader(manifest, state, workers=2):
        batches.append(batch)
        if len(batches) == 12:
            break
    first = batches[0]
    assert first["image"].shape == (8, 3, 32, 32) and first["image"].dtype == torch.uint8
    assert first["labels"].shape == (8, 2) and int(first["labels"].min()) >= 0
    # Rank 1 of 2 with 2 workers reads streams 2 and 3, alternating.
    assert [b[STREAM_KEY] for b in batches[:4]] == [2, 3, 2, 3]
    # Two corrupt samples in 96, read ~48 times each over 12 batches of 2 streams' shards:
    # they are skipped and counted, never returned.
    assert sum(b[SKIPPED_KEY] for b in batches) >= 1

    resumed_state = LoaderState(num_streams=4)
    for batch in batches[:5]:
        resumed_state.advance(batch)
    assert resumed_state.positions == {2: batches[4][POSITION_KEY], 3: batches[3][POSITION_KEY]}
    restored = LoaderState.restore(
        resumed_state.state_dict(), num_streams=4, rank_streams=range(2, 4), samples_seen=40
    )
    again = []
    for batch in _loader(manifest, restored, workers=2):
        again.append(batch)
        if len(again) == 7:
            break
    for a, b in zip(batches[5:], again, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["labels"], b["labels"])


def test_changed_layout_restarts_streams_at_an_even_share():
    state = LoaderState.restore(
        {"num_streams": 2, "positions": {0: 50, 1: 60}},
        num_streams=4,
        rank_streams=range(0, 2),
        samples_seen=400,
    )
    assert state.positions == {0: 100, 1: 100}
