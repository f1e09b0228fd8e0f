"""`mawsflow promotion-gate`: register a run's new model and promote it only if it passes the
rules against the model in production.

    mawsflow promotion-gate --registry s3://models/maws --plan <retrain-plan output>/plan.json \\
        --model <wsp output> --mae-model <mae output> \\
        --result <evaluation outputs …> --eval-name ImageNet-1k --eval-fingerprint 3f… \\
        --headline finetune --headline linear [--max-drop 0.5] [--min-gain 0] \\
        [--image wsp=ghcr.io/…] [--pushgateway http://pushgateway:9091] --output <folder>

1. The run's evaluation results are put in the report's table; the new model's row is the one
   its lineage names (MAE→WSP). Its cells are the record's metrics.
2. The registry gets the new model's record (URI, metrics, evaluation data and its fingerprint,
   the run's corpus snapshot, code version, images, and its parents: the MAE encoder, which is
   registered too unless the run reused one from the registry, and the production model WSP
   continued from). A rerun that registers the same output again gets the same record.
3. The gate (mawsflow.registry.gate): no headline metric worse than production's by more than
   `--max-drop` points, at least one better by `--min-gain` or more, and both scored on the same
   evaluation data. If it passes, the production pointer moves to the new model (one atomic
   write); if not, production stays as it is. Either way the decision is kept in the registry
   (`decisions/<id>.json`), written to `<output>/gate.json` for the report, and pushed to a
   Prometheus Pushgateway when one is given (`mawsflow_promotion_gate_passed` 1 or 0), where
   the chart's alert `MawsflowPromotionRejected` pages on it.

A rejected model is an outcome, not an error: the step exits 0. Headline metrics are the
report's column names or these short names: `finetune`, `linear`, `zero-shot`, `<K>-shot`.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

from mawsflow import __version__, storage
from mawsflow.errors import ConfigError
from mawsflow.evaluation.report import ReportTable, build_table, read_results
from mawsflow.evaluation.results import annotate_pretraining, model_lineage
from mawsflow.log import setup_logging
from mawsflow.registry import (
    GateRules,
    ModelRecord,
    Registry,
    RegistryError,
    decide,
    new_id,
    record_at,
)
from mawsflow.registry.plan import RetrainPlan, read_plan

log = logging.getLogger(__name__)

GATE_FORMAT = "mawsflow.promotion-gate/1"
GATE_FILE = "gate.json"
DEFAULT_HEADLINE = ("finetune", "linear")
PUSH_JOB = "mawsflow-promotion-gate"


@dataclass(frozen=True)
class PromotionGateConfig:
    registry: str
    plan: str  # retrain-plan's plan.json
    model: str  # the new model: the run's MAE→WSP output
    results: tuple[str, ...]
    eval_name: str
    eval_fingerprint: str
    output: str
    mae_model: str = ""  # the run's MAE output
    headline: tuple[str, ...] = DEFAULT_HEADLINE
    max_drop: float = GateRules(()).max_drop
    min_gain: float = GateRules(()).min_gain
    images: Mapping[str, str] = field(default_factory=dict)
    pushgateway: str = ""


def resolve_headline(columns: Sequence[str], eval_name: str, headline: Sequence[str]) -> list[str]:
    """The report columns the headline names stand for."""
    if not headline:
        raise ConfigError("the gate's headline metrics: empty; give e.g. finetune and linear")
    short = {"finetune": eval_name, "linear": f"{eval_name} Linear"}
    short |= {"zero-shot": f"{eval_name} zero-shot", "zeroshot": f"{eval_name} zero-shot"}
    resolved = []
    for name in headline:
        shots = re.fullmatch(r"\d+-shot", name)
        column = f"{eval_name} {name}" if shots else short.get(name, name)
        if column not in columns:
            raise ConfigError(
                f"headline metric {name!r}: the run has no column {column!r}; its columns are "
                f"{', '.join(map(repr, columns))}"
            )
        resolved.append(column)
    return resolved


def _run_data(plan: RetrainPlan) -> dict[str, Any]:
    return {
        "corpus": plan.corpus,
        "fingerprint": plan.fingerprint,
        "shards": plan.shards,
        "partitions": plan.partitions,
    }


def _register(registry: Registry, records: list[ModelRecord], record: ModelRecord) -> ModelRecord:
    """`record`, or the record already kept for its URI (a rerun of the same output), looked
    up in `records`, the registry's listing, which then holds it."""
    kept = record_at(records, record.uri)
    if kept is None:
        kept = registry.register(record)
        records.append(kept)
    return kept


def decision_metrics(promoted: bool, candidate: str) -> CollectorRegistry:
    """The decision as Prometheus gauges: what the chart's MawsflowPromotionRejected reads."""
    metrics = CollectorRegistry()
    passed = Gauge(
        "mawsflow_promotion_gate_passed",
        "1 if the newest model passed the promotion gate and is in production, 0 if rejected",
        ["candidate"],
        registry=metrics,
    )
    passed.labels(candidate=candidate).set(1.0 if promoted else 0.0)
    stamp = Gauge(
        "mawsflow_promotion_gate_decision_timestamp_seconds",
        "When the promotion gate last decided",
        registry=metrics,
    )
    stamp.set_to_current_time()
    return metrics


