"""Backend conformance: reject a compiled pipeline that the Kubeflow Pipelines backend cannot run.

`kfp.local` runs DAGs that the backend (kubeflow/pipelines `backend/src/v2`: the Argo compiler,
the driver and the launcher) rejects or runs wrongly, so passing the local run proves little.
Each rule below encodes one behaviour of the backend, read from its source at tags 2.16.0 and
2.17.0 (and 2.15.0 where a rule depends on the version), and cites the file and function. A
rule's test builds a small pipeline with the offending construct, which the rule rejects, and
the fixed form, which it accepts (tests/test_pipeline_conformance.py).

`check(spec)` walks a compiled pipeline spec (the first YAML document `kfp.compiler` writes, as
a dict) and returns every violation; `require_conformance` raises with all of them. The
pipeline CLI runs it before it writes, uploads or schedules anything.

The oldest backend the project supports is MIN_BACKEND: 2.15.0 loses the outputs of a named
ParallelFor (`named-loop-outputs`), which kubeflow/pipelines#12808 fixed in 2.16.0.

Conditions (`dsl.If`/`Elif`/`Else`): the SDK wraps a condition's tasks in a sub-DAG whose task
carries `triggerPolicy.condition`, a CEL expression over that task's own resolved inputs. The
driver evaluates it (driver/dag.go, `DAG`); when false the sub-DAG's execution is recorded
CANCELED and Argo skips it (compiler/argocompiler/dag.go, `task`: `when: … != false`), so no
task inside runs. A task outside that depends on it (`depends: <task>.Succeeded`, dag.go
`depends`) is omitted, never run; the SDK already refuses such a dependency except through
`dsl.OneOf`. Inside a true condition, outputs — `dsl.Collected` of a ParallelFor included — are
resolved exactly as at the root: the condition's DAG is the consumers' parent DAG
(driver/resolve.go, `resolveUpstreamArtifacts`/`resolveUpstreamParameters`, `getDAGTasks`). The
rules `condition-input`, `importer-condition`, `collected-conditional-output` and
`oneof-artifact-output` guard what can still go wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

MIN_BACKEND = "2.16.0"
SUPPORTED_BACKENDS = ("2.16.0", "2.17.0")
# Root parameters that name data the pipeline reads but does not own: a cached task that reads
# one of them must also take a fingerprint of that data (rule `cache-follows-data`).
DATA_PARAMETERS = (
    "raw_corpus",
    "eval_dataset",
    "k400_dataset",
    "ssv2_dataset",
    "lvis_dataset",
    "coco_dataset",
)

Spec = Mapping[str, Any]


@dataclass(frozen=True)
class Violation:
    rule: str
    task: str  # the task's path from the root DAG, e.g. "for-loop-3/lit"
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.task}: {self.message}"


class ConformanceError(ValueError):
    """The compiled pipeline would fail on the Kubeflow Pipelines backend."""

    def __init__(self, violations: Iterable[Violation]) -> None:
        self.violations = tuple(violations)
        lines = "\n  ".join(str(v) for v in self.violations)
        super().__init__(
            f"the pipeline would fail on the Kubeflow Pipelines backend "
            f"(≥ {MIN_BACKEND}):\n  {lines}"
        )


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        raise ValueError(f"backend version {text!r}: expected MAJOR.MINOR.PATCH") from None


# --------------------------------------------------------------------------------------------
# Walking the spec


@dataclass(frozen=True)
class _Task:
    path: str  # "for-loop-3/lit"
    key: str  # "lit"
    spec: Mapping[str, Any]
    parent: _Task | None  # the DAG task (ParallelFor or sub-pipeline) it sits in; None: root

    @property
    def component(self) -> str:
        return self.spec.get("componentRef", {}).get("name", "")


class _Pipeline:
    def __init__(self, spec: Spec) -> None:
        if not isinstance(spec, Mapping) or "root" not in spec or "components" not in spec:
            raise ValueError("not a compiled pipeline spec: expected 'root' and 'components'")
        self.spec = spec
        self.components: Mapping[str, Any] = spec.get("components", {})
        self.executors: Mapping[str, Any] = spec.get("deploymentSpec", {}).get("executors", {})
        self.tasks: list[_Task] = list(self._walk(spec["root"].get("dag", {}), "", None))
        self.by_path = {t.path: t for t in self.tasks}

    def _walk(self, dag: Mapping[str, Any], prefix: str, parent: _Task | None) -> Iterator[_Task]:
        for key, task_spec in dag.get("tasks", {}).items():
            task = _Task(f"{prefix}{key}", key, task_spec, parent)
            yield task
            inner = self.components.get(task.component, {}).get("dag")
            if inner is not None:
                yield from self._walk(inner, f"{task.path}/", task)

    def executor(self, task: _Task) -> Mapping[str, Any]:
        label = self.components.get(task.component, {}).get("executorLabel")
        return self.executors.get(label, {}) if label else {}

    def is_importer(self, task: _Task) -> bool:
        return "importer" in self.executor(task)

    def is_loop(self, task: _Task) -> bool:
        return "parameterIterator" in task.spec or "artifactIterator" in task.spec

    def sibling(self, task: _Task, key: str) -> _Task | None:
        prefix = task.path[: len(task.path) - len(task.key)]
        return self.by_path.get(prefix + key)

    def child(self, dag_task: _Task, key: str) -> _Task | None:
        return self.by_path.get(f"{dag_task.path}/{key}")

    def consumers(self, producer: _Task) -> Iterator[tuple[_Task, str]]:
        """Tasks in the same DAG that read an output of `producer`, with the input's name."""
        for task in self.tasks:
            if task.parent is not producer.parent:
                continue
            inputs = task.spec.get("inputs", {})
            for name, spec in {
                **inputs.get("parameters", {}),
                **inputs.get("artifacts", {}),
            }.items():
                source = spec.get("taskOutputArtifact") or spec.get("taskOutputParameter") or {}
                if source.get("producerTask") == producer.key:
                    yield task, name

    def artifact_producers(self, dag_task: _Task, output_key: str) -> Iterator[_Task]:
        """The tasks that really make a DAG task's output artifact, through nested DAGs (as
        the driver follows `artifactSelectors`)."""
        outputs = self.components.get(dag_task.component, {}).get("dag", {}).get("outputs", {})
        for selector in (
            outputs.get("artifacts", {}).get(output_key, {}).get("artifactSelectors", [])
        ):
            inner = self.child(dag_task, selector.get("producerSubtask", ""))
            if inner is None:
                continue
            if "dag" in self.components.get(inner.component, {}):
                yield from self.artifact_producers(inner, selector.get("outputArtifactKey", ""))
            else:
                yield inner

    def output_path(self, dag_task: _Task, output_key: str, artifact: bool) -> Iterator[_Task]:
        """Every task a DAG task's output passes through on its way up from the task that makes
        it (inner DAGs and the maker), following the DAG's output selectors as the driver does
        (driver/resolve.go, `GetProducerTask`)."""
        outputs = self.components.get(dag_task.component, {}).get("dag", {}).get("outputs", {})
        if artifact:
            spec = outputs.get("artifacts", {}).get(output_key, {})
            selectors = [
                (s.get("producerSubtask", ""), s.get("outputArtifactKey", ""))
                for s in spec.get("artifactSelectors", [])
            ]
        else:
            spec = outputs.get("parameters", {}).get(output_key, {})
            chosen = [spec["valueFromParameter"]] if "valueFromParameter" in spec else []
            chosen += spec.get("valueFromOneof", {}).get("parameterSelectors", [])
            selectors = [
                (s.get("producerSubtask", ""), s.get("outputParameterKey", "")) for s in chosen
            ]
        for subtask, key in selectors:
            inner = self.child(dag_task, subtask)
            if inner is None:
                continue
            yield inner
            if "dag" in self.components.get(inner.component, {}):
                yield from self.output_path(inner, key, artifact)

    def parameter_origins(self, task: _Task, spec: Mapping[str, Any]) -> set[tuple[str, str]]:
        """Where a task's input parameter comes from, followed up through enclosing DAGs and
        loop items: {("root", parameter)} or {("task", producer path)}; constants give none."""
        if "taskOutputParameter" in spec:
            producer = self.sibling(task, spec["taskOutputParameter"].get("producerTask", ""))
            return {("task", producer.path)} if producer else set()
        name = spec.get("componentInputParameter")
        if not name:
            return set()
        parent = task.parent
        if parent is None:
            return {("root", name)}
        iterator = parent.spec.get("parameterIterator", {})
        if name == iterator.get("itemInput"):
            items = iterator.get("items", {})
            if "inputParameter" not in items:
                return set()  # a constant list
            name = items["inputParameter"]
        outer = parent.spec.get("inputs", {}).get("parameters", {}).get(name)
        return self.parameter_origins(parent, outer) if outer else set()

    def cached(self, task: _Task) -> bool:
        return bool(task.spec.get("cachingOptions", {}).get("enableCache", False))


