"""MASAG: MSA²Net's multi-scale adaptive spatial attention gate (Kolahi et al., BMVC 2024; seed 004, papers.md §004).

It fuses an encoder skip ``x`` with the decoder feature ``g`` of the same size (C × spatial):

- local context of ``x``: depthwise 3×3 conv → BN → ReLU → 3×3 conv (dilation 2) → BN → ReLU → 1×1 conv → BN;
- global context of ``g``: a 1×1 conv on its channel mean and channel max (2 maps → 1) → BN;
- ``F = BN(local + global)`` (the one-channel global map is broadcast over the channels);
- selection: 1×1 conv C → 2, softmax over the two maps → ``A``, ``B``; ``x' = A·x + x``, ``g' = B·g + g``;
- cross-modulation ``x'' = σ(g')·x'``, ``g'' = σ(x')·g'``; interaction ``I = x''·g''``;
- recalibration ``P = σ(BN(conv1×1(I)))``; output ``y = BN(conv1×1(P·x))``.

Every operation is a convolution, a per-channel normalisation or a channel reduction, so the same module works in
3D: depthwise and dilated 3×3×3 convolutions, the channel mean/max of a volume, 1×1×1 convolutions (MONAI's Conv /
Norm factories pick the 2D or 3D layer). Parameters: 12C² + 28C + 7 in 2D; 3D only changes the two 3×3 kernels to
3×3×3 (9 → 27 weights per filter tap set): 30C² + 46C + 7.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv, Norm

from medattn_networks.attention.registry import register_attention

__all__ = ["MultiScaleAdaptiveSpatialAttentionGate"]


def _conv_bn(spatial_dims: int, cin: int, cout: int, kernel: int = 1, dilation: int = 1, groups: int = 1) -> list[nn.Module]:
    conv = Conv[Conv.CONV, spatial_dims](cin, cout, kernel, padding=dilation * (kernel // 2), dilation=dilation, groups=groups)
    return [conv, Norm[Norm.BATCH, spatial_dims](cout)]


class _LocalContext(nn.Module):
    def __init__(self, spatial_dims: int, channels: int) -> None:
        super().__init__()
        self.dconv = nn.Sequential(
            *_conv_bn(spatial_dims, channels, channels, 3, groups=channels),
            nn.ReLU(),
            *_conv_bn(spatial_dims, channels, channels, 3, dilation=2),
            nn.ReLU(),
        )
        self.proj = nn.Sequential(*_conv_bn(spatial_dims, channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.dconv(x))


class _GlobalContext(nn.Module):
    def __init__(self, spatial_dims: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(*_conv_bn(spatial_dims, 2, 1, 1))

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.cat([g.mean(1, keepdim=True), g.amax(1, keepdim=True)], dim=1))


class _MultiscaleFusion(nn.Module):
    def __init__(self, spatial_dims: int, channels: int) -> None:
        super().__init__()
        self.local = _LocalContext(spatial_dims, channels)
        self.global_ = _GlobalContext(spatial_dims)
        self.bn = Norm[Norm.BATCH, spatial_dims](channels)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return self.bn(self.local(x) + self.global_(g))


@register_attention("masag")
class MultiScaleAdaptiveSpatialAttentionGate(nn.Module):
    """MASAG (see the module docstring). Called ``gate(x, g)`` with the encoder skip ``x`` and the decoder feature
    ``g``, both (B, C, *spatial); returns (B, C, *spatial). Submodule names follow the released code
    (``multi.local.dconv``, ``multi.global_.proj``, ``selection``, ``proj``, ``bn``, ``conv_block``, ``bn_2``).

    Args:
        spatial_dims: 2 or 3.
        channels: C of both inputs.
    """

    def __init__(self, spatial_dims: int, channels: int) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.multi = _MultiscaleFusion(spatial_dims, channels)
        self.selection = conv(channels, 2, 1)
        self.proj = conv(channels, channels, 1)
        self.bn = Norm[Norm.BATCH, spatial_dims](channels)
        self.conv_block = nn.Sequential(conv(channels, channels, 1))
        self.bn_2 = Norm[Norm.BATCH, spatial_dims](channels)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if x.shape != g.shape:
            raise ValueError(f"MASAG needs x and g of one shape, got {x.shape} and {g.shape}")
        weights = self.selection(self.multi(x, g)).softmax(dim=1)
        a, b = weights[:, 0:1], weights[:, 1:2]
        x_att = a * x + x
        g_att = b * g + g
        interaction = (torch.sigmoid(g_att) * x_att) * (torch.sigmoid(x_att) * g_att)
        recalibration = torch.sigmoid(self.bn(self.proj(interaction)))
        return self.bn_2(self.conv_block(recalibration * x))
