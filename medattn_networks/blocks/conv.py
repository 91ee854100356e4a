"""Convolution blocks in the AttentionBased-MIS order: conv (with bias) → PReLU (one slope per channel) → norm."""

from __future__ import annotations

import torch.nn as nn
from monai.networks.layers.factories import Conv, Norm

__all__ = ["ConvPReLUNorm", "DoubleConv"]


class ConvPReLUNorm(nn.Sequential):
    """Conv (bias) → per-channel PReLU → affine instance norm.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: convolution kernel (padding keeps the size at stride 1).
        stride: convolution stride.
        transposed: use a transposed convolution (for learned up-sampling).
        norm: ``"instance"`` (affine, the paper's default) or ``"batch"``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        transposed: bool = False,
        norm: str = "instance",
    ) -> None:
        conv_type = Conv[Conv.CONVTRANS if transposed else Conv.CONV, spatial_dims]
        padding = 0 if transposed else (kernel_size - 1) // 2
        if norm == "instance":
            norm_layer = Norm[Norm.INSTANCE, spatial_dims](out_channels, affine=True)
        elif norm == "batch":
            norm_layer = Norm[Norm.BATCH, spatial_dims](out_channels)
        else:
            raise ValueError(f"norm must be 'instance' or 'batch', got '{norm}'")
        super().__init__(
            conv_type(in_channels, out_channels, kernel_size, stride=stride, padding=padding),
            nn.PReLU(out_channels),
            norm_layer,
        )


class DoubleConv(nn.Sequential):
    """Two :class:`ConvPReLUNorm` 3×3 blocks.

    In an encoder the first conv widens to ``max(out_channels // 2, in_channels)`` (3D U-Net's halfway width);
    in a decoder both convs have ``out_channels``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, encoder: bool, norm: str = "instance"):
        mid = max(out_channels // 2, in_channels) if encoder else out_channels
        super().__init__(
            ConvPReLUNorm(spatial_dims, in_channels, mid, 3, norm=norm),
            ConvPReLUNorm(spatial_dims, mid, out_channels, 3, norm=norm),
        )
