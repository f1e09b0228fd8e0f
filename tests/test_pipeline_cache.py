"""Cache keys follow the data: changing one input shard, or a build setting, invalidates every
task of the dataset build; an unchanged corpus and settings keep every key, so a rerun is
served from the cache. (One key for the whole build, not one per shard group: a finished build
removes the count phase's intermediate files, so a count served from the cache for one group
would leave the vocabulary phase without them; mawsflow.orchestration.data_fingerprint.)

The Kubeflow Pipelines backend keys a task's cache on its input parameter values, its input
artifacts' ids, its command and its image (backend/src/v2/cacheutils/cache.go,
`GenerateCacheKey`): `backend_cache_key` below hashes the same things. The parameters are
what the real components compute (their Python bodies run here, on local files and on
SeaweedFS); the wiring that carries them from task to task is what the compiled pipeline
holds (tests/test_pipeline_dag.py) and what the conformance rule `cache-follows-data` demands.
"""

import hashlib
import json

import pytest
from kfp.dsl import Dataset, Metrics

from demo_inputs import require_demo_sources
from mawsflow import storage
from mawsflow.data.fashion_mnist import DEBIAN_FASHION_MNIST, load_fashion_mnist
from mawsflow.dataset.demo_corpus import DemoCorpusSettings, write_corpus
from mawsflow.errors import DataFormatError
from mawsflow.orchestration import components
from mawsflow.orchestration.artifact_uris import resolve
from mawsflow.orchestration.data_fingerprint import corpus_groups, dataset_fingerprint
from test_storage import counting_requests


