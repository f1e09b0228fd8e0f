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
from mawsflow.evaluation.classify import NamedTestSet, flat_metrics
from mawsflow.evaluation.detection_eval import evaluate_detector
from mawsflow.evaluation.features import eval_device
from mawsflow.evaluation.results import EvalResult, model_lineage, write_result
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
        results = []
        for test_set in test_sets:
            split = open_detection_split(test_set.dataset, test_set.split or "val")
            metrics = evaluate_detector(
                model,
                card,
                split,
                device=dev,
                batch_size=batch_size,
                num_workers=num_workers,
                tide=tide,
            )
            log.info("evaluated", extra={"test_set": test_set.name, **metrics})
            results.append((test_set, metrics))
        names = ", ".join(t.name for t in test_sets)
        result = EvalResult(
            step="eval-detection",
            evaluation=name or f"detection on {names}",
            pretraining=pretraining or model_lineage(model_uri),
            metrics=flat_metrics(results),
            table=table_cells(results),
            model=model_uri,
            dataset=" ".join(t.dataset for t in test_sets),
        )
        write_result(output, result)
        return result
    finally:
        shutdown()


def _non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mawsflow eval-detection",
        description=(
            "Score a detector (mawsflow finetune-detection's output) on detection datasets "
            "(mawsflow prepare-eval --layout coco|lvis): box and mask AP by COCOeval or "
            "LVISEval (federated rules, APr/APc/APf), and TIDE's error breakdown at IoU 0.5 "
            "and 0.75. Invalid predictions and undecodable images are skipped and counted."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "example:\n"
            "  mawsflow eval-detection --model s3://runs/r1/detection-lvis "
            "--test-set LVIS=s3://eval/lvis --output s3://runs/r1/detection-lvis-eval\n\n"
            "The split defaults to val (NAME=URI:SPLIT picks another). Metrics are named\n"
            "<name>_box_ap, <name>_mask_ap, <name>_box_apr (LVIS), <name>_tide_0.5_cls, ...;\n"
            "AP in points (0-100)."
        ),
    )
    parser.add_argument("--model", required=True, help="mawsflow finetune-detection's output")
    parser.add_argument("--output", required=True, help="where metrics.json is written")
    parser.add_argument(
        "--test-set",
        dest="test_sets",
        action="append",
        required=True,
        metavar="[NAME=]URI[:SPLIT]",
        help="a detection dataset to score (repeatable); NAME is the report's column, e.g. LVIS",
    )
    parser.add_argument("--name", help="the evaluation's name in the report")
    parser.add_argument(
        "--pretraining", help="the report row (MAE, WSP, MAE→WSP); default: the model's lineage"
    )
    parser.add_argument(
        "--num-workers", type=_non_negative, default=2, help="image decoding processes"
    )
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    parser.add_argument("--no-tide", dest="tide", action="store_false", help="skip TIDE")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        test_sets = tuple(NamedTestSet.parse(t) for t in args.test_sets)
    except ValueError as exc:
        parser.error(str(exc))
    setup_logging()
    run(
        args.model,
        test_sets,
        args.output,
        name=args.name,
        pretraining=args.pretraining,
        num_workers=args.num_workers,
        batch_size=args.batch_size,
        device=args.device,
        tide=args.tide,
    )
    return 0
