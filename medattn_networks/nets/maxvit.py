"""MaxViT ``maxvit_rmlp_small_rw_224`` (timm's RW variant with an MLP relative bias), written here: MSA²Net's encoder.

Facts: papers.md §004 and timm 1.0.31 ``timm/models/maxxvit.py`` (read, not imported: timm needs torchvision, which
does not work with the CPU torch here). The state-dict keys and shapes equal timm's without ``head.*``
(``stem.conv1``, ``stages.i.blocks.j.conv.conv2_kxk``, ``...attn_block.attn.rel_pos.mlp.fc1``, ``...ls1.gamma``,
``norm``), so a timm checkpoint file loads with ``strict=True`` after dropping the classifier
(:func:`load_timm_maxvit`). 64,126,044 parameters.

- stem: conv3×3 s2 3→32 (no bias) → BN + SiLU → conv3×3 32→64 (no bias);
- 4 stages (96/192/384/768 wide, depths 2/2/5/2), every block = MBConv → window attention → grid attention, stride 2
  in the first block of each stage;
- MBConv: BN (no act) → 1×1 to 4·in → BN + SiLU → depthwise 3×3 (the stride) → BN + SiLU → SE (SiLU, to 1/16 of
  the expanded width) → 1×1 (no bias) + shortcut (AvgPool 2 → 1×1, no bias, on stride-2 blocks);
- attention blocks (channels-last): LN (eps 1e-6) → multi-head attention in 7×7 windows / on a 7×7 grid (head-first
  qkv, dim_head 32, MLP relative bias on sign·ln(1+|Δ|) offsets) → layer scale (1e-6); LN → MLP 4× (GELU) → layer
  scale;
- outputs: the four stage maps (strides 4, 8, 16, 32), LayerNorm over channels (eps 1e-6) on the last only.

MaxViT is 2D (its weights are 2D); the window/grid partitions and the attention are the shared toolkit's
n-dimensional ones.

Checked against timm's own model outside the project (timm 1.0.31 imported with a throw-away torchvision stub,
random weights with BN statistics and layer scales moved off their init, copied with ``load_state_dict(strict=True)``):
the four stage maps at 2 × 3 × 224² differ by at most 3.8e-14 in float64 and 1.8e-5 in float32 (values up to 14).
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers import DropPath

from medattn_networks.attention.channel import SqueezeExcitation
from medattn_networks.blocks.transformer import Mlp, MlpRelativePositionBias, WindowAttention, drop_path_rates, set_fused_attention
from medattn_networks.blocks.windows import grid_partition, grid_reverse, window_partition, window_reverse

__all__ = ["MaxViT", "MaxViTAttention", "MBConv", "PartitionAttention", "maxvit_rmlp_small_rw_224", "load_timm_maxvit"]


class _BatchNormAct(nn.BatchNorm2d):
    """BatchNorm2d followed by SiLU, as one module (timm's BatchNormAct2d: the keys stay ``norm.weight`` …)."""

    def __init__(self, channels: int, act: bool = True, eps: float = 1e-5) -> None:
        super().__init__(channels, eps=eps)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class _LayerScale(nn.Module):
    """``x · gamma`` per channel (channels-last), gamma initialised to ``init_value``."""

    def __init__(self, dim: int, init_value: float = 1e-6) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


class _Downsample(nn.Module):
    """MBConv shortcut of a stride-2 block: AvgPool 2 then a 1×1 conv (no bias) when the width changes."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(2, 2)
        self.expand = nn.Conv2d(in_channels, out_channels, 1, bias=False) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.pool(x))


class MBConv(nn.Module):
    """MaxViT's pre-norm inverted bottleneck with squeeze-excitation (timm ``MbConvBlock``, RW configuration).

    Args:
        in_channels: input width.
        out_channels: output width.
        stride: 1 or 2 (in the depthwise conv; the shortcut pools).
        expand_ratio: expanded width / ``in_channels``.
        se_ratio: SE hidden width / expanded width.
        drop_path: stochastic depth of the residual branch.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, expand_ratio: float = 4.0, se_ratio: float = 1 / 16, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        mid = int(in_channels * expand_ratio)
        self.shortcut = _Downsample(in_channels, out_channels) if stride == 2 else nn.Identity()
        self.pre_norm = _BatchNormAct(in_channels, act=False)
        self.conv1_1x1 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.norm1 = _BatchNormAct(mid)
        self.conv2_kxk = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.norm2 = _BatchNormAct(mid)
        self.se = SqueezeExcitation(2, mid, act="swish", hidden_channels=int(se_ratio * mid))
        self.conv3_1x1 = nn.Conv2d(mid, out_channels, 1, bias=False)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        x = self.norm2(self.conv2_kxk(self.norm1(self.conv1_1x1(self.pre_norm(x)))))
        return self.drop_path(self.conv3_1x1(self.se(x))) + shortcut


class MaxViTAttention(WindowAttention):
    """:class:`WindowAttention` with MaxViT's head-first qkv layout and log-spaced MLP relative bias.

    The qkv projection's output is read as (N, heads, 3·dim_head) — each head's q, k and v side by side — not as
    (N, 3, heads, dim_head). Keys ``qkv``, ``rel_pos.mlp.fc1/fc2``, ``proj``.

    Args:
        spatial_dims: dims of the windows (2 for MaxViT).
        channels: token width.
        window_size: window (or grid) per axis.
        dim_head: width of a head (heads = channels / dim_head).
        rel_pos_dim: hidden width of the relative-bias MLP.
        fused: use scaled_dot_product_attention.
    """

    def __init__(
        self, spatial_dims: int, channels: int, window_size: Sequence[int] | int = 7, dim_head: int = 32, rel_pos_dim: int = 512, fused: bool = True
    ) -> None:
        super().__init__(spatial_dims, channels, channels // dim_head, window_size, relative_bias=None, fused=fused)
        self.relative_bias = "mlp"
        self.rel_pos = MlpRelativePositionBias(self.window_size, self.num_heads, rel_pos_dim, log_spaced=True, hidden_drop=0.125)

    def forward_tokens(
        self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, memory: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        bw, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(bw, n, self.num_heads, 3 * self.head_dim).transpose(1, 2).chunk(3, dim=-1)
        return self.attend(q, k, v, mask), None


class PartitionAttention(nn.Module):
    """One MaxViT attention block on a channels-last map (B, H, W, C): window (``"block"``) or grid partition.

    ``x + ls1(attention(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))``, each with drop path.

    Args:
        dim: width.
        partition: ``"block"`` (7×7 windows) or ``"grid"`` (a 7×7 lattice over the whole map).
        partition_size: window / grid size.
        dim_head: width of a head.
        mlp_ratio: MLP width / dim.
        layer_scale: initial layer-scale value.
        drop_path: stochastic depth.
    """

    def __init__(
        self,
        dim: int,
        partition: str = "block",
        partition_size: int = 7,
        dim_head: int = 32,
        mlp_ratio: float = 4.0,
        layer_scale: float = 1e-6,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if partition not in ("block", "grid"):
            raise ValueError(f"partition must be 'block' or 'grid', got '{partition}'")
        self.partition = partition
        self.partition_size = (partition_size, partition_size)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MaxViTAttention(2, dim, self.partition_size, dim_head)
        self.ls1 = _LayerScale(dim, layer_scale)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act="GELU")
        self.ls2 = _LayerScale(dim, layer_scale)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[1:-1])
        if self.partition == "block":
            out = self.attn.forward_tokens(window_partition(x, self.partition_size))[0]
            return window_reverse(out, self.partition_size, size)
        out = self.attn.forward_tokens(grid_partition(x, self.partition_size))[0]
        return grid_reverse(out, self.partition_size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self._attend(self.norm1(x))))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


class _MaxViTBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, drop_path: float, **attn_kwargs) -> None:
        super().__init__()
        self.conv = MBConv(in_channels, out_channels, stride, drop_path=drop_path)
        self.attn_block = PartitionAttention(out_channels, "block", drop_path=drop_path, **attn_kwargs)
        self.attn_grid = PartitionAttention(out_channels, "grid", drop_path=drop_path, **attn_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).permute(0, 2, 3, 1)
        return self.attn_grid(self.attn_block(x)).permute(0, 3, 1, 2)


