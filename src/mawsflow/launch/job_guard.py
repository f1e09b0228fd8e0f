"""The guard of a local launch: one small process that owns every process of the job, so that
none of them outlives the launcher, whatever ends it (SIGKILL included).

Why it is needed: torchrun starts every rank in a session of its own (torch.distributed.elastic
starts workers with `start_new_session`), and a rank starts more processes of its own (data
loader workers). A signal to the launcher's process group misses them all, and torchrun stops
its ranks only when it is signalled itself and lives to do it: a SIGKILLed torchrun, or a
launcher killed with SIGKILL (which runs no code at all), leaves them training on and writing
checkpoints into the output that a restarted launcher is about to use.

How it works, and why this way:

- The guard is a *child subreaper* (prctl PR_SET_CHILD_SUBREAPER): a process of the job whose
  parent dies is re-parented to the guard instead of to init. So the guard's descendants are
  exactly the job's processes, whatever sessions and process groups they made, and the guard
  can find all of them in /proc by parent pid. (Process groups cannot do this: every rank has
  its own; cgroups could, but need privileges a user's shell and a pod do not have.)
- It learns that the launcher is gone in two independent ways. The launcher holds the only
  write end of a pipe whose read end the guard watches: the kernel closes it when the launcher
  dies for any reason, and it does not depend on threads. And PR_SET_PDEATHSIG sends the guard
  SIGHUP when the launcher's *thread* that started it ends; that covers the case where a
  process the launcher forked without exec still holds the pipe's write end. Both wake the
  guard at once (no polling).
- Then it SIGKILLs every descendant, and repeats until none is left, because a process can
  fork while it is being killed. SIGKILL rather than a graceful stop: nobody is waiting for the
  job any more, a graceful stop would give a restarted launcher a window in which old ranks
  still write, and checkpoints count only once complete, so the kill loses no more work than
  the kill that took the launcher.
- SIGTERM and SIGINT (the launcher forwards them) go on to torchrun, which stops its ranks in
  order; the launcher's own graceful stop is unchanged.
- When torchrun exits, whatever of the job still runs (a rank torchrun could not stop, a stray
  loader worker) is killed the same way, and the guard exits with torchrun's status (128 + N
  for a torchrun killed by signal N, as a shell reports it).
- torchrun gets PR_SET_PDEATHSIG = SIGTERM from the guard, so even a SIGKILL aimed at the guard
  itself makes torchrun stop its ranks. Only a SIGKILL of both the guard and torchrun at once
  leaves ranks behind; the guard does nothing but wait, so nothing else ends it early.

Run as `python -m mawsflow.launch.job_guard --launcher-pid PID --liveness-fd FD -- ARGV…` by
mawsflow.launch.local, never by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from mawsflow.log import setup_logging

log = logging.getLogger("mawsflow.launch.job_guard")

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
LAUNCHER_GONE_SIGNAL = signal.SIGHUP
# What the guard exits with when it killed the job because the launcher went away (nobody is
# there to read it; it is what a shell reports for a process ended by SIGHUP).
EXIT_LAUNCHER_GONE = 128 + LAUNCHER_GONE_SIGNAL
_FORWARDED = (signal.SIGTERM, signal.SIGINT)
# A process in uninterruptible sleep dies only when its I/O returns; past this the guard gives
# up waiting, names the survivors and exits.
_KILL_TIMEOUT_S = 60.0


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl({option}, {value}) failed: {os.strerror(code)}")


def _torchrun_dies_with_guard() -> None:
    """Runs in the forked child before exec (the guard is single-threaded, so this is safe)."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _process_table() -> dict[int, tuple[int, str]]:
    """pid → (parent pid, state letter) of every process visible in /proc."""
    table: dict[int, tuple[int, str]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat_file:
                stat = stat_file.read()
        except OSError:  # it exited while we looked
            continue
        # The command name (field 2) is in parentheses and may hold spaces or ')'.
        state, ppid = stat[stat.rindex(b")") + 2 :].split()[:2]
        table[int(entry.name)] = (int(ppid), state.decode())
    return table


def descendants(root: int) -> dict[int, str]:
    """pid → state of every process below `root` (zombies included)."""
    children: dict[int, list[int]] = {}
    table = _process_table()
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, str] = {}
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        if pid in found or pid not in table:
            continue
        found[pid] = table[pid][1]
        stack.extend(children.get(pid, []))
    return found


