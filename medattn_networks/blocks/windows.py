"""Window geometry shared by every windowed transformer (Swin-Unet, nnFormer, SwinUNETR-MAM, FINE, MaxViT).

Tensors here are channels-last, ``(B, *grid, C)`` with ``len(grid) == spatial_dims``; windows are ``(B·nW, N, C)``
with ``N = prod(window)``. One code path serves 2D and 3D: every function loops over the grid's axes.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers import trunc_normal_

__all__ = [
    "MASK_VALUE",
    "as_tuple",
    "stage_grids",
    "fit_window",
    "pad_to_windows",
    "pad_to_patches",
    "crop_grid",
    "window_partition",
    "window_reverse",
    "grid_partition",
    "grid_reverse",
    "cyclic_shift",
    "shift_attention_mask",
    "relative_position_index",
    "relative_offsets",
    "add_relative_bias_table",
    "gather_relative_bias",
    "RelativePositionBias",
]

# the logit added between tokens of different shift regions (Swin's value; exp(-100) is 0 in float32)
MASK_VALUE = -100.0


def as_tuple(value: int | Sequence[int], n: int, name: str = "value") -> tuple[int, ...]:
    """``value`` repeated to ``n`` axes, or checked to have ``n`` entries."""
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ValueError(f"{name} needs {n} entries (one per spatial axis), got {list(value)}")
    return value


def stage_grids(image_size: Sequence[int], patch_size: Sequence[int], num_stages: int) -> list[tuple[int, ...]]:
    """Token grid of each stage of a hierarchical transformer: patches (rounded up, the embedding pads), then
    halved (rounded up, the merging pads) at every further stage."""
    grids = [tuple(-(-s // p) for s, p in zip(image_size, patch_size))]
    for _ in range(num_stages - 1):
        grids.append(tuple(-(-g // 2) for g in grids[-1]))
    return grids


def fit_window(
    grid: Sequence[int], window: Sequence[int], shift: Sequence[int], rule: str = "per_axis"
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Window and shift actually used on a token grid.

    A window larger than the grid only attends to padding, and shifting a single window does nothing, so:

    - ``"per_axis"`` (MONAI SwinUNETR, Swin v1 with padding): an axis whose grid is ≤ its window takes the grid
      size as window and no shift.
    - ``"min"`` (Swin-Unet, nnFormer): if the smallest grid axis is ≤ the window, every axis uses that size as
      window and no axis shifts.
    """
    grid, window, shift = tuple(grid), tuple(window), tuple(shift)
    if rule == "per_axis":
        win = tuple(g if g <= w else w for g, w in zip(grid, window))
        sh = tuple(0 if g <= w else s for g, w, s in zip(grid, window, shift))
        return win, sh
    if rule == "min":
        smallest = min(grid)
        if smallest <= min(window):
            return (smallest,) * len(grid), (0,) * len(grid)
        return window, shift
    raise ValueError(f"unknown window rule '{rule}' (per_axis, min)")


def _pad_end(x: torch.Tensor, sizes: Sequence[int], multiples: Sequence[int], channels_last: bool) -> tuple[torch.Tensor, tuple[int, ...]]:
    pads = tuple((-s) % m for s, m in zip(sizes, multiples))
    if any(pads):
        spec = [0, 0] if channels_last else []
        for p in reversed(pads):
            spec += [0, p]
        x = F.pad(x, spec)
    return x, pads


