"""`mawsflow prepare-eval`: ImageFolder, Food-101 and Fashion-MNIST layouts into eval shards,
read back through mawsflow.data.eval_shards."""

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
from mawsflow.data.eval_loader import eval_loader
from mawsflow.data.eval_shards import FORMAT, open_split, scan_labels
from mawsflow.steps.prepare_eval import PrepareEvalConfig, run

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def _photos() -> dict[str, np.ndarray]:
    """Real photographs bundled with scikit-image."""
    return {
        "astronaut": skimage.data.astronaut(),
        "coffee": skimage.data.coffee(),
        "chelsea": skimage.data.chelsea(),
        "rocket": skimage.data.rocket(),
    }


def _save(pixels: np.ndarray, path: Path, size: int = 64) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).resize((size, size)).save(path)


def test_imagefolder_tree_with_splits(tmp_path):
    root = tmp_path / "folder"
    photos = _photos()
    # Two classes; train has 3 images per class, val 1; one JPEG-uppercase, one BMP, one stray.
    for split, count in (("train", 3), ("val", 1)):
        for i in range(count):
            _save(photos["chelsea"][:, i * 20 :], root / split / "cat" / f"c{i}.JPEG")
            _save(photos["rocket"][i * 20 :], root / split / "rocket" / f"r{i}.bmp")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    out = tmp_path / "out"

    counts = run(
        PrepareEvalConfig(
            layout="imagefolder", source=str(root), output=str(out), samples_per_shard=4
        )
    )
    assert counts == {"train": 6, "val": 2}
    assert json.loads((out / "classes.json").read_text()) == ["cat", "rocket"]

    train = open_split(str(out), "train")
    manifest = json.loads((out / "train" / "manifest.json").read_text())
    assert manifest["format"] == FORMAT and manifest["num_classes"] == 2
    assert train.shard_sizes == (4, 2)
    _, labels = scan_labels(train)
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]
    # Members keep JPEG bytes as they were and re-encode BMP as PNG.
    with tarfile.open(out / "train" / "shard-000000.tar") as tar:
        extensions = {name.rsplit(".", 1)[-1] for name in tar.getnames()}
    assert extensions <= {"jpeg", "png", "cls"}

    images, got_labels, real = next(
        iter(eval_loader(train, img_size=32, batch_size=6, num_workers=0))
    )
    assert images.shape == (6, 3, 32, 32) and images.dtype.is_floating_point is False
    assert sorted(got_labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert not real.any()  # no ReaL labels in this set


def test_imagefolder_single_split_with_real_labels_and_a_class_map(tmp_path):
    root = tmp_path / "objects"
    for name, pixels in _photos().items():
        _save(pixels, root / name / f"{name}_0.png")
    real = tmp_path / "real.json"
    # ReaL lists images in file-name order: astronaut, chelsea, coffee, rocket.
    real.write_text(json.dumps([[0], [1, 2], [], [3]]))
    class_map = tmp_path / "class_map.json"
    class_map.write_text(json.dumps({"model_classes": 10, "targets": [[0], [1, 5], [2], [3]]}))
    out = tmp_path / "out"
    run(
        PrepareEvalConfig(
            layout="imagefolder",
            source=str(root),
            output=str(out),
            split="test",
            real_labels=str(real),
            real_split="test",
            class_map=str(class_map),
        )
    )

    split = open_split(str(out), "test")
    assert split.classes == ("astronaut", "chelsea", "coffee", "rocket")
    assert split.label_subset is not None and split.label_subset.targets[1] == (1, 5)
    batches = list(eval_loader(split, img_size=16, batch_size=8, num_workers=0))
    _, labels, real_hot = batches[0]
    by_label = {
        int(lbl): row.nonzero().flatten().tolist()
        for lbl, row in zip(labels, real_hot, strict=True)
    }
    assert by_label == {0: [0], 1: [1, 2], 2: [], 3: [3]}


def test_food101_layout(tmp_path):
    root = tmp_path / "food-101"
    photos = _photos()
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "classes.txt").write_text("apple_pie\nbeef_tartare\n")
    (root / "meta" / "labels.txt").write_text("Apple pie\nBeef tartare\n")
    (root / "meta" / "train.txt").write_text("apple_pie/101\nbeef_tartare/201\nbeef_tartare/202\n")
    (root / "meta" / "test.txt").write_text("apple_pie/102\n")
    for entry, photo in (
        ("apple_pie/101", "coffee"),
        ("apple_pie/102", "coffee"),
        ("beef_tartare/201", "chelsea"),
        ("beef_tartare/202", "rocket"),
    ):
        _save(photos[photo], root / "images" / f"{entry}.jpg")
    out = tmp_path / "out"
    assert run(PrepareEvalConfig(layout="food101", source=str(root), output=str(out))) == {
        "train": 3,
        "test": 1,
    }
    assert json.loads((out / "classes.json").read_text()) == ["Apple pie", "Beef tartare"]
    _, labels = scan_labels(open_split(str(out), "train"))
    assert sorted(labels.tolist()) == [0, 1, 1]


