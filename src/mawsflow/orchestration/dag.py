"""The MAWS DAG: dataset build → MAE → MAE→WSP → LiT and transfer → report.

    step-images            every task's image (components/images.yaml, or `image_tag` of each)
    build-dataset          a sub-pipeline: plan → count (ParallelFor over shard groups) → vocab
                           → write (ParallelFor) → finalize          ⇒ Dataset (its manifest.json)
    eval-fingerprint → eval-dataset   check the evaluation dataset   ⇒ Dataset (its classes.json)
    mae                    MAE pre-pretraining, or the given mae_checkpoint         ⇒ Model
    wsp                    MAE→WSP: the trunk starts from the MAE encoder           ⇒ Model
    random-init            with `control`: the untrained trunk of the control row   ⇒ Model
    ParallelFor over the pretrained models (transfer-rows): pick-model →
        transfer-evaluations, a sub-pipeline: lit → zeroshot; (finetune → evaluate)
        per transfer seed → seed-summary; linear-probe (a probe per seed);
        lowshot-plan → lowshot (ParallelFor over tasks of (K, seed) runs)
        → lowshot-summary                                                      ⇒ Metrics
        with `video`: video-transfer per video set, a sub-pipeline: finetune-video →
        evaluate-video                                                         ⇒ Metrics
        with `detection`: detection-transfer per detection set, a sub-pipeline:
        finetune-detection → evaluate-detection                                ⇒ Metrics
    report                 Table 22's shape (rows MAE, WSP, MAE→WSP, control; columns from
                           every evaluation, then K400, SSv2, LVIS and COCO), the TIDE table
                           (Table 21) and plots                          ⇒ Markdown, HTML

With `baselines` the same run also trains WSP from scratch, and the transfer evaluations run on
it and on MAE alone: the paper's two comparisons. With `control` they also run on the same
trunk untrained, which shows what any pretraining adds. With `video` (Kinetics-400 `k400`
and/or Something-Something-v2 `ssv2`), every pretrained model is also inflated into a video ViT,
finetuned on each video set and evaluated with the multi-view protocol: Table 22's K400 and
SSv2 columns. With `detection` (LVIS `lvis` and/or COCO `coco`), every pretrained model is
also finetuned as the trunk of a ViTDet Cascade Mask R-CNN on each detection set and evaluated
on its val split: Table 22's LVIS and COCO columns (box AP) and Table 21's TIDE errors. Each
chosen set adds run parameters `<set>_dataset` (a `prepare-eval --layout kinetics|ssv2|lvis|coco`
output; required), `<set>_name` (the report's column) and `<set>_epochs` (0: the recipe's); a
set left out has none, so a run cannot set a dataset that nothing reads. Both branches are one
table (`Branch`: the sets, the dataset check, the finetune and the evaluation) and one
sub-pipeline shape (`branch_transfer_pipeline`).

With `retrain` (scheduled retraining, pipelines/README.md) a `retrain-plan` task comes first:
it snapshots the corpus and, under a `dsl.If` on its one output (`train`, or `unchanged` when
the registry's newest model saw the same data), everything above runs on that snapshot, with
MAE and WSP warm-started where the plan says; `promotion-gate` then registers MAE→WSP and
promotes it only if it passes the gate's rules, and the report shows the decision. The report
sits inside the condition, so the retraining pipeline has no pipeline outputs.

The video and detection branches are chosen when the pipeline is compiled, like `baselines`,
not at run time with `dsl.If` on a parameter: the report collects a branch's results over the
fan-out, and a conditional output reaches a consumer only through `dsl.OneOf`, which kfp (2.17,
dsl/pipeline_channel.py) accepts only with a task in a `dsl.Else` branch (a placeholder result
for a skipped set, which the report would have to tell from a real one) and never around a
`dsl.Collected`; and the backend's driver cannot gather a conditional output over a loop
(conformance rule `collected-conditional-output`: an iteration whose condition was false
crashes the consumer's driver) nor, before 2.17.0, follow a OneOf of artifacts through any
branch but the last (`oneof-artifact-output`). A compiled pipeline without the branch holds
none of its tasks.

Training tasks are launchers: their step runs as a job on the `backend` parameter
(`pytorchjob`, `trainjob`, or `local` torchrun).

What each task asks for (CPU, memory, retries, caching, object-store access, accelerators) is
one table, RESOURCES. The sub-pipelines take the images of their tasks and the cluster names
(the S3 Secret, the object-store ConfigMap, node placement) as parameters: a sub-pipeline sees
only its own inputs. Every shape used here runs on the backend (mawsflow.orchestration.conformance
checks the compiled spec): a sub-pipeline's artifact outputs are followed through its
`artifactSelectors`, and `dsl.Collected` over a ParallelFor whose iterations hold a
sub-pipeline walks down to its container tasks (kubeflow/pipelines backend/src/v2/driver/
resolve.go, `resolveUpstreamArtifacts` and `CollectInputs`).
"""

# kfp reads the pipelines' annotations as objects, so no `from __future__ import annotations`.
import contextlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model
from kfp.dsl.graph_component import GraphComponent
from kfp.dsl.pipeline_task import PipelineTask

