"""The dataset build's label-and-write phase against plainly copying the same shards, and the
speed of hashtag → synset mapping alone.

The write phase (mawsflow.dataset.write_phase) reads every input shard, re-checks each sample,
maps its hashtags, hashes the image and writes the labelled sample; the floor for any phase
that reads and rewrites the shards is copying them (`storage.copy`, the same atomic, fsynced
writes). The ratio is `write time / copy time` on the same shards in the same run, after one
untimed read of the input so both start from a warm page cache. It is reported with
resampling off (output bytes ≈ input bytes, the like-for-like comparison) and at the paper's
5/3 (more output than input, so above the copy by construction).

Three corpora, generated into a scratch directory from Fashion-MNIST:

- `demo`: the demo corpus as `mawsflow demo-corpus` writes it (28×28 PNGs, ~0.5 KB);
- `photo256` / `photo640`: the same posts with each image enlarged to 256² / 640² RGB JPEG with
  sensor-like noise (~25 KB / ~150 KB: a thumbnail, and a photo as social media serves it),
  where per-byte cost outweighs per-sample cost.

Mapping speed is captions/s for hashtag extraction + tag → synset over the corpus's captions,
cold (a fresh per-process cache) and warm (every tag seen before), and tags/s for tags never
seen before (WordNet lemmas spelled as hashtags, and made-up tags), which is what a cache miss
costs on a real corpus's long tail.

    python bench/bench_build_dataset.py                  # every corpus, 6000 posts each
    python bench/bench_build_dataset.py --posts 20000 --corpus photo640
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable

import numpy as np
from PIL import Image

from mawsflow import storage
from mawsflow.data.fashion_mnist import DEBIAN_FASHION_MNIST, load_fashion_mnist
from mawsflow.data.hashtags import extract_hashtags
from mawsflow.dataset.captions import decode_caption
from mawsflow.dataset.count_phase import run_count
from mawsflow.dataset.demo_corpus import DemoCorpusSettings, write_corpus
from mawsflow.dataset.layout import ShardGroup, list_input_shards
from mawsflow.dataset.resample import PAPER_RATIO, ResampleSettings
from mawsflow.dataset.safe_tar import iter_tar_samples
from mawsflow.dataset.sample_tags import ReadLimits
from mawsflow.dataset.shard_writer import ShardWriter
from mawsflow.dataset.synsets import HashtagMapper, default_mapper
from mawsflow.dataset.vocab import VocabSettings
from mawsflow.dataset.vocab_phase import run_vocab
from mawsflow.dataset.wordnet_corpus import load_wordnet
from mawsflow.dataset.write_phase import run_write

GROUP = ShardGroup(0, 1)


def shard_name(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


def photo_corpus(demo: str, out: str, side: int, seed: int = 0) -> None:
    """The demo corpus with every PNG replaced by a side×side noisy RGB JPEG of the image."""
    rng = np.random.default_rng(seed)
    for shard in list_input_shards(demo):
        target = storage.join(out, shard_name(shard))
        with (
            storage.open_read(shard) as stream,
            ShardWriter(lambda _, target=target: target, 10**9) as writer,
        ):
            for sample in iter_tar_samples(stream, Counter()):
                members = dict(sample.members)
                if "png" in members:
                    try:
                        small = Image.open(io.BytesIO(members.pop("png"))).convert("RGB")
                    except OSError:
                        members["png"] = b"broken"  # keep the demo's deliberate defects broken
                    else:
                        big = np.asarray(small.resize((side, side), Image.BICUBIC), dtype=np.int16)
                        noisy = big + rng.normal(0, 12, big.shape).astype(np.int16)
                        buffer = io.BytesIO()
                        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(
                            buffer, format="JPEG", quality=90
                        )
                        members["jpg"] = buffer.getvalue()
                writer.write(sample.key, members)


def timed(action: Callable[[], object], repeats: int) -> float:
    """Median wall time of `repeats` runs."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def copy_shards(shards: list[str], target: str) -> None:
    for uri in shards:
        with (
            storage.open_read(uri) as source,
            storage.open_write(storage.join(target, shard_name(uri))) as sink,
        ):
            shutil.copyfileobj(source, sink, 1 << 20)


def read_all(shards: list[str]) -> int:
    total = 0
    for uri in shards:
        with storage.open_read(uri) as stream:
            while chunk := stream.read(1 << 20):
                total += len(chunk)
    return total


