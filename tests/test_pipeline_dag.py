"""The compiled MAWS pipeline: `pipelines/maws.py --compile` writes a YAML that kfp loads back,
and the DAG in it has the tasks, sub-pipelines, dependencies, artifact types, ParallelFor
fan-outs, resources, retries, caching and Kubernetes settings (S3 secret, /dev/shm, node
placement) of the picture in pipelines/README.md."""

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kfp import components as kfp_components

from mawsflow.errors import ConfigError
from mawsflow.orchestration.command import main
from mawsflow.orchestration.components import IMAGE_OF
from mawsflow.orchestration.dag import (
    OBJECT_STORE_KEYS,
    check_detection_sets,
    check_video_sets,
    maws_pipeline,
)
from mawsflow.orchestration.images import read_images

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", params=[False, True], ids=["maws", "with-baselines-and-control"])
def compiled(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("compiled") / "pipeline.yaml"
    args = ["--compile", str(path)] + (["--baselines", "--control"] if request.param else [])
    assert main(args) == 0
    pipeline_spec, platform_spec = yaml.safe_load_all(path.read_text())
    return {
        "path": path,
        "baselines": request.param,
        "control": request.param,
        "spec": pipeline_spec,
        "kubernetes": platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"],
    }


@dataclass(frozen=True)
class Task:
    path: str  # from the root DAG, e.g. "for-loop-1/transfer-evaluations/lit"
    key: str
    spec: dict
    parents: tuple[dict, ...]  # the DAG tasks (loops, sub-pipelines) it sits in, outermost first


def walk(spec: dict) -> Iterator[Task]:
    """Every task of the pipeline, inside ParallelFor bodies and sub-pipelines too."""

    def tasks(dag: dict, prefix: str, parents: tuple[dict, ...]) -> Iterator[Task]:
        for key, task in dag["tasks"].items():
            yield Task(prefix + key, key, task, parents)
            inner = spec["components"][task["componentRef"]["name"]].get("dag")
            if inner is not None:
                yield from tasks(inner, f"{prefix}{key}/", (*parents, task))

    return tasks(spec["root"]["dag"], "", ())


def tasks_of(spec: dict) -> dict[str, dict]:
    """Every task but the ParallelFor ones (whose keys repeat across sub-pipelines), by key."""
    found = {t.key: t.spec for t in walk(spec) if "parameterIterator" not in t.spec}
    assert len(found) == len([t for t in walk(spec) if "parameterIterator" not in t.spec])
    return found


def by_component(spec: dict, prefix: str) -> list[str]:
    """Task names whose component is `prefix` or one of its numbered copies."""
    return sorted(
        name
        for name, task in tasks_of(spec).items()
        if task.get("componentRef", {}).get("name", "").removeprefix("comp-").rstrip("-0123456789")
        == prefix
    )


def dag_of(spec: dict, task: dict) -> dict:
    return spec["components"][task["componentRef"]["name"]]["dag"]


def parameter_origin(task: Task, name: str) -> tuple[str, str]:
    """Where a task's input parameter comes from, followed out through the DAGs it sits in:
    (producer task, output key) or ("root", pipeline parameter)."""
    source = task.spec["inputs"]["parameters"][name]
    for parent in reversed(task.parents):
        if "taskOutputParameter" in source:
            break
        source = parent["inputs"]["parameters"][source["componentInputParameter"]]
    if "taskOutputParameter" in source:
        output = source["taskOutputParameter"]
        return output["producerTask"], output["outputParameterKey"]
    return "root", source["componentInputParameter"]


def test_compiled_pipeline_loads_back(compiled):
    loaded = kfp_components.load_component_from_file(str(compiled["path"]))
    assert loaded.name == ("maws-with-baselines-and-control" if compiled["control"] else "maws")
    inputs = loaded.component_spec.inputs
    for required in ("raw_corpus", "dataset", "eval_dataset", "eval_name"):
        assert not inputs[required].optional
    # The run parameters: data URIs, architecture, lengths, nodes and GPUs, launcher
    # backend and image tag.
    assert {
        "arch",
        "mae_epochs",
        "wsp_epochs",
        "lit_epochs",
        "finetune_epochs",
        "samples_per_epoch",
        "nodes",
        "gpus_per_node",
        "backend",
        "image_tag",
        "mae_checkpoint",
    } <= set(inputs)
    assert inputs["backend"].default == "pytorchjob" and inputs["gpus_per_node"].type == "Integer"
    outputs = {k: v.type for k, v in loaded.component_spec.outputs.items()}
    assert outputs["markdown"] == "system.Markdown@0.0.1"
    assert outputs["html"] == "system.HTML@0.0.1"


def test_tasks_of_the_dag(compiled):
    spec = compiled["spec"]
    assert len(by_component(spec, "wsp")) == (2 if compiled["baselines"] else 1)
    for step in (
        "step-images",
        "eval-dataset",
        "mae",
        "transfer-rows",
        "lit",
        "zeroshot",
        "finetune",
        "evaluate",
        "linear-probe",
        "lowshot-plan",
        "lowshot",
        "lowshot-summary",
        "report",
    ):
        assert len(by_component(spec, step)) == 1, step
    for phase in ("plan", "count", "vocab", "write", "finalize"):
        assert len(by_component(spec, f"build-dataset-{phase}")) == 1, phase
    # Two sub-pipelines: the dataset build at the root, the transfer evaluations in the
    # fan-out over the pretrained models.
    root = spec["root"]["dag"]["tasks"]
    assert set(dag_of(spec, root["build-dataset"])["tasks"]) >= {
        "build-dataset-plan",
        "build-dataset-vocab",
        "build-dataset-finalize",
    }
    (transfer,) = [t for t in walk(spec) if t.key == "transfer-evaluations"]
    assert transfer.path.count("/") == 1 and "parameterIterator" in transfer.parents[0]


def _loop_of(spec: dict, task: str) -> tuple[str, dict]:
    """The ParallelFor task (possibly itself inside another) whose body holds `task`."""
    for loop in walk(spec):
        if "parameterIterator" in loop.spec and task in dag_of(spec, loop.spec)["tasks"]:
            return loop.key, loop.spec
    raise AssertionError(f"{task} is in no ParallelFor")


def test_dataset_build_fans_out_over_shard_groups(compiled):
    spec = compiled["spec"]
    build = dag_of(spec, spec["root"]["dag"]["tasks"]["build-dataset"])
    for phase in ("count", "write"):
        _, loop = _loop_of(spec, f"build-dataset-{phase}")
        items = loop["parameterIterator"]["items"]["inputParameter"]
        producer = loop["inputs"]["parameters"][items]["taskOutputParameter"]["producerTask"]
        assert producer == "build-dataset-plan"
    count_loop, _ = _loop_of(spec, "build-dataset-count")
    write_loop, _ = _loop_of(spec, "build-dataset-write")
    vocab = build["tasks"]["build-dataset-vocab"]
    # Fan-in by dsl.Collected: vocab takes every group's count, finalize every write.
    assert vocab["inputs"]["parameters"]["counted"]["taskOutputParameter"]["producerTask"] == (
        count_loop
    )
    # Every write waits for the vocabulary through its plan's digest (a data dependency, so a
    # new plan also re-runs the writes of unchanged groups instead of serving them cached).
    inner = tasks_of(spec)
    assert inner["build-dataset-write"]["inputs"]["parameters"]["vocab_plan"][
        "componentInputParameter"
    ].endswith("build-dataset-vocab-Output")
    finalize = build["tasks"]["build-dataset-finalize"]
    assert finalize["inputs"]["parameters"]["written"]["taskOutputParameter"]["producerTask"] == (
        write_loop
    )
    # The build's tasks are keyed on the corpus: the plan (never cached) hands out the
    # fingerprints of each group's shards and of the whole corpus.
    assert not build["tasks"]["build-dataset-plan"].get("cachingOptions", {}).get("enableCache")
    for phase in ("count", "write"):
        fingerprint = inner[f"build-dataset-{phase}"]["inputs"]["parameters"]["fingerprint"]
        assert "fingerprint" in fingerprint["parameterExpressionSelector"]
    # Every task of the build reads the corpus the root's `raw_corpus` names.
    for task in walk(spec):
        if task.key in ("build-dataset-plan", "build-dataset-count", "build-dataset-write"):
            assert parameter_origin(task, "raw_corpus") == ("root", "raw_corpus"), task.path
    # No importer anywhere: the Dataset is finalize's own output, the sub-pipeline's output.
    assert not [c for c in spec["components"] if c.startswith("comp-importer")]
    outputs = spec["components"]["comp-build-dataset-finalize"]["outputDefinitions"]["artifacts"]
    assert outputs["pretraining"]["artifactType"]["schemaTitle"] == "system.Dataset"
    (selector,) = build["outputs"]["artifacts"]["pretraining"]["artifactSelectors"]
    assert selector == {
        "producerSubtask": "build-dataset-finalize",
        "outputArtifactKey": "pretraining",
    }


def _artifact_input(task: dict, name: str) -> tuple[str, str]:
    source = task["inputs"]["artifacts"][name]
    if "taskOutputArtifact" in source:
        return source["taskOutputArtifact"]["producerTask"], source["taskOutputArtifact"][
            "outputArtifactKey"
        ]
    return "parent", source["componentInputArtifact"]


def test_pretraining_chain(compiled):
    spec = compiled["spec"]
    tasks = tasks_of(spec)
    assert _artifact_input(tasks["mae"], "dataset") == ("build-dataset", "pretraining")
    wsp = by_component(spec, "wsp")
    maws_wsp = next(t for t in wsp if "mae_model" in tasks[t]["inputs"]["artifacts"])
    assert _artifact_input(tasks[maws_wsp], "dataset") == ("build-dataset", "pretraining")
    assert _artifact_input(tasks[maws_wsp], "mae_model") == ("mae", "model")
    assert tasks[maws_wsp]["taskInfo"]["name"] == "wsp (MAE→WSP)"
    pick = tasks["pick-model"]  # inside the transfer loop: the models come in as loop inputs
    assert _artifact_input(pick, "mae_model") == ("parent", "pipelinechannel--mae-model")
    assert _artifact_input(pick, "maws_model") == ("parent", f"pipelinechannel--{maws_wsp}-model")
    rows = tasks["transfer-rows"]["inputs"]["parameters"]["baselines"]["runtimeValue"]
    assert rows["constant"] is compiled["baselines"]
    if compiled["baselines"]:
        (scratch,) = set(wsp) - {maws_wsp}
        assert "mae_model" not in tasks[scratch]["inputs"].get("artifacts", {})
        assert tasks[scratch]["taskInfo"]["name"] == "wsp (WSP from scratch)"
        assert _artifact_input(pick, "wsp_model") == ("parent", f"pipelinechannel--{scratch}-model")
    else:
        assert "wsp_model" not in pick["inputs"]["artifacts"]
    control = tasks["transfer-rows"]["inputs"]["parameters"]["control"]["runtimeValue"]
    assert control["constant"] is compiled["control"]
    if compiled["control"]:
        # The control row's trunk: untrained, built from the run's preset and architecture.
        params = tasks["random-init"]["inputs"]["parameters"]
        assert params["preset"]["componentInputParameter"] == "preset"
        assert params["arch"]["componentInputParameter"] == "arch"
        assert _artifact_input(pick, "control_model") == (
            "parent",
            "pipelinechannel--random-init-model",
        )
    else:
        assert "random-init" not in tasks
        assert "control_model" not in pick["inputs"]["artifacts"]


def test_transfer_fans_out_over_the_pretrained_models_and_fans_in_to_the_report(compiled):
    spec = compiled["spec"]
    tasks = tasks_of(spec)
    loop_name, loop = _loop_of(spec, "transfer-evaluations")
    items = loop["parameterIterator"]["items"]["inputParameter"]
    assert loop["inputs"]["parameters"][items]["taskOutputParameter"]["producerTask"] == (
        "transfer-rows"
    )
    assert set(dag_of(spec, loop)["tasks"]) == {"pick-model", "transfer-evaluations"}
    transfer = tasks["transfer-evaluations"]
    body = dag_of(spec, transfer)
    assert {"lit", "zeroshot", "linear-probe", "seed-summary", "lowshot-summary"} <= set(
        body["tasks"]
    )
    # Inside, each evaluation reads the row's model (pick-model's output: a reference to the
    # artifact its training step made), or the model trained from it.
    assert _artifact_input(transfer, "model") == ("pick-model", "model")
    assert _artifact_input(tasks["lit"], "image_model") == ("parent", "model")
    # (finetuning sits in the loop over transfer seeds: the model comes in as a loop input)
    assert _artifact_input(tasks["finetune"], "pretrained") == ("parent", "pipelinechannel--model")
    assert _artifact_input(tasks["linear-probe"], "pretrained") == ("parent", "model")
    assert _artifact_input(tasks["zeroshot"], "lit_model") == ("lit", "model")
    assert _artifact_input(tasks["evaluate"], "finetuned") == ("finetune", "model")
    # The low-shot fan-out, inside: one run per (K, seed) of the sub-pipeline's own plan.
    _, lowshot_loop = _loop_of(spec, "lowshot")
    items = lowshot_loop["parameterIterator"]["items"]["inputParameter"]
    source = lowshot_loop["inputs"]["parameters"][items]["taskOutputParameter"]
    assert source["producerTask"] == "lowshot-plan" and "lowshot-plan" in body["tasks"]
    for name in ("shots", "seeds", "grouping"):
        plan_input = body["tasks"]["lowshot-plan"]["inputs"]["parameters"][name]
        assert plan_input["componentInputParameter"] == f"lowshot_{name}"
    # Finetuning and its evaluation: one of each per transfer seed, then their mean.
    _, seed_loop = _loop_of(spec, "finetune")
    items = seed_loop["parameterIterator"]["items"]["inputParameter"]
    assert seed_loop["inputs"]["parameters"][items]["componentInputParameter"] == "transfer_seeds"
    assert {"finetune", "evaluate"} <= set(dag_of(spec, seed_loop)["tasks"])
    assert _artifact_input(tasks["seed-summary"], "runs")[1] == ("pipelinechannel--evaluate-result")
    # The report collects each result over the rows: the loop's output, which is the
    # sub-pipeline's, which is its evaluation task's.
    report = tasks["report"]
    for name, producer in (
        ("finetune", "seed-summary"),
        ("zeroshot", "zeroshot"),
        ("linear", "linear-probe"),
        ("lowshot", "lowshot-summary"),
    ):
        task, key = _artifact_input(report, name)
        assert (task, key) == (loop_name, f"pipelinechannel--transfer-evaluations-{name}"), name
        (selector,) = body["outputs"]["artifacts"][name]["artifactSelectors"]
        assert selector == {"producerSubtask": producer, "outputArtifactKey": "result"}, name
    assert _artifact_input(report, "pretrained") == (loop_name, "pipelinechannel--pick-model-model")
    # The pretraining dataset for LiT, the checked evaluation dataset for the evaluations.
    assert _artifact_input(loop, "pipelinechannel--build-dataset-pretraining") == (
        "build-dataset",
        "pretraining",
    )
    assert _artifact_input(loop, "pipelinechannel--eval-dataset-dataset") == (
        "eval-dataset",
        "dataset",
    )
    # The evaluation dataset is keyed on its listing: an uncached fingerprint task feeds it.
    fingerprint = tasks["eval-dataset"]["inputs"]["parameters"]["fingerprint"]
    assert fingerprint["taskOutputParameter"]["producerTask"] == "eval-fingerprint"
    assert not tasks["eval-fingerprint"].get("cachingOptions", {}).get("enableCache")


def test_artifact_types_of_the_steps(compiled):
    components = compiled["spec"]["components"]

    def types(component: str, side: str) -> dict[str, str]:
        definitions = components[component][side].get("artifacts", {})
        return {k: v["artifactType"]["schemaTitle"] for k, v in definitions.items()}

    assert types("comp-mae", "outputDefinitions") == {
        "model": "system.Model",
        "metrics": "system.Metrics",
    }
    assert types("comp-wsp", "inputDefinitions") == {
        "dataset": "system.Dataset",
        "mae_model": "system.Model",
    }
    assert types("comp-zeroshot", "outputDefinitions") == {"result": "system.Metrics"}
    assert types("comp-finetune", "inputDefinitions") == {
        "pretrained": "system.Model",
        "eval_dataset": "system.Dataset",
    }
    assert types("comp-report", "outputDefinitions") == {
        "markdown": "system.Markdown",
        "html": "system.HTML",
        "files": "system.Artifact",
    }
    assert types("comp-build-dataset-finalize", "outputDefinitions") == {
        "pretraining": "system.Dataset",
        "stats": "system.Metrics",
    }
    assert types("comp-build-dataset", "outputDefinitions") == {
        "pretraining": "system.Dataset",
        "stats": "system.Metrics",
    }
    assert types("comp-transfer-evaluations", "inputDefinitions") == {
        "model": "system.Model",
        "pretraining": "system.Dataset",
        "eval_data": "system.Dataset",
    }
    assert types("comp-transfer-evaluations", "outputDefinitions") == {
        name: "system.Metrics" for name in ("finetune", "lowshot", "zeroshot", "linear")
    }
    assert types("comp-eval-dataset", "outputDefinitions") == {"dataset": "system.Dataset"}
    assert types("comp-pick-model", "outputDefinitions") == {"model": "system.Model"}


def test_resources_retries_caching_and_images(compiled):
    spec = compiled["spec"]
    executors = spec["deploymentSpec"]["executors"]
    references = read_images()
    containers = 0
    for task in walk(spec):
        component = spec["components"][task.spec["componentRef"]["name"]]
        if "executorLabel" not in component:
            continue  # a ParallelFor or a sub-pipeline
        container = executors[component["executorLabel"]]["container"]
        containers += 1
        name = task.key
        # Cached, except the listings whose fingerprints key the others' caches on the data.
        uncached = name in ("build-dataset-plan", "eval-fingerprint")
        assert task.spec["cachingOptions"] == ({} if uncached else {"enableCache": True}), name
        assert task.spec["retryPolicy"]["maxRetryCount"] >= 1, name
        resources = container["resources"]
        assert resources["resourceCpuLimit"] and resources["resourceMemoryLimit"], name
        if name == "step-images":
            assert container["image"] == references["launch"]
            continue
        # Every other task's image is step-images' output for its step, so that image_tag
        # applies; inside a sub-pipeline it comes in through the sub-pipeline's inputs.
        placeholder = container["image"]
        assert placeholder.startswith("{{$.inputs.parameters['"), name
        image_input = placeholder.removeprefix("{{$.inputs.parameters['").removesuffix("']}}")
        step = IMAGE_OF[component["executorLabel"].removeprefix("exec-").rstrip("-0123456789")]
        assert parameter_origin(task, image_input) == (
            "step-images",
            step.replace("-", "_"),
        ), name
    assert containers == len(tasks_of(spec)) - 2  # all but the two sub-pipelines
    mae = executors[spec["components"]["comp-mae"]["executorLabel"]]["container"]
    assert mae["resources"]["resourceMemoryLimit"] == "8Gi"
    assert "accelerator" not in mae["resources"]  # the launcher's pod: the job has the GPUs
    lowshot = executors[spec["components"]["comp-lowshot"]["executorLabel"]]["container"]
    assert lowshot["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert lowshot["resources"]["accelerator"]["resourceCount"] == "1"
    assert lowshot["resources"]["resourceMemoryLimit"] == "32Gi"
    assert tasks_of(spec)["mae"]["retryPolicy"]["maxRetryCount"] == 3


def test_kubernetes_settings_secret_shm_and_placement(compiled):
    spec = compiled["spec"]
    kubernetes = compiled["kubernetes"]
    no_storage = {"exec-step-images", "exec-lowshot-plan", "exec-transfer-rows"}
    for executor in spec["deploymentSpec"]["executors"]:
        if executor.startswith("exec-importer") or executor in no_storage:
            assert executor not in kubernetes, executor
            continue
        settings = kubernetes[executor]
        (secret,) = settings["secretAsEnv"]
        assert secret["secretNameParameter"]["componentInputParameter"].endswith("s3_secret")
        assert {(k["secretKey"], k["envVar"]) for k in secret["keyToEnv"]} == {
            ("accesskey", "AWS_ACCESS_KEY_ID"),
            ("secretkey", "AWS_SECRET_ACCESS_KEY"),
        }
        (config,) = settings["configMapAsEnv"]
        assert config["configMapNameParameter"]["componentInputParameter"].endswith(
            "object_store_config"
        )
        assert {k["envVar"] for k in config["keyToEnv"]} == set(OBJECT_STORE_KEYS)
    for executor in ("exec-lowshot", "exec-zeroshot", "exec-evaluate", "exec-linear-probe"):
        settings = kubernetes[executor]
        assert settings["emptyDirMounts"] == [
            {"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": "16Gi", "volumeName": "dshm"}
        ]
        assert settings["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"].endswith(
            "node_selector"
        )
        (toleration,) = settings["tolerations"]
        assert toleration["tolerationJson"]["componentInputParameter"].endswith("tolerations")
    # The training jobs get node placement and /dev/shm from the launcher, not the launcher's pod.
    assert "nodeSelector" not in kubernetes["exec-mae"]
    assert "emptyDirMounts" not in kubernetes["exec-wsp"]


def _parameter_names(value) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "componentInputParameter":
                yield item
            else:
                yield from _parameter_names(item)
    elif isinstance(value, list):
        for item in value:
            yield from _parameter_names(item)


def test_kubernetes_settings_name_inputs_of_their_tasks_dag(compiled):
    """The driver resolves a Kubernetes setting's parameter (the Secret's and ConfigMap's
    names, node selector, tolerations) among the inputs of the DAG the task sits in
    (backend/src/v2/driver/k8s.go → resolve.go `resolveInputParameter`: "parent DAG does not
    have input parameter"): inside a sub-pipeline or a ParallelFor, that DAG's own inputs."""
    spec = compiled["spec"]
    settings = compiled["kubernetes"]
    checked = 0
    for task in walk(spec):
        component = spec["components"][task.spec["componentRef"]["name"]]
        if component.get("executorLabel") not in settings:
            continue
        # The root's inputs are the pipeline's; a nested DAG's are its component's.
        owner = (
            spec["components"][task.parents[-1]["componentRef"]["name"]]
            if task.parents
            else spec["root"]
        )
        inputs = set(owner.get("inputDefinitions", {}).get("parameters", {}))
        for name in _parameter_names(settings[component["executorLabel"]]):
            assert name in inputs, (task.path, name)
            checked += 1
    assert checked > 40


def test_secret_keys_are_a_compile_option(tmp_path):
    path = tmp_path / "maws.yaml"
    assert main([
        "--compile", str(path),
        "--s3-access-key-id-key", "AWS_ACCESS_KEY_ID",
        "--s3-secret-access-key-key", "AWS_SECRET_ACCESS_KEY",
    ]) == 0  # fmt: skip
    _, platform = yaml.safe_load_all(path.read_text())
    (secret,) = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-mae"][
        "secretAsEnv"
    ]
    assert {k["secretKey"] for k in secret["keyToEnv"]} == {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    }


def test_compile_default_path_and_nothing_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--compile"]) == 0
    assert (tmp_path / "maws.yaml").is_file()
    with pytest.raises(SystemExit):
        main([])
    assert "nothing to do" in capsys.readouterr().err


def test_the_script_is_the_command_line():
    """`pipelines/maws.py` is the user's entry point over mawsflow.orchestration.command."""
    listed = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / "maws.py"), "--list-params"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "raw_corpus: String (required)" in listed.splitlines()
    assert "backend: String = 'pytorchjob'" in listed.splitlines()