from mawsflow.dataset.build import DEFAULT_SAMPLES_PER_SHARD
from mawsflow.dataset.resample import PAPER_RATIO
from mawsflow.dataset.vocab import DEFAULT_MIN_COUNT, PAPER_VOCABULARY_SIZE
from mawsflow.errors import ConfigError
from mawsflow.orchestration import components as c
from mawsflow.orchestration.images import read_images
from mawsflow.orchestration.task_runtime import launch_settings

PIPELINE_NAME = "maws"
# What the object-store ConfigMap of the chart (charts/mawsflow) publishes, all of which the
# tasks read: the endpoint and region for boto3, the Secret's name and keys for the launcher.
OBJECT_STORE_KEYS = (
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "MAWSFLOW_S3_SECRET_NAME",
    "MAWSFLOW_S3_ACCESS_KEY_ID_KEY",
    "MAWSFLOW_S3_SECRET_ACCESS_KEY_KEY",
)


@dataclass(frozen=True)
class ClusterSettings:
    """Kubernetes settings fixed when the pipeline is compiled (kfp-kubernetes takes these as
    constants; the Secret's and ConfigMap's names are run parameters)."""

    # The keys of the S3 Secret; the defaults are those of the Secret Kubeflow Pipelines
    # copies into every profile namespace (mlpipeline-minio-artifact).
    access_key_id_key: str = "accesskey"
    secret_access_key_key: str = "secretkey"
    # Memory-backed /dev/shm of the evaluation pods, for DataLoader workers.
    eval_shm_size: str = "16Gi"
    # GPUs of each evaluation pod (zero-shot, eval, linear probe, low-shot). A constant: kfp
    # does not carry a parameter into the accelerator count of a task inside a ParallelFor.
    eval_gpus: int = 1


# --------------------------------------------------------------------------------------------
# What each task asks for


@dataclass(frozen=True)
class Resources:
    cpu: str
    memory: str
    retries: int
    # Never cached: the listings whose fingerprints key every other task's cache on the data.
    cached: bool = True
    # Reads or writes the object store: gets the S3 Secret and the object-store ConfigMap.
    storage: bool = True
    # Computes in its own pod: a GPU, the GPU nodes, a big /dev/shm (the evaluations). Training
    # tasks are launchers and ask for none: their job's pods have the GPUs.
    accelerator: bool = False


_LAUNCHER = Resources("2", "8Gi", retries=3)
_EVALUATION = Resources("8", "32Gi", retries=1, accelerator=True)
_TINY = Resources("100m", "256Mi", retries=2, storage=False)

# Per component (`components.IMAGE_OF` names each one's image).
RESOURCES: Mapping[str, Resources] = {
    "step-images": _TINY,
    "build-dataset-plan": Resources("500m", "1Gi", retries=2, cached=False),
    "build-dataset-count": Resources("2", "8Gi", retries=2),
    "build-dataset-vocab": Resources("2", "32Gi", retries=2),
    "build-dataset-write": Resources("2", "8Gi", retries=2),
    "build-dataset-finalize": Resources("2", "8Gi", retries=2),
    "eval-fingerprint": Resources("500m", "1Gi", retries=2, cached=False),
    "eval-dataset": Resources("500m", "1Gi", retries=2),
    "lowshot-plan": Resources("100m", "512Mi", retries=2, storage=False),
    "mae": _LAUNCHER,
    "wsp": _LAUNCHER,
    "random-init": Resources("1", "8Gi", retries=2),
    "lit": _LAUNCHER,
    "finetune": _LAUNCHER,
    "video-dataset": Resources("500m", "1Gi", retries=2),
    "finetune-video": _LAUNCHER,
    "evaluate-video": _EVALUATION,
    "detection-dataset": Resources("500m", "1Gi", retries=2),
    "finetune-detection": _LAUNCHER,
    "evaluate-detection": _EVALUATION,
    "transfer-rows": _TINY,
    "pick-model": Resources("100m", "256Mi", retries=2),
    "zeroshot": _EVALUATION,
    "evaluate": _EVALUATION,
    "seed-summary": Resources("500m", "1Gi", retries=1),
    "linear-probe": _EVALUATION,
    "lowshot": _EVALUATION,
    "lowshot-summary": Resources("500m", "1Gi", retries=1),
    "report": Resources("1", "4Gi", retries=1),
    "sweep-report": Resources("1", "4Gi", retries=1),
    # Never cached: the snapshot of the corpus is what tells one scheduled run from the next.
    "retrain-plan": Resources("500m", "1Gi", retries=2, cached=False),
    "retrain-inputs": Resources("100m", "256Mi", retries=2),
    # Never cached: it moves the registry's production pointer.
    "promotion-gate": Resources("500m", "2Gi", retries=1, cached=False),
}


