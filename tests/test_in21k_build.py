"""`mawsflow build-in21k`: an ImageNet-21k-style folder of WordNet-id classes into the
deduplicated multi-label pretraining dataset of §A, which the `wsp` step trains on."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from mawsflow.cli import main as cli_main
from mawsflow.data.manifest import MANIFEST_FORMAT, read_manifest
from mawsflow.dataset.image_records import content_hash
from mawsflow.dataset.in21k import build_in21k
from mawsflow.errors import DataFormatError
from mawsflow.steps.prepare_eval import PrepareEvalConfig
from mawsflow.steps.prepare_eval import run as prepare_eval

# Real WordNet 3.0 noun ids, as IN21k's folders are named.
TENCH, DOG, CAT = "n01440764", "n02084071", "n02121808"


def _encoded(pixels: np.ndarray, fmt: str, size: int = 48) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").resize((size, size)).save(out, format=fmt)
    return out.getvalue()


def _photos() -> list[bytes]:
    """Distinct real photographs (scikit-image's), cropped differently, as JPEG bytes."""
    sources = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]
    return [
        _encoded(src[i * 30 :, j * 30 :], "JPEG")
        for src in sources
        for i in range(2)
        for j in range(2)
    ]


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture()
def in21k_tree(tmp_path):
    """Three classes. One photo is in both DOG and CAT (a cross-class duplicate), one is twice
    in TENCH (a within-class copy), one is also in an evaluation set's train split; plus a
    truncated JPEG and a stray text file."""
    photos = _photos()  # 12 distinct images
    root = tmp_path / "in21k"
    for i in range(3):
        _write(root / TENCH / f"t{i}.JPEG", photos[i])
    _write(root / TENCH / "t0_copy.JPEG", photos[0])
    for i in range(3, 6):
        _write(root / DOG / f"d{i}.JPEG", photos[i])
    _write(root / DOG / "shared.JPEG", photos[6])
    _write(root / CAT / "shared_too.JPEG", photos[6])
    for i in range(7, 10):
        _write(root / CAT / f"c{i}.JPEG", photos[i])
    _write(root / CAT / "broken.JPEG", photos[10][:300])
    _write(root / DOG / "notes.txt", b"not an image")

    # An evaluation set (prepare-eval's ImageFolder layout) holding photos[4] in its train
    # split and an unrelated photo in its val split.
    folder = tmp_path / "eval_source"
    _write(folder / "train" / "dog" / "x.jpg", photos[4])
    _write(folder / "val" / "dog" / "y.jpg", photos[11])
    evaluation = tmp_path / "eval"
    prepare_eval(
        PrepareEvalConfig(layout="imagefolder", source=str(folder), output=str(evaluation))
    )
    return {"root": root, "eval": evaluation, "photos": photos, "tmp": tmp_path}


