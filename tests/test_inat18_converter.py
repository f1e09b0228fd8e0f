"""`mawsflow prepare-eval --layout inat18`: iNaturalist 2018's COCO-style annotation files into
evaluation shards, on a small generated tree of real Fashion-MNIST images."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mawsflow.cli import main as cli_main
from mawsflow.data.eval_loader import eval_loader
from mawsflow.data.eval_shards import open_split, read_classes, scan_labels
from mawsflow.data.fashion_mnist import load_fashion_mnist
from mawsflow.errors import DataFormatError
from mawsflow.evaluation.lowshot import sample_few_shot
from mawsflow.steps.prepare_eval import PrepareEvalConfig, run

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
# iNat18 category ids are not assumed contiguous: these three become labels 0, 1, 2.
CATEGORIES = [
    {"id": 12, "name": "Species c", "supercategory": "Insecta"},
    {"id": 3, "name": "Species a", "supercategory": "Plantae"},
    {"id": 7, "name": "Species b", "supercategory": "Aves"},
]
# Training images per category: category 7 is rare (fewer than 5), as some iNat18 classes are.
TRAIN_COUNTS = {3: 6, 7: 2, 12: 6}


def _jpeg(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").resize((40, 40)).convert("RGB").save(out, format="JPEG")
    return out.getvalue()


def _write_inat_tree(root: Path) -> dict[str, int]:
    """An iNat18-shaped tree: `train_val2018/<super>/<id>/<n>.jpg`, train2018.json and
    val2018.json. Returns the image files it damages on purpose, per split."""
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    pixels, _ = load_fashion_mnist(str(FASHION_MNIST), "test")
    supers = {c["id"]: c["supercategory"] for c in CATEGORIES}
    next_pixels = iter(pixels)
    next_id = iter(range(1000, 2000))
    for split, counts in (("train", TRAIN_COUNTS), ("val", {3: 2, 7: 2, 12: 2})):
        images, annotations = [], []
        for cid, count in counts.items():
            for n in range(count):
                image_id = next(next_id)
                name = f"train_val2018/{supers[cid]}/{cid}/{split}{n}.jpg"
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_bytes(_jpeg(next(next_pixels)))
                images.append({"id": image_id, "file_name": name, "width": 40, "height": 40})
                annotations.append({"id": image_id, "image_id": image_id, "category_id": cid})
        data = {"info": {"year": 2018}, "images": images, "annotations": annotations}
        data["categories"] = CATEGORIES
        data["licenses"] = []
        (root / f"{split}2018.json").write_text(json.dumps(data))
    # One train image of category 3 is missing, one of category 12 is truncated.
    (root / "train_val2018/Plantae/3/train5.jpg").unlink()
    broken = root / "train_val2018/Insecta/12/train5.jpg"
    broken.write_bytes(broken.read_bytes()[:200])
    return {"train": 2, "val": 0}


def test_inat18_tree_through_the_cli(tmp_path, capfd):
    root = tmp_path / "inat"
    damaged = _write_inat_tree(root)
    out = tmp_path / "out"
    code = cli_main(
        [
            "prepare-eval", "--layout", "inat18", "--source", str(root),
            "--output", str(out), "--samples-per-shard", "4",
        ]
    )  # fmt: skip
    assert code == 0
    # Ascending category ids → dense labels; names from the categories.
    assert read_classes(str(out)) == ["Species a", "Species b", "Species c"]
    total = {"train": sum(TRAIN_COUNTS.values()), "val": 6}
    for split in ("train", "val"):
        opened = open_split(str(out), split)
        assert opened.num_samples == total[split] - damaged[split]
    # The missing and the truncated image are skipped and counted, not fatal.
    assert "train: skipped 2 of 14 images" in capfd.readouterr().err  # the CLI logs to stderr

    _, labels = scan_labels(open_split(str(out), "train"))
    # Category 3 lost one image (missing), 12 lost one (truncated); 7 has its 2.
    assert np.bincount(labels, minlength=3).tolist() == [5, 2, 5]
    # The images decode and keep their labels through the evaluation loader.
    batch = next(
        iter(eval_loader(open_split(str(out), "val"), img_size=32, batch_size=6, num_workers=0))
    )
    assert batch[0].shape == (6, 3, 32, 32)
    assert sorted(batch[1].tolist()) == [0, 0, 1, 1, 2, 2]

    # §4.4: iNat18 low-shot takes "at most K" shots, so the rare class keeps its 2 at K=5.
    for seed in range(3):
        chosen = sample_few_shot(labels, 5, seed)
        assert np.bincount(labels[chosen], minlength=3).tolist() == [5, 2, 5]
        assert np.bincount(labels[sample_few_shot(labels, 1, seed)]).tolist() == [1, 1, 1]


def test_released_category_names_replace_the_obfuscated_ones(tmp_path):
    root = tmp_path / "inat"
    _write_inat_tree(root)
    (root / "categories.json").write_text(
        json.dumps([{"id": 7, "name": "Turdus migratorius"}, {"id": 99, "name": "unused"}])
    )
    out = tmp_path / "out"
    run(PrepareEvalConfig(layout="inat18", source=str(root), output=str(out)))
    assert read_classes(str(out)) == ["Species a", "Turdus migratorius", "Species c"]


def test_bad_annotation_files_name_the_file_and_the_fault(tmp_path):
    root = tmp_path / "inat"
    out = str(tmp_path / "out")
    with pytest.raises(DataFormatError, match="neither train2018.json nor val2018.json"):
        run(PrepareEvalConfig(layout="inat18", source=str(root), output=out))
    _write_inat_tree(root)
    good = (root / "train2018.json").read_text()

    (root / "train2018.json").write_text(good[:-20])
    with pytest.raises(DataFormatError, match=r"train2018\.json: malformed JSON"):
        run(PrepareEvalConfig(layout="inat18", source=str(root), output=out))

    data = json.loads(good)
    data["annotations"][0]["category_id"] = 5
    (root / "train2018.json").write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match=r"train2018\.json: annotations\[0\].*category 5"):
        run(PrepareEvalConfig(layout="inat18", source=str(root), output=out))

    data = json.loads(good)
    del data["images"][3]["file_name"]
    (root / "train2018.json").write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match=r"train2018\.json: images\[3\]\.file_name"):
        run(PrepareEvalConfig(layout="inat18", source=str(root), output=out))

    data = json.loads(good)
    data["categories"] = {"not": "a list"}
    (root / "train2018.json").write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match=r"train2018\.json: 'categories' must be a list"):
        run(PrepareEvalConfig(layout="inat18", source=str(root), output=out))