@dataclass(frozen=True)
class _Placement:
    """Applies RESOURCES to the tasks of one (sub-)pipeline: the compile-time settings and
    that pipeline's own parameters naming the Secret, the ConfigMap and the GPU nodes."""

    cluster: ClusterSettings
    retries: bool  # off for a local run: no preempted pods or flaky nodes to wait out
    s3_secret: Any
    object_store_config: Any
    node_selector: Any = None
    tolerations: Any = None

    def __call__(
        self, task: PipelineTask, image: Any | None = None, name: str = ""
    ) -> PipelineTask:
        resources = RESOURCES[task.component_spec.name]
        if image is not None:
            task.set_container_image(image)
        task.set_cpu_request(resources.cpu).set_cpu_limit(resources.cpu)
        task.set_memory_request(resources.memory).set_memory_limit(resources.memory)
        if self.retries:
            task.set_retry(resources.retries, backoff_duration="60s", backoff_factor=2.0)
        task.set_caching_options(enable_caching=resources.cached)
        if name:
            task.set_display_name(name)
        if resources.storage:
            self._storage_access(task)
        if resources.accelerator:
            self._on_accelerators(task)
        return task

    def _storage_access(self, task: PipelineTask) -> None:
        kubernetes.use_secret_as_env(
            task,
            secret_name=self.s3_secret,
            secret_key_to_env={
                self.cluster.access_key_id_key: "AWS_ACCESS_KEY_ID",
                self.cluster.secret_access_key_key: "AWS_SECRET_ACCESS_KEY",
            },
        )
        kubernetes.use_config_map_as_env(
            task,
            config_map_name=self.object_store_config,
            config_map_key_to_env={key: key for key in OBJECT_STORE_KEYS},
        )

    def _on_accelerators(self, task: PipelineTask) -> None:
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(self.cluster.eval_gpus)
        kubernetes.add_node_selector_json(task, self.node_selector)
        kubernetes.add_toleration_json(task, self.tolerations)
        kubernetes.empty_dir_mount(
            task,
            volume_name="dshm",
            mount_path="/dev/shm",
            medium="Memory",
            size_limit=self.cluster.eval_shm_size,
        )


def _train(
    configure: _Placement,
    component: Callable[..., PipelineTask],
    image: Any,
    launch: Mapping[str, Any],
    name: str = "",
    **inputs: Any,
) -> PipelineTask:
    """A training task: it launches its step as a job on `launch["backend"]` in `image`,
    waits for it, then publishes the step's model (mawsflow.orchestration.task_runtime.train). The
    task's own pod runs in the same image."""
    return configure(component(job_image=image, **launch, **inputs), image, name=name)


# --------------------------------------------------------------------------------------------
# Sub-pipelines


class BuiltDataset(NamedTuple):
    pretraining: Dataset
    stats: Metrics


def build_dataset_pipeline(place: Callable[..., _Placement]) -> GraphComponent:
    """The dataset build, fanned out over shard groups. The plan lists the corpus and is never
    cached; its fingerprint (listing + settings) keys every build task's cache, so a rerun over
    changed shards or settings reuses nothing stale (mawsflow.orchestration.data_fingerprint)."""

    @dsl.pipeline(name="build-dataset", description="Build the multi-label pretraining dataset")
    def build_dataset(
        raw_corpus: str,
        dataset: str,
        shard_groups: int,
        vocab_min_count: int,
        vocab_max_classes: int,
        resample_ratio: float,
        samples_per_shard: int,
        seed: int,
        image: str,
        s3_secret: str,
        object_store_config: str,
    ) -> BuiltDataset:
        configure = place(s3_secret=s3_secret, object_store_config=object_store_config)
        # The settings go to the tasks as scalar arguments, never as one dict argument: the
        # backend passes a dict constant as it is, placeholders and all (conformance rule
        # `channel-in-constant`).
        settings = {
            "resample_ratio": resample_ratio,
            "samples_per_shard": samples_per_shard,
            "seed": seed,
        }
        plan = configure(
            c.build_dataset_plan(
                raw_corpus=raw_corpus,
                shard_groups=shard_groups,
                min_count=vocab_min_count,
                max_classes=vocab_max_classes,
                **settings,
            ),
            image,
        )

        def per_group(component: Callable[..., PipelineTask], **inputs: Any) -> PipelineTask:
            """One task per shard group of the plan, each keyed on the build's fingerprint."""
            with dsl.ParallelFor(plan.output) as group:
                return configure(
                    component(
                        raw_corpus=raw_corpus,
                        dataset=dataset,
                        group=group.group,
                        fingerprint=group.fingerprint,
                        **inputs,
                    ),
                    image,
                )

        count = per_group(c.build_dataset_count)
        vocab = configure(
            c.build_dataset_vocab(
                dataset=dataset,
                counted=dsl.Collected(count.output),
                min_count=vocab_min_count,
                max_classes=vocab_max_classes,
                **settings,
            ),
            image,
        )
        write = per_group(c.build_dataset_write, vocab_plan=vocab.output)
        finalize = configure(
            c.build_dataset_finalize(dataset=dataset, written=dsl.Collected(write.output)), image
        )
        return BuiltDataset(finalize.outputs["pretraining"], finalize.outputs["stats"])

    return build_dataset


class TransferResults(NamedTuple):
    finetune: Metrics
    lowshot: Metrics
    zeroshot: Metrics
    linear: Metrics


