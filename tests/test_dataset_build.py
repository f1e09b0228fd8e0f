"""The whole dataset build on a real corpus (Fashion-MNIST images, hashtag captions, real
WordNet) with every kind of bad input mixed in: what is dropped and why, the output format,
byte-identical reruns, the same samples from 1 and 3 workers, the CLI phases, and SeaweedFS."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from demo_inputs import require_demo_sources
from mawsflow import storage
from mawsflow.data.fashion_mnist import DEBIAN_FASHION_MNIST, load_fashion_mnist
from mawsflow.data.manifest import read_manifest
from mawsflow.dataset.build import BuildSettings, build_dataset
from mawsflow.dataset.count_phase import run_count
from mawsflow.dataset.demo_corpus import DemoCorpusSettings, encode_png, write_corpus
from mawsflow.dataset.finalize_phase import run_finalize
from mawsflow.dataset.image_records import content_hash
from mawsflow.dataset.layout import BuildLayout, ShardGroup
from mawsflow.dataset.resample import PAPER_RATIO, ResampleSettings
from mawsflow.dataset.safe_tar import iter_tar_samples
from mawsflow.dataset.sample_tags import ReadLimits
from mawsflow.dataset.vocab import VocabSettings
from mawsflow.dataset.vocab_phase import run_vocab
from mawsflow.dataset.write_phase import run_write
from mawsflow.steps import build_dataset as build_dataset_step

SAMPLES_PER_SHARD = 64
SETTINGS = BuildSettings(
    limits=ReadLimits(),
    vocab=VocabSettings(min_count=3),
    resample=ResampleSettings(target_ratio=PAPER_RATIO, seed=0),
    samples_per_shard=SAMPLES_PER_SHARD,
)
# Bad inputs planted in the corpus, and how each is counted.
EXPECTED_PROBLEMS = {
    "caption_not_utf8": 1,
    "caption_too_long": 1,
    "corrupt_image": 1,
    "not_an_image": 1,
    "missing_caption": 1,
    "empty_caption": 1,
    "duplicate_key": 1,
    "unsafe_member_path": 2,
    "empty_shard": 1,
    "truncated_shard": 1,
}


def tar_of(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """600 generated posts in 6 shards, plus shards of bad input next to good neighbours."""
    require_demo_sources()
    root = tmp_path_factory.mktemp("corpus") / "input"
    images, labels = load_fashion_mnist(DEBIAN_FASHION_MNIST, "train")
    settings = DemoCorpusSettings(
        num_images=600, samples_per_shard=100, repost_rate=0.05, defect_rate=0.0
    )
    write_corpus(images, labels, str(root), settings)

    spare, _ = load_fashion_mnist(DEBIAN_FASHION_MNIST, "test")
    png = [encode_png(pixels) for pixels in spare[:12]]
    neighbours = {"n1": png[0], "n2": png[1], "n3": png[2], "n4": png[3], "n5": png[4]}
    bad = [
        ("n1.png", png[0]),
        ("n1.txt", b"love these #sneakers"),
        ("latin.png", png[5]),
        ("latin.txt", "café #sneakers".encode("latin-1")),
        ("n2.png", png[1]),
        ("n2.txt", b"#GymShoes"),
        ("long.png", png[6]),
        ("long.txt", b"#sneakers " * 110_000),  # 1.1 MB
        ("corrupt.png", png[7][: len(png[7]) // 2]),
        ("corrupt.txt", b"#sneakers"),
        ("text.jpg", b"<html>this is an error page, not a photo</html>"),
        ("text.txt", b"#sneakers"),
        ("nocaption.png", png[8]),
        ("empty.png", png[9]),
        ("empty.txt", b""),
        ("/abs/evil.png", png[10]),
        ("../escape.txt", b"#sneakers"),
        ("n1.png", png[11]),  # a second sample under an earlier key
        ("n1.txt", b"#dress"),
        ("n3.png", png[2]),
        ("n3.txt", b"#TShirt of the day"),
    ]
    (root / "zz-bad.tar").write_bytes(tar_of(bad))
    (root / "zz-empty.tar").write_bytes(b"")
    truncated = tar_of(
        [
            ("n4.png", png[3]),
            ("n4.txt", b"#sneakers"),
            ("n5.png", png[4]),
            ("n5.txt", b"#Sneakers"),
            ("lost.png", png[5] * 4),
            ("lost.txt", b"#sneakers"),
        ]
    )
    with tarfile.open(fileobj=io.BytesIO(truncated)) as archive:
        cut = archive.getmembers()[4].offset_data + 100
    (root / "zz-truncated.tar").write_bytes(truncated[:cut])
    return {"input": str(root), "neighbours": neighbours}


def build_in_process(
    input_uri: str, out: str, groups: int, settings: BuildSettings = SETTINGS
) -> dict:
    """Every phase in this process, group by group: the pipeline's tasks run one after another."""
    for group in ShardGroup(0, groups).all_groups():
        run_count(input_uri, out, group, settings.limits)
    run_vocab(out, groups, settings.vocab, settings.resample, settings.samples_per_shard)
    for group in ShardGroup(0, groups).all_groups():
        run_write(input_uri, out, group)
    return run_finalize(out, groups)


