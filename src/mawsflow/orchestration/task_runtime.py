"""What a component's body does inside its container, kept here so that it is tested code and
the bodies stay a few lines long.

Every component runs a step through the step's own entry point (`mawsflow <step> …`), the same
code a user runs by hand. Training steps go through the launcher (`mawsflow launch`) so that
the backend (`local` torchrun, `pytorchjob`, `trainjob`) is a pipeline parameter; the other
steps run in the component's own process.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import yaml

from mawsflow import cli, storage
from mawsflow.evaluation.results import model_lineage, read_result
from mawsflow.launch.spec import BACKENDS
from mawsflow.log import setup_logging
from mawsflow.models.artifacts import METRICS_FILE, read_model_card
from mawsflow.orchestration.artifact_uris import MODEL_CARD, storage_uri

# Set by the chart's object-store ConfigMap: which Secret holds the S3 credentials, and under
# which keys, so that the launcher can hand the training pods secretKeyRefs to it.
S3_SECRET_ENV = "MAWSFLOW_S3_SECRET_NAME"
S3_ACCESS_KEY_ID_KEY_ENV = "MAWSFLOW_S3_ACCESS_KEY_ID_KEY"
S3_SECRET_ACCESS_KEY_KEY_ENV = "MAWSFLOW_S3_SECRET_ACCESS_KEY_KEY"


class TaskFailed(RuntimeError):
    """A step ended with a non-zero exit status; the step has logged why."""


class MetricsArtifact(Protocol):
    """The part of KFP's `Metrics` artifact used here (kfp is not imported by this module)."""

    def log_metric(self, metric: str, value: float) -> None: ...


class OutputArtifact(Protocol):
    """The part of a KFP output artifact used here."""

    uri: str
    metadata: dict[str, Any]


def run_step(step: str, argv: Sequence[str]) -> None:
    """`mawsflow <step> argv` in this process."""
    try:
        code = cli.main([step, *argv])
    except SystemExit as exc:  # argparse's way of rejecting arguments
        code = exc.code if isinstance(exc.code, int) else 2
    if code:
        raise TaskFailed(f"mawsflow {step} exited with status {code}")


def overrides(values: Mapping[str, Any]) -> list[str]:
    """`key=value` for every value that is given. Pipeline parameters say "keep the recipe's
    value" with an empty string or a number ≤ 0."""
    return [
        f"{key}={value}"
        for key, value in values.items()
        if not (value is None or value == "" or (isinstance(value, int | float) and value <= 0))
    ]


def recipe_argv(preset: str, settings: Sequence[str]) -> list[str]:
    """The recipe options of a step's command line: `--preset` and `--set key=value`."""
    argv = ["--preset", preset] if preset else []
    for setting in settings:
        argv += ["--set", setting]
    return argv


@dataclass(frozen=True)
class TrainingLaunch:
    """Where and how big a training step runs: the pipeline's launch parameters."""

    backend: str
    image: str
    # What names the Kubernetes job: the task execution's output artifact URI, which holds the
    # run and the task and stays the same when KFP retries the task (so a retry re-attaches to
    # its job), and the step. The run id as a parameter would serve too, but would make KFP's
    # cache key of every training task unique to its run.
    execution: str
    task: str
    nodes: int = 1
    gpus_per_node: int = 0
    shm_size: str = ""
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, Any]] = ()

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r}: choose one of {list(BACKENDS)}")

    def command(self, step: str, argv: Sequence[str]) -> list[str]:
        """What every rank runs. Local ranks run this interpreter's mawsflow (the component's
        environment need not have `mawsflow` on PATH); pods run the image's entry point."""
        if self.backend == "local":
            return [sys.executable, "-m", "mawsflow.cli", step, *argv]
        return ["mawsflow", step, *argv]

    def spec(self, step: str, argv: Sequence[str], env: Mapping[str, str]) -> dict[str, Any]:
        """The `mawsflow launch` spec (mawsflow.launch.spec.LaunchSpec) as plain data."""
        pod: dict[str, Any] = {
            "node_selector": dict(self.node_selector),
            "tolerations": [dict(t) for t in self.tolerations],
        }
        if self.shm_size:
            pod["shm_size"] = self.shm_size
        spec: dict[str, Any] = {
            "command": self.command(step, argv),
            "nodes": self.nodes,
            # One rank per GPU; one rank on a node without GPUs.
            "procs_per_node": max(1, self.gpus_per_node),
            "resources": {"gpus_per_node": self.gpus_per_node},
            "pod": pod,
        }
        if self.backend != "local":
            spec["image"] = self.image
        secret = env.get(S3_SECRET_ENV)
        if secret:
            spec["s3"] = {
                "secret_name": secret,
                "access_key_id_key": env.get(S3_ACCESS_KEY_ID_KEY_ENV) or "AWS_ACCESS_KEY_ID",
                "secret_access_key_key": (
                    env.get(S3_SECRET_ACCESS_KEY_KEY_ENV) or "AWS_SECRET_ACCESS_KEY"
                ),
                "endpoint_url": env.get("AWS_ENDPOINT_URL") or None,
                "region": env.get("AWS_DEFAULT_REGION") or None,
            }
        return spec


