"""The typed KFP components of the MAWS pipeline: one per step (and per build-dataset phase).

Each is a Lightweight Python Component bound to its step's image from `components/images.yaml`
(`install_kfp_package=False`: the images carry kfp, and a run must not reach PyPI). A body
imports mawsflow from that image and calls the step's own entry point through
`mawsflow.orchestration.task_runtime`, so the code a component runs is the code a user runs with
`mawsflow <step>`. Artifacts are typed: the pretraining and evaluation datasets are `Dataset`s,
trained weights `Model`s, every result `Metrics`, the report `Markdown` and `HTML`.

Artifact URIs follow `mawsflow.orchestration.artifact_uris`: outputs are written to the artifact's
URI in the object store, and big artifacts point at their descriptor file.

`python -m mawsflow.orchestration.specs --write` compiles each of these into
`components/<name>.yaml`.
"""

# kfp reads the components' annotations as objects, so no `from __future__ import annotations`.
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from mawsflow.orchestration.images import image_for, read_images

IMAGES = read_images()
# Which step's image each component runs in: its own step's; for a helper, the image of the
# step it serves.
IMAGE_OF = {
    "step-images": "launch",
    "build-dataset-plan": "build-dataset",
    "build-dataset-count": "build-dataset",
    "build-dataset-vocab": "build-dataset",
    "build-dataset-write": "build-dataset",
    "build-dataset-finalize": "build-dataset",
    "eval-fingerprint": "prepare-eval",
    "eval-dataset": "prepare-eval",
    "mae": "mae",
    "wsp": "wsp",
    "random-init": "wsp",
    "lit": "lit",
    "finetune": "finetune",
    "video-dataset": "prepare-eval",
    "finetune-video": "finetune-video",
    "evaluate-video": "eval-video",
    "detection-dataset": "prepare-eval",
    "finetune-detection": "finetune-detection",
    "evaluate-detection": "eval-detection",
    "evaluate": "eval",
    "seed-summary": "eval",
    "linear-probe": "linear-probe",
    "lowshot-plan": "lowshot",
    "lowshot": "lowshot",
    "lowshot-summary": "lowshot",
    "zeroshot": "zeroshot",
    "transfer-rows": "report",
    "pick-model": "report",
    "report": "report",
    "sweep-report": "report",
    "retrain-plan": "build-dataset",
    "retrain-inputs": "build-dataset",
    "promotion-gate": "report",
}


def _component(name: str):  # noqa: ANN202 (returns kfp's decorator)
    return dsl.component(base_image=image_for(IMAGES, IMAGE_OF[name]), install_kfp_package=False)


# --------------------------------------------------------------------------------------------
# Images


@_component("step-images")
def step_images(references: dict[str, str], image_tag: str) -> NamedTuple(
    "StepImages",
    [
        ("build_dataset", str),
        ("prepare_eval", str),
        ("mae", str),
        ("wsp", str),
        ("lit", str),
        ("finetune", str),
        ("finetune_video", str),
        ("finetune_detection", str),
        ("eval", str),
        ("eval_video", str),
        ("eval_detection", str),
        ("linear_probe", str),
        ("lowshot", str),
        ("zeroshot", str),
        ("report", str),
    ],
):
    """Every step's image: components/images.yaml's reference, or `image_tag` of it.

    Needs nothing from its environment. KFP backend >= 2.16.0.
    """
    from mawsflow.orchestration.images import retag

    steps = ["build-dataset", "prepare-eval", "mae", "wsp", "lit", "finetune", "finetune-video"]
    steps += ["finetune-detection", "eval", "eval-video", "eval-detection"]
    steps += ["linear-probe", "lowshot", "zeroshot", "report"]
    return tuple(retag(references[step], image_tag) for step in steps)


# --------------------------------------------------------------------------------------------
# Dataset build: plan → count (one task per shard group) → vocab → write (per group) → finalize


@_component("build-dataset-plan")
def build_dataset_plan(
    raw_corpus: str,
    shard_groups: int,
    min_count: int,
    max_classes: int,
    resample_ratio: float,
    samples_per_shard: int,
    seed: int,
) -> list[dict[str, str]]:
    """The shard groups to fan out over (at most one per input shard), each with the build's
    fingerprint: the digest of the corpus listing and of the settings the vocab phase takes.
    Never cached: the fingerprint is what makes every build task's cache
    key follow the data and the settings (mawsflow.orchestration.data_fingerprint says why one key
    for the whole build, not one per group).

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION) as env; artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    from mawsflow.orchestration.data_fingerprint import corpus_groups

    settings = {"min_count": min_count, "max_classes": max_classes, "seed": seed}
    settings |= {"resample_ratio": resample_ratio, "samples_per_shard": samples_per_shard}
    return corpus_groups(raw_corpus, shard_groups, settings)


@_component("build-dataset-count")
def build_dataset_count(raw_corpus: str, dataset: str, group: str, fingerprint: str) -> str:
    """Phase 1 on one shard group: the usable images and their hashtags. `fingerprint` (the
    build's: corpus listing and settings) keys the cache and goes on in the output.

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION) as env; artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    import json

    from mawsflow.dataset.count_phase import run_count
    from mawsflow.dataset.layout import ShardGroup
    from mawsflow.dataset.sample_tags import ReadLimits
    from mawsflow.log import setup_logging

    setup_logging()
    summary = run_count(raw_corpus, dataset, ShardGroup.parse(group), ReadLimits())
    counted = {k: summary[k] for k in ("samples_read", "records")}
    return json.dumps({**counted, "group": group, "fingerprint": fingerprint}, sort_keys=True)


