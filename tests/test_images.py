"""The container images: Dockerfile structure (parsed by Docker's own parser), the build plan of
images/build.py, the components/images.yaml rewrite, and the clean failure without an engine.

The tests at the end build every image with images/build.py on a real Docker engine
(tests/docker_engine.py) and check each one from the inside."""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import dockerfile
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "images"
STEPS = {
    "build-dataset",
    "demo-corpus",
    "prepare-eval",
    "mae",
    "wsp",
    "lit",
    "finetune",
    "finetune-video",
    "finetune-detection",
    "eval",
    "eval-video",
    "eval-detection",
    "linear-probe",
    "lowshot",
    "zeroshot",
    "report",
    "launch",
}
# The images the steps build on: runtime (Debian's Python, WordNet's packages, the user), and on
# it base (mawsflow, CPU-only) and torch-runtime (the train extra), and torch on torch-runtime.
BASES = {"runtime", "base", "torch-runtime", "torch"}
# The bases that hold mawsflow, which every step image builds on.
PACKAGE_BASES = {"base", "torch"}
# The steps that need no torch: their images build on the CPU-only base.
CPU_STEPS = {"build-dataset", "prepare-eval", "demo-corpus", "report", "launch"}
COMMIT = "0123456789abcdef0123456789abcdef01234567"
CREDENTIAL_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSW|CREDENTIAL|AUTH|^AWS_", re.IGNORECASE)
UID_NON_ROOT = re.compile(r"^[1-9][0-9]*(:[1-9][0-9]*)?$")


