#!/usr/bin/env python3
"""The MAWS pipeline on Kubeflow: dataset build → MAE → MAE→WSP → LiT and transfer → report.

    step-images    every task's image (components/images.yaml, or `image_tag` of each)
    build-dataset  plan → count (ParallelFor over shard groups) → vocab → write (ParallelFor)
                   → finalize                                 ⇒ Dataset (its manifest.json)
    eval-dataset   check the evaluation dataset               ⇒ Dataset (its classes.json)
    mae            MAE pre-pretraining, or the given mae_checkpoint        ⇒ Model
    wsp            MAE→WSP: the trunk starts from the MAE encoder          ⇒ Model
    ParallelFor over the pretrained models (transfer-rows):
                   lit → zeroshot; finetune → eval; linear-probe;
                   lowshot (ParallelFor over K × seeds) → lowshot-summary  ⇒ Metrics
    report         Table 22's shape (rows MAE, WSP, MAE→WSP) and plots     ⇒ Markdown, HTML

With `--baselines` the same run also trains WSP from scratch, and the transfer evaluations run
on it and on MAE alone: the paper's two comparisons. Training steps run under the launcher on
the `backend` parameter (`pytorchjob`, `trainjob`, or `local` torchrun).

    python pipelines/maws.py --compile [PATH]                     write the pipeline YAML
    python pipelines/maws.py --submit --host URL --param …        upload a version and run it
    python pipelines/maws.py --schedule '0 0 3 * * 0' --host URL  a recurring run of it
    python pipelines/maws.py --local --param …                    run every task here
    python pipelines/maws.py --local --containers --param …       each in its step's image

Parameters are given as `--param name=value` (see `--list-params`); `--local` fills in the
local backend, this machine's GPU count and a dataset folder under `--work-dir`. See
pipelines/README.md.
"""

# kfp reads the pipeline's annotations as objects, so no `from __future__ import annotations`.
import argparse
import datetime
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from kfp import compiler, dsl, kubernetes
from kfp.dsl import HTML, Artifact, Markdown
from kfp.dsl.graph_component import GraphComponent
from kfp.dsl.pipeline_task import PipelineTask

from mawsflow import __version__
from mawsflow.dataset.build import DEFAULT_SAMPLES_PER_SHARD
from mawsflow.dataset.resample import PAPER_RATIO
from mawsflow.dataset.vocab import DEFAULT_MIN_COUNT, PAPER_VOCABULARY_SIZE
from mawsflow.launch.spec import BACKENDS
from mawsflow.pipeline import components as c
from mawsflow.pipeline.conformance import ConformanceError, pipeline_spec, require_conformance
from mawsflow.pipeline.images import ImageError, read_images, retag
from mawsflow.pipeline.local_run import LocalReport, LocalRunFailed, run_locally
from mawsflow.pipeline.parameters import ParameterError, declared_parameters, parse_arguments
from mawsflow.pipeline.submission import (
    RunSettings,
    SubmissionError,
    Target,
    check_cron,
    check_host,
    connect,
    schedule,
    start_run,
    upload,
)
from mawsflow.recipes import PRESETS, architectures
from mawsflow.steps.report import REPORT_FILES

PIPELINE_NAME = "maws"
LOWSHOT_METHODS = ("vpt", "logreg")
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


# What each evaluation task asks for.
EVALUATION = {"cpu": "8", "memory": "32Gi", "retry": 1}


class Report(NamedTuple):
    markdown: Markdown
    html: HTML
    files: Artifact


def pipeline_name(baselines: bool) -> str:
    return f"{PIPELINE_NAME}-with-baselines" if baselines else PIPELINE_NAME


