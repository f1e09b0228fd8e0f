"""The Fashion-MNIST demo corpus: Instagram-like captions on real images, deterministic output,
and evaluation datasets in the format the evaluation steps read."""

from __future__ import annotations

import io
import json
import random
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from mawsflow.data.eval_shards import open_split, read_classes
from mawsflow.data.fashion_mnist import DEBIAN_FASHION_MNIST
from mawsflow.data.hashtags import extract_hashtags
from mawsflow.dataset.demo_corpus import (
    CLASS_HASHTAGS,
    DemoCorpusSettings,
    demo_caption,
    generate_demo,
)
from mawsflow.dataset.safe_tar import iter_tar_samples
from mawsflow.steps import demo_corpus as demo_corpus_step

SETTINGS = DemoCorpusSettings(
    num_images=400, eval_train_images=120, eval_test_images=80, samples_per_shard=100
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, Path, dict]:
    if not Path(DEBIAN_FASHION_MNIST, "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    root = tmp_path_factory.mktemp("demo")
    summary = generate_demo(str(root / "corpus"), str(root / "eval"), SETTINGS)
    return root / "corpus", root / "eval", summary


def read_shards(directory: Path) -> list[tuple[str, dict[str, bytes]]]:
    samples = []
    for shard in sorted(directory.glob("*.tar")):
        problems: Counter[str] = Counter()
        with shard.open("rb") as stream:
            samples.extend((s.key, s.members) for s in iter_tar_samples(stream, problems))
        assert not problems
    return samples


def test_corpus_holds_real_images_and_captions(demo):
    corpus, _, summary = demo
    samples = read_shards(corpus)
    assert len(samples) == SETTINGS.num_images == summary["corpus"]["posts"]
    assert summary["corpus"]["shards"] == len(list(corpus.glob("*.tar"))) == 4
    complete = [members for _, members in samples if {"png", "txt", "json"} <= set(members)]
    assert len(complete) >= SETTINGS.num_images * 0.98
    image = Image.open(io.BytesIO(complete[0]["png"]))
    assert (image.size, image.mode) == ((28, 28), "L")
    assert json.loads(complete[0]["json"])["source"] == "fashion-mnist"


def test_captions_look_like_instagram(demo):
    corpus, _, _ = demo
    captions = []
    for _, members in read_shards(corpus):
        try:
            captions.append(members["txt"].decode("utf-8"))
        except (KeyError, UnicodeDecodeError):
            continue  # the deliberately broken posts
    untagged = [c for c in captions if not extract_hashtags(c)]
    foreign = [c for c in captions if any(ord(ch) > 0x3000 for ch in c) or "moda" in c]
    with_urls = [c for c in captions if "https://" in c]
    assert 0.02 * len(captions) < len(untagged) < 0.15 * len(captions)
    assert foreign and with_urls
    assert all("#" in c.split("https://", 1)[1] for c in with_urls)  # fragments, not tags
    class_tags = {tag.casefold() for tags in CLASS_HASHTAGS.values() for tag in tags}
    found = Counter(t.casefold() for c in captions for t in extract_hashtags(c))
    assert len(class_tags & set(found)) > 30  # synonyms and inflections of the classes


def test_captions_carry_their_class(demo):
    rng = random.Random(3)
    for label, tags in CLASS_HASHTAGS.items():
        allowed = {tag.casefold() for tag in tags}
        captions = [demo_caption(label, rng) for _ in range(40)]
        for caption in captions:
            found = {tag.casefold() for tag in extract_hashtags(caption)}
            other_classes = {
                t.casefold() for other, ts in CLASS_HASHTAGS.items() if other != label for t in ts
            }
            assert not (found & other_classes - allowed), caption


def test_generation_is_deterministic(demo, tmp_path):
    corpus, evaluation, _ = demo
    generate_demo(str(tmp_path / "corpus"), str(tmp_path / "eval"), SETTINGS)
    for original in [
        *corpus.glob("*.tar"),
        *evaluation.rglob("*.tar"),
        *evaluation.rglob("*.json"),
    ]:
        copy = tmp_path / original.relative_to(corpus.parent)
        assert copy.read_bytes() == original.read_bytes(), original.name


def test_eval_datasets_read_back_with_the_evaluation_reader(demo):
    _, evaluation, summary = demo
    assert read_classes(str(evaluation)) == [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ]  # fmt: skip
    assert summary["eval"] == {"train": 120, "test": 80}
    for split, size in summary["eval"].items():
        opened = open_split(str(evaluation), split)
        assert opened.num_samples == size
        assert opened.num_classes == 10
    manifest = json.loads((evaluation / "test" / "manifest.json").read_text())
    assert manifest["format"] == "mawsflow.classification/1"
    labels = [int(m["cls"]) for _, m in read_shards(evaluation / "test")]
    assert len(set(labels)) == 10


def test_cli_validates_its_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo_corpus_step.main(["--corpus-out", "x", "--eval-out", "y", "--num-images", "0"])
    assert exit_info.value.code == 2
    assert "num_images must be 1..60000" in capsys.readouterr().err


def test_cli_names_a_missing_fashion_mnist(tmp_path, capsys):
    args = ["--corpus-out", str(tmp_path / "c"), "--eval-out", str(tmp_path / "e"),
            "--fashion-mnist-dir", str(tmp_path / "nowhere")]  # fmt: skip
    assert demo_corpus_step.main(args) == 1
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err
