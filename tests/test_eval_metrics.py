"""Classification metrics: top-k, ReaL multi-label accuracy, label-subset (ObjectNet) test sets."""

from __future__ import annotations

import pytest
import torch

from mawsflow.data.eval_shards import LabelSubset
from mawsflow.evaluation.classification_metrics import ClassificationMeter, topk_hits


def test_top1_and_top5_count_hits_among_the_best_classes():
    logits = torch.tensor(
        [
            [9.0, 8, 7, 6, 5, 4, 3],  # label 0: top-1 hit
            [9.0, 8, 7, 6, 5, 4, 3],  # label 4: top-5 hit only
            [9.0, 8, 7, 6, 5, 4, 3],  # label 6: miss
        ]
    )
    meter = ClassificationMeter(ks=(1, 5))
    meter.update(logits, torch.tensor([0, 4, 6]))
    result = meter.compute()
    assert result["top1"] == pytest.approx(100 / 3)
    assert result["top5"] == pytest.approx(200 / 3)
    assert result["num_samples"] == 3
    assert "real_top1" not in result


def test_counts_accumulate_over_batches():
    meter = ClassificationMeter(ks=(1,))
    meter.update(torch.eye(4), torch.tensor([0, 1, 2, 3]))
    meter.update(torch.eye(4), torch.tensor([1, 1, 1, 1]))
    assert meter.compute()["top1"] == pytest.approx(5 / 8 * 100)


def test_top5_is_not_reported_when_there_are_five_or_fewer_classes():
    meter = ClassificationMeter(ks=(1, 5))
    meter.update(torch.eye(5), torch.arange(5))
    assert "top5" not in meter.compute()


def test_real_accuracy_accepts_any_correct_label_and_skips_unlabelled_images():
    logits = torch.tensor([[0.0, 5, 1], [5.0, 0, 1], [0.0, 0, 5]])
    labels = torch.tensor([0, 0, 2])  # the original single labels
    real = torch.tensor(
        [
            [True, True, False],  # the prediction 1 is one of its correct labels
            [False, True, False],  # predicted 0, only 1 is correct
            [False, False, False],  # no correct label: left out of ReaL
        ]
    )
    meter = ClassificationMeter(ks=(1,))
    meter.update(logits, labels, real)
    result = meter.compute()
    assert result["top1"] == pytest.approx(200 / 3)  # original labels: images 1 and 2 right
    assert result["real_top1"] == pytest.approx(50.0)
    assert result["real_num_samples"] == 2


def test_label_subset_ranks_only_covered_classes_and_accepts_every_mapped_class():
    # A 3-class test set over a 6-class model: test label 0 = model classes {1, 2}, 1 = {4},
    # 2 = {5}. Model classes 0 and 3 are not in the test set.
    subset = LabelSubset(num_model_classes=6, targets=((1, 2), (4,), (5,)))
    logits = torch.tensor(
        [
            [9.0, 1, 8, 0, 0, 0],  # best covered class 2 → test label 0: correct
            [0.0, 0, 0, 9, 1, 2],  # class 3 is uncovered; best covered is 5 → wrong for label 1
            [0.0, 0, 0, 0, 1, 2],  # 5 → label 2: correct
        ]
    )
    meter = ClassificationMeter(ks=(1,), label_subset=subset)
    meter.update(logits, torch.tensor([0, 1, 2]))
    assert meter.compute()["top1"] == pytest.approx(200 / 3)


def test_label_subset_rejects_bad_maps():
    with pytest.raises(ValueError, match="outside the model"):
        LabelSubset(num_model_classes=3, targets=((0,), (7,)))
    with pytest.raises(ValueError, match="maps to no model class"):
        LabelSubset(num_model_classes=3, targets=((0,), ()))
    meter = ClassificationMeter(label_subset=LabelSubset(4, ((0,), (1,))))
    with pytest.raises(ValueError, match="maps onto 4"):
        meter.update(torch.zeros(1, 5), torch.tensor([0]))


def test_labels_outside_the_model_need_a_class_map():
    meter = ClassificationMeter()
    with pytest.raises(ValueError, match="class_map.json"):
        meter.update(torch.zeros(2, 3), torch.tensor([0, 3]))


def test_topk_hits_and_an_empty_meter():
    accepted = torch.tensor([[False, True, False]])
    assert topk_hits(torch.tensor([[3.0, 2, 1]]), accepted, 1).tolist() == [False]
    assert topk_hits(torch.tensor([[3.0, 2, 1]]), accepted, 2).tolist() == [True]
    with pytest.raises(ValueError, match="no samples"):
        ClassificationMeter().compute()
