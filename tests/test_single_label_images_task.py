"""The data and loss that `finetune` and lowshot's VPT share (SingleLabelImagesTask): single-label
decoding with the recipe's augmentation, ImageNet normalisation and the recipe's loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mawsflow.data.decoders import ImageLabelsDecoder
from mawsflow.evaluation.finetune_task import FinetuneTask, SingleLabelImagesTask
from mawsflow.recipes import load_recipe
from mawsflow.steps.lowshot import VPTTask

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
# No mixup, so the loss is a plain cross-entropy with the recipe's label smoothing.
PLAIN_LOSS = ["init_checkpoint=x", "augment.mixup=0", "augment.cutmix=0"]


def _tasks(*overrides: str) -> list[SingleLabelImagesTask]:
    sets = [*PLAIN_LOSS, "loss.label_smoothing=0.1", *overrides]
    return [
        FinetuneTask(load_recipe("finetune-mae", preset="tiny", overrides=sets), num_classes=5),
        VPTTask(load_recipe("lowshot-vpt", preset="tiny", overrides=sets), num_classes=5),
    ]


def test_finetune_and_vpt_take_their_data_and_loss_from_the_shared_task():
    for task in _tasks():
        assert type(task).sample_decoder is SingleLabelImagesTask.sample_decoder
        assert type(task).loss is SingleLabelImagesTask.loss
        decoder = task.sample_decoder()
        assert isinstance(decoder, ImageLabelsDecoder)
        assert decoder.single_label and decoder.num_classes == 5


@pytest.mark.parametrize("normalize", [True, False])
def test_the_loss_is_the_smoothed_cross_entropy_of_the_normalised_images(normalize):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 4, 2])
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    x = images.float() / 255.0
    if normalize:
        x = (x - IMAGENET_MEAN) / IMAGENET_STD
    expected = F.cross_entropy(model(x), labels, label_smoothing=0.1)
    for task in _tasks(f"augment.normalize={str(normalize).lower()}"):
        loss = task.loss(model, {"image": images.clone(), "label": labels})
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5), type(task).__name__
