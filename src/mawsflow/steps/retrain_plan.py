"""`mawsflow retrain-plan`: what one scheduled retraining run does, decided at its start.

    mawsflow retrain-plan --corpus s3://data/ig --registry s3://models/maws \\
        --output s3://runs/2026-12-06/plan [--as-of 2026-12-06] \\
        [--mae-warm-start none|registry] [--wsp-warm-start none|production] [--force]

1. **The data.** The corpus is listed once, now (partitions dated after `--as-of` left out),
   and the listing is written to `<output>/corpus.snapshot.json`: the run's dataset build reads
   exactly those shards (mawsflow.dataset.corpus_snapshot), and a rerun given that file reads
   the same data.
2. **Whether to train.** If the newest model in the registry was trained on data with the same
   fingerprint, the run has nothing new to learn from and trains nothing (`action: unchanged`);
   `--force` trains anyway (e.g. after a change of settings or code).
3. **Warm starts** (the paper's recipe allows both):
   - `--mae-warm-start registry`: reuse the MAE encoder of the production model (its `mae`
     parent in the registry; else the newest registered MAE encoder) instead of training MAE
     again. MAE pre-pretraining is the expensive, label-free stage.
   - `--wsp-warm-start production`: continue WSP from the production model (its trunk, and its
     head class by class), for the pipeline's `wsp_continue_samples` samples, instead of from
     the MAE encoder.
   With nothing in the registry to start from, the run trains that stage from scratch and the
   plan says so.

`<output>/plan.json` records all of it (the registry ids and URIs warm-started from included)
and the run's artifacts carry it on: the model cards name the checkpoints they started from,
and the registry record of the new model names its parents.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from mawsflow import storage
from mawsflow.dataset.corpus_snapshot import take_snapshot, write_snapshot
from mawsflow.errors import ConfigError, DataFormatError
from mawsflow.log import setup_logging
from mawsflow.registry import Registry, RegistryError
from mawsflow.registry.plan import (
    MAE_WARM_STARTS,
    PLAN_FILE,
    TRAIN,
    UNCHANGED,
    WSP_WARM_STARTS,
    RetrainPlan,
)

log = logging.getLogger(__name__)

SNAPSHOT_FILE = "corpus.snapshot.json"


@dataclass(frozen=True)
class RetrainPlanConfig:
    corpus: str
    registry: str
    output: str
    as_of: str = ""
    mae_warm_start: str = "none"
    wsp_warm_start: str = "none"
    force: bool = False

    def __post_init__(self) -> None:
        if self.mae_warm_start not in MAE_WARM_STARTS:
            raise ConfigError(
                f"mae_warm_start {self.mae_warm_start!r}: choose {' or '.join(MAE_WARM_STARTS)}"
            )
        if self.wsp_warm_start not in WSP_WARM_STARTS:
            raise ConfigError(
                f"wsp_warm_start {self.wsp_warm_start!r}: choose {' or '.join(WSP_WARM_STARTS)}"
            )


def make_plan(config: RetrainPlanConfig) -> RetrainPlan:
    """Snapshot the corpus, compare it with the newest model's data, resolve the warm starts,
    and write the snapshot and the plan under `config.output`."""
    registry = Registry(config.registry)
    snapshot = take_snapshot(config.corpus, config.as_of)
    snapshot_uri = storage.join(config.output, SNAPSHOT_FILE)
    write_snapshot(snapshot_uri, snapshot)
    production = registry.production()
    latest = registry.latest("model")
    if latest is not None and latest.data.get("fingerprint") == snapshot.fingerprint:
        if config.force:
            action, reason = TRAIN, f"data unchanged since model {latest.id}; forced to train"
        else:
            action, reason = UNCHANGED, f"data unchanged since model {latest.id} was trained"
    elif latest is None:
        action, reason = TRAIN, "no model in the registry yet"
    else:
        action, reason = TRAIN, f"new data since model {latest.id}"

    mae_checkpoint = mae_record = ""
    if config.mae_warm_start == "registry":
        mae = None
        if production is not None and production.parents.get("mae"):
            mae = registry.get(production.parents["mae"])
        mae = mae or registry.latest("mae")
        if mae is None:
            reason += "; no MAE encoder in the registry: MAE trains"
        else:
            mae_checkpoint, mae_record = mae.uri, mae.id
            reason += f"; MAE warm-starts from {mae.id}"
    wsp_init = wsp_record = ""
    if config.wsp_warm_start == "production":
        if production is None:
            reason += "; no production model: WSP starts from the MAE encoder"
        else:
            wsp_init, wsp_record = production.uri, production.id
            reason += f"; WSP continues from production {production.id}"

    plan = RetrainPlan(
        action=action,
        reason=reason,
        corpus=snapshot_uri,
        fingerprint=snapshot.fingerprint,
        shards=len(snapshot.shards),
        partitions=snapshot.partitions,
        mae_checkpoint=mae_checkpoint,
        mae_record=mae_record,
        wsp_init=wsp_init,
        wsp_record=wsp_record,
        production=production.id if production else "",
    )
    storage.write_json(storage.join(config.output, PLAN_FILE), plan.to_json())
    log.info(
        "retraining plan",
        extra={"action": action, "reason": reason, "shards": plan.shards, "corpus": snapshot_uri},
    )
    return plan


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mawsflow retrain-plan",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--corpus", required=True, help="the raw corpus prefix (s3:// or local)")
    parser.add_argument("--registry", required=True, help="the model registry's root URI")
    parser.add_argument("--output", required=True, help="folder URI for the snapshot and plan")
    parser.add_argument(
        "--as-of", default="", metavar="YYYY-MM-DD", help="leave out partitions dated later"
    )
    parser.add_argument("--mae-warm-start", choices=MAE_WARM_STARTS, default="none")
    parser.add_argument("--wsp-warm-start", choices=WSP_WARM_STARTS, default="none")
    parser.add_argument("--force", action="store_true", help="train even if the data is unchanged")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    config = RetrainPlanConfig(
        args.corpus,
        args.registry,
        args.output,
        args.as_of,
        args.mae_warm_start,
        args.wsp_warm_start,
        args.force,
    )
    try:
        plan = make_plan(config)
    except (RegistryError, DataFormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{plan.action}: {plan.reason}")
    return 0