def push_decision(url: str, registry_root: str, promoted: bool, candidate: str) -> None:
    """The decision on a Pushgateway, grouped by registry: each push replaces the registry's
    group, so the series holds the newest decision."""
    push_to_gateway(
        url,
        job=PUSH_JOB,
        registry=decision_metrics(promoted, candidate),
        grouping_key={"registry": registry_root},
    )


def run(config: PromotionGateConfig) -> dict[str, Any]:
    """Register, decide, promote or not; returns the decision as gate.json holds it."""
    registry = Registry(config.registry)
    plan = read_plan(config.plan)
    results = [annotate_pretraining(r) for uri in config.results for r in read_results(uri)]
    table: ReportTable = build_table(results)
    row = model_lineage(config.model)
    if row not in table.rows or not table.cells[row]:
        raise ConfigError(f"the results hold no evaluation of the new model (row {row!r})")
    headline = resolve_headline(table.columns, config.eval_name, config.headline)

    data = _run_data(plan)
    # The registry listed once: each record is a file, and the lookups below all need it.
    records = registry.list()
    parents: dict[str, str] = {}
    if plan.mae_record:
        parents["mae"] = plan.mae_record
    elif config.mae_model:
        mae = ModelRecord(
            id=new_id(config.mae_model), uri=config.mae_model, metrics={}, data=data,
            images=dict(config.images), role="mae",
        )  # fmt: skip
        parents["mae"] = _register(registry, records, mae).id
    if plan.wsp_record:
        parents["wsp"] = plan.wsp_record
    candidate = _register(
        registry,
        records,
        ModelRecord(
            id=new_id(config.model),
            uri=config.model,
            metrics=dict(table.cells[row]),
            evaluation={"name": config.eval_name, "fingerprint": config.eval_fingerprint},
            data=data,
            code_version=__version__,
            images=dict(config.images),
            parents=parents,
        ),
    )
    rules = GateRules(tuple(headline), config.max_drop, config.min_gain)
    production = registry.production(records)
    if production is not None and production.id == candidate.id:
        promoted, reasons = True, ("already in production",)
        comparison = [(m, candidate.metrics.get(m), candidate.metrics.get(m)) for m in headline]
    else:
        decision = decide(candidate, production, rules)
        promoted, reasons, comparison = decision.promote, decision.reasons, decision.comparison
        if promoted:
            registry.promote(candidate.id, "; ".join(reasons))
    after = registry.pointer()
    gate = {
        "format": GATE_FORMAT,
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "registry": config.registry,
        "row": row,
        "candidate": candidate.id,
        "candidate_uri": candidate.uri,
        "production_before": production.id if production else None,
        "production_after": after.model if after else None,
        "promoted": promoted,
        "reasons": list(reasons),
        "rules": {"headline": headline, "max_drop": rules.max_drop, "min_gain": rules.min_gain},
        "comparison": [
            {"metric": m, "production": old, "candidate": new} for m, old, new in comparison
        ],
        "parents": parents,
        "plan": plan.to_json(),
        "pushed": False,
    }
    if registry.decision(candidate.id) is None:
        registry.record_decision(candidate.id, gate)
    if config.pushgateway:
        try:
            push_decision(config.pushgateway, config.registry, promoted, candidate.id)
            gate["pushed"] = True
        except OSError as exc:  # the decision stands; the missing metric is logged loudly
            log.error(
                "could not push the gate's decision to the Pushgateway",
                extra={"pushgateway": config.pushgateway, "error": str(exc)},
            )
    storage.write_json(storage.join(config.output, GATE_FILE), gate)
    log.info(
        "promotion gate",
        extra={"candidate": candidate.id, "promoted": promoted, "reasons": "; ".join(reasons)},
    )
    return gate


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mawsflow promotion-gate",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--registry", required=True, help="the model registry's root URI")
    parser.add_argument("--plan", required=True, help="the run's retrain-plan plan.json")
    parser.add_argument("--model", required=True, help="the new model's folder (MAE→WSP)")
    parser.add_argument("--mae-model", default="", help="the run's MAE output folder")
    parser.add_argument(
        "--result", dest="results", nargs="+", action="extend", required=True, metavar="URI",
        help="the run's evaluation outputs",
    )  # fmt: skip
    parser.add_argument("--eval-name", required=True)
    parser.add_argument("--eval-fingerprint", default="")
    parser.add_argument("--headline", action="append", default=None, metavar="METRIC")
    parser.add_argument("--max-drop", type=float, default=GateRules(()).max_drop)
    parser.add_argument("--min-gain", type=float, default=GateRules(()).min_gain)
    parser.add_argument("--image", action="append", default=[], metavar="STEP=REFERENCE")
    parser.add_argument("--pushgateway", default="", help="a Prometheus Pushgateway's URL")
    parser.add_argument("--output", required=True, help="folder URI for gate.json")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    images = dict(item.partition("=")[::2] for item in args.image)
    config = PromotionGateConfig(
        registry=args.registry,
        plan=args.plan,
        model=args.model,
        results=tuple(args.results),
        eval_name=args.eval_name,
        eval_fingerprint=args.eval_fingerprint,
        output=args.output,
        mae_model=args.mae_model,
        headline=tuple(args.headline or DEFAULT_HEADLINE),
        max_drop=args.max_drop,
        min_gain=args.min_gain,
        images=images,
        pushgateway=args.pushgateway,
    )
    try:
        gate = run(config)
    except (RegistryError, ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    verdict = "promoted" if gate["promoted"] else "rejected"
    print(f"{verdict} {gate['candidate']}: {'; '.join(gate['reasons'])}")
    return 0
