"""The test Docker engine survives what a killed engine leaves behind.

CI once failed every image test at setup with "Connection refused": the machine kept
/run/mawsflow-test-docker from an engine that had been killed, so the socket file existed with
nobody listening, and the SDK's client raised while it was constructed (it asks the engine for
its API version then), before the engine could be started. These tests kill a real dockerd the
way a machine stop does and start another on the same directories.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from docker_engine import DockerEngine, why_unavailable


@pytest.fixture
def run_dir() -> Iterator[Path]:
    # Under /run and short: a unix socket's path must fit in 108 bytes, and containerd's
    # sockets live below the exec root.
    path = Path(
        tempfile.mkdtemp(prefix="mf-dk-", dir="/run" if os.access("/run", os.W_OK) else None)
    )
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _stale_socket(path: Path) -> None:
    """A unix socket file whose listener is gone, as a killed engine leaves it."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    listener.close()
    assert path.exists()


def test_a_socket_nobody_listens_on_reads_as_not_answering(tmp_path: Path, run_dir: Path) -> None:
    engine = DockerEngine(tmp_path / "state", run_dir=run_dir)
    _stale_socket(engine.socket)
    assert engine._answers() is False


def test_a_stale_pidfile_naming_another_process_is_cleared(tmp_path: Path, run_dir: Path) -> None:
    engine = DockerEngine(tmp_path / "state", run_dir=run_dir)
    _stale_socket(engine.socket)
    # After a restart the old pid may belong to anything: here, this test's own process.
    engine.pidfile.write_text(f"{os.getpid()}\n")
    engine._clear_stale_run_dir()
    assert not engine.pidfile.exists()
    assert not engine.socket.exists()


def test_a_running_dockerd_that_owns_the_run_dir_is_waited_for_not_replaced(
    tmp_path: Path, run_dir: Path
) -> None:
    """Another session's engine, still starting, owns the run dir: start() must not clear its
    files or start a second engine over its exec root, and says whom to stop if it never
    answers. A process the kernel names `dockerd` (a copy of `sleep`) stands in for it."""
    impostor = tmp_path / "dockerd"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", impostor)
    owner = subprocess.Popen([str(impostor), "60"])
    engine = DockerEngine(tmp_path / "state", run_dir=run_dir)
    try:
        _stale_socket(engine.socket)
        engine.pidfile.write_text(f"{owner.pid}\n")
        with pytest.raises(RuntimeError, match=rf"pid {owner.pid}.*did not answer"):
            engine.start(timeout_s=1.0)
        assert engine._process is None  # no second engine
        assert engine.pidfile.read_text().strip() == str(owner.pid)
        assert engine.socket.exists()
    finally:
        engine.stop()  # a regression would have started a real engine: do not leak it
        owner.kill()
        owner.wait()


@pytest.mark.skipif(why_unavailable() is not None, reason=str(why_unavailable()))
def test_an_engine_starts_where_a_killed_one_left_its_socket_and_pidfile(
    tmp_path: Path, run_dir: Path
) -> None:
    first = DockerEngine(tmp_path / "state", run_dir=run_dir)
    first.start()
    assert first._process is not None
    # What a machine stop does: SIGKILL to the engine and its containerd, no cleanup.
    os.killpg(first._process.pid, signal.SIGKILL)
    first._process.wait()
    assert first.socket.exists() and first.pidfile.exists()
    assert first._answers() is False

    second = DockerEngine(tmp_path / "state", run_dir=run_dir)
    try:
        second.start()
        client = second.client(timeout=30)
        try:
            assert client.ping()
        finally:
            client.close()
    finally:
        second.stop()
        # dockerd bind-mounts its data root onto itself and leaves it mounted when it exits; the
        # test's own data root must not outlive it (pytest could not remove the directory).
        # (os.path.ismount cannot see a bind mount within one filesystem; /proc/mounts can.)
        data_root = str((tmp_path / "state" / "data").resolve())
        while data_root in _mount_points():
            subprocess.run(["umount", data_root], check=True)


def _mount_points() -> set[str]:
    with open("/proc/mounts", encoding="utf-8") as mounts:
        return {line.split()[1] for line in mounts}
