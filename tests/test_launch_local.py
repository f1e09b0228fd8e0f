"""The local backend: a real torchrun with 2 ranks on the CPU (gloo)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

import mawsflow
from mawsflow.launch.local import (
    TorchrunFailureReport,
    local_env,
    rank_command,
    run_local,
    torchrun_argv,
)
from mawsflow.launch.spec import LaunchSpec, S3Secret, validate
from mawsflow.steps import launch as launch_step

# Each rank joins a gloo group and all-reduces its rank + 1; rank 1 exits with argv[1] if given.
RANK_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    total = torch.tensor([rank + 1.0])
    dist.all_reduce(total)
    print(f"rank {rank}/{dist.get_world_size()} backend={dist.get_backend()} "
          f"sum={total.item():g} cuda={os.environ['CUDA_VISIBLE_DEVICES']!r} "
          f"tag={os.environ['MAWSFLOW_TEST_TAG']}", flush=True)
    dist.barrier()
    dist.destroy_process_group()
    if rank == 1 and len(sys.argv) > 1:
        sys.exit(int(sys.argv[1]))
    """
)


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "rank.py"
    path.write_text(RANK_SCRIPT)
    return path


def test_two_ranks_run_on_gloo_and_stream_their_output(script):
    spec = LaunchSpec(
        command=[sys.executable, str(script)], procs_per_node=2, env={"MAWSFLOW_TEST_TAG": "t1"}
    )
    validate(spec, "local")
    out = io.StringIO()
    result = run_local(spec, out=out)
    assert result.exit_code == 0 and result.failed_rank is None
    text = out.getvalue()
    for rank in (0, 1):
        assert f"rank {rank}/2 backend=gloo sum=3 cuda='' tag=t1" in text


def test_failing_rank_exit_code_becomes_the_steps(script, capsys):
    argv = ["--backend", "local", "--set", "procs_per_node=2", "--set", "env.MAWSFLOW_TEST_TAG=t2"]
    assert launch_step.main([*argv, "--", sys.executable, str(script), "3"]) == 3
    captured = capsys.readouterr()
    assert "rank 1/2 backend=gloo sum=3" in captured.out
    assert "rank 1 failed with exit code 3" in captured.err


def test_failure_report_parsing():
    report = TorchrunFailureReport()
    lines = """
        Failures:
        [1]:
          rank      : 0 (local_rank: 0)
          exitcode  : -15 (pid: 7583)  (SIGTERM)
        ------------------------------------------------------------
        Root Cause (first observed failure):
        [0]:
          time      : 2025-01-01_10:53:42
          host      : node-0
          rank      : 1 (local_rank: 1)
          exitcode  : -9 (pid: 7584)
          error_file: <N/A>
        """
    for line in textwrap.dedent(lines).splitlines():
        report.feed(line)
    assert (report.rank, report.exit_code) == (1, 128 + 9)


def test_local_env_hides_gpus_only_without_gpus_and_keeps_credentials():
    base = {"AWS_SECRET_ACCESS_KEY": "from-the-shell", "PATH": "/bin"}
    spec = LaunchSpec(command=["x"], s3=S3Secret(secret_name="s", endpoint_url="http://s3:8333"))
    env = local_env(spec, base)
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert env["AWS_SECRET_ACCESS_KEY"] == "from-the-shell"
    assert env["AWS_ENDPOINT_URL"] == "http://s3:8333"
    spec.resources.gpus_per_node = 2
    assert "CUDA_VISIBLE_DEVICES" not in local_env(spec, base)


# -- the launcher's own `mawsflow`, and no orphans ---------------------------------------------

