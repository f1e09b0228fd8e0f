"""Where a finished local run's time went: per task, START-UP against COMPUTE.

Reads the `tasks.log` that `pipelines/maws.py --local` writes into `<work dir>/runs/<stamp>/`
(kfp.local's own lines and every task's streamed output) and prints, per component (mae, wsp,
lit, finetune, evaluate, linear-probe, lowshot, zeroshot, build-dataset-*, report…):

- wall: from kfp's "Executing task" to its "Task … finished" line, summed over the component's
  tasks (kfp's ParallelFor runs iterations side by side, so sums can exceed the pipeline's wall);
- start-up: from the task's start to the step's first progress record, the trainer's
  "training" record (logged when the model, optimizer and data loader are built and the loop
  starts): process start, imports, loading the model and the data;
- compute: the rest;
- unsplit: the wall time of tasks that log no such record (the dataset build's phases,
  zero-shot, evaluate, linear-probe, logistic-regression low-shot, report…): their records say
  when work is done, not when it starts, so they are not guessed at;
- compute / (start-up + compute).

Then the pipeline: its wall time split into time when some task was computing, when only
unsplit tasks ran, when tasks were only starting up, and between tasks (kfp's own
bookkeeping). The bench measures; it asserts nothing about how long anything should take.

    python bench/demo_time_split.py demo-output                 # the latest run in a work dir
    python bench/demo_time_split.py demo-output/runs/20261201-082441 --tasks
    python bench/demo_time_split.py path/to/tasks.log --json > split.json

How the log is read. Top-level tasks run one after another, ParallelFor iterations two at a
time, and the iterations' streamed lines interleave without saying which task wrote them. So
start and end lines are paired by task name, never by order: a step's "Wrote executor output"
line and kfp's "finished" line end an open task of that name. A "training" record goes to
the open task its `task` field names (another iteration may be at another task by then).
Open tasks of one name are
iterations of one loop and get lines first come, first served: which iteration gets which can
swap, the sums per component cannot. kfp.local can lose an iteration's "finished" line when
two iterations end together (they swap the root logger's handlers from two threads); such a
task ends where its step wrote its output plus the median gap between the two on the other
tasks, and is marked "end inferred".
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# kfp.local's own lines: local time of day, no date.
_KFP_LINE = re.compile(r"^\s*(\d\d):(\d\d):(\d\d)\.(\d{3}) - (?:INFO|WARNING|ERROR) - (.*)$")
_EXECUTING = re.compile(r"^Executing task '([^']+)'")
_FINISHED = re.compile(r"^Task '([^']+)' finished with status (\w+)")
_PIPELINE_START = re.compile(r"^Running pipeline: '([^']+)'")
_PIPELINE_END = re.compile(r"^Pipeline '([^']+)' finished with status (\w+)")
# The task processes' lines: kfp's executor (local date and time) and mawsflow's JSON records
# (UTC, mawsflow.log.JsonFormatter).
_EXECUTOR_LINE = re.compile(
    r"^\s*\[KFP Executor (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \w+\]: (.*)$"
)
_WROTE_OUTPUT = re.compile(r"Wrote executor output file to (\S+?)/executor_output\.json")

# The records that mark the start of a step's compute: the trainer's "training" record,
# logged once the model, optimizer and data loader are built and the loop starts, its `task`
# field naming the step (mae, wsp, lit, finetune, lowshot); and "evaluating", the same for an
# evaluation step that logs one (with `task`) once its model and data are loaded. Records a
# step logs when work is DONE ("evaluated", "zero-shot", "linear probe", "low-shot run", a
# dataset phase's "done") are not starts: a task with no start record is left unsplit rather
# than guessed.
_PROGRESS_MESSAGES = ("training", "evaluating")
# A step whose pipeline component has another name (`mawsflow eval` runs as task "evaluate").
_COMPONENT_OF_STEP = {"eval": "evaluate"}
_DAY = 86400.0


class RunLogError(ValueError):
    """The file is not a kfp.local run log this bench can read."""


@dataclass
class TaskRun:
    """One execution of one task (a ParallelFor iteration is one execution)."""

    name: str
    start: float
    end: float | None = None
    status: str = ""
    compute_start: float | None = None
    progress_record: str = ""
    output_written: float | None = None
    end_inferred: bool = False

    @property
    def component(self) -> str:
        """The task name less kfp's suffix for a second use of a component ('wsp-2')."""
        return re.sub(r"-\d+$", "", self.name)

    @property
    def wall(self) -> float:
        assert self.end is not None
        return self.end - self.start

    @property
    def split(self) -> bool:
        return self.compute_start is not None

    @property
    def startup(self) -> float:
        """Until the first progress record (0 for a task left unsplit)."""
        if self.compute_start is None:
            return 0.0
        return min(max(self.compute_start - self.start, 0.0), self.wall)

    @property
    def compute(self) -> float:
        """From the first progress record to the end (0 for a task left unsplit)."""
        return self.wall - self.startup if self.split else 0.0

    @property
    def unsplit(self) -> float:
        """The wall time of a task that logged no start of compute."""
        return 0.0 if self.split else self.wall