def backend_cache_key(component, parameters: dict, artifact_ids: dict | None = None) -> str:
    """What GenerateCacheKey hashes: parameter values by name, artifact ids by input, and the
    container (the component's command/args, which hold its code, and its image)."""
    container = component.component_spec.implementation.container
    key = {
        "parameters": parameters,
        "artifacts": artifact_ids or {},
        "command": [*container.command, *(container.args or [])],
        "image": container.image,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


@pytest.fixture(scope="module")
def fashion_mnist():
    require_demo_sources()
    images, labels = load_fashion_mnist(DEBIAN_FASHION_MNIST, "test")
    return images[:400], labels[:400]


def _write(root: str, images, labels) -> None:
    settings = DemoCorpusSettings(
        num_images=len(images), samples_per_shard=50, repost_rate=0.0, defect_rate=0.0
    )
    write_corpus(images, labels, root, settings)


def _count_phase(raw: str, dataset: str, plan: list[dict]) -> tuple[list[str], list[str]]:
    """Each count task's cache key and, where it ran, its output (the vocab task's input)."""
    keys, outputs = [], []
    for item in plan:
        parameters = {"raw_corpus": raw, "dataset": dataset, **item}
        keys.append(backend_cache_key(components.build_dataset_count, parameters))
        outputs.append(components.build_dataset_count.python_func(**parameters))
    return keys, outputs


SETTINGS = {
    "min_count": 1,
    "max_classes": 0,
    "resample_ratio": 0.0,
    "samples_per_shard": 50,
    "seed": 0,
}


def _plan(raw: str, **changes) -> list[dict]:
    settings = {**SETTINGS, **changes}
    return components.build_dataset_plan.python_func(raw_corpus=raw, shard_groups=2, **settings)


def _vocab_key(dataset: str, counted: list[str]) -> str:
    parameters = {"dataset": dataset, "counted": counted, **SETTINGS}
    return backend_cache_key(components.build_dataset_vocab, parameters)


def test_changing_one_input_shard_invalidates_the_build_cache(fashion_mnist, storage_root):
    images, labels = fashion_mnist
    raw = storage.join(storage_root, "raw")
    dataset = storage.join(storage_root, "dataset")
    _write(raw, images[:200], labels[:200])  # 4 shards of 50, in 2 groups

    plan = _plan(raw)
    assert [item["group"] for item in plan] == ["0/2", "1/2"]
    count_keys, counted = _count_phase(raw, dataset, plan)
    vocab_key = _vocab_key(dataset, counted)

    # The same corpus listed again: every key is the same, so every task is served cached.
    again = _plan(raw)
    assert again == plan
    assert _count_phase(raw, dataset, again)[0] == count_keys

    # Another vocabulary threshold: every count runs again (its intermediate files are gone
    # after a finished build, and the vocabulary phase needs them all).
    other_settings = _plan(raw, min_count=3)
    assert _count_phase(raw, dataset, other_settings)[0] != count_keys

    # Replace the last shard (group 1/2) with other images under the same name.
    shards = storage.list_uris(raw.rstrip("/") + "/", suffix=".tar")
    other = storage.join(storage_root, "other")
    _write(other, images[200:400], labels[200:400])
    replacement = storage.list_uris(other.rstrip("/") + "/", suffix=".tar")[-1]
    storage.copy(replacement, shards[-1])

    changed = _plan(raw)
    assert changed[1]["fingerprint"] != plan[1]["fingerprint"]
    new_keys, new_counted = _count_phase(raw, dataset, changed)
    assert all(new != old for new, old in zip(new_keys, count_keys, strict=True))
    assert _vocab_key(dataset, new_counted) != vocab_key  # and so does the vocabulary


def test_the_evaluation_data_fingerprint_follows_every_object(storage_root):
    uri = storage.join(storage_root, "eval")
    storage.write_json(storage.join(uri, "classes.json"), ["a", "b"])
    storage.write_bytes(storage.join(uri, "test", "shard-000000.tar"), b"x" * 100)
    first = dataset_fingerprint(uri)
    assert dataset_fingerprint(uri) == first
    storage.write_bytes(storage.join(uri, "test", "shard-000000.tar"), b"y" * 101)
    assert dataset_fingerprint(uri) != first
    with pytest.raises(ValueError, match="no objects under this prefix"):
        dataset_fingerprint(storage.join(storage_root, "missing"))


def test_an_empty_corpus_is_named(storage_root):
    with pytest.raises(ValueError, match=r"no \.tar shards under this input prefix"):
        corpus_groups(storage.join(storage_root, "nothing"), 2)


def test_the_plan_lists_the_corpus_once(s3_bucket):
    """One paginated LIST gives both the shards and their versions."""
    raw = f"{s3_bucket}/raw"
    for i in range(3):
        storage.write_bytes(f"{raw}/shard-{i:06d}.tar", b"x" * (i + 1))
    storage.write_bytes(f"{raw}/notes.txt", b"not a shard")
    with counting_requests("before-send.s3") as sent:
        plan = corpus_groups(raw, 2)
    assert sent == ["before-send.s3.ListObjectsV2"]
    assert [item["group"] for item in plan] == ["0/2", "1/2"]
    assert len({item["fingerprint"] for item in plan}) == 1


def test_the_built_dataset_names_the_build_fingerprint_and_mixed_builds_are_refused(
    fashion_mnist, tmp_path
):
    """finalize's reference carries the fingerprint every build task was keyed on (the plan's);
    write outputs of two builds are refused before anything is finalized."""
    images, labels = fashion_mnist
    raw, dataset = str(tmp_path / "raw"), str(tmp_path / "dataset")
    _write(raw, images[:200], labels[:200])
    settings = {**SETTINGS, "resample_ratio": 1.0}  # 1: no resampling
    plan = _plan(raw, **settings)
    _, counted = _count_phase(raw, dataset, plan)
    vocab_plan = components.build_dataset_vocab.python_func(
        dataset=dataset, counted=counted, **settings
    )
    written = [
        components.build_dataset_write.python_func(
            raw_corpus=raw, dataset=dataset, vocab_plan=vocab_plan, **item
        )
        for item in plan
    ]
    manifest = storage.join(dataset, "manifest.json")

    def finalize(outputs: list[str]) -> Dataset:
        pretraining = Dataset(uri=str(tmp_path / "pretraining"))
        components.build_dataset_finalize.python_func(
            dataset=dataset,
            written=outputs,
            pretraining=pretraining,
            stats=Metrics(uri=str(tmp_path / "stats")),
        )
        return pretraining

    other_build = json.dumps({**json.loads(written[1]), "fingerprint": "0" * 64})
    with pytest.raises(DataFormatError, match="every group of one build carries the same one"):
        finalize([written[0], other_build])
    assert not storage.exists(manifest)

    pretraining = finalize(written)
    reference = storage.read_json(pretraining.uri)
    assert reference["corpus_fingerprint"] == plan[0]["fingerprint"]
    assert pretraining.metadata["corpus_fingerprint"] == plan[0]["fingerprint"]
    assert resolve(pretraining.uri) == manifest