# A training loop on two gloo ranks that appends a line per step to <out>/rank<R>.log. Rank 0
# also starts a helper in a session of its own (as a data-loader worker or anything a rank
# spawns could be), a grandchild of torchrun that appends to <out>/helper.log. Every process
# ends by itself after 5 minutes, so even a failing test leaves nothing for long.
TRAINING_SCRIPT = textwrap.dedent(
    """
    import subprocess, sys, time
    import torch
    import torch.distributed as dist

    HELPER = '''
    import sys, time
    with open(sys.argv[1] + "/helper.log", "a") as log:
        for step in range(6000):
            log.write(f"{step}\\\\n"); log.flush(); time.sleep(0.05)
    '''
    out = sys.argv[1]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    if rank == 0:
        subprocess.Popen([sys.executable, "-c", HELPER, out], start_new_session=True)
    with open(f"{out}/rank{rank}.log", "a") as log:
        for step in range(6000):
            total = torch.tensor([1.0])
            dist.all_reduce(total)
            log.write(f"{step} {total.item():g}\\n")
            log.flush()
            time.sleep(0.05)
    """
)
JOB_START_TIMEOUT_S = 180  # torchrun and two ranks importing torch on a loaded 2-core box
JOB_GONE_TIMEOUT_S = 30


def launcher_script() -> str:
    """The `mawsflow` console script of this interpreter's installation."""
    script = Path(sys.executable).with_name("mawsflow")
    if not script.is_file():
        pytest.skip(f"{script} is missing: install mawsflow into this environment")
    return str(script)


def launch_argv(tag: str, *command: str) -> list[str]:
    """`mawsflow launch` of `command` on 2 local ranks, its processes tagged with `tag`."""
    return [
        launcher_script(),
        "launch",
        "--backend",
        "local",
        "--set",
        "procs_per_node=2",
        "--set",
        f"env.MAWSFLOW_TEST_TAG={tag}",
        "--",
        *command,
    ]


def path_without(directory: str) -> str:
    return os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p) != Path(directory)
    )


