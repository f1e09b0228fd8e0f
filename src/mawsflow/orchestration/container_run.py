"""Running a whole pipeline on this machine with every task in its own step image.

`kfp.local.DockerRunner` runs each task as a container of the image its executor names, on the
Docker engine that DOCKER_HOST (or the default socket) points at; the rest is
`mawsflow.orchestration.local_run` (task logs, the report). What the containers get:

- host networking, so an object store on this machine's loopback (SeaweedFS, MinIO) has the same
  URL inside. The run's own folder is mounted at the same path (kfp.local does that), which is
  where the artifacts go; other local folders the run reads or writes (`mounts`) are mounted at
  their own paths, and must be writable for the containers' user where a task writes there;
- the object-store settings of this process (AWS_* and MAWSFLOW_* variables) as environment;
- a larger /dev/shm than Docker's 64 MB, which the training steps' data loaders need.

Every task runs as the images' own non-root user (UID 10001), so the run's folder is created
writable for it; the files the tasks write there belong to that UID.

The step images must be in the engine under the names components/images.yaml gives
(`images/build.py` builds them so); nothing is pulled.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
from google.protobuf import json_format
from kfp import local
from kfp.dsl.graph_component import GraphComponent

from mawsflow.orchestration.images import ImageError, image_for, read_images, retag
from mawsflow.orchestration.local_run import LocalReport, run_locally

# The variables that tell a step where the object store is and how to reach it.
_PASSED_ENV = re.compile(r"^(AWS_|MAWSFLOW_)")
# An executor image given at run time: `{{$.inputs.parameters['<input>']}}`, where the task's
# <input> is, at the root, step-images' output for the step (`pipelinechannel--step-images-
# <field>`, <field> the step with '_' for '-'), or inside a sub-pipeline one of its inputs fed so.
_IMAGE_PLACEHOLDER = re.compile(r"^\{\{\$\.inputs\.parameters\['(?P<input>[^']+)'\]\}\}$")


class ContainerRunError(RuntimeError):
    """The run cannot start: no engine, or images it would need are missing."""


def run_in_containers(
    pipeline: GraphComponent,
    arguments: Mapping[str, Any],
    work_dir: Path,
    *,
    environment: Mapping[str, str] | None = None,
    mounts: Sequence[Path] = (),
    shm_size: str = "2g",
) -> LocalReport:
    """Run every task of `pipeline` in its step's container; returns where the report is.

    `environment` is what the containers get (default: this process's AWS_* and MAWSFLOW_*
    variables). `mounts` are local folders the tasks see at the same paths (e.g. a dataset
    given as a local path). The pipeline's `image_tag` argument picks another tag of every
    image, as on a cluster.
    """
    images = read_images()
    pinned = _pinned_executor_images(pipeline, images, str(arguments.get("image_tag", "")))
    _check_images_present(set(pinned.values()) | set(_literal_images(pipeline)))
    if environment is None:
        environment = {k: v for k, v in os.environ.items() if _PASSED_ENV.match(k)}
    binds = []
    for folder in mounts:
        folder = Path(folder).resolve()
        if not folder.is_dir():
            raise ContainerRunError(f"mount {folder}: not a folder on this machine")
        binds.append(docker.types.Mount(str(folder), str(folder), type="bind"))
    runner = local.DockerRunner(
        network_mode="host",
        environment=dict(environment),
        shm_size=shm_size,
        mounts=binds,
        # A pod's `command` replaces the image's ENTRYPOINT; Docker's `command` is appended to
        # it. The step images' entrypoint (`mawsflow <step>`) is cleared, as in a pod, so that
        # the task's own command (`sh -c … python3 -m kfp.dsl.executor_main …`) runs.
        entrypoint=[],
    )
    with _executor_images(pipeline, pinned), _writable_for_other_users():
        return run_locally(pipeline, arguments, work_dir, runner=runner)


def _executors(pipeline: GraphComponent) -> Any:
    return pipeline.pipeline_spec.deployment_spec["executors"]


def _literal_images(pipeline: GraphComponent) -> list[str]:
    images = []
    for executor in _executors(pipeline).values():
        image = executor["container"]["image"] if "container" in executor else ""
        if image and not image.startswith("{{"):
            images.append(image)
    return images


def _pinned_executor_images(
    pipeline: GraphComponent, images: Mapping[str, str], image_tag: str
) -> dict[str, str]:
    """Executor → the image it runs, for executors whose image is a step-images output.

    On a cluster the KFP backend fills such an image in from the step-images task; kfp.local
    runs the image string as it is. The step-images task computes nothing but
    `retag(components/images.yaml's reference, image_tag)`, so the same is done here."""
    spec = json_format.MessageToDict(pipeline.pipeline_spec)
    pinned: dict[str, str] = {}
    for name, field in _image_sources(spec).items():
        step = field.replace("_", "-")
        try:
            pinned[name] = retag(image_for(images, step), image_tag)
        except ImageError as exc:
            raise ContainerRunError(f"executor {name}: {exc}") from None
    return pinned


def _image_sources(spec: Mapping[str, Any]) -> dict[str, str]:
    """Executor → the step-images output its image is, for executors whose image is given at
    run time: the task's image input followed out through the sub-pipelines and ParallelFors
    it sits in, as the backend's driver resolves it."""
    executors = spec["deploymentSpec"]["executors"]
    sources: dict[str, str] = {}

    def visit(dag: Mapping[str, Any], parents: tuple[Mapping[str, Any], ...]) -> None:
        for task in dag.get("tasks", {}).values():
            component = spec["components"][task["componentRef"]["name"]]
            if "dag" in component:
                visit(component["dag"], (*parents, task))
                continue
            name = component.get("executorLabel", "")
            image = executors.get(name, {}).get("container", {}).get("image", "")
            if not image.startswith("{{"):
                continue
            match = _IMAGE_PLACEHOLDER.match(image)
            source = match and _step_images_output(task, match["input"], parents)
            if not source:
                raise ContainerRunError(
                    f"executor {name} names its image as {image!r}, which a local container "
                    "run cannot resolve (only step-images outputs can be)"
                )
            sources[name] = source

    visit(spec["root"]["dag"], ())
    return sources


