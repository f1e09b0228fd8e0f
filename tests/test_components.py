"""The KFP components: their compiled specs in components/ are current and load back typed and
bound to their step's image; what their bodies run (mawsflow.orchestration.task_runtime and
friends) maps artifact URIs, builds launcher specs the launcher accepts, merges the low-shot
fan-out and imports released MAE checkpoints."""

import json

import pytest
import torch
import yaml
from kfp import components as kfp_components
from safetensors.torch import load_file

from mawsflow import storage
from mawsflow.errors import ConfigError
from mawsflow.evaluation.results import EvalResult, write_result
from mawsflow.launch.naming import JobIdentity
from mawsflow.launch.pytorchjob import build_pytorchjob
from mawsflow.launch.spec import load_launch_spec, validate
from mawsflow.models.vit import create_trunk
from mawsflow.orchestration import components, images, specs, task_runtime
from mawsflow.orchestration.artifact_uris import (
    REFERENCE_FORMAT,
    ArtifactURIError,
    dataset_location,
    model_folder,
    resolve,
    root,
    storage_uri,
    write_reference,
)
from mawsflow.orchestration.checkpoint_import import import_mae_checkpoint
from mawsflow.orchestration.seed_fan_in import merge_lowshot_runs
from test_storage import counting_requests

# --------------------------------------------------------------------------------------------
# Compiled specs


@pytest.fixture(scope="module")
def compiled():
    return specs.compiled_specs()


def test_committed_component_specs_are_current(compiled):
    stale = specs.stale_specs()
    assert not stale, (
        f"stale component specs {stale}: run python -m mawsflow.orchestration.specs --write"
    )
    assert set(compiled) == {f"{c.name}.yaml" for c in specs.ALL_COMPONENTS}


def test_stale_check_notices_an_edited_a_missing_and_a_leftover_spec(tmp_path, compiled):
    for name, text in compiled.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "images.yaml").write_text("mae: x\n")  # not a spec: left alone
    assert specs.stale_specs(tmp_path) == []
    (tmp_path / "mae.yaml").write_text(compiled["mae.yaml"].replace("Table 10", "Table 99"))
    (tmp_path / "report.yaml").unlink()
    (tmp_path / "old-step.yaml").write_text("{}")
    assert specs.stale_specs(tmp_path) == ["mae.yaml", "old-step.yaml", "report.yaml"]
    specs.write_specs(tmp_path)
    assert specs.stale_specs(tmp_path) == []
    assert (tmp_path / "images.yaml").read_text() == "mae: x\n"


def test_specs_load_back_typed_and_bound_to_their_step_image():
    references = images.read_images()
    for component in specs.ALL_COMPONENTS:
        path = specs.COMPONENTS_DIR / f"{component.name}.yaml"
        loaded = kfp_components.load_component_from_file(str(path))
        assert loaded.name == component.name
        container = loaded.component_spec.implementation.container
        assert container.image == references[components.IMAGE_OF[component.name]], component.name
        # The images carry kfp: nothing is installed from PyPI when a task starts.
        assert "pip install" not in " ".join(container.command), component.name
    mae = kfp_components.load_component_from_file(str(specs.COMPONENTS_DIR / "mae.yaml"))
    assert mae.component_spec.inputs["dataset"].type == "system.Dataset@0.0.1"
    assert mae.component_spec.outputs["model"].type == "system.Model@0.0.1"
    assert mae.component_spec.outputs["metrics"].type == "system.Metrics@0.0.1"
    assert mae.component_spec.inputs["gpus_per_node"].type == "Integer"
    assert mae.component_spec.inputs["epochs"].type == "Float"
    report = kfp_components.load_component_from_file(str(specs.COMPONENTS_DIR / "report.yaml"))
    outputs = {k: v.type for k, v in report.component_spec.outputs.items()}
    assert outputs == {
        "markdown": "system.Markdown@0.0.1",
        "html": "system.HTML@0.0.1",
        "files": "system.Artifact@0.0.1",
    }
    # The report takes every row's results as lists (the fan-in of the per-model fan-out).
    finetune = report.component_spec.inputs["finetune"]
    assert finetune.type == "system.Metrics@0.0.1" and finetune.is_artifact_list
    assert report.component_spec.inputs["pretrained"].type == "system.Model@0.0.1"