# --------------------------------------------------------------------------------------------
# Rules


def importer_uri_from_task_output(p: _Pipeline) -> Iterator[Violation]:
    """An importer's URI must come from a pipeline parameter or a constant, never from a task.

    backend/src/v2/component/importer_launcher.go, `ImportSpecToMLMDArtifact`: a runtime
    artifact URI is looked up only with `GetComponentInputParameter()` among the parent DAG's
    input parameters ("parent DAG does not have input parameter …"); and
    compiler/argocompiler/importer.go, `importerTask`, gives the importer's Argo task no
    dependencies, so it would not even wait for the producing task."""
    for task in p.tasks:
        if not p.is_importer(task):
            continue
        uri = task.spec.get("inputs", {}).get("parameters", {}).get("uri", {})
        if "taskOutputParameter" in uri:
            producer = uri["taskOutputParameter"].get("producerTask")
            yield Violation(
                "importer-uri-from-task-output",
                task.path,
                f"the importer's URI comes from task {producer!r}; the backend resolves it only "
                "from pipeline parameters. Make the producer output the artifact itself.",
            )


def importer_display_name(p: _Pipeline) -> Iterator[Violation]:
    """An importer must not have a display name (a task name other than its key).

    backend/src/v2/component/importer_launcher.go, `Execute`: the importer's execution records
    `TaskName: l.task.GetTaskInfo().GetName()`, the display name, while
    driver/resolve.go, `resolveUpstreamArtifacts`, looks the producer up by the task key
    (`GetTaskNameWithDagID(producerTaskName, …)`): "cannot find producer task"
    (kubeflow/pipelines#10860)."""
    for task in p.tasks:
        name = task.spec.get("taskInfo", {}).get("name", task.key)
        if p.is_importer(task) and name != task.key:
            yield Violation(
                "importer-display-name",
                task.path,
                f"importer with display name {name!r}: its consumers would not find it",
            )


