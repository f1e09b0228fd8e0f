"""Optimizers from a recipe's `optimizer` section, with the usual ViT parameter groups.

Weight decay applies to weight matrices only: never to norms, biases or the parameters that
models list in `no_weight_decay()`: position embeddings, and the tokens the model's reference
exempts (timm's class token; MAE pre-pretraining lists neither its class nor its mask token, so
both are decayed, as in fb/mae). A `lr_scale` hook lets a step scale the rate per parameter
(layer-wise decay for finetuning); the trainer multiplies each group's `lr_scale` into the
scheduled rate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from mawsflow.errors import ConfigError
from mawsflow.recipes import OptimizerConfig

# Prefixes that wrappers add to parameter names; hooks and decay rules see the model's names.
_WRAPPER_PREFIXES = ("_checkpoint_wrapped_module.", "_orig_mod.", "module.")


def clean_name(name: str) -> str:
    """`blocks.0._checkpoint_wrapped_module.attn.qkv.weight` → `blocks.0.attn.qkv.weight`."""
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Full names of the parameters that submodules exclude from decay via `no_weight_decay()`."""
    names: set[str] = set()
    for prefix, module in model.named_modules():
        hook = getattr(module, "no_weight_decay", None)
        if callable(hook):
            base = clean_name(f"{prefix}.") if prefix else ""
            names.update(base + n for n in hook())
    return names


def parameter_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    lr_scale: Callable[[str], float] | None = None,
) -> list[dict]:
    """Trainable parameters grouped by (decayed or not, lr scale)."""
    excluded = no_weight_decay_names(model)
    groups: dict[tuple[bool, float], dict] = {}
    for raw_name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        name = clean_name(raw_name)
        decay = param.ndim > 1 and name not in excluded
        scale = lr_scale(name) if lr_scale else 1.0
        group = groups.setdefault(
            (decay, scale),
            {"params": [], "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale},
        )
        group["params"].append(param)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return list(groups.values())


def build_optimizer(
    groups: Iterable[dict], config: OptimizerConfig, *, device: torch.device
) -> torch.optim.Optimizer:
    """AdamW (fused on CUDA) or SGD with momentum, as the recipe names."""
    groups = list(groups)
    if config.name == "adamw":
        if config.betas is None:
            raise ConfigError("optimizer.betas must be set for adamw")
        return torch.optim.AdamW(
            groups,
            lr=config.lr,
            betas=config.betas,
            weight_decay=config.weight_decay,
            fused=device.type == "cuda",
        )
    if config.name == "sgd":
        return torch.optim.SGD(
            groups,
            lr=config.lr,
            momentum=config.momentum or 0.0,
            weight_decay=config.weight_decay,
        )
    raise ConfigError(f"optimizer.name: unknown optimizer {config.name!r}; choose adamw or sgd")


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
