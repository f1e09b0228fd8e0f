"""The backend conformance checker (mawsflow.orchestration.conformance): every rule rejects a small
pipeline with the construct the Kubeflow Pipelines backend cannot run and accepts the fixed
form; the shipped pipelines pass; a pipeline built from the component YAML files alone passes;
and the CLI writes nothing that fails."""

import copy
from pathlib import Path

import pytest
from kfp import compiler, dsl
from kfp import components as kfp_components
from kfp.dsl import Dataset, Input, Output

from mawsflow.orchestration import command, conformance
from mawsflow.orchestration.conformance import (
    MIN_BACKEND,
    ConformanceError,
    check,
    pipeline_spec,
    require_conformance,
)

REPO = Path(__file__).resolve().parent.parent


def compiled(pipeline, tmp_path) -> dict:
    path = tmp_path / f"{pipeline.name}.yaml"
    compiler.Compiler().compile(pipeline, str(path))
    return pipeline_spec(str(path))


def rules_of(violations) -> set[str]:
    return {v.rule for v in violations}


# Small components for the test pipelines (never run: only compiled).
@dsl.component(base_image="python:3.11")
def make_uri() -> str:
    return "s3://bucket/data"


@dsl.component(base_image="python:3.11")
def make_list() -> list[str]:
    return ["a", "b"]


@dsl.component(base_image="python:3.11")
def make_dataset(name: str, data: Output[Dataset]) -> None:
    data.uri = name


@dsl.component(base_image="python:3.11")
def use_dataset(data: Input[Dataset]) -> None:
    print(data.uri)


@dsl.component(base_image="python:3.11")
def use_datasets(data: Input[list[Dataset]]) -> None:
    print(len(data))


@dsl.component(base_image="python:3.11")
def use_strings(values: list[str]) -> None:
    print(values)


@dsl.component(base_image="python:3.11")
def echo(value: str) -> str:
    return value


@dsl.component(base_image="python:3.11")
def read_data(uri: str, fingerprint: str = "") -> str:
    return uri + fingerprint


# --------------------------------------------------------------------------------------------
# One test per rule: the offending form is rejected, the fixed form accepted.


def test_importer_uri_from_a_task_output_is_rejected(tmp_path):
    @dsl.pipeline(name="importer-from-task")
    def bad():
        uri = make_uri()
        imported = dsl.importer(artifact_uri=uri.output, artifact_class=Dataset, reimport=False)
        use_dataset(data=imported.output)

    @dsl.pipeline(name="importer-from-parameter")
    def fixed_importer(uri: str):
        imported = dsl.importer(artifact_uri=uri, artifact_class=Dataset, reimport=False)
        use_dataset(data=imported.output)

    @dsl.pipeline(name="producer-outputs-the-artifact")
    def fixed(uri: str):
        use_dataset(data=make_dataset(name=uri).outputs["data"])

    found = check(compiled(bad, tmp_path))
    assert rules_of(found) == {"importer-uri-from-task-output"}
    assert found[0].task == "importer" and "make-uri" in found[0].message
    assert check(compiled(fixed_importer, tmp_path)) == []
    assert check(compiled(fixed, tmp_path)) == []


def test_importer_with_a_display_name_is_rejected(tmp_path):
    @dsl.pipeline(name="named-importer")
    def bad(uri: str):
        with dsl.ParallelFor(make_list().output) as item:
            imported = dsl.importer(artifact_uri=item, artifact_class=Dataset)
            imported.set_display_name("pretrained model")
            use_dataset(data=imported.output)

    @dsl.pipeline(name="unnamed-importer")
    def fixed(uri: str):
        with dsl.ParallelFor(make_list().output) as item:
            imported = dsl.importer(artifact_uri=item, artifact_class=Dataset)
            use_dataset(data=imported.output)

    found = check(compiled(bad, tmp_path))
    assert rules_of(found) == {"importer-display-name"}
    assert found[0].task.startswith("for-loop-") and found[0].task.endswith("/importer")
    assert check(compiled(fixed, tmp_path)) == []


