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
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from mawsflow import storage
from mawsflow.data.decoders import SampleDecoder
from mawsflow.data.eval_shards import EvalSplit
from mawsflow.data.video import ClipSampling, MultiView, VideoTrainDecoder, erase_clips
from mawsflow.data.video_shards import open_video_split
from mawsflow.engine.distributed import init_distributed, unwrap
from mawsflow.engine.flops import (
    linear_forward_flops,
    patch_embed_forward_flops,
    training_flops,
    transformer_forward_flops,
)
from mawsflow.engine.task import TrainTask
from mawsflow.engine.trainer import TrainConfig, train
from mawsflow.errors import ConfigError
from mawsflow.evaluation.classify import NamedTestSet, flat_metrics, table_cells
from mawsflow.evaluation.features import eval_device
from mawsflow.evaluation.finetune import EMAClassifier, classifier_weights, layer_decay_scale
from mawsflow.evaluation.results import EvalResult, model_lineage, write_result
from mawsflow.evaluation.video_classify import evaluate_video_classifier, normalize_clips
from mawsflow.models.pretrained import load_checked
from mawsflow.models.video_vit import VideoViT, load_video_classifier, video_classifier_from
from mawsflow.models.vit import architecture, create_trunk
from mawsflow.recipes import VideoFinetuneRecipe, check_crop_matches_model
from mawsflow.step_cli import add_engine_arguments, recipe_parser, run_recipe_step

log = logging.getLogger(__name__)


def clip_sampling(recipe: VideoFinetuneRecipe) -> ClipSampling:
    return ClipSampling(recipe.video.num_frames, recipe.video.clip_seconds)


def test_views(recipe: VideoFinetuneRecipe) -> MultiView:
    return MultiView(recipe.video.test_clips, recipe.video.test_crops, recipe.augment.crop.size)


def open_test_split(test_set: NamedTestSet) -> EvalSplit:
    """The named split, else `test`, else `val` (K400 and SSv2 are scored on their val sets)."""
    if test_set.split is not None:
        return open_video_split(test_set.dataset, test_set.split)
    has_test = storage.exists(storage.join(test_set.dataset, "test", "manifest.json"))
    return open_video_split(test_set.dataset, "test" if has_test else "val")