def test_every_step_of_the_issue_has_a_component():
    steps = {c.name for c in specs.ALL_COMPONENTS}
    assert {
        "build-dataset-plan",
        "build-dataset-count",
        "build-dataset-vocab",
        "build-dataset-write",
        "build-dataset-finalize",
        "mae",
        "wsp",
        "lit",
        "finetune",
        "linear-probe",
        "lowshot",
        "zeroshot",
        "evaluate",
        "report",
        # Issue 17: the video datasets' check, video finetuning and its multi-view evaluation.
        "video-dataset",
        "finetune-video",
        "evaluate-video",
        # Issue 18: the detection datasets' check, ViTDet finetuning, box/mask AP and TIDE.
        "detection-dataset",
        "finetune-detection",
        "evaluate-detection",
    } <= steps


# --------------------------------------------------------------------------------------------
# Images


def test_retag_keeps_the_repository_and_drops_a_digest():
    pinned = "registry.example:5000/team/mawsflow-mae:0.1.0@sha256:" + "a" * 64
    assert images.repository(pinned) == "registry.example:5000/team/mawsflow-mae"
    assert images.retag(pinned, "sha-0123456789ab") == (
        "registry.example:5000/team/mawsflow-mae:sha-0123456789ab"
    )
    assert images.retag(pinned, "") == pinned
    assert images.retag("localhost:5000/mae", "v2") == "localhost:5000/mae:v2"
    with pytest.raises(images.ImageError, match="not a valid tag"):
        images.retag(pinned, "-bad/tag")


def test_step_images_resolves_every_step_image():
    references = images.read_images()
    names = list(components.step_images.component_spec.outputs)

    def resolve(tag: str) -> dict[str, str]:
        return dict(zip(names, components.step_images.python_func(references, tag), strict=True))

    resolved = resolve("")
    # Every step's image but the launcher's own (step-images runs in it) and the demo corpus'
    # (no pipeline task).
    assert {name.replace("_", "-") for name in resolved} == set(references) - {
        "launch",
        "demo-corpus",
    }
    for name, reference in resolved.items():
        assert reference == references[name.replace("_", "-")], name
    assert resolved["finetune_detection"].endswith("/mawsflow-finetune-detection:0.1.0")
    assert resolve("sha-1")["lowshot"] == images.repository(references["lowshot"]) + ":sha-1"


def test_missing_image_reference_is_named(tmp_path):
    path = tmp_path / "images.yaml"
    path.write_text("mae: ghcr.io/x/mae:1\n")
    with pytest.raises(images.ImageError, match="no image for step 'wsp'"):
        images.image_for(images.read_images(path), "wsp")
    with pytest.raises(images.ImageError, match="cannot read"):
        images.read_images(tmp_path / "absent.yaml")


# --------------------------------------------------------------------------------------------
# Artifact URIs


def test_storage_uri_maps_kfp_artifact_uris():
    endpoint = {"AWS_ENDPOINT_URL": "http://minio-service.kubeflow:9000"}
    uri = "minio://mlpipeline/v2/artifacts/maws/run/mae/1/model"
    assert storage_uri(uri, endpoint) == "s3://mlpipeline/v2/artifacts/maws/run/mae/1/model"
    assert storage_uri("s3://bucket/key", {}) == "s3://bucket/key"
    assert storage_uri("/tmp/local/model", {}) == "/tmp/local/model"
    with pytest.raises(ArtifactURIError, match="AWS_ENDPOINT_URL is not set"):
        storage_uri(uri, {})
    with pytest.raises(ArtifactURIError, match="gs:// artifacts are not supported"):
        storage_uri("gs://bucket/model", endpoint)


