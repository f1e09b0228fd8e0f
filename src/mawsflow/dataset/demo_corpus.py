"""The demo corpus: real Fashion-MNIST images posted Instagram-style, with hashtag captions.

Each corpus sample is a Fashion-MNIST training image (PNG) with a caption written the way
people tag clothes: the class under its synonyms and inflections (`#sneakers #GymShoes
#TennisShoes`), CamelCase and run-together compounds (`#TrenchCoat`, `#totebag`), slang and
words whose common WordNet sense is something else (`#kicks`, `#trainers`, `#jersey`), off-topic
and made-up tags (`#ootd #instagood #love`), emoji glued to tags, repeated tags, shop links
with `#` fragments, captions in other languages and captions with no tag at all. A small share
of posts are reposts of an earlier image under a new caption (the build deduplicates them),
and a smaller share are broken the ways scraped data breaks: a truncated image, a missing,
empty or non-UTF-8 caption. Everything is decided by a per-sample RNG seeded with
(seed, index), so the same arguments always give the same bytes.

Beside it, the evaluation datasets (docs/data-formats.md, "Evaluation datasets", written with
mawsflow.data.eval_shards' writer): a `train` split from the end of Fashion-MNIST's training set
(disjoint from the corpus unless both are asked to be large) and a `test` split from its test
set, with the ten class names.
"""

from __future__ import annotations

import io
import json
import logging
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from mawsflow import storage
from mawsflow.data.eval_shards import SplitWriter, write_classes
from mawsflow.data.fashion_mnist import CLASSES, DEBIAN_FASHION_MNIST, load_fashion_mnist
from mawsflow.dataset.shard_writer import ShardWriter

log = logging.getLogger(__name__)

FASHION_MNIST_TRAIN_SIZE = 60_000

# How people tag each class. Most reach the class's synset; some reach another sense (`kicks`,
# `trainers`, `jersey`, `pants`, `FlipFlops`) or nothing (`AnkleBoots`), as real tags do.
CLASS_HASHTAGS: dict[int, tuple[str, ...]] = {
    0: ("tshirt", "TShirt", "tshirts", "teeshirt", "TeeShirt", "tshirtdesign", "jersey", "tee"),
    1: ("trousers", "Trousers", "slacks", "chinos", "jeans", "denim", "pants", "Sweatpants"),
    2: ("pullover", "Pullover", "sweater", "sweaters", "knitwear", "jumper", "Sweaters"),
    3: ("dress", "dresses", "Dress", "frock", "sundress", "gown", "LittleBlackDress"),
    4: ("coat", "coats", "overcoat", "TrenchCoat", "trenchcoat", "parka", "raincoat"),
    5: ("sandals", "sandal", "Sandals", "FlipFlops", "flipflop", "sandalsseason"),
    6: ("shirt", "shirts", "Shirt", "blouse", "DressShirt", "dressshirt", "flannel"),
    7: ("sneakers", "sneaker", "Sneakers", "GymShoes", "TennisShoes", "trainers", "kicks"),
    8: ("bag", "handbag", "Handbags", "purse", "totebag", "ShoppingBag", "backpack"),
    9: ("boots", "boot", "Boots", "booties", "AnkleBoots", "ankleboots", "ChelseaBoots"),
}
CLASS_WORDS = (
    "tee",
    "trousers",
    "pullover",
    "dress",
    "coat",
    "sandals",
    "shirt",
    "sneakers",
    "bag",
    "boots",
)
NOISE_HASHTAGS = (
    "ootd",
    "instagood",
    "fashion",
    "style",
    "love",
    "photooftheday",
    "nofilter",
    "tbt",
    "weekend",
    "shopping",
    "instafashion",
    "outfit",
    "picoftheday",
    "vintage",
    "summer",
    "mood",
    "OOTDinspo",
    "mom's",
)
ENGLISH_TEMPLATES = (
    "Loving my new {word}!",
    "New {word} just arrived",
    "Obsessed with these {word}",
    "{word} of the day",
    "Can't stop wearing this {word}",
    "Thrifted this {word} for $5",
    "Which {word} should I wear tonight?",
    "Back in stock",
    "Found the perfect {word}",
    "Weekend look",
)
FOREIGN_POSTS = (
    ("Nouvelle tenue pour ce week-end", ("mode", "tenuedujour", "nouveauté")),
    ("Mi nuevo look favorito", ("moda", "estilo", "zapatos_nuevos")),
    ("Neues Outfit für heute", ("Mode", "Turnschuhe", "OutfitDesTages")),
    ("今日のコーデ", ("ファッション", "スニーカー", "コーデ")),
    ("Новый образ на выходные", ("мода", "стиль", "образ")),
    ("Meu look do dia", ("moda", "lookdodia", "estilo")),
)
UNTAGGED_CAPTIONS = (
    "Sunday vibes ☀️",
    "new in",
    "what do you think?",
    "link in bio",
    "Happy Friday everyone!",
    "❤️❤️❤️",
)
EMOJI = ("🔥", "✨", "❤️", "😍", "👟", "👗", "🛍️", "💯")