# --------------------------------------------------------------------------------------------
# The optional branches: --video k400 --video ssv2 (Table 22's K400 and SSv2 columns) and
# --detection lvis --detection coco (its LVIS and COCO columns, and Table 21's TIDE errors).
# Both have one shape: per chosen set, a checked dataset at the root and, per row of the
# report, a `<branch>-transfer` sub-pipeline: finetune → evaluation, collected by the report.


@dataclass(frozen=True)
class BranchCase:
    flag: str
    sets: dict[str, str]  # set → the report's default column, in Table 22's order
    check: str  # the dataset check's component
    finetune: str
    evaluate: str
    dataset_input: str  # the finetune's and the evaluation's dataset input
    finetune_image: str  # step-images' outputs
    eval_image: str
    unknown_set: str  # a set the branch does not have

    @property
    def name(self) -> str:
        return self.flag.removeprefix("--")


BRANCHES = {
    "video": BranchCase(
        "--video", {"k400": "K400", "ssv2": "SSv2"}, "video-dataset", "finetune-video",
        "evaluate-video", "video_dataset", "finetune_video", "eval_video", "ucf101",
    ),
    "detection": BranchCase(
        "--detection", {"lvis": "LVIS", "coco": "COCO"}, "detection-dataset",
        "finetune-detection", "evaluate-detection", "detection_dataset", "finetune_detection",
        "eval_detection", "objects365",
    ),
}  # fmt: skip