def test_collecting_an_importer_output_is_rejected(tmp_path):
    @dsl.pipeline(name="collect-importer")
    def bad():
        with dsl.ParallelFor(make_list().output) as item:
            imported = dsl.importer(artifact_uri=item, artifact_class=Dataset)
        use_datasets(data=dsl.Collected(imported.output))

    @dsl.pipeline(name="collect-container")
    def fixed():
        with dsl.ParallelFor(make_list().output) as item:
            made = make_dataset(name=item)
        use_datasets(data=dsl.Collected(made.outputs["data"]))

    found = check(compiled(bad, tmp_path))
    assert rules_of(found) == {"collected-importer-output"}
    assert found[0].task == "use-datasets"
    assert check(compiled(fixed, tmp_path)) == []


def test_iterating_over_artifacts_is_rejected(tmp_path):
    @dsl.pipeline(name="loop")
    def loop():
        with dsl.ParallelFor(make_list().output) as item:
            echo(value=item)

    spec = compiled(loop, tmp_path)
    assert check(spec) == []
    # The SDK only writes parameter iterators; a hand-written or other-tool spec can hold an
    # artifact iterator, which the driver refuses. Turn this loop into one.
    loop_task = spec["root"]["dag"]["tasks"]["for-loop-1"]
    iterator = loop_task.pop("parameterIterator")
    loop_task["artifactIterator"] = {
        "itemInput": iterator["itemInput"],
        "items": {"inputArtifact": "pipelinechannel--make-list-Output"},
    }
    assert rules_of(check(spec)) == {"artifact-iterator"}


def test_named_loop_outputs_are_lost_before_2_16(tmp_path):
    @dsl.pipeline(name="named-loop")
    def bad():
        with dsl.ParallelFor(make_list().output, name="per item") as item:
            echoed = echo(value=item)
        use_strings(values=dsl.Collected(echoed.output))

    @dsl.pipeline(name="unnamed-loop")
    def fixed():
        with dsl.ParallelFor(make_list().output) as item:
            echoed = echo(value=item)
        use_strings(values=dsl.Collected(echoed.output))

    spec = compiled(bad, tmp_path)
    assert rules_of(check(spec, "2.15.0")) == {"named-loop-outputs"}
    assert check(spec, "2.16.0") == [] and check(spec, "2.17.0") == []
    assert check(compiled(fixed, tmp_path), "2.15.0") == []
    with pytest.raises(ConformanceError, match="named-loop-outputs"):
        require_conformance(spec, backends=("2.15.0", "2.16.0"))


def test_an_image_placeholder_must_be_a_task_input(tmp_path):
    @dsl.pipeline(name="image-from-task")
    def fixed():
        image = echo(value="registry/image:tag")
        task = read_data(uri="x")
        task.set_container_image(image.output)

    spec = compiled(fixed, tmp_path)
    assert check(spec) == []
    # Without the input parameter the placeholder names, the driver cannot resolve the image.
    task = spec["root"]["dag"]["tasks"]["read-data"]
    (channel,) = [k for k in task["inputs"]["parameters"] if k.startswith("pipelinechannel--")]
    del task["inputs"]["parameters"][channel]
    assert rules_of(check(spec)) == {"image-placeholder-input"}


@dsl.component(base_image="python:3.11")
def use_settings(settings: dict) -> None:
    print(settings)


def test_pipeline_values_inside_a_dict_argument_are_rejected(tmp_path):
    @dsl.pipeline(name="dict-of-channels")
    def bad(seed: int):
        use_settings(settings={"seed": seed, "fixed": 1})

    @dsl.pipeline(name="dict-constant")
    def fixed_constant():
        use_settings(settings={"seed": 0, "fixed": 1})

    @dsl.pipeline(name="separate-parameters")
    def fixed(seed: str):
        echo(value=seed)  # the pipeline value as a parameter of its own

    found = check(compiled(bad, tmp_path))
    assert rules_of(found) == {"channel-in-constant"} and "'settings'" in found[0].message
    assert check(compiled(fixed_constant, tmp_path)) == []
    assert check(compiled(fixed, tmp_path)) == []


