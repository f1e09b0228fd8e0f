"""`mawsflow registry`: the model registry in object storage (list, show, register, promote,
rollback, gate).

    mawsflow registry --root s3://models/maws list
    mawsflow registry --root s3://models/maws show [ID]          (no ID: the production model)
    mawsflow registry --root s3://models/maws register --model s3://…/wsp/model \\
        --metric finetune_top1=81.2 --eval-name ImageNet-1k --eval-fingerprint 3f…
    mawsflow registry --root s3://models/maws promote ID [--reason TEXT]
    mawsflow registry --root s3://models/maws rollback [--reason TEXT]
    mawsflow registry --root s3://models/maws gate ID --headline finetune_top1 [--max-drop 0.5]

Records are written once and never changed; the production pointer changes by one atomic
write, and every change leaves an event. `gate` compares a model with production by the
rules and promotes it only if they pass; exit status 0 either way (a rejection is an outcome,
not an error), 1 for errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from mawsflow.registry import GateRules, ModelRecord, Registry, RegistryError, decide, new_id


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mawsflow registry",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--root", required=True, help="the registry's s3:// or local URI")
    sub = parser.add_subparsers(dest="action", required=True, metavar="<action>")
    sub.add_parser(
        "list",
        help="every registered model, oldest first; * marks production, [mae] an MAE encoder "
        "kept for warm starts",
    )
    show = sub.add_parser("show", help="one model's record (default: production's)")
    show.add_argument("id", nargs="?")
    register = sub.add_parser("register", help="add a model's record")
    register.add_argument("--model", required=True, help="the model's folder URI")
    register.add_argument("--id", help="default: <UTC time>-<hash of the URI>")
    register.add_argument("--metric", action="append", default=[], metavar="NAME=VALUE")
    register.add_argument("--eval-name", default="")
    register.add_argument("--eval-fingerprint", default="")
    register.add_argument("--parent", action="append", default=[], metavar="ROLE=ID")
    for name, text in (("promote", "make ID production"), ("rollback", "undo the last change")):
        action = sub.add_parser(name, help=text)
        if name == "promote":
            action.add_argument("id")
        action.add_argument("--reason", default="")
    gate = sub.add_parser("gate", help="promote ID if it passes the rules against production")
    gate.add_argument("id")
    gate.add_argument("--headline", action="append", required=True, metavar="METRIC")
    gate.add_argument("--max-drop", type=float, default=GateRules(()).max_drop)
    gate.add_argument("--min-gain", type=float, default=GateRules(()).min_gain)
    return parser


def _pairs(values: Sequence[str], what: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name:
            raise RegistryError(f"{what} {value!r}: expected NAME=VALUE")
        pairs[name] = text
    return pairs


@dataclass(frozen=True)
class ListModels:
    """Every registered model, oldest first; * marks production."""


@dataclass(frozen=True)
class ShowModel:
    id: str | None = None  # None: the production model


@dataclass(frozen=True)
class RegisterModel:
    record: ModelRecord


@dataclass(frozen=True)
class PromoteModel:
    id: str
    reason: str = ""


@dataclass(frozen=True)
class RollBack:
    reason: str = ""


@dataclass(frozen=True)
class GateModel:
    id: str
    rules: GateRules


Action = ListModels | ShowModel | RegisterModel | PromoteModel | RollBack | GateModel


@dataclass(frozen=True)
class RegistryCommand:
    root: str
    action: Action


def command_from_args(args: argparse.Namespace) -> RegistryCommand:
    action: Action
    if args.action == "list":
        action = ListModels()
    elif args.action == "show":
        action = ShowModel(args.id)
    elif args.action == "register":
        metrics = {}
        for name, text in _pairs(args.metric, "--metric").items():
            try:
                metrics[name] = float(text)
            except ValueError:
                raise RegistryError(f"--metric {name}={text!r}: not a number") from None
        action = RegisterModel(
            ModelRecord(
                id=args.id or new_id(args.model),
                uri=args.model,
                metrics=metrics,
                evaluation={"name": args.eval_name, "fingerprint": args.eval_fingerprint},
                parents=_pairs(args.parent, "--parent"),
            )
        )
    elif args.action == "promote":
        action = PromoteModel(args.id, args.reason)
    elif args.action == "rollback":
        action = RollBack(args.reason)
    else:
        action = GateModel(args.id, GateRules(tuple(args.headline), args.max_drop, args.min_gain))
    return RegistryCommand(args.root, action)


def run(config: RegistryCommand) -> int:
    """Carry out one registry action, printing its outcome; returns the exit status."""
    registry = Registry(config.root)
    action = config.action
    if isinstance(action, ListModels):
        pointer = registry.pointer()
        for record in registry.list():
            mark = "*" if pointer and pointer.model == record.id else " "
            metrics = " ".join(f"{k}={v:g}" for k, v in sorted(record.metrics.items()))
            role = "" if record.role == "model" else f"[{record.role}]  "
            print(f"{mark} {record.id}  {role}{record.uri}  {metrics}")
    elif isinstance(action, ShowModel):
        record = registry.get(action.id) if action.id else registry.production()
        if record is None:
            raise RegistryError(f"{config.root}: no model in production")
        print(json.dumps(record.to_json(), indent=2, sort_keys=True))
    elif isinstance(action, RegisterModel):
        print(registry.register(action.record).id)
    elif isinstance(action, PromoteModel):
        pointer = registry.promote(action.id, action.reason)
        print(f"production: {pointer.model} (revision {pointer.revision})")
    elif isinstance(action, RollBack):
        pointer = registry.rollback(action.reason)
        print(f"production: {pointer.model} (revision {pointer.revision})")
    else:
        decision = decide(registry.get(action.id), registry.production(), action.rules)
        for metric, old, new in decision.comparison:
            print(f"{metric}: production {'-' if old is None else f'{old:g}'} → {new:g}")
        if decision.promote:
            registry.promote(action.id, "; ".join(decision.reasons))
        verdict = "promoted" if decision.promote else "rejected"
        print(f"{verdict}: {'; '.join(decision.reasons)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(command_from_args(args))
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