def _reap_children() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_descendants(torchrun: subprocess.Popen[bytes] | None = None) -> int:
    """SIGKILL every process below the guard until none is left; returns how many were killed.
    `torchrun` is reaped through its Popen first, so that it keeps its exit status."""
    killed: set[int] = set()
    deadline = time.monotonic() + _KILL_TIMEOUT_S
    while True:
        below = descendants(os.getpid())
        alive = [pid for pid, state in below.items() if state != "Z"]
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        if torchrun is not None:
            torchrun.poll()
        _reap_children()
        if not below:
            return len(killed)
        if time.monotonic() > deadline:
            log.error(
                "%d processes of the job did not die within %.0f s of SIGKILL: %s",
                len(alive),
                _KILL_TIMEOUT_S,
                ", ".join(map(str, sorted(alive))),
            )
            return len(killed)
        # Zombies whose parent is being killed come to us to be reaped; give them a moment.
        time.sleep(0.01)


def _launcher_gone(torchrun: subprocess.Popen[bytes], why: str) -> int:
    killed = kill_descendants(torchrun)
    # The launcher read our stderr; with it gone, a log line may have nowhere to go.
    with contextlib.suppress(OSError, ValueError):
        log.warning("%s: killed the job's %d processes", why, killed)
    return EXIT_LAUNCHER_GONE


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def guard(command: Sequence[str], launcher_pid: int, liveness_fd: int) -> int:
    """Run `command` (torchrun) as described above; returns the guard's exit status."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    _prctl(_PR_SET_PDEATHSIG, LAUNCHER_GONE_SIGNAL)
    # Signals only wake the loop below (set_wakeup_fd writes their numbers to a pipe); the loop
    # acts on them, so nothing runs inside a signal handler.
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    for signum in (*_FORWARDED, LAUNCHER_GONE_SIGNAL):
        signal.signal(signum, lambda *_: None)
    signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    if os.getppid() != launcher_pid:
        # The launcher died before PDEATHSIG was armed; there is nothing to start.
        return EXIT_LAUNCHER_GONE

    torchrun = subprocess.Popen(command, preexec_fn=_torchrun_dies_with_guard)
    try:
        job_fd = os.pidfd_open(torchrun.pid)
    except OSError as exc:  # a kernel older than 5.3, or a seccomp filter
        if exc.errno not in (errno.ENOSYS, errno.EPERM):
            raise
        job_fd = None
    with selectors.DefaultSelector() as selector:
        selector.register(liveness_fd, selectors.EVENT_READ, "launcher")
        selector.register(wake_read, selectors.EVENT_READ, "signal")
        if job_fd is not None:
            selector.register(job_fd, selectors.EVENT_READ, "torchrun")
        while True:
            events = selector.select(timeout=None if job_fd is not None else 0.1)
            for key, _ in events:
                if key.data == "launcher" and not os.read(liveness_fd, 1):
                    return _launcher_gone(torchrun, "the launcher is gone")
                if key.data == "signal":
                    for signum in os.read(wake_read, 64):
                        if signum == LAUNCHER_GONE_SIGNAL:
                            return _launcher_gone(torchrun, "the launcher's thread ended")
                        log.info("forwarding signal %d to torchrun", signum)
                        with contextlib.suppress(ProcessLookupError):
                            torchrun.send_signal(signum)
            if torchrun.poll() is not None:
                break
    returncode = torchrun.returncode
    stray = kill_descendants()
    if stray:
        log.warning(
            "torchrun exited with %d processes of the job still running; killed them", stray
        )
    return _exit_status(returncode)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mawsflow.launch.job_guard")
    parser.add_argument("--launcher-pid", type=int, required=True)
    parser.add_argument("--liveness-fd", type=int, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command after --")
    setup_logging()
    return guard(command, args.launcher_pid, args.liveness_fd)


if __name__ == "__main__":
    sys.exit(main())