@_component("build-dataset-vocab")
def build_dataset_vocab(
    dataset: str,
    counted: list[str],
    min_count: int,
    max_classes: int,
    resample_ratio: float,
    samples_per_shard: int,
    seed: int,
) -> str:
    """Phase 2, once: deduplicate, build the synset vocabulary and the resampling plan.
    Returns the plan's digest, which every write task takes, so that a new plan re-runs the
    writes of unchanged groups too (their labels depend on the vocabulary).

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION) as env; artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    import hashlib
    import json

    from mawsflow.dataset.resample import DEFAULT_POWER, ResampleSettings
    from mawsflow.dataset.vocab import VocabSettings
    from mawsflow.dataset.vocab_phase import run_vocab
    from mawsflow.log import setup_logging

    setup_logging()
    plan = run_vocab(
        dataset,
        len(counted),
        VocabSettings(min_count, max_classes or None),
        ResampleSettings(resample_ratio, DEFAULT_POWER, seed),
        samples_per_shard,
    )
    text = json.dumps({"counted": counted, "plan": plan}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@_component("build-dataset-write")
def build_dataset_write(
    raw_corpus: str, dataset: str, group: str, fingerprint: str, vocab_plan: str
) -> str:
    """Phase 3 on one shard group: label, resample and write the group's shards.
    `fingerprint` (the build's) and `vocab_plan` key the cache, and go on in the output, for
    finalize's key.

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION) as env; artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    import json

    from mawsflow.dataset.layout import ShardGroup
    from mawsflow.dataset.write_phase import run_write
    from mawsflow.log import setup_logging

    setup_logging()
    written = run_write(raw_corpus, dataset, ShardGroup.parse(group))
    keys = {"group": group, "fingerprint": fingerprint, "vocab_plan": vocab_plan}
    return json.dumps({**written, **keys}, sort_keys=True, default=str)


@_component("build-dataset-finalize")
def build_dataset_finalize(
    dataset: str,
    written: list[str],
    pretraining: Output[Dataset],
    stats: Output[Metrics],
) -> None:
    """Phase 4, once: pack the groups' tails, write stats.json and manifest.json. The
    `pretraining` Dataset is a reference (in the pipeline root) to the manifest under
    `dataset`, with the fingerprint of the corpus it was built from.

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION) as env; artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    import json

    from mawsflow import storage
    from mawsflow.dataset.finalize_phase import run_finalize
    from mawsflow.log import setup_logging
    from mawsflow.orchestration.artifact_uris import DATASET_MANIFEST, storage_uri, write_reference
    from mawsflow.orchestration.data_fingerprint import build_fingerprint
    from mawsflow.orchestration.task_runtime import log_metrics

    setup_logging()
    corpus = build_fingerprint([json.loads(w) for w in written])
    summary = run_finalize(dataset, len(written))
    samples = summary["samples"]
    log_metrics(
        stats,
        {
            "images_read": samples["read"],
            "images_kept": samples["kept"],
            "samples_written": samples["written"],
            "classes": summary["vocabulary"]["classes"],
            **{f"dropped_{reason}": n for reason, n in samples["dropped"].items()},
        },
    )
    manifest = storage.join(dataset, DATASET_MANIFEST)
    write_reference(storage_uri(pretraining.uri), manifest, corpus_fingerprint=corpus)
    pretraining.metadata.update({"location": manifest, "corpus_fingerprint": corpus})


@_component("eval-fingerprint")
def eval_fingerprint(uri: str) -> str:
    """The fingerprint of the evaluation dataset's listing. Never cached: it is what makes
    every evaluation's cache key follow the evaluation data.

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION) as env; artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    from mawsflow.orchestration.data_fingerprint import dataset_fingerprint

    return dataset_fingerprint(uri)


@_component("eval-dataset")
def eval_dataset(uri: str, name: str, fingerprint: str, dataset: Output[Dataset]) -> None:
    """Check an evaluation dataset before anything trains for it: its classes, a train split,
    and a test split (`test`, else `val`) with the same classes must read. `dataset` is a
    reference (in the pipeline root) to it, with the fingerprint of its listing.

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION) as env; artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    from mawsflow import storage
    from mawsflow.data.eval_shards import open_split
    from mawsflow.orchestration.artifact_uris import storage_uri, write_reference

    if not name.strip():
        raise ValueError("eval_name is empty: it names the report's columns, e.g. ImageNet-1k")
    train = open_split(uri, "train")
    has_test = storage.exists(storage.join(uri, "test", "manifest.json"))
    test = open_split(uri, "test" if has_test else "val")
    if train.classes != test.classes:
        raise ValueError(f"{uri}: the train and test splits have different classes")
    location = uri.rstrip("/")
    write_reference(storage_uri(dataset.uri), location, name=name, fingerprint=fingerprint)
    dataset.metadata.update({"location": location, "name": name, "fingerprint": fingerprint})


@_component("video-dataset")
def video_dataset(uri: str, name: str, fingerprint: str, dataset: Output[Dataset]) -> None:
    """Check a video dataset (`mawsflow prepare-eval --layout kinetics|ssv2`) before anything
    trains for it: its classes, a train split, and a test split (`test`, else `val`) with the
    same classes must read as video shards. `dataset` is a reference (in the pipeline root) to
    it, with the fingerprint of its listing.

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION) as env; artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    from mawsflow import storage
    from mawsflow.data.video_shards import open_video_split
    from mawsflow.orchestration.artifact_uris import storage_uri, write_reference

    if not name.strip():
        raise ValueError(
            "the video dataset's name is empty: it names the report's column, e.g. K400"
        )
    train = open_video_split(uri, "train")
    has_test = storage.exists(storage.join(uri, "test", "manifest.json"))
    test = open_video_split(uri, "test" if has_test else "val")
    if train.classes != test.classes:
        raise ValueError(f"{uri}: the train and test splits have different classes")
    location = uri.rstrip("/")
    write_reference(storage_uri(dataset.uri), location, name=name, fingerprint=fingerprint)
    dataset.metadata.update({"location": location, "name": name, "fingerprint": fingerprint})


