"""Self-attention family compared in DSNet (papers.md §002): PSA, DANet, CCNet, EANet, HamNet's NMF and DSM.

Each module is the attention block itself on C channels, not the decode head around it (DSNet uses DANet, CCNet,
EANet and HamNet as heads: a 3×3 conv block before, another after). Parameter layouts and attribute names follow
the code DSNet trained with (DPC-Net commit 9eb75a4 for PSA, EANet, HamNet and DSM; mmseg/mmcv for DANet and
CCNet), so 2D state dicts of that code load with ``load_state_dict``. Every module works on ``[B, C, *S]`` with
one to three spatial axes S; ``N`` below is the number of positions prod(S).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Norm, Pool

from medattn_networks.attention.registry import register_attention

__all__ = [
    "PolarizedSelfAttentionParallel",
    "PolarizedSelfAttentionSequential",
    "DANetPositionAttention",
    "DANetChannelAttention",
    "DANetDualAttention",
    "CrissCrossAttention",
    "ExternalAttention",
    "Hamburger",
    "DSM",
]


def _kaiming_fan_in(conv: nn.Module) -> None:
    """mmengine's ``kaiming_init(m, mode="fan_in")``: He-normal weights (ReLU gain), zero bias."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _unit_shape(x: torch.Tensor, channels: int) -> list[int]:
    """``[B, channels, 1, ..., 1]`` with as many singleton axes as ``x`` has spatial axes."""
    shape = [x.shape[0], channels]
    for _ in range(x.dim() - 2):
        shape.append(1)
    return shape


def _map_shape(x: torch.Tensor, channels: int) -> list[int]:
    """``[B, channels, *S]`` for the spatial size S of ``x``."""
    shape = [x.shape[0], channels]
    for axis in range(2, x.dim()):
        shape.append(x.shape[axis])
    return shape


# ------------------------------------------------------------------------------------------------------------ PSA
class _PolarizedBase(nn.Module):
    """Shared 1×1 convs of polarized self-attention; C/2 inner channels, no bias, He(fan-in) init as released."""

    def __init__(self, spatial_dims: int, channels: int) -> None:
        super().__init__()
        if channels < 2:
            raise ValueError(f"polarized self-attention needs at least 2 channels, got {channels}")
        conv = Conv[Conv.CONV, spatial_dims]
        self.inter = channels // 2
        self.conv_q_right = conv(channels, 1, 1, bias=False)
        self.conv_v_right = conv(channels, self.inter, 1, bias=False)
        self.conv_q_left = conv(channels, self.inter, 1, bias=False)
        self.conv_v_left = conv(channels, self.inter, 1, bias=False)
        for m in (self.conv_q_right, self.conv_v_right, self.conv_q_left, self.conv_v_left):
            _kaiming_fan_in(m)

    def channel_context(self, x: torch.Tensor) -> torch.Tensor:
        """Channel-only branch up to ``conv_up``: Σ_N softmax_N(W_q x) · W_v x, shape [B, C/2, 1, ...]."""
        v = self.conv_v_right(x).flatten(2)  # [B, C/2, N]
        q = torch.softmax(self.conv_q_right(x).flatten(2), dim=2)  # [B, 1, N]
        return torch.matmul(v, q.transpose(1, 2)).reshape(_unit_shape(x, self.inter))

    def pooled_query(self, x: torch.Tensor) -> torch.Tensor:
        """Spatial-only branch query: global average of W_q x, shape [B, 1, C/2]."""
        return self.conv_q_left(x).flatten(2).mean(2).unsqueeze(1)


