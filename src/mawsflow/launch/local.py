"""The local backend: `torchrun` with N processes on this machine.

torchrun runs as a subprocess of the launcher's own interpreter (`python -m torch.distributed.run`
is the torchrun entry point, and this way it is certainly the torch the launcher has), with a
standalone rendezvous on a free local port so parallel launches cannot collide. Without GPUs the
ranks see no CUDA device, so they use gloo on the CPU.

A bare `mawsflow` as the command means this project: it runs as `<the launcher's python> -m
mawsflow.cli`, so ranks run the launcher's own installation whether or not its bin directory is
on PATH (`.venv/bin/mawsflow launch … -- mawsflow mae …` from any shell).

torchrun does not run as the launcher's child directly but under a guard
(mawsflow.launch.job_guard), which sees every process of the job and kills them all when the
launcher goes away for any reason, SIGKILL included; its docstring says why this design.

Output is streamed line by line. torchrun itself exits 1 whenever a rank fails; the failing
rank's own exit status is in torchrun's "Root Cause" report, which is read from the stream and
becomes the launcher's exit status (128 + N for a rank killed by signal N, as a shell reports it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

from mawsflow.launch.spec import LaunchSpec

log = logging.getLogger(__name__)

_ROOT_CAUSE = re.compile(r"Root Cause \(first observed failure\)")
_RANK = re.compile(r"^\s*rank\s*:\s*(\d+)")
_EXITCODE = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)")


@dataclass(frozen=True)
class LocalResult:
    exit_code: int
    failed_rank: int | None = None


def rank_command(command: Sequence[str]) -> list[str]:
    """What every rank runs: the command, with a bare `mawsflow` bound to this installation."""
    if command[:1] == ["mawsflow"]:
        return [sys.executable, "-m", "mawsflow.cli", *command[1:]]
    return list(command)


def torchrun_argv(spec: LaunchSpec) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(spec.procs_per_node),
        "--no-python",
        *rank_command(spec.command),
    ]


def guarded_argv(argv: Sequence[str], liveness_fd: int) -> list[str]:
    """`argv` run under the job guard, which watches this process through `liveness_fd`."""
    return [
        sys.executable,
        "-m",
        "mawsflow.launch.job_guard",
        "--launcher-pid",
        str(os.getpid()),
        "--liveness-fd",
        str(liveness_fd),
        "--",
        *argv,
    ]


def local_env(spec: LaunchSpec, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The launcher's environment (credentials included: this is the user's own machine) plus
    the spec's env and S3 endpoint settings."""
    env = dict(os.environ if base is None else base)
    env.setdefault("PYTHONUNBUFFERED", "1")  # ranks' prints reach the stream as they happen
    if spec.resources.gpus_per_node == 0:
        env["CUDA_VISIBLE_DEVICES"] = ""
    if spec.s3 is not None:
        if spec.s3.endpoint_url:
            env["AWS_ENDPOINT_URL"] = spec.s3.endpoint_url
        if spec.s3.region:
            env["AWS_DEFAULT_REGION"] = spec.s3.region
    env.update(spec.env)
    return env


class TorchrunFailureReport:
    """Reads the failing rank and its exit code from torchrun's failure report as it streams by."""

    def __init__(self) -> None:
        self._in_root_cause = False
        self.rank: int | None = None
        self.exit_code: int | None = None

    def feed(self, line: str) -> None:
        if self.exit_code is not None:
            return
        if _ROOT_CAUSE.search(line):
            self._in_root_cause = True
            return
        if not self._in_root_cause:
            return
        if (match := _RANK.match(line)) is not None:
            self.rank = int(match.group(1))
        elif (match := _EXITCODE.match(line)) is not None:
            code = int(match.group(1))
            self.exit_code = 128 - code if code < 0 else code


def run_local(spec: LaunchSpec, *, out: TextIO | None = None) -> LocalResult:
    """Run the spec's command on `procs_per_node` local ranks; returns how it ended."""
    out = out or sys.stdout
    argv = torchrun_argv(spec)
    log.info("running %d local ranks: %s", spec.procs_per_node, " ".join(spec.command))
    report = TorchrunFailureReport()
    # The guard's read end; this process holds the only write end (os.pipe's ends are not
    # inherited by other children), so the kernel closes it exactly when this process dies.
    guard_end, launcher_alive = os.pipe()
    try:
        proc = subprocess.Popen(
            guarded_argv(argv, guard_end),
            pass_fds=(guard_end,),
            # Its own session: a Ctrl-C at the terminal reaches the job once, through the
            # forwarding below, not also directly.
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=local_env(spec),
            text=True,
            errors="replace",
            bufsize=1,
        )
    except BaseException:
        os.close(launcher_alive)
        raise
    finally:
        os.close(guard_end)
    try:
        with _signals_forwarded_to(proc):
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                out.flush()
                report.feed(line)
            returncode = proc.wait()
    finally:
        # After a normal end this changes nothing; when an error leaves this function early,
        # it tells the guard that nobody watches the job any more, and the guard kills it.
        os.close(launcher_alive)
        proc.wait()
    if returncode == 0:
        log.info("all %d ranks finished", spec.procs_per_node)
        return LocalResult(0)
    if report.exit_code:
        log.error("rank %s failed with exit code %d", report.rank, report.exit_code)
        return LocalResult(report.exit_code, report.rank)
    code = 128 - returncode if returncode < 0 else returncode
    log.error("torchrun failed with exit code %d", code)
    return LocalResult(code)


@contextlib.contextmanager
def _signals_forwarded_to(proc: subprocess.Popen) -> Iterator[None]:
    """While torchrun runs, SIGTERM/SIGINT to the launcher go to the guard and on to torchrun,
    which stops the ranks in order; otherwise a cancelled step would leave them running.
    Handlers can only be installed from the main thread; elsewhere the defaults stay."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum: int, frame: object) -> None:
        log.warning("received signal %d; stopping the local ranks", signum)
        proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
