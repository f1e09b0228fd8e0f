"""The local backend: a real torchrun with 2 ranks on the CPU (gloo)."""

from __future__ import annotations

import io
import sys
import textwrap

import pytest

from mawsflow.launch.local import TorchrunFailureReport, local_env, run_local
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
