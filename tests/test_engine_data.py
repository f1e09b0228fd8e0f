"""The engine's data loader on real image shards in the pretraining dataset format.

`write_pretrain_dataset` builds such a dataset (docs/data-formats.md) from scikit-image's
bundled photos; the other engine tests import it.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from skimage import data as skdata

from mawsflow.data.decoders import ImageLabelsDecoder
from mawsflow.data.loader import POSITION_KEY, SKIPPED_KEY, STREAM_KEY, LoaderState, build_loader
from mawsflow.data.manifest import read_manifest
from mawsflow.data.shards import SampleStream, read_shard
from mawsflow.data.transforms import RandomResizedCropFlip
from mawsflow.recipes import AugmentConfig, RandAugmentConfig, RandomResizedCropConfig

# Source photos; the photo a sample is cut from is its first label, so WSP can learn it.
PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "immunohistochemistry")
EXTRA_LABELS = 3  # a second, content-free label per sample: every sample has two labels
NUM_CLASSES = len(PHOTOS) + EXTRA_LABELS


def _image_bytes(index: int, size: int, rng: np.random.Generator) -> tuple[str, bytes]:
    photo = getattr(skdata, PHOTOS[index % len(PHOTOS)])()
    h, w = photo.shape[:2]
    side = int(rng.integers(min(h, w) // 3, min(h, w)))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    img = Image.fromarray(photo[top : top + side, left : left + side]).resize((size, size))
    out = io.BytesIO()
    # Grayscale photos as PNG (they must come out RGB), colour ones as JPEG and WebP.
    ext = "png" if img.mode == "L" else ("webp" if index % 5 == 0 else "jpg")
    img.save(out, format={"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[ext])
    return ext, out.getvalue()


def write_pretrain_dataset(
    root: Path,
    *,
    num_samples: int = 96,
    samples_per_shard: int = 32,
    image_size: int = 40,
    corrupt: tuple[int, ...] = (),
    seed: int = 0,
) -> Path:
    """A dataset in the `mawsflow.multilabel/1` format; samples listed in `corrupt` get
    undecodable image bytes."""
    rng = np.random.default_rng(seed)
    (root / "shards").mkdir(parents=True, exist_ok=True)
    shards = []
    for start in range(0, num_samples, samples_per_shard):
        name = f"shards/train-{start // samples_per_shard:06d}.tar"
        shards.append(name)
        with wds.TarWriter(str(root / name)) as sink:
            for i in range(start, min(start + samples_per_shard, num_samples)):
                ext, data = _image_bytes(i, image_size, rng)
                if i in corrupt:
                    data = b"not an image" + data[:20]
                labels = sorted({i % len(PHOTOS), len(PHOTOS) + i % EXTRA_LABELS})
                sink.write(
                    {
                        "__key__": f"{i:08d}",
                        ext: data,
                        "labels.json": json.dumps(labels).encode(),
                        "txt": f"a photo, number {i}".encode(),
                    }
                )
    vocab = [
        {
            "index": i,
            "wnid": f"n{i:08d}",
            "synset": f"class{i}.n.01",
            "lemmas": [f"class{i}"],
            "count": 1,
        }
        for i in range(NUM_CLASSES)
    ]
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "stats.json").write_text(json.dumps({"samples_written": num_samples}))
    manifest = {
        "format": "mawsflow.multilabel/1",
        "shards": shards,
        "num_samples": num_samples,
        "samples_per_shard": samples_per_shard,
        "num_classes": NUM_CLASSES,
        "vocab": "vocab.json",
        "stats": "stats.json",
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def _augment(size: int = 32) -> AugmentConfig:
    return AugmentConfig(crop=RandomResizedCropConfig(size=size, scale=(0.2, 1.0)), hflip=0.5)


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


def test_augmentation_is_seeded_per_sample_and_makes_rgb():
    out = io.BytesIO()
    Image.fromarray(skdata.camera()).save(out, format="PNG")  # grayscale, 512 px
    augment = RandomResizedCropFlip(_augment(32))
    a, b, c = (augment(out.getvalue(), s) for s in (11, 11, 12))
    assert a.shape == (3, 32, 32) and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[0], a[1]) and torch.equal(a[1], a[2]), "gray replicated to RGB"

    jpeg = io.BytesIO()
    Image.fromarray(skdata.astronaut()).save(jpeg, format="JPEG")
    # Large crops of a 512 px JPEG decode at a reduced DCT scale; the result must still be
    # the same picture as the full decode, up to resampling differences.
    reduced = RandomResizedCropFlip(
        AugmentConfig(crop=RandomResizedCropConfig(size=32, scale=(0.9, 1.0)), hflip=0.0)
    )
    full = torchvision_reference(jpeg.getvalue(), seed=5, size=32, scale=(0.9, 1.0))
    diff = (reduced(jpeg.getvalue(), 5).float() - full.float()).abs().mean()
    assert diff < 6, f"draft decoding changed the crop: mean abs diff {diff:.1f}"


def torchvision_reference(data: bytes, *, seed: int, size: int, scale) -> torch.Tensor:
    """The same crop through torchvision's plain PIL pipeline (full decode, crop, resize)."""
    import torchvision.transforms as T
    import torchvision.transforms.functional as F

    img = Image.open(io.BytesIO(data)).convert("RGB")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        top, left, h, w = T.RandomResizedCrop.get_params(img, scale, (0.75, 1.33))
    out = F.resized_crop(img, top, left, h, w, [size, size], T.InterpolationMode.BICUBIC)
    return F.pil_to_tensor(out)


def _loader(manifest, state, workers):
    return build_loader(
        manifest,
        ImageLabelsDecoder(_augment(), manifest.num_classes),
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


def test_corrupt_members_are_counted(dataset, tmp_path):
    manifest = read_manifest(str(dataset))
    decoder = ImageLabelsDecoder(_augment(), manifest.num_classes)
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


def test_rand_augment_is_seeded_and_leaves_the_training_rngs_alone():
    import random

    jpeg = io.BytesIO()
    Image.fromarray(skdata.coffee()).save(jpeg, format="JPEG")
    plain = RandomResizedCropFlip(_augment(32))
    ra_config = AugmentConfig(
        crop=RandomResizedCropConfig(size=32, scale=(0.2, 1.0)),
        hflip=0.5,
        rand_augment=RandAugmentConfig(num_layers=2, magnitude=9),
    )
    rand_augment = RandomResizedCropFlip(ra_config)
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    expected = (random.random(), np.random.rand(), torch.rand(()))
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    outputs = [rand_augment(jpeg.getvalue(), s) for s in (3, 3, 4, 5, 6)]
    assert (random.random(), np.random.rand(), torch.rand(())) == expected
    assert torch.equal(outputs[0], outputs[1])
    # RandAugment changes the pixels of most crops (an op can be an identity now and then).
    changed = [
        not torch.equal(o, plain(jpeg.getvalue(), s))
        for o, s in zip(outputs, (3, 3, 4, 5, 6), strict=True)
    ]
    assert sum(changed) >= 3
