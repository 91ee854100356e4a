"""MSA²Net (Kolahi et al., BMVC 2024; seed 004): a MaxViT encoder, MASAG gates on the skips, a U-shaped decoder.

Facts: papers.md §004 and the released ``networks/msa2net.py`` of xmindflow/MSA-2Net. Built from
:class:`~medattn_networks.nets.maxvit.MaxViT` (timm's keys), :class:`~medattn_networks.attention.masag.
MultiScaleAdaptiveSpatialAttentionGate` and the toolkit's :class:`~medattn_networks.blocks.transformer.PatchExpand`.

Decoder (``decoder="paper"``, the paper's network): the 7² bottleneck is only expanded to 14² × 384; at 14² the
skip is gated (MASAG), added and layer-normed, then 2 DAE-Former blocks (efficient attention, channel attention, MixFFN
— :class:`DualTransformerBlock`), then expanded; at 28² and 56² the same with 2 LKA blocks (:class:`LKABlock`); the
last stage expands ×4 to 224² and a 1×1 conv gives the classes. No deep supervision.

``decoder="released"``: the 14² stage as the released code actually runs it (its class defines ``__init__`` and
``forward`` twice; the second pair wins): the skip is *added* without a gate, then 2 LKA blocks. The two are told
apart in a checkpoint by their keys (``decoder_2.tran_layer1.*`` vs ``decoder_2.layer_lka_1.*``).

Differences from the released code: token maps are moved between (B, N, C) and (B, C, H, W) with permutes (the
released code uses ``.view``, which scrambles them); modules the released network builds but cannot use are not
built — the 7² stage's linear, gate, norm and blocks, the released 14² stage's gate, and the encoder wrapper's 1→3
conv + BN (grey inputs are repeated to 3 channels instead, as the released ``forward`` does). Inputs are normalised
with mean = std = 0.5 (timm's configuration of this encoder) inside the network.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers import DropPath

from medattn_networks.attention.masag import MultiScaleAdaptiveSpatialAttentionGate
from medattn_networks.blocks.transformer import PatchExpand, channels_first, channels_last
from medattn_networks.nets.maxvit import MaxViT

__all__ = ["MSA2Net", "DualTransformerBlock", "LKABlock", "EfficientAttention", "ChannelAttention", "MSA2NET_DECODERS"]

MSA2NET_DECODERS = ("paper", "released")


class _DepthwiseConv(nn.Module):
    """3×3 depthwise conv (bias) on a channels-first map; key ``dwconv``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dwconv(x)


class MixFFN(nn.Module):
    """SegFormer's Mix-FFN on tokens (B, H, W, C): Linear → depthwise 3×3 → GELU → Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = _DepthwiseConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(channels_last(self.dwconv(channels_first(self.fc1(x))))))


class EfficientAttention(nn.Module):
    """Efficient attention (Shen et al. 2021) on a map (B, C, H, W), one head: keys softmaxed over positions, queries
    over channels, ``context = softmax_N(K)·Vᵀ``, output ``reprojection(contextᵀ·softmax_C(Q))``.

    Args:
        channels: map width.
        key_channels: width of queries and keys.
        value_channels: width of values.
    """

    def __init__(self, channels: int, key_channels: int, value_channels: int) -> None:
        super().__init__()
        self.keys = nn.Conv2d(channels, key_channels, 1)
        self.queries = nn.Conv2d(channels, key_channels, 1)
        self.values = nn.Conv2d(channels, value_channels, 1)
        self.reprojection = nn.Conv2d(value_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        keys = self.keys(x).flatten(2).softmax(dim=2)
        queries = self.queries(x).flatten(2).softmax(dim=1)
        values = self.values(x).flatten(2)
        context = keys @ values.transpose(1, 2)  # (B, dk, dv)
        return self.reprojection((context.transpose(1, 2) @ queries).reshape(b, -1, h, w))


class ChannelAttention(nn.Module):
    """XCiT's cross-covariance (channel) attention on tokens (B, N, C): per head, L2-normalised queries and keys over
    the token axis, ``softmax(q̂·k̂ᵀ · temperature)`` (C/h × C/h) applied to the values; qkv without bias.

    Args:
        dim: token width.
        num_heads: heads.
    """

    def __init__(self, dim: int, num_heads: int = 8) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 4, 1).unbind(0)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)  # (B, h, C/h, N)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)
        return self.proj((attn @ v).permute(0, 3, 1, 2).reshape(b, n, c))


class DualTransformerBlock(nn.Module):
    """DAE-Former's dual block on tokens (B, H, W, C): efficient attention, Mix-FFN, channel attention, Mix-FFN, each
    pre-norm with a residual (keys ``norm1``… ``norm4``, ``attn``, ``mlp1``, ``channel_attn``, ``mlp2``).

    Args:
        dim: token width (keys and values too).
        mlp_ratio: Mix-FFN hidden width / dim.
    """

    def __init__(self, dim: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = EfficientAttention(dim, dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp1 = MixFFN(dim, int(dim * mlp_ratio))
        self.norm3 = nn.LayerNorm(dim)
        self.channel_attn = ChannelAttention(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.mlp2 = MixFFN(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        x = x + channels_last(self.attn(channels_first(self.norm1(x))))
        x = x + self.mlp1(self.norm2(x))
        x = x + self.channel_attn(self.norm3(x).reshape(b, h * w, c)).reshape(b, h, w, c)
        return x + self.mlp2(self.norm4(x))


class _LKAGating(nn.Module):
    """Large-kernel attention: ``x · conv1(conv_spatial(conv0(x)))`` with a depthwise 5×5 and a depthwise 7×7 of
    dilation 3."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, 7, padding=9, groups=dim, dilation=3)
        self.conv1 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv1(self.conv_spatial(self.conv0(x)))


