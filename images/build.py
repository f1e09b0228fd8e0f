#!/usr/bin/env python3
"""Build, tag and push the mawsflow container images: one per pipeline step, on two shared bases.

What it does, in order:
  1. builds the mawsflow wheel from this checkout (pip wheel --no-deps); with --wheelhouse, also
     every wheel the images install (pip wheel), served to the builds on loopback so that they
     need no package index (air-gapped builds, or engines whose containers cannot reach PyPI);
  2. builds images/Dockerfile.base (Debian's Python, mawsflow without torch: the CPU steps),
     images/Dockerfile.torch on it (mawsflow's `train` extra: PyPI's CUDA torch), then every
     images/Dockerfile.<step> on the base its `FROM ${<NAME>_IMAGE}` names (dependency order);
  3. tags each image <registry>/mawsflow-<name>:<package version> and
     <registry>/mawsflow-<name>:sha-<git commit> (with -dirty when src/, pyproject.toml or images/
     has uncommitted changes);
  4. with --push, pushes every tag and writes <registry>/mawsflow-<step>:<version>@sha256:<digest>
     for each pushed step into components/images.yaml, where the components read their images.

It talks to a Docker engine through the Docker SDK (DOCKER_HOST and friends, as the docker CLI
does); pushing uses the credentials of `docker login`, so this script never holds any.
`--dry-run` prints the plan and needs no engine.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import graphlib
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGES_DIR = REPO_ROOT / "images"
DEFAULT_IMAGES_FILE = REPO_ROOT / "components" / "images.yaml"
DEFAULT_REGISTRY = "ghcr.io/mawsflow"
BASE = "base"
# Paths whose content ends up in an image: a change here makes the commit tag a lie.
IMAGE_SOURCES = ("src", "pyproject.toml", "images")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
FROM_RE = re.compile(r"^FROM\s+\$\{([A-Z0-9_]+)\}\s*$", re.MULTILINE)
ARG_RE = re.compile(r"^ARG\s+([A-Za-z0-9_]+)", re.MULTILINE)
COPY_DIST_RE = re.compile(r"^COPY\s+dist/", re.MULTILINE)
# The external OS image of Dockerfile.base; --base-image replaces it.
EXTERNAL_BASE_ARG = "DEBIAN_IMAGE"
# Set when the builds install from a wheelhouse served on loopback (--wheelhouse). The port is
# fixed because a build argument's value is part of the layer cache key: a new port per build
# would reinstall torch every time.
WHEELHOUSE_ARG = "WHEELHOUSE_URL"
DEFAULT_WHEELHOUSE_PORT = 38471
# The `train` extra's requirements (pyproject.toml), for Dockerfile.torch-runtime.
TRAIN_REQUIREMENTS_ARG = "TRAIN_REQUIREMENTS"
IMAGES_FILE_HEADER = """\
# The container image of each pipeline step: the one place component code reads image
# references from. `images/build.py --push` rewrites the entries it pushed as
# repository:version@sha256:digest, so that a compiled pipeline names exact images.
"""


class BuildError(RuntimeError):
    """A build that cannot go on; main() prints it without a traceback."""


@dataclass(frozen=True)
class ImageSpec:
    """One Dockerfile under images/: the image it builds, the image of ours it builds FROM (None
    for an external image), the build arguments it declares, and whether it installs the wheel."""

    name: str
    dockerfile: Path
    builds_on: str | None
    declared_args: frozenset[str] = frozenset()
    needs_wheel: bool = False


@dataclass(frozen=True)
class PlannedImage:
    """One image build: where it comes from, what it is called, and the build arguments."""

    name: str
    dockerfile: Path
    repository: str
    tags: tuple[str, ...]
    build_args: Mapping[str, str]
    needs_wheel: bool
    builds_on: str | None = None  # None: an external image
    is_base: bool = False  # other images build on it; it is no step's image

    @property
    def references(self) -> list[str]:
        return [f"{self.repository}:{tag}" for tag in self.tags]


@dataclass(frozen=True)
class BuildPlan:
    version: str
    commit: str
    dirty: bool
    registry: str
    images: tuple[PlannedImage, ...]
    push: bool
    images_file: Path
    no_cache: bool = False
    pull: bool = False
    network_mode: str | None = None
    wheelhouse: Path | None = None
    wheelhouse_port: int = DEFAULT_WHEELHOUSE_PORT


def parent_arg(name: str) -> str:
    """The build argument that names image `name` to the Dockerfiles built on it."""
    return f"{name.upper().replace('-', '_')}_IMAGE"


def _read_dockerfile(dockerfile: Path) -> tuple[str, frozenset[str], bool]:
    """The argument the (single) FROM names, the declared ARGs, and whether dist/ is copied."""
    text = dockerfile.read_text(encoding="utf-8")
    froms = FROM_RE.findall(text)
    if len(froms) != 1:
        raise BuildError(
            f"{dockerfile}: expected exactly one `FROM ${{<NAME>_IMAGE}}` line (the image it "
            f"builds on, passed as a build argument), found {len(froms)}"
        )
    declared = frozenset(ARG_RE.findall(text))
    return froms[0], declared, bool(COPY_DIST_RE.search(text))


def discover_images(images_dir: Path = IMAGES_DIR) -> dict[str, ImageSpec]:
    """Every images/Dockerfile.<name>. `FROM ${BASE_IMAGE}` builds on Dockerfile.base,
    `FROM ${TORCH_IMAGE}` on Dockerfile.torch; an argument naming no image of ours (the base's
    DEBIAN_IMAGE) is an external image."""
    found: dict[str, tuple[Path, str, frozenset[str], bool]] = {}
    for dockerfile in sorted(images_dir.glob("Dockerfile.*")):
        name = dockerfile.name.removeprefix("Dockerfile.")
        found[name] = (dockerfile, *_read_dockerfile(dockerfile))
    if BASE not in found:
        raise BuildError(f"{images_dir}: no Dockerfile.{BASE}, which the step images build on")
    ours = {parent_arg(name): name for name in found}
    return {
        name: ImageSpec(name, dockerfile, ours.get(arg), declared, needs_wheel)
        for name, (dockerfile, arg, declared, needs_wheel) in found.items()
    }


def base_images(specs: Mapping[str, ImageSpec]) -> set[str]:
    """The images other images build on: not steps, so they get no entrypoint."""
    return {spec.builds_on for spec in specs.values() if spec.builds_on}


def build_order(specs: Mapping[str, ImageSpec], wanted: Iterable[str]) -> list[ImageSpec]:
    """`wanted` and every image they build on, each after the image it builds on."""
    graph: dict[str, set[str]] = {}
    pending = list(wanted)
    while pending:
        name = pending.pop()
        if name in graph:
            continue
        if name not in specs:
            raise BuildError(f"no image named {name!r}; known: {', '.join(sorted(specs))}")
        parent = specs[name].builds_on
        graph[name] = {parent} if parent else set()
        pending.extend(graph[name])
    try:
        sorter = graphlib.TopologicalSorter(graph)
        sorter.prepare()
    except graphlib.CycleError as exc:
        raise BuildError(f"images build on each other in a cycle: {exc.args[1]}") from exc
    order: list[ImageSpec] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())  # sorted: the same plan on every run
        order.extend(specs[name] for name in ready)
        sorter.done(*ready)
    return order


def package_version(pyproject: Path = REPO_ROOT / "pyproject.toml") -> str:
    with pyproject.open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def train_requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[str]:
    """The `train` extra's requirement strings, one shell word each."""
    with pyproject.open("rb") as f:
        extras = tomllib.load(f)["project"].get("optional-dependencies", {})
    requirements = extras.get("train")
    if not requirements:
        raise BuildError(f"{pyproject}: no `train` extra, which Dockerfile.torch-runtime installs")
    spaced = [r for r in requirements if any(c.isspace() for c in r)]
    if spaced:
        raise BuildError(f"{pyproject}: write the train extra's {spaced} without spaces")
    return list(requirements)


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        )
    except FileNotFoundError as exc:
        raise BuildError("git is not installed; the images are tagged with the commit") from exc
    except subprocess.CalledProcessError as exc:
        raise BuildError(f"git {' '.join(args)} failed: {exc.stderr.strip()}") from exc
    return done.stdout.strip()


