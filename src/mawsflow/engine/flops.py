"""Model FLOPs per training sample, for model-FLOP utilisation (MFU).

Counted the usual way (PaLM, Appendix B): every multiply-add of a matrix product is 2 FLOPs,
a training step is forward + backward = 3 × forward, and activation recomputation is not
counted (it is overhead, not model work). Norms, activations and softmax are left out as
negligible next to the matrix products.
"""

from __future__ import annotations

import itertools
import os

import torch

from mawsflow.recipes import Architecture


def transformer_forward_flops(tokens: int, depth: int, dim: int, mlp_dim: int) -> float:
    """One sample through `depth` pre-norm blocks over `tokens` tokens."""
    projections = 2 * tokens * (4 * dim * dim)  # q, k, v and the output projection
    mlp = 2 * tokens * (2 * dim * mlp_dim)
    attention = 2 * (2 * tokens * tokens * dim)  # q·kᵀ and attention·v
    return float(depth * (projections + mlp + attention))


def patch_embed_forward_flops(num_patches: int, patch_size: int, dim: int, chans: int = 3) -> float:
    return float(2 * num_patches * patch_size * patch_size * chans * dim)


def linear_forward_flops(tokens: int, d_in: int, d_out: int) -> float:
    return float(2 * tokens * d_in * d_out)


def training_flops(forward_flops: float) -> float:
    """Forward plus backward (twice the forward: gradients of inputs and of weights)."""
    return 3.0 * forward_flops


# Dense bf16 tensor-core peaks (vendor datasheets, without sparsity), matched on the device name.
_PEAK_BF16_FLOPS = (
    ("H200", 989e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("A10G", 70e12),
)


def peak_flops(device: torch.device) -> float | None:
    """The accelerator's dense bf16 peak; MAWSFLOW_PEAK_TFLOPS overrides it. None on the CPU
    or an unknown GPU, where MFU is not reported."""
    override = os.environ.get("MAWSFLOW_PEAK_TFLOPS")
    if override:
        return float(override) * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peak in _PEAK_BF16_FLOPS:
        if key in name:
            return peak
    return None


def vit_training_flops(
    spec: Architecture, *, img_size: int, head_dims: tuple[int, ...] = (), extra_tokens: int = 0
) -> float:
    """A classifier ViT (class token + all patches, plus `extra_tokens` such as VPT prompts),
    with an optional MLP head whose layer widths are `head_dims` (e.g. (dim, num_classes) for
    WSP's Linear–Tanh–Linear)."""
    dim = spec.embed_dim
    patches = (img_size // spec.patch_size) ** 2
    forward = patch_embed_forward_flops(patches, spec.patch_size, dim)
    forward += transformer_forward_flops(patches + 1 + extra_tokens, spec.layers, dim, spec.mlp_dim)
    widths = (dim, *head_dims)
    forward += sum(linear_forward_flops(1, a, b) for a, b in itertools.pairwise(widths))
    return training_flops(forward)


def mae_training_flops(
    spec: Architecture,
    *,
    img_size: int,
    mask_ratio: float,
    decoder_depth: int,
    decoder_dim: int,
) -> float:
    """MAE: the encoder runs on the visible patches only, the decoder on all of them."""
    dim, patch_size = spec.embed_dim, spec.patch_size
    patches = (img_size // patch_size) ** 2
    visible = int(patches * (1 - mask_ratio))
    forward = patch_embed_forward_flops(patches, patch_size, dim)
    forward += transformer_forward_flops(visible + 1, spec.layers, dim, spec.mlp_dim)
    forward += linear_forward_flops(visible + 1, dim, decoder_dim)
    forward += transformer_forward_flops(patches + 1, decoder_depth, decoder_dim, 4 * decoder_dim)
    forward += linear_forward_flops(patches, decoder_dim, patch_size * patch_size * 3)
    return training_flops(forward)
