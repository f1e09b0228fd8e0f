"""Masked autoencoder (He et al. 2022) around a timm ViT trunk, as MAWS pre-pretrains it.

Table 10: 75% of the patches of each image are masked (a per-sample random shuffle
by sorting noise); the encoder sees only the visible patches plus the class token; a light
decoder (8 blocks, 512 wide, 16 heads) with fixed 2-D sin-cos position embeddings reconstructs
the pixels; the loss is the mean squared error on the masked patches against per-patch
normalised pixels. The encoder is an ordinary trunk from `vit.create_trunk`, so after
pre-pretraining it is saved under timm's keys and WSP starts from it unchanged.

The paper makes "no changes from He et al." (§A), so the whole model starts as fb/mae's
`initialize_weights` starts it, not as timm would: Xavier-uniform linear layers with zero
biases, the patch embedding initialised like a linear layer (Xavier on its flattened weight),
normal(0.02) class and mask tokens, LayerNorms at one and zero. fb/mae's optimiser also decays
the class and mask tokens (only 1-D tensors are exempt), so they are decayed here too.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.models.vision_transformer import Block
from torch import nn

from mawsflow.errors import ConfigError
from mawsflow.models.pos_embed import sincos_2d
from mawsflow.models.vit import Trunk


class MaskedAutoencoder(nn.Module):
    def __init__(
        self,
        encoder: Trunk,
        *,
        decoder_depth: int = 8,
        decoder_dim: int = 512,
        decoder_heads: int = 16,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 < mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        if not isinstance(encoder, Trunk):
            # A plain timm ViT would keep its class token out of weight decay, unlike fb/mae.
            raise TypeError(
                f"the MAE encoder must come from mawsflow.models.vit.create_trunk, got "
                f"{type(encoder).__name__}"
            )
        if decoder_dim % decoder_heads:
            raise ConfigError(
                f"decoder.embed_dim {decoder_dim} is not divisible by decoder.num_heads "
                f"{decoder_heads}"
            )
        self.encoder = encoder
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.patch_size = encoder.patch_embed.patch_size[0]
        grid = encoder.patch_embed.grid_size
        self.num_patches = grid[0] * grid[1]
        self.num_visible = int(self.num_patches * (1 - mask_ratio))

        # MAE keeps the encoder's position embedding fixed at sin-cos; it is still the trunk's
        # `pos_embed` parameter, so the saved encoder has timm's layout and a finetune can
        # train it.
        with torch.no_grad():
            encoder.pos_embed.copy_(sincos_2d(encoder.embed_dim, grid, cls_token=True))
        encoder.pos_embed.requires_grad_(False)

        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.decoder_embed = nn.Linear(encoder.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer(
            "decoder_pos_embed", sincos_2d(decoder_dim, grid, cls_token=True), persistent=False
        )
        self.decoder_blocks = nn.Sequential(
            *[
                Block(
                    decoder_dim, decoder_heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=norm_layer
                )
                for _ in range(decoder_depth)
            ]
        )
        self.decoder_norm = norm_layer(decoder_dim)
        in_chans = encoder.patch_embed.proj.in_channels
        self.decoder_pred = nn.Linear(decoder_dim, self.patch_size**2 * in_chans)
        encoder.decay_class_token = True
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """fb/mae's initialisation of the encoder and the decoder (see the module docstring).
        The position embeddings are the fixed sin-cos ones set above."""
        with torch.no_grad():
            # The patch embedding is a linear map of each flattened patch; the view shares
            # the convolution's storage.
            weight = self.encoder.patch_embed.proj.weight
            nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
            nn.init.normal_(self.encoder.cls_token, std=0.02)
            nn.init.normal_(self.mask_token, std=0.02)
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.xavier_uniform_(module.weight)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
                elif isinstance(module, nn.LayerNorm):
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] → [B, num_patches, p·p·C], patches row-major, pixels (p, p, C)."""
        b, c, h, w = images.shape
        p = self.patch_size
        x = images.reshape(b, c, h // p, p, w // p, p)
        return torch.einsum("bchpwq->bhwpqc", x).reshape(b, (h // p) * (w // p), p * p * c)

    def random_masking(
        self, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keep a random `1 − mask_ratio` of each sample's tokens.

        Returns the visible tokens, the binary mask over all patches (1 = masked) and the
        permutation that undoes the shuffle.
        """
        b, n, d = tokens.shape
        noise = torch.rand(b, n, device=tokens.device)
        shuffle = torch.argsort(noise, dim=1)
        restore = torch.argsort(shuffle, dim=1)
        keep = shuffle[:, : self.num_visible]
        visible = torch.gather(tokens, 1, keep.unsqueeze(-1).expand(-1, -1, d))
        mask = torch.ones(b, n, device=tokens.device)
        mask[:, : self.num_visible] = 0
        mask = torch.gather(mask, 1, restore)
        return visible, mask, restore

    def forward_encoder(
        self, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        enc = self.encoder
        x = enc.patch_embed(images) + enc.pos_embed[:, 1:, :]
        x, mask, restore = self.random_masking(x)
        cls = (enc.cls_token + enc.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        x = enc.blocks(x)
        return enc.norm(x), mask, restore

    def forward_decoder(self, latent: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
        x = self.decoder_embed(latent)
        b, _, d = x.shape
        masked = self.mask_token.expand(b, self.num_patches - self.num_visible, -1)
        patches = torch.cat([x[:, 1:, :], masked], dim=1)
        patches = torch.gather(patches, 1, restore.unsqueeze(-1).expand(-1, -1, d))
        x = torch.cat([x[:, :1, :], patches], dim=1) + self.decoder_pos_embed
        x = self.decoder_norm(self.decoder_blocks(x))
        return self.decoder_pred(x[:, 1:, :])

    def reconstruction_loss(
        self, images: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        target = self.patchify(images)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        per_patch = (pred.float() - target.float()).pow(2).mean(dim=-1)
        # Every sample masks the same number of patches, so the normaliser is a constant and
        # needs no device-to-host read.
        return (per_patch * mask).sum() / (mask.shape[0] * (self.num_patches - self.num_visible))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss, per-patch predictions [B, N, p·p·C] and mask [B, N] for a normalised batch."""
        latent, mask, restore = self.forward_encoder(images)
        pred = self.forward_decoder(latent, restore)
        return self.reconstruction_loss(images, pred, mask), pred, mask

    def block_stacks(self) -> list[nn.Sequential]:
        """The stacks of repeated blocks: their members are the units of FSDP sharding,
        activation checkpointing and compilation."""
        return [self.encoder.blocks, self.decoder_blocks]