@dataclass
class RunLog:
    pipeline: str
    start: float
    end: float
    status: str
    tasks: list[TaskRun] = field(default_factory=list)
    midnight: dt.datetime = dt.datetime(1970, 1, 1)


class _Clock:
    """Turns the log's three time formats into seconds on one local timeline.

    kfp.local's lines carry a local time of day (a run can pass midnight: a time more than
    half a day before the previous one is the next day); the executor's lines a local date and
    time; mawsflow's records UTC. The UTC offset is the gap between a record and the kfp line
    before it, rounded to a quarter hour (the real gap is seconds)."""

    def __init__(self, midnight: dt.datetime) -> None:
        self.midnight = midnight
        self.day = 0.0
        self.last = 0.0
        self.utc_offset: float | None = None

    def time_of_day(self, h: str, m: str, s: str, ms: str) -> float:
        t = self.day + int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000
        if t < self.last - _DAY / 2:
            self.day += _DAY
            t += _DAY
        self.last = max(self.last, t)
        return t

    def local(self, stamp: dt.datetime) -> float:
        return (stamp - self.midnight).total_seconds()

    def utc(self, stamp: dt.datetime) -> float:
        t = self.local(stamp)
        if self.utc_offset is None:
            if not self.last:  # no kfp line yet to measure against
                return t
            self.utc_offset = round((self.last - t) / 900) * 900
        return t + self.utc_offset


def _first_date(lines: Sequence[str]) -> dt.datetime:
    """Local midnight of the run's first day, from the first executor line (1970-01-01 when
    there is none: only differences matter then)."""
    first_kfp = None
    for line in lines:
        kfp = _KFP_LINE.match(line)
        if kfp and first_kfp is None:
            first_kfp = kfp
        executor = _EXECUTOR_LINE.match(line)
        if executor:
            stamp = dt.datetime.fromisoformat(executor.group(1))
            midnight = dt.datetime.combine(stamp.date(), dt.time())
            # The run's first kfp line came before this one: later in the day means yesterday.
            if first_kfp and first_kfp.group(1, 2, 3) > (
                f"{stamp.hour:02d}",
                f"{stamp.minute:02d}",
                f"{stamp.second:02d}",
            ):
                midnight -= dt.timedelta(days=1)
            return midnight
    return dt.datetime(1970, 1, 1)


def _record(line: str) -> tuple[dt.datetime, dict[str, Any]] | None:
    """A mawsflow JSON record and its (UTC) time, or None."""
    text = line.strip()
    if not (text.startswith("{") and '"time"' in text and '"message"' in text):
        return None
    try:
        record = json.loads(text)
        stamp = dt.datetime.fromisoformat(str(record["time"]).rstrip("Z"))
    except (json.JSONDecodeError, TypeError, KeyError, ValueError):
        return None
    return stamp.replace(tzinfo=None), record