def test_food101_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="meta/classes.txt"):
        run(PrepareEvalConfig(layout="food101", source=str(tmp_path), output=str(tmp_path / "o")))
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "classes.txt").write_text("a\n")
    (tmp_path / "meta" / "test.txt").write_text("b/1\n")
    with pytest.raises(ValueError, match="unknown class 'b'"):
        run(PrepareEvalConfig(layout="food101", source=str(tmp_path), output=str(tmp_path / "o")))


def test_fashion_mnist_idx_files_through_the_cli(tmp_path):
    if not (FASHION_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    out = tmp_path / "fmnist"
    argv = [
        "prepare-eval", "--layout", "fashion-mnist", "--source", str(FASHION_MNIST),
        "--output", str(out), "--limit", "40", "--samples-per-shard", "16",
    ]  # fmt: skip
    code = cli_main(argv)
    assert code == 0
    classes = json.loads((out / "classes.json").read_text())
    assert classes[0] == "T-shirt/top" and len(classes) == 10
    test = open_split(str(out), "test")
    assert test.num_samples == 40 and test.shard_sizes == (16, 16, 8)
    with tarfile.open(out / "test" / "shard-000000.tar") as tar:
        png = next(m for m in tar.getmembers() if m.name.endswith(".png"))
        image = Image.open(io.BytesIO(tar.extractfile(png).read()))
    assert image.size == (28, 28) and image.mode == "L"
    # A rerun writes the same bytes (steps are idempotent).
    first = (out / "test" / "shard-000000.tar").read_bytes()
    assert cli_main(argv) == 0
    assert (out / "test" / "shard-000000.tar").read_bytes() == first


def test_open_split_rejects_a_missing_split_and_a_bad_idx_file(tmp_path):
    (tmp_path / "classes.json").write_text('["a"]')
    with pytest.raises(ValueError, match="no 'val' split"):
        open_split(str(tmp_path), "val")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"garbage!")
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"garbage!")
    with pytest.raises(ValueError, match="not an IDX file"):
        run(
            PrepareEvalConfig(
                layout="fashion-mnist", source=str(tmp_path), output=str(tmp_path / "o")
            )
        )


def test_eval_shards_round_trip_through_local_and_s3_storage(tmp_path, storage_root):
    root = tmp_path / "tree"
    for name, pixels in _photos().items():
        _save(pixels, root / "train" / name / f"{name}.jpg")
        _save(pixels[::-1], root / "test" / name / f"{name}.png")
    out = f"{storage_root}/objects"
    run(PrepareEvalConfig(layout="imagefolder", source=str(root), output=out, samples_per_shard=3))
    split = open_split(out, "test")
    assert split.shards[0].startswith(storage_root) and split.shard_sizes == (3, 1)
    _, labels = scan_labels(split)
    assert sorted(labels.tolist()) == [0, 1, 2, 3]
    images, got, _ = next(iter(eval_loader(split, img_size=16, batch_size=4, num_workers=0)))
    assert images.shape == (4, 3, 16, 16) and sorted(got.tolist()) == [0, 1, 2, 3]