def test_root_strips_the_descriptor_file():
    assert root("s3://b/run/mae/model/model.json", "model.json") == "s3://b/run/mae/model"
    assert root("s3://b/eval/", "classes.json") == "s3://b/eval"


class _Artifact:
    """What a component body sees of a KFP artifact: its URI and metadata."""

    def __init__(self, uri: str, metadata: dict | None = None) -> None:
        self.uri = uri
        self.metadata = dict(metadata or {})


def test_a_reference_stands_for_its_target(storage_root):
    model = storage.join(storage_root, "run", "mae", "model")
    storage.write_json(storage.join(model, "model.json"), {"arch": "vit_tiny"})
    picked = storage.join(storage_root, "run", "pick-model", "model")
    write_reference(picked, storage.join(model, "model.json"), row="mae")
    assert resolve(picked) == storage.join(model, "model.json")
    assert model_folder(picked) == model  # through the reference
    assert model_folder(storage.join(model, "model.json")) == model  # a model.json directly
    # Not references: a descriptor file, a missing object, an object that is data.
    assert resolve(storage.join(model, "model.json")) == storage.join(model, "model.json")
    assert resolve(storage.join(storage_root, "absent")) == storage.join(storage_root, "absent")
    blob = storage.join(storage_root, "blob")
    storage.write_bytes(blob, b"\x89PNG not json")
    assert resolve(blob) == blob
    broken = storage.join(storage_root, "broken")
    storage.write_json(broken, {"format": "mawsflow.reference/1"})
    with pytest.raises(ArtifactURIError, match="reference without a target"):
        resolve(broken)


def test_resolve_reads_an_artifact_with_one_request(s3_bucket):
    """A reference, a missing object and a large object: one GET each (no HEADs first), and an
    object over the reference size limit is data even when it starts like a reference."""
    target = f"{s3_bucket}/data/manifest.json"
    picked = f"{s3_bucket}/run/picked"
    write_reference(picked, target)
    large = f"{s3_bucket}/run/large"
    reference = {"format": REFERENCE_FORMAT, "target": target}
    storage.write_bytes(large, json.dumps(reference).encode() + b" " * 70_000)
    with counting_requests("before-send.s3") as sent:
        assert resolve(picked) == target
        assert resolve(f"{s3_bucket}/run/absent") == f"{s3_bucket}/run/absent"
        assert resolve(large) == large
    assert sent == ["before-send.s3.GetObject"] * 3


def test_pick_model_publishes_the_rows_model_and_names_a_missing_one(tmp_path):
    models = {}
    for row in ("mae", "maws"):
        folder = tmp_path / row / "model"
        folder.mkdir(parents=True)
        (folder / "model.json").write_text("{}")
        models[f"{row}_model"] = _Artifact(str(folder / "model.json"), {"arch": "vit_tiny"})
    out = _Artifact(str(tmp_path / "pick" / "model"))
    components.pick_model.python_func(row="maws", model=out, wsp_model=None, **models)
    assert model_folder(out.uri) == str(tmp_path / "maws" / "model")
    assert out.metadata == {"arch": "vit_tiny", "row": "maws"}
    with pytest.raises(ValueError, match=r"row 'wsp': no such pretrained model .*'mae', 'maws'"):
        components.pick_model.python_func(row="wsp", model=out, wsp_model=None, **models)