def _is_progress(record: dict[str, Any]) -> bool:
    return record.get("message") in _PROGRESS_MESSAGES


class _Parser:
    def __init__(self, lines: Sequence[str]) -> None:
        self.clock = _Clock(_first_date(lines))
        self.lines = lines
        self.tasks: list[TaskRun] = []
        self.open: list[TaskRun] = []
        self.pipeline = ""
        self.start: float | None = None
        self.end: float | None = None
        self.status = ""

    def parse(self) -> RunLog:
        for line in self.lines:
            self._line(_ANSI.sub("", line.rstrip("\n")))
        if not self.tasks:
            raise RunLogError(
                "no \"Executing task '…'\" lines: not a kfp.local run log "
                "(pipelines/maws.py --local writes one to <work dir>/runs/<stamp>/tasks.log)"
            )
        self._infer_missing_ends()
        start = self.start if self.start is not None else min(t.start for t in self.tasks)
        end = self.end if self.end is not None else max(t.end for t in self.tasks)
        return RunLog(
            self.pipeline,
            start,
            end,
            self.status or "unfinished",
            self.tasks,
            self.clock.midnight,
        )

    def _line(self, line: str) -> None:
        kfp = _KFP_LINE.match(line)
        if kfp:
            self._kfp(self.clock.time_of_day(*kfp.group(1, 2, 3, 4)), kfp.group(5))
            return
        executor = _EXECUTOR_LINE.match(line)
        if executor:
            stamp = dt.datetime.fromisoformat(executor.group(1))
            when = self.clock.local(stamp) + int(executor.group(2)) / 1000
            self._task_line(when, executor.group(3), None)
            return
        if found := _record(line):
            stamp, record = found
            self._task_line(self.clock.utc(stamp), str(record.get("message", "")), record)

    def _kfp(self, when: float, message: str) -> None:
        if match := _EXECUTING.match(message):
            task = TaskRun(match.group(1), when)
            self.tasks.append(task)
            self.open.append(task)
        elif match := _FINISHED.match(message):
            self._finish(match.group(1), match.group(2), when)
        elif match := _PIPELINE_START.match(message):
            self.pipeline, self.start = match.group(1), when
        elif match := _PIPELINE_END.match(message):
            self.end, self.status = when, match.group(2)

    def _finish(self, name: str, status: str, when: float) -> None:
        candidates = [t for t in self.open if t.name == name]
        if not candidates:
            return  # an end without a start: the excerpt began mid-task
        # Open tasks of one name are served first come, first served (the first to start is
        # the first to have been given a "Wrote executor output" line).
        task = candidates[0]
        task.end, task.status = when, status
        self.open.remove(task)

    def _task_line(self, when: float, message: str, record: dict[str, Any] | None) -> None:
        if wrote := _WROTE_OUTPUT.search(message):
            name = Path(wrote.group(1)).name
            waiting = [t for t in self.open if t.name == name and t.output_written is None]
            if waiting:
                waiting[0].output_written = when
            return
        if record is None or not _is_progress(record):
            return
        # A task whose step wrote its executor output has ended, whether or not kfp said so.
        waiting = [t for t in self.open if t.compute_start is None and t.output_written is None]
        # Another iteration may be at another task already: the record's step picks the task.
        step = str(record.get("task", ""))
        step = _COMPONENT_OF_STEP.get(step, step)
        named = [t for t in waiting if step in (t.name, t.component)]
        if named or len(waiting) == 1:
            task = (named or waiting)[0]
            task.compute_start, task.progress_record = when, record["message"]

    def _infer_missing_ends(self) -> None:
        gaps = [
            t.end - t.output_written
            for t in self.tasks
            if t.end is not None and t.output_written is not None
        ]
        gap = statistics.median(gaps) if gaps else 0.0
        for task in self.open:
            if task.output_written is None:
                continue  # never ended: a failed or unfinished run; left out
            task.end, task.status, task.end_inferred = task.output_written + gap, "SUCCESS", True
        self.tasks = [t for t in self.tasks if t.end is not None]


