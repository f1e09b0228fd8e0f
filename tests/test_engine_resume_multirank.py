"""Pre-emption of multi-rank training: every process of a torchrun job (the agent, the ranks and
their loader workers) is SIGKILLed at once, as a pre-empted pod is, at a random step or while a
checkpoint is being written; the same command run again must end bit-identical to a run that was
never interrupted: weights, optimizer moments and loss history. Also: a job restarted on fewer
ranks, and a rerun of a finished job."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mawsflow.data.decoders import ImageLabelsDecoder
from mawsflow.data.loader import POSITION_KEY, STREAM_KEY, LoaderState, build_loader
from mawsflow.data.manifest import read_manifest
from mawsflow.data.members import CORRUPT_SAMPLE_ERRORS
from mawsflow.data.shards import SampleStream, sample_seed
from mawsflow.engine.checkpoint import read_checkpoint_state
from mawsflow.steps.mae import ENCODER_PREFIX
from pretrain_shards import augment_config, write_pretrain_dataset
from step_process import json_records, run_step, step_command, step_env

pytestmark = pytest.mark.slow


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants (torchrun puts each rank in a session of its own, so a
    process group does not reach them)."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                todo.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                continue
    return found


def kill_job(proc: subprocess.Popen) -> None:
    """SIGKILL every process of the job at once, then make sure none is left."""
    pids = process_tree(proc.pid)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    for pid in pids:
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            status = (
                Path(f"/proc/{pid}/status").read_text() if Path(f"/proc/{pid}").exists() else ""
            )
            if "State:\tZ" in status:
                break
            time.sleep(0.05)


def run_and_kill(nproc: int, args: list[str], *, after_step: int, when: str) -> int:
    """Run the job and SIGKILL it once rank 0 has logged step `after_step` (when="step") or
    once it has started writing the first checkpoint at or after that step in the background
    (when="checkpoint": the kill lands while the save is in flight). Returns the last step
    rank 0 logged."""
    proc = subprocess.Popen(
        step_command("mae", args, nproc),
        env=step_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stderr is not None
    seen = 0
    try:
        for line in proc.stderr:
            found = json_records(line)
            if not found or found[0].get("rank") != 0:
                continue
            message = found[0]["message"]
            if message.startswith("step "):
                seen = int(message.split()[1].split("/")[0])
                if when == "step" and seen >= after_step:
                    break
            if (
                when == "checkpoint"
                and message.startswith("checkpoint staged")
                and found[0]["train_step"] >= after_step
            ):
                break
        else:
            pytest.fail(f"the run ended before step {after_step}")
    finally:
        kill_job(proc)
    return seen


def args_for(dataset: Path, out: Path, *, seed: int, workers: int, micro: int | None) -> list[str]:
    pairs = [
        f"data.train={dataset}",
        f"output={out}",
        "runtime.deterministic=true",
        f"runtime.seed={seed}",
        "runtime.log_every_steps=1",
        "checkpoint.every_steps=3",
        "checkpoint.keep_last=2",
        "schedule.batch_size=16",
        "schedule.samples_per_epoch=224",  # 14 steps
        f"data.num_workers={workers}",
        "data.shuffle_buffer=12",
    ]
    args = ["--preset", "tiny", *[a for p in pairs for a in ("--set", p)]]
    if micro is not None:
        args += ["--micro-batch-size", str(micro)]
    return args


def final_state(out: Path) -> dict:
    last = sorted((out / "checkpoints").iterdir())[-1]
    return read_checkpoint_state(str(last))


def assert_same_training(a: Path, b: Path, context: str) -> None:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert set(wa) == set(wb)
    for key in wa:
        assert torch.equal(wa[key], wb[key]), f"{key} differs ({context})"
    sa, sb = final_state(a), final_state(b)
    assert set(sa["model"]) == set(sb["model"])
    for key, value in sa["model"].items():  # the decoder too
        assert torch.equal(value, sb["model"][key]), f"model {key} differs ({context})"
    assert set(sa["optimizer"]["state"]) == set(sb["optimizer"]["state"])
    for key, moments in sa["optimizer"]["state"].items():
        for name, value in moments.items():
            other = sb["optimizer"]["state"][key][name]
            assert torch.equal(value, other), f"optimizer {key}.{name} differs ({context})"
    ha = json.loads((a / "history.json").read_text())
    hb = json.loads((b / "history.json").read_text())
    assert ha == hb and len(ha["steps"]) == 14, context


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_pretrain_dataset(tmp_path_factory.mktemp("pretrain"), num_samples=96)


# (ranks, loader workers, micro batch or None, when to kill, seed). Two ranks with two loader
# workers each and four ranks loading in-process keep the process count within 2 CPUs; each
# case costs three job starts, so the matrix is kept to the two that differ in every respect.
CASES = [
    pytest.param(2, 2, 4, "step", 3, id="2ranks-accumulation-2workers-random-step"),
    pytest.param(4, 0, None, "checkpoint", 17, id="4ranks-mid-checkpoint"),
]


@pytest.mark.parametrize(("nproc", "workers", "micro", "when", "seed"), CASES)
def test_sigkilled_job_resumes_bit_exact(dataset, tmp_path, nproc, workers, micro, when, seed):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_step(
        "mae", args_for(dataset, straight, seed=seed, workers=workers, micro=micro), nproc=nproc
    )

    args = args_for(dataset, killed, seed=seed, workers=workers, micro=micro)
    # Late enough that the step-3 checkpoint is complete (the save at step 6 waits for it).
    after = random.Random().randint(7, 11) if when == "step" else random.choice([6, 9])
    seen = run_and_kill(nproc, args, after_step=after, when=when)
    assert not (killed / "model.json").exists()

    found = run_step("mae", args, nproc=nproc)
    resumed = [r for r in found if r["message"] == "resumed from checkpoint"]
    assert len(resumed) == nproc, f"every rank resumes (killed after step {seen})"
    assert {r["saved_world_size"] for r in resumed} == {nproc}
    step = resumed[0]["train_step"]
    assert 3 <= step <= seen and step % 3 == 0
    assert_same_training(straight, killed, f"killed at step {seen}, resumed from {step}")
    assert len(list((killed / "checkpoints").iterdir())) == 2, "keep_last prunes the rest"

    if nproc != 2:
        return
    # A rerun of the finished job (a pipeline retry after success) neither trains nor
    # rewrites the model.
    model = killed / "model.safetensors"
    before = model.stat().st_mtime_ns
    again = run_step("mae", args, nproc=nproc)
    assert sum(r["message"] == "output already complete; not retraining" for r in again) == nproc
    assert not any(r["message"] in ("training", "resumed from checkpoint") for r in again)
    assert model.stat().st_mtime_ns == before


def test_four_ranks_restart_as_two(dataset, tmp_path):
    """The job loses half its ranks. The model and optimizer continue from the checkpoint
    exactly (resharded by DCP); the data streams of the four ranks are shared out among the two
    (the semantics are tested exactly below)."""
    out = tmp_path / "shrunk"
    args = args_for(dataset, out, seed=5, workers=1, micro=None)
    run_and_kill(4, args, after_step=7, when="step")
    latest = max(p for p in (out / "checkpoints").iterdir() if (p / "complete.json").exists())
    step = int(latest.name.split("-")[1])
    saved = read_checkpoint_state(str(latest))

    # A copy whose schedule ends at the checkpoint: two ranks load it and export at once, so
    # the exported encoder is exactly what they loaded.
    probe = tmp_path / "probe"
    shutil.copytree(out, probe)
    probe_args = args_for(dataset, probe, seed=5, workers=1, micro=None)
    probe_args += ["--set", f"schedule.samples_per_epoch={step * 16}"]
    run_step("mae", probe_args, nproc=2)
    exported = load_file(probe / "model.safetensors")
    assert exported and all(
        torch.equal(v, saved["model"][ENCODER_PREFIX + k]) for k, v in exported.items()
    )

    found = run_step("mae", args, nproc=2)
    resumed = [r for r in found if r["message"] == "resumed from checkpoint"]
    assert {r["saved_world_size"] for r in resumed} == {4} and len(resumed) == 2
    assert {r["train_step"] for r in resumed} == {step}
    assert any("streams redistributed" in r["message"] for r in found)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 14 and metrics["samples_seen"] == 14 * 16
    history = json.loads((out / "history.json").read_text())
    assert history["steps"] == list(range(1, 15))
    final = final_state(out)
    # The optimizer continued from the loaded moments: Adam's step counts go on from `step`.
    key = next(iter(final["optimizer"]["state"]))
    assert int(saved["optimizer"]["state"][key]["step"]) == step
    assert int(final["optimizer"]["state"][key]["step"]) == 14


def _consume(manifest, state: LoaderState, *, rank: int, world: int, batches: int) -> list:
    loader = build_loader(
        manifest,
        ImageLabelsDecoder(augment_config(), manifest.num_classes),
        batch_size=4,
        num_workers=0,
        seed=3,
        rank=rank,
        world_size=world,
        shuffle_buffer=8,
        state=state,
        pin_memory=False,
    )
    out = []
    for batch in loader:
        state.advance(batch)
        out.append((batch[STREAM_KEY], batch[POSITION_KEY], batch["image"]))
        if len(out) == batches:
            return out
    return out


def test_streams_continue_without_repeats_or_gaps_on_fewer_ranks(dataset):
    """Four ranks read 5 batches each, then two ranks take over all four streams: each stream
    continues at its saved position, and over both jobs every stream has been read exactly as
    one uninterrupted stream (no sample repeated, none skipped)."""
    manifest = read_manifest(str(dataset))
    four = [LoaderState(num_streams=4) for _ in range(4)]
    read: dict[int, list] = {s: [] for s in range(4)}
    for rank in range(4):
        for stream, position, images in _consume(
            manifest, four[rank], rank=rank, world=4, batches=5
        ):
            read[stream].append((position, images))
    merged = LoaderState.merge([s.state_dict() for s in four])
    for rank in range(2):
        state = LoaderState.restore(
            merged, num_streams=2, rank_streams=range(rank, rank + 1), samples_seen=80
        )
        assert state.num_streams == 4 and set(state.positions) == {rank, rank + 2}
        got = _consume(manifest, state, rank=rank, world=2, batches=6)
        # One whole batch from each of its two streams in turn.
        assert [s for s, _, _ in got] == [rank, rank + 2] * 3
        for stream, position, images in got:
            read[stream].append((position, images))

    decoder = ImageLabelsDecoder(augment_config(), manifest.num_classes)
    for stream, batches in read.items():
        assert len(batches) == 8
        # The same stream read alone from its start, its corrupt samples skipped.
        source = SampleStream(
            manifest.shards, manifest.shard_sizes, seed=3, stream=stream, num_streams=4,
            block_size=8,
        )  # fmt: skip
        expected = []
        for position, raw in source.samples(0):
            if len(expected) == 8 * 4:
                break
            if raw is None:
                continue
            try:
                sample = decoder(raw, sample_seed(3, stream, position))
            except CORRUPT_SAMPLE_ERRORS:
                continue
            expected.append((position + 1, sample["image"]))
        images = torch.cat([images for _, images in batches])
        assert torch.equal(images, torch.stack([image for _, image in expected]))
        assert [p for p, _ in batches] == [expected[4 * i + 3][0] for i in range(8)]