def test_a_cached_task_reading_data_by_uri_needs_a_fingerprint(tmp_path):
    @dsl.pipeline(name="stale-cache")
    def bad(raw_corpus: str):
        read_data(uri=raw_corpus)

    @dsl.pipeline(name="cached-fingerprint")
    def still_bad(raw_corpus: str):
        listing = read_data(uri=raw_corpus)  # cached itself: its output goes stale too
        read_data(uri=raw_corpus, fingerprint=listing.output)

    @dsl.pipeline(name="fingerprinted")
    def fixed(raw_corpus: str):
        listing = read_data(uri=raw_corpus).set_caching_options(False)
        read_data(uri=raw_corpus, fingerprint=listing.output)

    @dsl.pipeline(name="fingerprinted-loop")
    def fixed_in_loop(raw_corpus: str):
        listing = make_list().set_caching_options(False)
        with dsl.ParallelFor(listing.output) as item:
            read_data(uri=raw_corpus, fingerprint=item)

    found = check(compiled(bad, tmp_path))
    assert rules_of(found) == {"cache-follows-data"} and "raw_corpus" in found[0].message
    assert rules_of(check(compiled(still_bad, tmp_path))) == {"cache-follows-data"}
    assert check(compiled(fixed, tmp_path)) == []
    assert check(compiled(fixed_in_loop, tmp_path)) == []


@dsl.component(base_image="python:3.11")
def decide() -> str:
    return "train"


def test_a_condition_reads_only_the_inputs_of_its_task(tmp_path):
    @dsl.pipeline(name="if-on-output")
    def fixed():
        plan = decide()
        with dsl.If(plan.output == "train", name="data-changed"):
            echo(value="trained")

    spec = compiled(fixed, tmp_path)
    assert check(spec) == []
    # The SDK hands the decided value to the condition's task as an input of its own; the
    # condition reads that input. Without it the driver's CEL evaluation has nothing to read.
    task = spec["root"]["dag"]["tasks"]["condition-1"]
    channel = "pipelinechannel--decide-Output"
    assert f"inputs.parameter_values['{channel}']" in task["triggerPolicy"]["condition"]
    del task["inputs"]["parameters"][channel]
    found = check(spec)
    assert rules_of(found) == {"condition-input"}
    assert found[0].task == "condition-1" and channel in found[0].message


def test_an_importer_must_not_carry_a_condition(tmp_path):
    @dsl.pipeline(name="importer-in-if")
    def fixed(uri: str):
        plan = decide()
        with dsl.If(plan.output == "train"):
            imported = dsl.importer(artifact_uri=uri, artifact_class=Dataset, reimport=False)
            use_dataset(data=imported.output)

    spec = compiled(fixed, tmp_path)
    assert check(spec) == []  # the condition sits on the sub-DAG around the importer
    # A spec that puts the condition on the importer itself (another tool, a hand edit): the
    # backend's compiler refuses the whole pipeline.
    root = spec["root"]["dag"]["tasks"]
    inner = spec["components"][root["condition-1"]["componentRef"]["name"]]["dag"]["tasks"]
    inner["importer"]["triggerPolicy"] = {"condition": "inputs.parameter_values['uri'] != ''"}
    inner["importer"]["inputs"]["parameters"]["uri"] = {"componentInputParameter": "uri"}
    found = check(spec)
    assert rules_of(found) == {"importer-condition"} and found[0].task == "condition-1/importer"


def test_collecting_an_output_made_under_a_condition_in_a_loop_is_rejected(tmp_path):
    @dsl.pipeline(name="collect-conditional-parameter")
    def bad():
        with dsl.ParallelFor(make_list().output) as item, dsl.If(item == "a"):
            echoed = echo(value=item)
        use_strings(values=dsl.Collected(echoed.output))

    @dsl.pipeline(name="collect-conditional-artifact")
    def bad_artifact():
        with dsl.ParallelFor(make_list().output) as item, dsl.If(item == "a"):
            made = make_dataset(name=item)
        use_datasets(data=dsl.Collected(made.outputs["data"]))

    @dsl.pipeline(name="condition-around-loop")
    def fixed():
        # The retraining pipeline's shape: the loop and its fan-in both inside the condition.
        plan = decide()
        with dsl.If(plan.output == "train"):
            with dsl.ParallelFor(make_list().output) as item:
                made = make_dataset(name=item)
            use_datasets(data=dsl.Collected(made.outputs["data"]))

    @dsl.pipeline(name="condition-in-loop-not-collected")
    def fixed_uncollected():
        with dsl.ParallelFor(make_list().output) as item, dsl.If(item == "a"):
            echo(value=item)

    for pipeline, consumer in ((bad, "use-strings"), (bad_artifact, "use-datasets")):
        found = check(compiled(pipeline, tmp_path))
        assert rules_of(found) == {"collected-conditional-output"}, pipeline.name
        assert found[0].task == consumer and "condition-" in found[0].message
    assert check(compiled(fixed, tmp_path)) == []
    assert check(compiled(fixed_uncollected, tmp_path)) == []


