"""The paper's recipes (Appendix Tables 10–19, Table 1) as typed configuration.

A recipe is a YAML file in `mawsflow/recipes/` holding one stage's hyperparameters exactly as
the paper's table gives them, plus the run-time settings a step needs (where data comes from,
where outputs go). Loading a recipe resolves, in this order:

1. the recipe's base values;
2. `arch_overrides[<model.arch>]`: the paper's per-architecture changes (e.g. Table 11's ViT-2B
   note, Table 12's embedding dims, Table 17's 2B/6.5B note);
3. `variants[<variant>]`: a named column of the table (a dataset such as `inat18`, a shot count,
   a detection method-and-architecture);
4. `presets[<preset>]` from `presets.yaml`: `tiny` (tests) and `demo` (the local run) shrink sizes
   and lengths, never the structure;
5. the user's `--set key=value` overrides.

The result is a frozen-schema dataclass: an unknown key or a wrongly typed value is an error
naming the dotted key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

import yaml

from mawsflow.errors import ConfigError
from mawsflow.typed_config import (
    check_key,
    from_dict,
    merge,
    parse_override,
    to_dict,
)

# --------------------------------------------------------------------------------------------
# Shared sections


@dataclass
class ModelConfig:
    """Which trunk to build, and what to initialise it from."""

    arch: str = "vit_l16"
    img_size: int = 224
    drop_path: float = 0.0
    # Activation checkpointing trades compute for memory on the largest models.
    grad_checkpointing: bool = False


@dataclass
class OptimizerConfig:
    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] | None = (0.9, 0.999)  # AdamW only
    momentum: float | None = None  # SGD only
    grad_clip: float | None = None  # max global L2 norm; None disables clipping
    layer_decay: float | None = None  # layer-wise lr decay (finetuning, detection)
    min_layer_decay: float | None = None  # floor of the layer-wise multiplier (Tables 18, 19)


@dataclass
class ScheduleConfig:
    """Training length and learning-rate shape, counted in samples seen, so that the length does
    not change with the batch size or the number of GPUs.

    `epochs` is the paper's number; `samples_per_epoch` says what an epoch means for the dataset
    (IG-3B: 5B samples after resampling), so `total_samples` does not depend on bookkeeping.
    """

    epochs: float = 1.0
    samples_per_epoch: int = 1
    batch_size: int = 256  # global batch, reached by gradient accumulation on any GPU count
    lr_schedule: Literal["cosine", "linear", "constant", "step"] = "cosine"
    warmup_schedule: Literal["linear"] = "linear"
    warmup_fraction: float = 0.0

    @property
    def total_samples(self) -> int:
        return round(self.epochs * self.samples_per_epoch)

    @property
    def total_steps(self) -> int:
        return max(1, -(-self.total_samples // self.batch_size))


@dataclass
class RandomResizedCropConfig:
    size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (0.75, 1.33)
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"


@dataclass
class RandAugmentConfig:
    num_layers: int = 2
    magnitude: int = 9


@dataclass
class AugmentConfig:
    short_side_scale: int | None = None
    crop: RandomResizedCropConfig = field(default_factory=RandomResizedCropConfig)
    hflip: float = 0.5
    rand_augment: RandAugmentConfig | None = None
    random_erasing: float = 0.0
    normalize: bool = True
    mixup: float = 0.0
    cutmix: float = 0.0


@dataclass
class LossConfig:
    label_smoothing: float = 0.0


@dataclass
class DataConfig:
    """Where a step reads its samples: a URI prefix of webdataset shards, or a shard list."""

    train: str = ""
    val: str = ""
    num_workers: int = 4
    shuffle_buffer: int = 2000


@dataclass
class CheckpointConfig:
    every_steps: int = 1000
    keep_last: int = 2


@dataclass
class RuntimeConfig:
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # bf16 autocast on the GPU; the paper trained ViT-6.5B in full precision (§4.2).
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    deterministic: bool = False
    compile: bool = True
    log_every_steps: int = 50
    metrics_port: int | None = None  # Prometheus endpoint; None keeps it off
    pushgateway: str | None = None  # push metrics at the end of short batch steps


# --------------------------------------------------------------------------------------------
# Stage recipes


@dataclass
class DecoderConfig:
    depth: int = 8
    embed_dim: int = 512
    num_heads: int = 16


@dataclass
class MAERecipe:
    """MAE pre-pretraining (Table 10)."""

    source: str = "Table 10"
    model: ModelConfig = field(default_factory=ModelConfig)
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    output: str = ""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


@dataclass
class WSPRecipe:
    """Weakly supervised pretraining (Table 11 on IG-3B; Table 13 on IN21k)."""

    source: str = "Table 11"
    model: ModelConfig = field(default_factory=ModelConfig)
    # IG-3B: Linear(embed, embed) → Tanh → Linear(embed, classes); IN21k: one Linear layer.
    head: Literal["mlp", "linear"] = "mlp"
    # Where the trunk starts: an MAE run's output (MAE→WSP), nothing (WSP baseline), or a
    # released checkpoint in timm layout.
    # "wsp": continue from an earlier WSP model (scheduled retraining's warm start): its trunk,
    # and its head from its last checkpoint, class by class by WordNet id.
    init: Literal["mae", "scratch", "timm", "wsp"] = "scratch"
    init_checkpoint: str = ""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    output: str = ""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


@dataclass
class TextTowerConfig:
    # A Hugging Face model name or a local folder; the paper uses XLM-R (Large for Table 6).
    model: str = "xlm-roberta-large"
    # The caption's own tokens; the tokenizer's special tokens come on top (the maws code).
    context_length: int = 100
    # The caption vector: the first token's state, as the maws model's `RobertaIdentityHead`
    # takes it, or the mean over the caption's tokens.
    pooling: Literal["first", "mean"] = "first"
    embed_dim: int = 768
    dropout: float = 0.0


@dataclass
class LiTRecipe:
    """LiT text alignment with a frozen image tower (Table 12)."""

    source: str = "Table 12"
    model: ModelConfig = field(default_factory=ModelConfig)
    image_checkpoint: str = ""
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    init_logit_scale: float = 2.6592600369262695  # log(1 / 0.07), as CLIP
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    output: str = ""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


@dataclass
class FinetuneRecipe:
    """Image finetuning with a linear head (Table 14 for MAE trunks, Table 15 for WSP ones)."""

    source: str = "Table 14"
    model: ModelConfig = field(default_factory=ModelConfig)
    init_checkpoint: str = ""
    # The paper's "EMA 1e-4" is 1 − decay: the average moves by 1e-4 of the gap each step.
    ema: float | None = None
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    output: str = ""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


@dataclass
class VideoConfig:
    num_frames: int = 32
    clip_seconds: float = 2.7
    tubelet_size: int = 2  # patches of 2 × 16 × 16
    relative_position: bool = True  # §4.4: relative position embeddings for video
    # Not in the paper (mawsflow.models.video_vit, mawsflow.data.video say why): I3D's averaged
    # inflation ([13]); mae_st's test protocol, 10 temporal clips × 3 spatial crops.
    inflation: Literal["average", "central"] = "average"
    test_clips: int = 10
    test_crops: int = 3


@dataclass
class VideoFinetuneRecipe:
    """Video finetuning of an inflated image model (Table 16; K400 and SSv2 columns)."""

    source: str = "Table 16"
    model: ModelConfig = field(default_factory=ModelConfig)
    init_checkpoint: str = ""
    video: VideoConfig = field(default_factory=VideoConfig)
    dropout: float = 0.0
    ema: float | None = None
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    output: str = ""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


@dataclass
class VPTConfig:
    num_tokens: int = 8
    dim_tokens: int = 192  # prompts live in 192-d and are projected to the model width
    dropout: float = 0.0


@dataclass
class LowShotScheduleConfig:
    """Low-shot length is counted in passes over the K-shot split, which depends on K."""

    epochs_per_shot: dict[int, float] = field(default_factory=lambda: {1: 56.0, 5: 28.0, 10: 28.0})
    epoch_multiplier: float = 1.0
    batch_size: int = 128
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_fraction: float = 0.0

    def epochs(self, shots: int) -> float:
        if shots not in self.epochs_per_shot:
            raise ConfigError(
                f"schedule.epochs_per_shot has no entry for {shots} shots "
                f"(it has {sorted(self.epochs_per_shot)})"
            )
        return self.epochs_per_shot[shots] * self.epoch_multiplier


@dataclass
class LowShotRecipe:
    """Low-shot adaptation with VPT (Table 17), K ∈ {1, 5, 10} over 5 seeded splits (§4.4)."""

    source: str = "Table 17"
    model: ModelConfig = field(default_factory=ModelConfig)
    init_checkpoint: str = ""
    shots: list[int] = field(default_factory=lambda: [1, 5, 10])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    vpt: VPTConfig = field(default_factory=VPTConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: LowShotScheduleConfig = field(default_factory=LowShotScheduleConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    output: str = ""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


@dataclass
class DetectorConfig:
    """The detector's shape (`mawsflow.models.vitdet.ViTDetConfig`): ViTDet's Cascade Mask
    R-CNN at 1024 px by default; the CPU presets shrink the heads and anchors."""

    window_size: int = 14  # tokens per side of a windowed-attention block
    fpn_channels: int = 256
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)  # one per pyramid level
    rpn_pre_nms_top_n: tuple[int, int] = (2000, 1000)  # (training, testing)
    rpn_post_nms_top_n: tuple[int, int] = (2000, 1000)
    box_head_convs: int = 4
    box_head_fc: int = 1024
    mask_head_convs: int = 4
    rois_per_image: int = 512
    score_thresh: float = 0.05
    detections_per_img: int = 100


@dataclass
class DetectionAugmentConfig:
    """Large-scale jitter (ViTDet): resize by a factor in `scale_range` of `model.img_size`,
    pad/crop to the square; horizontal flips."""

    scale_range: tuple[float, float] = (0.1, 2.0)
    hflip: float = 0.5


@dataclass
class DetectionRecipe:
    """ViTDet + Cascade Mask R-CNN transfer (Table 18 LVIS, Table 19 COCO)."""

    source: str = "Table 18"
    framework: str = "cascade_mask_rcnn"
    backbone: str = "vitdet"
    model: ModelConfig = field(default_factory=ModelConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    augment: DetectionAugmentConfig = field(default_factory=DetectionAugmentConfig)
    init_checkpoint: str = ""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    data: DataConfig = field(default_factory=DataConfig)
    output: str = ""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


@dataclass
class Architecture:
    """One row of Table 1 (or a CPU-sized variant, which is marked `paper: false`)."""

    layers: int
    embed_dim: int
    mlp_dim: int
    heads: int
    patch_size: int
    params: str = ""  # the paper's parameter count, as printed in Table 1
    paper: bool = True


Recipe = (
    MAERecipe
    | WSPRecipe
    | LiTRecipe
    | FinetuneRecipe
    | VideoFinetuneRecipe
    | LowShotRecipe
    | DetectionRecipe
)
# The recipes of the steps that train on augmented images (they have `model` and `augment`).
AugmentedRecipe = MAERecipe | WSPRecipe | LiTRecipe | FinetuneRecipe | LowShotRecipe

# Recipe name → (YAML file, dataclass). The name is what `mawsflow <step> --recipe` takes.
RECIPES: dict[str, tuple[str, type[Recipe]]] = {
    "mae": ("mae.yaml", MAERecipe),
    "wsp": ("wsp.yaml", WSPRecipe),
    "wsp-in21k": ("wsp_in21k.yaml", WSPRecipe),
    "lit": ("lit.yaml", LiTRecipe),
    "finetune-mae": ("finetune_mae.yaml", FinetuneRecipe),
    "finetune-wsp": ("finetune_wsp.yaml", FinetuneRecipe),
    "finetune-video": ("finetune_video.yaml", VideoFinetuneRecipe),
    "lowshot-vpt": ("lowshot_vpt.yaml", LowShotRecipe),
    "detection-lvis": ("detection_lvis.yaml", DetectionRecipe),
    "detection-coco": ("detection_coco.yaml", DetectionRecipe),
}

PRESETS = ("tiny", "demo")


def _read_yaml(name: str) -> dict[str, Any]:
    text = resources.files("mawsflow").joinpath("recipes", name).read_text(encoding="utf-8")
    return yaml.safe_load(text) or {}


def architectures() -> dict[str, Architecture]:
    """Table 1's ViT family plus the CPU-sized variants, by model name."""
    raw = _read_yaml("architectures.yaml")
    return {name: from_dict(Architecture, spec, prefix=name) for name, spec in raw.items()}