def pad_to_windows(x: torch.Tensor, window: Sequence[int]) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Zero-pad the end of each grid axis of ``x`` (B, *grid, C) to a multiple of ``window``; returns the padding."""
    return _pad_end(x, x.shape[1:-1], window, channels_last=True)


def pad_to_patches(x: torch.Tensor, patch: Sequence[int]) -> torch.Tensor:
    """Zero-pad the end of each spatial axis of an image ``x`` (B, C, *spatial) to a multiple of ``patch``."""
    return _pad_end(x, x.shape[2:], patch, channels_last=False)[0]


def crop_grid(x: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """Crop the grid axes of channels-last ``x`` (B, *grid, C) to ``grid`` (undoes :func:`pad_to_windows`)."""
    return x[(slice(None), *(slice(0, g) for g in grid), slice(None))]


def window_partition(x: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """(B, *grid, C) with grid divisible by ``window`` → (B·nW, N, C), windows in row-major order of the grid."""
    b, *grid, c = x.shape
    n = len(grid)
    shape = [b]
    for g, w in zip(grid, window):
        shape += [g // w, w]
    x = x.reshape(shape + [c])
    order = [0] + [1 + 2 * i for i in range(n)] + [2 + 2 * i for i in range(n)] + [1 + 2 * n]
    return x.permute(order).reshape(-1, math.prod(window), c)


def window_reverse(windows: torch.Tensor, window: Sequence[int], grid: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B·nW, N, C) → (B, *grid, C)."""
    n = len(grid)
    counts = [g // w for g, w in zip(grid, window)]
    c = windows.shape[-1]
    x = windows.reshape([-1, *counts, *window, c])
    order = [0]
    for i in range(n):
        order += [1 + i, 1 + n + i]
    order.append(1 + 2 * n)
    return x.permute(order).reshape([-1, *grid, c])


def grid_partition(x: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """MaxViT's grid attention windows: (B, *size, C) → (B·nW, prod(grid), C), where window k holds the tokens at
    ``k + j·(size/grid)`` (a ``grid``-sized lattice of stride size/grid over the whole map); windows in row-major order
    of their offset ``k``. Each size must be divisible by its grid."""
    b, *size, c = x.shape
    n = len(size)
    shape = [b]
    for s, g in zip(size, grid):
        if s % g:
            raise ValueError(f"size {list(size)} is not divisible by the grid {list(grid)}")
        shape += [g, s // g]
    order = [0] + [2 + 2 * i for i in range(n)] + [1 + 2 * i for i in range(n)] + [1 + 2 * n]
    return x.reshape(shape + [c]).permute(order).reshape(-1, math.prod(grid), c)


def grid_reverse(windows: torch.Tensor, grid: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`grid_partition`: (B·nW, prod(grid), C) → (B, *size, C)."""
    n = len(size)
    c = windows.shape[-1]
    x = windows.reshape([-1, *(s // g for s, g in zip(size, grid)), *grid, c])
    order = [0]
    for i in range(n):
        order += [1 + n + i, 1 + i]
    order.append(1 + 2 * n)
    return x.permute(order).reshape([-1, *size, c])


def cyclic_shift(x: torch.Tensor, shift: Sequence[int], reverse: bool = False) -> torch.Tensor:
    """Roll the grid axes of (B, *grid, C) by ``-shift`` (or ``+shift`` to undo)."""
    if not any(shift):
        return x
    sign = 1 if reverse else -1
    return torch.roll(x, shifts=[sign * s for s in shift], dims=list(range(1, 1 + len(shift))))


def shift_attention_mask(
    grid: Sequence[int], window: Sequence[int], shift: Sequence[int], device: torch.device | None = None
) -> torch.Tensor | None:
    """Swin's mask for shifted windows on a (padded) grid: (nW, N, N), 0 within a region, ``MASK_VALUE`` across.

    Returns None when nothing is shifted.
    """
    if not any(shift):
        return None
    region = torch.zeros((1, *grid, 1), device=device)
    bounds = [
        ((0, g - w), (g - w, g - s), (g - s, g)) if s else ((0, g),) for g, w, s in zip(grid, window, shift)
    ]
    for label, cells in enumerate(itertools.product(*bounds)):
        region[(slice(None), *(slice(lo, hi) for lo, hi in cells), slice(None))] = label
    ids = window_partition(region, window).squeeze(-1)  # (nW, N)
    mask = ids.unsqueeze(1) - ids.unsqueeze(2)
    return mask.masked_fill(mask != 0, MASK_VALUE).masked_fill(mask == 0, 0.0)


def relative_offsets(window: Sequence[int]) -> torch.Tensor:
    """(N, N, n) offsets between the tokens of one window, each axis shifted to start at 0."""
    coords = torch.stack(torch.meshgrid(*[torch.arange(w) for w in window], indexing="ij")).flatten(1)  # (n, N)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    return rel + torch.tensor([w - 1 for w in window])


def relative_position_index(window: Sequence[int], style: str = "swin") -> torch.Tensor:
    """(N, N) index into a relative-position table of ``prod(2w-1)`` entries.

    ``"swin"`` is the bijective mixed-radix index. ``"nnformer"`` is nnFormer's 3D index, whose axis multipliers
    ``3w-1`` and ``2w-1`` map distinct offsets to one entry; it is kept to match
    nnFormer's released numerics (its multipliers use the second window axis).
    """
    rel = relative_offsets(window)
    n = len(window)
    if style == "swin":
        multipliers = [math.prod(2 * w - 1 for w in window[i + 1 :]) for i in range(n)]
    elif style == "nnformer":
        if n != 3:
            raise ValueError("the nnformer relative index is defined for 3D windows")
        w = window[1]
        multipliers = [3 * w - 1, 2 * w - 1, 1]
    else:
        raise ValueError(f"unknown relative index style '{style}' (swin, nnformer)")
    return (rel * torch.tensor(multipliers)).sum(-1)


def add_relative_bias_table(module: nn.Module, window: Sequence[int], num_heads: int, index: str = "swin") -> None:
    """Register Swin's ``relative_position_bias_table`` parameter and ``relative_position_index`` buffer on ``module``.

    Kept on the attention module itself (not a child) so the keys are exactly Swin's and MONAI's.
    """
    module.relative_position_bias_table = nn.Parameter(torch.zeros(math.prod(2 * w - 1 for w in window), num_heads))
    module.register_buffer("relative_position_index", relative_position_index(window, index), persistent=True)
    trunc_normal_(module.relative_position_bias_table, std=0.02)


def gather_relative_bias(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(heads, N, N) bias from a ``(entries, heads)`` table and an (N, N) index."""
    n = index.shape[0]
    return table[index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)


class RelativePositionBias(nn.Module):
    """Learned relative-position bias of a window as a module of its own: ``forward()`` gives (heads, N, N).

    Args:
        window: window size per axis (its length is the number of spatial dims).
        num_heads: one bias per head.
        index: ``"swin"`` or ``"nnformer"`` (see :func:`relative_position_index`).
    """

    def __init__(self, window: Sequence[int], num_heads: int, index: str = "swin") -> None:
        super().__init__()
        add_relative_bias_table(self, tuple(window), num_heads, index)

    def forward(self) -> torch.Tensor:
        return gather_relative_bias(self.relative_position_bias_table, self.relative_position_index)
