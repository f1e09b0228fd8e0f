"""Structured logging and progress reporting for every step.

Log records go to stderr, one per line: human-readable on a terminal, JSON lines everywhere
else (containers, Kubeflow), so log collectors can parse `step`, `rank` and any extra fields.
Long local work shows a tqdm progress bar on a terminal and periodic log lines elsewhere.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, rank and extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rank = os.environ.get("RANK")
        if rank is not None:
            out["rank"] = int(rank)
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger: message key=value …` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={v}"
            for k, v in vars(record).items()
            if k not in _RESERVED and not k.startswith("_")
        )
        rank = os.environ.get("RANK")
        prefix = (
            f"[rank {rank}] "
            if rank is not None and os.environ.get("WORLD_SIZE", "1") != "1"
            else ""
        )
        line = (
            f"{time.strftime('%H:%M:%S', time.localtime(record.created))} "
            f"{record.levelname.lower():7s} {prefix}{record.name}: {record.getMessage()}"
        )
        if extras:
            line += f"  {extras}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class CurrentStderrHandler(logging.StreamHandler):
    """Writes each record to whatever `sys.stderr` is when the record is emitted, not the one
    at setup: a process that redirects or replaces stderr later (kfp.local's task runner,
    pytest's capture) keeps its logs instead of writing into a closed stream."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def setup_logging(level: str | None = None, *, json_lines: bool | None = None) -> None:
    """Configure the root logger once per process. MAWSFLOW_LOG_LEVEL / MAWSFLOW_LOG_FORMAT
    (text|json) override the defaults, so a launcher can set them for every rank."""
    level = (level or os.environ.get("MAWSFLOW_LOG_LEVEL") or "INFO").upper()
    fmt = os.environ.get("MAWSFLOW_LOG_FORMAT")
    if json_lines is None:
        json_lines = fmt == "json" if fmt else not sys.stderr.isatty()
    handler = CurrentStderrHandler()
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter (boto's retries, urllib3) stays at WARNING unless asked for.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "filelock", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def progress(
    items: Iterable[T],
    *,
    desc: str,
    total: int | None = None,
    unit: str = "it",
    logger: logging.Logger | None = None,
    log_every_s: float = 30.0,
) -> Iterator[T]:
    """Iterate with a progress bar on a terminal, or a log line every `log_every_s` elsewhere."""
    if sys.stderr.isatty() and os.environ.get("MAWSFLOW_PROGRESS", "auto") != "log":
        yield from tqdm(items, desc=desc, total=total, unit=unit, dynamic_ncols=True)
        return
    log = logger or logging.getLogger("mawsflow.progress")
    start = last = time.monotonic()
    count = 0
    for item in items:
        yield item
        count += 1
        now = time.monotonic()
        if now - last >= log_every_s:
            last = now
            rate = count / max(now - start, 1e-9)
            of = f"/{total}" if total else ""
            log.info("%s: %d%s %s (%.1f %s/s)", desc, count, of, unit, rate, unit)
    log.info("%s: done, %d %s in %.1f s", desc, count, unit, time.monotonic() - start)
