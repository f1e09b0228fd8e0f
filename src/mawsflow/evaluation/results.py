"""What evaluation and training steps hand to the report: results, lineage and loss histories.

An evaluation step writes `<out>/metrics.json`:

    {"format": "mawsflow.eval/1", "step": "zeroshot", "evaluation": "Fashion-MNIST zero-shot",
     "pretraining": "MAE→WSP", "model": "<uri>", "dataset": "<uri>",
     "metrics": {"top1": 61.2, "top5": 95.0, …},          flat scalars: the KFP Metrics
     "table": {"Fashion-MNIST zero-shot": 61.2},         the report's cells (Table 22 columns)
     "lowshot": {"1": {"mean": …, "std": …, "runs": […]}, …},  low-shot steps only
     "runs": {"Fashion-MNIST linear": [61.0, 61.4, 61.5]},  a cell's value per seed, when the
                                                          cell is a mean over seeded runs
     "models": ["<uri seed 0>", "<uri seed 1>", …]}     each seed's model, in a merge of seeded
                                                          runs (`model` is the first seed's)

The report adds `"pretrained": {"method", "arch", "dataset", "epochs", "flops"}`, how the
evaluated model's trunk was pretrained (`describe_pretraining`, from the model cards; `flops`
is the model FLOPs the engine counted, MAE's included for MAE→WSP): a sweep's report keys its
rows and its FLOPs plot on it.

`pretraining` is the row of Table 22 the result belongs to. Steps read it from the model's
lineage: each model artifact's `model.json` names the step that made it and its recipe, which
names the checkpoint it started from, back to MAE or a from-scratch WSP.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from mawsflow import storage
from mawsflow.models.artifacts import HISTORY_FILE, METRICS_FILE, read_model_card

FORMAT = "mawsflow.eval/1"

# Table 22's rows, in the paper's order.
PAPER_ROWS = ("MAE", "WSP", "MAE→WSP")
# The row of a trunk with a random initialisation and no pretraining (mawsflow random-init):
# not in the paper; it shows what pretraining adds.
CONTROL_ROW = "Control (no pretraining)"


@dataclass
class EvalResult:
    step: str
    evaluation: str
    pretraining: str
    metrics: dict[str, float]
    table: dict[str, float]
    model: str = ""
    dataset: str = ""
    lowshot: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Table column → its value in each seeded run, where the cell is their mean.
    runs: dict[str, list[float]] = field(default_factory=dict)
    # Each seed's model, in the order of `runs`, where the result merges seeded runs (each
    # seed finetunes its own model); `model` stays the first seed's, whose cards the report reads.
    models: list[str] = field(default_factory=list)
    # How the evaluated model was pretrained (arch, data, schedule, FLOPs): filled in by the
    # report from the model cards (`describe_pretraining`), empty where they cannot be read.
    pretrained: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str) -> EvalResult:
        if data.get("format") != FORMAT:
            raise ValueError(
                f"{source}: not an evaluation result (format {data.get('format')!r}, "
                f"expected {FORMAT!r})"
            )
        missing = [
            k for k in ("step", "evaluation", "pretraining", "metrics", "table") if k not in data
        ]
        if missing:
            raise ValueError(f"{source}: evaluation result lacks {missing}")
        for key in ("metrics", "table"):
            bad = {k: v for k, v in data[key].items() if not isinstance(v, int | float)}
            if bad:
                raise ValueError(f"{source}: {key} values must be numbers, got {bad}")
        return cls(
            step=str(data["step"]),
            evaluation=str(data["evaluation"]),
            pretraining=str(data["pretraining"]),
            metrics={k: float(v) for k, v in data["metrics"].items()},
            table={k: float(v) for k, v in data["table"].items()},
            model=str(data.get("model", "")),
            dataset=str(data.get("dataset", "")),
            lowshot=dict(data.get("lowshot", {})),
            runs=_seed_runs(data.get("runs", {}), source),
            models=_seed_models(data.get("models", []), source),
            pretrained=dict(data.get("pretrained", {})),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"


def _seed_runs(data: Any, source: str) -> dict[str, list[float]]:
    if not isinstance(data, Mapping) or not all(
        isinstance(v, list) and v and all(isinstance(x, int | float) for x in v)
        for v in data.values()
    ):
        raise ValueError(f"{source}: runs must map table columns to non-empty lists of numbers")
    return {str(k): [float(x) for x in v] for k, v in data.items()}


def _seed_models(data: Any, source: str) -> list[str]:
    if not isinstance(data, list) or not all(isinstance(m, str) for m in data):
        raise ValueError(f"{source}: models must be a list of model URIs")
    return list(data)


def write_result(output: str, result: EvalResult) -> None:
    """`<output>/metrics.json`: what the component turns into KFP Metrics and the report reads."""
    # Insertion order, not sorted keys: the table's columns keep the order the step gave them.
    storage.write_text(storage.join(output, METRICS_FILE), result.to_json())


def read_result(uri: str) -> EvalResult:
    """An evaluation result from a step's output folder or its metrics.json."""
    if not uri.endswith(".json"):
        uri = storage.join(uri, METRICS_FILE)
    try:
        data = storage.read_json(uri)
    except storage.NotFoundError:
        raise ValueError(f"no evaluation result at {uri}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{uri}: expected a JSON object")
    return EvalResult.from_dict(data, source=uri)