def collected_importer_output(p: _Pipeline) -> Iterator[Violation]:
    """`dsl.Collected` must not gather an importer's output.

    backend/src/v2/driver/resolve.go, `CollectInputs`: a ParallelFor's outputs are gathered
    by walking its iterations down to executions of type `system.ContainerExecution`, the
    only base case; an importer's execution is not one, so the walk never ends in a value."""
    for loop in p.tasks:
        if not p.is_loop(loop):
            continue
        for consumer, name in p.consumers(loop):
            spec = consumer.spec.get("inputs", {}).get("artifacts", {}).get(name, {})
            key = spec.get("taskOutputArtifact", {}).get("outputArtifactKey", "")
            for producer in p.artifact_producers(loop, key):
                if p.is_importer(producer):
                    yield Violation(
                        "collected-importer-output",
                        consumer.path,
                        f"input {name!r} collects importer {producer.path!r} over a ParallelFor",
                    )


def artifact_iterator(p: _Pipeline) -> Iterator[Violation]:
    """A ParallelFor must iterate over parameters, not artifacts.

    backend/src/v2/driver/resolve.go, `resolveInputs`: "artifact iterator not implemented
    yet"."""
    for task in p.tasks:
        if "artifactIterator" in task.spec:
            yield Violation(
                "artifact-iterator", task.path, "ParallelFor over artifacts is not implemented"
            )