def git_state() -> tuple[str, bool]:
    """The checked-out commit, and whether the files that go into the images differ from it."""
    commit = _git("rev-parse", "HEAD")
    changes = _git("status", "--porcelain", "--", *IMAGE_SOURCES)
    return commit, bool(changes)


def repository_name(registry: str, image: str) -> str:
    return f"{registry.rstrip('/')}/mawsflow-{image}"


def make_plan(
    *,
    version: str,
    commit: str,
    dirty: bool,
    registry: str = DEFAULT_REGISTRY,
    steps: Sequence[str] | None = None,
    push: bool = False,
    images_file: Path = DEFAULT_IMAGES_FILE,
    base_image: str | None = None,
    no_cache: bool = False,
    pull: bool = False,
    network_mode: str | None = None,
    wheelhouse: Path | None = None,
    wheelhouse_port: int = DEFAULT_WHEELHOUSE_PORT,
    images_dir: Path = IMAGES_DIR,
    pyproject: Path = REPO_ROOT / "pyproject.toml",
) -> BuildPlan:
    """What a build does: the images in dependency order, their tags and build arguments."""
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise BuildError(f"git commit {commit!r} is not a 40-digit hex object name")
    specs = discover_images(images_dir)
    bases = base_images(specs)
    all_steps = [name for name in specs if name not in bases]
    chosen = list(steps) if steps else all_steps
    commit_tag = f"sha-{commit[:12]}" + ("-dirty" if dirty else "")
    tags = (version, commit_tag)
    planned: list[PlannedImage] = []
    for spec in build_order(specs, chosen):
        # Version and commit go only where they are declared: the runtime images leave them out
        # so that they, and their layer cache, stay the same from commit to commit.
        args = {
            name: value
            for name, value in (("MAWSFLOW_VERSION", version), ("GIT_COMMIT", commit))
            if name in spec.declared_args
        }
        if spec.builds_on is None:
            if base_image:
                args[EXTERNAL_BASE_ARG] = base_image
        else:
            # The commit tag, not the version tag: it names exactly the base built in this run.
            parent = f"{repository_name(registry, spec.builds_on)}:{commit_tag}"
            args[parent_arg(spec.builds_on)] = parent
        if wheelhouse is not None and WHEELHOUSE_ARG in spec.declared_args:
            args[WHEELHOUSE_ARG] = wheelhouse_url(wheelhouse_port)
        if TRAIN_REQUIREMENTS_ARG in spec.declared_args:
            args[TRAIN_REQUIREMENTS_ARG] = " ".join(train_requirements(pyproject))
        undeclared = sorted(set(args) - spec.declared_args)
        if undeclared:
            raise BuildError(
                f"{spec.dockerfile}: does not declare ARG {', '.join(undeclared)}, which the "
                "build passes"
            )
        planned.append(
            PlannedImage(
                name=spec.name,
                dockerfile=spec.dockerfile,
                repository=repository_name(registry, spec.name),
                tags=tags,
                build_args=args,
                needs_wheel=spec.needs_wheel,
                builds_on=spec.builds_on,
                is_base=spec.name in bases,
            )
        )
    return BuildPlan(
        version=version,
        commit=commit,
        dirty=dirty,
        registry=registry,
        images=tuple(planned),
        push=push,
        images_file=images_file,
        no_cache=no_cache,
        pull=pull,
        network_mode=network_mode,
        wheelhouse=wheelhouse,
        wheelhouse_port=wheelhouse_port,
    )