def bench_corpus(name: str, corpus: str, scratch: str, repeats: int) -> None:
    shards = list_input_shards(corpus)
    size = read_all(shards)  # warms the page cache for everything below
    print(f"\n[{name}] {len(shards)} shards, {size / 1e6:.1f} MB")
    copy_s = timed(lambda: copy_shards(shards, storage.join(scratch, "copy")), repeats)
    print(f"  plain copy                         {copy_s:7.2f} s  {size / 1e6 / copy_s:7.1f} MB/s")
    for ratio in (1.0, PAPER_RATIO):
        out = storage.join(scratch, f"build-{name}-{ratio:.2f}")
        run_count(corpus, out, GROUP, ReadLimits())
        run_vocab(out, 1, VocabSettings(min_count=10), ResampleSettings(ratio), 1000)
        report: dict = {}

        def write(out: str = out, report: dict = report) -> None:
            report.update(run_write(corpus, out, GROUP))  # a rerun overwrites the same shards

        write_s = timed(write, repeats)
        print(
            f"  label+write, resample {ratio:4.2f}       {write_s:7.2f} s  "
            f"{size / 1e6 / write_s:7.1f} MB/s  {report['samples'] / write_s:8.0f} samples/s  "
            f"ratio to copy {write_s / copy_s:5.2f}x"
        )


def bench_mapping(corpus: str) -> None:
    captions = []
    for shard in list_input_shards(corpus):
        with storage.open_read(shard) as stream:
            for sample in iter_tar_samples(stream, Counter()):
                try:
                    captions.append(decode_caption(sample.members["txt"]))
                except (KeyError, ValueError):
                    continue
    wordnet = load_wordnet()
    cold_mapper = HashtagMapper(wordnet)

    def run(mapper: HashtagMapper) -> float:
        start = time.perf_counter()
        for caption in captions:
            mapper.synsets_for_tags(extract_hashtags(caption))
        return time.perf_counter() - start

    cold = run(cold_mapper)
    warm = min(run(cold_mapper) for _ in range(3))
    extract = min(timed(lambda: [extract_hashtags(c) for c in captions], 1) for _ in range(3))
    distinct = cold_mapper.synset_for.cache_info().currsize
    # Tags never seen before: WordNet noun lemmas (every 7th) written as hashtags are, as
    # CamelCase plurals and run-together, plus as many made-up tags that map to nothing.
    lemmas = sorted(wordnet.all_lemma_names(pos="n"))[::7]
    fresh = [
        *("".join(word.capitalize() for word in lemma.split("_")) + "s" for lemma in lemmas),
        *(lemma.replace("_", "") for lemma in lemmas),
        *(f"insta{lemma.replace('_', '')}xyz" for lemma in lemmas),
    ]
    uncached = HashtagMapper(wordnet)
    start = time.perf_counter()
    mapped = sum(uncached.synset_for(tag) is not None for tag in fresh)
    fresh_s = time.perf_counter() - start
    print(
        f"\n[mapping] {len(captions)} captions, {distinct} distinct tags\n"
        f"  extraction only                    {len(captions) / extract:9.0f} captions/s\n"
        f"  extraction + mapping, cold cache   {len(captions) / cold:9.0f} captions/s\n"
        f"  extraction + mapping, warm cache   {len(captions) / warm:9.0f} captions/s\n"
        f"  never-seen tags (no cache help)    {len(fresh) / fresh_s:9.0f} tags/s "
        f"({len(fresh)} tags, {mapped} mapped)"
    )


def run_all(args: argparse.Namespace, scratch: str) -> None:
    images, labels = load_fashion_mnist(args.fashion_mnist_dir, "train")
    demo = storage.join(scratch, "demo")
    write_corpus(images, labels, demo, DemoCorpusSettings(num_images=args.posts))
    for name in args.corpus or ("demo", "photo256", "photo640"):
        corpus = demo
        if name != "demo":
            corpus = storage.join(scratch, name)
            photo_corpus(demo, corpus, side=int(name.removeprefix("photo")))
        bench_corpus(name, corpus, scratch, args.repeats)
    bench_mapping(demo)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=6000, help="posts per corpus")
    parser.add_argument(
        "--corpus", choices=("demo", "photo256", "photo640"), action="append", help="default: all"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (median)")
    parser.add_argument("--fashion-mnist-dir", default=DEBIAN_FASHION_MNIST)
    parser.add_argument(
        "--store",
        help="where corpora and outputs go, e.g. s3://bucket/bench (AWS_* variables name the "
        "endpoint); everything under it is deleted afterwards. Default: a local temp directory",
    )
    args = parser.parse_args()

    default_mapper()  # WordNet loads once, outside every timing
    if args.store:
        try:
            run_all(args, args.store)
        finally:
            for uri in storage.list_uris(args.store.rstrip("/") + "/"):
                storage.delete(uri)
        return
    with tempfile.TemporaryDirectory(prefix="bench-build-dataset-") as tmp:
        run_all(args, tmp)


if __name__ == "__main__":
    main()