def named_loop_outputs(p: _Pipeline, backend: str) -> Iterator[Violation]:
    """Before 2.16.0, a ParallelFor with a name must not have outputs that are consumed.

    backend/src/v2/compiler/argocompiler/dag.go, `iteratorTask`/`iterationItemTask` at 2.15.0
    gave the iteration DAG's driver the Argo task name instead of the loop's task key, so the
    loop's outputs were recorded under a name no consumer looks up (kubeflow/pipelines#13239,
    fixed by #12808 in 2.16.0)."""
    if _version(backend) >= (2, 16, 0):
        return
    for loop in p.tasks:
        name = loop.spec.get("taskInfo", {}).get("name", loop.key)
        if p.is_loop(loop) and name != loop.key and any(True for _ in p.consumers(loop)):
            yield Violation(
                "named-loop-outputs",
                loop.path,
                f"ParallelFor named {name!r} has consumed outputs: lost on backend {backend}",
            )


def image_placeholder_input(p: _Pipeline) -> Iterator[Violation]:
    """A container image given at run time must be one of the task's own input parameters.

    backend/src/v2/driver/resolve.go, `resolvePodSpecInputRuntimeParameter`: an image of the
    form `{{$.inputs.parameters['…']}}` is looked up in the task's executor input only
    ("executorInput did not contain container Image input parameter")."""
    prefix, suffix = "{{$.inputs.parameters['", "']}}"
    for task in p.tasks:
        image = p.executor(task).get("container", {}).get("image", "")
        if image.startswith(prefix) and image.endswith(suffix):
            name = image[len(prefix) : -len(suffix)]
            if name not in task.spec.get("inputs", {}).get("parameters", {}):
                yield Violation(
                    "image-placeholder-input",
                    task.path,
                    f"the image comes from input parameter {name!r}, which the task lacks",
                )