def read_output(out: str) -> list[tuple[str, dict[str, bytes]]]:
    manifest = storage.read_json(storage.join(out, "manifest.json"))
    samples = []
    for shard in manifest["shards"]:
        problems: Counter[str] = Counter()
        with storage.open_read(storage.join(out, shard)) as stream:
            samples.extend((s.key, s.members) for s in iter_tar_samples(stream, problems))
        assert not problems
    return samples


def multiset(out: str) -> Counter:
    """(image content hash, labels) of every written sample."""
    counts: Counter = Counter()
    for _, members in read_output(out):
        image = next(data for ext, data in members.items() if ext in ("png", "jpg", "webp"))
        counts[(content_hash(image).hex(), members["labels.json"])] += 1
    return counts


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory) -> tuple[str, dict]:
    out = str(tmp_path_factory.mktemp("build") / "out")
    return out, build_in_process(corpus["input"], out, groups=1)


def test_bad_inputs_are_counted_and_good_neighbours_survive(corpus, built):
    out, stats = built
    counted = {
        **stats["samples"]["dropped"],
        **stats["members_skipped"],
        **{k: v for k, v in stats["shards"].items() if k != "read"},
    }
    for reason, expected in EXPECTED_PROBLEMS.items():
        assert counted[reason] == expected, reason
    # only the planted problems occur, besides the corpus's own untagged posts and reposts
    other = {k: v for k, v in counted.items() if v and k not in EXPECTED_PROBLEMS}
    assert set(other) <= {"no_hashtags", "no_synset", "duplicate_image"}
    assert stats["samples"]["dropped"]["duplicate_image"] > 0  # the corpus's reposts
    assert stats["shards"]["read"] == 9

    keys = {key.split("-")[0] for key, _ in read_output(out)}
    for name, image in corpus["neighbours"].items():
        assert content_hash(image).hex() in keys, f"good sample {name} was lost"


def test_output_follows_the_data_format(built):
    out, stats = built
    manifest = storage.read_json(storage.join(out, "manifest.json"))
    vocab = storage.read_json(storage.join(out, "vocab.json"))
    assert manifest["format"] == "mawsflow.multilabel/1"
    assert (manifest["vocab"], manifest["stats"]) == ("vocab.json", "stats.json")
    assert manifest["num_classes"] == len(vocab) == stats["vocabulary"]["classes"]
    assert manifest["samples_per_shard"] == SAMPLES_PER_SHARD
    assert manifest["shards"][0] == "shards/train-000000.tar"

    sizes = []
    for shard in manifest["shards"]:
        with storage.open_read(storage.join(out, shard)) as stream:
            sizes.append(sum(1 for _ in iter_tar_samples(stream, Counter())))
    assert all(size == SAMPLES_PER_SHARD for size in sizes[:-1])
    assert 0 < sizes[-1] <= SAMPLES_PER_SHARD
    assert sum(sizes) == manifest["num_samples"] == stats["samples"]["written"]

    assert [entry["index"] for entry in vocab] == list(range(len(vocab)))
    assert all(entry["count"] >= 3 and entry["wnid"].startswith("n") for entry in vocab)
    counts = [entry["count"] for entry in vocab]
    assert counts == sorted(counts, reverse=True)

    for key, members in read_output(out):
        assert set(members) == {"png", "labels.json", "txt"}
        digest = key.split("-")[0]
        assert content_hash(members["png"]).hex() == digest  # image bytes unchanged
        labels = json.loads(members["labels.json"])
        assert labels and labels == sorted(set(labels))
        assert all(0 <= label < len(vocab) for label in labels)
        caption = members["txt"].decode("utf-8")
        assert "#" not in caption.replace("C#", "") and "http" not in caption


