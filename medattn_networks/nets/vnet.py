"""VNet of AttentionBased-MIS (Milletari et al. 2016, with the attention variants of Zhang et al. 2022)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv, Norm

from medattn_networks.attention import AttentionGate, create_attention
from medattn_networks.blocks import ConvPReLUNorm
from medattn_networks.nets.attention_args import SLICE_ATTENTIONS, level_attention

__all__ = ["VNet", "VNET_ATTENTIONS"]

VNET_ATTENTIONS = ("none", "cse", "pe", "ag", "sca", "csa", "pam")


class ResidualConvBlock(nn.Module):
    """``repetitions`` 5×5×5 convs (conv → PReLU → IN, the last without PReLU), plus the identity, then PReLU.

    ``identity_channels`` that differ from ``out_channels`` are matched with a 1×1 projection, except a single
    channel, which broadcasts (the original VNet's trick for one-channel input).
    """

    def __init__(self, spatial_dims: int, repetitions: int, in_channels: int, out_channels: int, identity_channels: int):
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        layers: list[nn.Module] = []
        for i in range(repetitions):
            layers.append(conv(in_channels if i == 0 else out_channels, out_channels, 5, padding=2))
            if i < repetitions - 1:
                layers.append(nn.PReLU(out_channels))
            layers.append(Norm[Norm.INSTANCE, spatial_dims](out_channels, affine=True))
        self.convs = nn.Sequential(*layers)
        if identity_channels in (1, out_channels):
            self.projection: nn.Module = nn.Identity()
        else:
            self.projection = conv(identity_channels, out_channels, 1)
        self.act = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        return self.act(self.convs(x) + self.projection(identity))


class _NoGate(nn.Module):
    """Stand-in for an attention gate that returns the skip unchanged (no parameters).

    Calling every entry of ``VNet.gates`` the same way keeps the forward free of ``isinstance`` checks, which
    TorchScript resolves wrongly inside an unrolled ModuleList loop.
    """

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return skip


class VNet(nn.Module):
    """VNet with the paper's attention variants, chosen by name.

    Encoders: a residual block (1, 2, 3, 3 convs) at half the level width, then a 2×2×2 stride-2 conv doubling
    it; the bottleneck is one 5×5×5 conv at ``channels[-1]``; decoders: 2×2×2 transposed conv, concatenation
    with the skip, residual block (3, 3, 2, 1 convs); a 1×1 conv gives logits.
    Attention placement: ``cse``/``sca``/``csa``/``pam`` on the 4 encoder skips and the 4 decoder outputs, with
    plain cSE at the bottleneck (as the paper's PAM-VNet); ``pe`` on the encoder skips; ``ag`` gates each skip
    with the up-sampled decoder feature before concatenation.

    Args:
        spatial_dims: 3 (2 works too).
        in_channels: input channels (any count: several channels are projected into the first residual).
        out_channels: output classes.
        channels: the 4 level widths (the paper: 16, 32, 64, 128).
        attention: one of ``VNET_ATTENTIONS``.
        depth: input slice count (first spatial axis), a multiple of 16; required by slice attentions.
        slice_reduction: r_D of slice attention (8 in the paper's VNet).
        channel_reduction: r_C; each level uses ``min(r_C, C)``. Default as the paper's code: 8 for ``cse``,
            4 for the slice attentions (bottleneck cSE included).
        pooling: channel pooling: avg | max | avgmax.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        channels: Sequence[int] = (16, 32, 64, 128),
        attention: str = "none",
        depth: int | None = None,
        slice_reduction: int = 8,
        channel_reduction: int | None = None,
        pooling: str = "avg",
    ) -> None:
        super().__init__()
        attention = attention.lower()
        if attention not in VNET_ATTENTIONS:
            raise ValueError(f"attention must be one of {VNET_ATTENTIONS}, got '{attention}'")
        if len(channels) != 4:
            raise ValueError(f"channels must give 4 level widths, got {tuple(channels)}")
        if attention in SLICE_ATTENTIONS and (depth is None or depth % 16 != 0):
            raise ValueError(f"attention '{attention}' needs depth, a multiple of 16 (the input slice count); got {depth}")
        if channel_reduction is None:
            channel_reduction = 8 if attention == "cse" else 4
        self.attention = attention
        self.depth = depth
        half = [c // 2 for c in channels]  # skip widths
        level_depths = [None if depth is None else depth // 2**i for i in range(5)]

        def attn(width: int, level: int, where: str) -> nn.Module:
            if attention == "pe":
                return create_attention("pe" if where == "skip" else "none", spatial_dims, width)
            if attention in ("none", "ag"):
                return create_attention("none", spatial_dims, width)
            name = "cse" if where == "bottleneck" else attention
            return level_attention(name, spatial_dims, width, level_depths[level], slice_reduction, channel_reduction, pooling)

        widths_in = [in_channels, *channels[:3]]
        repeats = (1, 2, 3, 3)
        self.encoders = nn.ModuleList(
            ResidualConvBlock(spatial_dims, repeats[i], widths_in[i], half[i], widths_in[i]) for i in range(4)
        )
        self.skip_attention = nn.ModuleList(attn(half[i], i, "skip") for i in range(4))
        self.downs = nn.ModuleList(ConvPReLUNorm(spatial_dims, half[i], channels[i], 2, stride=2) for i in range(4))
        self.bottleneck = ConvPReLUNorm(spatial_dims, channels[3], channels[3], 5)
        self.bottleneck_attention = attn(channels[3], 4, "bottleneck")

        dec_in = [channels[3], channels[2], channels[1], channels[0]]
        dec_out = [channels[2], channels[1], channels[0], half[0]]
        dec_repeats = (3, 3, 2, 1)
        self.ups = nn.ModuleList(
            ConvPReLUNorm(spatial_dims, dec_in[i], dec_out[i], 2, stride=2, transposed=True) for i in range(4)
        )
        self.gates = nn.ModuleList(
            AttentionGate(spatial_dims, half[3 - i], gate_channels=dec_out[i]) if attention == "ag" else _NoGate()
            for i in range(4)
        )
        self.decoders = nn.ModuleList(
            ResidualConvBlock(spatial_dims, dec_repeats[i], half[3 - i] + dec_out[i], dec_out[i], dec_out[i])
            for i in range(4)
        )
        self.decoder_attention = nn.ModuleList(attn(dec_out[i], 3 - i, "decoder") for i in range(4))
        self.head = Conv[Conv.CONV, spatial_dims](half[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for encoder, attention, down in zip(self.encoders, self.skip_attention, self.downs):
            feature = attention(encoder(x, x))
            skips.append(feature)
            x = down(feature)
        x = self.bottleneck_attention(self.bottleneck(x))
        for up, gate, decoder, attention in zip(self.ups, self.gates, self.decoders, self.decoder_attention):
            x = up(x)
            skip = gate(skips.pop(), x)
            x = attention(decoder(torch.cat((skip, x), dim=1), x))
        return self.head(x)
