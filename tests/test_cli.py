import subprocess
import sys

import pytest

from mawsflow import cli


def _mawsflow(*args):
    return subprocess.run(
        [sys.executable, "-m", "mawsflow.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_top_level_help_lists_every_step_with_its_line():
    out = _mawsflow("--help")
    assert out.returncode == 0, out.stderr
    for name, (_, line) in cli.STEPS.items():
        assert name in out.stdout
        assert line.split()[0] in out.stdout


def test_unknown_step_is_an_error():
    out = _mawsflow("no-such-step")
    assert out.returncode == 2
    assert "invalid choice" in out.stderr


@pytest.mark.parametrize("step", list(cli.STEPS))
def test_each_step_has_help(step, capsys):
    # In-process: a subprocess per step would re-import torch each time.
    with pytest.raises(SystemExit) as exit_info:
        cli.main([step, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"mawsflow {step}" in out
    assert len(out.splitlines()) > 3, "a help text a newcomer can follow"