def _load_build_module():
    spec = importlib.util.spec_from_file_location("mawsflow_images_build", IMAGES / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


build = _load_build_module()


def _pyproject() -> dict:
    with (REPO / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def _parse(path: Path) -> list:
    return list(dockerfile.parse_file(str(path)))


def _instructions(commands: list, name: str) -> list:
    return [c for c in commands if c.cmd == name]


def _labels(commands: list) -> dict[str, str]:
    labels: dict[str, str] = {}
    for command in _instructions(commands, "LABEL"):
        pairs = command.value
        labels.update({pairs[i]: pairs[i + 1].strip('"') for i in range(0, len(pairs), 2)})
    return labels


def _arg_defaults(commands: list) -> dict[str, str | None]:
    defaults: dict[str, str | None] = {}
    for command in _instructions(commands, "ARG"):
        name, _, default = command.value[0].partition("=")
        defaults.setdefault(name, default or None)
    return defaults


def _env(commands: list) -> dict[str, str]:
    env: dict[str, str] = {}
    for command in _instructions(commands, "ENV"):
        env.update(zip(command.value[::2], command.value[1::2], strict=True))
    return env


def test_one_dockerfile_per_step_and_four_bases():
    names = {p.name.removeprefix("Dockerfile.") for p in IMAGES.glob("Dockerfile.*")}
    assert names == STEPS | BASES
    specs = build.discover_images()
    assert set(specs) == STEPS | BASES
    assert build.base_images(specs) == BASES
    assert {name: specs[name].builds_on for name in BASES} == {
        "runtime": None,
        "base": "runtime",
        "torch-runtime": "runtime",
        "torch": "torch-runtime",
    }
    assert {name for name, spec in specs.items() if spec.needs_wheel} == PACKAGE_BASES


def test_runtime_is_debian_bookworm_with_its_python_in_a_venv_and_the_core_holds_no_torch():
    commands = _parse(IMAGES / "Dockerfile.runtime")
    froms = _instructions(commands, "FROM")
    assert [c.value[0] for c in froms] == ["${DEBIAN_IMAGE}"]
    # Not -slim: WordNet's lexnames(5WN) man page, which nltk's lexnames is made from, is kept.
    assert _arg_defaults(commands[: commands.index(froms[0])]) == {
        "DEBIAN_IMAGE": "debian:bookworm"
    }
    env = _env(commands)
    assert env["PATH"].startswith(env["VIRTUAL_ENV"] + "/bin:")
    runs = [c.value[0] for c in _instructions(commands, "RUN")]
    assert any("python3 python3-venv wordnet-base wordnet-sense-index" in r for r in runs)
    assert not any(re.search(r"\bpython -m\b|\bpython -c\b", r) for r in runs)  # Debian: python3
    # The core dependencies hold no torch: the CPU-only steps' images must not carry CUDA.
    core = " ".join(_pyproject()["project"]["dependencies"])
    for heavy in ("torch", "torchvision", "timm", "transformers", "nvidia"):
        assert not re.search(rf"(^|\s|\"){heavy}\b", core), heavy


def test_torch_runtime_installs_the_train_extra_before_mawsflow_whose_torch_pyproject_pins():
    commands = _parse(IMAGES / "Dockerfile.torch-runtime")
    assert [c.value for c in _instructions(commands, "FROM")] == [("${RUNTIME_IMAGE}",)]
    assert not _instructions(commands, "COPY")  # no wheel: cached across mawsflow commits
    runs = [c.value[0] for c in _instructions(commands, "RUN")]
    assert any("pip install" in r and r.endswith("${TRAIN_REQUIREMENTS}") for r in runs)
    train = _pyproject()["project"]["optional-dependencies"]["train"]
    assert "torch==2.14.1" in train and "torchvision==0.29.1" in train
    plan = build.make_plan(version="0.1.0", commit=COMMIT, dirty=False, steps=["mae"])
    (runtime,) = [image for image in plan.images if image.name == "torch-runtime"]
    assert runtime.build_args["TRAIN_REQUIREMENTS"].split() == train
    # Nothing that changes from commit to commit reaches these images' cache keys or config.
    for name in ("runtime", "torch-runtime"):
        (image,) = [i for i in plan.images if i.name == name]
        assert not {"GIT_COMMIT", "MAWSFLOW_VERSION"} & set(image.build_args), name
    checks = " ".join(c.value[0] for c in _instructions(_parse(IMAGES / "Dockerfile.torch"), "RUN"))
    assert "torch.version.cuda" in checks


def test_torch_images_carry_what_the_detection_evaluators_load():
    """lvis and tidecv require PyPI's opencv-python, whose native module links libGL, libxcb
    and glib: without Debian's packages for them `import lvis` fails in the image ("libxcb.so.1:
    cannot open shared object file", found by running the built image). The torch runtime
    installs them after the pip layer (which stays cached), and the torch base imports the
    evaluators at build time, so a missing library fails the build, not an eval-detection run."""
    train = _pyproject()["project"]["optional-dependencies"]["train"]
    assert {"lvis", "tidecv", "pycocotools"} <= {re.match(r"[a-z]+", r).group() for r in train}
    runs = [c.value[0] for c in _instructions(_parse(IMAGES / "Dockerfile.torch-runtime"), "RUN")]
    pip = next(i for i, r in enumerate(runs) if "pip install" in r)
    (apt,) = [i for i, r in enumerate(runs) if "apt-get install" in r]
    assert apt > pip
    assert {"libgl1", "libglib2.0-0", "libxcb1"} <= set(runs[apt].split())
    checks = " ".join(c.value[0] for c in _instructions(_parse(IMAGES / "Dockerfile.torch"), "RUN"))
    assert 'python3 -c "import pycocotools.mask, lvis, tidecv"' in checks


@pytest.mark.parametrize("name", sorted(PACKAGE_BASES))
def test_package_bases_install_the_wheel_and_lay_out_debians_wordnet_for_nltk(name):
    commands = _parse(IMAGES / f"Dockerfile.{name}")
    copies = _instructions(commands, "COPY")
    assert [c.value for c in copies] == [("dist/", "/tmp/mawsflow-dist/")]
    runs = [c.value[0] for c in _instructions(commands, "RUN")]
    installs = [r for r in runs if "pip install" in r]
    wheel = "/tmp/mawsflow-dist/*.whl" if name == "base" else '"${wheel}[train]"'
    assert len(installs) == 1 and wheel in installs[0]
    assert '${WHEELHOUSE_URL:+--no-index --find-links "$WHEELHOUSE_URL"}' in installs[0]
    assert _env(_parse(IMAGES / "Dockerfile.runtime"))["NLTK_DATA"] == "/opt/nltk_data"
    # The project's own layout code, at build time: nothing is downloaded at run time.
    assert "build_nltk_wordnet(DEBIAN_WORDNET_DIR, DEBIAN_LEXNAMES_MAN_PAGE" in installs[0]
    assert not any("nltk.downloader" in r for r in runs)
    # The build checks WordNet and the CLI as the runtime user, after the switch to it.
    user_at = commands.index(_instructions(commands, "USER")[-1])
    checks = [c for c in commands[user_at:] if c.cmd == "RUN"]
    assert checks and "wordnet" in checks[0].value[0] and "mawsflow --version" in checks[0].value[0]
    assert "kfp.dsl.executor_main" in checks[0].value[0]


@pytest.mark.parametrize("step", sorted(STEPS))
def test_step_image_is_metadata_on_its_base_with_its_own_entrypoint(step):
    commands = _parse(IMAGES / f"Dockerfile.{step}")
    # No RUN, COPY, ADD, ENV …: a step image adds no filesystem layer to the base.
    assert {c.cmd for c in commands} <= {"ARG", "FROM", "LABEL", "USER", "ENTRYPOINT"}
    froms = _instructions(commands, "FROM")
    parent = "BASE_IMAGE" if step in CPU_STEPS else "TORCH_IMAGE"
    assert [c.value for c in froms] == [(f"${{{parent}}}",)]
    before_from = commands[: commands.index(froms[0])]
    assert _arg_defaults(before_from) == {parent: None}  # build.py always passes it
    entrypoints = _instructions(commands, "ENTRYPOINT")
    assert len(entrypoints) == 1 and entrypoints[0].json
    assert list(entrypoints[0].value) == ["mawsflow", step]
    labels = _labels(commands)
    assert labels["org.opencontainers.image.title"] == f"mawsflow-{step}"
    assert labels["org.opencontainers.image.version"] == "${MAWSFLOW_VERSION}"
    assert labels["org.opencontainers.image.revision"] == "${GIT_COMMIT}"


@pytest.mark.parametrize("name", sorted(STEPS | BASES))
def test_image_runs_as_non_root_and_holds_no_credentials(name):
    commands = _parse(IMAGES / f"Dockerfile.{name}")
    users = _instructions(commands, "USER")
    assert users, "no USER: the image would run as root"
    assert UID_NON_ROOT.match(users[-1].value[0]), users[-1].original
    assert commands.index(users[-1]) > commands.index(_instructions(commands, "FROM")[-1])
    for command in _instructions(commands, "ENV") + _instructions(commands, "ARG"):
        names = command.value[::2] if command.cmd == "ENV" else [command.value[0].split("=")[0]]
        assert not [n for n in names if CREDENTIAL_NAME.search(n)], command.original
    assert not _instructions(commands, "ADD"), "ADD can fetch URLs; COPY is what is needed"
    text = (IMAGES / f"Dockerfile.{name}").read_text()
    assert not re.search(r":latest\b", text)


def test_oci_labels_of_the_base_carry_version_and_commit():
    labels = _labels(_parse(IMAGES / "Dockerfile.base"))
    assert labels["org.opencontainers.image.version"] == "${MAWSFLOW_VERSION}"
    assert labels["org.opencontainers.image.revision"] == "${GIT_COMMIT}"
    assert labels["org.opencontainers.image.licenses"] == _pyproject()["project"]["license"]


def test_plan_builds_each_base_before_what_builds_on_it_and_tags_with_version_and_commit():
    plan = build.make_plan(version="0.1.0", commit=COMMIT, dirty=False, registry="reg.example/ml")
    names = [image.name for image in plan.images]
    assert names[0] == "runtime" and set(names[1:]) == STEPS | BASES - {"runtime"}
    assert len(names) == len(STEPS) + len(BASES)
    for image in plan.images:
        if image.builds_on:
            assert names.index(image.builds_on) < names.index(image.name)
        assert image.repository == f"reg.example/ml/mawsflow-{image.name}"
        assert image.tags == ("0.1.0", "sha-0123456789ab")
        if image.name not in {"runtime", "torch-runtime"}:
            assert image.build_args["MAWSFLOW_VERSION"] == "0.1.0"
            assert image.build_args["GIT_COMMIT"] == COMMIT
        assert all("latest" not in ref for ref in image.references)
    by_name = {image.name: image for image in plan.images}
    runtime = by_name["runtime"]
    assert runtime.is_base and runtime.builds_on is None and not runtime.needs_wheel
    assert "DEBIAN_IMAGE" not in runtime.build_args  # the Dockerfile's default applies
    assert by_name["base"].needs_wheel and by_name["torch"].needs_wheel
    assert by_name["torch"].build_args["TORCH_RUNTIME_IMAGE"] == (
        "reg.example/ml/mawsflow-torch-runtime:sha-0123456789ab"
    )
    for step in STEPS:
        image = by_name[step]
        assert not image.needs_wheel and not image.is_base
        parent = "base" if step in CPU_STEPS else "torch"
        assert image.build_args[build.parent_arg(parent)] == (
            f"reg.example/ml/mawsflow-{parent}:sha-0123456789ab"
        )
    assert not any("WHEELHOUSE_URL" in image.build_args for image in plan.images)
    assert not plan.pull and plan.network_mode is None


def test_plan_for_chosen_steps_still_builds_their_bases_and_marks_a_dirty_tree():
    plan = build.make_plan(
        version="0.1.0",
        commit=COMMIT,
        dirty=True,
        steps=["mae", "launch"],
        base_image="local/debian:bookworm",
    )
    names = [image.name for image in plan.images]
    assert names == ["runtime", "base", "torch-runtime", "launch", "torch", "mae"]
    assert plan.images[0].build_args["DEBIAN_IMAGE"] == "local/debian:bookworm"
    assert plan.images[1].tags == ("0.1.0", "sha-0123456789ab-dirty")
    assert plan.images[0].repository == "ghcr.io/mawsflow/mawsflow-runtime"


def test_plan_with_a_wheelhouse_passes_its_url_to_the_images_that_install_packages(tmp_path):
    plan = build.make_plan(
        version="0.1.0", commit=COMMIT, dirty=False, wheelhouse=tmp_path, network_mode="host"
    )
    with_url = {image.name for image in plan.images if "WHEELHOUSE_URL" in image.build_args}
    assert with_url == {"base", "torch-runtime", "torch"}
    # A fixed port: the URL is part of the layer cache key of the RUN that installs torch.
    assert {
        image.build_args["WHEELHOUSE_URL"] for image in plan.images if image.name in with_url
    } == {f"http://127.0.0.1:{build.DEFAULT_WHEELHOUSE_PORT}/"}


def test_a_dockerfile_that_does_not_declare_a_passed_argument_is_refused(tmp_path):
    (tmp_path / "Dockerfile.runtime").write_text("FROM ${DEBIAN_IMAGE}\n")
    (tmp_path / "Dockerfile.base").write_text("FROM ${RUNTIME_IMAGE}\n")
    with pytest.raises(build.BuildError, match="base: does not declare ARG RUNTIME_IMAGE"):
        build.make_plan(version="0.1.0", commit=COMMIT, dirty=False, images_dir=tmp_path)


def test_a_dockerfile_must_name_its_base_through_a_build_argument(tmp_path):
    (tmp_path / "Dockerfile.base").write_text("FROM debian:bookworm\n")
    with pytest.raises(build.BuildError, match="exactly one `FROM"):
        build.discover_images(tmp_path)


def test_the_former_pytorch_image_option_names_the_debian_base(monkeypatch, capsys):
    monkeypatch.setattr(build, "git_state", lambda: (COMMIT, False))
    assert build.main(["--dry-run", "--pytorch-image", "local/debian:bookworm"]) == 0
    out = capsys.readouterr().out
    assert "--build-arg DEBIAN_IMAGE=local/debian:bookworm" in out
    assert "no pull (local images)" in out


def test_plan_rejects_unknown_steps_and_bad_commits():
    with pytest.raises(build.BuildError, match="no image named 'pretrain'"):
        build.make_plan(version="0.1.0", commit=COMMIT, dirty=False, steps=["pretrain"])
    with pytest.raises(build.BuildError, match="not a 40-digit hex"):
        build.make_plan(version="0.1.0", commit="HEAD", dirty=False)


def test_build_order_refuses_a_cycle():
    specs = {
        "a": build.ImageSpec("a", Path("a"), builds_on="b"),
        "b": build.ImageSpec("b", Path("b"), builds_on="a"),
    }
    with pytest.raises(build.BuildError, match="cycle"):
        build.build_order(specs, ["a"])


def test_format_plan_lists_every_reference_in_build_order():
    plan = build.make_plan(version="0.1.0", commit=COMMIT, dirty=False, push=True)
    text = build.format_plan(plan)
    positions = [text.index(image.references[0]) for image in plan.images]
    assert positions == sorted(positions)
    assert "record the step digests in" in text


def test_committed_image_references_name_every_step_at_the_package_version():
    references = yaml.safe_load((REPO / "components" / "images.yaml").read_text())
    version = re.escape(_pyproject()["project"]["version"])
    assert set(references) == STEPS
    for step, reference in references.items():
        # The committed default, or what `build.py --push` pinned (any registry, a digest).
        assert re.fullmatch(rf"\S+/mawsflow-{step}:{version}(@sha256:[0-9a-f]{{64}})?", reference)


def test_writing_digests_replaces_only_the_pushed_steps(tmp_path):
    target = tmp_path / "images.yaml"
    target.write_text((REPO / "components" / "images.yaml").read_text())
    digest = "sha256:" + "ab" * 32
    pinned = f"reg.example/ml/mawsflow-mae:0.1.0@{digest}"
    build.write_image_references(target, {"mae": pinned})
    text = target.read_text()
    assert text.startswith("# The container image of each pipeline step")
    written = yaml.safe_load(text)
    original = yaml.safe_load((REPO / "components" / "images.yaml").read_text())
    assert list(written) == list(original)
    assert written["mae"] == pinned
    assert {k: v for k, v in written.items() if k != "mae"} == {
        k: v for k, v in original.items() if k != "mae"
    }


def test_a_malformed_image_reference_file_is_refused(tmp_path):
    target = tmp_path / "images.yaml"
    target.write_text("- mae\n- wsp\n")
    with pytest.raises(build.BuildError, match="mapping of step name to image reference"):
        build.write_image_references(target, {"mae": "x"})


class _PushStream:
    """Stands in for the engine's push endpoint: replays the JSON stream it sends."""

    def __init__(self, chunks):
        self.api = self
        self._chunks = chunks

    def push(self, repository, tag, stream, decode):
        assert stream and decode
        return iter(self._chunks(tag))


def test_push_returns_the_digest_the_registry_reported_for_the_version_tag():
    digest = "sha256:" + "0f" * 32
    engine = _PushStream(
        lambda tag: [
            {"status": "Preparing", "progressDetail": {}, "id": "abc"},
            {"status": f"{tag}: digest: {digest} size: 1234"},
            {"progressDetail": {}, "aux": {"Tag": tag, "Digest": digest, "Size": 1234}},
        ]
    )
    plan = build.make_plan(version="0.1.0", commit=COMMIT, dirty=False, steps=["mae"])
    assert build.push_image(engine, plan.images[-1]) == digest


def test_push_errors_from_the_registry_stop_the_build():
    engine = _PushStream(lambda tag: [{"error": "denied", "errorDetail": {"message": "denied"}}])
    plan = build.make_plan(version="0.1.0", commit=COMMIT, dirty=False, steps=["mae"])
    with pytest.raises(build.BuildError, match="denied"):
        build.push_image(engine, plan.images[-1])


def test_push_of_a_dirty_tree_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(build, "git_state", lambda: (COMMIT, True))
    assert build.main(["--push", "--dry-run"]) == 1
    assert "uncommitted changes" in capsys.readouterr().err


def _closed_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run_build_script(*args: str, docker_host: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(IMAGES / "build.py"), *args],
        env={"PATH": "/usr/bin:/bin", "DOCKER_HOST": docker_host},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_dry_run_prints_the_plan_without_an_engine():
    host = f"tcp://127.0.0.1:{_closed_loopback_port()}"
    done = _run_build_script("--dry-run", "--step", "wsp", docker_host=host)
    assert done.returncode == 0, done.stderr
    assert "ghcr.io/mawsflow/mawsflow-torch:" in done.stdout
    assert done.stdout.index("mawsflow-torch:") < done.stdout.index("mawsflow-wsp:")


def test_without_an_engine_the_build_fails_cleanly():
    host = f"tcp://127.0.0.1:{_closed_loopback_port()}"
    done = _run_build_script("--step", "mae", docker_host=host)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"error: no Docker engine is reachable at {host}" in done.stderr
    assert "--dry-run" in done.stderr


# --------------------------------------------------------------------------------------------
# Built and run on a real engine (tests/docker_engine.py): every image as images/build.py makes
# it, then each one checked from the inside.

RUNTIME_UID = 10001
# Run as the image's own user through `python3 -c`: what each image must offer every step.
_PROBE = r"""
import importlib.util, json, os, pathlib, sys, tempfile
result = {"uid": os.getuid(), "gid": os.getgid(), "writable": {}}
places = {
    "HOME": os.environ["HOME"],
    "/tmp": tempfile.gettempdir(),
    "TORCH_HOME": os.environ["TORCH_HOME"],
    "HF_HOME": os.environ["HF_HOME"],
    "MPLCONFIGDIR": os.environ["MPLCONFIGDIR"],
}
for name, place in places.items():
    try:
        probe = pathlib.Path(place, "write-probe")
        probe.write_text("ok")
        probe.unlink()
        result["writable"][name] = place
    except OSError as exc:
        result["writable"][name] = f"NOT WRITABLE: {exc}"
import matplotlib, matplotlib.pyplot  # builds its font cache under MPLCONFIGDIR
result["matplotlib_cache"] = matplotlib.get_cachedir()
import kfp.dsl.executor_main  # what the KFP launcher runs: python3 -m kfp.dsl.executor_main
result["python3"] = sys.executable
from mawsflow.dataset.wordnet_corpus import load_wordnet
wordnet = load_wordnet()
result["wordnet_root"] = str(wordnet.root)
result["wordnet_version"] = wordnet.get_version()
result["dog"] = wordnet.synsets("dog", pos="n")[0].name()
full = sys.argv[1:] == ["full"]  # the bases: the whole database and torch itself
result["noun_synsets"] = sum(1 for _ in wordnet.all_synsets("n")) if full else None
result["torch"] = importlib.util.find_spec("torch") is not None
site = pathlib.Path(importlib.util.find_spec("kfp").origin).parents[1]
result["nvidia"] = sorted(p.name for p in site.glob("nvidia*"))
if result["torch"] and full:
    import torch
    result["torch_cuda"] = torch.version.cuda
    result["torch_hub"] = torch.hub.get_dir()
print("PROBE " + json.dumps(result))
"""


def _run(client, reference: str, command: list[str], **options) -> str:
    """Run a container to completion (no network unless asked) and return its output; a
    non-zero exit fails with the output."""
    options.setdefault("network_mode", "none")
    container = client.containers.run(reference, command, detach=True, **options)
    try:
        status = container.wait(timeout=300)["StatusCode"]
        output = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    assert status == 0, f"{reference} {command} exited {status}:\n{output}"
    return output


@pytest.fixture(scope="module")
def engine_client(docker_engine):
    client = docker_engine.client()
    yield client
    client.close()


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the first test to use the images builds them (minutes)
@pytest.mark.parametrize("step", sorted(STEPS))
def test_built_step_image_answers_help_through_its_entrypoint(built_images, engine_client, step):
    reference = built_images.references[step]
    config = engine_client.images.get(reference).attrs["Config"]
    assert config["Entrypoint"] == ["mawsflow", step]
    output = _run(engine_client, reference, ["--help"])
    assert output.startswith(f"usage: mawsflow {step} "), output


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the first test to use the images builds them (minutes)
@pytest.mark.parametrize("name", sorted(STEPS | PACKAGE_BASES))
def test_built_image_runs_as_its_numeric_user_with_writable_caches_and_offline_wordnet(
    built_images, engine_client, name
):
    reference = built_images.references[name]
    image = engine_client.images.get(reference)
    # Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
    assert image.attrs["Config"]["User"] == f"{RUNTIME_UID}:{RUNTIME_UID}"
    # No network at all: WordNet must be in the image, and nothing may be fetched.
    # Step images are their base's filesystem with another entrypoint: the bases get the
    # thorough (slow) checks, every image the quick ones.
    full = ["full"] if name in PACKAGE_BASES else []
    output = _run(engine_client, reference, ["-c", _PROBE, *full], entrypoint=["python3"])
    probe = json.loads(output.split("PROBE ", 1)[1])
    assert (probe["uid"], probe["gid"]) == (RUNTIME_UID, RUNTIME_UID)
    assert not [v for v in probe["writable"].values() if v.startswith("NOT WRITABLE")], probe
    assert probe["matplotlib_cache"] == "/home/mawsflow/.cache/matplotlib"
    assert probe["python3"] == "/opt/mawsflow/bin/python3"
    # The nltk layout built from Debian's WordNet at build time (WordNet 3.0: 82,115 nouns).
    assert probe["wordnet_root"].startswith("/opt/nltk_data/corpora/wordnet")
    assert probe["wordnet_version"] == "3.0" and probe["dog"] == "dog.n.01"
    if full:
        assert probe["noun_synsets"] == 82115
    if name == "base" or name in CPU_STEPS:
        # The CPU-only images: no torch and none of CUDA's libraries.
        assert not probe["torch"] and probe["nvidia"] == [], probe
    else:
        assert probe["torch"] and probe["nvidia"], probe
        if full:
            assert probe["torch_cuda"], probe
            assert probe["torch_hub"] == "/home/mawsflow/.cache/torch/hub"


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the first test to use the images builds them (minutes)
def test_cpu_only_images_are_a_fraction_of_the_torch_images(built_images, engine_client):
    size = {
        name: engine_client.images.get(ref).attrs["Size"]
        for name, ref in built_images.references.items()
    }
    print(f"image build: {built_images.seconds:.0f} s; sizes (MB):")
    for name in sorted(size):
        print(f"  {name}: {size[name] / 1e6:.0f}")
    # Step images add metadata only: exactly their base's size.
    for step in STEPS:
        assert size[step] == size["base" if step in CPU_STEPS else "torch"], step
    assert size["runtime"] < size["base"] < 1e9, size
    assert size["torch"] > 4 * size["base"], size


def _wheel(path: Path, marker: str) -> Path:
    """A minimal valid wheel of a project named `mawsflow` without dependencies, holding
    `marker` in one module."""
    import base64
    import hashlib
    import zipfile

    files = {
        "mawsflow_marker.py": f"MARKER = {marker!r}\n",
        "mawsflow-0.1.0.dist-info/METADATA": (
            "Metadata-Version: 2.1\nName: mawsflow\nVersion: 0.1.0\n"
        ),
        "mawsflow-0.1.0.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    record.append("mawsflow-0.1.0.dist-info/RECORD,,")
    files["mawsflow-0.1.0.dist-info/RECORD"] = "\n".join(record) + "\n"
    path.mkdir(parents=True, exist_ok=True)
    wheel = path / "mawsflow-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return wheel


def test_the_wheelhouse_holds_the_new_project_wheel_not_an_earlier_one(tmp_path):
    # An earlier build left a wheel of the same name (same version, older code); pip would
    # keep it as "already downloaded" and the images would install the old code.
    import zipfile

    wheelhouse = tmp_path / "wheelhouse"
    _wheel(wheelhouse, "old")
    fresh = _wheel(tmp_path / "dist", "new")
    build.build_wheelhouse(fresh, wheelhouse)
    with zipfile.ZipFile(wheelhouse / fresh.name) as archive:
        assert "new" in archive.read("mawsflow_marker.py").decode()
