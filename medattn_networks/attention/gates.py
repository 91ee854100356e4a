"""Spatial gates: Project & Excite, the Attention U-Net gate, CBAM and a spatial transformer (STN)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Norm, Pool

from medattn_networks.attention.channel import expand_to, global_pool
from medattn_networks.attention.registry import register_attention

__all__ = ["ProjectExcite", "AttentionGate", "CBAM", "SpatialTransformer"]


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


@register_attention("cbam")
class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al., ECCV 2018): channel gate, then spatial gate.

    Channel gate: the average- and max-pooled C-vectors pass one shared MLP (Linear C→C/r → ReLU → Linear, with
    biases); sigmoid of the summed logits rescales the channels. Spatial gate, on the channel-gated map: the
    channel-wise max and mean ([max, mean], 2 channels) → k×k conv 2→1 (no bias) → BatchNorm (momentum 0.01) →
    sigmoid rescales every position. Parameters: 2·C·h + h + C + 2·k^d + 2 with h = max(C // r, 1) (the official
    code's C // r for C ≥ r; 680 at C = 64, r = 16, k = 7 in 2D). The paper inserts it on the residual branch of
    every block (after the last BN); DSNet's table plugs it in after conv1 of every bottleneck. In 3D the spatial
    kernel is k×k×k.

    Args:
        spatial_dims: 2 or 3.
        channels: feature channels C.
        reduction: r of the channel MLP (16).
        kernel_size: k of the spatial conv (7).
    """

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))
        self.spatial_conv = Conv[Conv.CONV, spatial_dims](2, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.spatial_norm = Norm[Norm.BATCH, spatial_dims](1, eps=1e-5, momentum=0.01)

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        """Channel weights [B, C] in (0, 1)."""
        return torch.sigmoid(self.mlp(global_pool(x, "avg")) + self.mlp(global_pool(x, "max")))

    def spatial_gate(self, x: torch.Tensor) -> torch.Tensor:
        """Spatial weights [B, 1, *spatial] in (0, 1)."""
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.spatial_norm(self.spatial_conv(pooled)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * expand_to(self.channel_gate(x), x)
        return x * self.spatial_gate(x)


@register_attention("stn")
class SpatialTransformer(nn.Module):
    """Spatial transformer (Jaderberg et al., NeurIPS 2015) as a feature-map module.

    A localisation net — conv 3 (C→h) → ReLU → max-pool 2 → conv 3 (h→h) → ReLU → adaptive average pool to
    ``pool_size`` per axis → Linear → ReLU → Linear — predicts an affine θ (2×3 in 2D, 3×4 in 3D) that starts at
    the identity (last layer: zero weight, identity bias). ``F.affine_grid`` + ``F.grid_sample`` resample the
    input at θ·(output coordinates); coordinates are normalised to [-1, 1] with ``align_corners=False`` and
    ordered (x, y[, z]) = (last axis, second-last[, first]), so θ[:, 0, -1] = 2·s/W shifts by s voxels along W
    (output[i] = input[i + s]). Zero padding outside. At initialisation the module is the identity. Parameters:
    C·h·3^d + h + h²·3^d + h + h·p^d·f + f + f·d(d+1) + d(d+1) (h = ``hidden``, p = ``pool_size``,
    f = ``fc_hidden``).
    Inputs need at least 2 voxels per axis. Seed 001 lists STN among its comparisons (its code lacks it).

    Args:
        spatial_dims: 2 or 3.
        channels: feature channels C.
        hidden: channels of the localisation convs.
        pool_size: per-axis size the localisation features are pooled to before the FC layers.
        fc_hidden: width of the hidden FC layer.
        mode: ``"bilinear"`` (trilinear for 3D inputs) or ``"nearest"``.
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"``.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        hidden: int = 8,
        pool_size: int = 4,
        fc_hidden: int = 32,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.spatial_dims = spatial_dims
        self.mode = mode
        self.padding_mode = padding_mode
        self.localisation = nn.Sequential(
            conv(channels, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            Pool[Pool.MAX, spatial_dims](2),
            conv(hidden, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            Pool[Pool.ADAPTIVEAVG, spatial_dims](pool_size),
        )
        n_theta = spatial_dims * (spatial_dims + 1)
        self.fc = nn.Sequential(
            nn.Linear(hidden * pool_size**spatial_dims, fc_hidden), nn.ReLU(inplace=True), nn.Linear(fc_hidden, n_theta)
        )
        nn.init.zeros_(self.fc[-1].weight)
        with torch.no_grad():
            self.fc[-1].bias.copy_(torch.eye(spatial_dims, spatial_dims + 1).flatten())

    def theta(self, x: torch.Tensor) -> torch.Tensor:
        """Affine matrices [B, d, d + 1] mapping output to input coordinates."""
        params = self.fc(self.localisation(x).flatten(1))
        return params.reshape(x.shape[0], self.spatial_dims, self.spatial_dims + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(self.theta(x), x.size(), align_corners=False)
        return F.grid_sample(x, grid, mode=self.mode, padding_mode=self.padding_mode, align_corners=False)