def _step_images_output(
    task: Mapping[str, Any], name: str, parents: Sequence[Mapping[str, Any]]
) -> str | None:
    """The step-images output field that the task's input parameter `name` carries, if any."""
    source = task.get("inputs", {}).get("parameters", {}).get(name, {})
    for parent in reversed(parents):
        if "componentInputParameter" not in source:
            break
        source = (
            parent.get("inputs", {})
            .get("parameters", {})
            .get(source["componentInputParameter"], {})
        )
    output = source.get("taskOutputParameter", {})
    return output.get("outputParameterKey") if output.get("producerTask") == "step-images" else None


@contextlib.contextmanager
def _executor_images(pipeline: GraphComponent, pinned: Mapping[str, str]) -> Iterator[None]:
    """The pipeline's executors name `pinned` images while the block runs; put back after."""
    executors = _executors(pipeline)
    before = {name: executors[name]["container"]["image"] for name in pinned}
    for name, image in pinned.items():
        executors[name]["container"]["image"] = image
    try:
        yield
    finally:
        for name, image in before.items():
            executors[name]["container"]["image"] = image


def _check_images_present(references: set[str]) -> None:
    """Every image in the engine: kfp.local would otherwise try to pull it from its registry."""
    where = os.environ.get("DOCKER_HOST") or "the default socket"
    try:
        client = docker.from_env()
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        raise ContainerRunError(f"no Docker engine answers at {where}: {exc}") from None
    try:
        present = {tag for image in client.images.list() for tag in image.tags}
    finally:
        client.close()
    missing = sorted(references - present)
    if missing:
        raise ContainerRunError(
            f"the engine at {where} lacks the step images {', '.join(missing)}; build them "
            "with `images/build.py` (see images/README.md)"
        )


@contextlib.contextmanager
def _writable_for_other_users() -> Iterator[None]:
    """Folders this process creates in the block (the run's folder) are writable for the
    containers' user, which is not this process's. The umask is process-wide: it is put back
    as soon as the run ends."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)