def wheelhouse_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/"


def format_plan(plan: BuildPlan) -> str:
    state = "with uncommitted changes" if plan.dirty else "clean"
    lines = [
        f"mawsflow {plan.version} at commit {plan.commit} ({state}), registry {plan.registry}",
        "",
        "1. wheel: pip wheel --no-deps (this checkout), staged as dist/ for the images that "
        "install it",
    ]
    if plan.wheelhouse is not None:
        lines.append(
            f"   wheelhouse: pip wheel of mawsflow[train] into {plan.wheelhouse}, served at "
            f"{wheelhouse_url(plan.wheelhouse_port)} to the builds (no package index)"
        )
    build_options = [f"network {plan.network_mode}" if plan.network_mode else "default network"]
    build_options.append("pull the external base" if plan.pull else "no pull (local images)")
    lines.append(f"   builds: {', '.join(build_options)}")
    for number, image in enumerate(plan.images, start=2):
        lines.append(f"{number}. {image.name}: {image.dockerfile.relative_to(REPO_ROOT)}")
        for key, value in sorted(image.build_args.items()):
            lines.append(f"     --build-arg {key}={value}")
        lines.extend(f"     tag {reference}" for reference in image.references)
    lines.append("")
    if plan.push:
        lines.append(f"push: every tag above, then record the step digests in {plan.images_file}")
    else:
        lines.append(f"push: no (--push pushes the tags and records digests in {plan.images_file})")
    return "\n".join(lines)