def transfer_evaluations_pipeline(place: Callable[..., _Placement]) -> GraphComponent:
    """Every transfer evaluation of one pretrained model: LiT then zero-shot, finetuning then
    its evaluation, a linear probe, and low-shot runs (a ParallelFor over lowshot-plan's K ×
    seeds) summarised over seeds.

    lowshot-plan runs here, once per model, rather than once outside the fan-out over the
    models: kfp.local (2.17) hands every task-output parameter that enters a ParallelFor body
    the loop's item instead (kfp/local/orchestrator/task_spec_utils.py,
    `create_parameter_loop_iteration_task_spec`), so a plan made outside would arrive as the
    row's name. It is a small task with the same inputs for every model."""

    @dsl.pipeline(name="transfer-evaluations", description="Every transfer evaluation of one model")
    def transfer_evaluations(
        model: Input[Model],
        pretraining: Input[Dataset],
        eval_data: Input[Dataset],
        eval_name: str,
        lowshot_shots: list,
        lowshot_seeds: list,
        lowshot_grouping: str,
        transfer_seeds: list,
        preset: str,
        arch: str,
        lit_epochs: float,
        finetune_epochs: float,
        samples_per_epoch: int,
        lowshot_epoch_multiplier: float,
        text_model: str,
        zeroshot_templates: str,
        lowshot_method: str,
        loader_workers: int,
        backend: str,
        nodes: int,
        gpus_per_node: int,
        shm_size: str,
        node_selector: dict,
        tolerations: list,
        lit_image: str,
        zeroshot_image: str,
        finetune_image: str,
        eval_image: str,
        linear_probe_image: str,
        lowshot_image: str,
        s3_secret: str,
        object_store_config: str,
    ) -> TransferResults:
        configure = place(
            s3_secret=s3_secret,
            object_store_config=object_store_config,
            node_selector=node_selector,
            tolerations=tolerations,
        )
        launch = launch_settings(
            backend=backend, nodes=nodes, gpus_per_node=gpus_per_node, shm_size=shm_size,
            node_selector=node_selector, tolerations=tolerations,
        )  # fmt: skip
        lit = _train(
            configure,
            c.lit,
            lit_image,
            launch,
            dataset=pretraining,
            image_model=model,
            preset=preset,
            arch=arch,
            epochs=lit_epochs,
            samples_per_epoch=samples_per_epoch,
            text_model=text_model,
        )
        zeroshot = configure(
            c.zeroshot(
                lit_model=lit.outputs["model"],
                eval_dataset=eval_data,
                eval_name=eval_name,
                templates=zeroshot_templates,
                loader_workers=loader_workers,
            ),
            zeroshot_image,
        )
        # Finetuning and its evaluation once per transfer seed, then the mean over seeds.
        with dsl.ParallelFor(transfer_seeds) as seed:
            finetune = _train(
                configure,
                c.finetune,
                finetune_image,
                launch,
                pretrained=model,
                eval_dataset=eval_data,
                preset=preset,
                arch=arch,
                epochs=finetune_epochs,
                seed=seed,
            )
            evaluation = configure(
                c.evaluate(
                    finetuned=finetune.outputs["model"],
                    eval_dataset=eval_data,
                    eval_name=eval_name,
                    loader_workers=loader_workers,
                ),
                eval_image,
            )
        finetuned = configure(
            c.seed_summary(runs=dsl.Collected(evaluation.outputs["result"])), eval_image
        )
        linear = configure(
            c.linear_probe(
                pretrained=model,
                eval_dataset=eval_data,
                eval_name=eval_name,
                seeds=transfer_seeds,
                loader_workers=loader_workers,
            ),
            linear_probe_image,
        )
        lowshot_runs = configure(
            c.lowshot_plan(
                preset=preset, shots=lowshot_shots, seeds=lowshot_seeds, grouping=lowshot_grouping
            ),
            lowshot_image,
        )
        with dsl.ParallelFor(lowshot_runs.output) as run:
            lowshot = configure(
                c.lowshot(
                    pretrained=model,
                    eval_dataset=eval_data,
                    preset=preset,
                    arch=arch,
                    shots=run.shots,
                    seeds=run.seeds,
                    epoch_multiplier=lowshot_epoch_multiplier,
                    method=lowshot_method,
                    eval_name=eval_name,
                    loader_workers=loader_workers,
                ),
                lowshot_image,
            )
        summary = configure(
            c.lowshot_summary(runs=dsl.Collected(lowshot.outputs["result"])), lowshot_image
        )
        return TransferResults(
            finetune=finetuned.outputs["result"],
            lowshot=summary.outputs["result"],
            zeroshot=zeroshot.outputs["result"],
            linear=linear.outputs["result"],
        )

    return transfer_evaluations


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: a dict key
class Branch:
    """An optional transfer branch of the DAG: on every pretrained model of the report, a
    finetune and its evaluation per chosen set, each set a column of Table 22 after the image
    evaluations. The branch is chosen when the pipeline is compiled (the module's docstring
    says why); each chosen set adds the run parameters `<set>_dataset`, `<set>_name` and
    `<set>_epochs`."""

    name: str  # its sub-pipeline is `<name>-transfer`
    what: str  # for the sub-pipeline's and the pipeline's descriptions
    # The sets: the finetune's `variant` → the report's default column name, in Table 22's
    # column order.
    sets: Mapping[str, str]
    # The components: the dataset check, the training (a launcher) and the evaluation. The
    # finetune and the evaluation take the checked dataset as `dataset_input`.
    check: Callable[..., PipelineTask]
    finetune: Callable[..., PipelineTask]
    evaluate: Callable[..., PipelineTask]
    dataset_input: str
    # The step-images outputs of the finetune's and the evaluation's images.
    finetune_image: str
    eval_image: str
    # Whether the check is told the set (`variant`): the detection check is, since the set's
    # annotation format decides how it is scored.
    check_takes_variant: bool = False

    def check_sets(self, chosen: Sequence[str]) -> tuple[str, ...]:
        """The chosen sets in Table 22's column order, each once."""
        unknown = [v for v in chosen if v not in self.sets]
        if unknown:
            raise ConfigError(
                f"{self.name} set(s) {', '.join(map(repr, unknown))}: choose among "
                f"{', '.join(self.sets)}"
            )
        return tuple(v for v in self.sets if v in chosen)


