"""Classification accuracy: top-k, ReaL-style multi-label accuracy and label-subset test sets.

Every metric here is one rule: a sample counts as correct at k when any of the model's k best
classes is *accepted* for it. What is accepted depends on the test set:

- a plain test set accepts the sample's one label;
- a ReaL-style test set (`<key>.labels.json`) accepts any of its several correct labels, and
  images with no correct label are left out, as ReaL does;
- a label-subset test set (ObjectNet: 113 classes, each one or more ImageNet classes) accepts the
  model classes its label maps to, and ranks only the model classes that the test set covers.

Counts are kept as sums so that ranks can add them up before dividing (all_reduce).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from mawsflow.data.eval_shards import LabelSubset


def covered_classes(subset: LabelSubset) -> torch.Tensor:
    """Bool mask over model classes: those some test label maps to."""
    mask = torch.zeros(subset.num_model_classes, dtype=torch.bool)
    for accepted in subset.targets:
        mask[list(accepted)] = True
    return mask


def accepted_classes(subset: LabelSubset, labels: torch.Tensor) -> torch.Tensor:
    """[B, model classes] bool: which model classes count as correct for each test label."""
    table = torch.zeros(subset.num_test_classes, subset.num_model_classes, dtype=torch.bool)
    for label, accepted in enumerate(subset.targets):
        table[label, list(accepted)] = True
    return table.to(labels.device)[labels]


def topk_hits(logits: torch.Tensor, accepted: torch.Tensor, k: int) -> torch.Tensor:
    """[B] bool: whether any of the k highest-scoring classes is accepted for the sample."""
    if logits.shape != accepted.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and accepted {tuple(accepted.shape)} differ"
        )
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return accepted.gather(1, top).any(dim=1)


class ClassificationMeter:
    """Accumulates top-k (and ReaL) correct counts over batches, and across ranks."""

    def __init__(self, ks: Sequence[int] = (1, 5), label_subset: LabelSubset | None = None):
        self.ks = tuple(sorted(set(ks)))
        self.label_subset = label_subset
        self.correct = torch.zeros(len(self.ks), dtype=torch.float64)
        self.total = torch.zeros((), dtype=torch.float64)
        self.real_correct = torch.zeros((), dtype=torch.float64)
        self.real_total = torch.zeros((), dtype=torch.float64)
        self.num_classes: int | None = None

    def update(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        real_labels: torch.Tensor | None = None,
    ) -> None:
        """Count one batch.

        logits: [B, model classes]; labels: [B] test-set labels; real_labels: optional [B, C]
        bool multi-hot of every correct label (ReaL-style sets), all-False rows are left out.
        """
        logits = logits.detach().float()
        labels = labels.to(logits.device)
        if self.label_subset is not None:
            if logits.shape[1] != self.label_subset.num_model_classes:
                raise ValueError(
                    f"the model scores {logits.shape[1]} classes but class_map.json maps onto "
                    f"{self.label_subset.num_model_classes}"
                )
            # Ranking only covered classes is the ObjectNet protocol: a prediction outside the
            # test set's classes is not an answer the test set can grade.
            covered = covered_classes(self.label_subset).to(logits.device)
            logits = logits.masked_fill(~covered, -torch.inf)
            accepted = accepted_classes(self.label_subset, labels)
            ranked = self.label_subset.num_test_classes
        else:
            if labels.numel() and int(labels.max()) >= logits.shape[1]:
                raise ValueError(
                    f"label {int(labels.max())} is outside the model's {logits.shape[1]} classes; "
                    "a test set with other classes needs a class_map.json"
                )
            accepted = torch.zeros_like(logits, dtype=torch.bool)
            accepted[torch.arange(len(labels)), labels] = True
            ranked = logits.shape[1]
        self.num_classes = ranked
        for i, k in enumerate(self.ks):
            self.correct[i] += topk_hits(logits, accepted, k).sum().item()
        self.total += len(labels)
        if real_labels is not None:
            real = real_labels.to(logits.device).bool()
            graded = real.any(dim=1)
            if graded.any():
                hits = topk_hits(logits[graded], real[graded], 1)
                self.real_correct += hits.sum().item()
                self.real_total += graded.sum().item()

    def all_reduce(self) -> None:
        """Sum the counts of every rank (no-op outside torch.distributed)."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        counts = torch.cat(
            [self.correct, self.total[None], self.real_correct[None], self.real_total[None]]
        )
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        counts = counts.to(device)
        dist.all_reduce(counts)
        counts = counts.cpu()
        n = len(self.ks)
        self.correct, self.total = counts[:n], counts[n]
        self.real_correct, self.real_total = counts[n + 1], counts[n + 2]

    def compute(self) -> dict[str, float]:
        """Accuracies in percent (`top1`, `top5`, `real_top1`) and `num_samples`.

        A top-k is reported only where the test set has more than k classes to rank, since
        top-k over k or fewer classes is always 100%.
        """
        if self.total == 0:
            raise ValueError("no samples were evaluated")
        out: dict[str, float] = {"num_samples": float(self.total)}
        for k, correct in zip(self.ks, self.correct, strict=True):
            if k == 1 or self.num_classes is None or k < self.num_classes:
                out[f"top{k}"] = 100.0 * float(correct / self.total)
        if self.real_total > 0:
            out["real_top1"] = 100.0 * float(self.real_correct / self.real_total)
            out["real_num_samples"] = float(self.real_total)
        return out