@_component("detection-dataset")
def detection_dataset(
    uri: str, name: str, variant: str, fingerprint: str, dataset: Output[Dataset]
) -> None:
    """Check a detection dataset (`mawsflow prepare-eval --layout coco|lvis`) before anything
    trains for it: a train and a val split with the same categories must read, annotated in
    `variant`'s format (`lvis` or `coco`: the evaluator follows the format, so an LVIS column
    scored with COCO's rules is refused here). `dataset` is a reference (in the pipeline root)
    to it, with the fingerprint of its listing.

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION) as env; artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    from mawsflow.data.detection_shards import open_detection_split
    from mawsflow.orchestration.artifact_uris import storage_uri, write_reference

    if not name.strip():
        raise ValueError(
            "the detection dataset's name is empty: it names the report's column, e.g. LVIS"
        )
    train = open_detection_split(uri, "train")
    val = open_detection_split(uri, "val")
    for split in (train, val):
        if split.annotation_format != variant:
            raise ValueError(
                f"{uri}: annotated in {split.annotation_format!r} format, but the {variant!r} "
                f"set needs a prepare-eval --layout {variant} output"
            )
    if list(train.categories) != list(val.categories):
        raise ValueError(f"{uri}: the train and val splits have different categories")
    location = uri.rstrip("/")
    write_reference(storage_uri(dataset.uri), location, name=name, fingerprint=fingerprint)
    dataset.metadata.update(
        {"location": location, "name": name, "fingerprint": fingerprint, "format": variant}
    )


# --------------------------------------------------------------------------------------------
# Training steps (MAE, WSP, LiT, finetuning): run by the launcher on the `backend` parameter.
# Each takes the launch parameters (backend … tolerations) and hands them, with its recipe
# settings, to `task_runtime.train`, which writes its Model to the artifact's URI (the job's
# pods reach it through the object store) and publishes it.


@_component("mae")
def mae(
    dataset: Input[Dataset],
    preset: str,
    arch: str,
    epochs: float,
    samples_per_epoch: int,
    mae_checkpoint: str,
    backend: str,
    nodes: int,
    gpus_per_node: int,
    job_image: str,
    shm_size: str,
    node_selector: dict[str, str],
    tolerations: list[dict[str, str]],
    model: Output[Model],
    metrics: Output[Metrics],
) -> None:
    """MAE pre-pretraining (Table 10); with `mae_checkpoint`, that encoder instead (a previous
    mae output, or a released checkpoint in timm's layout) and no training.

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, MAWSFLOW_S3_*) as env, and the launcher's
    RBAC for its job (charts/mawsflow's Role, or kubeflow-edit); artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    from mawsflow.orchestration import task_runtime as rt
    from mawsflow.orchestration.artifact_uris import dataset_location

    if mae_checkpoint:
        from mawsflow.log import setup_logging
        from mawsflow.orchestration.artifact_uris import storage_uri
        from mawsflow.orchestration.checkpoint_import import import_mae_checkpoint
        from mawsflow.recipes import load_recipe

        setup_logging()
        output = storage_uri(model.uri)
        arch_setting = rt.overrides({"model.arch": arch})
        recipe = load_recipe("mae", preset=preset or None, overrides=arch_setting)
        import_mae_checkpoint(
            mae_checkpoint, output, arch=recipe.model.arch, img_size=recipe.model.img_size
        )
        rt.publish_model(model, metrics, output)
        return
    settings = {
        "model.arch": arch,
        "schedule.epochs": epochs,
        "schedule.samples_per_epoch": samples_per_epoch,
        "data.train": dataset_location(dataset.uri),
    }
    launch = rt.launch_settings(
        backend=backend, image=job_image, nodes=nodes, gpus_per_node=gpus_per_node,
        shm_size=shm_size, node_selector=node_selector, tolerations=tolerations,
    )  # fmt: skip
    rt.train("mae", model, metrics, preset=preset, settings=settings, launch=launch)


@_component("wsp")
def wsp(
    dataset: Input[Dataset],
    preset: str,
    arch: str,
    epochs: float,
    samples_per_epoch: int,
    backend: str,
    nodes: int,
    gpus_per_node: int,
    job_image: str,
    shm_size: str,
    node_selector: dict[str, str],
    tolerations: list[dict[str, str]],
    model: Output[Model],
    metrics: Output[Metrics],
    mae_model: Input[Model] = None,
    init_model: str = "",
    continue_samples: int = 0,
) -> None:
    """Weakly supervised pretraining (Table 11): MAE→WSP when given `mae_model` (the trunk
    starts from the MAE encoder), else the WSP-from-scratch baseline. With `init_model` (a WSP
    output: scheduled retraining's warm start from production) the trunk continues from that
    model instead, for one pass of `continue_samples` samples (0: the schedule as set).

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, MAWSFLOW_S3_*) as env, and the launcher's
    RBAC for its job (charts/mawsflow's Role, or kubeflow-edit); artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    from mawsflow.orchestration import task_runtime as rt
    from mawsflow.orchestration.artifact_uris import dataset_location, model_folder

    settings = {
        "model.arch": arch,
        "schedule.epochs": epochs,
        "schedule.samples_per_epoch": samples_per_epoch,
        "data.train": dataset_location(dataset.uri),
        "init": "mae" if mae_model else "scratch",
        "init_checkpoint": model_folder(mae_model.uri) if mae_model else "",
    }
    if init_model:
        settings |= {"init": "wsp", "init_checkpoint": init_model}
        if continue_samples > 0:
            settings |= {"schedule.epochs": 1, "schedule.samples_per_epoch": continue_samples}
    launch = rt.launch_settings(
        backend=backend, image=job_image, nodes=nodes, gpus_per_node=gpus_per_node,
        shm_size=shm_size, node_selector=node_selector, tolerations=tolerations,
    )  # fmt: skip
    rt.train("wsp", model, metrics, preset=preset, settings=settings, launch=launch)


@_component("random-init")
def random_init(
    preset: str, arch: str, seed: int, model: Output[Model], metrics: Output[Metrics]
) -> None:
    """The control row's model: the WSP recipe's trunk with a random initialisation and no
    pretraining (`mawsflow random-init`), put through the same transfer evaluations.

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION) as env; artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    from mawsflow.orchestration import task_runtime as rt
    from mawsflow.orchestration.artifact_uris import storage_uri

    output = storage_uri(model.uri)
    argv = ["--output", output, "--seed", str(seed)]
    argv += (["--preset", preset] if preset else []) + (["--arch", arch] if arch else [])
    rt.run_step("random-init", argv)
    rt.publish_model(model, metrics, output)


