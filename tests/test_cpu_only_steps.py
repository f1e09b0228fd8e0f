"""The CPU-only steps run without torch, as they must in their images (images/README.md).

The steps whose Dockerfile builds on the CPU-only base, and the pipeline's helper tasks that run
in those images, are run (or their task bodies' imports executed) in a subprocess in which the
`train` extra's packages cannot be imported, as in the image: importing one raises
ModuleNotFoundError. webdataset, which imports torch when it finds it, falls back to its own
stand-ins there just as it does in the image. The images themselves are built and checked by
tests/test_images.py (slow)."""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import json
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from fashion_mnist_corpus import FASHION_MNIST, require_fashion_mnist
from mawsflow.data.eval_loader import eval_loader
from mawsflow.data.eval_shards import open_split, read_classes
from mawsflow.data.fashion_mnist import CLASSES
from mawsflow.orchestration import components, specs

REPO = Path(__file__).resolve().parent.parent


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _train_only_modules() -> list[str]:
    """Top-level modules of the `train` extra's distributions (torch, timm, transformers, …)."""
    with (REPO / "pyproject.toml").open("rb") as f:
        extra = tomllib.load(f)["project"]["optional-dependencies"]["train"]
    wanted = {_normalized(re.match(r"[A-Za-z0-9._-]+", r).group()) for r in extra}
    owners = importlib.metadata.packages_distributions()
    modules = sorted(m for m, dists in owners.items() if {_normalized(d) for d in dists} & wanted)
    assert {"torch", "torchvision", "timm", "transformers"} <= set(modules), modules
    return modules


TRAIN_ONLY = _train_only_modules()


def _cpu_only_steps() -> list[str]:
    """The steps whose image builds on the CPU-only base (`FROM ${BASE_IMAGE}`)."""
    steps = []
    for dockerfile in sorted((REPO / "images").glob("Dockerfile.*")):
        if re.search(r"^FROM \$\{BASE_IMAGE\}\s*$", dockerfile.read_text(), re.MULTILINE):
            steps.append(dockerfile.name.removeprefix("Dockerfile."))
    return steps


CPU_STEPS = _cpu_only_steps()
CPU_COMPONENTS = sorted(
    c.name for c in specs.ALL_COMPONENTS if components.IMAGE_OF[c.name] in CPU_STEPS
)

# Makes the train extra unimportable, then runs the code given after it; prints what it
# returns and which of those modules ended up loaded anyway.
_HARNESS = """
import importlib.abc, json, sys
BLOCKED = set(json.loads(sys.argv[1]))

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())

def body():
{body}

result = body()
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
print("RESULT " + json.dumps({"result": result, "loaded": loaded}))
"""


def _run_without_train_extra(body: str, timeout: float = 120) -> dict:
    script = _HARNESS.replace("{body}", textwrap.indent(textwrap.dedent(body).strip(), "    "))
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(TRAIN_ONLY)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.rsplit("RESULT ", 1)[1])
    assert out["loaded"] == [], out["loaded"]
    assert "torch" not in out["loaded"]
    return out["result"]


def test_the_cpu_only_steps_are_the_images_on_the_cpu_only_base():
    assert set(CPU_STEPS) == {"build-dataset", "prepare-eval", "demo-corpus", "report", "launch"}
    assert {"eval-fingerprint", "eval-dataset"} <= set(CPU_COMPONENTS)


def test_the_stand_in_blocks_torch_as_its_absence_would():
    result = _run_without_train_extra(
        """
        try:
            import mawsflow.data.loader
        except ModuleNotFoundError as exc:
            return exc.name
        return None
        """
    )
    assert result == "torch"


def test_the_data_packages_format_modules_import_without_torch():
    # The modules mawsflow/data/__init__.py promises torch-free: what the CPU-only steps use.
    modules = (
        "manifest",
        "shards",
        "members",
        "eval_shards",
        "fashion_mnist",
        "hashtags",
        "captions",
    )
    lines = "\n".join(f"import mawsflow.data.{m}" for m in modules)
    assert _run_without_train_extra(f"{lines}\nreturn 'imported'") == "imported"


@pytest.mark.parametrize("step", CPU_STEPS)
def test_cpu_only_step_loads_and_answers_help_without_torch(step):
    result = _run_without_train_extra(
        f"""
        import contextlib, io
        from mawsflow.cli import main
        with contextlib.redirect_stdout(io.StringIO()) as out:
            try:
                code = main([{step!r}, "--help"])
            except SystemExit as exc:
                code = exc.code
        return [code, out.getvalue()]
        """
    )
    code, help_text = result
    assert code == 0 and f"mawsflow {step}" in help_text


