"""The plan a scheduled retraining run makes at its start (`mawsflow retrain-plan`): whether
to train, on which corpus snapshot, and which registry models it warm-starts from. Read back by
the promotion gate, which records it with the new model."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mawsflow import storage
from mawsflow.errors import DataFormatError

PLAN_FORMAT = "mawsflow.retrain-plan/1"
PLAN_FILE = "plan.json"  # in the plan's folder, beside the corpus snapshot
TRAIN, UNCHANGED = "train", "unchanged"
# Where a retraining run may warm-start from (mawsflow retrain-plan says what each means).
MAE_WARM_STARTS = ("none", "registry")
WSP_WARM_STARTS = ("none", "production")


@dataclass(frozen=True)
class RetrainPlan:
    action: str  # "train" or "unchanged"
    reason: str
    corpus: str  # the snapshot file the dataset build reads
    fingerprint: str  # the snapshot's: equal fingerprints, equal data
    shards: int
    partitions: list[str]
    mae_checkpoint: str = ""  # the MAE encoder to reuse ("": train MAE)
    mae_record: str = ""  # its registry id
    wsp_init: str = ""  # the model WSP continues from ("": start from the MAE encoder)
    wsp_record: str = ""  # its registry id
    production: str = ""  # the registry's production model when the plan was made

    def to_json(self) -> dict:
        return {"format": PLAN_FORMAT, **asdict(self)}


def read_plan(uri: str) -> RetrainPlan:
    data = storage.read_json(uri)
    if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
        raise DataFormatError(f"{uri}: not a retraining plan (format {PLAN_FORMAT!r})")
    fields = {k: v for k, v in data.items() if k != "format"}
    try:
        return RetrainPlan(**fields)
    except TypeError as exc:
        raise DataFormatError(f"{uri}: malformed retraining plan ({exc})") from None
