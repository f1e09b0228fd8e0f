"""What a pipeline's processes import before they do any work.

A local run of the demo starts ~70 task processes and ~30 training ranks, and on a 2-core
machine their imports were a large share of the run (bench/demo_time_split.py's start-up
column). These checks keep the expensive libraries out of the processes that do not use them;
each runs a fresh interpreter, as a task does.
"""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> None:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_pipeline_task_processes_do_not_import_torch():
    """Every KFP task's own process imports storage and the task runtime (a training task's
    launches the job; the plans and summaries do their work there). With webdataset, hence
    torch, among storage's imports each task paid ~2 s of CPU and ~600 MB more (farm-bench:
    3.6 s against 0.47 s wall for the task runtime's import). Shard readers still find
    webdataset's s3:// scheme routed through storage."""
    _run(
        "import sys, mawsflow.storage, mawsflow.orchestration.task_runtime, "
        "mawsflow.orchestration.components, mawsflow.orchestration.seed_fan_in, "
        "mawsflow.evaluation.results, mawsflow.launch.local, mawsflow.registry.plan\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'webdataset' not in sys.modules, 'webdataset imported'\n"
        "import importlib, mawsflow.data.shards\n"
        "schemes = importlib.import_module('webdataset.gopen').gopen_schemes\n"
        "assert schemes['s3'] is mawsflow.storage._gopen_s3, schemes.get('s3')\n"
    )


def test_transfer_steps_do_not_import_transformers():
    """Only LiT and zero-shot use the text tower; transformers costs ~1.5 s of CPU per process
    (farm-bench, this 2-core machine), and finetuning, evaluation, low-shot and the linear
    probe run once per model and seed. (LiT's loaders, which import it when called, are
    exercised by tests/test_lit.py and tests/test_eval_zeroshot.py.)"""
    _run(
        "import sys, mawsflow.steps.finetune, mawsflow.steps.evaluate, "
        "mawsflow.steps.lowshot, mawsflow.steps.linear_probe\n"
        "assert 'transformers' not in sys.modules, 'transformers imported'\n"
    )
