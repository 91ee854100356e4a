"""3D U-Net of AttentionBased-MIS (Zhang et al., "Progressive Attention Module", Medical Physics 2022)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Pool

from medattn_networks.attention import AttentionGate, create_attention
from medattn_networks.blocks import DoubleConv
from medattn_networks.nets.attention_args import SLICE_ATTENTIONS, level_attention

__all__ = ["UNet3D", "UNET_ATTENTIONS"]

UNET_ATTENTIONS = ("none", "cse", "pe", "ag", "sca", "csa", "pam")


class _Decoder(nn.Module):
    def __init__(self, spatial_dims: int, skip_channels: int, coarse_channels: int, out_channels: int, mode: str, gate: bool):
        super().__init__()
        self.mode = mode
        self.gate = AttentionGate(spatial_dims, skip_channels, gate_channels=coarse_channels) if gate else None
        self.conv = DoubleConv(spatial_dims, skip_channels + coarse_channels, out_channels, encoder=False)

    def forward(self, skip: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            skip = self.gate(skip, x)
        x = F.interpolate(x, size=skip.shape[2:], mode=self.mode)
        return self.conv(torch.cat((skip, x), dim=1))


class UNet3D(nn.Module):
    """3D U-Net with the paper's attention variants, chosen by name.

    Four levels joined by max-pooling; encoder double convs widen halfway first; decoders up-sample by
    interpolation, concatenate the skip and apply two convs; a 1×1 conv gives logits (no softmax).
    Attention placement follows the paper's code:

    - ``cse``, ``sca``, ``csa``, ``pam``: after the double conv of all 4 encoders and 3 decoders;
    - ``pe``: after the 4 encoders;
    - ``ag``: an attention gate on each skip, gated by the coarser decoder feature, before concatenation.

    Args:
        spatial_dims: 3 (2 works too: slice attention then acts on rows).
        in_channels: input channels.
        out_channels: output classes.
        channels: widths of the 4 levels (the paper: 16, 32, 64, 128).
        attention: one of ``UNET_ATTENTIONS``.
        depth: slice count of the input (first spatial axis); required by ``pam``/``sca``/``csa``; level i sees
            ``depth // 2**i`` slices.
        slice_reduction: r_D of slice attention (16 in the paper's UNet).
        channel_reduction: r_C; each level uses ``min(r_C, C)`` (8 in the paper's UNet).
        pooling: channel pooling of ``cse``/``sca``/``csa``/``pam``: avg | max | avgmax.
        upsample_mode: interpolation of the decoder; default nearest, trilinear/bilinear for ``pe`` and ``pam``
            (as the paper's code).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        channels: Sequence[int] = (16, 32, 64, 128),
        attention: str = "none",
        depth: int | None = None,
        slice_reduction: int = 16,
        channel_reduction: int = 8,
        pooling: str = "avg",
        upsample_mode: str | None = None,
    ) -> None:
        super().__init__()
        attention = attention.lower()
        if attention not in UNET_ATTENTIONS:
            raise ValueError(f"attention must be one of {UNET_ATTENTIONS}, got '{attention}'")
        if len(channels) != 4:
            raise ValueError(f"channels must give 4 level widths, got {tuple(channels)}")
        if attention in SLICE_ATTENTIONS:
            if depth is None or depth % 8 != 0:
                raise ValueError(f"attention '{attention}' needs depth, a multiple of 8 (the input slice count); got {depth}")
        if upsample_mode is None:
            linear = "trilinear" if spatial_dims == 3 else "bilinear"
            upsample_mode = linear if attention in ("pe", "pam") else "nearest"
        self.attention = attention
        self.depth = depth

        level_depths = [None if depth is None else depth // 2**i for i in range(4)]

        def attn(level: int, decoder: bool) -> nn.Module:
            if attention == "ag" or (attention == "pe" and decoder):
                return create_attention("none", spatial_dims, channels[level])
            if attention == "pe":
                return create_attention("pe", spatial_dims, channels[level])
            return level_attention(
                attention, spatial_dims, channels[level], level_depths[level], slice_reduction, channel_reduction, pooling
            )

        self.pool = Pool[Pool.MAX, spatial_dims](2)
        widths = [in_channels, *channels]
        self.encoders = nn.ModuleList(DoubleConv(spatial_dims, widths[i], widths[i + 1], encoder=True) for i in range(4))
        self.encoder_attention = nn.ModuleList(attn(i, decoder=False) for i in range(4))
        self.decoders = nn.ModuleList(
            _Decoder(spatial_dims, channels[i], channels[i + 1], channels[i], upsample_mode, gate=attention == "ag")
            for i in (2, 1, 0)
        )
        self.decoder_attention = nn.ModuleList(attn(i, decoder=True) for i in (2, 1, 0))
        self.head = Conv[Conv.CONV, spatial_dims](channels[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, (encoder, attention) in enumerate(zip(self.encoders, self.encoder_attention)):
            x = attention(encoder(x if i == 0 else self.pool(x)))
            skips.append(x)
        x = skips.pop()
        for decoder, attention in zip(self.decoders, self.decoder_attention):
            x = attention(decoder(skips.pop(), x))
        return self.head(x)
