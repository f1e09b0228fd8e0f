"""Running a whole pipeline on this machine with `kfp.local`.

Tasks run as subprocesses of this interpreter (`SubprocessRunner` without a virtual environment
of its own, so they import this environment's mawsflow): top-level tasks one after another,
ParallelFor iterations two at a time. Artifacts live under `<work dir>/runs/<timestamp>/`; the
steps' inputs may be local paths or `s3://` URIs (with the usual AWS environment variables).

kfp.local prints every task's executor input and output; that goes to `tasks.log` in the run's
folder, and the terminal shows one line per task as it starts and ends.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime
import io
import json
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from kfp import local
from kfp.dsl.graph_component import GraphComponent

_PROGRESS = re.compile(r"Executing task|finished with status|cache hit|Skipping")
# kfp.local runs ParallelFor iterations two at a time, and a loop inside a loop's body two at a
# time again (kfp/local/orchestrator/enhanced_dag_orchestrator.py, `ParallelExecutor`): up to
# four tasks at once. Each torch process would start as many OpenMP threads as there are cores,
# and oversubscribed OpenMP threads spin at their barriers while the thread they wait for is
# descheduled: on 2 cores a training step measured 2-3× slower than with one thread per
# process. So unless the caller chose, every task computes on one thread.
THREADS_PER_TASK = "1"


class LocalRunFailed(RuntimeError):
    """A task of the local run failed; its log is in the run's tasks.log."""


@dataclass(frozen=True)
class LocalReport:
    """The report task's `files` output: report.md, report.html and report.json; for a
    scheduled retraining run, also what its plan and its promotion gate decided (None where
    the task did not run: a run over unchanged data has no gate and no report)."""

    folder: Path | None
    plan: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None

    @property
    def table(self) -> str:
        """The report's results table (the Markdown file's table lines)."""
        if self.folder is None:
            return "(no report: the run trained nothing)"
        text = (self.folder / "report.md").read_text(encoding="utf-8")
        return "\n".join(line for line in text.splitlines() if line.startswith("|"))


def _retraining_report(root: Path) -> LocalReport:
    """A retraining pipeline has no outputs (they are inside its data-changed condition): its
    plan, gate decision and report are found among the run's artifacts."""

    def newest(name: str) -> Path | None:
        found = sorted(root.rglob(name), key=lambda p: p.stat().st_mtime)
        return found[-1] if found else None

    plan, gate, report = newest("plan.json"), newest("gate.json"), newest("report.json")
    return LocalReport(
        report.parent if report else None,
        json.loads(plan.read_text(encoding="utf-8")) if plan else None,
        json.loads(gate.read_text(encoding="utf-8")) if gate else None,
    )


class _ProgressEcho(io.TextIOBase):
    """A stdout that writes everything to the log and echoes kfp's task status lines to the
    terminal. Tasks of a ParallelFor print from several threads, hence the lock."""

    def __init__(self, log: TextIO, terminal: TextIO) -> None:
        self._log = log
        self._terminal = terminal
        self._pending = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._log.write(text)
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
            for line in lines:
                if _PROGRESS.search(line):
                    self._terminal.write(line.strip() + "\n")
            self._terminal.flush()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._log.flush()


def run_locally(
    pipeline: GraphComponent,
    arguments: Mapping[str, Any],
    work_dir: Path,
    runner: local.SubprocessRunner | local.DockerRunner | None = None,
) -> LocalReport:
    """Run every task of `pipeline` (as subprocesses, or with `runner`: see
    mawsflow.orchestration.container_run); returns where its report is."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    root = work_dir.resolve() / "runs" / stamp
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", THREADS_PER_TASK)
    log_path = root / "tasks.log"
    print(f"running {pipeline.name} locally; task logs: {log_path}", flush=True)
    local.init(
        runner=runner or local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        raise_on_error=True,
    )
    # kfp.local indents task output by swapping builtins.print, and installs a root-logger
    # handler on the current stdout, while a task runs; tasks of a ParallelFor do both from
    # several threads and can leave an indenting print, or a handler writing into this run's
    # (soon closed) log, behind. Both are put back when the run ends.
    print_function = builtins.print
    root_logger = logging.getLogger()
    root_handlers, root_level = root_logger.handlers[:], root_logger.level
    with (
        open(log_path, "w", encoding="utf-8") as log,
        contextlib.redirect_stdout(_ProgressEcho(log, sys.stdout)),
        warnings.catch_warnings(),
    ):
        # The tasks name their cluster images and Kubernetes settings, which a local run
        # neither pulls nor applies; kfp says so for every task.
        warnings.filterwarnings("ignore", message="You may be attemping to run a task")
        warnings.filterwarnings("ignore", message=r"Task .* have no effect in the current local")
        # Imported s3:// datasets: kfp.local cannot fill their `.path`, which no step uses (the
        # components read every artifact through its URI).
        warnings.filterwarnings("ignore", message="It looks like you're using the remote file")
        try:
            task = pipeline(**arguments)
        except RuntimeError as exc:
            raise LocalRunFailed(f"{exc} (task logs: {log_path})") from None
        finally:
            builtins.print = print_function
            root_logger.handlers[:] = root_handlers
            root_logger.setLevel(root_level)
    if "files" not in task.outputs:
        return _retraining_report(root)
    return LocalReport(Path(task.outputs["files"].uri))
