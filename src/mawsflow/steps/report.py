"""`mawsflow report`: the run's results as a table shaped like the paper's Table 22 (rows MAE,
WSP, MAE→WSP; a column per evaluation), with plots of the training losses and of low-shot
accuracy against K.

Writes `report.md` and `report.html` (plots embedded, for the Kubeflow UI's Markdown and HTML
viewers) and `report.json` under `--output`.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from mawsflow import storage
from mawsflow.evaluation.report import (
    build_report,
    read_results,
    render_html,
    render_json,
    render_markdown,
)
from mawsflow.evaluation.results import (
    annotate_pretraining,
    read_history,
)
from mawsflow.log import setup_logging

log = logging.getLogger(__name__)

REPORT_FILES = ("report.md", "report.html", "report.json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mawsflow report",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--result",
        dest="results",
        nargs="+",
        action="extend",
        required=True,
        metavar="URI",
        help="evaluation outputs (or their metrics.json), in the table's column order; or "
        "reports' report.json files, whose results are merged (a sweep's grid cells)",
    )
    parser.add_argument(
        "--training",
        nargs="+",
        action="extend",
        default=[],
        metavar="URI",
        help="training step outputs whose loss curves to plot (mae, wsp, lit, finetune)",
    )
    parser.add_argument(
        "--gate", default="", metavar="URI", help="a promotion gate's gate.json to show"
    )
    parser.add_argument("--output", required=True, help="folder URI for the report files")
    return parser


@dataclass(frozen=True)
class ReportConfig:
    # Evaluation outputs (or their metrics.json), in the table's column order.
    results: tuple[str, ...]
    # Training step outputs whose loss curves to plot.
    training: tuple[str, ...]
    # Folder URI for report.md, report.html and report.json.
    output: str
    # A scheduled run's promotion gate decision (gate.json), shown after the table.
    gate: str = ""


def run(config: ReportConfig) -> dict:
    """Write the report files; returns the report as report.json holds it."""
    output = config.output
    report = build_report(
        [annotate_pretraining(r) for uri in config.results for r in read_results(uri)],
        [read_history(uri) for uri in config.training],
    )
    if config.gate:
        report.gate = storage.read_json(config.gate)
    summary = render_json(report)
    storage.write_text(storage.join(output, "report.md"), render_markdown(report))
    storage.write_text(storage.join(output, "report.html"), render_html(report))
    storage.write_text(
        storage.join(output, "report.json"), json.dumps(summary, indent=2, ensure_ascii=False)
    )
    log.info("report written", extra={"output": output, "columns": summary["columns"]})
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    run(ReportConfig(tuple(args.results), tuple(args.training), args.output, args.gate))
    return 0
