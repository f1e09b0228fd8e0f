"""Running a whole pipeline on this machine with `kfp.local`.

Tasks run one after another as subprocesses of this interpreter (`SubprocessRunner` without a
virtual environment of its own, so they import this environment's mawsflow), ParallelFor
iterations two at a time. Artifacts live under `<work dir>/runs/<timestamp>/`; the steps'
inputs may be local paths or `s3://` URIs (with the usual AWS environment variables).
"""

from __future__ import annotations

import datetime
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfp import local
from kfp.dsl.graph_component import GraphComponent

from mawsflow import storage


class LocalRunFailed(RuntimeError):
    """A task of the local run failed; its log is above in the output."""


@dataclass(frozen=True)
class LocalReport:
    markdown: str
    html: str
    folder: str

    @property
    def table(self) -> str:
        """The report's results table (the Markdown file's table lines)."""
        text = storage.read_text(self.markdown)
        return "\n".join(line for line in text.splitlines() if line.startswith("|"))


def run_locally(
    pipeline: GraphComponent, arguments: Mapping[str, Any], work_dir: Path
) -> LocalReport:
    """Run every task of `pipeline`; returns where its report is."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    root = work_dir / "runs" / stamp
    root.mkdir(parents=True, exist_ok=True)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        raise_on_error=True,
    )
    with warnings.catch_warnings():
        # The tasks name their cluster images and Kubernetes settings, which a local run
        # neither pulls nor applies; kfp says so for every task.
        warnings.filterwarnings("ignore", message="You may be attemping to run a task")
        warnings.filterwarnings("ignore", message=r"Task .* have no effect in the current local")
        try:
            task = pipeline(**arguments)
        except RuntimeError as exc:
            raise LocalRunFailed(str(exc)) from None
    outputs = task.outputs
    return LocalReport(
        markdown=outputs["markdown"].uri, html=outputs["html"].uri, folder=outputs["files"].uri
    )