class _LKASpatialAttention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = _LKAGating(dim)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x)))) + x


class _ConvMlp(nn.Module):
    """1×1 → depthwise 3×3 → GELU → 1×1 on a channels-first map (the LKA block's MLP)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = _DepthwiseConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class LKABlock(nn.Module):
    """VAN's large-kernel-attention block on a map (B, C, H, W): ``x + ls1·attn(LN(x))``, ``x + ls2·mlp(LN(x))``
    (LayerNorms over channels, layer scales initialised to 1e-2).

    Args:
        dim: map width.
        mlp_ratio: MLP hidden width / dim.
        drop_path: stochastic depth.
    """

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _LKASpatialAttention(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _ConvMlp(dim, int(dim * mlp_ratio))
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), 1e-2))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), 1e-2))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale1, scale2 = self.layer_scale_1[:, None, None], self.layer_scale_2[:, None, None]
        x = x + self.drop_path(scale1 * self.attn(channels_first(self.norm1(channels_last(x)))))
        return x + self.drop_path(scale2 * self.mlp(channels_first(self.norm2(channels_last(x)))))


class _GatedStage(nn.Module):
    """A decoder stage: ``h = LN(g + gate(skip, g))`` with ``g = x1_linear(x)`` (``gate`` None: ``LN(g + skip)``),
    two blocks (``"dae"`` or ``"lka"``), then ``layer_up`` (×2 expand, or ×4 expand + 1×1 conv to classes)."""

    def __init__(self, dim: int, blocks: str, gated: bool, last: bool = False, num_classes: int = 9) -> None:
        super().__init__()
        self.blocks_kind = blocks
        self.x1_linear = nn.Linear(dim, dim)
        self.ag_attn = MultiScaleAdaptiveSpatialAttentionGate(2, dim) if gated else None
        self.ag_attn_norm = nn.LayerNorm(dim)
        if blocks == "dae":
            self.tran_layer1, self.tran_layer2 = DualTransformerBlock(dim), DualTransformerBlock(dim)
        else:
            self.layer_lka_1, self.layer_lka_2 = LKABlock(dim), LKABlock(dim)
        self.layer_up = PatchExpand(2, dim, scale=4, out_dim=dim) if last else PatchExpand(2, dim)
        self.last_layer = nn.Conv2d(dim, num_classes, 1) if last else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``x`` (B, H, W, C) from the deeper stage, ``skip`` (B, C, H, W) from the encoder → tokens (B, 2H, 2W, C/2)
        or, in the last stage, the class logits (B, K, 4H, 4W)."""
        g = channels_first(self.x1_linear(x))
        fused = g + (self.ag_attn(skip, g) if self.ag_attn is not None else skip)
        h = self.ag_attn_norm(channels_last(fused))
        if self.blocks_kind == "dae":
            h = self.tran_layer2(self.tran_layer1(h))
        else:
            h = channels_last(self.layer_lka_2(self.layer_lka_1(channels_first(h))))
        h = self.layer_up(h)
        return h if self.last_layer is None else self.last_layer(channels_first(h))


class _ExpandOnly(nn.Module):
    """The bottleneck stage: its only live module is the ×2 expand (``layer_up``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.layer_up = PatchExpand(2, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer_up(x)


class MSA2Net(nn.Module):
    """MSA²Net on 224² images; ``forward(x)`` → (B, classes, 224, 224) logits.

    Args:
        in_channels: 1 (repeated to 3) or 3.
        num_classes: classes (Synapse: 9, ISIC: 2).
        decoder: ``"paper"`` or ``"released"`` (see the module docstring).
        encoder_kwargs: further :class:`~medattn_networks.nets.maxvit.MaxViT` arguments (e.g. ``drop_path_rate``).
        input_mean: subtracted from the input (timm's configuration of the encoder: 0.5).
        input_std: the input is divided by it (0.5).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 9,
        decoder: str = "paper",
        encoder_kwargs: dict | None = None,
        input_mean: float = 0.5,
        input_std: float = 0.5,
    ) -> None:
        super().__init__()
        if decoder not in MSA2NET_DECODERS:
            raise ValueError(f"unknown decoder '{decoder}'; use one of {', '.join(MSA2NET_DECODERS)}")
        if in_channels not in (1, 3):
            raise ValueError(f"MSA²Net takes 1 (grey, repeated) or 3 input channels, got {in_channels}")
        self.in_channels, self.decoder = in_channels, decoder
        self.input_mean, self.input_std = input_mean, input_std
        self.backbone = MaxViT(in_channels=3, **(encoder_kwargs or {}))
        dims: Sequence[int] = self.backbone.out_channels  # 96, 192, 384, 768
        self.decoder_3 = _ExpandOnly(dims[3])
        if decoder == "paper":
            self.decoder_2 = _GatedStage(dims[2], "dae", gated=True)
        else:
            self.decoder_2 = _GatedStage(dims[2], "lka", gated=False)
        self.decoder_1 = _GatedStage(dims[1], "lka", gated=True)
        self.decoder_0 = _GatedStage(dims[0], "lka", gated=True, last=True, num_classes=num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"MSA²Net built for {self.in_channels} input channel(s), got {x.shape[1]}")
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        f0, f1, f2, f3 = self.backbone((x - self.input_mean) / self.input_std)
        h = self.decoder_3(channels_last(f3))
        h = self.decoder_2(h, f2)
        h = self.decoder_1(h, f1)
        return self.decoder_0(h, f0)
