"""ImageNet-21k as a multi-label pretraining dataset (§A, "ImageNet-21k pretraining").

The paper: "In IN21k each image is labeled with one class, but the classes are based on WordNet
synsets which are hierarchical in nature. Some images in this dataset are duplicated across
more than one class – we deduplicate the images by hashing the image contents, and convert the
dataset to a multi-label dataset. We disregard the class hierarchy amongst the labels and treat
them independently." Issue 15 adds deduplication against the evaluation sets, so that no test
image is seen in pretraining.

Input: an ImageFolder of WordNet-id class folders, `<root>/<wnid>/<image>` (`n01440764/…`), as
ImageNet-21k ships. Steps:

1. Every image is read, fully decoded (`mawsflow.dataset.images.validate_image`: truncated or
   garbled files, and files that are not images, are dropped and counted) and hashed: BLAKE2b
   with a 128-bit digest of the file's bytes, the hash the hashtag build uses
   (`mawsflow.dataset.image_records.content_hash`). "Duplicate" means byte-identical.
2. Images with the same hash are one sample whose labels are every class folder holding a copy
   (the multi-label conversion; a copy repeated inside one folder adds nothing). The first copy
   in sorted path order supplies the bytes.
3. A sample whose hash is also the hash of an image in an evaluation dataset (every split of
   every `prepare-eval` output given) is dropped, counted per evaluation dataset. Evaluation
   shards hold JPEG, PNG and WebP bytes as their source had them, so an exact copy of a source
   image is caught; `prepare-eval` re-encodes other formats (BMP, TIFF…) as PNG, and a re-encoded
   or resized copy is not an exact duplicate: that needs perceptual hashing, which §A does not
   describe.
4. The samples are written in hash order, which mixes the classes (a folder-ordered dataset would
   stream class after class, and the loader shuffles only within a buffer) and is the same on
   every run, into the pretraining format the `wsp` step reads (docs/data-formats.md): shards of
   `<hash>.<ext>` + `<hash>.labels.json`, `vocab.json` (one entry per class folder, indices in
   sorted wnid order, the synset's name and lemmas from WordNet 3.0, the count of samples
   carrying it), `stats.json`, and `manifest.json` last. There are no captions: the paper's
   IN21k models are aligned for zero-shot on PMD, not on IN21k (§4.3).

The build runs in one process and holds one small record per unique image (its hash, the path of
its first copy and its labels): about 1.5 GB for IN21k's 14M images.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mawsflow import storage
from mawsflow.data.eval_shards import SPLITS, open_split
from mawsflow.data.manifest import MANIFEST_FORMAT
from mawsflow.data.members import CorruptSample, image_member
from mawsflow.data.shards import samples_in_order
from mawsflow.dataset.image_records import content_hash
from mawsflow.dataset.images import validate_image
from mawsflow.dataset.shard_writer import ShardWriter
from mawsflow.dataset.stats import SampleDrop, SampleRejected
from mawsflow.dataset.vocab import VocabEntry, write_vocabulary
from mawsflow.dataset.wordnet_corpus import load_wordnet
from mawsflow.errors import DataFormatError
from mawsflow.log import progress

log = logging.getLogger(__name__)

WNID = re.compile(r"^n\d{8}$")
DEFAULT_SAMPLES_PER_SHARD = 1000


@dataclass
class _Image:
    """One unique image: where its first copy is, and the classes holding a copy."""

    uri: str
    ext: str
    labels: set[int] = field(default_factory=set)


@dataclass
class In21kStats:
    """What the conversion read, merged, dropped and wrote (`stats.json`)."""

    classes: int = 0
    files: int = 0
    not_images: int = 0
    corrupt_images: int = 0
    unique_images: int = 0
    # Copies beyond the first of an image (in the same or another class folder).
    merged_copies: int = 0
    multi_label_samples: int = 0
    eval_images_hashed: dict[str, int] = field(default_factory=dict)
    dropped_eval_duplicates: dict[str, int] = field(default_factory=dict)
    samples_written: int = 0
    labels_per_sample: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def class_folders(root: str) -> dict[str, list[str]]:
    """`<wnid>` → its files' URIs (sorted), from an ImageFolder of WordNet-id folders."""
    root = root.rstrip("/")
    files = storage.list_uris(root + "/")
    if not files:
        raise DataFormatError(f"{root}: no files (expected <wnid>/<image>, e.g. n01440764/x.JPEG)")
    folders: dict[str, list[str]] = {}
    for uri in files:
        parts = uri[len(root) + 1 :].split("/")
        if len(parts) != 2:
            raise DataFormatError(f"{uri}: expected <wnid>/<image> directly below {root}")
        if not WNID.match(parts[0]):
            raise DataFormatError(
                f"{root}/{parts[0]}: class folders must be WordNet noun ids like n01440764"
            )
        folders.setdefault(parts[0], []).append(uri)
    return {wnid: sorted(uris) for wnid, uris in sorted(folders.items())}


def evaluation_hashes(datasets: Mapping[str, str], stats: In21kStats) -> dict[bytes, str]:
    """Content hash → the name of the (first) evaluation dataset holding that image, over every
    split of every dataset."""
    hashes: dict[bytes, str] = {}
    for name, uri in datasets.items():
        present = [s for s in SPLITS if storage.exists(storage.join(uri, s, "manifest.json"))]
        if not present:
            raise DataFormatError(f"{uri}: no split manifests; is this an evaluation dataset?")
        count = 0
        for split in present:
            for raw in samples_in_order(open_split(uri, split).shards):
                try:
                    hashes.setdefault(content_hash(image_member(raw)), name)
                except CorruptSample:
                    continue
                count += 1
        stats.eval_images_hashed[name] = count
        log.info("hashed %d images of evaluation dataset %s (%s)", count, name, uri)
    return hashes