def _compile(path: Path, *args: str) -> dict:
    assert main(["--compile", str(path), *args]) == 0
    pipeline_spec, platform_spec = yaml.safe_load_all(path.read_text())
    return {
        "path": path,
        "spec": pipeline_spec,
        "kubernetes": platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"],
    }


@pytest.fixture(scope="module", params=list(BRANCHES))
def with_branch(request, tmp_path_factory):
    branch = BRANCHES[request.param]
    path = tmp_path_factory.mktemp("compiled") / "pipeline.yaml"
    # The sets given out of Table 22's order: the columns still come in its order.
    args = [arg for s in reversed(branch.sets) for arg in (branch.flag, s)]
    return {"branch": branch, **_compile(path, *args)}


def test_branch_adds_its_run_parameters_only_when_chosen(compiled, with_branch):
    branch = with_branch["branch"]
    loaded = kfp_components.load_component_from_file(str(with_branch["path"]))
    assert loaded.name == "maws-with-" + "-and-".join(branch.sets)
    inputs = loaded.component_spec.inputs
    prefixes = tuple(f"{s}_" for s in branch.sets)
    for name, column in branch.sets.items():
        assert not inputs[f"{name}_dataset"].optional  # a chosen set needs its data
        assert inputs[f"{name}_name"].default == column
        assert inputs[f"{name}_epochs"].default == 0.0
    # Every other parameter is there as without the branch, with the same defaults.
    plain = kfp_components.load_component_from_file(str(compiled["path"])).component_spec.inputs
    assert {n: i.default for n, i in plain.items()} == {
        n: i.default for n, i in inputs.items() if not n.startswith(prefixes)
    }
    # Without the branch: no parameter of its sets and no task of it.
    assert not [n for n in plain if n.startswith(prefixes)]
    assert not [t for t in walk(compiled["spec"]) if branch.name in t.key]


