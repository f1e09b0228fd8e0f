"""The package's one-way structure, checked by import-linter against pyproject.toml's contracts.

The contracts themselves are tested too: a copy of the package with one arrow that runs back up
(a model importing a step) or one step importing another must break them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(src: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH decides which copy of `mawsflow` grimp reads; no cache, so a copy is read anew.
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [str(LINT_IMPORTS), str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_package_keeps_its_layers_and_no_step_imports_another():
    result = _lint_imports(ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "back_import", "broken"),
    [
        ("models/vit.py", "import mawsflow.steps.mae", "one-way layers"),
        ("data/manifest.py", "import mawsflow.engine.trainer", "one-way layers"),
        ("steps/zeroshot.py", "import mawsflow.steps.lit", "no step imports another step"),
    ],
)
def test_an_arrow_that_runs_back_breaks_a_contract(tmp_path, module, back_import, broken):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "mawsflow", src / "mawsflow")
    target = src / "mawsflow" / module
    target.write_text(target.read_text() + f"\n{back_import}  # the arrow under test\n")
    result = _lint_imports(src)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{broken} BROKEN" in result.stdout