def maws_pipeline(
    *, baselines: bool = False, cluster: ClusterSettings | None = None, retries: bool = True
) -> GraphComponent:
    """The MAWS DAG; with `baselines`, WSP from scratch and MAE alone beside MAE→WSP. Without
    `retries` a failed task fails the run at once (what a local run wants: there are no
    preempted pods or flaky nodes to wait out)."""
    cluster = cluster or ClusterSettings()
    references = read_images()
    description = (
        "MAWS: dataset build, MAE pre-pretraining, MAE→WSP pretraining, LiT and transfer "
        "evaluations, report"
        + ("; WSP-from-scratch and MAE baselines in the same run" if baselines else "")
    )

    @dsl.pipeline(name=pipeline_name(baselines), description=description)
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
        zeroshot_templates: str = "objects",
        lowshot_method: str = "vpt",
        lowshot_shots: list = [],  # noqa: B006 (empty: the recipe's K ∈ {1, 5, 10})
        lowshot_seeds: list = [],  # noqa: B006 (empty: the recipe's five seeds)
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
    ) -> Report:
        def storage_access(task: PipelineTask) -> PipelineTask:
            kubernetes.use_secret_as_env(
                task,
                secret_name=s3_secret,
                secret_key_to_env={
                    cluster.access_key_id_key: "AWS_ACCESS_KEY_ID",
                    cluster.secret_access_key_key: "AWS_SECRET_ACCESS_KEY",
                },
            )
            kubernetes.use_config_map_as_env(
                task,
                config_map_name=object_store_config,
                config_map_key_to_env={key: key for key in OBJECT_STORE_KEYS},
            )
            return task

        def settings(
            task: PipelineTask,
            image: Any | None,
            *,
            cpu: str,
            memory: str,
            retry: int,
            name: str = "",
            storage: bool = True,
            cache: bool = True,
        ) -> PipelineTask:
            if image is not None:
                task.set_container_image(image)
            task.set_cpu_request(cpu).set_cpu_limit(cpu)
            task.set_memory_request(memory).set_memory_limit(memory)
            if retries:
                task.set_retry(retry, backoff_duration="60s", backoff_factor=2.0)
            task.set_caching_options(enable_caching=cache)
            if name:
                task.set_display_name(name)
            return storage_access(task) if storage else task

        def on_accelerators(task: PipelineTask) -> PipelineTask:
            """Evaluations compute in their own pod: a GPU, the GPU nodes, a big /dev/shm."""
            task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(cluster.eval_gpus)
            kubernetes.add_node_selector_json(task, node_selector)
            kubernetes.add_toleration_json(task, tolerations)
            kubernetes.empty_dir_mount(
                task,
                volume_name="dshm",
                mount_path="/dev/shm",
                medium="Memory",
                size_limit=cluster.eval_shm_size,
            )
            return task

        # Runs in components/images.yaml's launch image and tells every other task its image.
        images = settings(
            c.step_images(references=references, image_tag=image_tag),
            None,
            cpu="100m",
            memory="256Mi",
            retry=2,
            storage=False,
        ).outputs
        launch = {
            "backend": backend,
            "nodes": nodes,
            "gpus_per_node": gpus_per_node,
            "shm_size": shm_size,
            "node_selector": node_selector,
            "tolerations": tolerations,
        }

        # Dataset build, fanned out over shard groups. The plan lists the corpus and is never
        # cached; its fingerprint (listing + settings) keys every build task's cache, so a
        # rerun over changed shards or settings reuses nothing stale.
        plan = settings(
            c.build_dataset_plan(
                raw_corpus=raw_corpus,
                shard_groups=shard_groups,
                # Scalars, not a dict of them: the backend passes a dict constant as it is,
                # placeholders and all (conformance rule `channel-in-constant`).
                min_count=vocab_min_count,
                max_classes=vocab_max_classes,
                resample_ratio=resample_ratio,
                samples_per_shard=samples_per_shard,
                seed=seed,
            ),
            images["build_dataset"],
            cpu="500m",
            memory="1Gi",
            retry=2,
            cache=False,
        )
        with dsl.ParallelFor(plan.output) as group:
            count = settings(
                c.build_dataset_count(
                    raw_corpus=raw_corpus,
                    dataset=dataset,
                    group=group.group,
                    fingerprint=group.fingerprint,
                ),
                images["build_dataset"],
                cpu="2",
                memory="8Gi",
                retry=2,
            )
        vocab = settings(
            c.build_dataset_vocab(
                dataset=dataset,
                counted=dsl.Collected(count.output),
                min_count=vocab_min_count,
                max_classes=vocab_max_classes,
                resample_ratio=resample_ratio,
                samples_per_shard=samples_per_shard,
                seed=seed,
            ),
            images["build_dataset"],
            cpu="2",
            memory="32Gi",
            retry=2,
        )
        with dsl.ParallelFor(plan.output) as group:
            write = settings(
                c.build_dataset_write(
                    raw_corpus=raw_corpus,
                    dataset=dataset,
                    group=group.group,
                    fingerprint=group.fingerprint,
                    vocab_plan=vocab.output,
                ),
                images["build_dataset"],
                cpu="2",
                memory="8Gi",
                retry=2,
            )
        finalize = settings(
            c.build_dataset_finalize(
                dataset=dataset,
                written=dsl.Collected(write.output),
            ),
            images["build_dataset"],
            cpu="2",
            memory="8Gi",
            retry=2,
        )
        pretraining_data = finalize.outputs["pretraining"]
        eval_listing = settings(
            c.eval_fingerprint(uri=eval_dataset),
            images["prepare_eval"],
            cpu="500m",
            memory="1Gi",
            retry=2,
            cache=False,
        )
        eval_data = settings(
            c.eval_dataset(uri=eval_dataset, name=eval_name, fingerprint=eval_listing.output),
            images["prepare_eval"],
            cpu="500m",
            memory="1Gi",
            retry=2,
        ).outputs["dataset"]
        lowshot_runs = settings(
            c.lowshot_plan(preset=preset, shots=lowshot_shots, seeds=lowshot_seeds),
            images["lowshot"],
            cpu="100m",
            memory="512Mi",
            retry=2,
            storage=False,
        )

        def train_wsp(name: str, **init: Any) -> PipelineTask:
            """MAE→WSP given `mae_model=`, else WSP from scratch."""
            task = c.wsp(
                dataset=pretraining_data,
                preset=preset,
                arch=arch,
                epochs=wsp_epochs,
                samples_per_epoch=samples_per_epoch,
                job_image=images["wsp"],
                **init,
                **launch,
            )
            return settings(task, images["wsp"], cpu="2", memory="8Gi", retry=3, name=name)

        mae = c.mae(
            dataset=pretraining_data,
            preset=preset,
            arch=arch,
            epochs=mae_epochs,
            samples_per_epoch=samples_per_epoch,
            mae_checkpoint=mae_checkpoint,
            job_image=images["mae"],
            **launch,
        )
        settings(mae, images["mae"], cpu="2", memory="8Gi", retry=3)
        maws_wsp = train_wsp("wsp (MAE→WSP)", mae_model=mae.outputs["model"])
        pretrained = {"mae_model": mae.outputs["model"], "maws_model": maws_wsp.outputs["model"]}
        if baselines:
            pretrained["wsp_model"] = train_wsp("wsp (WSP from scratch)").outputs["model"]
        rows = settings(
            c.transfer_rows(baselines=baselines), images["report"], cpu="100m", memory="256Mi",
            retry=2, storage=False,
        )  # fmt: skip

        # Every transfer evaluation of every pretrained model: a fan-out over the report's rows.
        with dsl.ParallelFor(rows.output) as row:
            # The row's model as a container task's output (an importer here would break the
            # backend: mawsflow.pipeline.conformance).
            picked = settings(
                c.pick_model(row=row, **pretrained),
                images["report"],
                cpu="100m",
                memory="256Mi",
                retry=2,
            )
            model = picked.outputs["model"]
            lit = c.lit(
                dataset=pretraining_data,
                image_model=model,
                preset=preset,
                arch=arch,
                epochs=lit_epochs,
                samples_per_epoch=samples_per_epoch,
                text_model=text_model,
                job_image=images["lit"],
                **launch,
            )
            settings(lit, images["lit"], cpu="2", memory="8Gi", retry=3)
            zeroshot = c.zeroshot(
                lit_model=lit.outputs["model"],
                eval_dataset=eval_data,
                eval_name=eval_name,
                templates=zeroshot_templates,
                loader_workers=loader_workers,
            )
            finetune = c.finetune(
                pretrained=model,
                eval_dataset=eval_data,
                preset=preset,
                arch=arch,
                epochs=finetune_epochs,
                job_image=images["finetune"],
                **launch,
            )
            settings(finetune, images["finetune"], cpu="2", memory="8Gi", retry=3)
            evaluation = c.evaluate(
                finetuned=finetune.outputs["model"],
                eval_dataset=eval_data,
                eval_name=eval_name,
                loader_workers=loader_workers,
            )
            linear = c.linear_probe(
                pretrained=model,
                eval_dataset=eval_data,
                eval_name=eval_name,
                loader_workers=loader_workers,
            )
            with dsl.ParallelFor(lowshot_runs.output) as run:
                lowshot = c.lowshot(
                    pretrained=model,
                    eval_dataset=eval_data,
                    preset=preset,
                    arch=arch,
                    shots=run.shots,
                    seed=run.seed,
                    epoch_multiplier=lowshot_epoch_multiplier,
                    method=lowshot_method,
                    eval_name=eval_name,
                    loader_workers=loader_workers,
                )
                on_accelerators(settings(lowshot, images["lowshot"], **EVALUATION))
            summary = settings(
                c.lowshot_summary(runs=dsl.Collected(lowshot.outputs["result"])),
                images["lowshot"],
                cpu="500m",
                memory="1Gi",
                retry=1,
            )
            on_accelerators(settings(zeroshot, images["zeroshot"], **EVALUATION))
            on_accelerators(settings(evaluation, images["eval"], **EVALUATION))
            on_accelerators(settings(linear, images["linear_probe"], **EVALUATION))

        report = c.report(
            finetune=dsl.Collected(evaluation.outputs["result"]),
            lowshot=dsl.Collected(summary.outputs["result"]),
            zeroshot=dsl.Collected(zeroshot.outputs["result"]),
            linear=dsl.Collected(linear.outputs["result"]),
            pretrained=dsl.Collected(model),
        )
        settings(report, images["report"], cpu="1", memory="4Gi", retry=1)
        return Report(report.outputs["markdown"], report.outputs["html"], report.outputs["files"])

    return maws


