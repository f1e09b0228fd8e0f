"""The MAWS pipeline's command line (`pipelines/maws.py`): compile, submit, schedule, run here.

    python pipelines/maws.py --compile [PATH]                     write the pipeline YAML
    python pipelines/maws.py --submit --host URL --param …        upload a version and run it
    python pipelines/maws.py --schedule '0 0 3 * * 0' --host URL  a recurring run of it
    python pipelines/maws.py --local --param …                    run every task here
    python pipelines/maws.py --local --containers --param …       each in its step's image
    python pipelines/maws.py --sweep model-size|epochs …          the paper's Figs. 3–5: the
                                                                  same over a grid (sweeps.py)

The DAG is mawsflow.orchestration.dag. Parameters are given as `--param name=value` (see
`--list-params`); `--local` fills in the local backend, this machine's GPU count and a dataset
folder under `--work-dir`. See pipelines/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kfp import compiler
from kfp.dsl.graph_component import GraphComponent

from mawsflow import __version__
from mawsflow.launch.spec import BACKENDS
from mawsflow.orchestration.conformance import ConformanceError, pipeline_spec, require_conformance
from mawsflow.orchestration.dag import (
    DETECTION_SETS,
    VIDEO_SETS,
    ClusterSettings,
    maws_pipeline,
    pipeline_name,
)
from mawsflow.orchestration.images import ImageError, retag
from mawsflow.orchestration.local_run import LocalReport, LocalRunFailed, run_locally
from mawsflow.orchestration.parameters import ParameterError, declared_parameters, parse_arguments
from mawsflow.orchestration.submission import (
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
from mawsflow.orchestration.sweeps import SWEEPS, sweep_name, sweep_pipeline
from mawsflow.recipes import PRESETS, architectures
from mawsflow.registry.plan import MAE_WARM_STARTS, WSP_WARM_STARTS
from mawsflow.steps.report import REPORT_FILES

LOWSHOT_METHODS = ("vpt", "logreg", "finetune")
LOWSHOT_GROUPINGS = ("run", "model")


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
    one_of("lowshot_grouping", LOWSHOT_GROUPINGS)
    one_of("mae_warm_start", MAE_WARM_STARTS)
    one_of("wsp_warm_start", WSP_WARM_STARTS)
    if "registry" in arguments and not str(arguments["registry"]).strip():
        raise ParameterError("registry: empty; give the model registry's root URI")
    if arguments.get("wsp_continue_samples", 0) < 0:
        raise ParameterError("wsp_continue_samples: must not be negative")
    if "gate_headline" in arguments and not arguments["gate_headline"]:
        raise ParameterError('gate_headline: empty; give e.g. ["finetune", "linear"]')
    if arguments.get("gate_max_drop", 0.0) < 0:
        raise ParameterError("gate_max_drop: must not be negative")
    if arguments.get("as_of"):
        try:
            datetime.date.fromisoformat(arguments["as_of"])
        except ValueError:
            raise ParameterError(f"as_of={arguments['as_of']!r}: expected YYYY-MM-DD") from None
    for name in ("transfer_seeds", "lowshot_seeds"):
        seeds = arguments.get(name, [0])
        if name == "transfer_seeds" and not seeds:
            raise ParameterError("transfer_seeds: empty; give at least one seed, e.g. [0]")
        if not isinstance(seeds, list) or not all(
            isinstance(s, int | float) and float(s).is_integer() and s >= 0 for s in seeds
        ):
            raise ParameterError(f"{name}={seeds!r}: expected a list of integers ≥ 0")
    if arguments.get("arch"):
        one_of("arch", list(architectures()))
    for arch in arguments.get("archs", []):
        if arch not in architectures():
            raise ParameterError(f"archs: unknown architecture {arch!r}")
    if "archs" in arguments and not arguments["archs"]:
        raise ParameterError("archs: empty; give the sweep's architectures")
    grid = arguments.get("epoch_grid", [{"mae_epochs": 1, "wsp_epochs": 1}])
    if not grid or not all(
        isinstance(cell, dict)
        and set(cell) == {"mae_epochs", "wsp_epochs"}
        and all(isinstance(v, int | float) and v > 0 for v in cell.values())
        for cell in grid
    ):
        raise ParameterError(
            f"epoch_grid={grid!r}: expected a non-empty list of "
            '{"mae_epochs": > 0, "wsp_epochs": > 0}'
        )
    # A branch's set's data and column name: empty is no dataset, and no column.
    sets = [*VIDEO_SETS, *DETECTION_SETS]
    branches = [f"{s}_{what}" for s in sets for what in ("dataset", "name")]
    for name in ("raw_corpus", "dataset", "eval_dataset", "eval_name", *branches):
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
        "--control",
        action="store_true",
        help="also evaluate the same trunk untrained (random initialisation, no pretraining): "
        "the report's control row",
    )
    parser.add_argument(
        "--sweep",
        choices=SWEEPS,
        help="the paper's figures: the pretraining and transfer over a grid of model sizes "
        "(run parameter archs; Figs. 3, 4) or of MAE × WSP epochs (epoch_grid; Fig. 5), with "
        "one report plotting accuracy against pretraining FLOPs",
    )
    parser.add_argument(
        "--video",
        action="append",
        default=[],
        choices=tuple(VIDEO_SETS),
        help="also finetune and evaluate every model on this video set (repeatable: --video "
        "k400 --video ssv2), the report's K400/SSv2 columns; adds the run parameters "
        "<set>_dataset (required: a prepare-eval --layout kinetics|ssv2 output), <set>_name "
        "and <set>_epochs",
    )
    parser.add_argument(
        "--detection",
        action="append",
        default=[],
        choices=tuple(DETECTION_SETS),
        help="also finetune every model as a ViTDet Cascade Mask R-CNN on this detection set "
        "and evaluate it (repeatable: --detection lvis --detection coco), the report's "
        "LVIS/COCO box-AP columns and its TIDE table; adds the run parameters <set>_dataset "
        "(required: a prepare-eval --layout lvis|coco output), <set>_name and <set>_epochs",
    )
    parser.add_argument(
        "--retrain",
        action="store_true",
        help="scheduled retraining against a model registry: snapshot the corpus, train only "
        "on new data, warm starts from the registry, and a promotion gate at the end; adds the "
        "run parameters registry (required: the registry's root URI), as_of, mae_warm_start "
        "(none|registry), wsp_warm_start (none|production), wsp_continue_samples, "
        "retrain_force, gate_headline, gate_max_drop, gate_min_gain and pushgateway",
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
    if args.sweep and args.retrain:
        parser.error("--retrain is not available with --sweep: a sweep compares, it does not serve")
    if args.sweep and (args.video or args.detection):
        parser.error(
            "--video and --detection are not available with --sweep: sweep the image "
            "evaluations only"
        )
    if args.containers and not args.local:
        parser.error("--containers runs the --local run in containers: give --local too")
    if (args.submit or args.schedule) and not args.host:
        parser.error("--submit and --schedule need --host, the Kubeflow Pipelines API's URL")
    cluster = ClusterSettings(
        args.s3_access_key_id_key, args.s3_secret_access_key_key, args.eval_shm_size, args.eval_gpus
    )
    try:
        options = {"baselines": args.baselines, "control": args.control}
        options |= {"cluster": cluster, "retries": not args.local}
        pipeline = (
            sweep_pipeline(args.sweep, **options)
            if args.sweep
            else maws_pipeline(
                video=args.video, detection=args.detection, retrain=args.retrain, **options
            )
        )
    except ImageError as exc:
        return _fail(str(exc))
    name = (
        sweep_name(args.sweep, args.baselines, args.control)
        if args.sweep
        else pipeline_name(
            args.baselines, args.control, args.video, args.detection, retrain=args.retrain
        )
    )
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
            if report.plan:
                print(f"\nretraining plan: {report.plan['action']} ({report.plan['reason']})")
            print(f"\n{report.table}\n")
            if report.gate:
                verdict = "promoted" if report.gate["promoted"] else "not promoted"
                print(f"promotion gate: {verdict}: {'; '.join(report.gate['reasons'])}")
            if report.folder:
                print("report: " + ", ".join(str(report.folder / n) for n in REPORT_FILES))
    except (ParameterError, SubmissionError, LocalRunFailed, ConformanceError) as exc:
        return _fail(str(exc))
    return 0


def _run_in_containers(
    pipeline: GraphComponent, arguments: Mapping[str, Any], work_dir: Path
) -> LocalReport:
    """`--local --containers`: the local folders the run reads or writes (local data URIs and
    the work dir) are mounted into the containers at their own paths."""
    from mawsflow.orchestration.container_run import ContainerRunError, run_in_containers

    work_dir.mkdir(parents=True, exist_ok=True)
    folders = {work_dir.resolve()}
    # The branches' `<set>_dataset`s too: every dataset the run reads.
    datasets = [name for name in arguments if name.endswith("_dataset")]
    for name in ("raw_corpus", "dataset", *datasets):
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


_HEADER_DEFAULT = re.compile(r"^(#    (?P<name>\S+): \S+ \[Default: ).*\]$")


def _sorted_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(item) for item in value]
    return value


def canonical_header(text: str, spec: Mapping[str, Any]) -> str:
    """The compiled YAML with its header comment's parameter defaults in a fixed key order.

    kfp writes the header's `[Default: …]` from the spec turned back into Python objects
    (kfp/compiler/pipeline_spec_builder.py, `extract_comments_from_pipeline_spec`, from protobuf's
    Struct), whose map order is arbitrary: the same pipeline compiled twice gave two files
    (the epochs sweep's `epoch_grid`). The body is already key-sorted; so is the header now,
    so that a compiled pipeline kept in git changes only when the pipeline does."""
    defaults = {
        name: parameter["defaultValue"]
        for name, parameter in spec.get("root", {})
        .get("inputDefinitions", {})
        .get("parameters", {})
        .items()
        if isinstance(parameter.get("defaultValue"), dict | list)
    }
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if not line.startswith("#"):
            break  # the header ends at the first line of YAML
        match = _HEADER_DEFAULT.match(line)
        if match and match["name"] in defaults:
            lines[index] = f"{match[1]}{_sorted_keys(defaults[match['name']])}]"
    return "\n".join(lines)


def compile_checked(pipeline: GraphComponent, path: str) -> None:
    """Compile to `path` only if the result passes the backend conformance rules: nothing the
    Kubeflow Pipelines backend would reject is written, uploaded or scheduled. The same
    pipeline always compiles to the same bytes (`canonical_header`)."""
    folder = Path(path).resolve().parent
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=folder, delete=False) as f:
        staging = Path(f.name)
    try:
        compiler.Compiler().compile(pipeline, str(staging))
        spec = pipeline_spec(str(staging))
        require_conformance(spec)
        text = staging.read_text(encoding="utf-8")
        staging.write_text(canonical_header(text, spec), encoding="utf-8")
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