class VideoFinetuneTask(TrainTask):
    name = "finetune-video"

    def __init__(self, recipe: VideoFinetuneRecipe, num_classes: int) -> None:
        check_crop_matches_model(recipe)
        if not recipe.init_checkpoint:
            raise ConfigError("init_checkpoint is empty: give the pretraining run's output")
        if recipe.augment.short_side_scale is None:
            raise ConfigError("augment.short_side_scale must be set: frames are scaled first")
        if recipe.video.num_frames % recipe.video.tubelet_size:
            raise ConfigError(
                f"video.num_frames {recipe.video.num_frames} is not a multiple of "
                f"video.tubelet_size {recipe.video.tubelet_size}"
            )
        self.recipe = recipe
        self.num_classes = num_classes
        self.depth = architecture(recipe.model.arch).layers
        augment = recipe.augment
        self.mixup = (
            Mixup(
                mixup_alpha=augment.mixup,
                cutmix_alpha=augment.cutmix,
                label_smoothing=recipe.loss.label_smoothing,
                num_classes=num_classes,
            )
            if augment.mixup > 0 or augment.cutmix > 0
            else None
        )
        decay = recipe.optimizer.layer_decay
        self._lr_scale = layer_decay_scale(self.depth, decay) if decay is not None else None

    def build_model(self) -> EMAClassifier:
        r = self.recipe
        trunk = create_trunk(r.model.arch, img_size=r.model.img_size, drop_path=r.model.drop_path)
        video = VideoViT(
            trunk,
            num_frames=r.video.num_frames,
            tubelet_size=r.video.tubelet_size,
            inflation=r.video.inflation,
            relative_position=r.video.relative_position,
            dropout=r.dropout,
        )
        video.reset_head(self.num_classes)
        return EMAClassifier(video, r.ema)

    def initialize(self, model: nn.Module) -> None:
        r = self.recipe
        inflated = video_classifier_from(
            r.init_checkpoint,
            arch=r.model.arch,
            img_size=r.model.img_size,
            drop_path=r.model.drop_path,
            num_frames=r.video.num_frames,
            tubelet_size=r.video.tubelet_size,
            num_classes=self.num_classes,
            inflation=r.video.inflation,
            relative_position=r.video.relative_position,
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

    def block_stacks(self, model: nn.Module) -> list[nn.Sequential]:
        return [model.classifier.blocks]

    def sample_decoder(self) -> SampleDecoder:
        return VideoTrainDecoder(clip_sampling(self.recipe), self.recipe.augment, self.num_classes)

    def loss(self, model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
        r = self.recipe
        clips = normalize_clips(batch["video"], normalize=r.augment.normalize)
        labels = batch["label"]
        # Erasing and cutmix boxes go through every frame (mae_st's "cube" erasing); both draw
        # from the training RNG, which the engine's checkpoints carry.
        clips = erase_clips(clips, r.augment.random_erasing)
        if self.mixup is None:
            logits = model(clips)
            return F.cross_entropy(logits.float(), labels, label_smoothing=r.loss.label_smoothing)
        if clips.shape[0] % 2:
            raise ValueError(
                f"mixup/cutmix pair each clip with another: the per-process batch "
                f"{clips.shape[0]} must be even"
            )
        # timm's Mixup cuts boxes over the last two dimensions: frames folded into channels
        # make one box through the whole clip.
        mixed, targets = self.mixup(clips.flatten(1, 2), labels)
        return SoftTargetCrossEntropy()(model(mixed.view_as(clips)).float(), targets)

    def after_optimizer_step(self, model: nn.Module) -> None:
        unwrap(model).update_ema()

    def lr_scale(self, name: str) -> float:
        if self._lr_scale is None:
            return 1.0
        # The temporal position embedding is an embedding (layer 0), like the spatial one.
        return self._lr_scale(name.replace("pos_embed_temporal", "pos_embed"))

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

    def export(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The video classifier (EMA weights when there is an EMA)."""
        return classifier_weights(state_dict)

    def model_card(self) -> dict[str, Any]:
        r = self.recipe
        return {
            "arch": r.model.arch,
            "img_size": r.model.img_size,
            "num_classes": self.num_classes,
            "init_checkpoint": r.init_checkpoint,
            "dataset": r.data.train,
            "ema": r.ema,
            "video": {
                "num_frames": r.video.num_frames,
                "clip_seconds": r.video.clip_seconds,
                "tubelet_size": r.video.tubelet_size,
                "inflation": r.video.inflation,
                "relative_position": r.video.relative_position,
            },
        }


def evaluate_test_sets(
    recipe: VideoFinetuneRecipe,
    test_sets: Sequence[NamedTestSet],
    *,
    pretraining: str,
    training: Mapping[str, float],
    device: str = "auto",
) -> EvalResult:
    """Score the finetuned model at `recipe.output` on every test set; writes the result."""
    model, card = load_video_classifier(recipe.output)
    dev = eval_device(device)
    model.to(dev)
    results = []
    for test_set in test_sets:
        metrics = evaluate_video_classifier(
            model,
            open_test_split(test_set),
            clip_sampling(recipe),
            test_views(recipe),
            device=dev,
            num_workers=recipe.data.num_workers,
            normalize=recipe.augment.normalize,
        )
        log.info("evaluated", extra={"test_set": test_set.name, **metrics})
        results.append((test_set, metrics))
    trained_on = card["dataset"].rstrip("/").rsplit("/", 1)[-1]
    result = EvalResult(
        step="finetune-video",
        evaluation=f"video finetuned on {trained_on}",
        pretraining=pretraining,
        metrics={**flat_metrics(results), **{f"train_{k}": float(v) for k, v in training.items()}},
        table=table_cells(results),
        model=recipe.output,
        dataset=card["dataset"],
    )
    write_result(recipe.output, result)
    return result


def run(
    recipe: VideoFinetuneRecipe,
    test_sets: Sequence[NamedTestSet] = (),
    *,
    parallelism: str = "auto",
    micro_batch_size: int | None = None,
    pretraining: str | None = None,
) -> EvalResult | None:
    split = open_video_split(recipe.data.train, "train")
    task = VideoFinetuneTask(recipe, split.num_classes)
    config = TrainConfig.from_recipe(
        recipe, parallelism=parallelism, micro_batch_size=micro_batch_size
    )
    # Joins the torchrun job (train reuses the process group): the main rank evaluates alone.
    ctx = init_distributed(config.runtime.device)
    result = train(task, config, split.as_training_manifest())
    if not test_sets or not ctx.is_main:
        return None
    return evaluate_test_sets(
        recipe,
        test_sets,
        pretraining=pretraining or model_lineage(recipe.init_checkpoint),
        training=result.as_metrics(),
        device=recipe.runtime.device,
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
    parser.add_argument(
        "--test-set",
        dest="test_sets",
        action="append",
        default=[],
        type=NamedTestSet.parse,
        metavar="[NAME=]URI[:SPLIT]",
        help="evaluate the finetuned model on this video dataset (repeatable)",
    )
    parser.add_argument("--pretraining", help="report row (default: the trunk's lineage)")
    return run_recipe_step(
        parser,
        argv,
        lambda recipe, args: run(
            recipe,
            args.test_sets,
            parallelism=args.parallelism,
            micro_batch_size=args.micro_batch_size,
            pretraining=args.pretraining,
        ),
    )