# --------------------------------------------------------------------------------------------
# Command line


def check_arguments(arguments: Mapping[str, Any]) -> None:
    """Reject values no task could run with, before anything is uploaded or started."""

    def one_of(name: str, choices: Sequence[str]) -> None:
        if name in arguments and arguments[name] not in choices:
            raise ParameterError(
                f"{name}={arguments[name]!r}: choose one of {', '.join(map(repr, choices))}"
            )

    one_of("backend", BACKENDS)
    one_of("preset", ("", *PRESETS))
    one_of("lowshot_method", LOWSHOT_METHODS)
    if arguments.get("arch"):
        one_of("arch", list(architectures()))
    for name in ("raw_corpus", "dataset", "eval_dataset", "eval_name"):
        if name in arguments and not str(arguments[name]).strip():
            raise ParameterError(f"{name}: empty")
    for name, minimum in (("shard_groups", 1), ("nodes", 1), ("samples_per_shard", 1)):
        if name in arguments and arguments[name] < minimum:
            raise ParameterError(f"{name}={arguments[name]}: must be at least {minimum}")
    for name in ("gpus_per_node", "loader_workers", "vocab_max_classes"):
        if name in arguments and arguments[name] < 0:
            raise ParameterError(f"{name}={arguments[name]}: must not be negative")
    if arguments.get("backend") == "local" and arguments.get("nodes", 1) != 1:
        raise ParameterError("nodes: the local backend runs on one machine; set nodes=1")
    if arguments.get("image_tag"):
        try:
            retag("registry/image", arguments["image_tag"])
        except ImageError as exc:
            raise ParameterError(f"image_tag: {exc}") from None