@dataclass
class TrainingHistory:
    """One training step's loss curve, for the report's plot."""

    label: str
    samples: list[int]
    losses: list[float]


def pretraining_lineage(
    model_json: Mapping[str, Any], read_parent: Callable[[str], Mapping[str, Any]]
) -> str:
    """The Table 22 row of a model: MAE, WSP or MAE→WSP.

    model_json: a model artifact's `model.json`; read_parent: checkpoint URI → its `model.json`,
    for the models that start from another (LiT, finetuning, VPT).
    """
    step = model_json.get("step")
    recipe = model_json.get("recipe", {})
    if step == "mae":
        return "MAE"
    if step == "random-init":
        return CONTROL_ROW
    if step == "wsp":
        init = model_json.get("init", recipe.get("init", "scratch"))
        if init == "mae":
            return "MAE→WSP"
        if init == "scratch":
            return "WSP"
        parent = model_json.get("init_checkpoint") or recipe.get("init_checkpoint")
        if init == "wsp" and parent:
            # WSP continued from an earlier WSP model keeps that model's row: a retrained
            # MAE→WSP is still MAE→WSP.
            return pretraining_lineage(read_parent(parent), read_parent)
        return f"WSP ({init} init)"
    parent = recipe.get("image_checkpoint") or recipe.get("init_checkpoint")
    if step in {"lit", "finetune", "finetune-video", "finetune-detection", "lowshot"} and parent:
        return pretraining_lineage(read_parent(parent), read_parent)
    raise ValueError(
        f"cannot tell how a model from step {step!r} was pretrained; pass --pretraining"
    )


@dataclass(frozen=True)
class Pretraining:
    """How a pretrained trunk was made: the facets the report keys its rows on (method ×
    architecture × pretraining dataset, and the schedule when a sweep varies it) and the model
    FLOPs spent on it, MAE's included for MAE→WSP (the x-axis of the paper's Fig. 5)."""

    method: str  # the Table 22 row: MAE, WSP, MAE→WSP, the control
    arch: str = ""
    dataset: str = ""  # the pretraining data's manifest URI
    # Epochs per pretraining stage, in order: {"MAE": 1.0, "WSP": 2.0} for MAE→WSP.
    epochs: dict[str, float] = field(default_factory=dict)
    flops: float | None = None  # None: a card predating the FLOPs count, or the control

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pretraining:
        flops = data.get("flops")
        return cls(
            method=str(data["method"]),
            arch=str(data.get("arch", "")),
            dataset=str(data.get("dataset", "")),
            epochs={str(k): float(v) for k, v in data.get("epochs", {}).items()},
            flops=None if flops is None else float(flops),
        )


