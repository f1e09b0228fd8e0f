"""`mawsflow linear-probe`: top-1 of a linear classifier on frozen trunk features.

The trunk (an MAE, WSP or MAE→WSP output) runs at its pretraining resolution (224px in the
paper) over the dataset's `train` split and its test split (`test`, else `val`); a linear
probe trains on the cached train features (mawsflow.evaluation.linear_probe) and is scored on
the test features. With several `--seed`s a probe trains per seed on the same features (the
seed draws its initialisation and batch order) and the result is their mean, each seed's value
kept for the report's mean ± std. Writes `<output>/metrics.json`.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

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
    # One probe per seed (overriding probe.seed); empty: probe.seed alone.
    seeds: tuple[int, ...] = ()


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

    # The start of the compute, for the demo's time split (bench/demo_time_split.py).
    log.info("evaluating", extra={"task": "linear-probe"})
    train_x, train_y = features(train_split)
    test_x, test_y = features(test_split)
    name = opts.name or dataset_name(config.dataset)
    column = f"{name} Linear"
    per_seed = []
    for seed in config.seeds or (config.probe.seed,):
        probe = train_linear_probe(
            train_x,
            train_y,
            train_split.num_classes,
            replace(config.probe, seed=seed),
            device=device,
        )
        meter = ClassificationMeter(ks=(1, 5), label_subset=test_split.label_subset)
        meter.update(probe(test_x.to(device)).cpu(), test_y)
        per_seed.append(meter.compute())
        log.info("linear probe seed", extra={"seed": seed, **per_seed[-1]})
    metrics = {k: statistics.fmean(m[k] for m in per_seed) for k in per_seed[0]}
    if len(per_seed) > 1:
        metrics["top1_std"] = statistics.stdev(m["top1"] for m in per_seed)
    result = EvalResult(
        step="linear-probe",
        evaluation=column,
        pretraining=opts.pretraining or model_lineage(opts.model),
        metrics={**metrics, "train_samples": float(len(train_x))},
        table={column: metrics["top1"]},
        model=opts.model,
        dataset=config.dataset,
        runs={column: [m["top1"] for m in per_seed]} if len(per_seed) > 1 else {},
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
    parser.add_argument(
        "--seed",
        type=int,
        nargs="+",
        default=[defaults.seed],
        help="probe seed(s); with several, the result is the mean over seeds (default: 0)",
    )
    args = parser.parse_args(argv)
    setup_logging()
    probe = LinearProbeConfig(
        epochs=args.epochs, batch_size=args.probe_batch_size, lr=args.lr, seed=args.seed[0]
    )
    run(
        LinearProbeStepConfig(
            EvalOptions.from_args(args),
            args.dataset,
            test_split=args.test_split,
            probe=probe,
            seeds=tuple(args.seed),
        )
    )
    return 0
