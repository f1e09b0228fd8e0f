"""Running a step as a real process, one or several ranks, and reading its JSON log.

Shared by the tests that train for real (tests/test_engine_run.py,
tests/test_engine_resume_multirank.py): a step runs as `python -m mawsflow.cli <step>`, under
torchrun when it has more than one rank, and logs one JSON record per line on stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def step_env() -> dict[str, str]:
    # One thread per rank: two ranks on a 2-core machine do not fight over cores.
    return {**os.environ, "MAWSFLOW_LOG_FORMAT": "json", "OMP_NUM_THREADS": "1"}


def step_command(step: str, args: list[str], nproc: int = 1) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "mawsflow.cli", step, *args]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "mawsflow.cli",
        step,
        *args,
    ]


def json_records(text: str) -> list[dict]:
    """The JSON log records in `text`, skipping other lines (torchrun's own, warnings)."""
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def run_step(
    step: str,
    args: list[str],
    *,
    nproc: int = 1,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> list[dict]:
    """Run a step to completion (it must succeed); returns its JSON log records."""
    proc = subprocess.run(
        step_command(step, args, nproc),
        env=env or step_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json_records(proc.stderr)
