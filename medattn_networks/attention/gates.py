"""Spatial gates: Project & Excite and the Attention U-Net gate."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Norm

from medattn_networks.attention.registry import register_attention

__all__ = ["ProjectExcite", "AttentionGate"]


@register_attention("pe")
class ProjectExcite(nn.Module):
    """Project & Excite (Rickmann et al. 2019).

    Each spatial axis gets its own average projection (the other axes pooled away); the broadcast mean of the
    projections passes 1×1 conv C→C/r → PReLU (one slope per channel) → 1×1 conv → sigmoid and rescales the input voxel-wise.

    Args:
        spatial_dims: 2 or 3.
        channels: feature channels C.
        reduction: r, hidden channels ``max(C // r, 1)`` (the paper uses 2).
    """

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 2) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        hidden = max(channels // reduction, 1)
        self.excite = nn.Sequential(conv(channels, hidden, 1), nn.PReLU(hidden), conv(hidden, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.zeros_like(x)
        num_axes = x.dim() - 2
        for keep in range(2, x.dim()):
            pooled_axes: list[int] = []
            for axis in range(2, x.dim()):
                if axis != keep:
                    pooled_axes.append(axis)
            z = z + x.mean(dim=pooled_axes, keepdim=True)
        return x * self.excite(z / num_axes)


@register_attention("ag")
class AttentionGate(nn.Module):
    """Additive attention gate of Attention U-Net (Oktay et al. 2018), called as ``gate(skip, coarse)``.

    θ (kernel 2, stride 2, no bias) maps the skip to ``inter_channels`` at the coarse resolution; φ (1×1) maps the
    gating signal there too; α = sigmoid(ψ(ReLU(θx + φg))) is upsampled to the skip's size and the gated skip
    passes a 1×1 conv and an affine instance norm.

    Args:
        spatial_dims: 2 or 3.
        channels: skip channels C.
        gate_channels: channels of the coarse gating signal (default C).
        inter_channels: channels of the joint space (default C // 2).
    """

    def __init__(
        self, spatial_dims: int, channels: int, gate_channels: int | None = None, inter_channels: int | None = None
    ) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        gate_channels = gate_channels or channels
        inter_channels = inter_channels or max(channels // 2, 1)
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"
        self.theta = conv(channels, inter_channels, 2, stride=2, bias=False)
        self.phi = conv(gate_channels, inter_channels, 1)
        self.psi = conv(inter_channels, 1, 1)
        self.out = nn.Sequential(conv(channels, channels, 1), Norm[Norm.INSTANCE, spatial_dims](channels, affine=True))

    def attention_map(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """α in [0, 1] at the skip's resolution, shape [B, 1, *skip spatial]."""
        theta = self.theta(skip)
        phi = F.interpolate(self.phi(gate), size=theta.shape[2:], mode=self.mode, align_corners=False)
        alpha = torch.sigmoid(self.psi(F.relu(theta + phi)))
        return F.interpolate(alpha, size=skip.shape[2:], mode=self.mode, align_corners=False)

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return self.out(self.attention_map(skip, gate) * skip)