def test_eval_dataset_outputs_a_reference_with_its_fingerprint(tmp_path):
    from fashion_mnist_corpus import require_fashion_mnist, write_eval_dataset

    require_fashion_mnist()
    eval_uri = write_eval_dataset(tmp_path / "eval", limit=40, samples_per_shard=20)
    out = _Artifact(str(tmp_path / "task" / "dataset"))
    components.eval_dataset.python_func(
        uri=str(eval_uri), name="Fashion-MNIST", fingerprint="f" * 64, dataset=out
    )
    assert dataset_location(out.uri) == str(eval_uri).rstrip("/")
    assert storage.read_json(out.uri)["fingerprint"] == "f" * 64
    assert out.metadata["location"] == str(eval_uri).rstrip("/")
    with pytest.raises(ValueError, match="eval_name is empty"):
        components.eval_dataset.python_func(
            uri=str(eval_uri), name=" ", fingerprint="", dataset=out
        )


# --------------------------------------------------------------------------------------------
# Launching training steps


def test_overrides_skip_parameters_left_at_the_recipe_value():
    given = task_runtime.overrides(
        {"model.arch": "", "schedule.epochs": 0.0, "schedule.samples_per_epoch": 64, "x": "y"}
    )
    assert given == ["schedule.samples_per_epoch=64", "x=y"]
    assert task_runtime.recipe_argv("tiny", given) == [
        "--preset", "tiny", "--set", "schedule.samples_per_epoch=64", "--set", "x=y",
    ]  # fmt: skip
    assert task_runtime.recipe_argv("", []) == []


CLUSTER_ENV = {
    "AWS_ENDPOINT_URL": "http://minio-service.kubeflow:9000",
    "AWS_DEFAULT_REGION": "us-east-1",
    "MAWSFLOW_S3_SECRET_NAME": "mlpipeline-minio-artifact",
    "MAWSFLOW_S3_ACCESS_KEY_ID_KEY": "accesskey",
    "MAWSFLOW_S3_SECRET_ACCESS_KEY_KEY": "secretkey",
    "AWS_SECRET_ACCESS_KEY": "do-not-leak-me",
}


def _launch(backend: str, **extra) -> task_runtime.TrainingLaunch:
    return task_runtime.TrainingLaunch(
        backend=backend,
        image="ghcr.io/mawsflow/mawsflow-wsp:0.1.0",
        execution="minio://mlpipeline/v2/artifacts/maws/run-1/wsp/7/model",
        task="wsp",
        **extra,
    )


