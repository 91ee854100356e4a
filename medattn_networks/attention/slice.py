"""Slice attention and the Progressive Attention Module (Zhang et al., Medical Physics 2022).

The slice axis is the first spatial axis (D of [B, C, D, H, W]; H of a 2D map [B, C, H, W]). Slice attention
holds one small MLP per channel whose width is the slice count, so the count is fixed when the module is built.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from medattn_networks.attention.channel import ChannelSE, expand_to
from medattn_networks.attention.registry import register_attention

__all__ = ["SliceAttention", "ProgressiveAttention", "SliceChannelAttention", "ChannelSliceAttention"]


def slice_descriptor(x: torch.Tensor) -> torch.Tensor:
    """Mean of every slice: [B, C, D, *rest] → [B, C, D]."""
    return x.flatten(3).mean(-1) if x.dim() > 3 else x


@register_attention("sa")
class SliceAttention(nn.Module):
    """Slice attention: per channel c, the vector of slice means passes its own MLP D→D/r→D (ReLU, sigmoid).

    The C MLPs are stored as batched weights (``[C, D, D/r]`` ...), which is the same parameter set as C
    separate ``nn.Linear`` pairs and runs as two batched matrix products.

    Args:
        spatial_dims: 2 or 3.
        channels: feature channels C.
        depth: slice count D along the first spatial axis (inputs must have exactly D slices).
        reduction: r_D; hidden units ``max(D // r_D, 1)``.
    """

    def __init__(self, spatial_dims: int, channels: int, depth: int, reduction: int = 16) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth (slice count) must be positive, got {depth}")
        hidden = max(depth // reduction, 1)
        self.depth = depth
        self.weight1 = nn.Parameter(torch.empty(channels, depth, hidden))
        self.bias1 = nn.Parameter(torch.empty(channels, hidden))
        self.weight2 = nn.Parameter(torch.empty(channels, hidden, depth))
        self.bias2 = nn.Parameter(torch.empty(channels, depth))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the same uniform bounds nn.Linear uses, per channel
        for weight, bias, fan_in in ((self.weight1, self.bias1, self.depth), (self.weight2, self.bias2, self.weight2.shape[1])):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(weight, -bound, bound)
            nn.init.uniform_(bias, -bound, bound)

    def slice_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel slice weights s in (0, 1), shape [B, C, D]."""
        if x.shape[2] != self.depth:
            raise ValueError(
                f"slice attention was built for {self.depth} slices on the first spatial axis but got {x.shape[2]} "
                "; pad or crop inputs to the network's fixed size"
            )
        z = slice_descriptor(x)  # [B, C, D]
        hidden = torch.relu(torch.einsum("bcd,cdh->bch", z, self.weight1) + self.bias1)
        return torch.sigmoid(torch.einsum("bch,chd->bcd", hidden, self.weight2) + self.bias2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * expand_to(self.slice_weights(x), x)


@register_attention("pam")
class ProgressiveAttention(nn.Module):
    """Progressive Attention Module: slice attention → key-slice selection → channel attention.

    Key slices of channel c are those whose softmax-normalised slice weight is at least 1/D (above a uniform
    share). Channel attention pools each channel over its key slices only (the selection itself is not
    differentiated), then Linear C→C/r_C → ReLU → Linear → sigmoid rescales every slice. All of it is per sample.

    Args:
        spatial_dims: 2 or 3.
        channels: feature channels C.
        depth: slice count D along the first spatial axis.
        slice_reduction: r_D of the slice attention.
        channel_reduction: r_C of the channel attention; hidden units ``max(C // r_C, 1)``.
        pooling: how channel attention pools the key slices: ``"avg"``, ``"max"`` or ``"avgmax"`` (shared MLP,
            summed logits, as in :class:`ChannelSE`).
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        depth: int,
        slice_reduction: int = 16,
        channel_reduction: int = 8,
        pooling: str = "avg",
    ) -> None:
        super().__init__()
        if pooling not in ("avg", "max", "avgmax"):
            raise ValueError(f"pooling must be one of ('avg', 'max', 'avgmax'), got '{pooling}'")
        self.pooling = pooling
        self.slice_attention = SliceAttention(spatial_dims, channels, depth, slice_reduction)
        hidden = max(channels // channel_reduction, 1)
        self.channel_fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    @staticmethod
    def key_slices(slice_weights: torch.Tensor) -> torch.Tensor:
        """Boolean mask [B, C, D] of the slices whose softmax weight reaches 1/D."""
        depth = slice_weights.shape[-1]
        return torch.softmax(slice_weights.detach(), dim=-1) >= 1.0 / depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.slice_attention.slice_weights(x)
        x_sa = x * expand_to(s, x)
        mask = self.key_slices(s)
        # the arg-max slice always reaches 1/D, so every channel keeps at least one slice
        logits = torch.zeros_like(s[..., 0])
        if self.pooling in ("avg", "avgmax"):
            weights = mask.to(x.dtype)
            logits = logits + self.channel_fc((slice_descriptor(x_sa) * weights).sum(-1) / weights.sum(-1))
        if self.pooling in ("max", "avgmax"):
            slice_max = x_sa.flatten(3).amax(-1) if x.dim() > 3 else x_sa
            logits = logits + self.channel_fc(slice_max.masked_fill(~mask, float("-inf")).amax(-1))
        return x_sa * expand_to(torch.sigmoid(logits), x)


@register_attention("sca")
class SliceChannelAttention(nn.Module):
    """scA: slice attention followed by channel SE (Args as :class:`ProgressiveAttention`)."""

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        depth: int,
        slice_reduction: int = 16,
        channel_reduction: int = 8,
        pooling: str = "avg",
    ) -> None:
        super().__init__()
        self.slice_attention = SliceAttention(spatial_dims, channels, depth, slice_reduction)
        self.channel_attention = ChannelSE(spatial_dims, channels, channel_reduction, pooling)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_attention(self.slice_attention(x))


@register_attention("csa")
class ChannelSliceAttention(SliceChannelAttention):
    """csA: channel SE followed by slice attention (Args as :class:`ProgressiveAttention`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.slice_attention(self.channel_attention(x))
