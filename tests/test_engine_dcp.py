"""Sharded checkpoints (torch.distributed.checkpoint) through the project's storage layer, on a
local directory and on a real SeaweedFS: every rank writes only its share, a save in the
background keeps training going without the checkpoint seeing the later steps, and a checkpoint
loads bit-exactly on another number of ranks and under the other parallelism."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mawsflow import storage

pytestmark = pytest.mark.slow

JOB = str(Path(__file__).with_name("dcp_job.py"))


def torchrun(nproc: int, *args: str) -> str:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
            JOB,
            *args,
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def _files(step_uri: str) -> dict[str, int]:
    return {uri.rsplit("/", 1)[1]: storage.size(uri) for uri in storage.list_uris(step_uri + "/")}


@pytest.mark.parametrize(
    ("backend", "saved", "loaded"),
    [
        pytest.param("s3", (4, "fsdp"), (2, "fsdp"), id="seaweedfs-fsdp4-to-fsdp2"),
        pytest.param("local", (2, "ddp"), (3, "fsdp"), id="local-ddp2-to-fsdp3"),
    ],
)
def test_sharded_checkpoint_reshards_exactly(request, tmp_path, backend, saved, loaded):
    storage_root = (
        request.getfixturevalue("s3_bucket") if backend == "s3" else str(tmp_path / "store")
    )
    output = storage.join(storage_root, f"dcp-{saved[1]}{saved[0]}")
    torchrun(saved[0], "save", output, saved[1])

    step_uri = storage.join(output, "checkpoints", "step-00000002")
    files = _files(step_uri)
    assert "complete.json" in files and ".metadata" in files
    assert not any(name.endswith(".tmp") for name in files)
    shards = {name: size for name, size in files.items() if name.endswith(".distcp")}
    # One file per rank, none of them anywhere near the whole state: FSDP shards and DDP's
    # replicas de-duplicated across ranks.
    assert len(shards) == saved[0]
    total = sum(shards.values())
    assert max(shards.values()) < 0.75 * total, shards
    assert sorted(n for n in files if n.startswith("rank-")) == [
        f"rank-{r:05d}.pt" for r in range(saved[0])
    ]

    out = torchrun(loaded[0], "load", output, loaded[1])
    assert "LOADED-EXACTLY" in out