def _placeholders(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        if "{{$.inputs.parameters[" in value:
            yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _placeholders(item)
    elif isinstance(value, list):
        for item in value:
            yield from _placeholders(item)


def channel_in_constant(p: _Pipeline) -> Iterator[Violation]:
    """A pipeline value inside a list or dict argument is never filled in.

    backend/src/v2/driver/resolve.go, `resolveInputParameter`: a `runtimeValue.constant` is
    passed to the task as it is; only a whole-string system placeholder
    (`{{$.pipeline_job_uuid}}` …) is substituted. The SDK compiles `f(x={"a": param})` into
    such a constant holding the text `{{$.inputs.parameters['pipelinechannel--param']}}`,
    which kfp.local fills in and the backend does not: the task would get the placeholder."""
    for task in p.tasks:
        for name, spec in task.spec.get("inputs", {}).get("parameters", {}).items():
            constant = spec.get("runtimeValue", {}).get("constant")
            if isinstance(constant, Mapping | list) and any(True for _ in _placeholders(constant)):
                yield Violation(
                    "channel-in-constant",
                    task.path,
                    f"input {name!r} is a list/dict holding pipeline values; pass them as "
                    "separate parameters",
                )


def cache_follows_data(p: _Pipeline) -> Iterator[Violation]:
    """A cached task that reads data by URI must also take a fingerprint of that data.

    backend/src/v2/cacheutils/cache.go, `GenerateCacheKey` (called by driver/cache.go,
    `getFingerPrint`): the key holds input parameter values, input artifact ids, the command
    and the image, never what a URI points to. A task reading one of DATA_PARAMETERS is only
    keyed on the data when one of its parameters comes from a task that is never cached (the
    listing's fingerprint: mawsflow.orchestration.data_fingerprint)."""
    for task in p.tasks:
        if p.components.get(task.component, {}).get("dag") is not None or not p.cached(task):
            continue
        origins: set[tuple[str, str]] = set()
        for spec in task.spec.get("inputs", {}).get("parameters", {}).values():
            origins |= p.parameter_origins(task, spec)
        data = sorted(name for kind, name in origins if kind == "root" and name in DATA_PARAMETERS)
        fresh = any(kind == "task" and not p.cached(p.by_path[path]) for kind, path in origins)
        if data and not fresh:
            yield Violation(
                "cache-follows-data",
                task.path,
                f"cached, reads {', '.join(data)} by URI, and takes no fingerprint of it from "
                "an uncached task: a rerun over changed data would reuse stale results",
            )


def _condition(task: _Task) -> str:
    return task.spec.get("triggerPolicy", {}).get("condition", "")


# `inputs.parameter_values['name']` / `inputs.artifacts["name"]` in a CEL condition.
_CONDITION_REFERENCE = re.compile(
    r"inputs\.(parameter_values|artifacts)\[\s*(?:'([^']*)'|\"([^\"]*)\")\s*\]"
)


def condition_input(p: _Pipeline) -> Iterator[Violation]:
    """A condition may read only the inputs of the task that carries it.

    backend/src/v2/driver/dag.go, `DAG` (and driver/container.go, `Container`): the condition
    is evaluated by backend/src/v2/expression/expression.go, `Condition`, as CEL over the
    task's own ExecutorInput, which `resolveInputs` (driver/resolve.go) fills from the task's
    `inputs` only. A `dsl.If` on an upstream output works because the SDK adds that output to
    the condition task as the input `pipelinechannel--<task>-<output>`; a name the task lacks
    is a CEL "no such key" evaluation error, and the driver fails."""
    for task in p.tasks:
        condition = _condition(task)
        if not condition:
            continue
        inputs = task.spec.get("inputs", {})
        for kind, single, double in _CONDITION_REFERENCE.findall(condition):
            name = single or double
            section = "parameters" if kind == "parameter_values" else "artifacts"
            if name not in inputs.get(section, {}):
                yield Violation(
                    "condition-input",
                    task.path,
                    f"the condition reads input {name!r}, which the task does not have: "
                    "the driver cannot evaluate it",
                )


def importer_condition(p: _Pipeline) -> Iterator[Violation]:
    """An importer must not carry a condition itself.

    backend/src/v2/compiler/argocompiler/dag.go, `task`: "triggerPolicy.condition on importer
    task is not supported" (the importer's single container runs the driver too, so there is
    no driver output to put a `when` on), and the whole pipeline is refused. An importer inside
    a `dsl.If` is fine: the SDK puts the condition on the enclosing sub-DAG."""
    for task in p.tasks:
        if p.is_importer(task) and _condition(task):
            yield Violation(
                "importer-condition",
                task.path,
                "an importer with triggerPolicy.condition: the backend refuses the pipeline; "
                "put it inside a dsl.If instead",
            )


def collected_conditional_output(p: _Pipeline) -> Iterator[Violation]:
    """`dsl.Collected` must not gather an output made under a condition inside the loop.

    backend/src/v2/driver/resolve.go, `CollectInputs`: the walk expects every iteration to hold
    the producing task. In an iteration whose condition was false the condition's sub-DAG
    exists (CANCELED) but the task inside it never ran, so `tasks[…]` is nil and
    `*currentTask.GetExecution().Type` dereferences nil: the consumer's driver panics, at 2.16.0
    and 2.17.0 alike. kfp.local collects only the iterations that ran. Keep the condition out
    of the loop, or collect a value every iteration makes."""
    for loop in p.tasks:
        if not p.is_loop(loop):
            continue
        for consumer, name in p.consumers(loop):
            inputs = consumer.spec.get("inputs", {})
            spec = inputs.get("artifacts", {}).get(name)
            if spec is not None:
                key, artifact = spec["taskOutputArtifact"].get("outputArtifactKey", ""), True
            else:
                spec = inputs.get("parameters", {}).get(name, {})
                key, artifact = spec["taskOutputParameter"].get("outputParameterKey", ""), False
            guarded = [t.path for t in p.output_path(loop, key, artifact) if _condition(t)]
            if guarded:
                yield Violation(
                    "collected-conditional-output",
                    consumer.path,
                    f"input {name!r} collects an output made under condition "
                    f"{guarded[0]!r} inside a ParallelFor: an iteration whose condition is "
                    "false crashes the driver",
                )


def oneof_artifact_output(p: _Pipeline, backend: str) -> Iterator[Violation]:
    """Before 2.17.0, a consumed `dsl.OneOf` of artifacts works only when its last branch ran.

    backend/src/v2/driver/resolve.go, `GetProducerTask` at 2.16.0 (and 2.16.1) follows a DAG
    output artifact through `tempSelectors[len(tempSelectors)-1]` whatever branch ran; when
    another branch ran, the last branch's task has no execution and `resolveUpstreamArtifacts`
    fails ("… not in tasks"). 2.17.0 picks the branch whose sub-DAG completed
    (kubeflow/pipelines#13436, #13437). A `OneOf` of parameters is resolved by branch state at
    both versions."""
    if _version(backend) >= (2, 17, 0):
        return
    for task in p.tasks:
        for name, spec in task.spec.get("inputs", {}).get("artifacts", {}).items():
            source = spec.get("taskOutputArtifact")
            producer = p.sibling(task, source.get("producerTask", "")) if source else None
            if producer is None or "dag" not in p.components.get(producer.component, {}):
                continue
            if _oneof_on_path(p, producer, source.get("outputArtifactKey", "")):
                yield Violation(
                    "oneof-artifact-output",
                    task.path,
                    f"input {name!r} is a dsl.OneOf of artifacts: backend {backend} follows "
                    "the last branch only and fails when another branch ran",
                )


def _oneof_on_path(p: _Pipeline, dag_task: _Task, output_key: str) -> bool:
    """Whether a DAG output artifact, or one it is selected from, has several selectors."""
    outputs = p.components.get(dag_task.component, {}).get("dag", {}).get("outputs", {})
    selectors = outputs.get("artifacts", {}).get(output_key, {}).get("artifactSelectors", [])
    if len(selectors) > 1:
        return True
    for selector in selectors:
        inner = p.child(dag_task, selector.get("producerSubtask", ""))
        if (
            inner is not None
            and "dag" in p.components.get(inner.component, {})
            and _oneof_on_path(p, inner, selector.get("outputArtifactKey", ""))
        ):
            return True
    return False


RULES = (
    importer_uri_from_task_output,
    importer_display_name,
    collected_importer_output,
    artifact_iterator,
    image_placeholder_input,
    channel_in_constant,
    cache_follows_data,
    condition_input,
    importer_condition,
    collected_conditional_output,
)
VERSIONED_RULES = (named_loop_outputs, oneof_artifact_output)


def check(spec: Spec, backend: str = MIN_BACKEND) -> list[Violation]:
    """Every violation of the backend's rules in a compiled pipeline spec."""
    pipeline = _Pipeline(spec)
    found = [v for rule in RULES for v in rule(pipeline)]
    found += [v for rule in VERSIONED_RULES for v in rule(pipeline, backend)]
    return found


def require_conformance(spec: Spec, backends: Iterable[str] = SUPPORTED_BACKENDS) -> None:
    """Raise ConformanceError unless `spec` passes every rule on every backend in `backends`."""
    found: list[Violation] = []
    for backend in backends:
        found += [v for v in check(spec, backend) if v not in found]
    if found:
        raise ConformanceError(found)


def pipeline_spec(package: str) -> dict[str, Any]:
    """The pipeline spec of a compiled package (its first YAML document)."""
    import yaml

    with open(package, encoding="utf-8") as f:
        documents = list(yaml.safe_load_all(f))
    if not documents or not isinstance(documents[0], dict):
        raise ValueError(f"{package}: not a compiled pipeline")
    return documents[0]