def connect() -> docker.DockerClient:
    """A client for the engine that DOCKER_HOST (or the default socket) names, checked alive."""
    where = os.environ.get("DOCKER_HOST") or "the default socket (unix:///var/run/docker.sock)"
    try:
        # Long RUN steps (installing torch) print nothing for minutes: no read timeout to hit.
        client = docker.from_env(timeout=3600)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        raise BuildError(
            f"no Docker engine is reachable at {where}: {exc}\n"
            "Start a Docker engine or point DOCKER_HOST at one; `--dry-run` shows the plan "
            "without an engine."
        ) from exc
    return client


def build_wheel(destination: Path) -> Path:
    destination.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(destination)]
    # Fixed zip timestamps: the same sources give the same wheel bytes, so the layer that
    # copies the wheel into an image stays cached until the code changes.
    env = {**os.environ, "SOURCE_DATE_EPOCH": "315532800"}  # 1980-01-01, zip's earliest
    try:
        subprocess.run([*command, str(REPO_ROOT)], check=True, stdout=sys.stderr, env=env)
    except subprocess.CalledProcessError as exc:
        raise BuildError(f"building the mawsflow wheel failed (exit {exc.returncode})") from exc
    wheels = sorted(destination.glob("mawsflow-*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"expected one mawsflow wheel in {destination}, found {len(wheels)}")
    return wheels[0]


def _stream_errors(chunks: Iterable[dict]) -> Iterator[dict]:
    """Pass the engine's progress to stdout; turn its in-stream errors into BuildError."""
    for chunk in chunks:
        if "error" in chunk:
            raise BuildError(chunk.get("errorDetail", {}).get("message") or chunk["error"])
        if "stream" in chunk:
            sys.stdout.write(chunk["stream"])
        elif "status" in chunk and "progressDetail" not in chunk:
            sys.stdout.write(f"{chunk['status']} {chunk.get('id', '')}".rstrip() + "\n")
        yield chunk


def build_wheelhouse(wheel: Path, destination: Path) -> None:
    """Every wheel the images install: mawsflow with its `train` extra and all dependencies,
    for this interpreter's platform (the images' Python is Debian bookworm's 3.11, as is the
    one the tests run on). pip's cache makes a second run quick."""
    destination.mkdir(parents=True, exist_ok=True)
    # A wheel of this project left by an earlier build has the same file name as the new one
    # (the version changes only on release), and pip takes a file "already downloaded" into
    # --wheel-dir over the one it is given: the images would install the old code and resolve
    # the old dependencies. So the project's own wheels go first.
    for stale in destination.glob(f"{wheel.name.split('-', 1)[0]}-*.whl"):
        stale.unlink()
    command = [sys.executable, "-m", "pip", "wheel", "--wheel-dir", str(destination)]
    try:
        subprocess.run([*command, f"{wheel}[train]"], check=True, stdout=sys.stderr)
    except subprocess.CalledProcessError as exc:
        raise BuildError(f"building the wheelhouse failed (exit {exc.returncode})") from exc


@contextlib.contextmanager
def serve_directory(directory: Path, port: int) -> Iterator[str]:
    """`directory` over HTTP on 127.0.0.1:`port` while the block runs; yields its URL.
    Builds reach it with host networking; pip reads the listing as --find-links."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as exc:
        raise BuildError(
            f"cannot serve the wheelhouse on 127.0.0.1:{port} ({exc.strerror}): is another "
            "build running? Pass another --wheelhouse-port"
        ) from None
    thread = threading.Thread(target=server.serve_forever, name="wheelhouse", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per wheel would bury the build output


def build_image(
    client: docker.DockerClient, image: PlannedImage, wheel: Path, plan: BuildPlan
) -> str:
    """Build one image from a context that holds only its Dockerfile (and the wheel for the
    base), tag it with every tag of the plan, and return the image ID."""
    with tempfile.TemporaryDirectory(prefix=f"mawsflow-{image.name}-") as context:
        shutil.copyfile(image.dockerfile, Path(context) / "Dockerfile")
        if image.needs_wheel:
            (Path(context) / "dist").mkdir()
            shutil.copy2(wheel, Path(context) / "dist" / wheel.name)
        first, *others = image.references
        image_id = None
        chunks = client.api.build(
            path=context,
            dockerfile="Dockerfile",
            tag=first,
            buildargs=dict(image.build_args),
            # Only on request (--pull) and only the external base: the engine then pulls a base
            # it lacks, but uses a local one (e.g. local/debian:bookworm) as it is, and our own
            # bases exist only locally.
            pull=plan.pull and image.builds_on is None,
            network_mode=plan.network_mode,
            nocache=plan.no_cache,
            rm=True,
            forcerm=True,
            decode=True,
        )
        for chunk in _stream_errors(chunks):
            image_id = chunk.get("aux", {}).get("ID", image_id)
    if image_id is None:
        raise BuildError(f"the engine reported no image ID for {image.name}")
    for reference in others:
        repository, tag = reference.rsplit(":", 1)
        client.api.tag(image_id, repository, tag)
    return image_id


def push_image(client: docker.DockerClient, image: PlannedImage) -> str:
    """Push every tag of `image`; returns the registry digest of the version tag."""
    digests: dict[str, str] = {}
    for tag in image.tags:
        chunks = client.api.push(image.repository, tag=tag, stream=True, decode=True)
        for chunk in _stream_errors(chunks):
            digest = chunk.get("aux", {}).get("Digest")
            if digest:
                digests[tag] = digest
    digest = digests.get(image.tags[0], "")
    if not DIGEST_RE.match(digest):
        raise BuildError(f"the registry returned no sha256 digest for {image.references[0]}")
    return digest


def read_image_references(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in loaded.items()
    ):
        raise BuildError(f"{path}: expected a mapping of step name to image reference")
    return loaded


def write_image_references(path: Path, updates: Mapping[str, str]) -> None:
    """Replace the entries of `updates` in the step → image file, keeping the others and the
    order; written to a temporary file and renamed, so readers never see half a file."""
    references = read_image_references(path)
    references.update(updates)
    body = yaml.safe_dump(references, sort_keys=False, default_flow_style=False)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(IMAGES_FILE_HEADER + body)
    temporary.replace(path)


def run_plan(client: docker.DockerClient, plan: BuildPlan) -> dict[str, str]:
    """Build (and push) every image of the plan; returns step → reference for pushed steps."""
    pushed: dict[str, str] = {}
    with (
        tempfile.TemporaryDirectory(prefix="mawsflow-wheel-") as wheel_dir,
        contextlib.ExitStack() as stack,
    ):
        wheel = build_wheel(Path(wheel_dir))
        if plan.wheelhouse is not None:
            build_wheelhouse(wheel, plan.wheelhouse)
            stack.enter_context(serve_directory(plan.wheelhouse, plan.wheelhouse_port))
        for image in plan.images:
            print(f"==> building {image.references[0]}", flush=True)
            image_id = build_image(client, image, wheel, plan)
            print(f"==> built {image.name}: {image_id}", flush=True)
            if plan.push:
                digest = push_image(client, image)
                print(f"==> pushed {image.repository}@{digest}", flush=True)
                if not image.is_base:
                    pushed[image.name] = f"{image.references[0]}@{digest}"
    if pushed:
        write_image_references(plan.images_file, pushed)
        print(f"==> wrote {len(pushed)} image references to {plan.images_file}")
    return pushed


def build_parser(step_names: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="images/build.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  images/build.py --dry-run                  show what would be built, no engine\n"
            "  images/build.py                            build every image locally\n"
            "  images/build.py --step mae --step launch   the base, mae and launch only\n"
            "  docker login ghcr.io && images/build.py --push --registry ghcr.io/<you>\n"
            "                                             build, push, pin digests for the"
            " components"
        ),
    )
    parser.add_argument(
        "--registry",
        default=DEFAULT_REGISTRY,
        help=f"where the images are named and pushed (default: {DEFAULT_REGISTRY})",
    )
    parser.add_argument(
        "--step",
        dest="steps",
        action="append",
        choices=step_names,
        metavar="STEP",
        help="build only this step's image (and the base); repeatable. "
        f"Steps: {', '.join(step_names)}",
    )
    parser.add_argument(
        "--push",
        action="store_true",
        help="push every tag and write the step digests to --images-file",
    )
    parser.add_argument(
        "--allow-dirty",
        action="store_true",
        help="allow --push with uncommitted changes in src/, pyproject.toml or images/ "
        "(the commit tag then ends in -dirty)",
    )
    parser.add_argument(
        "--base-image",
        "--pytorch-image",  # its former name, from when the base was a CUDA PyTorch image
        dest="base_image",
        help="the Debian bookworm image to build the base on (default: the one "
        "images/Dockerfile.base names, debian:bookworm). A local image, e.g. one made with "
        "mmdebstrap and `docker import`, is used as it is: nothing is pulled without --pull",
    )
    parser.add_argument(
        "--pull",
        action="store_true",
        help="pull the newest external base image (debian:bookworm) before building",
    )
    parser.add_argument(
        "--network",
        dest="network_mode",
        help="the network of the build containers (docker build --network), e.g. host where "
        "the engine has no bridge network; --wheelhouse implies host",
    )
    parser.add_argument(
        "--wheelhouse",
        type=Path,
        help="fill this folder with every wheel the images install (pip wheel, on this "
        "machine) and have the builds install from it over loopback, with no package index: "
        "for air-gapped builds, or engines whose containers cannot reach PyPI",
    )
    parser.add_argument(
        "--wheelhouse-port",
        type=int,
        default=DEFAULT_WHEELHOUSE_PORT,
        help=f"the loopback port the wheelhouse is served on (default: "
        f"{DEFAULT_WHEELHOUSE_PORT}; fixed, so that the layer cache holds across builds)",
    )
    parser.add_argument(
        "--images-file",
        type=Path,
        default=DEFAULT_IMAGES_FILE,
        help="the step → image reference file the components read "
        "(default: components/images.yaml)",
    )
    parser.add_argument("--no-cache", action="store_true", help="build without the layer cache")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan and exit; needs no Docker engine"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        specs = discover_images()
        step_names = [name for name in specs if name not in base_images(specs)]
        args = build_parser(step_names).parse_args(argv)
        commit, dirty = git_state()
        if args.push and dirty and not args.allow_dirty:
            raise BuildError(
                "src/, pyproject.toml or images/ has uncommitted changes, so the pushed images "
                "would not match their commit tag: commit first, or pass --allow-dirty"
            )
        plan = make_plan(
            version=package_version(),
            commit=commit,
            dirty=dirty,
            registry=args.registry,
            steps=args.steps,
            push=args.push,
            images_file=args.images_file,
            base_image=args.base_image,
            no_cache=args.no_cache,
            pull=args.pull,
            # The wheelhouse is served on this machine's loopback: only host networking sees it.
            network_mode="host" if args.wheelhouse else args.network_mode,
            wheelhouse=args.wheelhouse.resolve() if args.wheelhouse else None,
            wheelhouse_port=args.wheelhouse_port,
        )
        print(format_plan(plan), flush=True)
        if args.dry_run:
            return 0
        run_plan(connect(), plan)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except docker.errors.DockerException as exc:
        print(f"error: the Docker engine refused: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