@_component("lit")
def lit(
    dataset: Input[Dataset],
    image_model: Input[Model],
    preset: str,
    arch: str,
    epochs: float,
    samples_per_epoch: int,
    text_model: str,
    backend: str,
    nodes: int,
    gpus_per_node: int,
    job_image: str,
    shm_size: str,
    node_selector: dict[str, str],
    tolerations: list[dict[str, str]],
    model: Output[Model],
    metrics: Output[Metrics],
) -> None:
    """LiT (Table 12): a pretrained text tower aligned to the frozen `image_model`.

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, MAWSFLOW_S3_*) as env, and the launcher's
    RBAC for its job (charts/mawsflow's Role, or kubeflow-edit); artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    from mawsflow.orchestration import task_runtime as rt
    from mawsflow.orchestration.artifact_uris import dataset_location, model_folder

    settings = {
        "model.arch": arch,
        "schedule.epochs": epochs,
        "schedule.samples_per_epoch": samples_per_epoch,
        "text.model": text_model,
        "data.train": dataset_location(dataset.uri),
        "image_checkpoint": model_folder(image_model.uri),
    }
    launch = rt.launch_settings(
        backend=backend, image=job_image, nodes=nodes, gpus_per_node=gpus_per_node,
        shm_size=shm_size, node_selector=node_selector, tolerations=tolerations,
    )  # fmt: skip
    rt.train("lit", model, metrics, preset=preset, settings=settings, launch=launch)


@_component("finetune")
def finetune(
    pretrained: Input[Model],
    eval_dataset: Input[Dataset],
    preset: str,
    arch: str,
    epochs: float,
    backend: str,
    nodes: int,
    gpus_per_node: int,
    job_image: str,
    shm_size: str,
    node_selector: dict[str, str],
    tolerations: list[dict[str, str]],
    model: Output[Model],
    metrics: Output[Metrics],
    seed: int = 0,
) -> None:
    """Finetuning with a linear head on the evaluation dataset's train split (Table 14 for an
    MAE trunk, Table 15 for a WSP or MAE→WSP one, chosen from the trunk's lineage), with
    `seed` seeding the head, the augmentations and the data order.

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, MAWSFLOW_S3_*) as env, and the launcher's
    RBAC for its job (charts/mawsflow's Role, or kubeflow-edit); artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    from mawsflow.orchestration import task_runtime as rt
    from mawsflow.orchestration.artifact_uris import dataset_location, model_folder

    settings = {
        "model.arch": arch,
        "schedule.epochs": epochs,
        "init_checkpoint": model_folder(pretrained.uri),
        "data.train": dataset_location(eval_dataset.uri),
        "runtime.seed": seed,
    }
    launch = rt.launch_settings(
        backend=backend, image=job_image, nodes=nodes, gpus_per_node=gpus_per_node,
        shm_size=shm_size, node_selector=node_selector, tolerations=tolerations,
    )  # fmt: skip
    # The recipe follows the trunk's lineage: Table 14 for MAE, Table 15 for (MAE→)WSP.
    rt.train(
        "finetune", model, metrics, preset=preset, settings=settings, launch=launch, recipe="auto"
    )


@_component("finetune-video")
def finetune_video(
    pretrained: Input[Model],
    video_dataset: Input[Dataset],
    variant: str,
    preset: str,
    arch: str,
    epochs: float,
    backend: str,
    nodes: int,
    gpus_per_node: int,
    job_image: str,
    shm_size: str,
    node_selector: dict[str, str],
    tolerations: list[dict[str, str]],
    model: Output[Model],
    metrics: Output[Metrics],
) -> None:
    """Video finetuning (Table 16) of the pretrained trunk inflated into a video ViT, on the
    video dataset's train split; `variant` is Table 16's column, `k400` or `ssv2` (clip
    length, regularisation, schedule).

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, MAWSFLOW_S3_*) as env, and the launcher's
    RBAC for its job (charts/mawsflow's Role, or kubeflow-edit); artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    from mawsflow.orchestration import task_runtime as rt
    from mawsflow.orchestration.artifact_uris import dataset_location, model_folder

    if variant not in ("k400", "ssv2"):
        raise ValueError(f"video variant {variant!r}: Table 16's columns are k400 and ssv2")
    settings = {
        "model.arch": arch,
        "schedule.epochs": epochs,
        "init_checkpoint": model_folder(pretrained.uri),
        "data.train": dataset_location(video_dataset.uri),
    }
    launch = rt.launch_settings(
        backend=backend, image=job_image, nodes=nodes, gpus_per_node=gpus_per_node,
        shm_size=shm_size, node_selector=node_selector, tolerations=tolerations,
    )  # fmt: skip
    rt.train(
        "finetune-video", model, metrics,
        preset=preset, settings=settings, launch=launch, variant=variant,
    )  # fmt: skip


@_component("finetune-detection")
def finetune_detection(
    pretrained: Input[Model],
    detection_dataset: Input[Dataset],
    variant: str,
    preset: str,
    arch: str,
    epochs: float,
    backend: str,
    nodes: int,
    gpus_per_node: int,
    job_image: str,
    shm_size: str,
    node_selector: dict[str, str],
    tolerations: list[dict[str, str]],
    model: Output[Model],
    metrics: Output[Metrics],
) -> None:
    """Detection and instance-segmentation finetuning (Tables 18 and 19): ViTDet with a Cascade
    Mask R-CNN on the pretrained trunk, on the detection dataset's train split; `variant` is
    the set, `lvis` or `coco`, whose recipe (detection-lvis, detection-coco) it trains with.

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, MAWSFLOW_S3_*) as env, and the launcher's
    RBAC for its job (charts/mawsflow's Role, or kubeflow-edit); artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    from mawsflow.orchestration import task_runtime as rt
    from mawsflow.orchestration.artifact_uris import dataset_location, model_folder

    if variant not in ("lvis", "coco"):
        raise ValueError(f"detection set {variant!r}: Table 22's columns are lvis and coco")
    settings = {
        "model.arch": arch,
        "schedule.epochs": epochs,
        "init_checkpoint": model_folder(pretrained.uri),
        "data.train": dataset_location(detection_dataset.uri),
    }
    launch = rt.launch_settings(
        backend=backend, image=job_image, nodes=nodes, gpus_per_node=gpus_per_node,
        shm_size=shm_size, node_selector=node_selector, tolerations=tolerations,
    )  # fmt: skip
    rt.train(
        "finetune-detection", model, metrics,
        preset=preset, settings=settings, launch=launch, recipe=f"detection-{variant}",
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Evaluations: one process in the component's pod. Each result is a Metrics artifact whose
# folder holds the step's metrics.json (the report's input) and whose metadata holds its numbers.


@_component("evaluate")
def evaluate(
    finetuned: Input[Model],
    eval_dataset: Input[Dataset],
    eval_name: str,
    loader_workers: int,
    result: Output[Metrics],
) -> None:
    """The finetuned model's top-1/top-5 on the evaluation dataset's test split.

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION) as env; artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    from mawsflow.orchestration import task_runtime as rt
    from mawsflow.orchestration.artifact_uris import dataset_location, model_folder

    rt.evaluate(
        "eval",
        result,
        [
            "--model", model_folder(finetuned.uri),
            "--test-set", f"{eval_name}={dataset_location(eval_dataset.uri)}",
            "--num-workers", str(loader_workers),
        ],
    )  # fmt: skip


@_component("evaluate-video")
def evaluate_video(
    finetuned: Input[Model],
    video_dataset: Input[Dataset],
    eval_name: str,
    loader_workers: int,
    result: Output[Metrics],
) -> None:
    """The finetuned video model's top-1/top-5 on the video dataset's test split with the
    multi-view protocol (the model's recipe's temporal clips × spatial crops, logits averaged);
    unusable videos are counted (`<name>_skipped_<reason>`).

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION) as env; artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    from mawsflow.orchestration import task_runtime as rt
    from mawsflow.orchestration.artifact_uris import dataset_location, model_folder

    rt.evaluate(
        "eval-video",
        result,
        [
            "--model", model_folder(finetuned.uri),
            "--test-set", f"{eval_name}={dataset_location(video_dataset.uri)}",
            "--num-workers", str(loader_workers),
        ],
    )  # fmt: skip


@_component("evaluate-detection")
def evaluate_detection(
    finetuned: Input[Model],
    detection_dataset: Input[Dataset],
    eval_name: str,
    loader_workers: int,
    result: Output[Metrics],
) -> None:
    """The finetuned detector on the detection dataset's val split: box and mask AP (LVISEval
    with LVIS's federated rules for an LVIS set, COCOeval for COCO) and TIDE's error breakdown
    at IoU 0.5 and 0.75 (Table 21); the report's column is the box AP (Table 22). Invalid
    predictions are skipped and counted.

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION) as env; artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    from mawsflow.orchestration import task_runtime as rt
    from mawsflow.orchestration.artifact_uris import dataset_location, model_folder

    rt.evaluate(
        "eval-detection",
        result,
        [
            "--model", model_folder(finetuned.uri),
            "--test-set", f"{eval_name}={dataset_location(detection_dataset.uri)}",
            "--num-workers", str(loader_workers),
        ],
    )  # fmt: skip


@_component("linear-probe")
def linear_probe(
    pretrained: Input[Model],
    eval_dataset: Input[Dataset],
    eval_name: str,
    loader_workers: int,
    result: Output[Metrics],
    seeds: list[int] = [0],  # noqa: B006 (kfp reads defaults from the signature)
) -> None:
    """Top-1 of a linear classifier on the frozen trunk's features: one probe per seed on the
    same features, and their mean (the spread kept for the report).

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION) as env; artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    from mawsflow.orchestration import task_runtime as rt
    from mawsflow.orchestration.artifact_uris import dataset_location, model_folder

    rt.evaluate(
        "linear-probe",
        result,
        [
            "--model", model_folder(pretrained.uri),
            "--dataset", dataset_location(eval_dataset.uri),
            "--name", eval_name,
            "--num-workers", str(loader_workers),
            "--seed", *[str(int(seed)) for seed in seeds or [0]],
        ],
    )  # fmt: skip


