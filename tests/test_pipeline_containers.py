"""The whole tiny MAWS DAG with every task in its own step image: kfp.local's DockerRunner on a
real Docker engine (tests/docker_engine.py), the images as images/build.py builds them, the data
in S3 (SeaweedFS on this machine's loopback, reached with host networking), and training through
the local launcher inside each training task's container. The report is checked as the
subprocess run's end-to-end test checks it (tests/test_pipeline_local.py)."""

import json

import pytest

from mawsflow import storage
from mawsflow.orchestration.components import IMAGE_OF
from mawsflow.orchestration.container_run import (
    ContainerRunError,
    _pinned_executor_images,
    run_in_containers,
)
from mawsflow.orchestration.dag import maws_pipeline
from mawsflow.orchestration.images import image_for, read_images, retag
from mawsflow.orchestration.parameters import parse_arguments
from test_pipeline_local import EVAL_NAME
from test_pipeline_local import demo_data as demo_data_in_s3  # noqa: F401 (a fixture)

COLUMNS = [
    EVAL_NAME,
    f"{EVAL_NAME} 1-shot",
    f"{EVAL_NAME} 5-shot",
    f"{EVAL_NAME} zero-shot",
    f"{EVAL_NAME} Linear",
]


@pytest.fixture
def engine_env(docker_engine, monkeypatch):
    """kfp.local and the run's checks talk to the test engine (DOCKER_HOST)."""
    for name, value in docker_engine.env().items():
        monkeypatch.setenv(name, value)
    return docker_engine


def _arguments(pipeline, demo_data: dict[str, str]) -> dict:
    params = [
        "preset=tiny",
        f"raw_corpus={demo_data['corpus']}",
        f"eval_dataset={demo_data['eval']}",
        f"dataset={demo_data['dataset']}",
        f"eval_name={EVAL_NAME}",
        "zeroshot_templates=clothing",
        "shard_groups=2",
        "vocab_min_count=3",
        "loader_workers=0",
        # Short lengths: two optimizer steps per training step, two low-shot runs per model.
        "mae_epochs=0.25",
        "wsp_epochs=0.25",
        "lit_epochs=0.25",
        "finetune_epochs=0.25",
        "lowshot_epoch_multiplier=0.5",
        "lowshot_shots=[1, 5]",
        "lowshot_seeds=[0]",
    ]
    # What `--local` fills in, on this machine's CPU: the launcher runs inside the containers.
    defaults = {"backend": "local", "nodes": 1, "gpus_per_node": 0}
    return parse_arguments(pipeline.component_spec, params, defaults, complete=True)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the first test to use the images builds them (minutes)
def test_whole_dag_runs_with_every_task_in_its_step_image(
    built_images, engine_env, request, tmp_path
):
    pipeline = maws_pipeline(baselines=False, retries=False)
    work = tmp_path / "work"
    demo_data = request.getfixturevalue("demo_data_in_s3")
    report = run_in_containers(pipeline, _arguments(pipeline, demo_data), work)

    result = json.loads((report.folder / "report.json").read_text())
    # The report's rows are the paper's; this run (no baselines) fills MAE→WSP and MAE.
    assert result["rows"] == ["MAE", "WSP", "MAE→WSP"]
    assert result["columns"] == COLUMNS
    for row in ("MAE", "MAE→WSP"):
        cells = result["table"][row]
        assert set(cells) == set(COLUMNS), row
        assert all(0.0 <= value <= 100.0 for value in cells.values()), cells
    assert set(result["plots"]) == {"Training loss", "Low-shot accuracy against K"}
    assert "| MAE→WSP |" in report.table
    html = (report.folder / "report.html").read_text()
    assert "<table>" in html and "data:image/png;base64," in html
    manifest = storage.read_json(f"{demo_data['dataset']}/manifest.json")
    assert manifest["format"] == "mawsflow.multilabel/1" and manifest["num_classes"] > 0

    # Every task ran in a container of its step's image, as the images' non-root user: the
    # files the tasks wrote belong to UID 10001, not to this process.
    (run,) = (work / "runs").iterdir()
    log = (run / "tasks.log").read_text()
    step_images = built_images.step_images()
    used = {ref for ref in step_images.values() if f"Found image '{ref}'" in log}
    expected_steps = {"launch", "build-dataset", "prepare-eval", "mae", "wsp", "lit", "report"}
    expected_steps |= {"finetune", "eval", "linear-probe", "lowshot", "zeroshot"}
    assert used == {step_images[step] for step in expected_steps}
    assert "Pulling image" not in log
    (pipeline_run,) = [p for p in run.iterdir() if p.is_dir()]
    outputs = list(pipeline_run.rglob("executor_output.json"))
    assert outputs and {path.stat().st_uid for path in outputs} == {10001}
    card = json.loads((pipeline_run / "mae" / "executor_output.json").read_text())["artifacts"][
        "model"
    ]["artifacts"][0]
    assert card["metadata"]["pretraining"] == "MAE"


def test_a_missing_step_image_is_named_before_anything_runs(engine_env, tmp_path, monkeypatch):
    """Without the images in the engine, the run stops at once and says which and how to
    build them, instead of kfp.local trying to pull them from their registry."""
    client = engine_env.client()
    try:
        present = {tag for image in client.images.list() for tag in image.tags}
    finally:
        client.close()
    pipeline = maws_pipeline(baselines=False, retries=False)
    monkeypatch.setattr(
        "mawsflow.orchestration.container_run.read_images",
        lambda: {step: f"mawsflow.test/absent-{step}:0" for step in read_images()},
    )
    assert not any(tag.startswith("mawsflow.test/absent-") for tag in present)
    with pytest.raises(ContainerRunError, match=r"lacks the step images .*absent-mae:0.*"):
        run_in_containers(pipeline, {"image_tag": ""}, tmp_path)
    assert not (tmp_path / "runs").exists()


def test_without_an_engine_the_run_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    pipeline = maws_pipeline(baselines=False, retries=False)
    with pytest.raises(ContainerRunError, match="no Docker engine answers at unix://"):
        run_in_containers(pipeline, {}, tmp_path)


def test_every_executor_image_resolves_to_its_steps_image_through_the_sub_pipelines():
    """Inside a sub-pipeline a task's image comes in through the sub-pipeline's inputs; the
    container run follows them out to step-images' output, as the backend's driver does."""
    pipeline = maws_pipeline(baselines=True, retries=False)
    images = read_images()
    pinned = _pinned_executor_images(pipeline, images, "v9")
    executors = pipeline.pipeline_spec.deployment_spec["executors"]
    assert set(pinned) == set(executors) - {"exec-step-images"}
    for name, image in pinned.items():
        step = IMAGE_OF[name.removeprefix("exec-").rstrip("-0123456789")]
        assert image == retag(image_for(images, step), "v9"), name