def launch_settings(
    *,
    backend: Any,
    nodes: Any,
    gpus_per_node: Any,
    shm_size: Any,
    node_selector: Any,
    tolerations: Any,
    image: Any = None,
) -> dict[str, Any]:
    """The pipeline's launch parameters as one mapping, by their parameter names: what the
    pipeline hands its sub-pipelines and training tasks as keywords (the values are then
    pipeline channels, and each task gets its step's image on its own), and what a training
    component hands `train` (with `image`, the job's). Keyword-only and all required, so that
    a launch parameter added here is one every caller must pass."""
    settings = {
        "backend": backend,
        "nodes": nodes,
        "gpus_per_node": gpus_per_node,
        "shm_size": shm_size,
        "node_selector": node_selector,
        "tolerations": tolerations,
    }
    return settings if image is None else {**settings, "image": image}


def launch_training(
    step: str, argv: Sequence[str], launch: TrainingLaunch, env: Mapping[str, str] | None = None
) -> None:
    """Run `mawsflow <step> argv` under the launcher and wait for it to end."""
    env = os.environ if env is None else env
    with tempfile.TemporaryDirectory(prefix="mawsflow-launch-") as folder:
        spec_file = os.path.join(folder, "launch.yaml")
        with open(spec_file, "w", encoding="utf-8") as f:
            yaml.safe_dump(launch.spec(step, argv, env), f, sort_keys=False)
        launcher_argv = ["--backend", launch.backend, "--spec", spec_file]
        if launch.backend != "local":
            launcher_argv += ["--run-id", launch.execution, "--task", launch.task]
        run_step("launch", launcher_argv)


def train(
    step: str,
    model: OutputArtifact,
    metrics: MetricsArtifact,
    *,
    preset: str,
    settings: Mapping[str, Any],
    launch: Mapping[str, Any],
    recipe: str = "",
    variant: str = "",
) -> None:
    """What every training component does: run `mawsflow <step>` with the `preset` recipe
    (`recipe`, `variant` when given), `settings` and the model artifact's URI as its output,
    under the launcher (`launch`: the pipeline's launch parameters, TrainingLaunch's fields but
    the job's name, which follows the artifact), wait for the job, then publish the model it
    wrote."""
    setup_logging()
    output = storage_uri(model.uri)
    argv = recipe_argv(preset, overrides({**settings, "output": output}))
    if variant:
        argv = ["--variant", variant, *argv]
    if recipe:
        argv = ["--recipe", recipe, *argv]
    launch_training(step, argv, TrainingLaunch(execution=model.uri, task=step, **launch))
    publish_model(model, metrics, output)


def evaluate(step: str, result: OutputArtifact, argv: Sequence[str]) -> None:
    """What an evaluation component does: run `mawsflow <step> argv --output <the result
    artifact's URI>` in this process, then publish the metrics it wrote."""
    setup_logging()
    output = storage_uri(result.uri)
    run_step(step, [*argv, "--output", output])
    publish_result(result, output)


def numeric_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers among `values`: what KFP's Metrics artifact shows."""
    return {
        key: float(value)
        for key, value in values.items()
        if isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    }


def log_metrics(sink: MetricsArtifact, values: Mapping[str, Any]) -> None:
    for key, value in numeric_metrics(values).items():
        sink.log_metric(key, value)


def publish_model(model: OutputArtifact, metrics: MetricsArtifact, output: str) -> None:
    """After a training step wrote `output`: its final metrics as KFP Metrics, its card's
    headline in the artifact's metadata, and the artifact pointed at its model.json."""
    log_metrics(metrics, storage.read_json(storage.join(output, METRICS_FILE)))
    card = read_model_card(output)
    model.metadata.update({k: card[k] for k in ("step", "arch", "img_size") if k in card})
    model.metadata["pretraining"] = model_lineage(output)
    model.uri = model.uri.rstrip("/") + "/" + MODEL_CARD


def publish_result(result: MetricsArtifact, output: str) -> None:
    """After an evaluation step wrote `output/metrics.json`: its metrics as KFP Metrics. (The
    row and column it fills stay in that file, for the report; a Metrics artifact's metadata
    holds numbers only.)"""
    log_metrics(result, read_result(output).metrics)