def local_defaults(work_dir: Path) -> dict[str, Any]:
    """What `--local` fills in unless given: the local launcher on this machine's GPUs and a
    dataset folder in the work dir."""
    import torch  # here: only a local run needs it, and it takes seconds to import

    return {
        "backend": "local",
        "nodes": 1,
        "gpus_per_node": torch.cuda.device_count(),
        "dataset": str(work_dir.resolve() / "dataset"),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipelines/maws.py",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_argument_group("what to do (one or more)")
    actions.add_argument(
        "--compile",
        nargs="?",
        const="",
        metavar="PATH",
        help="write the pipeline YAML (default: ./<pipeline name>.yaml)",
    )
    actions.add_argument(
        "--submit", action="store_true", help="upload a pipeline version and start a run"
    )
    actions.add_argument(
        "--schedule",
        metavar="CRON",
        help="upload a pipeline version and create a recurring run (6-field cron: second "
        "minute hour day-of-month month day-of-week)",
    )
    actions.add_argument("--local", action="store_true", help="run every task on this machine")
    actions.add_argument(
        "--list-params", action="store_true", help="print the pipeline's parameters"
    )
    parser.add_argument(
        "--baselines",
        action="store_true",
        help="also train WSP from scratch and evaluate it and MAE alone (the paper's comparisons)",
    )
    parser.add_argument(
        "--param",
        dest="params",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a pipeline parameter (repeatable), e.g. --param preset=demo",
    )
    server = parser.add_argument_group("Kubeflow Pipelines server (--submit, --schedule)")
    server.add_argument("--host", help="the API's URL, e.g. http://ml-pipeline.kubeflow:8888")
    server.add_argument("--namespace", help="the Kubeflow profile namespace")
    server.add_argument("--experiment", default="mawsflow", help="experiment of the runs")
    server.add_argument("--pipeline-name", help="default: the pipeline's own name")
    server.add_argument("--version-name", help="default: <package version>-<UTC time>")
    server.add_argument("--run-name", help="default: <pipeline name> <UTC time>")
    server.add_argument("--service-account", help="ServiceAccount the run's pods use")
    server.add_argument(
        "--catchup",
        action="store_true",
        help="let a recurring run catch up on schedules missed while paused (default: no)",
    )
    cluster = parser.add_argument_group("Kubernetes (fixed at compile time)")
    defaults = ClusterSettings()
    cluster.add_argument(
        "--s3-access-key-id-key",
        default=defaults.access_key_id_key,
        help="key of the access key ID in the S3 Secret (default: %(default)s)",
    )
    cluster.add_argument(
        "--s3-secret-access-key-key",
        default=defaults.secret_access_key_key,
        help="key of the secret access key in the S3 Secret (default: %(default)s)",
    )
    cluster.add_argument(
        "--eval-shm-size",
        default=defaults.eval_shm_size,
        help="/dev/shm of the evaluation pods (default: %(default)s)",
    )
    cluster.add_argument(
        "--eval-gpus",
        type=int,
        default=defaults.eval_gpus,
        help="GPUs of each evaluation pod (default: %(default)s)",
    )
    parser.add_argument(
        "--containers",
        action="store_true",
        help="--local: run every task in its own step image on the Docker engine at "
        "DOCKER_HOST (images/build.py builds them), with host networking",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path("demo-output"),
        help="--local: where the run's artifacts and the dataset go (default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.compile is None and not (
        args.submit or args.schedule or args.local or args.list_params
    ):
        parser.error(
            "nothing to do: give --compile, --submit, --schedule, --local or --list-params"
        )
    if args.containers and not args.local:
        parser.error("--containers runs the --local run in containers: give --local too")
    if (args.submit or args.schedule) and not args.host:
        parser.error("--submit and --schedule need --host, the Kubeflow Pipelines API's URL")
    cluster = ClusterSettings(
        args.s3_access_key_id_key, args.s3_secret_access_key_key, args.eval_shm_size, args.eval_gpus
    )
    try:
        pipeline = maws_pipeline(baselines=args.baselines, cluster=cluster, retries=not args.local)
    except ImageError as exc:
        return _fail(str(exc))
    name = pipeline_name(args.baselines)
    if args.list_params:
        for p in declared_parameters(pipeline.component_spec).values():
            print(f"{p.name}: {p.type}" + (" (required)" if p.required else f" = {p.default!r}"))
        return 0
    try:
        if args.schedule:
            check_cron(args.schedule)
        if args.host:
            check_host(args.host)
        defaults = local_defaults(args.work_dir) if args.local else {}
        runs = bool(args.submit or args.schedule or args.local)
        arguments = parse_arguments(pipeline.component_spec, args.params, defaults, complete=runs)
        check_arguments(arguments)
        if args.compile is not None:
            path = args.compile or f"{name}.yaml"
            compile_checked(pipeline, path)
            print(f"pipeline written to {path} (passes the backend conformance rules)")
        if args.submit or args.schedule:
            _submit(args, pipeline, name, arguments)
        if args.local:
            report = (
                _run_in_containers(pipeline, arguments, args.work_dir)
                if args.containers
                else run_locally(pipeline, arguments, args.work_dir)
            )
            print(f"\n{report.table}\n")
            print("report: " + ", ".join(str(report.folder / name) for name in REPORT_FILES))
    except (ParameterError, SubmissionError, LocalRunFailed, ConformanceError) as exc:
        return _fail(str(exc))
    return 0


def _run_in_containers(
    pipeline: GraphComponent, arguments: Mapping[str, Any], work_dir: Path
) -> LocalReport:
    """`--local --containers`: the local folders the run reads or writes (local data URIs and
    the work dir) are mounted into the containers at their own paths."""
    from mawsflow.pipeline.container_run import ContainerRunError, run_in_containers

    work_dir.mkdir(parents=True, exist_ok=True)
    folders = {work_dir.resolve()}
    for name in ("raw_corpus", "dataset", "eval_dataset"):
        value = str(arguments.get(name, ""))
        if value and "://" not in value:
            folder = Path(value).resolve()
            folder.mkdir(parents=True, exist_ok=True)  # the dataset the build writes
            folders.add(folder)
    mounts = [f for f in folders if not any(p in folders for p in f.parents)]
    try:
        return run_in_containers(pipeline, arguments, work_dir, mounts=sorted(mounts))
    except ContainerRunError as exc:
        raise LocalRunFailed(str(exc)) from None


def compile_checked(pipeline: GraphComponent, path: str) -> None:
    """Compile to `path` only if the result passes the backend conformance rules: nothing the
    Kubeflow Pipelines backend would reject is written, uploaded or scheduled."""
    folder = Path(path).resolve().parent
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=folder, delete=False) as f:
        staging = Path(f.name)
    try:
        compiler.Compiler().compile(pipeline, str(staging))
        require_conformance(pipeline_spec(str(staging)))
        staging.replace(path)
    finally:
        staging.unlink(missing_ok=True)