@_component("seed-summary")
def seed_summary(runs: Input[list[Metrics]], result: Output[Metrics]) -> None:
    """One result from an evaluation run once per seed: each table cell the mean over seeds,
    every seed's value kept for the report's mean ± std.

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION) as env; artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    from mawsflow.evaluation.results import read_result, write_result
    from mawsflow.orchestration import task_runtime as rt
    from mawsflow.orchestration.artifact_uris import storage_uri
    from mawsflow.orchestration.seed_fan_in import merge_seed_runs

    output = storage_uri(result.uri)
    write_result(output, merge_seed_runs([read_result(storage_uri(run.uri)) for run in runs]))
    rt.publish_result(result, output)


@_component("zeroshot")
def zeroshot(
    lit_model: Input[Model],
    eval_dataset: Input[Dataset],
    eval_name: str,
    templates: str,
    loader_workers: int,
    result: Output[Metrics],
) -> None:
    """Zero-shot top-1/top-5 of the LiT model, class names × prompt templates, ensembled.

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION) as env; artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    from mawsflow.orchestration import task_runtime as rt
    from mawsflow.orchestration.artifact_uris import dataset_location, model_folder

    rt.evaluate(
        "zeroshot",
        result,
        [
            "--model", model_folder(lit_model.uri),
            "--dataset", dataset_location(eval_dataset.uri),
            "--templates", templates,
            "--name", eval_name,
            "--num-workers", str(loader_workers),
        ],
    )  # fmt: skip