def test_statistics_add_up(built):
    out, stats = built
    samples = stats["samples"]
    assert samples["read"] == samples["kept"] + sum(samples["dropped"].values())
    images = stats["label_histogram"]["images"]
    vocab = storage.read_json(storage.join(out, "vocab.json"))
    assert images == [entry["count"] for entry in vocab]
    metrics = storage.read_json(storage.join(out, "metrics.json"))
    assert all(isinstance(value, float) for value in metrics.values())
    assert metrics["samples_written"] == samples["written"]
    assert metrics["samples_dropped_corrupt_image"] == 1.0
    assert storage.read_json(storage.join(out, "stats.json")) == stats


def test_resampling_repeats_rare_labels(built):
    _, stats = built
    resampling = stats["resampling"]
    assert resampling["expected_ratio"] == pytest.approx(PAPER_RATIO, rel=1e-6)
    assert resampling["achieved_ratio"] == pytest.approx(PAPER_RATIO, abs=0.1)
    assert resampling["imbalance_after"] < resampling["imbalance_before"]
    assert stats["samples"]["written"] > stats["samples"]["kept"]


def test_a_rebuild_is_byte_identical(corpus, built, tmp_path):
    out, _ = built
    again = str(tmp_path / "again")
    build_in_process(corpus["input"], again, groups=1)
    for name in ("manifest.json", "vocab.json", "stats.json", "metrics.json"):
        assert Path(again, name).read_bytes() == Path(out, name).read_bytes(), name
    shards = sorted(p.name for p in Path(out, "shards").iterdir())
    assert shards == sorted(p.name for p in Path(again, "shards").iterdir())
    for name in shards:
        assert Path(again, "shards", name).read_bytes() == Path(out, "shards", name).read_bytes()


def test_three_workers_write_the_same_samples_as_one(corpus, built, tmp_path):
    out, stats = built
    three = str(tmp_path / "three")
    stats3 = build_dataset(corpus["input"], three, groups=3, workers=3, settings=SETTINGS)
    assert multiset(three) == multiset(out)
    assert sorted(key for key, _ in read_output(three)) == sorted(
        key for key, _ in read_output(out)
    )
    assert stats3["samples"] == stats["samples"]
    assert Path(three, "vocab.json").read_bytes() == Path(out, "vocab.json").read_bytes()


