"""`mawsflow eval-detection`: score a detector (`mawsflow finetune-detection`'s output) on the
val split of detection datasets: box and mask AP and TIDE's error breakdown.

COCO datasets are scored with pycocotools' COCOeval, LVIS ones with the `lvis` package's
LVISEval, which applies LVIS's federated rules (detections of a category an image neither has
nor lists as verified-absent are not counted; APr/APc/APf per frequency group); TIDE (tidecv,
progressive mode) breaks the box AP down into its six error types at IoU 0.5 and 0.75 (Table
21). Invalid predictions are skipped and counted; so are images that cannot be decoded. The
keys are `mawsflow.evaluation.detection_eval`'s, prefixed by the test set's name
(`lvis_box_ap`, `lvis_mask_apr`, `lvis_tide_0.5_cls`, …); the report's cells are
`<NAME> APbox` and `<NAME> APmask`. Writes `<output>/metrics.json`, the evaluation result the
report reads.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from mawsflow.data.detection import open_detection_split
from mawsflow.engine.distributed import init_distributed, shutdown
from mawsflow.evaluation.classify import NamedTestSet
from mawsflow.evaluation.detection_eval import evaluate_detector
from mawsflow.evaluation.eval_cli import model_eval_parser
from mawsflow.evaluation.features import eval_device
from mawsflow.evaluation.results import EvalResult
from mawsflow.evaluation.scored_sets import on_test_sets, score_test_sets, write_test_set_result
from mawsflow.log import setup_logging
from mawsflow.models.vitdet import load_detector

log = logging.getLogger(__name__)


def table_cells(results: Sequence[tuple[NamedTestSet, dict[str, float]]]) -> dict[str, float]:
    """The report's cells: each set's box and mask AP (Table 22's LVIS and COCO columns)."""
    cells: dict[str, float] = {}
    for test_set, metrics in results:
        for kind in ("box", "mask"):
            if f"{kind}_ap" in metrics:
                cells[f"{test_set.name} AP{kind}"] = metrics[f"{kind}_ap"]
    return cells


def run(
    model_uri: str,
    test_sets: Sequence[NamedTestSet],
    output: str,
    *,
    name: str | None = None,
    pretraining: str | None = None,
    num_workers: int = 2,
    batch_size: int = 4,
    device: str = "auto",
    tide: bool = True,
) -> EvalResult | None:
    """Score the detector at `model_uri` on every test set's val split (or the split the set
    names); the main rank writes and returns the result."""
    ctx = init_distributed(device)
    try:
        if not ctx.is_main:  # one process scores: the evaluators read whole files anyway
            return None
        model, card = load_detector(model_uri)
        dev = eval_device(device)
        model.to(dev)
        scores = score_test_sets(
            test_sets,
            lambda test_set: evaluate_detector(
                model,
                card,
                open_detection_split(test_set.dataset, test_set.split or "val"),
                device=dev,
                batch_size=batch_size,
                num_workers=num_workers,
                tide=tide,
            ),
        )
        return write_test_set_result(
            output,
            scores,
            step="eval-detection",
            evaluation=name or on_test_sets("detection", scores),
            model=model_uri,
            pretraining=pretraining,
            cells=table_cells,
        )
    finally:
        shutdown()


def build_parser() -> argparse.ArgumentParser:
    parser = model_eval_parser(
        "eval-detection",
        "Score a detector (mawsflow finetune-detection's output) on detection datasets "
        "(mawsflow prepare-eval --layout coco|lvis): box and mask AP by COCOeval or "
        "LVISEval (federated rules, APr/APc/APf), and TIDE's error breakdown at IoU 0.5 "
        "and 0.75. Invalid predictions and undecodable images are skipped and counted.",
        model_help="mawsflow finetune-detection's output",
        test_set_help="a detection dataset to score, e.g. LVIS=URI; the split defaults to val",
        epilog=(
            "example:\n"
            "  mawsflow eval-detection --model s3://runs/r1/detection-lvis "
            "--test-set LVIS=s3://eval/lvis --output s3://runs/r1/detection-lvis-eval\n\n"
            "The split defaults to val (NAME=URI:SPLIT picks another). Metrics are named\n"
            "<name>_box_ap, <name>_mask_ap, <name>_box_apr (LVIS), <name>_tide_0.5_cls, ...;\n"
            "AP in points (0-100)."
        ),
    )
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    parser.add_argument("--no-tide", dest="tide", action="store_false", help="skip TIDE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    run(
        args.model,
        tuple(args.test_sets),
        args.output,
        name=args.name,
        pretraining=args.pretraining,
        num_workers=args.num_workers,
        batch_size=args.batch_size,
        device=args.device,
        tide=args.tide,
    )
    return 0