def _body_imports(component) -> list[str]:
    """The import statements inside a component's body: what its task runs in the image."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(component.python_func)))
    return [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
    ]


def test_helper_task_bodies_of_the_cpu_only_images_import_without_torch():
    imports = {c.name: _body_imports(c) for c in specs.ALL_COMPONENTS if c.name in CPU_COMPONENTS}
    assert imports["eval-dataset"] and imports["eval-fingerprint"]
    lines = "\n".join(sorted({line for found in imports.values() for line in found}))
    result = _run_without_train_extra(f"{lines}\nreturn 'imported'")
    assert result == "imported"


def test_demo_corpus_prepare_eval_and_the_eval_dataset_check_run_without_torch(tmp_path):
    require_fashion_mnist()
    corpus, demo_eval, prepared = tmp_path / "corpus", tmp_path / "demo-eval", tmp_path / "fmnist"
    result = _run_without_train_extra(
        f"""
        import contextlib, io, types
        from mawsflow.cli import main
        from mawsflow.orchestration import components
        with contextlib.redirect_stdout(io.StringIO()):
            demo = main(["demo-corpus", "--corpus-out", {str(corpus)!r},
                         "--eval-out", {str(demo_eval)!r}, "--num-images", "30",
                         "--eval-train-images", "20", "--eval-test-images", "12",
                         "--samples-per-shard", "10"])
        prepare = main(["prepare-eval", "--layout", "fashion-mnist",
                        "--source", {str(FASHION_MNIST)!r}, "--output", {str(prepared)!r},
                        "--limit", "16", "--samples-per-shard", "10"])
        fingerprint = components.eval_fingerprint.python_func(uri={str(prepared)!r})
        reference = types.SimpleNamespace(uri={str(tmp_path / "task" / "dataset")!r}, metadata={{}})
        components.eval_dataset.python_func(
            uri={str(prepared)!r}, name="Fashion-MNIST", fingerprint=fingerprint, dataset=reference
        )
        return [demo, prepare, reference.metadata]
        """,
        timeout=300,
    )
    demo, prepare, metadata = result
    assert demo == 0 and prepare == 0
    assert len(list(corpus.glob("shard-*.tar"))) == 3
    assert metadata["location"] == str(prepared) and len(metadata["fingerprint"]) == 64
    # What they wrote reads back through the torch loader, in the ten classes of Zalando's list.
    for dataset, sizes in ((demo_eval, {"train": 20, "test": 12}), (prepared, {"train": 16})):
        assert read_classes(str(dataset)) == list(CLASSES)
        for split, size in sizes.items():
            opened = open_split(str(dataset), split)
            batches = list(eval_loader(opened, img_size=28, batch_size=8, num_workers=0))
            assert sum(len(labels) for _, labels, _ in batches) == size
            assert all(int(labels.max()) < len(CLASSES) for _, labels, _ in batches)


def test_detection_prepare_eval_and_the_detection_dataset_check_run_without_torch(tmp_path):
    """The detection branch's dataset task (`detection-dataset`) runs in the CPU-only
    prepare-eval image, after prepare-eval --layout lvis|coco: both without the train extra.
    The check refuses a set whose annotation format is not the set's."""
    require_fashion_mnist()
    from mawsflow.dataset.detection_demo import DetectionDemoSpec, generate_detection_demo

    source, prepared = tmp_path / "source", tmp_path / "lvis"
    spec = DetectionDemoSpec(image_size=48, max_items=2, item_sizes=(16, 24))
    generate_detection_demo(source, images_per_split={"train": 4, "val": 3}, spec=spec)
    result = _run_without_train_extra(
        f"""
        import types
        from mawsflow.cli import main
        from mawsflow.orchestration import components
        prepare = main(["prepare-eval", "--layout", "lvis", "--source", {str(source)!r},
                        "--output", {str(prepared)!r}])
        fingerprint = components.eval_fingerprint.python_func(uri={str(prepared)!r})
        reference = types.SimpleNamespace(uri={str(tmp_path / "task" / "dataset")!r}, metadata={{}})
        check = components.detection_dataset.python_func
        check(uri={str(prepared)!r}, name="LVIS", variant="lvis", fingerprint=fingerprint,
              dataset=reference)
        try:
            check(uri={str(prepared)!r}, name="COCO", variant="coco", fingerprint=fingerprint,
                  dataset=types.SimpleNamespace(uri={str(tmp_path / "other")!r}, metadata={{}}))
            refused = None
        except ValueError as exc:
            refused = str(exc)
        return [prepare, reference.metadata, refused]
        """,
        timeout=300,
    )
    prepare, metadata, refused = result
    assert prepare == 0
    assert metadata["location"] == str(prepared) and metadata["format"] == "lvis"
    assert metadata["name"] == "LVIS" and len(metadata["fingerprint"]) == 64
    assert "annotated in 'lvis' format" in refused and "--layout coco" in refused