def tagged_processes(tag: str) -> list[int]:
    """Live (non-zombie) processes whose environment holds MAWSFLOW_TEST_TAG=<tag>: every
    process of a job launched with `--set env.MAWSFLOW_TEST_TAG=<tag>`."""
    needle = b"\0MAWSFLOW_TEST_TAG=" + tag.encode() + b"\0"
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            environ = Path("/proc", entry.name, "environ").read_bytes()
            stat = Path("/proc", entry.name, "stat").read_bytes()
        except OSError:  # gone meanwhile, or not ours
            continue
        if needle in b"\0" + environ + b"\0" and stat[stat.rindex(b")") + 2 :][:1] != b"Z":
            found.append(int(entry.name))
    return found


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.1)


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under `folder`."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def job_tag():
    """A tag for one test's job; whatever of the job is left when the test ends is killed."""
    tag = uuid.uuid4().hex
    yield tag
    for pid in tagged_processes(tag):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def training(tmp_path, job_tag):
    """Start the training script on 2 ranks through `mawsflow launch`; returns (launcher, out)
    once both ranks and the helper are writing."""
    script = tmp_path / "train.py"
    script.write_text(TRAINING_SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    launcher = subprocess.Popen(
        launch_argv(job_tag, sys.executable, str(script), str(out)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(
            lambda: (
                all(lines(out / name) >= 3 for name in ("rank0.log", "rank1.log", "helper.log"))
                or launcher.poll() is not None
            ),
            JOB_START_TIMEOUT_S,
            "both ranks and the helper to write",
        )
        assert launcher.poll() is None, launcher.communicate()[0][-3000:]
        yield launcher, out
    finally:
        if launcher.poll() is None:
            launcher.kill()
        launcher.communicate()


def assert_job_is_gone(tag: str, out: Path) -> None:
    wait_for(lambda: not tagged_processes(tag), JOB_GONE_TIMEOUT_S, "every process to die")
    before = snapshot(out)
    time.sleep(1.0)
    assert snapshot(out) == before, "something still writes to the output"


def test_a_sigkilled_launcher_takes_every_process_of_the_job_with_it(training, job_tag):
    launcher, out = training
    job = tagged_processes(job_tag)
    # the guard, torchrun, two ranks and the helper
    assert len(job) >= 5, job
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    assert_job_is_gone(job_tag, out)
    assert not [pid for pid in job if _alive(pid)]


def _alive(pid: int) -> bool:
    try:
        stat = Path("/proc", str(pid), "stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :][:1] != b"Z"


def _torchrun_pid(tag: str) -> int:
    for pid in tagged_processes(tag):
        cmdline = Path("/proc", str(pid), "cmdline").read_bytes().split(b"\0")
        if cmdline[1:3] == [b"-m", b"torch.distributed.run"]:  # not the guard, which names it
            return pid
    raise AssertionError("no torchrun process in the job")


def test_a_sigkilled_torchrun_leaves_no_rank_behind_and_fails_the_launch(training, job_tag):
    launcher, out = training
    os.kill(_torchrun_pid(job_tag), signal.SIGKILL)
    output, _ = launcher.communicate(timeout=JOB_GONE_TIMEOUT_S)
    assert launcher.returncode == 128 + signal.SIGKILL, output[-3000:]
    assert "killed them" in output  # the guard's report of the ranks torchrun left running
    assert_job_is_gone(job_tag, out)


def test_sigterm_to_the_launcher_stops_the_job(training, job_tag):
    launcher, out = training
    launcher.send_signal(signal.SIGTERM)
    output, _ = launcher.communicate(timeout=60)  # torchrun stops its ranks in order
    assert launcher.returncode != 0, output[-3000:]
    assert "stopping the local ranks" in output
    assert_job_is_gone(job_tag, out)


def test_a_bare_mawsflow_runs_the_launchers_own_installation(tmp_path, job_tag):
    """`.venv/bin/mawsflow launch … -- mawsflow …` from a shell whose PATH lacks the venv."""
    spec = LaunchSpec(command=["mawsflow", "mae", "--preset", "tiny"])
    bound = [sys.executable, "-m", "mawsflow.cli", "mae", "--preset", "tiny"]
    assert torchrun_argv(spec)[-len(bound) :] == bound
    assert rank_command(["/opt/other/mawsflow", "mae"]) == ["/opt/other/mawsflow", "mae"]
    env = {**os.environ, "PATH": path_without(str(Path(sys.executable).parent))}
    assert shutil.which("mawsflow", path=env["PATH"]) is None
    proc = subprocess.run(
        launch_argv(job_tag, "mawsflow", "--version"),
        env=env,
        capture_output=True,
        text=True,
        timeout=JOB_START_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count(f"mawsflow {mawsflow.__version__}") == 2  # once per rank


@pytest.mark.slow
def test_a_sigkilled_launcher_stops_a_real_two_rank_mae_run(tmp_path, job_tag):
    """The issue's case: `mawsflow launch --backend local -- mawsflow mae` on 2 ranks with a
    loader worker each, the launcher SIGKILLed after the run's first checkpoint; the command is
    a bare `mawsflow` and PATH lacks the venv, as in a user's shell."""
    from pretrain_shards import write_pretrain_dataset

    dataset = write_pretrain_dataset(tmp_path / "dataset", num_samples=64)
    out = tmp_path / "mae"
    settings = [
        f"data.train={dataset}",
        f"output={out}",
        "schedule.epochs=1000",  # far more than the test lets it run
        "checkpoint.every_steps=2",
        "data.num_workers=1",
    ]
    command = ["mawsflow", "mae", "--preset", "tiny"]
    for setting in settings:
        command += ["--set", setting]
    env = {**os.environ, "PATH": path_without(str(Path(sys.executable).parent))}
    launcher = subprocess.Popen(
        launch_argv(job_tag, *command),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        checkpoints = out / "checkpoints"
        wait_for(
            lambda: (
                (checkpoints.is_dir() and any(checkpoints.iterdir())) or launcher.poll() is not None
            ),
            JOB_START_TIMEOUT_S,
            "the first checkpoint",
        )
        assert launcher.poll() is None, launcher.communicate()[0][-3000:]
        job = tagged_processes(job_tag)
        # the guard, torchrun and two ranks (and, usually by now, their loader workers)
        assert len(job) >= 4, job
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        assert_job_is_gone(job_tag, out)
        assert not (out / "model.safetensors").exists()
    finally:
        if launcher.poll() is None:
            launcher.kill()
        launcher.communicate()
