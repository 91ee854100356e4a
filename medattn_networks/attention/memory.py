"""Memory attention (MAM, seed 000, papers.md §000).

MAM is window self-attention whose query is an accumulated memory: ``M_t = M_{t-1} + Q_t`` (``M_0 = 0``, the
unscaled query), ``attention = softmax(M_t·Kᵀ·scale + B + mask)·V``. Keys, values, bias, masks and every
parameter are SAM's, so a SAM checkpoint loads unchanged; the memory is one tensor handed from block to block
in window layout (B·nW, heads, N, head_dim), never rolled with the shift (the released behaviour).

Transmission: ISTS resets the memory at each stage start; STS carries it through all layers and, in
hierarchical nets, crosses a resolution change through a :class:`MemoryMerge` adapter (its only parameters).

FINE (seed 003, papers.md §003) keeps memory as tokens instead: learnable window memory tokens that every window
attends with (:class:`MemoryTokenWindowAttention`), a full attention over all window tokens of a crop and the
crop's volume tokens (:class:`TokenAttention`), and a per-stage in-plane grid of volume tokens of which the crop
position selects four (:func:`volume_token_indices`, :func:`gather_tokens`, :func:`scatter_add_tokens`).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Pool

from medattn_networks.attention.registry import register_attention
from medattn_networks.blocks.transformer import WindowAttention, channels_first, channels_last
from medattn_networks.blocks.windows import crop_grid, pad_to_windows, window_partition, window_reverse

__all__ = [
    "MEMORY_MODES",
    "MemoryWindowAttention",
    "MemoryMerge",
    "memory_to_grid",
    "grid_to_memory",
    "attention_for",
    "MemoryTokenWindowAttention",
    "TokenAttention",
    "volume_token_cells",
    "volume_token_indices",
    "gather_tokens",
    "scatter_add_tokens",
]

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


# ------------------------------------------------------------------------------------------ FINE (seed 003)
@register_attention("memory_token")
class MemoryTokenWindowAttention(WindowAttention):
    """:class:`WindowAttention` whose windows also hold memory tokens (FINE's window memory tokens).

    ``forward_tokens(x, mask, memory)`` prepends ``memory`` (B·nW, G, C) to each window's voxel tokens and attends
    over all ``G + N``; the relative-position bias and the shift mask act on the voxel block only (memory rows and
    columns get no bias). Returns ``(voxel output, memory output)``. Without memory it is plain window attention.
    Same arguments and parameters as :class:`WindowAttention`.
    """

    def forward_tokens(
        self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, memory: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        if memory is None:
            return super().forward_tokens(x, mask)
        bw, n, _ = x.shape
        g = memory.shape[1]
        tokens = torch.cat([memory.to(x.dtype), x], dim=1)
        qkv = self.qkv(tokens).reshape(bw, g + n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        voxel_mask = self._attention_mask(mask, bw, q.dtype)
        attn_mask = None if voxel_mask is None else F.pad(voxel_mask, (g, 0, g, 0))
        out = self.attend_with_mask(q, k, v, attn_mask)
        return out[:, g:], out[:, :g]


class TokenAttention(WindowAttention):
    """Full multi-head self-attention over a token sequence (B, N, C): ``qkv`` → softmax → ``proj``, no norm and
    no residual (FINE's window-token and volume-token attention). ``key_mask`` (B, N), True = may be attended,
    hides keys per sample. SDPA or the plain path, as :class:`WindowAttention`.

    Args:
        channels: token width.
        num_heads: attention heads.
        qkv_bias: bias of the qkv projection.
        attn_drop: dropout on the attention weights.
        proj_drop: dropout after the projection.
        fused: use scaled_dot_product_attention.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        fused: bool = True,
    ) -> None:
        super().__init__(1, channels, num_heads, 1, qkv_bias, attn_drop, proj_drop, relative_bias=None, fused=fused)

    def forward(self, x: torch.Tensor, key_mask: Optional[torch.Tensor] = None) -> torch.Tensor:  # type: ignore[override]
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn_mask = None
        if key_mask is not None:
            attn_mask = torch.zeros((b, 1, 1, n), dtype=q.dtype, device=q.device)
            attn_mask = attn_mask.masked_fill(~key_mask.bool().reshape(b, 1, 1, n), float("-inf"))
        return self.attend_with_mask(q, k, v, attn_mask)


def volume_token_cells(position: torch.Tensor, grid: Sequence[int], cell: Sequence[int]) -> torch.Tensor:
    """Cell of the volume-token grid under each crop: ``floor(p / cell + (G − 1) / 2)`` per axis, clamped to the grid.

    ``position`` (B, d): crop centre minus volume centre (voxels) on the grid's axes; ``grid`` the token grid G,
    ``cell`` the voxels one token covers (FINE: the crop). The grid is centred on the volume, so p = 0 falls in the
    middle cell. Returns (B, d) long.
    """
    pos = torch.as_tensor(position, dtype=torch.float64)
    g = torch.tensor(list(grid), dtype=torch.float64, device=pos.device)
    c = torch.tensor(list(cell), dtype=torch.float64, device=pos.device)
    k = torch.floor(pos / c + (g - 1) / 2)
    return torch.minimum(torch.clamp(k, min=0), g - 1).long()


def volume_token_indices(position: torch.Tensor, grid: Sequence[int], cell: Sequence[int]) -> torch.Tensor:
    """FINE's 4 in-plane volume tokens of each crop, as flat indices into a (G1·G2) token list (B, 4).

    For the cell (k1, k2) of :func:`volume_token_cells`: (k1, k2), (k1', k2), (k1, k2'), (k1', k2') with
    ``k' = k + 1``, or ``k − 1`` in the last row/column; flat index ``k1·G2 + k2``. Needs G ≥ 2 on both axes.
    """
    grid = tuple(int(g) for g in grid)
    if len(grid) != 2 or min(grid) < 2:
        raise ValueError(f"the volume-token grid needs two in-plane axes of at least 2 tokens, got {list(grid)}")
    k = volume_token_cells(position, grid, cell)
    g = torch.tensor(grid, device=k.device)
    n = torch.where(k == g - 1, k - 1, k + 1)
    k1, k2, n1, n2 = k[:, 0], k[:, 1], n[:, 0], n[:, 1]
    return torch.stack([k1 * grid[1] + k2, n1 * grid[1] + k2, k1 * grid[1] + n2, n1 * grid[1] + n2], dim=1)


def gather_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``tokens`` (B, T, C) at ``index`` (B, K) → (B, K, C), per sample."""
    return torch.gather(tokens, 1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def scatter_add_tokens(tokens: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``tokens`` (B, T, C) with ``values`` (B, K, C) added at ``index`` (B, K), out of place."""
    return tokens.scatter_add(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]), values.to(tokens.dtype))