def test_branch_with_its_first_set_only(with_branch, tmp_path):
    branch = with_branch["branch"]
    first, second = branch.sets
    spec = _compile(tmp_path / "one.yaml", branch.flag, first)["spec"]
    assert spec["pipelineInfo"]["name"] == f"maws-with-{first}"
    assert not [n for n in spec["root"]["inputDefinitions"]["parameters"] if second in n]
    (transfer,) = [t for t in walk(spec) if t.key.startswith(f"{branch.name}-transfer")]
    assert transfer.spec["inputs"]["parameters"]["variant"]["runtimeValue"]["constant"] == first
    report = spec["root"]["dag"]["tasks"]["report"]["inputs"]["artifacts"]
    assert first in report and second not in report


def test_branch_unknown_set_or_parameter_is_refused(with_branch, tmp_path, capsys):
    branch = with_branch["branch"]
    first, second = branch.sets
    target = tmp_path / "x.yaml"
    with pytest.raises(SystemExit):
        main(["--compile", str(target), branch.flag, branch.unknown_set])
    assert f"invalid choice: '{branch.unknown_set}'" in capsys.readouterr().err
    # A parameter of a set the pipeline was not compiled with is named as unknown.
    args = ["--compile", str(target), branch.flag, second, "--param", f"{first}_dataset=s3://d"]
    assert main(args) == 1
    assert f"{first}_dataset: the pipeline has no such parameter" in capsys.readouterr().err
    # An empty dataset or column name is refused before anything is written.
    args = ["--compile", str(target), branch.flag, first, "--param", f"{first}_name= "]
    assert main(args) == 1
    assert f"{first}_name: empty" in capsys.readouterr().err
    # A sweep sweeps the image evaluations only.
    with pytest.raises(SystemExit):
        main(["--compile", str(target), "--sweep", "epochs", branch.flag, first])
    assert "--detection are not available with --sweep" in capsys.readouterr().err
    assert not target.exists()
    check = {"video": check_video_sets, "detection": check_detection_sets}[branch.name]
    with pytest.raises(ConfigError, match=f"'{branch.unknown_set}': choose among {first}, "):
        check([first, branch.unknown_set])
    assert check([second, first, second]) == (first, second)


