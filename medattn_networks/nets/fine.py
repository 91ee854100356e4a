"""FINE (Themyr et al., MLMI 2022): an nnFormer-style 3D transformer with window and volume memory tokens.

Facts: papers.md §003 and the released ``fine_package/fine/network_architecture/fine.py`` (themyrl/fine @ 81039c2,
class ``swintransformer``, built by ``nnUNetTrainerV2_fine``). Built on the shared toolkit:

- patch embedding, merging (GELU → LN → Conv k2 s2) and expanding (LN → ConvT k2 s2) are nnFormer's
  (:mod:`medattn_networks.nets.nnformer`); windows use nnFormer's non-bijective relative index and the "min" rule;
- every stage (4 encoder, 3 decoder) owns a window memory token (``global_token``, randn), an in-plane grid of
  volume tokens (``volume_token``, randn) and a positional embedding of its window tokens (``pe``, trunc. normal
  0.02); each block is a :class:`FineBlock`;
- decoder stage = expand, add the skip, memory blocks (no KV-attention block); heads: ConvT (kernel = stride =
  patch) at full resolution and, with ``deep_supervision``, ConvT k4 s4 from the second level (½ in-plane at
  patch [2,4,4]).

The network is a pure function of ``(x, position)``: ``position`` (B, 3) is each crop's centre minus the volume
centre in voxels, axes in array order (z, y, x); the last two select the volume tokens. The released code's state
(a persistent visited-token counter, a batch offset applied only when B == 2) is replaced by a per-sample,
per-forward mask and per-sample indexing.

``wiring``: ``"paper"`` (default) updates the memory tokens at the start of each block, so that the window-token
and volume-token attention of every block reach the voxels; ``"released"`` keeps the released order (tokens after
the window attention) and builds only what can reach the output: in a stage of depth d the window-token attention
of blocks 0 … d−2 and the volume-token attention of blocks 0 … d−3 (none at depth 2), no PatchMerging after the
last stage, no third head. Keys follow the released model (``model_down``, ``global_token``, ``gt_attn`` …) except
``decoder`` (released ``encoder``) and ``upsample`` (``Upsample``); see :func:`convert_released_fine_state_dict`.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
from monai.networks.layers import DropPath, trunc_normal_

from medattn_networks.attention.memory import (
    MemoryTokenWindowAttention,
    TokenAttention,
    gather_tokens,
    scatter_add_tokens,
    volume_token_indices,
)
from medattn_networks.blocks.transformer import Mlp, channels_first, drop_path_rates, set_fused_attention
from medattn_networks.blocks.windows import (
    as_tuple,
    crop_grid,
    cyclic_shift,
    fit_window,
    pad_to_windows,
    shift_attention_mask,
    stage_grids,
    window_partition,
    window_reverse,
)
from medattn_networks.nets.nnformer import NNFormerPatchEmbed, NNFormerPatchExpand, NNFormerPatchMerging

__all__ = ["FINE", "FineBlock", "FineStage", "FINE_WIRINGS", "released_fine_dead_keys", "convert_released_fine_state_dict"]

FINE_WIRINGS = ("paper", "released")


class FineBlock(nn.Module):
    """One FINE block on tokens (B, *grid, C) with window memory tokens (B·nW, G, C) and volume tokens (B, T, C).

    Window step: (shifted) window attention over ``[memory; norm1(voxels)]`` (:class:`MemoryTokenWindowAttention`),
    a residual and the MLP (``norm2``, ``mlp``) for the voxels and, separately, for the memory tokens.
    Token step (``gt_attn``): the crop's 4 selected volume tokens and all its window memory tokens (+ ``pe``) pass
    one full attention whose output replaces them; the volume tokens are added back at their cells. ``vt_attn``:
    full attention over the volume tokens, keys limited to those this sample selected.

    Args:
        dim: token width.
        num_heads: attention heads.
        window_size: window per axis (already fitted to the grid).
        shift_size: cyclic shift per axis.
        mlp_ratio: MLP width / dim.
        qkv_bias: bias of the qkv projections.
        drop: dropout after the projections and in the MLP.
        attn_drop: dropout on attention weights.
        drop_path: stochastic depth of the residual branches.
        token_attention: build and run the token step.
        volume_attention: build and run ``vt_attn`` (needs ``token_attention``).
        tokens_first: token step before the window step (paper wiring) or after it (released).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: Sequence[int],
        shift_size: Sequence[int],
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        token_attention: bool = True,
        volume_attention: bool = True,
        tokens_first: bool = True,
    ) -> None:
        super().__init__()
        if volume_attention and not token_attention:
            raise ValueError("the volume-token attention needs the window-token attention of the same block")
        self.window_size, self.shift_size = tuple(window_size), tuple(shift_size)
        self.tokens_first = tokens_first
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MemoryTokenWindowAttention(
            3, dim, num_heads, self.window_size, qkv_bias, attn_drop, drop, relative_bias="nnformer"
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act="GELU", drop=drop)
        token_kwargs = dict(num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.gt_attn = TokenAttention(dim, **token_kwargs) if token_attention else None
        self.vt_attn = TokenAttention(dim, **token_kwargs) if volume_attention else None

    def window_step(self, x: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grid = tuple(x.shape[1:-1])
        h, _ = pad_to_windows(self.norm1(x), self.window_size)
        padded = tuple(h.shape[1:-1])
        h = cyclic_shift(h, self.shift_size)
        mask = shift_attention_mask(padded, self.window_size, self.shift_size, device=x.device)
        h, new_memory = self.attn.forward_tokens(window_partition(h, self.window_size), mask, memory)
        h = crop_grid(cyclic_shift(window_reverse(h, self.window_size, padded), self.shift_size, reverse=True), grid)
        x = x + self.drop_path(h)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        memory = memory + self.drop_path(new_memory)
        memory = memory + self.drop_path(self.mlp(self.norm2(memory)))
        return x, memory

    def token_step(
        self, memory: torch.Tensor, volume: torch.Tensor, index: torch.Tensor, visited: torch.Tensor, pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.gt_attn is None:
            return memory, volume
        if self.vt_attn is not None and self.tokens_first:
            volume = self.vt_attn(volume, visited)
        b, k = index.shape
        bw, g, c = memory.shape
        window_tokens = memory.reshape(b, (bw // b) * g, c) + pe
        out = self.gt_attn(torch.cat([gather_tokens(volume, index), window_tokens], dim=1))
        memory = out[:, k:].reshape(bw, g, c)
        volume = scatter_add_tokens(volume, index, out[:, :k])
        if self.vt_attn is not None and not self.tokens_first:
            volume = self.vt_attn(volume, visited)
        return memory, volume

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        volume: torch.Tensor,
        index: torch.Tensor,
        visited: torch.Tensor,
        pe: Optional[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.tokens_first:
            memory, volume = self.token_step(memory, volume, index, visited, pe)
            x, memory = self.window_step(x, memory)
        else:
            x, memory = self.window_step(x, memory)
            memory, volume = self.token_step(memory, volume, index, visited, pe)
        return x, memory, volume


class FineStage(nn.Module):
    """A FINE stage: ``depth`` :class:`FineBlock` s (every second one shifted) sharing the stage's memory tokens.

    Args:
        dim: token width.
        depth: blocks.
        num_heads: attention heads.
        window_size: nominal cubic window.
        grid: token grid of the stage (fixed at build time: it sets the window count of ``pe``).
        num_volume_tokens: size of the volume-token grid (G1·G2).
        drop_path: one stochastic-depth rate per block.
        wiring: ``"paper"`` or ``"released"`` (see the module docstring).
        memory_tokens: window memory tokens per window (FINE: 1).
        block_kwargs: ``mlp_ratio``, ``qkv_bias``, ``drop``, ``attn_drop``.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        grid: Sequence[int],
        num_volume_tokens: int,
        drop_path: Sequence[float],
        wiring: str = "paper",
        memory_tokens: int = 1,
        **block_kwargs,
    ) -> None:
        super().__init__()
        nominal = as_tuple(window_size, 3, "window_size")
        window, shift = fit_window(grid, nominal, tuple(w // 2 for w in nominal), "min")
        self.grid = tuple(grid)
        self.num_windows = math.prod(-(-g // w) for g, w in zip(grid, window))
        paper = wiring == "paper"
        self.blocks = nn.ModuleList(
            FineBlock(
                dim,
                num_heads,
                window,
                shift if j % 2 else (0, 0, 0),
                drop_path=drop_path[j],
                token_attention=paper or j <= depth - 2,
                volume_attention=paper or j <= depth - 3,
                tokens_first=paper,
                **block_kwargs,
            )
            for j in range(depth)
        )
        self.global_token = nn.Parameter(torch.randn(memory_tokens, dim))
        uses_tokens = any(b.gt_attn is not None for b in self.blocks)
        self.volume_token = nn.Parameter(torch.randn(num_volume_tokens, dim)) if uses_tokens else None
        self.pe = nn.Parameter(torch.zeros(self.num_windows * memory_tokens, dim)) if uses_tokens else None
        if self.pe is not None:
            trunc_normal_(self.pe, std=0.02)

    def forward(self, x: torch.Tensor, index: torch.Tensor, visited: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        memory = self.global_token.expand(b * self.num_windows, -1, -1)
        volume = None if self.volume_token is None else self.volume_token.expand(b, -1, -1)
        for block in self.blocks:
            x, memory, volume = block(x, memory, volume, index, visited, self.pe)
        return x


class _DecoderStage(nn.Module):
    """Patch expanding (``upsample``), add the skip, then a :class:`FineStage` (``blocks``, ``global_token`` …)."""

    def __init__(self, dim: int, **stage_kwargs) -> None:
        super().__init__()
        self.upsample = NNFormerPatchExpand(2 * dim, dim)
        self.stage = FineStage(dim, **stage_kwargs)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, index: torch.Tensor, visited: torch.Tensor) -> torch.Tensor:
        return self.stage(crop_grid(self.upsample(x), skip.shape[1:-1]) + skip, index, visited)


class _Encoder(nn.Module):
    """Patch embedding, the encoder stages with merging between them, per-stage output norms (``norm0`` …)."""

    def __init__(self, patch_embed: nn.Module, stages: Sequence[FineStage], dims: Sequence[int], drop: float) -> None:
        super().__init__()
        self.patch_embed = patch_embed
        self.pos_drop = nn.Dropout(drop)
        self.layers = nn.ModuleList(stages)
        self.downsample = nn.ModuleList(NNFormerPatchMerging(d, kernel_size=2) for d in dims[:-1])
        for i, d in enumerate(dims):
            self.add_module(f"norm{i}", nn.LayerNorm(d))

    def forward(self, x: torch.Tensor, index: torch.Tensor, visited: torch.Tensor) -> list[torch.Tensor]:
        h = self.pos_drop(self.patch_embed(x))
        skips = []
        for i, stage in enumerate(self.layers):
            h = stage(h, index, visited)
            skips.append(getattr(self, f"norm{i}")(h))
            if i < len(self.downsample):
                h = self.downsample[i](h)
        return skips


class FINE(nn.Module):
    """FINE at the BCV configuration by default; ``forward(x, position)``.

    Args:
        spatial_dims: 3.
        in_channels: image channels.
        out_channels: classes (BCV: 13 organs + background).
        img_size: the crop (z, y, x); inputs must have exactly this size (use a sliding window of this roi).
        volume_grid: in-plane volume-token grid (BCV: 5×5, max image size / crop).
        embed_dim: first-stage width (doubled per stage).
        depths: blocks per encoder stage.
        num_heads: heads per encoder stage.
        patch_size: patch of the embedding, (a, 2b, 2c).
        window_size: cubic window of every stage.
        decoder_depths: blocks per decoder stage, deep to fine (default: depths reversed without the last).
        decoder_num_heads: heads per decoder stage, deep to fine (default: num_heads likewise).
        mlp_ratio: MLP width / token width.
        qkv_bias: bias of every qkv projection.
        drop_rate: dropout after the embedding, the projections and in the MLPs.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth, linear over the encoder blocks and over the decoder blocks (deepest
            decoder stage lowest), as released.
        memory_tokens: window memory tokens per window.
        wiring: ``"paper"`` or ``"released"``.
        deep_supervision: build the ½-resolution head; in training mode ``forward`` then returns
            ``[full, half]`` (MONAI's ``DeepSupervisionLoss`` order), in eval mode the full-resolution logits.
        fused_attention: run attention on scaled_dot_product_attention (False: the plain-math path).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 14,
        img_size: Sequence[int] = (64, 128, 128),
        volume_grid: Sequence[int] = (5, 5),
        embed_dim: int = 192,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (6, 12, 24, 48),
        patch_size: Sequence[int] = (2, 4, 4),
        window_size: int = 4,
        decoder_depths: Optional[Sequence[int]] = None,
        decoder_num_heads: Optional[Sequence[int]] = None,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        memory_tokens: int = 1,
        wiring: str = "paper",
        deep_supervision: bool = True,
        fused_attention: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims != 3:
            raise ValueError("FINE is 3D (nnFormer's relative index and in-plane volume tokens)")
        if wiring not in FINE_WIRINGS:
            raise ValueError(f"unknown wiring '{wiring}'; use one of {', '.join(FINE_WIRINGS)}")
        n = len(depths)
        if len(num_heads) != n:
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} need one entry per stage")
        decoder_depths = tuple(decoder_depths or tuple(depths)[::-1][1:])
        decoder_num_heads = tuple(decoder_num_heads or tuple(num_heads)[::-1][1:])
        if not len(decoder_depths) == len(decoder_num_heads) == n - 1:
            raise ValueError(f"the decoder needs {n - 1} stages (depths and heads, deep to fine)")
        self.img_size = as_tuple(img_size, 3, "img_size")
        self.volume_grid = as_tuple(volume_grid, 2, "volume_grid")
        if min(self.volume_grid) < 2:
            raise ValueError(f"volume_grid needs at least 2 tokens per in-plane axis, got {list(self.volume_grid)}")
        self.wiring, self.deep_supervision = wiring, deep_supervision
        patch = as_tuple(patch_size, 3, "patch_size")
        grids = stage_grids(self.img_size, patch, n)
        dims = [embed_dim * 2**i for i in range(n)]
        tokens = math.prod(self.volume_grid)
        common = dict(
            num_volume_tokens=tokens,
            wiring=wiring,
            memory_tokens=memory_tokens,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            drop=drop_rate,
            attn_drop=attn_drop_rate,
        )
        rates = drop_path_rates(depths, drop_path_rate)
        stages = [
            FineStage(
                dims[i],
                depths[i],
                num_heads[i],
                window_size,
                grids[i],
                drop_path=rates[i],
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
                    depth=decoder_depths[j],
                    num_heads=decoder_num_heads[j],
                    window_size=window_size,
                    grid=grids[k],
                    drop_path=dec_rates[j],
                    **common,
                )
            )
        self.decoder = nn.ModuleList(up)
        heads = [nn.ConvTranspose3d(embed_dim, out_channels, kernel_size=patch, stride=patch)]
        if deep_supervision:
            heads.append(nn.ConvTranspose3d(2 * embed_dim, out_channels, kernel_size=4, stride=4))
        self.final = nn.ModuleList(heads)
        set_fused_attention(self, fused_attention)

    def token_selection(self, position: Optional[torch.Tensor], batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 4) volume-token indices of each crop and the (B, T) mask of the tokens it selects."""
        if position is None:
            position = torch.zeros((batch, 3))
        position = torch.as_tensor(position, dtype=torch.float32, device=device).reshape(batch, -1)
        if position.shape[1] not in (2, 3):
            raise ValueError(f"position must be (B, 3) in (z, y, x) order (or (B, 2) in-plane), got {tuple(position.shape)}")
        index = volume_token_indices(position[:, -2:], self.volume_grid, self.img_size[-2:]).to(device)
        visited = torch.zeros((batch, math.prod(self.volume_grid)), dtype=torch.bool, device=device)
        return index, visited.scatter(1, index, torch.ones(index.shape, dtype=torch.bool, device=device))

    def forward(self, x: torch.Tensor, position: Optional[torch.Tensor] = None):
        """``x`` (B, C, *img_size); ``position`` (B, 3): crop centre − volume centre (voxels, z y x); None = centre."""
        if tuple(x.shape[2:]) != self.img_size:
            raise ValueError(
                f"FINE is built for crops of {list(self.img_size)} (its window-token embedding is per window), got "
                f"{list(x.shape[2:])}: run it in a sliding window with roi_size {list(self.img_size)}"
            )
        index, visited = self.token_selection(position, x.shape[0], x.device)
        skips = self.model_down(x, index, visited)
        h = skips[-1]
        outputs = {}
        for k in reversed(range(len(self.decoder))):
            h = self.decoder[k](h, skips[k], index, visited)
            outputs[k] = h
        full = self.final[0](channels_first(outputs[0]))
        if self.deep_supervision and self.training:
            return [full, self.final[1](channels_first(outputs[1]))]
        return full


def released_fine_dead_keys(state_dict: dict, depth: int = 2) -> list[str]:
    """Keys of a released FINE state dict that cannot reach the output (see the module docstring)."""
    dead = []
    n_down = 1 + max(int(k.split(".")[2]) for k in state_dict if k.startswith("model_down.layers."))
    for key in state_dict:
        parts = key.split(".")
        if key == "vt_check" or key.startswith("final.2."):
            dead.append(key)
        elif key.startswith(f"model_down.layers.{n_down - 1}.downsample."):
            dead.append(key)
        elif "blocks" in parts and parts[parts.index("blocks") + 2] in ("gt_attn", "vt_attn"):
            j = int(parts[parts.index("blocks") + 1])
            kind = parts[parts.index("blocks") + 2]
            if (kind == "gt_attn" and j > depth - 2) or (kind == "vt_attn" and j > depth - 3):
                dead.append(key)
    return dead


def convert_released_fine_state_dict(state_dict: dict, depth: int = 2) -> dict:
    """A released FINE state dict → keys of ``FINE(wiring="released")``: dead keys dropped
    (:func:`released_fine_dead_keys`), ``model_down.layers.i.downsample`` → ``model_down.downsample.i``,
    ``encoder.layers.k.Upsample`` → ``decoder.k.upsample``, ``encoder.layers.k.`` (the rest) → ``decoder.k.stage.``
    and ``final.i.up`` → ``final.i``; every other key is unchanged."""
    dead = set(released_fine_dead_keys(state_dict, depth))
    out = {}
    for key, value in state_dict.items():
        if key in dead:
            continue
        parts = key.split(".")
        if key.startswith("model_down.layers.") and parts[3] == "downsample":
            key = ".".join(["model_down", "downsample", parts[2], *parts[4:]])
        elif key.startswith("encoder.layers."):
            rest = parts[3:]
            key = ".".join(["decoder", parts[2], "upsample", *rest[1:]] if rest[0] == "Upsample" else ["decoder", parts[2], "stage", *rest])
        elif key.startswith("final.") and parts[2] == "up":
            key = ".".join(["final", parts[1], *parts[3:]])
        out[key] = value
    return out