VIDEO = Branch(
    name="video",
    what="video finetuning",
    sets={"k400": "K400", "ssv2": "SSv2"},
    check=c.video_dataset,
    finetune=c.finetune_video,
    evaluate=c.evaluate_video,
    dataset_input="video_dataset",
    finetune_image="finetune_video",
    eval_image="eval_video",
)
DETECTION = Branch(
    name="detection",
    what="detection finetuning",
    sets={"lvis": "LVIS", "coco": "COCO"},
    check=c.detection_dataset,
    finetune=c.finetune_detection,
    evaluate=c.evaluate_detection,
    dataset_input="detection_dataset",
    finetune_image="finetune_detection",
    eval_image="eval_detection",
    check_takes_variant=True,
)
# In Table 22's column order: K400, SSv2, then LVIS, COCO.
BRANCHES = (VIDEO, DETECTION)
VIDEO_SETS = VIDEO.sets
DETECTION_SETS = DETECTION.sets


def check_video_sets(video: Sequence[str]) -> tuple[str, ...]:
    """The chosen video sets in Table 22's column order (K400, SSv2), each once."""
    return VIDEO.check_sets(video)


def check_detection_sets(detection: Sequence[str]) -> tuple[str, ...]:
    """The chosen detection sets in Table 22's column order (LVIS, COCO), each once."""
    return DETECTION.check_sets(detection)


def branch_transfer_pipeline(branch: Branch, place: Callable[..., _Placement]) -> GraphComponent:
    """One pretrained model on one set of `branch`: the branch's finetune from the model on the
    set's train split (the set's recipe: `variant`), then its evaluation. Its own
    sub-pipeline, like transfer-evaluations, so that its tasks get the GPU nodes' placement
    parameters."""

    @dsl.pipeline(
        name=f"{branch.name}-transfer",
        description=f"{branch.what.capitalize()} of one model on one set",
    )
    def branch_transfer(
        model: Input[Model],
        data: Input[Dataset],
        variant: str,
        eval_name: str,
        epochs: float,
        preset: str,
        arch: str,
        loader_workers: int,
        backend: str,
        nodes: int,
        gpus_per_node: int,
        shm_size: str,
        node_selector: dict,
        tolerations: list,
        finetune_image: str,
        eval_image: str,
        s3_secret: str,
        object_store_config: str,
    ) -> Metrics:
        configure = place(
            s3_secret=s3_secret,
            object_store_config=object_store_config,
            node_selector=node_selector,
            tolerations=tolerations,
        )
        launch = launch_settings(
            backend=backend, nodes=nodes, gpus_per_node=gpus_per_node, shm_size=shm_size,
            node_selector=node_selector, tolerations=tolerations,
        )  # fmt: skip
        finetuned = _train(
            configure,
            branch.finetune,
            finetune_image,
            launch,
            pretrained=model,
            variant=variant,
            preset=preset,
            arch=arch,
            epochs=epochs,
            **{branch.dataset_input: data},
        )
        evaluation = configure(
            branch.evaluate(
                finetuned=finetuned.outputs["model"],
                eval_name=eval_name,
                loader_workers=loader_workers,
                **{branch.dataset_input: data},
            ),
            eval_image,
        )
        return evaluation.outputs["result"]

    return branch_transfer


def _with_branch_parameters(
    pipeline_func: Callable[..., Any], chosen: Sequence[str], retrain: bool = False
) -> Callable[..., Any]:
    """`pipeline_func` (whose `**branch_inputs` takes the branches' parameters) with a signature
    that declares them for the `chosen` sets only (of any branch): `<set>_dataset` required,
    after the other required parameters; `<set>_name` (default: the set's column in Table 22)
    and `<set>_epochs` (0: the recipe's) at the end. kfp builds the pipeline's inputs from the
    signature and calls the function with one positional argument per parameter
    (kfp/dsl/graph_component.py). With `retrain`, scheduled retraining's: `registry` required,
    RETRAIN_PARAMETERS with their defaults, and no pipeline outputs."""
    columns = {name: column for branch in BRANCHES for name, column in branch.sets.items()}
    base = inspect.signature(pipeline_func)
    declared = [p for p in base.parameters.values() if p.kind is not p.VAR_KEYWORD]
    required = [p for p in declared if p.default is p.empty]
    optional = [p for p in declared if p.default is not p.empty]

    def parameter(name: str, annotation: type, default: Any = inspect.Parameter.empty) -> Any:
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        return inspect.Parameter(name, kind, default=default, annotation=annotation)

    datasets = [parameter(f"{s}_dataset", str) for s in chosen]
    if retrain:
        datasets.append(parameter("registry", str))
        optional += [parameter(n, t, d) for n, (t, d) in RETRAIN_PARAMETERS.items()]
    settings = [
        setting
        for s in chosen
        for setting in (
            parameter(f"{s}_name", str, columns[s]),
            parameter(f"{s}_epochs", float, 0.0),
        )
    ]
    signature = base.replace(parameters=[*required, *datasets, *optional, *settings])
    if retrain:  # the outputs are inside the data-changed condition: the pipeline has none
        signature = signature.replace(return_annotation=inspect.Signature.empty)
    names = list(signature.parameters)

    def pipeline(*args: Any) -> Any:
        return pipeline_func(**dict(zip(names, args, strict=True)))

    pipeline.__signature__ = signature  # type: ignore[attr-defined]
    pipeline.__name__ = pipeline_func.__name__
    pipeline.__doc__ = pipeline_func.__doc__
    return pipeline