def raw_recipe(name: str) -> dict[str, Any]:
    """The recipe file as written: `base`, `arch_overrides`, `variants`."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    raw = _read_yaml(RECIPES[name][0])
    unknown = set(raw) - {"base", "arch_overrides", "variants"}
    if unknown:
        raise ConfigError(f"recipe {name}: unknown top-level sections {sorted(unknown)}")
    return raw


def preset_overrides(recipe: str, preset: str) -> dict[str, Any]:
    """The dotted overrides that `preset` applies to `recipe` (empty when it applies none)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return dict(_read_yaml("presets.yaml").get(preset, {}).get(recipe, {}))


def load_recipe(
    name: str,
    *,
    variant: str | None = None,
    preset: str | None = None,
    overrides: Iterable[str] = (),
    arch: str | None = None,
) -> Recipe:
    """Resolve recipe `name` into its dataclass (see the module docstring for the order)."""
    raw = raw_recipe(name)
    cls = RECIPES[name][1]
    user = dict(parse_override(o) for o in overrides)
    if arch is not None:
        user.setdefault("model.arch", arch)
    data: dict[str, Any] = raw.get("base", {})

    # The architecture decides which per-arch rows apply. It is the user's choice if they made
    # one, else the recipe's; a preset's smaller model does not change which paper row applies.
    chosen_arch = user.get("model.arch", data.get("model", {}).get("arch", ModelConfig.arch))
    known = architectures()
    if chosen_arch not in known:
        raise ConfigError(f"model.arch: unknown architecture {chosen_arch!r}; known: {list(known)}")
    data = merge(data, raw.get("arch_overrides", {}).get(chosen_arch, {}))

    variants = raw.get("variants", {})
    if variant is not None:
        if variant not in variants:
            raise ConfigError(
                f"recipe {name}: unknown variant {variant!r}; choose one of {list(variants)}"
            )
        data = merge(data, variants[variant])
    if preset is not None:
        data = merge(data, preset_overrides(name, preset))
    for key in user:
        check_key(cls, key)
    data = merge(data, user)
    return from_dict(cls, data)