def test_branch_datasets_are_checked_once_and_keyed_on_their_listing(with_branch):
    branch, spec = with_branch["branch"], with_branch["spec"]
    root = {t.key: t for t in walk(spec) if not t.parents}
    checks = {
        t.spec["inputs"]["parameters"]["uri"]["componentInputParameter"]: t
        for t in root.values()
        if t.spec["componentRef"]["name"].startswith(f"comp-{branch.check}")
    }
    assert set(checks) == {f"{s}_dataset" for s in branch.sets}
    for name, check in checks.items():
        name = name.removesuffix("_dataset")
        params = check.spec["inputs"]["parameters"]
        assert params["name"]["componentInputParameter"] == f"{name}_name"
        listing = root[params["fingerprint"]["taskOutputParameter"]["producerTask"]]
        assert listing.spec["componentRef"]["name"].startswith("comp-eval-fingerprint")
        assert listing.spec["inputs"]["parameters"]["uri"]["componentInputParameter"] == (
            f"{name}_dataset"
        )
        assert not listing.spec.get("cachingOptions", {}).get("enableCache")
        assert listing.spec["taskInfo"]["name"] == f"{name}-fingerprint"
        assert check.spec["taskInfo"]["name"] == f"{name}-dataset"
        assert check.spec["cachingOptions"] == {"enableCache": True}
        assert parameter_origin(check, "name") == ("root", f"{name}_name")
        # A detection set's check is told the set: its annotation format decides the scoring.
        if branch.name == "detection":
            assert params["variant"]["runtimeValue"]["constant"] == name
        else:
            assert "variant" not in params