def _submit(args: argparse.Namespace, pipeline: GraphComponent, name: str, arguments: dict) -> None:
    stamp = datetime.datetime.now(datetime.UTC)
    target = Target(
        host=args.host,
        pipeline_name=args.pipeline_name or name,
        version_name=args.version_name or f"{__version__}-{stamp:%Y%m%d-%H%M%S}",
        experiment=args.experiment,
        namespace=args.namespace,
        description=pipeline.description or "",
    )
    run = RunSettings(
        name=args.run_name or f"{target.pipeline_name} {stamp:%Y-%m-%d %H:%M:%S}",
        arguments=arguments,
        service_account=args.service_account,
    )
    client = connect(target)
    with tempfile.TemporaryDirectory(prefix="mawsflow-pipeline-") as folder:
        package = Path(folder) / f"{name}.yaml"
        compile_checked(pipeline, str(package))
        uploaded = upload(client, target, str(package))
    print(
        f"uploaded pipeline {target.pipeline_name!r} version {target.version_name!r} "
        f"({uploaded.version_id})"
    )
    if args.submit:
        run_id = start_run(client, target, uploaded, run)
        print(f"started run {run.name!r} ({run_id}) in experiment {target.experiment!r}")
    if args.schedule:
        recurring = schedule(client, target, uploaded, run, args.schedule, catch_up=args.catchup)
        print(
            f"created recurring run {run.name!r} ({recurring}): cron {args.schedule!r}, "
            f"one run at a time, {'with' if args.catchup else 'no'} catch-up"
        )


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