def describe(recipe: Recipe) -> str:
    """The resolved recipe as YAML, for logs and `--print-config`."""
    return yaml.safe_dump(to_dict(recipe), sort_keys=False)


def resolve_from_mapping(name: str, data: Mapping[str, Any]) -> Recipe:
    """Rebuild a recipe dataclass from a saved plain dict (e.g. a checkpoint's config)."""
    return from_dict(RECIPES[name][1], data)


# --------------------------------------------------------------------------------------------
# What the training steps support. The engine's sample decoders apply only some of the
# augment section's settings; a recipe setting another one would be silently ignored, so it
# is refused before any work starts.


def check_crop_matches_model(recipe: AugmentedRecipe) -> None:
    if recipe.augment.crop.size != recipe.model.img_size:
        raise ConfigError(
            f"augment.crop.size {recipe.augment.crop.size} must equal model.img_size "
            f"{recipe.model.img_size}: the model trains on the crops"
        )


def check_pretraining_augmentation(recipe: AugmentedRecipe, *, batch_mixing: bool) -> None:
    """The pretraining steps (MAE, WSP, LiT) apply crop, flip, RandAugment and (WSP) mixup."""
    check_crop_matches_model(recipe)
    aug = recipe.augment
    unsupported = {"augment.cutmix": aug.cutmix, "augment.random_erasing": aug.random_erasing}
    if not batch_mixing:
        unsupported["augment.mixup"] = aug.mixup
    for key, value in unsupported.items():
        if value:
            raise ConfigError(f"{key}={value} is not supported by this step; set it to 0")
    if aug.short_side_scale is not None:
        raise ConfigError("augment.short_side_scale is not used by pretraining; set it to null")


def check_transfer_augmentation(recipe: AugmentedRecipe, *, short_side_scale: bool) -> None:
    """Finetuning and VPT apply crop, flip, RandAugment, mixup and cutmix; random erasing is
    refused (as is a short-side resize where the crop does not make it redundant)."""
    check_crop_matches_model(recipe)
    if recipe.augment.random_erasing:
        raise ConfigError(
            f"augment.random_erasing={recipe.augment.random_erasing} is not supported by this "
            "step; set it to 0"
        )
    if recipe.augment.short_side_scale is not None and not short_side_scale:
        raise ConfigError("augment.short_side_scale is not used by finetuning; set it to null")