def test_a_oneof_of_artifacts_needs_backend_2_17(tmp_path):
    @dsl.pipeline(name="oneof-artifacts")
    def bad():
        plan = decide()
        with dsl.If(plan.output == "train"):
            trained = make_dataset(name="trained")
        with dsl.Else():
            kept = make_dataset(name="kept")
        use_dataset(data=dsl.OneOf(trained.outputs["data"], kept.outputs["data"]))

    @dsl.pipeline(name="oneof-parameters")
    def fixed():
        plan = decide()
        with dsl.If(plan.output == "train"):
            trained = echo(value="trained")
        with dsl.Else():
            kept = echo(value="kept")
        echo(value=dsl.OneOf(trained.output, kept.output))

    spec = compiled(bad, tmp_path)
    found = check(spec, "2.16.0")
    assert rules_of(found) == {"oneof-artifact-output"} and found[0].task == "use-dataset"
    assert check(spec, "2.17.0") == []
    with pytest.raises(ConformanceError, match="oneof-artifact-output"):
        require_conformance(spec)  # 2.16.0 is still supported
    assert check(compiled(fixed, tmp_path), "2.16.0") == []


def test_every_rule_has_a_test_here():
    tested = {
        "importer_uri_from_task_output",
        "importer_display_name",
        "collected_importer_output",
        "artifact_iterator",
        "named_loop_outputs",
        "image_placeholder_input",
        "channel_in_constant",
        "cache_follows_data",
        "condition_input",
        "importer_condition",
        "collected_conditional_output",
        "oneof_artifact_output",
    }
    rules = {r.__name__ for r in conformance.RULES + conformance.VERSIONED_RULES}
    assert rules == tested
    for rule in conformance.RULES + conformance.VERSIONED_RULES:
        assert "backend/src/v2/" in rule.__doc__, rule.__name__  # each cites its source


def test_not_a_pipeline_spec_is_named(tmp_path):
    with pytest.raises(ValueError, match="not a compiled pipeline spec"):
        check({"components": {}})


# --------------------------------------------------------------------------------------------
# The shipped pipelines and the reusable components


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["--baselines"],
        ["--baselines", "--control", "--video", "k400", "--video", "ssv2"],
        ["--control", "--detection", "lvis", "--detection", "coco", "--video", "k400"],
    ],
    ids=["maws", "with-baselines", "with-baselines-control-and-video", "with-detection"],
)
def test_the_shipped_variants_pass_on_every_supported_backend(options, tmp_path):
    path = tmp_path / "maws.yaml"
    assert command.main(["--compile", str(path), *options]) == 0
    spec = pipeline_spec(str(path))
    for backend in conformance.SUPPORTED_BACKENDS:
        assert check(spec, backend) == [], backend
    # No importer at all: the datasets and the transfer fan-out's models are task outputs.
    assert not any("importer" in e for e in spec["deploymentSpec"]["executors"].values())