def test_branch_runs_per_row_and_set_and_fans_in_to_the_report(with_branch):
    branch, spec = with_branch["branch"], with_branch["spec"]
    root = spec["root"]["dag"]["tasks"]
    transfers = [t for t in walk(spec) if t.key.startswith(f"{branch.name}-transfer")]
    assert len(transfers) == 2
    loop_name, loop = _loop_of(spec, transfers[0].key)
    assert set(dag_of(spec, loop)["tasks"]) == {
        "pick-model",
        "transfer-evaluations",
        *(t.key for t in transfers),
    }
    by_set = {}
    for transfer in transfers:
        params = transfer.spec["inputs"]["parameters"]
        name = params["variant"]["runtimeValue"]["constant"]
        by_set[name] = transfer
        # The row's model; the set's checked data, its column name and its length.
        assert _artifact_input(transfer.spec, "model") == ("pick-model", "model")
        producer, key = _artifact_input(transfer.spec, "data")
        assert producer == "parent"  # from the loop, which takes the root's dataset check
        outer = loop["inputs"]["artifacts"][key]["taskOutputArtifact"]
        check = root[outer["producerTask"]]
        assert check["componentRef"]["name"].startswith(f"comp-{branch.check}")
        assert check["inputs"]["parameters"]["uri"]["componentInputParameter"] == f"{name}_dataset"
        assert parameter_origin(transfer, "eval_name") == ("root", f"{name}_name")
        assert parameter_origin(transfer, "epochs") == ("root", f"{name}_epochs")
        assert parameter_origin(transfer, "preset") == ("root", "preset")
        for image, output in (("finetune", branch.finetune_image), ("eval", branch.eval_image)):
            assert parameter_origin(transfer, f"{image}_image") == ("step-images", output)
        # Inside: the finetune from the row's model, then the evaluation of what it made.
        body = dag_of(spec, transfer.spec)
        assert set(body["tasks"]) == {branch.finetune, branch.evaluate}
        finetune, evaluate = body["tasks"][branch.finetune], body["tasks"][branch.evaluate]
        assert _artifact_input(finetune, "pretrained") == ("parent", "model")
        assert _artifact_input(finetune, branch.dataset_input) == ("parent", "data")
        assert finetune["inputs"]["parameters"]["variant"]["componentInputParameter"] == "variant"
        assert _artifact_input(evaluate, "finetuned") == (branch.finetune, "model")
        assert _artifact_input(evaluate, branch.dataset_input) == ("parent", "data")
        assert evaluate["inputs"]["parameters"]["eval_name"] == {
            "componentInputParameter": "eval_name"
        }
        (selector,) = body["outputs"]["artifacts"]["Output"]["artifactSelectors"]
        assert selector == {"producerSubtask": branch.evaluate, "outputArtifactKey": "result"}
    assert set(by_set) == set(branch.sets)
    # The report collects each set's results over the rows, as its own input.
    report = root["report"]
    for name, transfer in by_set.items():
        assert _artifact_input(report, name) == (
            loop_name,
            f"pipelinechannel--{transfer.key}-Output",
        )
    inputs = spec["components"][report["componentRef"]["name"]]["inputDefinitions"]["artifacts"]
    for name in [*BRANCHES["video"].sets, *BRANCHES["detection"].sets]:
        assert inputs[name]["isArtifactList"] and inputs[name]["isOptional"]


