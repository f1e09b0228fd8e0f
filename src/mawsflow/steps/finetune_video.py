"""`mawsflow finetune-video`: finetune an inflated image trunk on video (Table 16, §5) and
evaluate it with the multi-view test protocol.

The trunk of any MAE, WSP or MAE→WSP output is inflated into a video ViT (2×p×p tubelets,
relative position embeddings, a linear head: `mawsflow.models.video_vit`) and trained on clips
of `video.num_frames` frames over `video.clip_seconds` (K400: 32 frames of 2.7 s; SSv2: of 4 s;
`--variant k400|ssv2`). Table 16's recipe throughout: AdamW with layer-wise decay 0.75, constant
rate after a 20 % linear warmup, drop path, head dropout (SSv2), an EMA of the weights,
RandAugment (5 layers, magnitude 7) the same on every frame of a clip, random erasing 0.25 (one
box through the clip), mixup 0.8 and cutmix 1.0 (one box through the clip), label smoothing 0.1.

`data.train` is a video dataset (`mawsflow.data.video_shards`; the converters in
`mawsflow.evaluation.video_converters` write one from Kinetics CSVs or SSv2's JSON) whose
`train` split is trained on. Corrupt, empty and too-short videos are skipped and counted
(`skipped_samples` in training; `skipped_*` per test set). `--test-set [NAME=]URI[:SPLIT]`
(repeatable; default split `test`, else `val`) evaluates the EMA weights with
`video.test_clips` × `video.test_crops` views per video, logits averaged. Outputs:
`model.safetensors`, `model.json`, checkpoints and `metrics.json`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mawsflow.data.decoders import SampleDecoder
from mawsflow.data.video import ClipSampling, MultiView, VideoTrainDecoder, erase_clips
from mawsflow.data.video_shards import open_video_split
from mawsflow.engine.flops import (
    linear_forward_flops,
    patch_embed_forward_flops,
    training_flops,
    transformer_forward_flops,
)
from mawsflow.errors import ConfigError
from mawsflow.evaluation.classify import NamedTestSet
from mawsflow.evaluation.finetune import EMAClassifier
from mawsflow.evaluation.finetune_task import (
    EMAClassifierTask,
    add_evaluation_arguments,
    engine_options,
    recipe_loss,
    train_then_evaluate,
)
from mawsflow.evaluation.results import EvalResult
from mawsflow.evaluation.video_classify import (
    evaluate_video_classifier,
    normalize_clips,
    open_video_test_split,
)
from mawsflow.models.pretrained import load_checked
from mawsflow.models.video_vit import (
    from_image_trunk,
    load_video_classifier,
    video_classifier_from,
)
from mawsflow.models.vit import architecture, create_trunk
from mawsflow.recipes import VideoFinetuneRecipe, check_crop_matches_model
from mawsflow.step_cli import add_engine_arguments, recipe_parser, run_recipe_step

log = logging.getLogger(__name__)


def clip_sampling(recipe: VideoFinetuneRecipe) -> ClipSampling:
    return ClipSampling(recipe.video.num_frames, recipe.video.clip_seconds)


def test_views(recipe: VideoFinetuneRecipe) -> MultiView:
    return MultiView(recipe.video.test_clips, recipe.video.test_crops, recipe.augment.crop.size)


class VideoFinetuneTask(EMAClassifierTask):
    name = "finetune-video"

    def __init__(self, recipe: VideoFinetuneRecipe, num_classes: int) -> None:
        check_crop_matches_model(recipe)
        if recipe.augment.short_side_scale is None:
            raise ConfigError("augment.short_side_scale must be set: frames are scaled first")
        if recipe.video.num_frames % recipe.video.tubelet_size:
            raise ConfigError(
                f"video.num_frames {recipe.video.num_frames} is not a multiple of "
                f"video.tubelet_size {recipe.video.tubelet_size}"
            )
        super().__init__(recipe, num_classes)
        self.criterion = recipe_loss(recipe, num_classes)

    def _inflation(self) -> dict[str, Any]:
        """`from_image_trunk`'s keywords for the recipe's video model."""
        v = self.recipe.video
        return {
            "num_frames": v.num_frames,
            "tubelet_size": v.tubelet_size,
            "num_classes": self.num_classes,
            "inflation": v.inflation,
            "relative_position": v.relative_position,
        }

    def build_model(self) -> EMAClassifier:
        r = self.recipe
        trunk = create_trunk(r.model.arch, img_size=r.model.img_size, drop_path=r.model.drop_path)
        return EMAClassifier(from_image_trunk(trunk, dropout=r.dropout, **self._inflation()), r.ema)

    def initialize(self, model: nn.Module) -> None:
        r = self.recipe
        inflated = video_classifier_from(
            r.init_checkpoint,
            arch=r.model.arch,
            img_size=r.model.img_size,
            drop_path=r.model.drop_path,
            **self._inflation(),
        )
        # The inflated trunk's weights; the near-zero head of build_model stays.
        trunk_state = {k: v for k, v in inflated.state_dict().items() if not k.startswith("head.")}
        load_checked(
            model.classifier,
            trunk_state,
            artifact=r.init_checkpoint,
            what="inflated video model",
            missing_ok=("head.",),
        )
        model.reset_ema()
        log.info(
            "video model inflated",
            extra={"init_checkpoint": r.init_checkpoint, "inflation": r.video.inflation},
        )

    def sample_decoder(self) -> SampleDecoder:
        return VideoTrainDecoder(clip_sampling(self.recipe), self.recipe.augment, self.num_classes)

    def loss(self, model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
        r = self.recipe
        clips = normalize_clips(batch["video"], normalize=r.augment.normalize)
        # Erasing and cutmix boxes go through every frame (mae_st's "cube" erasing); both draw
        # from the training RNG, which the engine's checkpoints carry. timm's Mixup cuts boxes
        # over the last two dimensions: frames folded into channels make one box per clip.
        clips = erase_clips(clips, r.augment.random_erasing)
        return self.criterion(
            lambda folded: model(folded.view_as(clips)), clips.flatten(1, 2), batch["label"]
        )

    def lr_scale(self, name: str) -> float:
        # The temporal position embedding is an embedding (layer 0), like the spatial one.
        return super().lr_scale(name.replace("pos_embed_temporal", "pos_embed"))

    def flops_per_sample(self) -> float:
        r = self.recipe
        spec = architecture(r.model.arch)
        patches = (r.video.num_frames // r.video.tubelet_size) * (
            r.model.img_size // spec.patch_size
        ) ** 2
        forward = patch_embed_forward_flops(
            patches, spec.patch_size, spec.embed_dim, chans=3 * r.video.tubelet_size
        )
        forward += transformer_forward_flops(patches + 1, spec.layers, spec.embed_dim, spec.mlp_dim)
        forward += linear_forward_flops(1, spec.embed_dim, self.num_classes)
        return training_flops(forward)

    def model_card(self) -> dict[str, Any]:
        r = self.recipe
        return {
            **super().model_card(),
            "video": {
                "num_frames": r.video.num_frames,
                "clip_seconds": r.video.clip_seconds,
                "tubelet_size": r.video.tubelet_size,
                "inflation": r.video.inflation,
                "relative_position": r.video.relative_position,
                # How `mawsflow eval-video` scores it: the recipe's test views and input scale.
                "test_clips": r.video.test_clips,
                "test_crops": r.video.test_crops,
                "normalize": r.augment.normalize,
            },
        }


def run(
    recipe: VideoFinetuneRecipe, test_sets: Sequence[NamedTestSet] = (), **engine: Any
) -> EvalResult | None:
    """Finetune, then score the EMA weights on `test_sets` with the multi-view protocol (on
    the main rank). `engine`: `train_then_evaluate`'s parallelism, micro_batch_size and
    pretraining."""
    split = open_video_split(recipe.data.train, "train")
    return train_then_evaluate(
        VideoFinetuneTask(recipe, split.num_classes),
        recipe,
        split.as_training_manifest(),
        test_sets,
        load_video_classifier,
        lambda model, card, device, test_set: evaluate_video_classifier(
            model,
            open_video_test_split(test_set),
            clip_sampling(recipe),
            test_views(recipe),
            device=device,
            num_workers=recipe.data.num_workers,
            normalize=recipe.augment.normalize,
        ),
        step="finetune-video",
        evaluation="video finetuned",
        device=recipe.runtime.device,
        **engine,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = recipe_parser(
        "finetune-video",
        "Finetune an inflated image trunk on video clips (Table 16; --variant k400 or ssv2) and "
        "evaluate it with temporal × spatial views. --set init_checkpoint=<pretraining output> "
        "--set data.train=<video dataset>.",
        recipes=["finetune-video"],
    )
    add_engine_arguments(parser)
    add_evaluation_arguments(parser, "video dataset")
    return run_recipe_step(
        parser, argv, lambda recipe, args: run(recipe, args.test_sets, **engine_options(args))
    )