def parse_run_log(lines: Iterable[str]) -> RunLog:
    """The tasks of a kfp.local run log (tasks.log), their starts, ends and compute starts."""
    return _Parser(list(lines)).parse()


def find_log(path: Path) -> Path:
    """tasks.log itself, a run's folder, or a work dir (its latest run)."""
    if path.is_file():
        return path
    if (path / "tasks.log").is_file():
        return path / "tasks.log"
    runs = sorted((path / "runs").glob("*/tasks.log")) if (path / "runs").is_dir() else []
    if runs:
        return runs[-1]
    raise RunLogError(
        f"{path}: no tasks.log here, in {path}/tasks.log or in {path}/runs/*/tasks.log"
    )


def _union(intervals: Iterable[tuple[float, float]]) -> float:
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def summarize(run: RunLog) -> dict[str, Any]:
    """Per component and in total: tasks, wall, start-up, compute, compute share; and the
    pipeline's wall time split into computing, start-up only and between tasks."""
    groups: dict[str, list[TaskRun]] = defaultdict(list)
    for task in run.tasks:
        groups[task.component].append(task)

    def split(tasks: Sequence[TaskRun]) -> dict[str, Any]:
        startup = sum(t.startup for t in tasks)
        compute = sum(t.compute for t in tasks)
        return {
            "tasks": len(tasks),
            "wall_s": round(sum(t.wall for t in tasks), 3),
            "startup_s": round(startup, 3),
            "compute_s": round(compute, 3),
            # Tasks without a start-of-compute record: their whole wall time, in neither column.
            "unsplit_s": round(sum(t.unsplit for t in tasks), 3),
            "unsplit_tasks": sum(not t.split for t in tasks),
            "compute_ratio": round(compute / (startup + compute), 4)
            if startup + compute > 0
            else None,
        }

    components = [
        {"component": name, **split(tasks)}
        for name, tasks in sorted(groups.items(), key=lambda kv: min(t.start for t in kv[1]))
    ]
    wall = run.end - run.start
    running = _union((t.start, t.end) for t in run.tasks)
    computing = _union((t.start + t.startup, t.end) for t in run.tasks if t.compute > 0)
    computing_or_unsplit = _union(
        [(t.start + t.startup, t.end) for t in run.tasks if t.compute > 0]
        + [(t.start, t.end) for t in run.tasks if not t.split]
    )
    return {
        "pipeline": {
            "name": run.pipeline,
            "status": run.status,
            "wall_s": round(wall, 3),
            # Pipeline time during which at least one task was computing / an unsplit task
            # ran, none computing / tasks were only starting up / no task ran (kfp resolving
            # inputs, collecting outputs, starting the next task).
            "computing_s": round(computing, 3),
            "unsplit_only_s": round(computing_or_unsplit - computing, 3),
            "startup_only_s": round(running - computing_or_unsplit, 3),
            "between_tasks_s": round(wall - running, 3),
            "compute_share_of_wall": round(computing / wall, 4) if wall > 0 else None,
        },
        "totals": split(run.tasks),
        "components": components,
        "tasks": [
            {
                "task": t.name,
                "component": t.component,
                "start_s": round(t.start - run.start, 3),
                "wall_s": round(t.wall, 3),
                "startup_s": round(t.startup, 3),
                "compute_s": round(t.compute, 3),
                "unsplit_s": round(t.unsplit, 3),
                "progress_record": t.progress_record,
                "status": t.status,
                "end_inferred": t.end_inferred,
            }
            for t in run.tasks
        ],
    }


