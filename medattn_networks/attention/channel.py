"""Channel gates: squeeze-and-excitation style recalibration of feature channels."""

from __future__ import annotations

import torch
import torch.nn as nn

from medattn_networks.attention.registry import register_attention

__all__ = ["ChannelSE", "global_pool", "expand_to"]

_POOLINGS = ("avg", "max", "avgmax")


def expand_to(weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Append singleton axes to ``weights`` until it broadcasts against ``x`` (TorchScript-friendly)."""
    while weights.dim() < x.dim():
        weights = weights.unsqueeze(-1)
    return weights


def global_pool(x: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool every spatial axis of ``x`` [B, C, *S] to [B, C]; ``mode`` is avg or max."""
    flat = x.flatten(2)
    return flat.mean(-1) if mode == "avg" else flat.amax(-1)


@register_attention("cse")
class ChannelSE(nn.Module):
    """Channel squeeze-and-excitation (cSE; AnatomyNet's "SE" block).

    Global pooling → Linear C→C/r → ReLU → Linear C/r→C → sigmoid → rescale the channels. With ``pooling="avgmax"``
    the average- and max-pooled descriptors pass the same MLP and their logits are summed before the sigmoid.

    Args:
        spatial_dims: 2 or 3 (the module is dimension-agnostic).
        channels: feature channels C.
        reduction: r; the hidden layer has ``max(C // r, 1)`` units.
        pooling: ``"avg"``, ``"max"`` or ``"avgmax"``.
    """

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 8, pooling: str = "avg") -> None:
        super().__init__()
        if pooling not in _POOLINGS:
            raise ValueError(f"pooling must be one of {_POOLINGS}, got '{pooling}'")
        hidden = max(channels // reduction, 1)
        self.pooling = pooling
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pooling == "avgmax":
            logits = self.fc(global_pool(x, "avg")) + self.fc(global_pool(x, "max"))
        else:
            logits = self.fc(global_pool(x, self.pooling))
        return x * expand_to(torch.sigmoid(logits), x)