@_component("lowshot-plan")
def lowshot_plan(
    preset: str, shots: list[int], seeds: list[int], grouping: str
) -> list[dict[str, str]]:
    """The low-shot fan-out: every (K, seed), the recipe's (K ∈ {1, 5, 10} × 5 seeds) unless
    `shots` or `seeds` name others, grouped into tasks. `grouping` "run": a task per (K, seed),
    which spreads the runs over a cluster; "model": one task runs them all, paying the process
    start-up, imports and feature loading once (what a laptop wants). Each item holds its
    task's K and seeds as JSON lists.

    Needs nothing from its environment. KFP backend >= 2.16.0.
    """
    import json

    from mawsflow.recipes import load_recipe

    def integers(name: str, values: list, minimum: int) -> list[int]:
        # Pipeline parameters travel as JSON, where 5 may arrive as 5.0.
        if not all(float(v).is_integer() and v >= minimum for v in values):
            raise ValueError(f"{name}: expected integers ≥ {minimum}, got {values}")
        if len(set(values)) != len(values):
            raise ValueError(f"{name}: {values} repeats a value, which would repeat a run")
        return [int(v) for v in values]

    recipe = load_recipe("lowshot-vpt", preset=preset or None)
    shots = integers("lowshot_shots", shots or recipe.shots, 1)
    seeds = integers("lowshot_seeds", seeds or recipe.seeds, 0)
    if grouping == "model":
        return [{"shots": json.dumps(shots), "seeds": json.dumps(seeds)}]
    if grouping == "run":
        return [{"shots": json.dumps([k]), "seeds": json.dumps([s])} for k in shots for s in seeds]
    raise ValueError(f"lowshot_grouping: {grouping!r} is neither 'run' nor 'model'")


@_component("lowshot")
def lowshot(
    pretrained: Input[Model],
    eval_dataset: Input[Dataset],
    preset: str,
    arch: str,
    shots: str,
    seeds: str,
    epoch_multiplier: float,
    method: str,
    eval_name: str,
    loader_workers: int,
    result: Output[Metrics],
) -> None:
    """Low-shot runs, one per K in `shots` × seed in `seeds` (JSON lists, from lowshot-plan):
    K examples per class of the train split drawn with the seed, adapted with VPT (Table 17)
    or logistic regression, scored on the test split.

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION) as env; artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    from mawsflow.log import setup_logging
    from mawsflow.orchestration import task_runtime as rt
    from mawsflow.orchestration.artifact_uris import dataset_location, model_folder, storage_uri

    setup_logging()
    output = storage_uri(result.uri)
    settings = {
        "model.arch": arch,
        "init_checkpoint": model_folder(pretrained.uri),
        "data.train": dataset_location(eval_dataset.uri),
        "output": output,
        "shots": shots,
        "seeds": seeds,
        "schedule.epoch_multiplier": epoch_multiplier,
    }
    argv = rt.recipe_argv(preset, rt.overrides(settings))
    argv += ["--method", method, "--name", eval_name, "--num-workers", str(loader_workers)]
    rt.run_step("lowshot", argv)
    rt.publish_result(result, output)


@_component("lowshot-summary")
def lowshot_summary(runs: Input[list[Metrics]], result: Output[Metrics]) -> None:
    """Mean and spread over seeds of every K, from the fan-out's tasks.

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION) as env; artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    from mawsflow.evaluation.results import read_result, write_result
    from mawsflow.orchestration import task_runtime as rt
    from mawsflow.orchestration.artifact_uris import storage_uri
    from mawsflow.orchestration.seed_fan_in import merge_lowshot_runs

    output = storage_uri(result.uri)
    write_result(output, merge_lowshot_runs([read_result(storage_uri(run.uri)) for run in runs]))
    rt.publish_result(result, output)