def _read_images(folders: Mapping[str, list[str]], stats: In21kStats) -> dict[bytes, _Image]:
    """Every readable image by content hash, with the classes (indices into the sorted wnids)
    that hold a copy."""
    images: dict[bytes, _Image] = {}
    uris = [(label, uri) for label, wnid in enumerate(folders) for uri in folders[wnid]]
    for label, uri in progress(uris, desc="hash images", total=len(uris), unit="img", logger=log):
        stats.files += 1
        data = storage.read_bytes(uri)
        try:
            ext = validate_image(data)
        except SampleRejected as rejected:
            if rejected.reason == SampleDrop.NOT_AN_IMAGE:
                stats.not_images += 1
            else:
                stats.corrupt_images += 1
            log.warning("skipped %s (%s)", uri, rejected.reason)
            continue
        digest = content_hash(data)
        if digest in images:
            stats.merged_copies += 1
        else:
            images[digest] = _Image(uri, ext)
        images[digest].labels.add(label)
    return images


def synsets(wnids: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Each class folder's WordNet 3.0 noun synset: (name, lemmas); checked before any image
    is read, so that a wrong folder fails the build at once."""
    wordnet = load_wordnet()
    out = []
    for wnid in wnids:
        try:
            synset = wordnet.synset_from_pos_and_offset(wordnet.NOUN, int(wnid[1:]))
        except Exception:  # nltk raises WordNetError or a bare ValueError/KeyError by version
            synset = None
        if synset is None:  # and returns None for an offset where no synset starts
            raise DataFormatError(f"class folder {wnid}: not a WordNet 3.0 noun synset")
        out.append((synset.name(), list(synset.lemma_names())))
    return out


def _build_id(images: Iterable[tuple[bytes, _Image]], evaluation: Mapping[str, str]) -> str:
    """A digest of what was written (hashes and labels) and what it was checked against."""
    digest = hashlib.blake2b(digest_size=8)
    for key, image in images:
        digest.update(key + json.dumps(sorted(image.labels)).encode())
    digest.update(json.dumps(sorted(evaluation.items())).encode())
    return digest.hexdigest()


def build_in21k(
    source: str,
    output: str,
    *,
    evaluation: Mapping[str, str] | None = None,
    samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD,
) -> In21kStats:
    """Convert the ImageFolder at `source` into a multi-label pretraining dataset at `output`,
    without the images of the `evaluation` datasets (name → URI); returns the statistics."""
    if samples_per_shard < 1:
        raise DataFormatError(f"samples_per_shard must be at least 1, got {samples_per_shard}")
    output = output.rstrip("/")
    evaluation = dict(evaluation or {})
    stats = In21kStats()
    folders = class_folders(source)
    wnids = list(folders)
    names = synsets(wnids)
    stats.classes = len(wnids)
    held_out = evaluation_hashes(evaluation, stats)
    images = _read_images(folders, stats)
    stats.unique_images = len(images)
    stats.dropped_eval_duplicates = {name: 0 for name in evaluation}
    kept = []
    for digest in sorted(images):
        if digest in held_out:
            stats.dropped_eval_duplicates[held_out[digest]] += 1
            continue
        kept.append((digest, images[digest]))
    if not kept:
        raise DataFormatError(f"{source}: no images left to write")
    counts: Counter[int] = Counter()
    per_sample: Counter[int] = Counter()
    with ShardWriter(
        lambda i: storage.join(output, "shards", f"train-{i:06d}.tar"), samples_per_shard
    ) as writer:
        for digest, image in progress(
            kept, desc="write shards", total=len(kept), unit="img", logger=log
        ):
            labels = sorted(image.labels)
            writer.write(
                digest.hex(),
                {
                    image.ext: storage.read_bytes(image.uri),
                    "labels.json": json.dumps(labels).encode(),
                },
            )
            counts.update(labels)
            per_sample[len(labels)] += 1
    stats.samples_written = writer.samples
    stats.multi_label_samples = sum(n for size, n in per_sample.items() if size > 1)
    stats.labels_per_sample = {str(size): per_sample[size] for size in sorted(per_sample)}
    # One entry per class folder, in sorted wnid order (the labels written above).
    vocab = [
        VocabEntry(index=i, wnid=wnid, synset=name, lemmas=lemmas, count=counts[i])
        for i, (wnid, (name, lemmas)) in enumerate(zip(wnids, names, strict=True))
    ]
    write_vocabulary(storage.join(output, "vocab.json"), vocab)
    storage.write_json(storage.join(output, "stats.json"), stats.as_dict())
    manifest = {
        "format": MANIFEST_FORMAT,
        "build": _build_id(kept, evaluation),
        "shards": [uri[len(output) + 1 :] for uri in writer.shards],
        "num_samples": writer.samples,
        "samples_per_shard": samples_per_shard,
        "num_classes": len(wnids),
        "vocab": "vocab.json",
        "stats": "stats.json",
    }
    storage.write_json(storage.join(output, "manifest.json"), manifest)
    log.info(
        "IN21k: %d samples (%d multi-label) in %d shards, %d classes; dropped %s",
        writer.samples,
        stats.multi_label_samples,
        len(writer.shards),
        len(wnids),
        stats.dropped_eval_duplicates,
    )
    return stats
