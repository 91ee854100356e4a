"""nnFormer (Zhou et al. 2021) at the FLARE configuration of the 3D UX-Net benchmark, with optional MAM (seed 000).

Facts: papers.md §000 and the released nnFormer(-MAM) of CAU-COE-VEICLab/Recurrent-Attention @ 2e44a4d
(``networks/nnFormer/nnFormer_seg.py`` / ``MemorynnFormer_seg.py``). Built on the shared transformer toolkit:

- patch embedding: two conv projections (conv3 → GELU → LN → conv3 [→ GELU → LN]), strides
  ``(p0, p1/2, p2/2)`` then ``(p0/2, p1/2, p2/2)``, then LN (:class:`NNFormerPatchEmbed`);
- encoder: four :class:`~medattn_networks.blocks.transformer.SwinStage` s (W-MSA / SW-MSA alternating, nnFormer's
  non-bijective relative index, Swin-Unet's "min" window rule on the build-time grid), each followed by nnFormer's
  merging GELU → LN → Conv3d k3 s2 p1 (:class:`NNFormerPatchMerging`); every stage output (before merging) is
  layer-normed (``norm0`` … ``norm3``) and is a skip, the last one the bottleneck;
- decoder: three stages, each = patch expanding LN → ConvTranspose3d k2 s2 (:class:`NNFormerPatchExpand`), then a
  KV-attention block (:class:`NNFormerKVBlock`: keys/values from the layer-normed skip, queries the layer-normed
  upsampled tokens *without* a projection, residual on upsampled + skip, no shift), then shifted Swin blocks
  (every later block shifted, as released); final ConvTranspose3d with kernel = stride = patch. No deep supervision.

At 96³ with patch [2,4,4] the token grid is 48×24×24: nominal windows [4,4,8,4] become [4,4,6,3] and stages 3–4 do
not shift; the decoder's [8,4,4] become [6,4,4]. Relative tables: 343/343/1331/125 (encoder), 1331/343/343
(decoder, deep to fine). 149,265,629 parameters at 5 classes.

``memory="ists"``: the 8 encoder blocks use MAM (:class:`~medattn_networks.attention.memory.MemoryWindowAttention`)
with the memory reset at each stage start; the decoder is unchanged. MAM adds no parameter and keeps every key.

Module names follow the released model (``model_down``, ``decoder``, ``proj1.conv1``, ``reduction``, ``kv``, …);
:func:`convert_released_nnformer_state_dict` renames the two that differ (``Upsample`` → ``upsample``,
``final.0.up`` → ``final``). Weights keep PyTorch's default initialisation (relative tables truncated normal,
std 0.02), as released.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medattn_networks.attention.memory import attention_for
from medattn_networks.blocks.transformer import (
    SwinBlock,
    SwinStage,
    WindowAttention,
    channels_first,
    channels_last,
    drop_path_rates,
    set_fused_attention,
)
from medattn_networks.blocks.windows import (
    as_tuple,
    crop_grid,
    fit_window,
    pad_to_patches,
    pad_to_windows,
    stage_grids,
    window_partition,
    window_reverse,
)

__all__ = [
    "NNFormer",
    "NNFormerPatchEmbed",
    "NNFormerPatchMerging",
    "NNFormerPatchExpand",
    "KVWindowAttention",
    "NNFormerKVBlock",
    "NNFORMER_MEMORY_MODES",
    "convert_released_nnformer_state_dict",
]

NNFORMER_MEMORY_MODES = ("none", "ists")


class _ConvProjection(nn.Module):
    """conv3(stride) → GELU → LN → conv3 [→ GELU → LN unless ``last``] (nnFormer's ``project``; keys conv1, norm1,
    conv2, norm2). Channels-first in and out; the LayerNorms act over channels."""

    def __init__(self, in_dim: int, out_dim: int, stride: Sequence[int], last: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_dim, out_dim, kernel_size=3, stride=tuple(stride), padding=1)
        self.conv2 = nn.Conv3d(out_dim, out_dim, kernel_size=3, stride=1, padding=1)
        self.norm1 = nn.LayerNorm(out_dim)
        self.norm2 = None if last else nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = channels_first(self.norm1(channels_last(F.gelu(self.conv1(x)))))
        x = self.conv2(x)
        if self.norm2 is not None:
            x = channels_first(self.norm2(channels_last(F.gelu(x))))
        return x


class NNFormerPatchEmbed(nn.Module):
    """nnFormer's convolutional patch embedding → tokens (B, *grid, C).

    ``proj1``: in → C/2 with stride ``(p0, p1/2, p2/2)``; ``proj2``: C/2 → C with stride ``(p0/2, p1/2, p2/2)``
    (no activation/norm after its second conv); then LayerNorm ``norm``. The input is zero-padded at the end of
    each axis to a whole number of patches.

    Args:
        patch_size: patch per axis (3D; its first axis and the halves of the others are the two strides).
        in_channels: image channels.
        embed_dim: token width (even).
    """

    def __init__(self, patch_size: Sequence[int], in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = as_tuple(patch_size, 3, "patch_size")
        p0, p1, p2 = self.patch_size
        first, second = (p0, p1 // 2, p2 // 2), (p0 // 2, p1 // 2, p2 // 2)
        if any(a * b != p for a, b, p in zip(first, second, self.patch_size)):
            raise ValueError(f"patch_size {list(self.patch_size)} is not (a, 2b, 2c) with strides (a, b, b)·(a/2, b, b)")
        self.proj1 = _ConvProjection(in_channels, embed_dim // 2, first)
        self.proj2 = _ConvProjection(embed_dim // 2, embed_dim, second, last=True)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_to_patches(x, self.patch_size)
        return self.norm(channels_last(self.proj2(self.proj1(x))))


class NNFormerPatchMerging(nn.Module):
    """nnFormer's patch merging on tokens (B, *grid, C): GELU → LayerNorm → Conv3d(C → out_dim, k, stride 2,
    padding (k-1)//2) → (B, *ceil(grid/2), out_dim). ``kernel_size=3`` is nnFormer's (k2 gives FINE's variant).

    Args:
        dim: input width.
        out_dim: output width (default 2·dim).
        kernel_size: 3 (nnFormer, padding 1) or 2 (padding 0).
    """

    def __init__(self, dim: int, out_dim: Optional[int] = None, kernel_size: int = 3) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.reduction = nn.Conv3d(dim, out_dim or 2 * dim, kernel_size=kernel_size, stride=2, padding=(kernel_size - 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channels_last(self.reduction(channels_first(self.norm(F.gelu(x)))))


class NNFormerPatchExpand(nn.Module):
    """nnFormer's patch expanding on tokens (B, *grid, C): LayerNorm → ConvTranspose3d(C → out_dim, k2, s2).

    Args:
        dim: input width.
        out_dim: output width (default dim // 2).
    """

    def __init__(self, dim: int, out_dim: Optional[int] = None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.ConvTranspose3d(dim, out_dim or dim // 2, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channels_last(self.up(channels_first(self.norm(x))))


class KVWindowAttention(WindowAttention):
    """nnFormer's KV window attention: keys/values from one input through ``kv`` (C → 2C), queries the other
    input itself (no query projection), then the toolkit's attention core (relative bias, mask, SDPA or plain
    path, ``proj``). Same arguments as :class:`WindowAttention`; keys ``kv``, ``proj``, the relative table.
    """

    def __init__(self, spatial_dims: int, channels: int, num_heads: int = 1, qkv_bias: bool = True, **kwargs) -> None:
        super().__init__(spatial_dims, channels, num_heads, qkv_bias=qkv_bias, **kwargs)
        del self.qkv
        self.kv = nn.Linear(channels, 2 * channels, bias=qkv_bias)

    def forward_kv(self, query: torch.Tensor, context: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Window tokens ``query`` and ``context`` (B·nW, N, C) → (B·nW, N, C)."""
        bw, n, _ = query.shape
        kv = self.kv(context).reshape(bw, n, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        q = query.reshape(bw, n, self.num_heads, self.head_dim).transpose(1, 2)
        return self.attend(q, k, v, mask)

    def forward_tokens(
        self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, memory: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Keys, values and (unprojected) queries all from ``x``; no memory."""
        return self.forward_kv(x, x, mask), None


class NNFormerKVBlock(SwinBlock):
    """The first block of an nnFormer decoder stage: :class:`SwinBlock` whose attention is :class:`KVWindowAttention`.

    ``forward(x_up, skip)``: ``h = x_up + skip + drop_path(attn(q = norm1(x_up), kv = norm1(skip)))`` in
    non-shifted windows (padded at the end), then ``h + drop_path(mlp(norm2(h)))``. ``norm1`` is shared by both
    inputs, as released.

    Args: those of :class:`SwinBlock` (``shift_size`` must be 0; ``attention`` is not used).
    """

    def __init__(self, spatial_dims: int, dim: int, num_heads: int, window_size=7, shift_size=0, **kwargs) -> None:
        kwargs.pop("attention", None)
        attention_kwargs = kwargs.pop("attention_kwargs", None) or {}
        super().__init__(spatial_dims, dim, num_heads, window_size, shift_size, attention="window", **kwargs)
        if any(self.shift_size):
            raise ValueError("nnFormer's KV-attention block does not shift its windows")
        old = self.attn
        self.attn = KVWindowAttention(
            spatial_dims,
            dim,
            num_heads,
            window_size=self.window_size,
            qkv_bias=old.qkv.bias is not None,
            attn_drop=old.attn_drop,
            proj_drop=old.proj_drop.p,
            relative_bias=old.relative_bias,
            fused=old.fused,
            **attention_kwargs,
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grid = tuple(x.shape[1:-1])
        q, _ = pad_to_windows(self.norm1(x), self.window_size)
        kv, _ = pad_to_windows(self.norm1(skip), self.window_size)
        padded = tuple(q.shape[1:-1])
        h = self.attn.forward_kv(window_partition(q, self.window_size), window_partition(kv, self.window_size))
        h = crop_grid(window_reverse(h, self.window_size, padded), grid)
        x = x + skip + self.drop_path(h)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class _EncoderStage(SwinStage):
    """A :class:`SwinStage` that also returns its output before the merging (nnFormer's skip)."""

    def forward(self, x: torch.Tensor, memory: Optional[torch.Tensor] = None):  # type: ignore[override]
        for block in self.blocks:
            x, memory = block(x, memory)
        return x, (None if self.downsample is None else self.downsample(x)), memory


class _DecoderStage(nn.Module):
    """Patch expanding (``upsample``), the KV-attention block, then shifted Swin blocks (``blocks``)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int | Sequence[int],
        grid: Sequence[int],
        drop_path: Sequence[float],
        **block_kwargs,
    ) -> None:
        super().__init__()
        nominal = as_tuple(window_size, 3, "window_size")
        window, shift = fit_window(grid, nominal, tuple(w // 2 for w in nominal), "min")
        self.window_size, self.shift_size = window, shift
        self.upsample = NNFormerPatchExpand(2 * dim, dim)
        self.blocks = nn.ModuleList(
            [NNFormerKVBlock(3, dim, num_heads, window, 0, drop_path=drop_path[0], **block_kwargs)]
            + [
                SwinBlock(3, dim, num_heads, window, shift, drop_path=drop_path[i], attention="window", **block_kwargs)
                for i in range(1, depth)
            ]
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.blocks[0](crop_grid(self.upsample(x), skip.shape[1:-1]), skip)
        for block in self.blocks[1:]:
            x, _ = block(x)
        return x


class _Encoder(nn.Module):
    """Patch embedding, the encoder stages and the per-stage output norms (``norm0`` …); returns the skips."""

    def __init__(self, patch_embed: nn.Module, stages: Sequence[_EncoderStage], dims: Sequence[int], drop: float) -> None:
        super().__init__()
        self.patch_embed = patch_embed
        self.pos_drop = nn.Dropout(drop)
        self.layers = nn.ModuleList(stages)
        for i, d in enumerate(dims):
            self.add_module(f"norm{i}", nn.LayerNorm(d))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.pos_drop(self.patch_embed(x))
        skips = []
        for i, stage in enumerate(self.layers):
            out, h, _ = stage(h, None)  # ISTS: every stage starts without memory
            skips.append(getattr(self, f"norm{i}")(out))
        return skips


class _Decoder(nn.Module):
    """Decoder stages; ``layers[k]`` works at encoder level k (width embed·2^k) and runs deep to fine."""

    def __init__(self, stages: Sequence[_DecoderStage], drop: float) -> None:
        super().__init__()
        self.pos_drop = nn.Dropout(drop)
        self.layers = nn.ModuleList(stages)

    def forward(self, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        h = self.pos_drop(skips[-1])
        for k in reversed(range(len(self.layers))):
            h = self.layers[k](h, skips[k])
        return h


class NNFormer(nn.Module):
    """nnFormer (FLARE configuration by default) with ``memory`` none | ists in its encoder.

    Args:
        spatial_dims: 3 (nnFormer is 3D).
        in_channels: image channels.
        out_channels: classes.
        img_size: crop size at build time (fits each stage's window to its token grid, "min" rule).
        embed_dim: width of the first stage (doubled per stage).
        depths: blocks per encoder stage.
        num_heads: heads per encoder stage.
        patch_size: patch of the embedding, (a, 2b, 2c).
        window_size: nominal window per encoder stage (cubic).
        decoder_depths: blocks per decoder stage, deep to fine (default: ``depths`` reversed without the last).
        decoder_num_heads: heads per decoder stage, deep to fine (default: ``num_heads`` reversed without the last).
        decoder_window_size: nominal window per decoder stage, deep to fine (default: ``window_size`` likewise).
        mlp_ratio: MLP width / token width.
        qkv_bias: bias of the qkv / kv projections.
        drop_rate: dropout after the embedding, the projections and in the MLPs.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth, linear over the encoder blocks and (separately) over the decoder blocks,
            the decoder's deepest stage taking the lowest rates (as released).
        memory: ``"none"`` (nnFormer) or ``"ists"`` (nnFormer-MAM).
        fused_attention: run attention on scaled_dot_product_attention (False: the plain-math path).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 5,
        img_size: int | Sequence[int] = (96, 96, 96),
        embed_dim: int = 192,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (6, 12, 24, 48),
        patch_size: int | Sequence[int] = (2, 4, 4),
        window_size: Sequence[int] = (4, 4, 8, 4),
        decoder_depths: Optional[Sequence[int]] = None,
        decoder_num_heads: Optional[Sequence[int]] = None,
        decoder_window_size: Optional[Sequence[int]] = None,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        memory: str = "none",
        fused_attention: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims != 3:
            raise ValueError("nnFormer is 3D (its relative-position index is defined for 3D windows)")
        if memory not in NNFORMER_MEMORY_MODES:
            raise ValueError(f"unknown memory '{memory}' for nnFormer; use one of {', '.join(NNFORMER_MEMORY_MODES)}")
        n = len(depths)
        window_size = as_tuple(window_size, n, "window_size")
        if len(num_heads) != n:
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} need one entry per stage")
        decoder_depths = tuple(decoder_depths or tuple(depths)[::-1][1:])
        decoder_num_heads = tuple(decoder_num_heads or tuple(num_heads)[::-1][1:])
        decoder_window_size = tuple(decoder_window_size or tuple(window_size)[::-1][1:])
        if not len(decoder_depths) == len(decoder_num_heads) == len(decoder_window_size) == n - 1:
            raise ValueError(f"the decoder needs {n - 1} stages (depths, heads and windows, deep to fine)")
        self.memory = memory
        patch = as_tuple(patch_size, 3, "patch_size")
        size = as_tuple(img_size, 3, "img_size")
        grids = stage_grids(size, patch, n)
        dims = [embed_dim * 2**i for i in range(n)]
        common = dict(mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate, attn_drop=attn_drop_rate, relative_bias="nnformer")

        rates = drop_path_rates(depths, drop_path_rate)
        encoder_attention = attention_for(memory)
        stages = [
            _EncoderStage(
                3,
                dims[i],
                depths[i],
                num_heads[i],
                window_size[i],
                grids[i],
                window_rule="min",
                drop_path=rates[i],
                downsample=NNFormerPatchMerging(dims[i]) if i < n - 1 else None,
                attention=encoder_attention,
                **common,
            )
            for i in range(n)
        ]
        self.model_down = _Encoder(NNFormerPatchEmbed(patch, in_channels, embed_dim), stages, dims, drop_rate)

        dec_rates = drop_path_rates(decoder_depths, drop_path_rate)
        up = []
        for k in range(n - 1):
            j = n - 2 - k  # position of level k in the deep-to-fine decoder lists
            up.append(
                _DecoderStage(
                    dims[k],
                    decoder_depths[j],
                    decoder_num_heads[j],
                    decoder_window_size[j],
                    grids[k],
                    dec_rates[j],
                    **common,
                )
            )
        self.decoder = _Decoder(up, drop_rate)
        self.final = nn.ConvTranspose3d(embed_dim, out_channels, kernel_size=patch, stride=patch)
        set_fused_attention(self, fused_attention)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        h = self.decoder(self.model_down(x))
        y = self.final(channels_first(h))
        return y[(slice(None), slice(None), *(slice(0, s) for s in size))]


def convert_released_nnformer_state_dict(state_dict: dict) -> dict:
    """A state dict of the released nnFormer / MemorynnFormer (3D UX-Net benchmark, no deep supervision) → this
    module's keys: ``decoder.layers.k.Upsample.*`` → ``decoder.layers.k.upsample.*`` and ``final.0.up.*`` →
    ``final.*``; every other key (relative-position index buffers included) is unchanged."""
    out = {}
    for key, value in state_dict.items():
        key = key.replace(".Upsample.", ".upsample.")
        if key.startswith("final.0.up."):
            key = "final." + key[len("final.0.up.") :]
        elif key.startswith("final."):
            raise KeyError(f"'{key}': only the single (no deep supervision) output head is supported")
        out[key] = value
    return out
