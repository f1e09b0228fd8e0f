"""A real Docker engine for tests: Debian's `dockerd`, started on its own socket, and a local
Debian bookworm image to build on.

The engine gets its own data root, exec root and socket, so it never touches a Docker the
developer runs, and `--iptables=false --bridge=none`: no firewall or bridge changes on the host.
Containers therefore have either no network or the host's (`network_mode="host"`), which is
what the image builds (apt-get, the wheelhouse on loopback) and the pipeline run (SeaweedFS on
loopback) use.

Docker Hub may be unreachable (it is here), so the base OS image is made from Debian's own
archive with `mmdebstrap` and `docker import`ed as `local/debian:bookworm`.

The data root persists between sessions (MAWSFLOW_TEST_DOCKER_DIR, default
~/.cache/mawsflow-tests/docker), so a developer's second run reuses the layer cache; a fresh CI
machine builds everything.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

LOCAL_DEBIAN_IMAGE = "local/debian:bookworm"
_RUN_DIR = Path("/run/mawsflow-test-docker")


def cache_dir() -> Path:
    return Path(
        os.environ.get("MAWSFLOW_TEST_DOCKER_DIR")
        or Path.home() / ".cache" / "mawsflow-tests" / "docker"
    )


def why_unavailable() -> str | None:
    """Why no engine can be started here (None when it can)."""
    if shutil.which("dockerd") is None:
        return "dockerd is missing: apt-get install docker.io (scripts/setup.sh does, as root)"
    if os.geteuid() != 0:
        return "dockerd needs root to start; run the tests as root (CI does)"
    return None


class DockerEngine:
    """One `dockerd` on a private socket; reused when one already answers there."""

    def __init__(self, state_dir: Path, run_dir: Path = _RUN_DIR) -> None:
        self.state_dir = state_dir
        self.run_dir = run_dir
        self.socket = run_dir / "docker.sock"
        self.log_path = state_dir / "dockerd.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def env(self) -> dict[str, str]:
        """What points the Docker SDK and CLI at this engine."""
        return {"DOCKER_HOST": self.url}

    def client(self, timeout: int = 600) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=timeout)

    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        # The SDK asks the engine for its API version while it is constructed, so a socket file
        # with nobody listening (an engine that was killed, or one still starting) fails here,
        # not at ping: both must read as "not answering", or start() raises instead of starting.
        try:
            client = self.client(timeout=5)
        except (docker.errors.DockerException, OSError):
            return False
        try:
            return bool(client.ping())
        except (docker.errors.DockerException, OSError):
            return False
        finally:
            client.close()

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "dockerd.pid"

    def _clear_stale_run_dir(self) -> None:
        """Remove what a killed engine left in the run dir: its socket and the pidfiles of it
        and of its containerd.

        A machine restored from a snapshot, or a session whose processes were killed, keeps
        /run's files; the socket then refuses connections. dockerd replaces a stale socket
        itself, but it refuses to start while its pidfile names a live process, and after a
        restart that pid may belong to anything. Its containerd supervisor
        (moby libcontainerd/supervisor, `getContainerdPid`) is stricter still: if the pid in
        exec-root/containerd/containerd.pid exists at all (kill(pid, 0)), it waits for that
        "containerd" instead of starting one, and fails after a timeout. Where PID 1 does not
        reap orphans (containers without an init, this sandbox), a killed engine's containerd
        stays a zombie and holds that pid.
        So containerd's pidfile goes unless it names a running containerd. Called only when no
        running dockerd owns the run dir (start() waits for one that does), so dockerd's own
        pidfile and socket go too."""
        containerd_pidfile = self.run_dir / "exec" / "containerd" / "containerd.pid"
        if _running_pid(containerd_pidfile, "containerd") is None:
            containerd_pidfile.unlink(missing_ok=True)
        self.pidfile.unlink(missing_ok=True)
        self.socket.unlink(missing_ok=True)

    def _live_owner(self) -> int | None:
        """The pid of a running dockerd that this run dir's pidfile names, if any."""
        return _running_pid(self.pidfile, "dockerd")

    def start(self, timeout_s: float = 120.0) -> None:
        if self._answers():
            return  # started by an earlier session that is still running: share it
        owner = self._live_owner()
        if owner is not None:
            # Another session's engine, still starting: share it once it answers, rather than
            # start a second engine over the same exec root.
            if self._await_answer(timeout_s):
                return
            raise RuntimeError(
                f"a dockerd (pid {owner}, {self.pidfile}) owns {self.run_dir} but did not "
                f"answer on {self.socket} within {timeout_s:.0f} s; stop it (kill {owner}) "
                "and run again"
            )
        self._clear_stale_run_dir()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        command = [
            "dockerd",
            f"--data-root={self.state_dir / 'data'}",
            f"--exec-root={self.run_dir / 'exec'}",
            f"--pidfile={self.pidfile}",
            f"--host={self.url}",
            "--storage-driver=overlay2",
            "--iptables=false",
            "--bridge=none",
        ]
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        if self._await_answer(timeout_s, self._process):
            return
        self.stop()
        raise RuntimeError(f"dockerd did not answer on {self.socket} within {timeout_s:.0f} s")

    def _await_answer(
        self, timeout_s: float, process: subprocess.Popen[bytes] | None = None
    ) -> bool:
        """Whether the engine answers within `timeout_s`; raises at once if `process` (the
        engine this object started) exits meanwhile."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(
                    f"dockerd exited with status {process.returncode} while starting; "
                    f"its log: {self.log_path}\n{self._log_tail()}"
                )
            if self._answers():
                return True
            time.sleep(0.5)
        return False

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the engine if this object started it (SIGTERM: dockerd stops its containers
        and its containerd, then exits)."""
        if self._process is None or self._process.poll() is not None:
            return
        os.kill(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.kill(self._process.pid, signal.SIGKILL)
            self._process.wait()


def _running_pid(pidfile: Path, command: str) -> int | None:
    """The pid in `pidfile` if it is a running (not zombie) process named `command`."""
    try:
        pid = int(pidfile.read_text().strip())
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # /proc/PID/stat: "pid (comm) state ...", and comm may itself hold spaces or parentheses.
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    state = stat[stat.rindex(")") + 2 :].split(" ", 1)[0]
    return pid if name == command and state not in ("Z", "X") else None


def ensure_local_debian(engine: DockerEngine, reference: str = LOCAL_DEBIAN_IMAGE) -> str:
    """`reference` in the engine: Debian bookworm from Debian's archive (mmdebstrap, ~80 s),
    imported once. The image is what `debian:bookworm` is on Docker Hub, made locally."""
    client = engine.client()
    try:
        try:
            client.images.get(reference)
            return reference
        except docker.errors.ImageNotFound:
            pass
        if shutil.which("mmdebstrap") is None:
            raise RuntimeError(
                "mmdebstrap is missing (apt-get install mmdebstrap); it makes the Debian base "
                "image, since Docker Hub cannot be assumed reachable"
            )
        tarball = engine.state_dir / "debian-bookworm.tar"
        if not tarball.is_file():
            partial = tarball.with_suffix(".partial.tar")
            # minbase + ca-certificates: Debian's essential set, as debian:bookworm has it.
            subprocess.run(
                [
                    "mmdebstrap",
                    "--quiet",
                    "--variant=minbase",
                    "--include=ca-certificates",
                    "bookworm",
                    str(partial),
                ],
                check=True,
            )
            partial.rename(tarball)
        repository, tag = reference.rsplit(":", 1)
        with tarball.open("rb") as data:
            client.api.import_image_from_data(data, repository=repository, tag=tag)
        client.images.get(reference)  # fails loudly if the import did not take
    finally:
        client.close()
    return reference


@dataclass(frozen=True)
class BuiltImages:
    """What images/build.py built: image name → reference (the version tag), how long the
    build took, and its log."""

    references: dict[str, str]
    seconds: float
    log: Path

    def step_images(self) -> dict[str, str]:
        """Step name → reference, as components/images.yaml names them."""
        return {name: ref for name, ref in self.references.items() if name not in BASE_IMAGES}


REPO = Path(__file__).resolve().parent.parent
BASE_IMAGES = ("base", "torch")
# The registry build.py names images under by default, which components/images.yaml uses: a
# pipeline compiled from this checkout then runs the images built here, with nothing pulled.
REGISTRY = "ghcr.io/mawsflow"


def build_all_images(engine: DockerEngine) -> BuiltImages:
    """Run `images/build.py` (every image) against `engine`; its output goes to a log file,
    whose end is in the error when the build fails."""
    base = ensure_local_debian(engine)
    log = engine.state_dir / "build.log"
    wheelhouse = engine.state_dir / "wheelhouse"
    command = [
        sys.executable,
        str(REPO / "images" / "build.py"),
        f"--base-image={base}",
        f"--wheelhouse={wheelhouse}",
        f"--registry={REGISTRY}",
    ]
    started = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run(
            command, env={**os.environ, **engine.env()}, stdout=out, stderr=subprocess.STDOUT
        )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"images/build.py failed (exit {done.returncode}); {log}:\n{tail}")
    # Earlier builds' images lose their tags to this one's: drop them, or a developer's data
    # root grows by a few GB per rebuild of the torch base.
    client = engine.client()
    try:
        client.images.prune(filters={"dangling": True})
    finally:
        client.close()
    version = _package_version()
    names = [p.name.removeprefix("Dockerfile.") for p in (REPO / "images").glob("Dockerfile.*")]
    return BuiltImages(
        references={name: f"{REGISTRY}/mawsflow-{name}:{version}" for name in sorted(names)},
        seconds=seconds,
        log=log,
    )


def _package_version() -> str:
    with (REPO / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])
