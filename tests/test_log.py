import json
import logging

from mawsflow import log


def _record(msg, **extra):
    rec = logging.LogRecord("mawsflow.test", logging.INFO, __file__, 1, msg, (), None)
    for k, v in extra.items():
        setattr(rec, k, v)
    return rec


def test_json_lines_carry_rank_and_extra_fields(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    line = log.JsonFormatter().format(_record("step done", loss=0.5, step_index=7))
    data = json.loads(line)
    assert data["message"] == "step done" and data["level"] == "info"
    assert data["rank"] == 3 and data["loss"] == 0.5 and data["step_index"] == 7
    assert data["time"].endswith("Z")


def test_text_format_is_one_readable_line(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    line = log.TextFormatter().format(_record("hello", shard="a.tar"))
    assert "[rank 1] mawsflow.test: hello" in line and "shard=a.tar" in line


def test_setup_logging_honours_format_env(monkeypatch, capsys):
    monkeypatch.setenv("MAWSFLOW_LOG_FORMAT", "json")
    log.setup_logging("INFO")
    logging.getLogger("mawsflow.x").info("hi", extra={"n": 1})
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert json.loads(err)["n"] == 1


def test_progress_logs_when_not_a_terminal(caplog):
    caplog.set_level(logging.INFO, logger="mawsflow.progress")
    assert list(log.progress(range(5), desc="count", log_every_s=0.0)) == [0, 1, 2, 3, 4]
    messages = [r.getMessage() for r in caplog.records]
    assert any("count: 5" in m for m in messages)
    assert messages[-1].startswith("count: done, 5 it")


def test_logs_follow_a_replaced_stderr(monkeypatch, capsys):
    """setup_logging once, then stderr replaced (as pytest or a task runner does): records go
    to the current stderr, never to the old, possibly closed, stream."""
    import io
    import sys

    monkeypatch.setenv("MAWSFLOW_LOG_FORMAT", "text")
    old = io.StringIO()
    monkeypatch.setattr(sys, "stderr", old)
    log.setup_logging("INFO")
    old.close()
    new = io.StringIO()
    monkeypatch.setattr(sys, "stderr", new)
    logging.getLogger("mawsflow.x").warning("still here")
    written = new.getvalue()
    assert "mawsflow.x: still here" in written and "Logging error" not in written
