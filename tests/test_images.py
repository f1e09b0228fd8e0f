"""The container images: Dockerfile structure (parsed by Docker's own parser), the build plan of
images/build.py, the components/images.yaml rewrite, and the clean failure without an engine.

No Docker engine exists in CI, so nothing here builds an image."""

from __future__ import annotations

import importlib.util
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
    "eval",
    "linear-probe",
    "lowshot",
    "zeroshot",
    "report",
    "launch",
}
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


def test_one_dockerfile_per_step_and_a_base():
    names = {p.name.removeprefix("Dockerfile.") for p in IMAGES.glob("Dockerfile.*")}
    assert names == STEPS | {"base"}
    assert set(build.discover_images()) == STEPS | {"base"}


def test_base_is_the_pinned_cuda_pytorch_runtime_whose_torch_pyproject_pins():
    commands = _parse(IMAGES / "Dockerfile.base")
    froms = _instructions(commands, "FROM")
    assert [c.value[0] for c in froms] == ["${PYTORCH_IMAGE}"]
    runtime = _arg_defaults(commands[: commands.index(froms[0])])["PYTORCH_IMAGE"]
    match = re.fullmatch(
        r"pytorch/pytorch:(?P<torch>\d+\.\d+\.\d+)-cuda(?P<cuda>\d+\.\d+)-cudnn\d+-runtime",
        runtime,
    )
    assert match, f"base runtime {runtime!r} is not a pinned CUDA PyTorch runtime tag"
    pinned = [d for d in _pyproject()["project"]["dependencies"] if d.startswith("torch==")]
    assert pinned == [f"torch=={match['torch']}"]


def test_base_installs_the_wheel_and_fetches_wordnet_with_nltk_into_a_fixed_dir():
    commands = _parse(IMAGES / "Dockerfile.base")
    copies = _instructions(commands, "COPY")
    assert [c.value for c in copies] == [("dist/", "/tmp/mawsflow-dist/")]
    runs = [c.value[0] for c in _instructions(commands, "RUN")]
    assert any("pip install /tmp/mawsflow-dist/*.whl" in run for run in runs)
    env = {}
    for command in _instructions(commands, "ENV"):
        env.update(zip(command.value[::2], command.value[1::2], strict=True))
    assert env["NLTK_DATA"] == "/opt/nltk_data"
    downloads = [r for r in runs if "nltk.downloader" in r]
    assert len(downloads) == 1
    assert '--dir "${NLTK_DATA}"' in downloads[0]
    assert downloads[0].split()[-1] == "wordnet"
    # The build checks WordNet and the CLI as the runtime user, after the switch to it.
    user_at = commands.index(_instructions(commands, "USER")[-1])
    checks = [c for c in commands[user_at:] if c.cmd == "RUN"]
    assert checks and "wordnet" in checks[0].value[0] and "mawsflow --version" in checks[0].value[0]


@pytest.mark.parametrize("step", sorted(STEPS))
def test_step_image_is_metadata_on_the_shared_base_with_its_own_entrypoint(step):
    commands = _parse(IMAGES / f"Dockerfile.{step}")
    # No RUN, COPY, ADD, ENV …: a step image adds no filesystem layer to the base.
    assert {c.cmd for c in commands} <= {"ARG", "FROM", "LABEL", "USER", "ENTRYPOINT"}
    froms = _instructions(commands, "FROM")
    assert [c.value for c in froms] == [("${BASE_IMAGE}",)]
    before_from = commands[: commands.index(froms[0])]
    assert _arg_defaults(before_from) == {"BASE_IMAGE": None}  # build.py always passes it
    entrypoints = _instructions(commands, "ENTRYPOINT")
    assert len(entrypoints) == 1 and entrypoints[0].json
    assert list(entrypoints[0].value) == ["mawsflow", step]
    labels = _labels(commands)
    assert labels["org.opencontainers.image.title"] == f"mawsflow-{step}"
    assert labels["org.opencontainers.image.version"] == "${MAWSFLOW_VERSION}"
    assert labels["org.opencontainers.image.revision"] == "${GIT_COMMIT}"


@pytest.mark.parametrize("name", sorted(STEPS | {"base"}))
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


def test_plan_builds_the_base_first_and_tags_with_version_and_commit():
    plan = build.make_plan(version="0.1.0", commit=COMMIT, dirty=False, registry="reg.example/ml")
    names = [image.name for image in plan.images]
    assert names[0] == "base" and set(names[1:]) == STEPS and len(names) == len(STEPS) + 1
    for image in plan.images:
        assert image.repository == f"reg.example/ml/mawsflow-{image.name}"
        assert image.tags == ("0.1.0", "sha-0123456789ab")
        assert image.build_args["MAWSFLOW_VERSION"] == "0.1.0"
        assert image.build_args["GIT_COMMIT"] == COMMIT
        assert all("latest" not in ref for ref in image.references)
    base, steps = plan.images[0], plan.images[1:]
    assert base.needs_wheel and "BASE_IMAGE" not in base.build_args
    assert "PYTORCH_IMAGE" not in base.build_args  # the Dockerfile's pin applies
    for image in steps:
        assert not image.needs_wheel
        assert image.build_args["BASE_IMAGE"] == "reg.example/ml/mawsflow-base:sha-0123456789ab"


def test_plan_for_chosen_steps_still_builds_their_base_and_marks_a_dirty_tree():
    plan = build.make_plan(
        version="0.1.0", commit=COMMIT, dirty=True, steps=["mae", "launch"], pytorch_image="x/y:1"
    )
    assert [image.name for image in plan.images] == ["base", "launch", "mae"]
    assert plan.images[0].build_args["PYTORCH_IMAGE"] == "x/y:1"
    assert plan.images[1].tags == ("0.1.0", "sha-0123456789ab-dirty")
    assert plan.images[0].repository == "ghcr.io/mawsflow/mawsflow-base"


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
    assert build.push_image(engine, plan.images[1]) == digest


def test_push_errors_from_the_registry_stop_the_build():
    engine = _PushStream(lambda tag: [{"error": "denied", "errorDetail": {"message": "denied"}}])
    plan = build.make_plan(version="0.1.0", commit=COMMIT, dirty=False, steps=["mae"])
    with pytest.raises(build.BuildError, match="denied"):
        build.push_image(engine, plan.images[1])


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
    assert "ghcr.io/mawsflow/mawsflow-base:" in done.stdout
    assert done.stdout.index("mawsflow-base:") < done.stdout.index("mawsflow-wsp:")


def test_without_an_engine_the_build_fails_cleanly():
    host = f"tcp://127.0.0.1:{_closed_loopback_port()}"
    done = _run_build_script("--step", "mae", docker_host=host)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"error: no Docker engine is reachable at {host}" in done.stderr
    assert "--dry-run" in done.stderr