def _samples(dataset: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for shard in sorted((dataset / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


def test_dedup_multi_label_and_eval_holdout_through_the_cli(in21k_tree):
    out = in21k_tree["tmp"] / "out"
    code = cli_main(
        [
            "build-in21k", "--source", str(in21k_tree["root"]), "--output", str(out),
            "--dedup-against", f"toy-eval={in21k_tree['eval']}", "--samples-per-shard", "3",
        ]
    )  # fmt: skip
    assert code == 0
    photos = in21k_tree["photos"]
    manifest = read_manifest(str(out))
    assert json.loads((out / "manifest.json").read_text())["format"] == MANIFEST_FORMAT
    # 10 distinct readable photos (0..9); photos[4] is held out: 9 samples, in 3 shards of 3.
    assert manifest.num_samples == 9 and manifest.shard_sizes == (3, 3, 3)
    assert manifest.num_classes == 3

    vocab = manifest.read_vocab()
    assert [(v["index"], v["wnid"], v["synset"]) for v in vocab] == [
        (0, TENCH, "tench.n.01"),
        (1, DOG, "dog.n.01"),
        (2, CAT, "domestic_cat.n.01"),
    ]
    samples = _samples(out)
    assert len(samples) == 9
    by_hash = {content_hash(p).hex(): i for i, p in enumerate(photos)}
    labels = {by_hash[key]: json.loads(s["labels.json"]) for key, s in samples.items()}
    # The cross-class duplicate is one sample with both labels; the copy inside TENCH adds none.
    assert labels[6] == [1, 2]
    assert labels[0] == [0]
    assert 4 not in labels  # also in the evaluation set's train split
    assert set(labels) == {0, 1, 2, 3, 5, 6, 7, 8, 9}
    # Bytes pass through unchanged.
    assert all(sample["jpg"] == photos[by_hash[key]] for key, sample in samples.items())
    # A class's count is the samples carrying it after deduplication.
    assert [v["count"] for v in vocab] == [3, 3, 4]

    stats = json.loads((out / "stats.json").read_text())
    assert stats["files"] == 14
    assert stats["not_images"] == 1 and stats["corrupt_images"] == 1
    assert stats["unique_images"] == 10
    assert stats["merged_copies"] == 2  # t0_copy and the second "shared"
    assert stats["multi_label_samples"] == 1
    assert stats["dropped_eval_duplicates"] == {"toy-eval": 1}
    assert stats["eval_images_hashed"] == {"toy-eval": 2}
    assert stats["labels_per_sample"] == {"1": 8, "2": 1}

    # A rerun writes the same dataset (the build id is a digest of what was written).
    build = json.loads((out / "manifest.json").read_text())["build"]
    build_in21k(
        str(in21k_tree["root"]),
        str(out),
        evaluation={"toy-eval": str(in21k_tree["eval"])},
        samples_per_shard=3,
    )
    assert json.loads((out / "manifest.json").read_text())["build"] == build


def test_the_wsp_step_trains_on_the_dataset(in21k_tree):
    from mawsflow.steps import wsp

    out = in21k_tree["tmp"] / "out"
    build_in21k(str(in21k_tree["root"]), str(out), samples_per_shard=4)
    run = in21k_tree["tmp"] / "wsp"
    code = wsp.main(
        [
            "--recipe", "wsp-in21k", "--preset", "tiny",
            "--set", f"data.train={out}", "--set", f"output={run}",
            "--set", "schedule.samples_per_epoch=8", "--set", "schedule.batch_size=4",
        ]
    )  # fmt: skip
    assert code == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 2
    assert json.loads((run / "model.json").read_text())["num_classes"] == 3


def test_bad_inputs_are_named(tmp_path, in21k_tree):
    bad = tmp_path / "bad"
    _write(bad / "dogs" / "a.jpg", in21k_tree["photos"][0])
    with pytest.raises(DataFormatError, match=r"bad/dogs: class folders must be WordNet noun ids"):
        build_in21k(str(bad), str(tmp_path / "o1"))
    nested = tmp_path / "nested"
    _write(nested / TENCH / "sub" / "a.jpg", in21k_tree["photos"][0])
    with pytest.raises(DataFormatError, match="expected <wnid>/<image>"):
        build_in21k(str(nested), str(tmp_path / "o2"))
    unknown = tmp_path / "unknown"
    _write(unknown / "n00000001" / "a.jpg", in21k_tree["photos"][0])
    with pytest.raises(DataFormatError, match="n00000001: not a WordNet 3.0 noun synset"):
        build_in21k(str(unknown), str(tmp_path / "o3"))
    with pytest.raises(DataFormatError, match="no split manifests"):
        build_in21k(str(in21k_tree["root"]), str(tmp_path / "o4"), evaluation={"x": str(bad)})
    with pytest.raises(SystemExit):
        cli_main(
            [
                "build-in21k",
                "--source",
                "a",
                "--output",
                "b",
                "--dedup-against",
                "e=x",
                "--dedup-against",
                "e=y",
            ]
        )