def test_pytorchjob_spec_runs_the_step_image_and_reads_s3_through_the_secret(tmp_path):
    launch = _launch(
        "pytorchjob",
        nodes=4,
        gpus_per_node=8,
        shm_size="64Gi",
        node_selector={"nvidia.com/gpu.product": "H100"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    )
    data = launch.spec("wsp", ["--set", "init=mae"], CLUSTER_ENV)
    path = tmp_path / "launch.yaml"
    path.write_text(yaml.safe_dump(data))
    spec = load_launch_spec(path)
    validate(spec, "pytorchjob")
    assert spec.command == ["mawsflow", "wsp", "--set", "init=mae"]
    assert (spec.nodes, spec.procs_per_node, spec.resources.gpus_per_node) == (4, 8, 8)
    assert spec.image == "ghcr.io/mawsflow/mawsflow-wsp:0.1.0"
    assert spec.s3.secret_name == "mlpipeline-minio-artifact"
    assert spec.pod.shm_size == "64Gi" and spec.pod.tolerations[0].key == "nvidia.com/gpu"
    manifest = build_pytorchjob(spec, JobIdentity(launch.execution, launch.task), "team")
    text = json.dumps(manifest)
    assert "do-not-leak-me" not in text
    assert '"secretKeyRef": {"name": "mlpipeline-minio-artifact", "key": "secretkey"}' in text
    # The job's name follows the task execution, so a retry finds the same job.
    again = JobIdentity(_launch("pytorchjob").execution, "wsp")
    assert manifest["metadata"]["name"] == again.job_name


TRAINING_COMPONENTS = ("mae", "wsp", "lit", "finetune", "finetune_video", "finetune_detection")


def test_launch_settings_are_what_every_training_component_takes_and_a_launch_needs():
    given = {
        "backend": "pytorchjob", "nodes": 2, "gpus_per_node": 8, "shm_size": "64Gi",
        "node_selector": {"pool": "gpu"}, "tolerations": [{"key": "gpu"}],
    }  # fmt: skip
    # The pipeline's side: the parameters by name, no image (each task gets its step's own).
    settings = task_runtime.launch_settings(**given)
    assert settings == given
    # Every training component takes each as a parameter (and its job's image as job_image).
    for name in TRAINING_COMPONENTS:
        inputs = getattr(components, name).component_spec.inputs
        assert {*settings, "job_image"} <= set(inputs), name
    # The component's side: with the image, exactly what a TrainingLaunch needs but its job name.
    launch = task_runtime.TrainingLaunch(
        execution="s3://a/model",
        task="wsp",
        **task_runtime.launch_settings(**given, image="ghcr.io/mawsflow/mawsflow-wsp:0.1.0"),
    )
    assert (launch.nodes, launch.gpus_per_node, launch.shm_size) == (2, 8, "64Gi")
    assert launch.image == "ghcr.io/mawsflow/mawsflow-wsp:0.1.0"
    with pytest.raises(TypeError):  # every launch parameter must be passed
        task_runtime.launch_settings(backend="local")


def test_local_spec_runs_this_interpreter_on_one_machine(tmp_path):
    data = _launch("local").spec("mae", ["--preset", "tiny"], {})
    path = tmp_path / "launch.yaml"
    path.write_text(yaml.safe_dump(data))
    spec = load_launch_spec(path)
    validate(spec, "local")
    assert spec.command[1:4] == ["-m", "mawsflow.cli", "mae"]
    assert spec.image is None and spec.s3 is None and spec.procs_per_node == 1


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend 'slurm'"):
        _launch("slurm")


def test_a_failing_step_fails_the_task():
    with pytest.raises(task_runtime.TaskFailed, match="mawsflow launch exited with status 2"):
        task_runtime.run_step("launch", ["--backend", "local"])


def test_numeric_metrics_keep_finite_numbers_only():
    values = {"loss": 0.5, "steps": 8, "nan": float("nan"), "ok": True, "name": "x"}
    assert task_runtime.numeric_metrics(values) == {"loss": 0.5, "steps": 8.0}


# --------------------------------------------------------------------------------------------
# Low-shot fan-in


def _run(shots: int, top1: float, **changes) -> EvalResult:
    fields = {
        "step": "lowshot",
        "evaluation": "F-MNIST low-shot (VPT)",
        "pretraining": "MAE→WSP",
        "metrics": {f"{shots}shot_top1_mean": top1, f"{shots}shot_top1_std": 0.0},
        "table": {f"F-MNIST {shots}-shot": top1},
        "model": "s3://b/wsp",
        "dataset": "s3://b/eval",
        "lowshot": {str(shots): {"mean": top1, "std": 0.0, "runs": [top1]}},
    }
    fields.update(changes)
    return EvalResult(**fields)


def test_lowshot_runs_merge_into_mean_and_spread_per_k(tmp_path):
    merged = merge_lowshot_runs([_run(1, 20.0), _run(5, 40.0), _run(1, 30.0), _run(5, 50.0)])
    assert merged.table == {"F-MNIST 1-shot": 25.0, "F-MNIST 5-shot": 45.0}
    assert merged.lowshot["1"]["runs"] == [20.0, 30.0]
    assert merged.lowshot["5"]["std"] == pytest.approx(7.0710678)
    assert merged.metrics["5shot_top1_mean"] == 45.0
    assert merged.pretraining == "MAE→WSP" and merged.evaluation == "F-MNIST low-shot (VPT)"
    write_result(str(tmp_path), merged)  # the report reads it as any evaluation result


def test_lowshot_runs_of_different_models_do_not_merge():
    with pytest.raises(ValueError, match="different evaluations"):
        merge_lowshot_runs([_run(1, 20.0), _run(1, 30.0, pretraining="WSP")])
    with pytest.raises(ValueError, match="no runs to merge"):
        merge_lowshot_runs([])


# --------------------------------------------------------------------------------------------
# MAE from a given checkpoint


def test_released_mae_checkpoint_imports_as_an_mae_output(tmp_path):
    trunk = create_trunk("vit_tiny_p4", img_size=32)
    release = {**trunk.state_dict(), "decoder_embed.weight": torch.zeros(2, 2)}
    torch.save({"model": release}, tmp_path / "mae_release.pth")
    card = import_mae_checkpoint(
        str(tmp_path / "mae_release.pth"), str(tmp_path / "out"), arch="vit_tiny_p4", img_size=32
    )
    assert card["step"] == "mae" and card["arch"] == "vit_tiny_p4"
    weights = load_file(tmp_path / "out" / "model.safetensors")
    assert weights.keys() == trunk.state_dict().keys()
    assert torch.equal(weights["pos_embed"], trunk.state_dict()["pos_embed"])
    # A previous import (any mae output) imports again, its card checked.
    again = import_mae_checkpoint(
        str(tmp_path / "out"), str(tmp_path / "again"), arch="vit_tiny_p4", img_size=32
    )
    assert again["source"] == str(tmp_path / "out")
    with pytest.raises(ConfigError, match="holds a vit_tiny_p4 encoder"):
        import_mae_checkpoint(
            str(tmp_path / "out"), str(tmp_path / "x"), arch="vit_small_p4", img_size=32
        )
    with pytest.raises(ValueError, match="neither an mae step output"):
        import_mae_checkpoint(
            str(tmp_path / "absent"), str(tmp_path / "y"), arch="vit_tiny_p4", img_size=32
        )


def test_seed_runs_merge_into_means_with_every_seeds_value():
    from mawsflow.orchestration.seed_fan_in import merge_seed_runs

    def seed(top1: float, model: str) -> EvalResult:
        return EvalResult(
            step="eval",
            evaluation="Fashion-MNIST",
            pretraining="MAE→WSP",
            metrics={"top1": top1, "top5": 90.0},
            table={"Fashion-MNIST": top1},
            model=model,
            dataset="d",
        )

    merged = merge_seed_runs([seed(60.0, "m0"), seed(64.0, "m1"), seed(62.0, "m2")])
    assert merged.table == {"Fashion-MNIST": 62.0}
    assert merged.runs == {"Fashion-MNIST": [60.0, 64.0, 62.0]}
    assert merged.metrics["top1"] == 62.0 and merged.metrics["top1_std"] == 2.0
    assert merged.metrics["top5_std"] == 0.0
    other = seed(50.0, "m3")
    other.pretraining = "WSP"
    with pytest.raises(ValueError, match="different evaluations"):
        merge_seed_runs([seed(60.0, "m0"), other])
    with pytest.raises(ValueError, match="no runs to merge"):
        merge_seed_runs([])


def test_lowshot_tasks_of_several_k_and_seeds_merge_per_k():
    from mawsflow.evaluation.lowshot import summarize

    def task(runs: dict[int, list[float]]) -> EvalResult:
        summaries = summarize(runs)
        return EvalResult(
            step="lowshot",
            evaluation="F low-shot (VPT)",
            pretraining="MAE",
            metrics={},
            table={f"F {s.shots}-shot": s.mean for s in summaries},
            model="m",
            dataset="d",
            lowshot={str(s.shots): s.as_dict() for s in summaries},
        )

    merged = merge_lowshot_runs([task({1: [10.0, 20.0], 5: [50.0]}), task({5: [60.0]})])
    assert merged.table == {"F 1-shot": 15.0, "F 5-shot": 55.0}
    assert merged.runs == {"F 1-shot": [10.0, 20.0], "F 5-shot": [50.0, 60.0]}