def test_branch_tasks_resources_and_placement(with_branch):
    branch = with_branch["branch"]
    spec, kubernetes = with_branch["spec"], with_branch["kubernetes"]
    executors = spec["deploymentSpec"]["executors"]
    finetune = executors[f"exec-{branch.finetune}"]["container"]["resources"]
    evaluate = executors[f"exec-{branch.evaluate}"]["container"]["resources"]
    assert "accelerator" not in finetune  # the launcher: its job's pods have the GPUs
    assert finetune["resourceMemoryLimit"] == "8Gi"
    assert evaluate["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert evaluate["resourceMemoryLimit"] == "32Gi"
    settings = kubernetes[f"exec-{branch.evaluate}"]
    assert settings["emptyDirMounts"][0]["mountPath"] == "/dev/shm"
    # Placement from the sub-pipeline's own inputs, which come from the root's.
    assert settings["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"] == (
        "node_selector"
    )
    (transfer, _) = [t for t in walk(spec) if t.key.startswith(f"{branch.name}-transfer")]
    assert parameter_origin(transfer, "node_selector") == ("root", "node_selector")
    assert parameter_origin(transfer, "backend") == ("root", "backend")
    for component in (branch.check, branch.finetune, branch.evaluate):
        assert "secretAsEnv" in kubernetes[f"exec-{component}"], component
    # Every task of the branch runs in its step's image (components.IMAGE_OF), from
    # step-images, and is retried.
    for task in walk(spec):
        component = spec["components"][task.spec["componentRef"]["name"]]
        if branch.name not in task.key or "dag" in component:
            continue
        assert task.spec["retryPolicy"]["maxRetryCount"] >= 1, task.path
        step = IMAGE_OF[component["executorLabel"].removeprefix("exec-").rstrip("-0123456789")]
        image = executors[component["executorLabel"]]["container"]["image"]
        image_input = image.removeprefix("{{$.inputs.parameters['").removesuffix("']}}")
        assert parameter_origin(task, image_input) == ("step-images", step.replace("-", "_"))


def test_both_branches_together_give_table_22s_column_order(tmp_path):
    spec = _compile(
        tmp_path / "both.yaml", "--detection", "coco", "--video", "ssv2", "--detection", "lvis",
        "--baselines",
    )["spec"]  # fmt: skip
    assert spec["pipelineInfo"]["name"] == "maws-with-baselines-and-ssv2-and-lvis-and-coco"
    assert (
        "video finetuning on SSv2; detection finetuning on LVIS and COCO"
        in (spec["pipelineInfo"]["description"])
    )
    # The parameters in the order --list-params shows them (the YAML sorts them).
    pipeline = maws_pipeline(detection=["coco", "lvis"], video=["ssv2"], baselines=True)
    parameters = list(pipeline.component_spec.inputs)
    assert set(parameters) == set(spec["root"]["inputDefinitions"]["parameters"])
    branch_parameters = [p for p in parameters if p.split("_")[0] in ("ssv2", "lvis", "coco")]
    assert branch_parameters == [
        "ssv2_dataset", "lvis_dataset", "coco_dataset",
        "ssv2_name", "ssv2_epochs", "lvis_name", "lvis_epochs", "coco_name", "coco_epochs",
    ]  # fmt: skip
    report = spec["root"]["dag"]["tasks"]["report"]["inputs"]["artifacts"]
    assert {"ssv2", "lvis", "coco"} <= set(report) and "k400" not in report
    transfers = [t.key for t in walk(spec) if t.key.endswith("-transfer") or "-transfer-" in t.key]
    assert sum(k.startswith("video-transfer") for k in transfers) == 1
    assert sum(k.startswith("detection-transfer") for k in transfers) == 2