@register_attention("psa_p")
class PolarizedSelfAttentionParallel(_PolarizedBase):
    """Polarized self-attention, parallel layout (Liu et al. 2021), as released and as DSNet uses it.

    Channel-only: ch = σ(W_up Σ_N softmax_N(W_q x) W_v x) ∈ [B, C, 1..];
    spatial-only: sp = σ(softmax_N(GAP(W_g x)ᵀ W_θ x)) ∈ [B, 1, S]; out = x·ch + x·sp. The softmax over positions
    before the sigmoid in the spatial branch is what the released code does (the paper's equation puts a softmax
    over channels on the pooled query instead).
    Params: 2C² + C (all convs bias-free). DSNet inserts it at ``after_conv1`` of every ResNet bottleneck.

    Args:
        spatial_dims: 2 or 3.
        channels: feature channels C (inner width C // 2).
    """

    def __init__(self, spatial_dims: int, channels: int) -> None:
        super().__init__(spatial_dims, channels)
        self.conv_up = Conv[Conv.CONV, spatial_dims](self.inter, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel_mask = torch.sigmoid(self.conv_up(self.channel_context(x)))
        theta = self.conv_v_left(x).flatten(2)  # [B, C/2, N]
        context = torch.softmax(torch.matmul(self.pooled_query(x), theta), dim=2)  # [B, 1, N]
        spatial_mask = torch.sigmoid(context).reshape(_map_shape(x, 1))
        return x * channel_mask + x * spatial_mask


@register_attention("psa_s")
class PolarizedSelfAttentionSequential(_PolarizedBase):
    """Polarized self-attention, sequential layout: spatial-only(channel-only(x)), as released.

    The channel branch's up-projection is a bottleneck: 1×1 C/2→C/8 (bias) → LayerNorm([C/8, 1..]) → ReLU → 1×1
    C/8→C (bias). The spatial branch normalises W_θ x with a softmax over positions per channel before the product
    with the pooled query, then applies a sigmoid. Params: 27C²/16 + 19C/8 for C divisible by 8 (inner widths
    C // 2 and max(C // 8, 1)). DSNet inserts it at ``after_conv1`` of every ResNet bottleneck.

    Args:
        spatial_dims: 2 or 3.
        channels: feature channels C.
    """

    def __init__(self, spatial_dims: int, channels: int) -> None:
        super().__init__(spatial_dims, channels)
        conv = Conv[Conv.CONV, spatial_dims]
        squeeze = max(self.inter // 4, 1)
        self.conv_up = nn.Sequential(
            conv(self.inter, squeeze, 1),
            nn.LayerNorm([squeeze] + [1] * spatial_dims),
            nn.ReLU(inplace=True),
            conv(squeeze, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.sigmoid(self.conv_up(self.channel_context(x)))
        theta = torch.softmax(self.conv_v_left(x).flatten(2), dim=2)  # [B, C/2, N]
        context = torch.matmul(self.pooled_query(x), theta)  # [B, 1, N]
        return x * torch.sigmoid(context).reshape(_map_shape(x, 1))


# ---------------------------------------------------------------------------------------------------------- DANet
@register_attention("danet_position")
class DANetPositionAttention(nn.Module):
    """DANet's position attention module (PAM, Fu et al. 2019) as in mmseg's DAHead.

    q = W_q x, k = W_k x (1×1 to ``pam_channels``, bias), v = W_v x (1×1 C→C, bias); A = softmax over keys of qᵀk
    (no scaling), out = γ·(v Aᵀ) + x with γ a learnt scalar initialised to 0. Params: 2(C·k + k) + C² + C + 1.

    Args:
        spatial_dims: 2 or 3.
        channels: feature channels C.
        pam_channels: query/key width k (DSNet's DANet config uses 64 at C = 512).
    """

    def __init__(self, spatial_dims: int, channels: int, pam_channels: int = 64) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.query_project = conv(channels, pam_channels, 1)
        self.key_project = conv(channels, pam_channels, 1)
        self.value_project = conv(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query = self.query_project(x).flatten(2).transpose(1, 2)  # [B, N, k]
        key = self.key_project(x).flatten(2)  # [B, k, N]
        value = self.value_project(x).flatten(2)  # [B, C, N]
        attn = torch.softmax(torch.matmul(query, key), dim=-1)  # [B, N(query), N(key)]
        context = torch.matmul(value, attn.transpose(1, 2))  # [B, C, N]
        return self.gamma * context.reshape(x.shape) + x


@register_attention("danet_channel")
class DANetChannelAttention(nn.Module):
    """DANet's channel attention module (CAM) as in mmseg's DAHead.

    E = X Xᵀ over positions ([B, C, C]); A = softmax(max_row(E) − E); out = γ·(A X) + x, γ a learnt scalar (init 0).
    Params: 1.

    Args:
        spatial_dims: 2 or 3 (unused; the module is dimension-agnostic).
        channels: feature channels C (unused).
    """

    def __init__(self, spatial_dims: int, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)  # [B, C, N]
        energy = torch.matmul(flat, flat.transpose(1, 2))
        energy = energy.amax(dim=-1, keepdim=True) - energy
        out = torch.matmul(torch.softmax(energy, dim=-1), flat)
        return self.gamma * out.reshape(x.shape) + x


@register_attention("danet")
class DANetDualAttention(nn.Module):
    """DANet dual attention: PAM(x) + CAM(x), the two branches summed as DANet sums them.

    In DAHead each branch sits between its own 3×3 ConvBNReLU in/out convs (not part of this module) and the two
    branch features are summed; here both branches read the same x. Params: PAM's + 1.

    Args:
        spatial_dims: 2 or 3.
        channels: feature channels C.
        pam_channels: query/key width of the position branch.
    """

    def __init__(self, spatial_dims: int, channels: int, pam_channels: int = 64) -> None:
        super().__init__()
        self.pam = DANetPositionAttention(spatial_dims, channels, pam_channels)
        self.cam = DANetChannelAttention(spatial_dims, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pam(x) + self.cam(x)


# ---------------------------------------------------------------------------------------------------------- CCNet
@register_attention("cca")
class CrissCrossAttention(nn.Module):
    """Criss-cross attention (Huang et al. 2019) as mmcv's ``CrissCrossAttention``, run ``recurrence`` times.

    Each position attends to every position on its axis-parallel lines: row and column in 2D; row, column and
    depth line in 3D. Energies qᵀk (q, k: 1×1 C→C/8, bias) of all lines are joined in one softmax; the position
    itself is counted once (masked out of every line but the last axis). out = γ·Σ attn·v + x, v: 1×1 C→C (bias), γ
    learnt (init 0). The same weights are reused on each recurrence (CCNet's R = 2).
    Params: 2(C·C/8 + C/8) + C² + C + 1, independent of ``recurrence``.

    Args:
        spatial_dims: 2 or 3.
        channels: feature channels C.
        recurrence: how many times the block is applied (weights shared).
        reduction: query/key width ``max(C // reduction, 1)`` (8 in CCNet).
    """

    def __init__(self, spatial_dims: int, channels: int, recurrence: int = 2, reduction: int = 8) -> None:
        super().__init__()
        if recurrence < 1:
            raise ValueError(f"recurrence must be positive, got {recurrence}")
        conv = Conv[Conv.CONV, spatial_dims]
        inner = max(channels // reduction, 1)
        self.spatial_dims = spatial_dims
        self.recurrence = recurrence
        self.query_conv = conv(channels, inner, 1)
        self.key_conv = conv(channels, inner, 1)
        self.value_conv = conv(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def _attend_2d(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        h = q.shape[2]
        eye = torch.eye(h, dtype=torch.bool, device=q.device)
        energy_h = torch.einsum("bchw,bciw->bhwi", q, k).masked_fill(eye.unsqueeze(1), float("-inf"))
        energy_w = torch.einsum("bchw,bchj->bhwj", q, k)
        attn = torch.softmax(torch.cat([energy_h, energy_w], dim=-1), dim=-1)
        out = torch.einsum("bciw,bhwi->bchw", v, attn[..., :h])
        return out + torch.einsum("bchj,bhwj->bchw", v, attn[..., h:])

    def _attend_3d(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        d, h = q.shape[2], q.shape[3]
        eye_d = torch.eye(d, dtype=torch.bool, device=q.device).unsqueeze(1).unsqueeze(1)  # [D, 1, 1, D']
        eye_h = torch.eye(h, dtype=torch.bool, device=q.device).unsqueeze(1).unsqueeze(0)  # [1, H, 1, H']
        energy_d = torch.einsum("bcdhw,bcihw->bdhwi", q, k).masked_fill(eye_d, float("-inf"))
        energy_h = torch.einsum("bcdhw,bcdiw->bdhwi", q, k).masked_fill(eye_h, float("-inf"))
        energy_w = torch.einsum("bcdhw,bcdhj->bdhwj", q, k)
        attn = torch.softmax(torch.cat([energy_d, energy_h, energy_w], dim=-1), dim=-1)
        out = torch.einsum("bcihw,bdhwi->bcdhw", v, attn[..., :d])
        out = out + torch.einsum("bcdiw,bdhwi->bcdhw", v, attn[..., d : d + h])
        return out + torch.einsum("bcdhj,bdhwj->bcdhw", v, attn[..., d + h :])

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """One criss-cross pass: γ·CCA(x) + x."""
        q, k, v = self.query_conv(x), self.key_conv(x), self.value_conv(x)
        if self.spatial_dims == 3:
            out = self._attend_3d(q, k, v)
        else:
            out = self._attend_2d(q, k, v)
        return self.gamma * out + x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.recurrence):
            x = self.attend(x)
        return x


# ---------------------------------------------------------------------------------------------------------- EANet
@register_attention("ea")
class ExternalAttention(nn.Module):
    """External attention unit of EANet (Guo et al. 2021) as DSNet's EAHead builds it (token-MLP form).

    Tokens t = Linear C→C (bias)(x) one per position; A = linear_1(t) against ``memory_units`` external keys (no
    bias); double normalisation: softmax over the N tokens, then division by the sum over the memory units (+1e-9);
    out = t + proj(linear_2(A)) (linear_2: units→C with bias, proj: C→C with bias). ``linear_2`` starts as a copy of
    ``linear_1``'s transposed weight (the released code aliases them at init; moving the model to a device splits
    them, so they train as separate parameters). Params: 2C² + (2·units + 3)·C.

    Args:
        spatial_dims: 2 or 3.
        channels: feature channels C.
        memory_units: number of external memory units (128 in EANet / DSNet).
        seed_view: ``False`` (default) makes one token per position (EANet's formula). ``True`` reproduces the
            released ``x.view(B, N, C)``, which reinterprets the [B, C, *S] memory as N rows of C numbers instead of
            transposing it, so a "token" mixes channels and positions; use it only to run DSNet's trained weights.
    """

    def __init__(self, spatial_dims: int, channels: int, memory_units: int = 128, seed_view: bool = False) -> None:
        super().__init__()
        self.seed_view = seed_view
        self.q_linear = nn.Linear(channels, channels)
        self.linear_1 = nn.Linear(channels, memory_units, bias=False)
        self.linear_2 = nn.Linear(memory_units, channels)
        self.proj = nn.Linear(channels, channels)
        with torch.no_grad():
            self.linear_2.weight.copy_(self.linear_1.weight.t())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[0], x.shape[1]
        if self.seed_view:
            tokens = x.reshape(b, -1, c)
        else:
            tokens = x.flatten(2).transpose(1, 2)  # [B, N, C]
        tokens = self.q_linear(tokens)
        attn = torch.softmax(self.linear_1(tokens), dim=1)  # over the N tokens
        attn = attn / (1e-9 + attn.sum(dim=-1, keepdim=True))  # over the memory units
        out = tokens + self.proj(self.linear_2(attn))
        if self.seed_view:
            return out.reshape(x.shape)
        return out.transpose(1, 2).reshape(x.shape)


# --------------------------------------------------------------------------------------------------------- HamNet
@register_attention("ham")
class Hamburger(nn.Module):
    """HamNet's "hamburger" (Geng et al. 2021) with NMF, as in HamHead between its squeeze and align convs.

    out = ReLU(x + GN(W_out · NMF(ReLU(W_in x + b_in)))), W_in/W_out 1×1 C→C (W_out without bias).
    NMF: the non-negative map is split into ``heads`` groups of D = C/heads channels, X ∈ [D, N]; bases
    B ∈ [D, R] start uniform-random with unit-L2 columns, coefficients start as softmax_R(XᵀB); ``train_steps`` /
    ``eval_steps`` multiplicative updates (Cᵀ ← C·(XᵀB)/(C BᵀB + 1e-6), then B ← B·(XC)/(B CᵀC + 1e-6)); one more
    coefficient update; the output is B Cᵀ. Params: 2C² + 3C (GroupNorm affine included).

    Gradients: with ``one_step_grad=True`` (default) the iterations run on a detached copy of X, so the gradient
    reaches X only through the final coefficient update and B Cᵀ — HamNet's one-step gradient (mmseg's
    ``@torch.no_grad`` on ``local_inference``). DSNet's released copy commented those decorators out and
    back-propagates through every iteration; ``one_step_grad=False`` does that. Forward values are the same.

    Random bases: drawn afresh on every call from the global RNG, as the reference does; with ``seed`` set they
    come from ``torch.Generator(device=x.device).manual_seed(seed)`` drawn as ``torch.rand((B·heads, D, R))``, so
    every call is deterministic (and uses the same bases). TorchScript handles both paths; ONNX export works
    without ``seed`` (a RandomUniformLike node) but not with it (the generator object cannot be exported).

    Args:
        spatial_dims: 2 or 3.
        channels: feature channels C.
        rank: R, number of bases (64).
        train_steps: NMF iterations in training mode (6).
        eval_steps: NMF iterations in eval mode (7).
        heads: S, channel groups decomposed separately (1); must divide C.
        norm_groups: GroupNorm groups wanted (32 in DSNet's config); ``gcd(norm_groups, C)`` are used.
        one_step_grad: see above.
        seed: fixed seed for the random bases, or None for the global RNG.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        rank: int = 64,
        train_steps: int = 6,
        eval_steps: int = 7,
        heads: int = 1,
        norm_groups: int = 32,
        one_step_grad: bool = True,
        seed: Optional[int] = None,
    ) -> None:
        super().__init__()
        if channels % heads != 0:
            raise ValueError(f"heads ({heads}) must divide channels ({channels})")
        conv = Conv[Conv.CONV, spatial_dims]
        self.rank = rank
        self.train_steps = train_steps
        self.eval_steps = eval_steps
        self.heads = heads
        self.one_step_grad = one_step_grad
        self.seed = seed
        self.ham_in = conv(channels, channels, 1)
        self.ham_out = nn.Sequential(
            conv(channels, channels, 1, bias=False), nn.GroupNorm(math.gcd(norm_groups, channels), channels)
        )

    def random_bases(self, batch: int, dim: int, x: torch.Tensor) -> torch.Tensor:
        """Uniform bases [batch, dim, R] with unit-L2 columns."""
        seed = self.seed
        if seed is not None:
            gen = torch.Generator(device=x.device)
            gen.manual_seed(seed)
            bases = torch.rand([batch, dim, self.rank], generator=gen, dtype=x.dtype, device=x.device)
        else:
            bases = torch.rand([batch, dim, self.rank], dtype=x.dtype, device=x.device)
        return F.normalize(bases, dim=1)

    @staticmethod
    def update_coef(x: torch.Tensor, bases: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        numerator = torch.bmm(x.transpose(1, 2), bases)
        denominator = coef.bmm(bases.transpose(1, 2).bmm(bases))
        return coef * numerator / (denominator + 1e-6)

    def nmf(self, x: torch.Tensor) -> torch.Tensor:
        """Low-rank NMF reconstruction of a non-negative map [B, C, *S]."""
        b, c = x.shape[0], x.shape[1]
        dim = c // self.heads
        flat = x.reshape(b * self.heads, dim, -1)  # [B·S, D, N]
        inner = flat.detach() if self.one_step_grad else flat
        bases = self.random_bases(b * self.heads, dim, x)
        coef = torch.softmax(torch.bmm(inner.transpose(1, 2), bases), dim=-1)  # [B·S, N, R]
        steps = self.train_steps if self.training else self.eval_steps
        for _ in range(steps):
            coef = self.update_coef(inner, bases, coef)
            numerator = torch.bmm(inner, coef)
            denominator = bases.bmm(coef.transpose(1, 2).bmm(coef))
            bases = bases * numerator / (denominator + 1e-6)
        coef = self.update_coef(flat, bases, coef)
        return torch.bmm(bases, coef.transpose(1, 2)).reshape(x.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        enjoy = self.ham_out(self.nmf(F.relu(self.ham_in(x))))
        return F.relu(x + enjoy)


# ------------------------------------------------------------------------------------------------------------ DSM
class _SelectiveKernelAttention(nn.Module):
    """Two-path selective-kernel weights (timm's SelectiveKernelAttn as DSNet copies it): [B, 2, C, 1]."""

    def __init__(self, fc_reduce: nn.Module, bn: nn.Module, fc_select: nn.Module) -> None:
        super().__init__()
        self.fc_reduce = fc_reduce
        self.bn = bn
        self.act = nn.ReLU(inplace=True)
        self.fc_select = fc_select

    def forward(self, summed: torch.Tensor, spatial_dims: int) -> torch.Tensor:
        # summed: [B, C, N], the sum of the two paths; its spatial mean feeds the 1×1 convs as a [B, C, 1..] map
        b, c = summed.shape[0], summed.shape[1]
        s = summed.mean(dim=2)
        for _ in range(spatial_dims):
            s = s.unsqueeze(-1)
        s = self.fc_select(self.act(self.bn(self.fc_reduce(s))))
        return torch.softmax(s.reshape(b, 2, c, 1), dim=1)


@register_attention("dsm")
class DSM(nn.Module):
    """DSNet's decoupled self-attention module: attention as a learnt correction factor (papers.md §002).

    With c' = C // ratio and N positions:
    channel: ch = σ(W_up ReLU(LN_[c',1..](W_v x · softmax_N(W_q x)ᵀ))) ∈ [B, C, 1] (W_v: C→c', W_q: C→1, W_up: c'→C);
    spatial: sp = σ(softmax_c'(maxpool(W_g x))ᵀ · W_θ x) ∈ [B, 1, N] (W_g, W_θ: C→c');
    series Q = ch ⊗ sp, parallel P = ch + sp ([B, C, N]); selective-kernel fusion: s = mean_N(Q + P) → 1×1 C→c'
    (no bias) → BN → ReLU → 1×1 c'→2C (no bias) → softmax over the two paths → A = α_Q Q + α_P P;
    M = softmax_N(A) per channel; V = ReLU(W_r x) (W_r: C→C); out = x + Σ_N M ⊙ V (one value per channel,
    broadcast over the positions). ``bias`` applies to every 1×1 conv outside the SK block.
    Params: C² + 7Cc' + 4c' + C + bias·(2C + 3c' + 1) — 1,182,977 at C = 512, ratio 2, bias True.

    Placement in DSNet: a ResNet bottleneck plugin (FCN+DSM: stage 4, after_conv2, ratio 2, bias True; variant B:
    all stages, after_conv1, ratio 16) or inside the DSNet FCN head (C = 512, ratio 2, bias False).

    Args:
        spatial_dims: 2 or 3.
        channels: feature channels C.
        ratio: r, inner width C // r (must be at least 1).
        bias: bias on the 1×1 convs outside the SK block (the released class defaults to False).
        sk_norm: norm of the SK descriptor: ``"batch"`` (DSNet) or ``"layer"`` (GroupNorm with one group over the c'
            descriptor, same parameter count). BatchNorm on a [B, c', 1..] descriptor cannot train at batch size 1
            (PyTorch raises, as the released code would); use ``"layer"`` for batch-1 training.
    """

    def __init__(
        self, spatial_dims: int, channels: int, ratio: int = 2, bias: bool = False, sk_norm: str = "batch"
    ) -> None:
        super().__init__()
        inner = channels // ratio
        if inner < 1:
            raise ValueError(f"channels // ratio must be positive, got {channels} // {ratio}")
        if sk_norm not in ("batch", "layer"):
            raise ValueError(f"sk_norm must be 'batch' or 'layer', got '{sk_norm}'")
        conv = Conv[Conv.CONV, spatial_dims]
        self.channels = channels
        self.inner = inner
        self.sk_norm = sk_norm
        self.conv_q_right = conv(channels, 1, 1, bias=bias)
        self.conv_v_right = conv(channels, inner, 1, bias=bias)
        self.conv_up = nn.Sequential(
            nn.LayerNorm([inner] + [1] * spatial_dims), nn.ReLU(inplace=True), conv(inner, channels, 1, bias=bias)
        )
        self.conv_q_left = conv(channels, inner, 1, bias=bias)
        self.conv_v_left = conv(channels, inner, 1, bias=bias)
        self.gap = Pool[Pool.ADAPTIVEMAX, spatial_dims](1)
        sk_bn = Norm[Norm.BATCH, spatial_dims](inner) if sk_norm == "batch" else nn.GroupNorm(1, inner)
        self.sk = _SelectiveKernelAttention(
            conv(channels, inner, 1, bias=False), sk_bn, conv(inner, 2 * channels, 1, bias=False)
        )
        self.resConv = nn.Sequential(conv(channels, channels, 1, bias=bias), nn.ReLU(inplace=True))
        for m in (self.conv_q_right, self.conv_v_right, self.conv_q_left, self.conv_v_left):
            _kaiming_fan_in(m)

    def channel_attention(self, x: torch.Tensor) -> torch.Tensor:
        """ch ∈ (0, 1), shape [B, C, 1]."""
        value = self.conv_v_right(x).flatten(2)  # [B, c', N]
        mask = torch.softmax(self.conv_q_right(x).flatten(2), dim=2)  # [B, 1, N]
        context = torch.matmul(value, mask.transpose(1, 2)).reshape(_unit_shape(x, self.inner))
        return torch.sigmoid(self.conv_up(context)).reshape(x.shape[0], self.channels, 1)

    def spatial_attention(self, x: torch.Tensor) -> torch.Tensor:
        """sp ∈ (0, 1), shape [B, 1, N]."""
        query = torch.softmax(self.gap(self.conv_q_left(x)), dim=1).reshape(x.shape[0], 1, self.inner)
        theta = self.conv_v_left(x).flatten(2)  # [B, c', N]
        return torch.sigmoid(torch.matmul(query, theta))

    def correction_map(self, x: torch.Tensor) -> torch.Tensor:
        """M = softmax_N of the SK-fused series/parallel map, shape [B, C, N]."""
        ch = self.channel_attention(x)
        sp = self.spatial_attention(x)
        series = torch.bmm(ch, sp)
        parallel = ch + sp
        weights = self.sk(series + parallel, x.dim() - 2)  # [B, 2, C, 1]
        fused = weights[:, 0] * series + weights[:, 1] * parallel
        return torch.softmax(fused, dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.sk_norm == "batch" and x.shape[0] == 1:
            raise ValueError(
                "DSM's SK fusion uses BatchNorm on one descriptor per sample, which cannot train at batch size 1; "
                "train with batch >= 2 or build the module with sk_norm='layer'"
            )
        value = self.resConv(x).flatten(2)  # [B, C, N]
        aggregated = (value * self.correction_map(x)).sum(dim=2)  # [B, C]
        return x + aggregated.reshape(_unit_shape(x, self.channels))
