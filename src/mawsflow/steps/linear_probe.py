"""`mawsflow linear-probe`: top-1 of a linear classifier on frozen trunk features.

The trunk (an MAE, WSP or MAE→WSP output) runs at its pretraining resolution (224px in the
paper) over the dataset's `train` split and its test split (`test`, else `val`); a linear
probe trains on the cached train features (mawsflow.evaluation.linear_probe) and is scored on
the test features. Writes `<output>/metrics.json`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from mawsflow.data.eval_loader import eval_loader
from mawsflow.data.eval_shards import EvalSplit, open_split
from mawsflow.evaluation.classification_metrics import ClassificationMeter
from mawsflow.evaluation.classify import NamedTestSet
from mawsflow.evaluation.eval_cli import dataset_name, eval_parser
from mawsflow.evaluation.features import collect_outputs, eval_device
from mawsflow.evaluation.linear_probe import LinearProbeConfig, train_linear_probe
from mawsflow.evaluation.results import EvalResult, model_lineage, write_result
from mawsflow.log import setup_logging
from mawsflow.models.pretrained import load_trunk
from mawsflow.step_cli import EvalOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinearProbeStepConfig:
    options: EvalOptions
    # An evaluation dataset with a train split; its test split (default: test, else val).
    dataset: str
    test_split: str | None = None
    probe: LinearProbeConfig = field(default_factory=LinearProbeConfig)


def run(config: LinearProbeStepConfig) -> EvalResult:
    opts = config.options
    device = eval_device(opts.device)
    trunk, card = load_trunk(opts.model)
    trunk.to(device).eval()
    train_split = open_split(config.dataset, "train")
    test_split = NamedTestSet(
        dataset_name(config.dataset), config.dataset, config.test_split
    ).open()

    def features(split: EvalSplit) -> tuple[torch.Tensor, torch.Tensor]:
        loader = eval_loader(
            split,
            img_size=int(card["img_size"]),
            batch_size=opts.batch_size,
            num_workers=opts.num_workers,
            crop_pct=opts.crop_pct,
        )
        return collect_outputs(loader, trunk, device)

    train_x, train_y = features(train_split)
    test_x, test_y = features(test_split)
    probe = train_linear_probe(
        train_x, train_y, train_split.num_classes, config.probe, device=device
    )
    meter = ClassificationMeter(ks=(1, 5), label_subset=test_split.label_subset)
    meter.update(probe(test_x.to(device)).cpu(), test_y)
    metrics = meter.compute()
    name = opts.name or dataset_name(config.dataset)
    result = EvalResult(
        step="linear-probe",
        evaluation=f"{name} Linear",
        pretraining=opts.pretraining or model_lineage(opts.model),
        metrics={**metrics, "train_samples": float(len(train_x))},
        table={f"{name} Linear": metrics["top1"]},
        model=opts.model,
        dataset=config.dataset,
    )
    write_result(opts.output, result)
    log.info("linear probe", extra={"evaluation": result.evaluation, **metrics})
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = eval_parser(
        "linear-probe",
        "Linear probe on frozen features of a pretrained trunk.",
        model_help="the mae or wsp step's output (the trunk)",
    )
    parser.add_argument("--dataset", required=True, help="evaluation dataset with a train split")
    parser.add_argument("--test-split", choices=("val", "test"), help="default: test, else val")
    defaults = LinearProbeConfig()
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--probe-batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    setup_logging()
    probe = LinearProbeConfig(
        epochs=args.epochs, batch_size=args.probe_batch_size, lr=args.lr, seed=args.seed
    )
    run(
        LinearProbeStepConfig(
            EvalOptions.from_args(args), args.dataset, test_split=args.test_split, probe=probe
        )
    )
    return 0
