"""`mawsflow launch`: run a training command under torchrun, here or on Kubernetes, and wait.

The spec (mawsflow.launch.spec.LaunchSpec) comes from `--spec FILE` and `--set key=value`; the
command after `--` is what every rank runs (locally, a bare `mawsflow` is this installation's,
whatever PATH holds; the local job never outlives the launcher: mawsflow.launch.job_guard).
The exit status is the step's: 0 on success, the failing rank's exit code (local), 1 for a
failed, conflicting or vanished Kubernetes job, 124 when the launcher's timeout ran out, 2 for a
bad spec or arguments.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from mawsflow.errors import ConfigError
from mawsflow.launch.kube import (
    JobKind,
    JobTimedOut,
    KubeJobLauncher,
    LaunchError,
    api_client,
    current_namespace,
)
from mawsflow.launch.local import run_local, torchrun_argv
from mawsflow.launch.naming import JobIdentity
from mawsflow.launch.pytorchjob import PYTORCHJOB, build_pytorchjob
from mawsflow.launch.spec import BACKENDS, Backend, LaunchSpec, load_launch_spec, validate
from mawsflow.launch.trainjob import TRAINJOB, build_trainjob
from mawsflow.log import setup_logging

log = logging.getLogger("mawsflow.launch")

EXIT_JOB_FAILED = 1
EXIT_TIMEOUT = 124  # as coreutils `timeout` reports it

Builder = Callable[[LaunchSpec, JobIdentity, str], dict[str, Any]]
KUBE_BACKENDS: dict[str, tuple[Builder, JobKind]] = {
    "pytorchjob": (build_pytorchjob, PYTORCHJOB),
    "trainjob": (build_trainjob, TRAINJOB),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mawsflow launch",
        description=(
            "Run a training command on N ranks under torchrun: locally (gloo on the CPU when "
            "there is no GPU), as a Kubeflow PyTorchJob, or as a Kubeflow Trainer TrainJob, "
            "and wait for it to finish."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  mawsflow launch --backend local --set procs_per_node=2 -- mawsflow mae "
            "--preset tiny\n"
            "  mawsflow launch --backend pytorchjob --spec launch.yaml --run-id $RUN --task mae "
            "-- mawsflow mae\n"
            "  mawsflow launch --backend trainjob --spec launch.yaml --run-id r1 --task wsp "
            "--print-manifest -- mawsflow wsp\n\n"
            "Locally, a bare `mawsflow` command runs this installation's mawsflow (it need not "
            "be on PATH), and every process of the job dies with the launcher.\n\n"
            "Spec keys (any can be set with --set): command, image, nodes, procs_per_node, "
            "resources.*, env.*, s3.*, pod.*, queue_name, labels.*, policy.*, elastic.*, "
            "runtime.*; see mawsflow.launch.spec."
        ),
    )
    parser.add_argument("--backend", required=True, choices=BACKENDS, help="where to run")
    parser.add_argument("--spec", metavar="FILE", help="launch spec (YAML)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one spec value, e.g. --set nodes=4 (repeatable)",
    )
    parser.add_argument("--run-id", help="pipeline run id; with --task, names the Kubernetes job")
    parser.add_argument("--task", help="pipeline task name; with --run-id, names the job")
    parser.add_argument("--namespace", help="Kubernetes namespace (default: the current one)")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster or ~/.kube)")
    parser.add_argument("--context", help="kubeconfig context")
    parser.add_argument(
        "--print-manifest",
        action="store_true",
        help="print the job manifest (local: the torchrun command line) and exit",
    )
    parser.add_argument(
        "command", nargs=argparse.REMAINDER, help="after --: the program every rank runs"
    )
    return parser


@dataclass(frozen=True)
class LaunchConfig:
    """One launch: the job's spec, where it runs, and (on Kubernetes) its name and cluster."""

    spec: LaunchSpec
    backend: Backend
    # Names the Kubernetes job (required there), so a retried launcher re-attaches to it.
    identity: JobIdentity | None = None
    namespace: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    # Print the job manifest (local: the torchrun command line) instead of running it.
    print_manifest: bool = False


def run(config: LaunchConfig) -> int:
    """Run (or print) the job and wait for it; returns the step's exit status."""
    spec = config.spec
    if config.backend == "local":
        if config.print_manifest:
            sys.stdout.write(shlex.join(torchrun_argv(spec)) + "\n")
            return 0
        return run_local(spec).exit_code
    if config.identity is None:
        raise ConfigError(f"the {config.backend} backend needs the job's identity (run id, task)")
    identity = config.identity
    namespace = config.namespace or current_namespace(config.kubeconfig, config.context)
    build, kind = KUBE_BACKENDS[config.backend]
    manifest = build(spec, identity, namespace)
    if config.print_manifest:
        sys.stdout.write(yaml.safe_dump(manifest, sort_keys=False))
        return 0
    launcher = KubeJobLauncher(
        api_client(config.kubeconfig, config.context),
        kind,
        namespace,
        watch_window_s=spec.policy.watch_window_s,
        log_grace_s=spec.policy.log_grace_s,
    )
    try:
        launcher.run(manifest, timeout_s=spec.policy.timeout_s, cleanup=spec.policy.cleanup)
    except JobTimedOut as exc:
        log.error("%s", exc)
        return EXIT_TIMEOUT
    except LaunchError as exc:
        log.error("%s", exc)
        return EXIT_JOB_FAILED
    log.info("%s %s/%s succeeded", kind.kind, namespace, identity.job_name)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        spec = load_launch_spec(args.spec, args.overrides, command or None)
        validate(spec, args.backend)
    except ConfigError as exc:
        parser.error(str(exc))
    setup_logging()
    identity = None
    if args.backend != "local":
        if not args.run_id or not args.task:
            parser.error(
                f"--run-id and --task are required for the {args.backend} backend: they name "
                "the job, so that a retried launcher re-attaches to it instead of starting "
                "another"
            )
        try:
            identity = JobIdentity(args.run_id, args.task)
        except ValueError as exc:
            parser.error(str(exc))
    return run(
        LaunchConfig(
            spec,
            args.backend,
            identity=identity,
            namespace=args.namespace,
            kubeconfig=args.kubeconfig,
            context=args.context,
            print_manifest=args.print_manifest,
        )
    )
