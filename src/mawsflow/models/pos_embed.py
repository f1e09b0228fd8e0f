"""Fixed 2-D sine-cosine position embeddings (MAE's encoder and decoder).

Half of the channels encode the column, half the row; each half is sin and cos of the position
at geometrically spaced frequencies (as in "Attention is all you need", per axis). The token
order is row-major, matching how a patch embedding flattens the grid.
"""

from __future__ import annotations

import torch


def _sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """[len(positions), dim] embedding of 1-D positions; `dim` must be even."""
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_2d(embed_dim: int, grid_size: int | tuple[int, int], *, cls_token: bool) -> torch.Tensor:
    """[1, (1 +) H·W, embed_dim] float32 embedding for an H×W patch grid.

    With `cls_token` the first row is zeros: the class token carries no position.
    """
    if embed_dim % 4:
        raise ValueError(
            f"sin-cos position embedding needs embed_dim divisible by 4, got {embed_dim}"
        )
    rows, cols = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    row_pos = torch.arange(rows).repeat_interleave(cols)
    col_pos = torch.arange(cols).repeat(rows)
    embed = torch.cat(
        [_sincos_1d(embed_dim // 2, col_pos), _sincos_1d(embed_dim // 2, row_pos)], dim=1
    )
    if cls_token:
        embed = torch.cat([torch.zeros(1, embed_dim, dtype=embed.dtype), embed], dim=0)
    return embed.to(torch.float32).unsqueeze(0)