@dataclass(frozen=True)
class DemoCorpusSettings:
    num_images: int = 15_000
    eval_train_images: int = 10_000
    eval_test_images: int = 10_000
    samples_per_shard: int = 1000
    seed: int = 0
    repost_rate: float = 0.02  # share of posts re-using an earlier image
    defect_rate: float = 0.005  # share of posts broken on purpose (see the module docstring)

    def __post_init__(self) -> None:
        if not 1 <= self.num_images <= FASHION_MNIST_TRAIN_SIZE:
            raise ValueError(f"num_images must be 1..{FASHION_MNIST_TRAIN_SIZE}")
        if self.eval_train_images < 1 or self.eval_test_images < 1:
            raise ValueError("evaluation splits need at least one image each")
        if self.samples_per_shard < 1:
            raise ValueError("samples_per_shard must be at least 1")
        for name in ("repost_rate", "defect_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1)")


def encode_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")  # 2-D uint8: grayscale
    return buffer.getvalue()


def _hashtag(tag: str, rng: random.Random) -> str:
    text = f"#{tag}"
    roll = rng.random()
    if roll < 0.08:
        return f"{rng.choice(EMOJI)}{text}{rng.choice(EMOJI)}"
    if roll < 0.12:
        return f"({text})"
    if roll < 0.16:
        return f"{text}!"
    return text


def demo_caption(label: int, rng: random.Random) -> str:
    """An Instagram-like caption for an image of class `label`."""
    kind = rng.random()
    if kind < 0.06:
        return rng.choice(UNTAGGED_CAPTIONS)
    if kind < 0.16:
        text, tags = rng.choice(FOREIGN_POSTS)
        chosen = rng.sample(tags, rng.randint(1, len(tags)))
        if rng.random() < 0.5:
            chosen.append(rng.choice(CLASS_HASHTAGS[label]))
        return f"{text} {' '.join(_hashtag(tag, rng) for tag in chosen)}"
    class_tags = rng.sample(CLASS_HASHTAGS[label], rng.randint(1, 3))
    noise_tags = rng.sample(NOISE_HASHTAGS, rng.randint(0, 3))
    tags = class_tags + noise_tags
    rng.shuffle(tags)
    if rng.random() < 0.1:
        tags.append(tags[0].upper())  # the same tag again, shouted
    pieces = [_hashtag(tag, rng) for tag in tags]
    if len(pieces) > 1 and rng.random() < 0.05:
        pieces[:2] = [pieces[0] + pieces[1]]  # two tags typed without a space
    text = rng.choice(ENGLISH_TEMPLATES).format(word=CLASS_WORDS[label])
    if rng.random() < 0.1:
        text += f" Shop it: https://shop.example.com/p/{rng.randint(1000, 9999)}#reviews"
    if rng.random() < 0.3:
        return " ".join(pieces) + "\n" + text
    return text + "\n\n" + " ".join(pieces)