# --------------------------------------------------------------------------------------------
# Report


@_component("transfer-rows")
def transfer_rows(baselines: bool, control: bool, mae: bool = True) -> list[str]:
    """The report's rows, one per model every transfer evaluation runs on: MAE (unless `mae`
    is off: a retraining run without baselines evaluates only the model it may promote) and
    MAE→WSP, WSP from scratch when the run trains that baseline, and the control (the same
    trunk with a random initialisation and no pretraining) when it has one.

    Needs nothing from its environment. KFP backend >= 2.16.0.
    """
    rows = (["mae"] if mae else []) + (["wsp"] if baselines else []) + ["maws"]
    return rows + (["control"] if control else [])


@_component("pick-model")
def pick_model(
    row: str,
    mae_model: Input[Model],
    maws_model: Input[Model],
    model: Output[Model],
    wsp_model: Input[Model] = None,
    control_model: Input[Model] = None,
) -> None:
    """The pretrained model of one report row, inside the transfer fan-out. A container task
    rather than an importer: the backend resolves an importer's URI only from pipeline
    parameters and cannot collect its outputs (see mawsflow.orchestration.conformance). `model` is
    a reference to the row's model, so lineage runs from the training task through here.

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION) as env; artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    from mawsflow.orchestration.artifact_uris import resolve, storage_uri, write_reference

    models = {"mae": mae_model, "maws": maws_model, "wsp": wsp_model, "control": control_model}
    chosen = models.get(row)
    if chosen is None:
        given = sorted(k for k, v in models.items() if v is not None)
        raise ValueError(f"row {row!r}: no such pretrained model in this run (have {given})")
    write_reference(storage_uri(model.uri), resolve(storage_uri(chosen.uri)), row=row)
    model.metadata.update({**dict(chosen.metadata), "row": row})


@_component("report")
def report(
    finetune: Input[list[Metrics]],
    lowshot: Input[list[Metrics]],
    zeroshot: Input[list[Metrics]],
    linear: Input[list[Metrics]],
    pretrained: Input[list[Model]],
    markdown: Output[Markdown],
    html: Output[HTML],
    files: Output[Artifact],
    k400: Input[list[Metrics]] = None,
    ssv2: Input[list[Metrics]] = None,
    lvis: Input[list[Metrics]] = None,
    coco: Input[list[Metrics]] = None,
    gate: Input[Artifact] = None,
) -> None:
    """Table 22's shape: a row per pretrained model (MAE, WSP, MAE→WSP, from each result's
    lineage), a column per evaluation (finetuning, low-shot K, zero-shot, linear probe, then
    the video branch's K400 and SSv2 and the detection branch's LVIS and COCO box AP where the
    pipeline has them, with a TIDE table of the detection errors), and plots of the pretraining
    losses and of low-shot accuracy against K. `markdown` and `html` are what the Kubeflow UI
    shows; `files` holds report.md, report.html and report.json.

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION) as env; artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    from mawsflow import storage
    from mawsflow.log import setup_logging
    from mawsflow.orchestration.artifact_uris import model_folder, storage_uri
    from mawsflow.steps.report import ReportConfig, run

    setup_logging()
    # The video and detection results are optional inputs: absent (None) from a pipeline
    # without the branch.
    branches = (k400, ssv2, lvis, coco)
    kinds = (finetune, lowshot, zeroshot, linear, *(branch or [] for branch in branches))
    results = [storage_uri(a.uri) for kind in kinds for a in kind]
    training = [model_folder(m.uri) for m in pretrained]
    folder = storage_uri(files.uri)
    # A scheduled retraining run's promotion gate decision (gate.json), shown with the table.
    decision = storage.join(storage_uri(gate.uri), "gate.json") if gate else ""
    run(ReportConfig(tuple(results), tuple(training), folder, gate=decision))
    storage.copy(storage.join(folder, "report.md"), storage_uri(markdown.uri))
    storage.copy(storage.join(folder, "report.html"), storage_uri(html.uri))


