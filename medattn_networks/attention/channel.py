"""Channel gates: squeeze-and-excitation style recalibration of feature channels.

cSE and the SE family, ECA, FcaNet (DCT), the EncNet encoding module, ResNeSt split attention and the GCNet
context block; every module is ``(spatial_dims, channels, ...)`` and works in 2D and 3D.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Norm, Pool
from monai.networks.layers.utils import get_act_layer

from medattn_networks.attention.registry import register_attention

__all__ = [
    "ChannelSE",
    "global_pool",
    "expand_to",
    "make_divisible",
    "SqueezeExcitation",
    "SqueezeExcitationHSigmoid",
    "EfficientChannelAttention",
    "MultiSpectralChannelAttention",
    "EncodingModule",
    "SplitAttentionConv",
    "ContextBlock",
    "FCA_TOP_FREQUENCIES",
    "FCANET_DCT_SIZES",
]

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


# ------------------------------------------------------------------------------------------------------------------
# SE variants, ECA, FcaNet, EncNet, ResNeSt split attention, GCNet (issue 3; seed 002's compared modules)
# ------------------------------------------------------------------------------------------------------------------
def make_divisible(value: float, divisor: int, min_value: int | None = None, min_ratio: float = 0.9) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (at least ``min_value``, default ``divisor``), never
    going below ``min_ratio · value`` — the MobileNet/mmseg rounding rule."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < min_ratio * value:
        rounded += divisor
    return rounded


@register_attention("se")
class SqueezeExcitation(nn.Module):
    """Squeeze-and-Excitation block (Hu et al., CVPR 2018), the classic form.

    Global average pool → FC C→C/r (bias) → ReLU → FC C/r→C (bias) → sigmoid → rescale the channels. The FCs are
    1×1 convolutions on the pooled map. Parameters: 2·C·⌊C/r⌋ + ⌊C/r⌋ + C. SENet inserts it on the residual branch
    after the last BN of every block, before the addition.

    Args:
        spatial_dims: 2 or 3 (the module is dimension-agnostic).
        channels: feature channels C.
        reduction: r; the hidden layer has ``max(C // r, 1)`` units (the paper uses 16).
        act: activation of the hidden layer (MONAI name; MaxViT's MBConv uses ``"swish"``, i.e. SiLU).
        hidden_channels: hidden width instead of ``C // r`` (MaxViT: ``int(C / 16)`` of the expanded width).
    """

    def __init__(
        self, spatial_dims: int, channels: int, reduction: int = 16, act: str = "relu", hidden_channels: Optional[int] = None
    ) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        hidden = hidden_channels or max(channels // reduction, 1)
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.fc1 = conv(channels, hidden, 1)
        self.act = get_act_layer(act)
        self.fc2 = conv(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(self.pool(x)))))


@register_attention("se_mmseg")
class SqueezeExcitationHSigmoid(nn.Module):
    """mmseg's ``SELayer`` as used by DSNet's comparison table (seed 002): SE with a hard sigmoid.

    Global average pool → 1×1 conv C→h (bias) → ReLU → 1×1 conv h→C (bias) → hard sigmoid
    ``clamp((z + 3) / 6, 0, 1)`` → rescale, with ``h = make_divisible(C // ratio, divisor)`` (8 at C = 64, 16 at
    256, 32 at 512). Parameters: 2·C·h + h + C. DSNet plugs it in after conv1 of every ResNet bottleneck.

    Args:
        spatial_dims: 2 or 3 (dimension-agnostic).
        channels: feature channels C.
        ratio: squeeze ratio (16 in mmseg).
        divisor: the hidden width is rounded to a multiple of this (8 in mmseg).
    """

    def __init__(self, spatial_dims: int, channels: int, ratio: int = 16, divisor: int = 8) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        hidden = make_divisible(channels // ratio, divisor)
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.conv1 = conv(channels, hidden, 1)
        self.conv2 = conv(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.hardsigmoid(self.conv2(torch.relu(self.conv1(self.pool(x)))))


@register_attention("eca")
class EfficientChannelAttention(nn.Module):
    """Efficient Channel Attention (ECA-Net, Wang et al., CVPR 2020).

    Global average pool → a 1D convolution of odd size k across the channel axis (1→1 channel, no bias, zero
    padding) → sigmoid → rescale. Parameters: k. DSNet's table uses the fixed k = 3 (its copy of the official
    layer); ``kernel_size=None`` picks the paper's adaptive size k = |log2(C)/γ + b/γ| rounded up to odd.

    Args:
        spatial_dims: 2 or 3 (dimension-agnostic).
        channels: feature channels C.
        kernel_size: odd k, or None for the adaptive rule.
        gamma: γ of the adaptive rule.
        beta: b of the adaptive rule.
    """

    def __init__(
        self, spatial_dims: int, channels: int, kernel_size: int | None = 3, gamma: int = 2, beta: int = 1
    ) -> None:
        super().__init__()
        if kernel_size is None:
            t = int(abs((math.log2(channels) + beta) / gamma))
            kernel_size = t if t % 2 else t + 1
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"ECA needs an odd positive kernel size, got {kernel_size}")
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(global_pool(x, "avg").unsqueeze(1)).squeeze(1)  # [B, 1, C] → [B, C]
        return x * expand_to(torch.sigmoid(y), x)


# FcaNet's frequency ranking on the 7×7 DCT grid ("top" selection of the official code): (u, v) pairs, best first.
_FCA_TOP_U = (0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2, 4, 6, 3, 5, 5, 2, 6, 5, 5, 3, 3, 4, 2, 2, 6, 1)
_FCA_TOP_V = (0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2, 6, 3, 3, 3, 5, 1, 1, 2, 4, 2, 1, 1, 3, 0, 5, 3)
FCA_TOP_FREQUENCIES: tuple[tuple[int, int], ...] = tuple(zip(_FCA_TOP_U, _FCA_TOP_V))
# DCT size per FcaNet-ResNet stage, keyed by the bottleneck's output channels C = 4·planes (56/28/14/7 at 224²).
FCANET_DCT_SIZES = {256: 56, 512: 28, 1024: 14, 2048: 7}


def _dct_basis(size: int, freq: int) -> torch.Tensor:
    """Orthonormal 1D DCT-II basis vector of length ``size`` at frequency ``freq`` (FcaNet's ``build_filter``)."""
    pos = torch.arange(size, dtype=torch.float64)
    basis = torch.cos(math.pi * freq * (pos + 0.5) / size) / math.sqrt(size)
    return basis * math.sqrt(2.0) if freq > 0 else basis


@register_attention("fca")
class MultiSpectralChannelAttention(nn.Module):
    """FcaNet's multi-spectral channel attention (Qin et al., ICCV 2021).

    The input is adaptively average-pooled to the DCT size (a no-op when it already has that size), channel c is
    projected onto the fixed 2D DCT basis of its frequency (channels split into ``num_freq`` equal groups, group i
    takes the i-th best frequency of FcaNet's "top" ranking on a 7×7 grid, scaled by ``size // 7``), and the
    resulting C-vector passes FC C→C/r → ReLU → FC → sigmoid (no biases) to rescale the channels. Parameters:
    2·C·⌊C/r⌋; the DCT filters are a fixed buffer [C, *dct_size] sized per stage (FcaNet-ResNet: 56/28/14/7 for
    C = 256/512/1024/2048, see ``FCANET_DCT_SIZES``), inserted after BN3 of every bottleneck.

    3D: the basis is separable, so the filter for (u, v) becomes the 3D DCT basis with frequency 0 along the
    first (slice) axis and (u, v) in-plane — FcaNet's 2D ranking applied to the depth-summed map (scaled by
    1/√D), since the paper ranks no 3D frequencies. Pass ``frequencies`` to choose others. When C is not a multiple of
    ``num_freq`` channel c takes frequency ⌊c·num_freq/C⌋ (equal groups otherwise, as in the paper).

    Args:
        spatial_dims: 2 or 3.
        channels: feature channels C.
        dct_size: side of the DCT grid (int, or one size per spatial axis), at least 7.
        num_freq: how many of the top frequencies to use (FcaNet: 16).
        reduction: r; hidden units ``max(C // r, 1)``.
        frequencies: optional explicit frequency tuples on the 7-grid (length ``spatial_dims`` each).
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        dct_size: int | Sequence[int] = 7,
        num_freq: int = 16,
        reduction: int = 16,
        frequencies: Sequence[Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        sizes = [int(dct_size)] * spatial_dims if isinstance(dct_size, int) else [int(s) for s in dct_size]
        if len(sizes) != spatial_dims or min(sizes) < 7:
            raise ValueError(f"dct_size must be >= 7 on each of the {spatial_dims} axes, got {dct_size}")
        if frequencies is None:
            if not 1 <= num_freq <= len(FCA_TOP_FREQUENCIES):
                raise ValueError(f"num_freq must be in 1..{len(FCA_TOP_FREQUENCIES)}, got {num_freq}")
            frequencies = [((0,) * (spatial_dims - 2)) + uv for uv in FCA_TOP_FREQUENCIES[:num_freq]]
        freqs = [tuple(int(u) for u in f) for f in frequencies]
        if any(len(f) != spatial_dims or min(f) < 0 or max(f) > 6 for f in freqs):
            raise ValueError(f"frequencies must be {spatial_dims}-tuples on the 7-grid (0..6), got {frequencies}")
        self.frequencies = freqs
        self.dct_size = sizes
        filters = torch.empty(channels, *sizes, dtype=torch.float64)
        for c in range(channels):
            freq = freqs[c * len(freqs) // channels]
            basis = torch.ones((), dtype=torch.float64)
            for axis in range(spatial_dims):
                basis = basis.unsqueeze(-1) * _dct_basis(sizes[axis], freq[axis] * (sizes[axis] // 7))
            filters[c] = basis
        self.register_buffer("dct_filters", filters.float())
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](tuple(sizes))
        hidden = max(channels // reduction, 1)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False), nn.ReLU(inplace=True), nn.Linear(hidden, channels, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # FcaNet pools only when the map is not already at the DCT size (and FLOP counts follow that)
        pooled = x if x.shape[2:] == self.dct_filters.shape[1:] else self.pool(x)
        y = (pooled * self.dct_filters).flatten(2).sum(-1)  # [B, C] spectral descriptors
        return x * expand_to(torch.sigmoid(self.fc(y)), x)


@register_attention("enc")
class EncodingModule(nn.Module):
    """EncNet's context encoding module (Zhang et al., CVPR 2018) in mmseg's ``EncModule`` form.

    x → 1×1 conv (no bias) → BN → ReLU gives N = prod(spatial) descriptors p_n ∈ R^C. With K learnable codewords
    d_k and smoothing factors s_k, a_nk = softmax_k(s_k‖p_n − d_k‖²) and e_k = Σ_n a_nk (p_n − d_k); the [B, K, C]
    codes pass BatchNorm1d over the K codes and ReLU, are averaged over k, and γ = sigmoid(FC C→C (bias)) gives
    y = ReLU(x + x·γ). Parameters: 2C² + (K + 3)·C + 3K. EncNet puts it in the segmentation head; DSNet plugs it
    in after conv1 of every bottleneck. Dimension-agnostic (descriptors are flattened voxels).
    The distances use ‖p‖² − 2p·d + ‖d‖², so memory is O(N·K), not O(N·K·C).

    Args:
        spatial_dims: 2 or 3.
        channels: feature channels C.
        num_codes: K (32 in DSNet's table).
    """

    def __init__(self, spatial_dims: int, channels: int, num_codes: int = 32) -> None:
        super().__init__()
        self.project = nn.Sequential(
            Conv[Conv.CONV, spatial_dims](channels, channels, 1, bias=False),
            Norm[Norm.BATCH, spatial_dims](channels),
            nn.ReLU(inplace=True),
        )
        std = 1.0 / math.sqrt(num_codes * channels)
        self.codewords = nn.Parameter(torch.empty(num_codes, channels).uniform_(-std, std))
        self.scale = nn.Parameter(torch.empty(num_codes).uniform_(-1.0, 0.0))
        self.code_norm = nn.BatchNorm1d(num_codes)
        self.fc = nn.Linear(channels, channels)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Residual codes e, shape [B, K, C], before the code BatchNorm."""
        p = self.project(x).flatten(2).transpose(1, 2)  # [B, N, C]
        sq_dist = (p * p).sum(-1, keepdim=True) - 2.0 * p @ self.codewords.t() + (self.codewords**2).sum(-1)
        assign = torch.softmax(sq_dist * self.scale, dim=-1)  # [B, N, K]
        return assign.transpose(1, 2) @ p - assign.sum(1).unsqueeze(-1) * self.codewords

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes = torch.relu(self.code_norm(self.encode(x)))
        gamma = torch.sigmoid(self.fc(codes.mean(1)))
        return torch.relu(x + x * expand_to(gamma, x))


@register_attention("splat")
class SplitAttentionConv(nn.Module):
    """ResNeSt's split-attention convolution (Zhang et al., 2020), replacing the 3×3 conv of a bottleneck.

    The module is ``SplAtConv``: a k×k conv C→radix·C in ``groups·radix`` groups (no bias) → BN → ReLU gives radix
    splits U_r; their sum is average-pooled, passes 1×1 conv C→inter (bias, ``groups`` groups) → norm → ReLU →
    1×1 conv inter→radix·C (bias), and a softmax across the radix (sigmoid when radix = 1) gives weights a_r with
    out = Σ_r a_r·U_r (C channels). inter = max(C·radix // reduction, min_inter). Parameters (groups = 1, radix
    2, k = 3 in 2D): 9C² + 4C + C·inter + inter + 2·inter + 2C·inter + 2C, as mmseg's ``SplitAttentionConv2d`` /
    ResNeSt's ``SplAtConv2d`` with ``bias=False``. Channels must be divisible by ``groups·radix``.

    The norm inside the attention MLP acts on a pooled [B, inter] vector. ResNeSt uses BatchNorm there
    (``attention_norm="batch"``: exactly ResNeSt/mmseg, but training then needs batch > 1). The default
    ``"layer"`` (a LayerNorm over the inter channels with per-channel affine, as ``GroupNorm(1, inter)``; the same
    2·inter parameters) is batch-size independent, so the module trains at batch 1 like every registered module.

    Args:
        spatial_dims: 2 or 3.
        channels: input and output channels C.
        kernel_size: k of the split convolution (padding keeps the size).
        radix: number of splits R (2 in ResNeSt).
        groups: cardinality (1 in ResNeSt-50 ``1s1x64d``).
        reduction: reduction factor of the attention MLP (4).
        min_inter: lower bound of its hidden width (32).
        dilation: dilation of the split convolution.
        attention_norm: ``"layer"`` (default), ``"batch"`` (ResNeSt) or ``"none"``.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        kernel_size: int = 3,
        radix: int = 2,
        groups: int = 1,
        reduction: int = 4,
        min_inter: int = 32,
        dilation: int = 1,
        attention_norm: str = "layer",
    ) -> None:
        super().__init__()
        if channels % (groups * radix):
            raise ValueError(f"channels ({channels}) must be divisible by groups·radix ({groups * radix})")
        if attention_norm not in ("layer", "batch", "none"):
            raise ValueError(f"attention_norm must be 'layer', 'batch' or 'none', got '{attention_norm}'")
        conv = Conv[Conv.CONV, spatial_dims]
        inter = max(channels * radix // reduction, min_inter)
        self.radix = radix
        self.groups = groups
        self.channels = channels
        self.conv = conv(
            channels,
            channels * radix,
            kernel_size,
            padding=dilation * (kernel_size - 1) // 2,
            dilation=dilation,
            groups=groups * radix,
            bias=False,
        )
        self.norm0 = Norm[Norm.BATCH, spatial_dims](channels * radix)
        self.fc1 = conv(channels, inter, 1, groups=groups)
        if attention_norm == "batch":
            self.norm1: nn.Module = Norm[Norm.BATCH, spatial_dims](inter)
        elif attention_norm == "layer":
            self.norm1 = nn.GroupNorm(1, inter)
        else:
            self.norm1 = nn.Identity()
        self.fc2 = conv(inter, channels * radix, 1, groups=groups)

    def split_weights(self, gap: torch.Tensor) -> torch.Tensor:
        """Attention logits [B, radix·C, 1, ...] → weights [B, radix, C] (softmax over the radix)."""
        batch = gap.shape[0]
        logits = self.fc2(torch.relu(self.norm1(self.fc1(gap))))
        if self.radix > 1:
            # channel layout of the logits is (groups, radix, C/groups) as in ResNeSt's rSoftMax
            return torch.softmax(logits.reshape(batch, self.groups, self.radix, -1), dim=2).transpose(1, 2).reshape(
                batch, self.radix, self.channels
            )
        return torch.sigmoid(logits).reshape(batch, 1, self.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.relu(self.norm0(self.conv(x)))
        batch = u.shape[0]
        splits = u.reshape(batch, self.radix, self.channels, -1)  # [B, R, C, N], U_r = splits[:, r]
        gap = expand_to(splits.sum(1).mean(-1), u)  # [B, C, 1, ...]
        weights = self.split_weights(gap)  # [B, R, C]
        out = (weights.unsqueeze(-1) * splits).sum(1)  # [B, C, N]
        out_shape = [batch, self.channels] + list(u.shape[2:])
        return out.reshape(out_shape)


@register_attention("gc")
class ContextBlock(nn.Module):
    """GCNet's global context block (Cao et al., 2019), mmcv's ``ContextBlock``.

    Context modelling: attention pooling with a 1×1 conv C→1 (bias) and a softmax over all voxels (or plain
    average pooling) gives a [B, C] context; each fusion transforms it with 1×1 conv C→P (bias) → LayerNorm over
    [P, 1, …] → ReLU → 1×1 conv P→C (bias), P = int(C·ratio); ``channel_add`` adds the result to every voxel,
    ``channel_mul`` multiplies by its sigmoid. Parameters (att + add): 2CP + 2C + 3P + 1. The last conv of each
    fusion starts at zero, so the block starts as the identity. DSNet's table plugs it in after conv1 of every
    bottleneck with ratio 1/4 (and has a GCHead variant); GCNet itself uses it after conv3 (ratio 1/16 or 1/4).

    Args:
        spatial_dims: 2 or 3 (dimension-agnostic).
        channels: feature channels C.
        ratio: P / C (1/4 in DSNet's config).
        pooling: ``"att"`` or ``"avg"``.
        fusions: any of ``"channel_add"``, ``"channel_mul"``.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        ratio: float = 0.25,
        pooling: str = "att",
        fusions: Sequence[str] = ("channel_add",),
    ) -> None:
        super().__init__()
        if pooling not in ("att", "avg"):
            raise ValueError(f"pooling must be 'att' or 'avg', got '{pooling}'")
        if len(fusions) == 0 or any(f not in ("channel_add", "channel_mul") for f in fusions):
            raise ValueError(f"fusions must be a non-empty subset of ('channel_add', 'channel_mul'), got {fusions}")
        conv = Conv[Conv.CONV, spatial_dims]
        planes = max(int(channels * ratio), 1)
        self.pooling = pooling
        self.conv_mask = conv(channels, 1, 1) if pooling == "att" else None
        add, mul = "channel_add" in fusions, "channel_mul" in fusions
        self.channel_add_conv = self._transform(conv, channels, planes, spatial_dims) if add else None
        self.channel_mul_conv = self._transform(conv, channels, planes, spatial_dims) if mul else None
        self.reset_parameters()

    @staticmethod
    def _transform(conv, channels: int, planes: int, spatial_dims: int) -> nn.Sequential:
        return nn.Sequential(
            conv(channels, planes, 1),
            nn.LayerNorm([planes] + [1] * spatial_dims),
            nn.ReLU(inplace=True),
            conv(planes, channels, 1),
        )

    def reset_parameters(self) -> None:
        if self.conv_mask is not None:
            nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(self.conv_mask.bias)
        for fusion in (self.channel_add_conv, self.channel_mul_conv):
            if fusion is not None:
                nn.init.zeros_(fusion[-1].weight)
                nn.init.zeros_(fusion[-1].bias)

    def spatial_pool(self, x: torch.Tensor) -> torch.Tensor:
        """Global context [B, C, 1, ...]."""
        if self.conv_mask is not None:
            mask = torch.softmax(self.conv_mask(x).flatten(2), dim=-1)  # [B, 1, N]
            context = torch.bmm(x.flatten(2), mask.transpose(1, 2)).squeeze(-1)  # [B, C]
        else:
            context = global_pool(x, "avg")
        return expand_to(context, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self.spatial_pool(x)
        out = x
        if self.channel_mul_conv is not None:
            out = out * torch.sigmoid(self.channel_mul_conv(context))
        if self.channel_add_conv is not None:
            out = out + self.channel_add_conv(context)
        return out