class _Stage(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, depth: int, drop_path: Sequence[float], **attn_kwargs) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            *(
                _MaxViTBlock(in_channels if j == 0 else out_channels, out_channels, 2 if j == 0 else 1, drop_path[j], **attn_kwargs)
                for j in range(depth)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class _Stem(nn.Module):
    def __init__(self, in_channels: int, widths: Sequence[int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=2, padding=1, bias=False)
        self.norm1 = _BatchNormAct(widths[0])
        self.conv2 = nn.Conv2d(widths[0], widths[1], 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.norm1(self.conv1(x)))


class MaxViT(nn.Module):
    """MaxViT encoder returning its four stage maps (strides 4, 8, 16, 32; the last layer-normed).

    Input sides must be multiples of 32 · 7 / 7 … in practice of ``32 · window`` / stage: at 224² the stage maps are
    56², 28², 14², 7², each divisible by the 7×7 window and grid.

    Args:
        in_channels: image channels (3 for timm weights).
        embed_dims: width per stage.
        depths: blocks per stage.
        stem_widths: widths of the stem's two convs.
        window_size: window and grid size.
        dim_head: width of an attention head.
        mlp_ratio: MLP width / dim.
        layer_scale: initial layer-scale value.
        drop_path_rate: stochastic depth, linear over all blocks (timm's rule).
        fused_attention: run attention on scaled_dot_product_attention (False: the plain-math path).
    """

    def __init__(
        self,
        in_channels: int = 3,
        embed_dims: Sequence[int] = (96, 192, 384, 768),
        depths: Sequence[int] = (2, 2, 5, 2),
        stem_widths: Sequence[int] = (32, 64),
        window_size: int = 7,
        dim_head: int = 32,
        mlp_ratio: float = 4.0,
        layer_scale: float = 1e-6,
        drop_path_rate: float = 0.0,
        fused_attention: bool = True,
    ) -> None:
        super().__init__()
        if len(embed_dims) != len(depths):
            raise ValueError(f"embed_dims {list(embed_dims)} and depths {list(depths)} need one entry per stage")
        self.window_size = window_size
        self.stem = _Stem(in_channels, stem_widths)
        rates = drop_path_rates(depths, drop_path_rate)
        stages, width = [], stem_widths[-1]
        for i, (dim, depth) in enumerate(zip(embed_dims, depths)):
            stages.append(
                _Stage(width, dim, depth, rates[i], partition_size=window_size, dim_head=dim_head, mlp_ratio=mlp_ratio, layer_scale=layer_scale)
            )
            width = dim
        self.stages = nn.Sequential(*stages)
        self.norm = _LayerNorm2d(embed_dims[-1], eps=1e-6)
        self.out_channels = tuple(embed_dims)
        set_fused_attention(self, fused_attention)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        multiple = 2 ** (len(self.stages) + 1) * self.window_size
        if x.shape[-2] % multiple or x.shape[-1] % multiple:
            raise ValueError(f"MaxViT needs input sides that are multiples of {multiple}, got {list(x.shape[-2:])}")
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        features[-1] = self.norm(features[-1])
        return features


def maxvit_rmlp_small_rw_224(**kwargs) -> MaxViT:
    """timm's ``maxvit_rmlp_small_rw_224`` encoder (64,126,044 parameters); ``kwargs`` as :class:`MaxViT`."""
    return MaxViT(**kwargs)


def load_timm_maxvit(model: MaxViT, path: str | os.PathLike) -> MaxViT:
    """Load a local timm ``maxvit_rmlp_small_rw_224`` checkpoint (``.pth`` or ``.safetensors``; weights only, never
    downloaded) into ``model`` strictly, after dropping the classifier (``head.*``)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no MaxViT checkpoint there (pass a local timm maxvit_rmlp_small_rw_224 file)")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ValueError(f"{path}: not a maxvit_rmlp_small_rw_224 state dict ({first})") from None
    return model