def _percent(ratio: float | None) -> str:
    return "–" if ratio is None else f"{100 * ratio:.0f}%"


def format_text(summary: dict[str, Any], *, per_task: bool = False) -> str:
    columns = ("tasks", "wall s", "start-up s", "compute s", "unsplit s", "compute")
    head = f"{'component':<24}" + "".join(f"{c:>11}" for c in columns)
    lines = [head, "-" * len(head)]
    rows = [*summary["components"], {"component": "total", **summary["totals"]}]
    for row in rows:
        if row["component"] == "total":
            lines.append("-" * len(head))
        values = (row["wall_s"], row["startup_s"], row["compute_s"], row["unsplit_s"])
        lines.append(
            f"{row['component']:<24}{row['tasks']:>11}"
            + "".join(f"{v:>11.1f}" for v in values)
            + f"{_percent(row['compute_ratio']):>11}"
        )
    p, totals = summary["pipeline"], summary["totals"]
    lines += [
        "",
        "compute = compute / (start-up + compute); unsplit: tasks that log no start of compute "
        f"({totals['unsplit_tasks']} of {totals['tasks']}), in neither column",
        "",
        f"pipeline {p['name']!r} ({p['status']}): {p['wall_s']:.1f} s wall, its critical path "
        "as it ran (top-level tasks one after another, loop iterations two at a time)",
        f"  some task computing        {p['computing_s']:8.1f} s"
        f"  ({_percent(p['compute_share_of_wall'])} of the wall)",
        f"  only unsplit tasks         {p['unsplit_only_s']:8.1f} s",
        f"  tasks only starting up     {p['startup_only_s']:8.1f} s",
        f"  between tasks (kfp)        {p['between_tasks_s']:8.1f} s",
        f"  task time summed           {totals['wall_s']:8.1f} s"
        f" ({totals['wall_s'] / p['wall_s']:.2f}× the wall: loop iterations overlap)"
        if p["wall_s"] > 0
        else "",
    ]
    if per_task:
        lines += [
            "",
            f"{'task':<28}{'start s':>9}{'wall s':>9}{'start-up s':>12}{'compute s':>11}"
            "  first progress record",
        ]
        for t in summary["tasks"]:
            flag = "  (end inferred)" if t["end_inferred"] else ""
            split = (
                f"{t['startup_s']:>12.1f}{t['compute_s']:>11.1f}  {t['progress_record']}"
                if t["progress_record"]
                else f"{'–':>12}{'–':>11}  none: unsplit"
            )
            lines.append(f"{t['task']:<28}{t['start_s']:>9.1f}{t['wall_s']:>9.1f}{split}{flag}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/demo_time_split.py",
        description="Per task and component of a finished local run: wall time split into "
        "start-up (process start, imports, model and data loading: until the step's "
        '"training" record) and compute (the rest). Tasks that log no such record (dataset '
        "build phases, evaluate, zero-shot, linear probe, report…) are counted as unsplit. "
        "Then the pipeline's wall time: computing, unsplit, starting up, between tasks.",
        epilog="LOG is a run's tasks.log, its folder (<work dir>/runs/<stamp>), or a work dir "
        "(its latest run), e.g. demo-output after scripts/demo.sh.",
    )
    parser.add_argument(
        "log", type=Path, metavar="LOG", help="tasks.log, a run folder or a work dir"
    )
    parser.add_argument("--json", action="store_true", help="print the split as JSON")
    parser.add_argument("--tasks", action="store_true", help="also list every task")
    args = parser.parse_args(argv)
    try:
        path = find_log(args.log)
        with open(path, encoding="utf-8", errors="replace") as f:
            summary = summarize(parse_run_log(f))
    except RunLogError as exc:
        print(f"demo_time_split: {exc}", file=sys.stderr)
        return 2
    summary["log"] = str(path)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{path}\n")
        print(format_text(summary, per_task=args.tasks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
