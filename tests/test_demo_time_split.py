"""bench/demo_time_split.py: reading a kfp.local run log (tasks.log) into per-task start-up and
compute time, on a trimmed real log and on generated logs in the same line formats."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "data" / "demo_run" / "tasks.log"


def _load_bench():
    spec = importlib.util.spec_from_file_location(
        "demo_time_split", ROOT / "bench" / "demo_time_split.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


# --------------------------------------------------------------------------------------------
# Lines as kfp.local and the steps write them (kfp/local/task_dispatcher.py, logging_utils.py;
# mawsflow/log.py's JsonFormatter): kfp's own lines in local time of day with ANSI colours,
# the executor's in local date and time, mawsflow's records in UTC; task output indented.


class _Log:
    """Writes a run log for a machine whose local time is UTC + `utc_offset_h`."""

    def __init__(self, start: dt.datetime, utc_offset_h: int) -> None:
        self.start = start
        self.offset = dt.timedelta(hours=utc_offset_h)
        self.lines: list[tuple[float, str]] = []

    def _at(self, t: float) -> dt.datetime:
        return self.start + dt.timedelta(seconds=t)

    def kfp(self, t: float, message: str) -> None:
        stamp = self._at(t).strftime("%H:%M:%S.%f")[:-3]
        self.lines.append((t, f"{stamp} - INFO - {message}"))

    def executing(self, t: float, task: str) -> None:
        self.kfp(t, f"Executing task \x1b[96m'{task}'\x1b[0m")
        self.kfp(t, "Streamed logs:\n")

    def finished(self, t: float, task: str) -> None:
        self.kfp(t, f"Task \x1b[96m'{task}'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m")

    def executor(self, t: float, message: str) -> None:
        stamp = self._at(t).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
        self.lines.append((t, f"            [KFP Executor {stamp} INFO]: {message}"))

    def record(self, t: float, message: str, **extra) -> None:
        utc = (self._at(t) - self.offset).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        fields = {"time": utc, "level": "info", "logger": "mawsflow.x", "message": message}
        self.lines.append((t, "            " + json.dumps({**fields, **extra})))

    def wrote(self, t: float, task_path: str) -> None:
        path = f"/w/runs/x/maws-2026/{task_path}/executor_output.json"
        self.record(t, f"Wrote executor output file to {path}.")

    def text(self) -> list[str]:
        # Written in time order, as the threads printed them.
        return [line for _, line in sorted(self.lines, key=lambda item: item[0])]


def _two_transfer_rows() -> _Log:
    """Two iterations of a ParallelFor, crossing local midnight on a UTC+1 machine: both start
    'finetune'; the first ends and moves on to 'lit' while the second still builds its model,
    so 'lit' logs its "training" record before the second 'finetune' does. kfp lost the second
    'finetune' iteration's "finished" line (as kfp.local does when iterations end together).
    Then 'report', a task that logs no start of compute."""
    log = _Log(dt.datetime(2026, 12, 1, 23, 59, 50), utc_offset_h=1)
    log.kfp(0.0, "Running pipeline: \x1b[95m'maws'\x1b[0m")
    log.executing(0.0, "finetune")
    log.executing(0.1, "finetune")
    log.executor(0.4, "Looking for component `finetune` in --component_module_path `/tmp/a/e.py`")
    log.executor(0.5, "Looking for component `finetune` in --component_module_path `/tmp/b/e.py`")
    log.record(5.0, "training", task="finetune", rank=0)
    log.record(9.0, "step 8/32 loss 1.0 lr 0.1 9.0 samples/s/rank data wait 0%", rank=0)
    log.wrote(20.1, "for-loop-3-iteration-0/finetune")
    log.finished(20.6, "finetune")
    log.executing(21.0, "lit")
    log.record(23.0, "training", task="lit", rank=0)
    log.record(24.0, "training", task="finetune", rank=0)
    log.wrote(30.0, "for-loop-3-iteration-1/finetune")  # its "finished" line is lost
    log.wrote(35.0, "for-loop-3-iteration-0/lit")
    log.finished(35.5, "lit")
    log.executing(36.0, "report")
    log.record(37.5, "report written")
    log.wrote(37.6, "report")
    log.finished(38.0, "report")
    log.kfp(38.5, "Pipeline \x1b[95m'maws'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m")
    return log


def test_parallel_tasks_are_paired_by_name_and_step_not_by_order():
    run = bench.parse_run_log(_two_transfer_rows().text())
    first, second, lit, report = run.tasks
    assert [t.name for t in run.tasks] == ["finetune", "finetune", "lit", "report"]
    # Pairing by order would give lit the second finetune's "training" record and its own to
    # nobody; by the record's step, each gets its own.
    assert lit.compute_start - run.start == pytest.approx(23.0)
    assert second.compute_start - run.start == pytest.approx(24.0)
    # Midnight passed (23:59:50 → 00:00:28) and the records' UTC times line up with kfp's local
    # ones: start-up runs from each task's start to its "training" record.
    assert first.startup == pytest.approx(5.0) and first.compute == pytest.approx(15.6)
    assert lit.startup == pytest.approx(2.0) and lit.compute == pytest.approx(12.5)
    # The lost "finished" line: the second finetune ends at its output plus the usual gap
    # (0.5 s, the median over the other tasks).
    assert not first.end_inferred and first.end - run.start == pytest.approx(20.6)
    assert second.end_inferred and second.end - run.start == pytest.approx(30.5)
    assert second.startup == pytest.approx(23.9) and second.compute == pytest.approx(6.5)
    # A task without a start-of-compute record ("report written" is an end) is not split.
    assert not report.split and report.unsplit == pytest.approx(2.0)
    assert report.startup == 0.0 and report.compute == 0.0


def test_summary_groups_by_component_and_splits_the_pipelines_wall_time():
    summary = bench.summarize(bench.parse_run_log(_two_transfer_rows().text()))
    finetune = next(c for c in summary["components"] if c["component"] == "finetune")
    assert finetune["tasks"] == 2
    assert finetune["wall_s"] == pytest.approx(20.6 + 30.4)
    assert finetune["startup_s"] == pytest.approx(5.0 + 23.9)
    assert finetune["compute_s"] == pytest.approx(15.6 + 6.5)
    assert finetune["compute_ratio"] == pytest.approx(22.1 / 51.0, abs=1e-4)
    totals = summary["totals"]
    assert totals["unsplit_s"] == pytest.approx(2.0) and totals["unsplit_tasks"] == 1
    assert totals["compute_s"] == pytest.approx(22.1 + 12.5)
    pipeline = summary["pipeline"]
    assert pipeline["status"] == "SUCCESS" and pipeline["wall_s"] == pytest.approx(38.5)
    # Computing: 5–20.6 s and 23–35.5 s (the second finetune's 24–30.5 s lies inside);
    # report 36–38 s unsplit; tasks run 0–35.5 and 36–38 s: 7.4 s only starting up, 1 s
    # between tasks.
    assert pipeline["computing_s"] == pytest.approx(15.6 + 12.5)
    assert pipeline["unsplit_only_s"] == pytest.approx(2.0)
    assert pipeline["startup_only_s"] == pytest.approx(37.5 - 30.1)
    assert pipeline["between_tasks_s"] == pytest.approx(1.0)


def test_a_trimmed_real_run_log():
    """A real `pipelines/maws.py --local --baselines` log (tests/data/demo_run/README.md):
    kfp lost one of the two build-dataset-count iterations' "finished" lines, and two transfer
    rows run side by side, drifting apart."""
    run = bench.parse_run_log(FIXTURE.read_text(encoding="utf-8").splitlines())
    assert run.status == "SUCCESS" and run.pipeline == "maws-with-baselines"
    per_component: dict[str, int] = {}
    for task in run.tasks:
        per_component[task.component] = per_component.get(task.component, 0) + 1
    assert per_component["build-dataset-count"] == per_component["build-dataset-write"] == 2
    assert per_component["wsp"] == 2  # wsp and wsp-2 (WSP from scratch)
    assert per_component["finetune"] == per_component["lit"] == per_component["lowshot"] == 2
    counts = [t for t in run.tasks if t.name == "build-dataset-count"]
    assert sum(t.end_inferred for t in counts) == 1
    assert all(t.end > t.start for t in run.tasks)
    # mae: "Executing task 'mae'" 08:25:16.636, its "training" record 08:25:24.917Z (the
    # machine runs on UTC), "finished" 08:26:25.888.
    mae = next(t for t in run.tasks if t.name == "mae")
    assert mae.wall == pytest.approx(69.252) and mae.startup == pytest.approx(8.281)
    # Every training task got a "training" record inside its own run, also the first row's
    # lowshot, which starts while the second row's evaluate still runs.
    trained = [t for t in run.tasks if t.component in ("mae", "wsp", "finetune", "lit", "lowshot")]
    assert len(trained) == 9
    for task in trained:
        assert task.progress_record == "training" and 0 < task.startup < task.wall, task
    evaluate = [t for t in run.tasks if t.name == "evaluate"]
    lowshot = [t for t in run.tasks if t.name == "lowshot"]
    assert lowshot[0].start < evaluate[1].end
    # Steps that log no start of compute are not split.
    assert all(not t.split for t in run.tasks if t.component in ("evaluate", "zeroshot"))
    summary = bench.summarize(run)
    totals = summary["totals"]
    assert totals["tasks"] == len(run.tasks)
    assert totals["startup_s"] + totals["compute_s"] + totals["unsplit_s"] == pytest.approx(
        totals["wall_s"], abs=0.01
    )


def test_cli_prints_a_table_and_json(tmp_path, capsys):
    (tmp_path / "runs" / "20261201-235950").mkdir(parents=True)
    log = tmp_path / "runs" / "20261201-235950" / "tasks.log"
    log.write_text("\n".join(_two_transfer_rows().text()) + "\n", encoding="utf-8")
    # A work dir: its latest run.
    assert bench.main([str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "finetune" in table and "lit" in table and "report" in table and "total" in table
    assert bench.main([str(log), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["log"] == str(log)
    assert [t["task"] for t in summary["tasks"]] == ["finetune", "finetune", "lit", "report"]


def test_a_file_that_is_not_a_run_log_is_refused(tmp_path, capsys):
    other = tmp_path / "notes.txt"
    other.write_text('08:00:00 the demo finished\n{"time": "x", "message": "training"}\n')
    with pytest.raises(bench.RunLogError, match="not a kfp.local run log"):
        bench.parse_run_log(other.read_text().splitlines())
    assert bench.main([str(other)]) == 2
    assert "not a kfp.local run log" in capsys.readouterr().err
    assert bench.main([str(tmp_path / "missing")]) == 2
    assert "no tasks.log" in capsys.readouterr().err


def test_an_evaluating_record_splits_an_evaluation_task():
    """An evaluation step that logs "evaluating" (with its `task`) once its model and data are
    loaded is split like a training step."""
    log = _Log(dt.datetime(2026, 12, 1, 10, 0, 0), utc_offset_h=0)
    log.executing(0.0, "evaluate")
    log.record(6.0, "evaluating", task="evaluate")
    log.record(9.0, "evaluated", top1=50.0)
    log.wrote(9.1, "evaluate")
    log.finished(9.5, "evaluate")
    (task,) = bench.parse_run_log(log.text()).tasks
    assert task.split and task.startup == pytest.approx(6.0) and task.compute == pytest.approx(3.5)