def test_cli_runs_each_phase_as_its_own_task(corpus, built, tmp_path, capsys):
    out, _ = built
    split = str(tmp_path / "cli")
    common = ["--out", split]
    for index in range(2):
        args = ["count", "--input", corpus["input"], *common, "--shards", f"{index}/2"]
        assert build_dataset_step.main(args) == 0
    vocab = ["vocab", *common, "--groups", "2", "--min-count", "3",
             "--samples-per-shard", str(SAMPLES_PER_SHARD)]  # fmt: skip
    assert build_dataset_step.main(vocab) == 0
    for index in (1, 0):  # any order, as parallel tasks finish
        args = ["write", "--input", corpus["input"], *common, "--shards", f"{index}/2"]
        assert build_dataset_step.main(args) == 0
    assert build_dataset_step.main(["finalize", *common, "--groups", "2"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["samples"]["written"] == sum(multiset(out).values())
    assert multiset(split) == multiset(out)


def test_cli_reports_phases_run_out_of_order(tmp_path, capsys):
    out = str(tmp_path / "nothing")
    assert build_dataset_step.main(["vocab", "--out", out, "--groups", "2"]) == 1
    assert "count phase has not finished for 2 of 2 groups" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        build_dataset_step.main(["count", "--input", out, "--out", out, "--shards", "2/2"])
    assert exit_info.value.code == 2


def test_a_changed_input_is_detected_before_writing(corpus, tmp_path):
    import shutil

    changing = tmp_path / "input"
    shutil.copytree(corpus["input"], changing)
    out = str(tmp_path / "out")
    run_count(str(changing), out, ShardGroup(0, 1), SETTINGS.limits)
    run_vocab(out, 1, SETTINGS.vocab, SETTINGS.resample, SAMPLES_PER_SHARD)
    new_shard = changing / "zz-new.tar"
    new_shard.write_bytes(tar_of([("x.png", b"png"), ("x.txt", b"#dog")]))
    with pytest.raises(RuntimeError, match="input shards changed since the count phase"):
        run_write(str(changing), out, ShardGroup(0, 1))
    new_shard.unlink()
    first = sorted(changing.glob("*.tar"))[0]
    first.write_bytes(first.read_bytes()[:-1024])  # one shard rewritten under the same name
    with pytest.raises(RuntimeError, match="changed since the count phase"):
        run_write(str(changing), out, ShardGroup(0, 1))


def test_build_on_seaweedfs(corpus, built, s3_bucket, capsys):
    out, _ = built
    input_uri = storage.join(s3_bucket, "raw")
    for path in sorted(Path(corpus["input"]).iterdir()):
        storage.upload_file(str(path), storage.join(input_uri, path.name))
    out_uri = storage.join(s3_bucket, "dataset")
    args = ["all", "--input", input_uri, "--out", out_uri, "--workers", "2", "--min-count", "3",
            "--samples-per-shard", str(SAMPLES_PER_SHARD)]  # fmt: skip
    assert build_dataset_step.main(args) == 0
    assert json.loads(capsys.readouterr().out)["classes"] > 0
    assert multiset(out_uri) == multiset(out)
    stats = storage.read_json(storage.join(out_uri, "stats.json"))
    assert stats["samples"]["dropped"]["caption_too_long"] == 1
    assert stats["shards"]["truncated_shard"] == 1


def test_retried_tasks_rewrite_the_same_bytes(corpus, tmp_path):
    out = str(tmp_path / "retry")
    groups = ShardGroup(0, 2).all_groups()
    for group in groups:
        run_count(corpus["input"], out, group, SETTINGS.limits)
    run_vocab(out, 2, SETTINGS.vocab, SETTINGS.resample, SETTINGS.samples_per_shard)
    for group in groups:
        run_write(corpus["input"], out, group)
    before = files_under(out)
    run_write(corpus["input"], out, groups[1])  # the pipeline retries one task
    assert files_under(out) == before
    stats = run_finalize(out, 2)
    published = files_under(out)
    assert run_finalize(out, 2) == stats  # a retry after success returns what is there
    assert files_under(out) == published


# -- rebuilds into the same prefix ---------------------------------------------------------

DATASET_FILES = {"manifest.json", "vocab.json", "stats.json", "metrics.json"}


def files_under(root: str) -> dict[str, bytes]:
    """Every file under a local directory (hidden ones too), by relative path."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(Path(root).rglob("*"))
        if path.is_file()
    }


def assert_only_the_dataset(out: str) -> None:
    """The prefix holds the manifest's shards and the dataset's files, nothing else."""
    manifest = json.loads(Path(out, "manifest.json").read_text())
    assert set(files_under(out)) == DATASET_FILES | set(manifest["shards"])


def test_a_rebuild_with_other_settings_leaves_nothing_stale(corpus, built, tmp_path):
    """A build into a prefix holding a finished build and an abandoned one (3 groups, stopped
    in the write phase), with fewer shards, another vocabulary and 2 groups, leaves exactly
    what a build into an empty prefix writes."""
    out, _ = built
    other = BuildSettings(
        limits=SETTINGS.limits,
        vocab=VocabSettings(min_count=8),
        resample=ResampleSettings(target_ratio=1.2, seed=1),
        samples_per_shard=200,
    )
    rebuilt = str(tmp_path / "rebuilt")
    shutil.copytree(out, rebuilt)
    assert len(json.loads(Path(rebuilt, "manifest.json").read_text())["shards"]) > 6
    abandoned = ShardGroup(0, 3).all_groups()
    for group in abandoned:
        run_count(corpus["input"], rebuilt, group, SETTINGS.limits)
    run_vocab(rebuilt, 3, SETTINGS.vocab, SETTINGS.resample, SAMPLES_PER_SHARD)
    run_write(corpus["input"], rebuilt, abandoned[0])
    build_in_process(corpus["input"], rebuilt, groups=2, settings=other)
    fresh = str(tmp_path / "fresh")
    build_in_process(corpus["input"], fresh, groups=2, settings=other)
    assert files_under(rebuilt) == files_under(fresh)
    assert_only_the_dataset(rebuilt)
    assert len(json.loads(Path(rebuilt, "manifest.json").read_text())["shards"]) < 6
    assert_only_the_dataset(out)  # the first build, too, kept only its dataset


def test_nothing_of_an_earlier_build_is_read_as_current(corpus, built, tmp_path):
    out = str(tmp_path / "out")
    shutil.copytree(built[0], out)
    groups = ShardGroup(0, 2).all_groups()
    old_manifest = storage.read_json(storage.join(out, "manifest.json"))

    # A rebuild with another vocabulary: counting leaves the published dataset alone ...
    for group in groups:
        run_count(corpus["input"], out, group, SETTINGS.limits)
    assert storage.read_json(storage.join(out, "manifest.json")) == old_manifest
    # ... until vocab.json changes: from then on the prefix reads as incomplete, never as the
    # old manifest over a new vocabulary and new shards.
    run_vocab(out, 2, VocabSettings(min_count=8), SETTINGS.resample, SAMPLES_PER_SHARD)
    assert not storage.exists(storage.join(out, "manifest.json"))
    with pytest.raises(ValueError, match="no dataset manifest"):
        read_manifest(out)  # what a training step reads
    run_write(corpus["input"], out, groups[0])
    with pytest.raises(RuntimeError, match=r"write phase has not finished for 1 of 2 groups"):
        run_finalize(out, 2)


def test_a_straggling_write_report_of_another_build_is_refused(corpus, tmp_path):
    out = str(tmp_path / "out")
    groups = ShardGroup(0, 2).all_groups()
    for group in groups:
        run_count(corpus["input"], out, group, SETTINGS.limits)
    run_vocab(out, 2, SETTINGS.vocab, SETTINGS.resample, SAMPLES_PER_SHARD)
    for group in groups:
        run_write(corpus["input"], out, group)
    layout = BuildLayout(out)
    old_report = storage.read_bytes(layout.write_report(groups[1]))

    run_vocab(out, 2, VocabSettings(min_count=8), SETTINGS.resample, SAMPLES_PER_SHARD)
    assert not storage.list_uris(layout.write_reports_prefix)  # a new plan withdrew them
    run_write(corpus["input"], out, groups[0])
    # A task of the first build that was still running finishes now and writes its report.
    storage.write_bytes(layout.write_report(groups[1]), old_report)
    with pytest.raises(RuntimeError, match="was written for build .* rerun the write phase"):
        run_finalize(out, 2)
    run_write(corpus["input"], out, groups[1])
    current_build = storage.read_json(layout.plan)["build"]
    run_finalize(out, 2)
    assert storage.read_json(layout.manifest)["build"] == current_build
    read_manifest(out)
    assert_only_the_dataset(out)


def test_finalize_stopped_before_its_cleanup_finishes_it_when_run_again(corpus, built, tmp_path):
    reference = files_under(built[0])
    # The state a finalize leaves when it dies right after writing the manifest: the dataset
    # published, the intermediate files all still there.
    again = str(tmp_path / "again")
    group = ShardGroup(0, 1)
    run_count(corpus["input"], again, group, SETTINGS.limits)
    run_vocab(again, 1, SETTINGS.vocab, SETTINGS.resample, SAMPLES_PER_SHARD)
    run_write(corpus["input"], again, group)
    for name, data in reference.items():
        Path(again, name).parent.mkdir(parents=True, exist_ok=True)
        Path(again, name).write_bytes(data)
    assert storage.list_uris(BuildLayout(again).work_prefix)
    run_finalize(again, 1)
    assert files_under(again) == reference