def _defective(members: dict[str, bytes], rng: random.Random) -> dict[str, bytes]:
    """The sample broken in one of the ways scraped data is."""
    broken = dict(members)
    defect = rng.randrange(4)
    if defect == 0:
        broken["png"] = members["png"][: len(members["png"]) // 2]
    elif defect == 1:
        del broken["txt"]
    elif defect == 2:
        broken["txt"] = b"   \n"
    else:
        text = "café " + members["txt"].decode("utf-8")
        broken["txt"] = text.encode("latin-1", errors="replace")
    return broken


def write_corpus(
    images: np.ndarray, labels: np.ndarray, corpus_out: str, settings: DemoCorpusSettings
) -> dict[str, int]:
    """Write the corpus shards; returns how many posts of each kind were written."""
    counts: Counter[str] = Counter()
    with ShardWriter(
        lambda k: storage.join(corpus_out, f"shard-{k:06d}.tar"), settings.samples_per_shard
    ) as writer:
        for index in range(settings.num_images):
            rng = random.Random(f"mawsflow-demo:{settings.seed}:{index}")
            source = index
            if index > 0 and rng.random() < settings.repost_rate:
                source = rng.randrange(index)
                counts["reposts"] += 1
            label = int(labels[source])
            metadata = {"source": "fashion-mnist", "split": "train", "index": source}
            members = {
                "png": encode_png(images[source]),
                "txt": demo_caption(label, rng).encode("utf-8"),
                "json": json.dumps(metadata, sort_keys=True).encode("utf-8"),
            }
            if rng.random() < settings.defect_rate:
                members = _defective(members, rng)
                counts["defective"] += 1
            writer.write(f"{index:08d}", members)
    counts["posts"] = writer.samples
    counts["shards"] = len(writer.shards)
    return dict(counts)


def write_eval_split(
    images: np.ndarray, labels: np.ndarray, eval_out: str, split: str, samples_per_shard: int
) -> int:
    """One evaluation split (shards + manifest.json); returns its sample count."""
    writer = SplitWriter(eval_out, split, len(CLASSES), samples_per_shard=samples_per_shard)
    for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        writer.write(f"{split}-{index:06d}", encode_png(pixels), "png", int(label))
    return writer.close()["num_samples"]


def generate_demo(
    corpus_out: str,
    eval_out: str,
    settings: DemoCorpusSettings,
    fashion_mnist_dir: str = DEBIAN_FASHION_MNIST,
) -> dict[str, Any]:
    """Write the demo corpus and the evaluation datasets; returns a summary."""
    train_images, train_labels = load_fashion_mnist(fashion_mnist_dir, "train")
    test_images, test_labels = load_fashion_mnist(fashion_mnist_dir, "test")
    eval_train = min(settings.eval_train_images, len(train_images))
    eval_test = min(settings.eval_test_images, len(test_images))
    if settings.num_images + eval_train > len(train_images):
        log.warning(
            "corpus (%d) and eval train split (%d) overlap: Fashion-MNIST has %d train images",
            settings.num_images,
            eval_train,
            len(train_images),
        )
    corpus = write_corpus(train_images, train_labels, corpus_out, settings)
    write_classes(eval_out, CLASSES)
    evaluation = {
        "train": write_eval_split(
            train_images[-eval_train:],
            train_labels[-eval_train:],
            eval_out,
            "train",
            settings.samples_per_shard,
        ),
        "test": write_eval_split(
            test_images[:eval_test],
            test_labels[:eval_test],
            eval_out,
            "test",
            settings.samples_per_shard,
        ),
    }
    summary = {"corpus": corpus, "eval": evaluation}
    log.info("demo corpus written", extra={"summary": summary})
    return summary
