"""The paper's ViT family (Table 1) as timm `VisionTransformer`s, one name per model.

Sizes come from `recipes/architectures.yaml` so the recipes, the models and the tests read one
table. Every trunk is a plain timm ViT (class token, learned absolute position embedding,
pre-norm blocks, final LayerNorm, no classifier head), so a saved state dict loads into
`timm.create_model(...)` and timm's SDPA attention, gradient checkpointing and checkpoint
filters all apply. `Trunk` subclasses it only to make the class token's weight decay a
setting (MAE decays it); its modules and keys are timm's.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer

from mawsflow.errors import ConfigError
from mawsflow.recipes import Architecture, architectures

# Paper architectures that timm also registers under its own name: the same layout, so the
# saved keys must match timm's model with `num_classes=0` exactly.
TIMM_EQUIVALENTS = {
    "vit_b16": "vit_base_patch16_224",
    "vit_l16": "vit_large_patch16_224",
    "vit_h14": "vit_huge_patch14_224",
}

# Parameter counts above which data-parallel replicas no longer fit an 80 GB GPU next to their
# optimizer state; the paper's 2B and 6.5B models are trained sharded (FSDP2: engine/distributed).
SHARDING_PARAMS = 1_000_000_000


class Trunk(VisionTransformer):
    """timm's VisionTransformer (same modules, same keys), with one setting of its own: whether
    weight decay skips the class token.

    timm and the finetuning recipes (fb/mae's `main_finetune`) exclude the class token from
    weight decay; fb/mae's pre-pretraining optimiser decays it (its parameter groups exempt
    only 1-D tensors), so the MAE wrapper turns `decay_class_token` on.
    """

    def __init__(self, *, decay_class_token: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.decay_class_token = decay_class_token

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        names = set(super().no_weight_decay())
        if self.decay_class_token:
            names.discard("cls_token")
        return names


def architecture(arch: str) -> Architecture:
    """The Table 1 row (or CPU variant) called `arch`; an unknown name lists the known ones."""
    known = architectures()
    if arch not in known:
        raise ConfigError(f"model.arch: unknown architecture {arch!r}; known: {sorted(known)}")
    return known[arch]


def trunk_kwargs(arch: str, *, img_size: int = 224, drop_path: float = 0.0) -> dict[str, Any]:
    """Constructor arguments of timm's `VisionTransformer` for `arch` without a head."""
    spec = architecture(arch)
    if img_size % spec.patch_size:
        raise ConfigError(
            f"model.img_size: {img_size} is not a multiple of {arch}'s patch size {spec.patch_size}"
        )
    if spec.embed_dim % spec.heads:
        raise ConfigError(f"{arch}: embed_dim {spec.embed_dim} not divisible by {spec.heads} heads")
    return {
        "img_size": img_size,
        "patch_size": spec.patch_size,
        "embed_dim": spec.embed_dim,
        "depth": spec.layers,
        "num_heads": spec.heads,
        "mlp_ratio": spec.mlp_dim / spec.embed_dim,
        "qkv_bias": True,
        "class_token": True,
        "global_pool": "token",
        "num_classes": 0,
        "drop_path_rate": drop_path,
    }


def create_trunk(arch: str, *, img_size: int = 224, drop_path: float = 0.0) -> Trunk:
    """A freshly initialised ViT trunk (timm's init) that returns the class-token feature."""
    return Trunk(**trunk_kwargs(arch, img_size=img_size, drop_path=drop_path))


def parameter_count(arch: str, *, img_size: int = 224) -> int:
    """Trunk parameters, computed from the shape (no model is built)."""
    spec = architecture(arch)
    d, m, p = spec.embed_dim, spec.mlp_dim, spec.patch_size
    tokens = (img_size // p) ** 2 + 1
    block = (3 * d * d + 3 * d) + (d * d + d) + (d * m + m) + (m * d + d) + 4 * d
    return spec.layers * block + (3 * p * p * d + d) + tokens * d + d + 2 * d


def needs_sharding(arch: str) -> bool:
    """Whether `arch` is trained with FSDP rather than DDP by default (the 2B and 6.5B)."""
    return parameter_count(arch) >= SHARDING_PARAMS
