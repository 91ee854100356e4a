"""Memory attention (MAM, seed 000, papers.md §000).

MAM is window self-attention whose query is an accumulated memory: ``M_t = M_{t-1} + Q_t`` (``M_0 = 0``, the
unscaled query), ``attention = softmax(M_t·Kᵀ·scale + B + mask)·V``. Keys, values, bias, masks and every
parameter are SAM's, so a SAM checkpoint loads unchanged; the memory is one tensor handed from block to block
in window layout (B·nW, heads, N, head_dim), never rolled with the shift (the released behaviour).

Transmission: ISTS resets the memory at each stage start; STS carries it through all layers and, in
hierarchical nets, crosses a resolution change through a :class:`MemoryMerge` adapter (its only parameters).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv, Pool

from medattn_networks.attention.registry import register_attention
from medattn_networks.blocks.transformer import WindowAttention, channels_first, channels_last
from medattn_networks.blocks.windows import crop_grid, pad_to_windows, window_partition, window_reverse

__all__ = ["MEMORY_MODES", "MemoryWindowAttention", "MemoryMerge", "memory_to_grid", "grid_to_memory", "attention_for"]

MEMORY_MODES = ("none", "ists", "sts")

register_attention("window")(WindowAttention)


@register_attention("mam")
class MemoryWindowAttention(WindowAttention):
    """:class:`WindowAttention` with MAM's accumulated query; same arguments, parameters and keys.

    ``forward_tokens(x, mask, memory)`` uses ``M = memory + q`` (or ``q`` when memory is None) as the query and
    returns ``M`` as the next block's memory. Called on its own (no memory) it equals SAM.
    """

    def accumulate_query(self, q: torch.Tensor, memory: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if memory is not None:
            if memory.shape != q.shape:
                raise ValueError(f"memory of shape {tuple(memory.shape)} does not fit the query {tuple(q.shape)}")
            q = memory + q
        return q, q


def attention_for(memory: str) -> str:
    """Registry name of the window attention for a memory mode (``"none"`` → SAM)."""
    if memory not in MEMORY_MODES:
        raise ValueError(f"unknown memory '{memory}'; use one of {', '.join(MEMORY_MODES)}")
    return "window" if memory == "none" else "mam"


def memory_to_grid(
    memory: torch.Tensor, window: Sequence[int], padded_grid: Sequence[int], grid: Sequence[int]
) -> torch.Tensor:
    """Window-layout memory (B·nW, heads, N, hd) → (B, *grid, heads·hd), padding removed."""
    bw, heads, n, hd = memory.shape
    tokens = window_reverse(memory.transpose(1, 2).reshape(bw, n, heads * hd), window, padded_grid)
    return crop_grid(tokens, grid)


def grid_to_memory(tokens: torch.Tensor, window: Sequence[int], num_heads: int) -> torch.Tensor:
    """(B, *grid, C) → window-layout memory (B·nW, heads, N, C/heads) of an unshifted block."""
    padded, _ = pad_to_windows(tokens, window)
    windows = window_partition(padded, window)
    bw, n, c = windows.shape
    return windows.reshape(bw, n, num_heads, c // num_heads).transpose(1, 2)


class MemoryMerge(nn.Module):
    """STS adapter taking a stage's memory to the next, half-resolution stage (C → out_dim).

    ``"pool"``: average pool 2 then a 1×1 conv (the paper's encoder adapter); ``"conv"``: LayerNorm then a conv of
    kernel 2, stride 2. Works on (B, *grid, C); odd grids are padded.

    Args:
        spatial_dims: 2 or 3.
        dim: memory width of the finer stage.
        out_dim: memory width of the coarser stage (default 2·dim).
        mode: ``"pool"`` or ``"conv"``.
    """

    def __init__(self, spatial_dims: int, dim: int, out_dim: Optional[int] = None, mode: str = "pool") -> None:
        super().__init__()
        out_dim = out_dim or 2 * dim
        conv = Conv[Conv.CONV, spatial_dims]
        self.mode = mode
        if mode == "pool":
            self.pool = Pool[Pool.AVG, spatial_dims](kernel_size=2, stride=2)
            self.proj = conv(dim, out_dim, kernel_size=1)
        elif mode == "conv":
            self.norm = nn.LayerNorm(dim)
            self.proj = conv(dim, out_dim, kernel_size=2, stride=2)
        else:
            raise ValueError(f"unknown memory merge '{mode}' (pool, conv)")

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens, _ = pad_to_windows(tokens, [2] * (tokens.dim() - 2))
        if self.mode == "pool":
            return channels_last(self.proj(self.pool(channels_first(tokens))))
        return channels_last(self.proj(channels_first(self.norm(tokens))))