# --------------------------------------------------------------------------------------------
# The pipeline


class Report(NamedTuple):
    markdown: Markdown
    html: HTML
    files: Artifact


# Scheduled retraining's run parameters beyond `registry` (required): name → (type, default).
RETRAIN_PARAMETERS: Mapping[str, tuple[type, Any]] = {
    # The last partition day the run reads ("": the corpus as it is at the run's start).
    "as_of": (str, ""),
    # "registry": reuse the production model's MAE encoder instead of training MAE again.
    "mae_warm_start": (str, "none"),
    # "production": WSP continues from the production model for `wsp_continue_samples`.
    "wsp_warm_start": (str, "none"),
    "wsp_continue_samples": (int, 0),
    # Train even when the data has not changed since the newest registered model.
    "retrain_force": (bool, False),
    # The promotion gate's rules (mawsflow.registry.gate): report columns or short names.
    "gate_headline": (list, ["finetune", "linear"]),
    "gate_max_drop": (float, 0.5),
    "gate_min_gain": (float, 0.0),
    # A Prometheus Pushgateway for the gate's decision ("": none).
    "pushgateway": (str, ""),
}


def pipeline_name(
    baselines: bool,
    control: bool = False,
    video: Sequence[str] = (),
    detection: Sequence[str] = (),
    retrain: bool = False,
) -> str:
    extras = [name for name, on in (("baselines", baselines), ("control", control)) if on]
    extras += [*check_video_sets(video), *check_detection_sets(detection)]
    if retrain:
        extras.append("retraining")
    return "-".join([PIPELINE_NAME, "with", "-and-".join(extras)] if extras else [PIPELINE_NAME])