# The steps that pretrain a trunk; every other step starts from one (`_parent_checkpoint`).
_PRETRAINING_STEPS = {"mae": "MAE", "wsp": "WSP", "random-init": CONTROL_ROW}


def _parent_checkpoint(model_json: Mapping[str, Any]) -> str:
    recipe = model_json.get("recipe", {})
    return str(
        recipe.get("image_checkpoint")
        or recipe.get("init_checkpoint")
        or model_json.get("init_checkpoint")
        or ""
    )


def describe_pretraining(
    model_json: Mapping[str, Any], read_card: Callable[[str], Mapping[str, Any]]
) -> Pretraining:
    """The Pretraining of the trunk a model (pretrained, LiT, finetuned, low-shot) starts from,
    read along its lineage of model cards; read_card: checkpoint URI → its `model.json`."""
    card = model_json
    while card.get("step") not in _PRETRAINING_STEPS:
        parent = _parent_checkpoint(card)
        if not parent:
            raise ValueError(f"cannot tell how a model from step {card.get('step')!r} started")
        card = read_card(parent)
    method = pretraining_lineage(card, read_card)
    stages: list[Mapping[str, Any]] = [card]
    if card.get("step") == "wsp" and method == "MAE→WSP" and _parent_checkpoint(card):
        stages.insert(0, read_card(_parent_checkpoint(card)))
    flops: float | None = 0.0
    epochs: dict[str, float] = {}
    for stage in stages:
        stage_flops = stage.get("training_flops")
        flops = None if flops is None or stage_flops is None else flops + float(stage_flops)
        schedule = stage.get("recipe", {}).get("schedule", {})
        if "epochs" in schedule:
            epochs[str(stage.get("step", "?")).upper()] = float(schedule["epochs"])
    return Pretraining(
        method=method,
        arch=str(card.get("arch", "")),
        dataset=str(card.get("recipe", {}).get("data", {}).get("train", "")),
        epochs=epochs,
        flops=None if card.get("step") == "random-init" else flops,
    )


def model_lineage(uri: str) -> str:
    """The Table 22 row of the model saved at `uri` (a step output), from its model cards."""
    return pretraining_lineage(read_model_card(uri), read_model_card)


def annotate_pretraining(result: EvalResult) -> EvalResult:
    """`result` with its `pretrained` facets read from the model cards of its model, left as
    they are where the cards cannot be read (a result from outside a pipeline run)."""
    if result.pretrained or not result.model:
        return result
    try:
        found = describe_pretraining(read_model_card(result.model), read_model_card)
    except (ValueError, storage.StorageError):
        return result
    result.pretrained = found.to_dict()
    return result


def read_history(output: str) -> TrainingHistory:
    """The loss curve a training step left in `<output>/history.json`, labelled by the
    model's Table 22 row and step ("MAE→WSP · lit")."""
    uri = storage.join(output, HISTORY_FILE)
    try:
        data = storage.read_json(uri)
    except storage.NotFoundError:
        raise ValueError(
            f"no training history at {uri}: is {output} a training step's output?"
        ) from None
    if not isinstance(data, dict) or len(data.get("steps", [])) != len(data.get("loss", [None])):
        raise ValueError(f"{uri}: expected {{'steps': [...], 'loss': [...], 'samples_per_step'}}")
    card = read_model_card(output)
    try:
        row = model_lineage(output)
    except ValueError:
        row = "?"
    per_step = int(data.get("samples_per_step") or 1)
    return TrainingHistory(
        label=f"{row} · {card.get('step', '?')}",
        samples=[int(step) * per_step for step in data["steps"]],
        losses=[float(loss) for loss in data["loss"]],
    )