@_component("sweep-report")
def sweep_report(
    cells: Input[list[Artifact]],
    markdown: Output[Markdown],
    html: Output[HTML],
    files: Output[Artifact],
) -> None:
    """One report over a sweep's grid cells (pipelines/maws.py --sweep): every result of every
    cell's report, with rows keyed by method × architecture × pretraining data (× epochs) and a
    plot of accuracy against pretraining FLOPs. `cells` are the cells' report `files`.

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION) as env; artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    from mawsflow import storage
    from mawsflow.log import setup_logging
    from mawsflow.orchestration.artifact_uris import storage_uri
    from mawsflow.steps.report import ReportConfig, run

    setup_logging()
    reports = [storage.join(storage_uri(a.uri), "report.json") for a in cells]
    folder = storage_uri(files.uri)
    run(ReportConfig(tuple(reports), (), folder))
    storage.copy(storage.join(folder, "report.md"), storage_uri(markdown.uri))
    storage.copy(storage.join(folder, "report.html"), storage_uri(html.uri))


# --------------------------------------------------------------------------------------------
# Scheduled retraining: the plan at a run's start, the promotion gate at its end.


@_component("retrain-plan")
def retrain_plan(
    raw_corpus: str,
    registry: str,
    as_of: str,
    mae_warm_start: str,
    wsp_warm_start: str,
    force: bool,
    plan: Output[Artifact],
) -> str:
    """A scheduled run's start (`mawsflow retrain-plan`): the corpus listed once into a
    snapshot, whether to train ("train"), or "unchanged" when the registry's newest model was
    trained on the same data (the run then trains nothing), and the warm starts from the
    registry. `plan` holds the snapshot and plan.json; `retrain-inputs` reads them out.
    Never cached: it is what tells one run's data from the next.

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION) as env; artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    from mawsflow.log import setup_logging
    from mawsflow.orchestration.artifact_uris import storage_uri
    from mawsflow.steps.retrain_plan import RetrainPlanConfig, make_plan

    setup_logging()
    config = RetrainPlanConfig(
        raw_corpus, registry, storage_uri(plan.uri), as_of, mae_warm_start, wsp_warm_start, force
    )
    made = make_plan(config)
    plan.metadata.update({"action": made.action, "reason": made.reason, "shards": made.shards})
    return made.action


@_component("retrain-inputs")
def retrain_inputs(plan: Input[Artifact], dataset: str) -> NamedTuple(
    "RetrainInputs",
    [("corpus", str), ("dataset", str), ("mae_checkpoint", str), ("wsp_init", str)],
):
    """What a retraining run's tasks take from its plan: the corpus snapshot the dataset build
    reads (`corpus`), the dataset's folder, one per snapshot under `dataset` (a new run never
    overwrites the data an earlier model was trained on), the registry's MAE encoder to reuse
    (`mae_checkpoint`) and the production model WSP continues from (`wsp_init`), "" where none.

    (A task of its own, not outputs of retrain-plan: the run's condition reads retrain-plan's
    single output, because kfp.local resolves a condition on a task's `Output` but not on a
    named output, kfp/local/orchestrator/enhanced_dag_orchestrator.py,
    `ConditionEvaluator._resolve_pipeline_channel`.)

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION) as env; artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    from collections import namedtuple

    from mawsflow import storage
    from mawsflow.orchestration.artifact_uris import storage_uri
    from mawsflow.registry.plan import PLAN_FILE, read_plan

    made = read_plan(storage.join(storage_uri(plan.uri), PLAN_FILE))
    folder = storage.join(dataset, f"snapshot-{made.fingerprint[:16]}")
    outputs = namedtuple("RetrainInputs", ["corpus", "dataset", "mae_checkpoint", "wsp_init"])
    return outputs(made.corpus, folder, made.mae_checkpoint, made.wsp_init)


@_component("promotion-gate")
def promotion_gate(
    registry: str,
    plan: Input[Artifact],
    candidate: Input[Model],
    mae_model: Input[Model],
    eval_data: Input[Dataset],
    eval_name: str,
    finetune: Input[list[Metrics]],
    lowshot: Input[list[Metrics]],
    zeroshot: Input[list[Metrics]],
    linear: Input[list[Metrics]],
    headline: list[str],
    max_drop: float,
    min_gain: float,
    references: dict[str, str],
    image_tag: str,
    pushgateway: str,
    decision: Output[Artifact],
    metrics: Output[Metrics],
) -> None:
    """The end of a scheduled run (`mawsflow promotion-gate`): register the new model (MAE→WSP)
    with its metrics, data snapshot, code version, images and parents, and promote it only if
    no `headline` metric is worse than production's by more than `max_drop` points and one is
    better by `min_gain`. A rejection is an outcome, not a failure: `metrics` says
    `promoted` 0, and with `pushgateway` the chart's alert pages on it. `decision` holds
    gate.json, which the report shows.

    Needs the S3 Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the object-store
    ConfigMap (AWS_ENDPOINT_URL, AWS_DEFAULT_REGION) as env; artifact URIs follow
    components/README.md. KFP backend >= 2.16.0.
    """
    from mawsflow import storage
    from mawsflow.log import setup_logging
    from mawsflow.orchestration.artifact_uris import model_folder, storage_uri
    from mawsflow.orchestration.images import retag
    from mawsflow.registry.plan import PLAN_FILE
    from mawsflow.steps.promotion_gate import PromotionGateConfig, run

    setup_logging()
    results = [storage_uri(a.uri) for kind in (finetune, lowshot, zeroshot, linear) for a in kind]
    reference = storage.read_json(storage_uri(eval_data.uri))
    gate = run(
        PromotionGateConfig(
            registry=registry,
            plan=storage.join(storage_uri(plan.uri), PLAN_FILE),
            model=model_folder(candidate.uri),
            results=tuple(results),
            eval_name=eval_name,
            eval_fingerprint=str(reference.get("fingerprint", "")),
            output=storage_uri(decision.uri),
            mae_model=model_folder(mae_model.uri),
            headline=tuple(headline),
            max_drop=max_drop,
            min_gain=min_gain,
            images={step: retag(ref, image_tag) for step, ref in references.items()},
            pushgateway=pushgateway,
        )
    )
    decision.metadata.update({k: gate[k] for k in ("candidate", "promoted", "production_after")})
    metrics.log_metric("promoted", 1.0 if gate["promoted"] else 0.0)
    for row in gate["comparison"]:
        if row["production"] is not None:
            metrics.log_metric(f"delta {row['metric']}", row["candidate"] - row["production"])