def maws_pipeline(
    *,
    baselines: bool = False,
    control: bool = False,
    video: Sequence[str] = (),
    detection: Sequence[str] = (),
    retrain: bool = False,
    cluster: ClusterSettings | None = None,
    retries: bool = True,
) -> GraphComponent:
    """The MAWS DAG; with `baselines`, WSP from scratch and MAE alone beside MAE→WSP; with
    `control`, the same trunk with a random initialisation and no pretraining, put through the
    same transfer evaluations (the row that shows what pretraining adds); with `video` (`k400`,
    `ssv2`), each model also finetuned and evaluated on those video sets; with `detection`
    (`lvis`, `coco`), each model also finetuned as a ViTDet Cascade Mask R-CNN and evaluated on
    those detection sets. With `retrain`, scheduled retraining against a model registry:
    `retrain-plan` snapshots the corpus and decides whether there is new data to train on
    (everything else runs under that condition) and which registry models to warm-start from;
    `promotion-gate` registers the new model and promotes it only if it passes the gate's
    rules; the report shows the decision. Without `retries` a failed task fails the run at once
    (what a local run wants: there are no preempted pods or flaky nodes to wait out)."""
    cluster = cluster or ClusterSettings()
    # Each branch's chosen sets, in Table 22's column order.
    chosen = {VIDEO: check_video_sets(video), DETECTION: check_detection_sets(detection)}
    references = read_images()

    def place(**names: Any) -> _Placement:
        return _Placement(cluster, retries, **names)

    build_dataset = build_dataset_pipeline(place)
    transfer_evaluations = transfer_evaluations_pipeline(place)
    branch_transfers = {branch: branch_transfer_pipeline(branch, place) for branch in BRANCHES}
    description = (
        "MAWS: dataset build, MAE pre-pretraining, MAE→WSP pretraining, LiT and transfer "
        "evaluations, report"
        + ("; WSP-from-scratch and MAE baselines in the same run" if baselines else "")
        + ("; a control row without pretraining" if control else "")
        + "".join(
            f"; {branch.what} on {' and '.join(branch.sets[s] for s in sets)}"
            for branch, sets in chosen.items()
            if sets
        )
        + ("; scheduled retraining with a model registry and a promotion gate" if retrain else "")
    )

    def maws(
        raw_corpus: str,
        dataset: str,
        eval_dataset: str,
        eval_name: str,
        preset: str = "",
        arch: str = "",
        mae_epochs: float = 0.0,
        wsp_epochs: float = 0.0,
        lit_epochs: float = 0.0,
        finetune_epochs: float = 0.0,
        lowshot_epoch_multiplier: float = 0.0,
        samples_per_epoch: int = 0,
        mae_checkpoint: str = "",
        text_model: str = "",
        # Appendix B: CLIP's prompt templates (its Food-101 set for Food-101, its ImageNet set
        # otherwise), as the zeroshot step's own default.
        zeroshot_templates: str = "auto",
        lowshot_method: str = "vpt",
        lowshot_shots: list = [],  # noqa: B006 (empty: the recipe's K ∈ {1, 5, 10})
        lowshot_seeds: list = [],  # noqa: B006 (empty: the recipe's five seeds)
        # "run": a task per (K, seed), spread over the cluster; "model": one task per model.
        lowshot_grouping: str = "run",
        # Finetuning and the linear probe run once per seed; the report shows mean ± std.
        transfer_seeds: list = [0],  # noqa: B006
        shard_groups: int = 8,
        vocab_min_count: int = DEFAULT_MIN_COUNT,
        vocab_max_classes: int = PAPER_VOCABULARY_SIZE,
        resample_ratio: float = PAPER_RATIO,
        samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD,
        seed: int = 0,
        backend: str = "pytorchjob",
        nodes: int = 1,
        gpus_per_node: int = 8,
        loader_workers: int = 8,
        shm_size: str = "64Gi",
        node_selector: dict = {},  # noqa: B006 (kfp reads defaults from the signature)
        tolerations: list = [],  # noqa: B006
        image_tag: str = "",
        s3_secret: str = "mlpipeline-minio-artifact",
        object_store_config: str = "mawsflow-object-store",
        # The video and detection branches' `<set>_dataset`, `<set>_name`, `<set>_epochs` (only
        # the chosen sets) and, with `retrain`, `registry` and RETRAIN_PARAMETERS.
        **branch_inputs: Any,
    ) -> Report:
        names = {"s3_secret": s3_secret, "object_store_config": object_store_config}
        configure = place(**names)
        # Runs in components/images.yaml's launch image and tells every other task its image.
        images = configure(c.step_images(references=references, image_tag=image_tag)).outputs
        retraining = (
            {name: branch_inputs[name] for name in ("registry", *RETRAIN_PARAMETERS)}
            if retrain
            else {}
        )
        plan: PipelineTask | None = None
        condition: Any = contextlib.nullcontext()
        corpus, dataset_folder, mae_source = raw_corpus, dataset, mae_checkpoint
        if retrain:
            plan = configure(
                c.retrain_plan(
                    raw_corpus=raw_corpus,
                    registry=retraining["registry"],
                    as_of=retraining["as_of"],
                    mae_warm_start=retraining["mae_warm_start"],
                    wsp_warm_start=retraining["wsp_warm_start"],
                    force=retraining["retrain_force"],
                ),
                images["build_dataset"],
            )
            # With nothing new to learn from, the run ends here, having trained nothing.
            condition = dsl.If(plan.outputs["Output"] == "train", name="data-changed")
        with condition:
            if plan is not None:
                # The dataset build reads the plan's snapshot of the corpus into a folder of
                # its own; MAE and WSP start where the plan says.
                inputs = configure(
                    c.retrain_inputs(plan=plan.outputs["plan"], dataset=dataset),
                    images["build_dataset"],
                ).outputs
                corpus, dataset_folder = inputs["corpus"], inputs["dataset"]
                mae_source = inputs["mae_checkpoint"]
            launch = launch_settings(
                backend=backend, nodes=nodes, gpus_per_node=gpus_per_node, shm_size=shm_size,
                node_selector=node_selector, tolerations=tolerations,
            )  # fmt: skip

            pretraining = build_dataset(
                raw_corpus=corpus,
                dataset=dataset_folder,
                shard_groups=shard_groups,
                vocab_min_count=vocab_min_count,
                vocab_max_classes=vocab_max_classes,
                resample_ratio=resample_ratio,
                samples_per_shard=samples_per_shard,
                seed=seed,
                image=images["build_dataset"],
                **names,
            ).outputs["pretraining"]
            # The evaluation data is listed first (never cached): its fingerprint keys the check's
            # cache, and through its output every evaluation's.
            listing = configure(c.eval_fingerprint(uri=eval_dataset), images["prepare_eval"])
            eval_data = configure(
                c.eval_dataset(uri=eval_dataset, name=eval_name, fingerprint=listing.output),
                images["prepare_eval"],
            ).outputs["dataset"]

            def train_wsp(name: str, **init: Any) -> PipelineTask:
                """MAE→WSP given `mae_model=`, else WSP from scratch."""
                return _train(
                    configure,
                    c.wsp,
                    images["wsp"],
                    launch,
                    name=name,
                    dataset=pretraining,
                    preset=preset,
                    arch=arch,
                    epochs=wsp_epochs,
                    samples_per_epoch=samples_per_epoch,
                    **init,
                )

            mae = _train(
                configure,
                c.mae,
                images["mae"],
                launch,
                dataset=pretraining,
                preset=preset,
                arch=arch,
                epochs=mae_epochs,
                samples_per_epoch=samples_per_epoch,
                mae_checkpoint=mae_source,
            )
            # A retraining run's WSP may continue from the production model instead.
            warm_start = (
                {
                    "init_model": inputs["wsp_init"],
                    "continue_samples": retraining["wsp_continue_samples"],
                }
                if plan is not None
                else {}
            )
            maws_wsp = train_wsp("wsp (MAE→WSP)", mae_model=mae.outputs["model"], **warm_start)
            pretrained = {
                "mae_model": mae.outputs["model"],
                "maws_model": maws_wsp.outputs["model"],
            }
            if baselines:
                pretrained["wsp_model"] = train_wsp("wsp (WSP from scratch)").outputs["model"]
            if control:
                pretrained["control_model"] = configure(
                    c.random_init(preset=preset, arch=arch, seed=seed), images["wsp"]
                ).outputs["model"]
            rows = configure(
                c.transfer_rows(
                    baselines=baselines,
                    control=control,
                    # A retraining run evaluates MAE alone only as a baseline: its encoder is
                    # often the registry's, unchanged since it was last evaluated.
                    mae=baselines or not retrain,
                ),
                images["report"],
            )
            # Each set of a branch checked once, keyed (like the evaluation data) on its listing.
            branch_data = {}
            for branch, sets in chosen.items():
                for variant in sets:
                    uri = branch_inputs[f"{variant}_dataset"]
                    set_listing = configure(
                        c.eval_fingerprint(uri=uri),
                        images["prepare_eval"],
                        name=f"{variant}-fingerprint",
                    )
                    told = {"variant": variant} if branch.check_takes_variant else {}
                    check = branch.check(
                        uri=uri,
                        name=branch_inputs[f"{variant}_name"],
                        fingerprint=set_listing.output,
                        **told,
                    )
                    checked = configure(check, images["prepare_eval"], name=f"{variant}-dataset")
                    branch_data[variant] = (branch, checked.outputs["dataset"])

            # Every transfer evaluation of every pretrained model: a fan-out over the report's rows.
            with dsl.ParallelFor(rows.output) as row:
                # The row's model as a container task's output (an importer here would break the
                # backend: mawsflow.orchestration.conformance).
                picked = configure(c.pick_model(row=row, **pretrained), images["report"])
                model = picked.outputs["model"]
                results = transfer_evaluations(
                    model=model,
                    pretraining=pretraining,
                    eval_data=eval_data,
                    eval_name=eval_name,
                    lowshot_shots=lowshot_shots,
                    lowshot_seeds=lowshot_seeds,
                    lowshot_grouping=lowshot_grouping,
                    transfer_seeds=transfer_seeds,
                    preset=preset,
                    arch=arch,
                    lit_epochs=lit_epochs,
                    finetune_epochs=finetune_epochs,
                    samples_per_epoch=samples_per_epoch,
                    lowshot_epoch_multiplier=lowshot_epoch_multiplier,
                    text_model=text_model,
                    zeroshot_templates=zeroshot_templates,
                    lowshot_method=lowshot_method,
                    loader_workers=loader_workers,
                    **launch,
                    **{f"{step}_image": images[step] for step in _TRANSFER_IMAGES},
                    **names,
                )
                # The branches: per chosen set, its finetune and evaluation of the row's model.
                branch_results = {
                    variant: branch_transfers[branch](
                        model=model,
                        data=data,
                        variant=variant,
                        eval_name=branch_inputs[f"{variant}_name"],
                        epochs=branch_inputs[f"{variant}_epochs"],
                        preset=preset,
                        arch=arch,
                        loader_workers=loader_workers,
                        finetune_image=images[branch.finetune_image],
                        eval_image=images[branch.eval_image],
                        **launch,
                        **names,
                    ).output
                    for variant, (branch, data) in branch_data.items()
                }

            def collected() -> dict[str, dsl.Collected]:
                """The evaluations' results over the rows, afresh for each consumer: kfp's compiler
                rewrites a Collected in place for the first task that takes it
                (compiler_utils.get_outputs_for_all_groups), so two tasks cannot share one."""
                return {
                    kind: dsl.Collected(results.outputs[kind])
                    for kind in ("finetune", "lowshot", "zeroshot", "linear")
                }

            gate = {}
            if plan is not None:
                # The new model (MAE→WSP) against production, on the run's evaluations.
                gate["gate"] = configure(
                    c.promotion_gate(
                        registry=retraining["registry"],
                        plan=plan.outputs["plan"],
                        candidate=maws_wsp.outputs["model"],
                        mae_model=mae.outputs["model"],
                        eval_data=eval_data,
                        eval_name=eval_name,
                        headline=retraining["gate_headline"],
                        max_drop=retraining["gate_max_drop"],
                        min_gain=retraining["gate_min_gain"],
                        references=references,
                        image_tag=image_tag,
                        pushgateway=retraining["pushgateway"],
                        **collected(),
                    ),
                    images["report"],
                ).outputs["decision"]
            report = configure(
                c.report(
                    **collected(),
                    pretrained=dsl.Collected(model),
                    # Table 22's K400, SSv2, LVIS and COCO columns, after the image evaluations'.
                    **{
                        variant: dsl.Collected(result) for variant, result in branch_results.items()
                    },
                    **gate,
                ),
                images["report"],
            )
        if retrain:  # the report is inside the condition: the pipeline has no outputs
            return None
        return Report(report.outputs["markdown"], report.outputs["html"], report.outputs["files"])

    name = pipeline_name(baselines, control, video, detection, retrain)
    return dsl.pipeline(name=name, description=description)(
        _with_branch_parameters(maws, [s for sets in chosen.values() for s in sets], retrain)
    )


# The step-images outputs the transfer evaluations take, as `<step>_image`.
_TRANSFER_IMAGES = ("lit", "zeroshot", "finetune", "eval", "linear_probe", "lowshot")