@pytest.fixture(scope="module")
def retraining_spec(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("retrain") / "retrain.yaml"
    assert command.main(["--retrain", "--compile", str(path)]) == 0
    return pipeline_spec(str(path))


def test_the_retraining_pipeline_passes_and_its_condition_is_guarded(retraining_spec):
    """`--retrain` wraps the whole DAG in dsl.If(retrain-plan == "train"), with ParallelFors and
    their dsl.Collected fan-ins inside: it passes every rule on every supported backend, and
    the condition rules see its construct (breaking it the way a future edit could is caught)."""
    retraining = copy.deepcopy(retraining_spec)
    for backend in conformance.SUPPORTED_BACKENDS:
        assert check(retraining, backend) == [], backend
    root = retraining["root"]["dag"]["tasks"]
    condition = root["condition-1"]
    channel = "pipelinechannel--retrain-plan-Output"
    assert condition["triggerPolicy"]["condition"] == (
        f"inputs.parameter_values['{channel}'] == 'train'"
    )
    inside = retraining["components"][condition["componentRef"]["name"]]["dag"]["tasks"]
    loop = inside["for-loop-2"]  # the transfer fan-out, collected by the gate and the report
    assert "parameterIterator" in loop
    collectors = {
        key
        for key, task in inside.items()
        for source in task.get("inputs", {}).get("artifacts", {}).values()
        if source.get("taskOutputArtifact", {}).get("producerTask") == "for-loop-2"
    }
    assert {"promotion-gate", "report"} <= collectors

    # The condition loses the input it reads: the driver could not evaluate it.
    del condition["inputs"]["parameters"][channel]
    assert rules_of(check(retraining)) == {"condition-input"}
    condition["inputs"]["parameters"][channel] = {
        "taskOutputParameter": {"outputParameterKey": "Output", "producerTask": "retrain-plan"}
    }
    assert check(retraining) == []  # restored

    # The deciding task served from the cache would replay an old decision over new data.
    root["retrain-plan"]["cachingOptions"] = {"enableCache": True}
    assert rules_of(check(retraining)) == {"cache-follows-data"}
    root["retrain-plan"]["cachingOptions"] = {}

    # A condition inside the transfer loop, on the way to what the gate collects.
    body = retraining["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    evaluations = body["transfer-evaluations"]
    name = next(iter(evaluations["inputs"]["parameters"]))
    evaluations["triggerPolicy"] = {"condition": f"inputs.parameter_values['{name}'] != ''"}
    found = check(retraining)
    assert rules_of(found) == {"collected-conditional-output"}
    assert {v.task for v in found} >= {"condition-1/promotion-gate", "condition-1/report"}


@pytest.mark.parametrize(
    ("flag", "sets", "check_component"),
    [
        ("--video", ("k400", "ssv2"), "video-dataset"),
        ("--detection", ("lvis", "coco"), "detection-dataset"),
    ],
    ids=["video", "detection"],
)
def test_the_branch_datasets_are_data_the_cache_must_follow(flag, sets, check_component, tmp_path):
    """A branch's dataset URIs are DATA_PARAMETERS: its cached dataset check passes only
    because it takes the uncached listing's fingerprint; without it, the rule fires."""
    assert {f"{s}_dataset" for s in sets} <= set(conformance.DATA_PARAMETERS)
    path = tmp_path / "maws.yaml"
    assert command.main(["--compile", str(path), flag, sets[0], flag, sets[1]]) == 0
    spec = pipeline_spec(str(path))
    assert check(spec) == []
    tasks = spec["root"]["dag"]["tasks"]
    checks = [
        k
        for k, t in tasks.items()
        if t["componentRef"]["name"].startswith(f"comp-{check_component}")
    ]
    assert len(checks) == 2  # one per set
    for key in checks:
        tasks[key]["inputs"]["parameters"]["fingerprint"] = {"runtimeValue": {"constant": "stale"}}
    found = check(spec)
    assert rules_of(found) == {"cache-follows-data"}
    assert sorted(v.task for v in found) == sorted(checks)
    assert {v.message.split(" reads ")[1].split(" ")[0] for v in found} == {
        f"{s}_dataset" for s in sets
    }


def test_compile_writes_nothing_that_fails_the_check(tmp_path, monkeypatch, capsys):
    @dsl.pipeline(name="stale-cache")
    def bad(raw_corpus: str):
        read_data(uri=raw_corpus)

    monkeypatch.setattr(command, "maws_pipeline", lambda **_: bad)
    target = tmp_path / "out.yaml"
    assert command.main(["--compile", str(target)]) == 1
    assert "cache-follows-data" in capsys.readouterr().err
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_a_pipeline_built_from_the_component_yaml_files_alone_passes(tmp_path):
    """What another pipeline author does: load components/*.yaml (not the Python functions),
    wire a pipeline, compile it; the result passes the same rules."""
    load = {
        name: kfp_components.load_component_from_file(str(REPO / "components" / f"{name}.yaml"))
        for name in (
            "build-dataset-plan",
            "build-dataset-count",
            "build-dataset-vocab",
            "build-dataset-write",
            "build-dataset-finalize",
            "eval-fingerprint",
            "eval-dataset",
            "linear-probe",
            "mae",
            "video-dataset",
            "finetune-video",
            "evaluate-video",
            "detection-dataset",
            "finetune-detection",
            "evaluate-detection",
        )
    }

    @dsl.pipeline(name="from-yaml")
    def from_yaml(
        raw_corpus: str, dataset: str, eval_dataset: str, video_dataset: str, lvis_dataset: str
    ):
        settings = dict(min_count=1, max_classes=0, resample_ratio=0.0, samples_per_shard=100)
        plan = load["build-dataset-plan"](raw_corpus=raw_corpus, shard_groups=2, seed=0, **settings)
        plan.set_caching_options(False)
        with dsl.ParallelFor(plan.output) as group:
            count = load["build-dataset-count"](
                raw_corpus=raw_corpus, dataset=dataset, group=group.group,
                fingerprint=group.fingerprint,
            )  # fmt: skip
        vocab = load["build-dataset-vocab"](
            dataset=dataset, counted=dsl.Collected(count.output), seed=0, **settings
        )
        with dsl.ParallelFor(plan.output) as group:
            write = load["build-dataset-write"](
                raw_corpus=raw_corpus, dataset=dataset, group=group.group,
                fingerprint=group.fingerprint, vocab_plan=vocab.output,
            )  # fmt: skip
        finalize = load["build-dataset-finalize"](
            dataset=dataset, written=dsl.Collected(write.output)
        )
        listing = load["eval-fingerprint"](uri=eval_dataset).set_caching_options(False)
        checked = load["eval-dataset"](uri=eval_dataset, name="IN1k", fingerprint=listing.output)
        mae = load["mae"](
            dataset=finalize.outputs["pretraining"], preset="tiny", arch="", epochs=0.0,
            samples_per_epoch=0, mae_checkpoint="", backend="local", nodes=1, gpus_per_node=0,
            job_image="", shm_size="", node_selector={}, tolerations=[],
        )  # fmt: skip
        load["linear-probe"](
            pretrained=mae.outputs["model"], eval_dataset=checked.outputs["dataset"],
            eval_name="IN1k", loader_workers=0,
        )  # fmt: skip
        # The video branch: a checked video dataset, finetuning, the multi-view evaluation.
        videos = load["eval-fingerprint"](uri=video_dataset).set_caching_options(False)
        video = load["video-dataset"](uri=video_dataset, name="K400", fingerprint=videos.output)
        tuned = load["finetune-video"](
            pretrained=mae.outputs["model"], video_dataset=video.outputs["dataset"],
            variant="k400", preset="tiny", arch="", epochs=0.0, backend="local", nodes=1,
            gpus_per_node=0, job_image="", shm_size="", node_selector={}, tolerations=[],
        )  # fmt: skip
        load["evaluate-video"](
            finetuned=tuned.outputs["model"], video_dataset=video.outputs["dataset"],
            eval_name="K400", loader_workers=0,
        )  # fmt: skip
        # The detection branch: a checked LVIS dataset, ViTDet finetuning, box/mask AP and TIDE.
        listed = load["eval-fingerprint"](uri=lvis_dataset).set_caching_options(False)
        lvis = load["detection-dataset"](
            uri=lvis_dataset, name="LVIS", variant="lvis", fingerprint=listed.output
        )
        detector = load["finetune-detection"](
            pretrained=mae.outputs["model"], detection_dataset=lvis.outputs["dataset"],
            variant="lvis", preset="tiny", arch="", epochs=0.0, backend="local", nodes=1,
            gpus_per_node=0, job_image="", shm_size="", node_selector={}, tolerations=[],
        )  # fmt: skip
        load["evaluate-detection"](
            finetuned=detector.outputs["model"], detection_dataset=lvis.outputs["dataset"],
            eval_name="LVIS", loader_workers=0,
        )  # fmt: skip

    assert check(compiled(from_yaml, tmp_path)) == []


@pytest.mark.parametrize(
    "path",
    [p for p in sorted((REPO / "components").glob("*.yaml")) if p.name != "images.yaml"],
    ids=lambda p: p.stem,
)
def test_each_component_says_what_it_needs_from_its_environment(path):
    description = kfp_components.load_component_from_file(str(path)).description or ""
    assert f"KFP backend >= {MIN_BACKEND}" in description, path.name
    if path.stem in ("step-images", "transfer-rows", "lowshot-plan"):
        assert "Needs nothing from its environment" in description, path.name
        return
    assert "S3 Secret" in description and "AWS_ENDPOINT_URL" in description, path.name
    assert "components/README.md" in description, path.name  # the descriptor-URI convention
    if path.stem in ("mae", "wsp", "lit", "finetune", "finetune-video", "finetune-detection"):
        assert "launcher's\nRBAC" in description or "launcher's RBAC" in description, path.name
