"""Evaluating a finetuned classifier on test sets: top-1/top-5, ReaL-style multi-label
accuracy where the set has several correct labels, and label-subset sets (ObjectNet) through
their class map.

A finetuned model (`mawsflow finetune`'s output) is loaded by
mawsflow.models.pretrained.load_classifier.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mawsflow import storage
from mawsflow.data.eval_loader import eval_loader
from mawsflow.data.eval_shards import EvalSplit, open_split
from mawsflow.data.transforms import DEFAULT_CROP_PCT
from mawsflow.evaluation.classification_metrics import ClassificationMeter
from mawsflow.evaluation.features import batch_outputs


@dataclass(frozen=True)
class NamedTestSet:
    """A test set as the command line names it: `[NAME=]URI[:SPLIT]`."""

    name: str
    dataset: str
    split: str | None

    @classmethod
    def parse(cls, text: str) -> NamedTestSet:
        name, sep, rest = text.partition("=")
        if not sep:
            name, rest = "", text
        split = None
        match = re.match(r"^(.*):(train|val|test)$", rest)
        if match:
            rest, split = match.group(1), match.group(2)
        if not rest:
            raise ValueError(f"test set {text!r}: expected [NAME=]URI[:SPLIT]")
        return cls(name or rest.rstrip("/").rsplit("/", 1)[-1], rest, split)

    def open(self) -> EvalSplit:
        """The named split, else `test`, else `val` (ImageNet's test set is its val split)."""
        if self.split is not None:
            return open_split(self.dataset, self.split)
        has_test = storage.exists(storage.join(self.dataset, "test", "manifest.json"))
        return open_split(self.dataset, "test" if has_test else "val")


def evaluate_classifier(
    model: torch.nn.Module,
    split: EvalSplit,
    *,
    img_size: int,
    device: torch.device,
    batch_size: int,
    num_workers: int,
    crop_pct: float | None = DEFAULT_CROP_PCT,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, float]:
    """Accuracies (percent) of `model` on `split`, summed over ranks."""
    meter = ClassificationMeter(ks=(1, 5), label_subset=split.label_subset)
    loader = eval_loader(
        split,
        img_size=img_size,
        batch_size=batch_size,
        num_workers=num_workers,
        crop_pct=crop_pct,
        rank=rank,
        world_size=world_size,
    )
    for logits, labels, real in batch_outputs(loader, model, device):
        meter.update(logits, labels, real)
    meter.all_reduce()
    return meter.compute()


def metric_key(name: str) -> str:
    """A test-set name as a metric-name prefix: 'IN-Real v2' → 'in_real_v2'."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def table_cells(results: Sequence[tuple[NamedTestSet, dict[str, float]]]) -> dict[str, float]:
    """Report cells: each set's top-1 under its name, and its ReaL top-1 where it has one."""
    cells: dict[str, float] = {}
    for test_set, metrics in results:
        cells[test_set.name] = metrics["top1"]
        if "real_top1" in metrics:
            cells[f"{test_set.name} ReaL"] = metrics["real_top1"]
    return cells


def flat_metrics(results: Sequence[tuple[NamedTestSet, dict[str, float]]]) -> dict[str, float]:
    return {
        f"{metric_key(test_set.name)}_{k}": v
        for test_set, metrics in results
        for k, v in metrics.items()
    }
