"""`mawsflow finetune-detection`: train ViTDet + Cascade Mask R-CNN on a pretrained trunk
(Appendix B: LVIS, Table 18; COCO, Table 19).

The trunk of an MAE, WSP or MAE→WSP output (`init_checkpoint`, position embeddings resampled
to `model.img_size`) becomes ViTDet's backbone: windowed attention with a few global blocks and
the simple feature pyramid, under Cascade Mask R-CNN heads (`mawsflow.models.vitdet`). It
trains with the engine like every training step (torchrun, DDP/FSDP, gradient accumulation to
the recipe's batch, checkpoints it resumes from), on the `train` split of a detection dataset
(`data.train`: `mawsflow prepare-eval --layout coco|lvis`), each image through large-scale
jitter (`augment.scale_range` of `model.img_size`, padded/cropped to the square; flips). The
tables' recipe: AdamW, layer-wise lr decay (with the tables' floor `optimizer.min_layer_decay`
on the multiplier), drop path, and ViTDet's step schedule (×0.1 at 8/9 and 26/27 of training).
LVIS datasets train with LVIS's federated rules (`mawsflow.models.vitdet`). Corrupt samples
are skipped and counted.

Outputs: `model.safetensors` (the whole detector), `model.json` (its card: the detector's
shape, the categories, and the trunk it started from, which gives the report its row),
checkpoints, `history.json` and `metrics.json` (the training's). `mawsflow eval-detection`
scores it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mawsflow.data.decoders import SampleDecoder
from mawsflow.data.detection import DetectionSplit, DetectionTrainDecoder, open_detection_split
from mawsflow.engine.flops import vit_training_flops
from mawsflow.engine.task import TrainTask
from mawsflow.engine.trainer import TrainConfig, TrainResult, train
from mawsflow.errors import ConfigError
from mawsflow.evaluation.finetune import layer_decay_scale
from mawsflow.evaluation.finetune_task import require_init_checkpoint
from mawsflow.models.pretrained import load_checked, load_trunk
from mawsflow.models.vit import architecture, create_trunk
from mawsflow.models.vitdet import ViTDet, ViTDetConfig
from mawsflow.recipes import DetectionRecipe
from mawsflow.step_cli import add_engine_arguments, recipe_parser, run_recipe_step

log = logging.getLogger(__name__)

STEP = "finetune-detection"


def detector_config(recipe: DetectionRecipe, num_classes: int) -> ViTDetConfig:
    """The recipe's model and detector sections as the detector's shape."""
    d = recipe.detector
    return ViTDetConfig(
        arch=recipe.model.arch,
        num_classes=num_classes,
        img_size=recipe.model.img_size,
        drop_path=recipe.model.drop_path,
        window_size=d.window_size,
        fpn_channels=d.fpn_channels,
        anchor_sizes=tuple(d.anchor_sizes),
        rpn_pre_nms_top_n=tuple(d.rpn_pre_nms_top_n),  # type: ignore[arg-type]
        rpn_post_nms_top_n=tuple(d.rpn_post_nms_top_n),  # type: ignore[arg-type]
        box_head_convs=d.box_head_convs,
        box_head_fc=d.box_head_fc,
        mask_head_convs=d.mask_head_convs,
        rois_per_image=d.rois_per_image,
        score_thresh=d.score_thresh,
        detections_per_img=d.detections_per_img,
    )


class DetectionTask(TrainTask):
    """ViTDet + Cascade Mask R-CNN on a pretrained trunk, as an engine task."""

    name = STEP

    def __init__(self, recipe: DetectionRecipe, split: DetectionSplit) -> None:
        require_init_checkpoint(recipe)
        if recipe.framework != "cascade_mask_rcnn" or recipe.backbone != "vitdet":
            raise ConfigError(
                f"framework/backbone: only cascade_mask_rcnn on vitdet is built, got "
                f"{recipe.framework}/{recipe.backbone}"
            )
        low, high = recipe.augment.scale_range
        if not 0 < low <= high:
            raise ConfigError(f"augment.scale_range: need 0 < low <= high, got {low}, {high}")
        self.recipe = recipe
        self.split = split
        self.config = detector_config(recipe, len(split.categories))
        self.config.check()
        self.depth = architecture(recipe.model.arch).layers
        decay = recipe.optimizer.layer_decay
        self._decay = layer_decay_scale(self.depth, decay) if decay is not None else None

    def build_model(self) -> ViTDet:
        r = self.recipe
        trunk = create_trunk(r.model.arch, img_size=r.model.img_size, drop_path=r.model.drop_path)
        return ViTDet(trunk, self.config)

    def initialize(self, model: nn.Module) -> None:
        r = self.recipe
        trunk, card = load_trunk(
            r.init_checkpoint,
            img_size=r.model.img_size,
            drop_path=r.model.drop_path,
            arch=r.model.arch,
        )
        load_checked(
            model.backbone.trunk,
            trunk.state_dict(),
            artifact=r.init_checkpoint,
            what="pretrained trunk",
            missing_ok=("head.",),
        )
        log.info(
            "trunk loaded", extra={"init_checkpoint": r.init_checkpoint, "from": card.get("step")}
        )

    def block_stacks(self, model: nn.Module) -> list[nn.Sequential]:
        return [model.backbone.trunk.blocks]

    def sample_decoder(self) -> SampleDecoder:
        r = self.recipe
        return DetectionTrainDecoder(
            r.model.img_size,
            len(self.split.categories),
            scale_range=tuple(r.augment.scale_range),  # type: ignore[arg-type]
            hflip=r.augment.hflip,
            federated=self.split.annotation_format == "lvis",
        )

    def loss(self, model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
        images = batch["image"].float() / 255
        device = images.device
        targets = [{k: v.to(device) for k, v in t.items()} for t in batch["target"]]
        losses = model(list(images), targets)
        return sum(losses.values())  # type: ignore[return-value]

    def lr_scale(self, name: str) -> float:
        """Layer-wise decay over the trunk (the heads and pyramid train at the full rate),
        floored at `optimizer.min_layer_decay` where the recipe sets one (Tables 18, 19)."""
        if self._decay is None or ".trunk." not in f".{name}":
            return 1.0
        scale = self._decay(name.split("trunk.", 1)[1])
        floor = self.recipe.optimizer.min_layer_decay
        return max(scale, floor) if floor is not None else scale

    def flops_per_sample(self) -> float:
        # The trunk at the detection resolution; the pyramid and heads are not counted (they
        # are a small share at ViT-L and above).
        return vit_training_flops(
            architecture(self.recipe.model.arch), img_size=self.config.img_size
        )

    def export(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return dict(state_dict)

    def model_card(self) -> dict[str, Any]:
        r = self.recipe
        return {
            "arch": r.model.arch,
            "img_size": r.model.img_size,
            "num_classes": len(self.split.categories),
            "init_checkpoint": r.init_checkpoint,
            "dataset": r.data.train,
            "detector": dataclasses.asdict(self.config),
            "annotation_format": self.split.annotation_format,
            "categories": self.split.categories,
            "category_ids": list(self.split.category_ids),
        }


def run(
    recipe: DetectionRecipe,
    *,
    parallelism: str = "auto",
    micro_batch_size: int | None = None,
) -> TrainResult:
    """Train the detector on `data.train`'s train split; writes the model at `output`."""
    split = open_detection_split(recipe.data.train, "train")
    config = TrainConfig.from_recipe(
        recipe,
        parallelism=parallelism,  # type: ignore[arg-type]
        micro_batch_size=micro_batch_size,
    )
    return train(DetectionTask(recipe, split), config, split.as_training_manifest())


def main(argv: Sequence[str] | None = None) -> int:
    parser = recipe_parser(
        STEP,
        "Train ViTDet + Cascade Mask R-CNN on a pretrained trunk (Appendix B; --recipe "
        "detection-lvis for Table 18, detection-coco for Table 19; --variant names a table "
        "column such as mae-vit_2b14). Give --set init_checkpoint=<pretraining output> "
        "--set data.train=<prepare-eval --layout coco|lvis output> --set output=<URI>; score "
        "the result with `mawsflow eval-detection`.",
        recipes=["detection-lvis", "detection-coco"],
    )
    add_engine_arguments(parser)
    return run_recipe_step(
        parser,
        argv,
        lambda recipe, args: run(
            recipe, parallelism=args.parallelism, micro_batch_size=args.micro_batch_size
        ),
    )
