"""Swin-Unet (Cao et al. 2022) with optional memory attention (MAM, seed 000, papers.md §000).

Encoder: patch embed 4 → four Swin stages (patch merging between them), LayerNorm; decoder: patch expand, three
Swin stages whose inputs are the upsampled tokens concatenated with the encoder skip and projected back
(``concat_back_dim``), LayerNorm, the final ×4 patch expand and a 1×1 conv. Module names follow the released
Swin-Unet (``layers``, ``layers_up``, ``concat_back_dim``, ``norm_up``, ``up``, ``output``).

``memory``: ``"none"`` is the published Swin-Unet (SAM); ``"ists"`` (the paper's wiring) makes every encoder
block, bottleneck included, memory attention with the memory reset at each stage; ``"sts"`` carries it across
the encoder stages through :class:`~medattn_networks.attention.memory.MemoryMerge` adapters (the only extra
parameters). The decoder is always plain. The released MAM model also builds a MemoryExpand that its forward
never calls; it is not built here.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv

from medattn_networks.attention.memory import MemoryMerge, attention_for, grid_to_memory, memory_to_grid
from medattn_networks.blocks.transformer import (
    PatchEmbed,
    PatchExpand,
    PatchMerging,
    SwinStage,
    channels_first,
    drop_path_rates,
    init_transformer_weights,
    set_fused_attention,
)
from medattn_networks.blocks.windows import as_tuple, crop_grid, stage_grids

__all__ = ["SwinUnet", "convert_released_swin_unet_state_dict"]


class SwinUnet(nn.Module):
    """Swin-Unet for 2D (the paper) or 3D tokens, with ``memory`` none | ists | sts.

    Args:
        spatial_dims: 2 (the paper) or 3.
        in_channels: image channels the patch embedding expects; a 1-channel input is repeated to it.
        out_channels: classes.
        img_size: training image size (fits the windows to each stage's grid, Swin-Unet's min rule).
        patch_size: patch embedding size.
        embed_dim: width of the first stage (doubled per stage).
        depths: blocks per encoder stage (the decoder mirrors them).
        num_heads: heads per stage.
        window_size: attention window.
        mlp_ratio: MLP width / token width.
        qkv_bias: bias of the qkv projections.
        drop_rate: dropout after embedding, projections and MLPs.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth, increasing linearly over the encoder blocks.
        memory: ``"none"``, ``"ists"`` or ``"sts"``.
        memory_merge: STS adapter, ``"pool"`` (AvgPool + 1×1 conv) or ``"conv"`` (LN + conv k2 s2).
        fused_attention: run attention on scaled_dot_product_attention (False: the plain-math path).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 9,
        img_size: int | Sequence[int] = 224,
        patch_size: int = 4,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        memory: str = "ists",
        memory_merge: str = "pool",
        fused_attention: bool = True,
    ) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} need one entry per stage")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.memory = memory
        encoder_attention = attention_for(memory)
        n = len(depths)
        size = as_tuple(img_size, spatial_dims, "img_size")
        grids = stage_grids(size, as_tuple(patch_size, spatial_dims, "patch_size"), n)
        dims = [embed_dim * 2**i for i in range(n)]
        rates = drop_path_rates(depths, drop_path_rate)
        common = dict(window_rule="min", mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate, attn_drop=attn_drop_rate)

        self.patch_embed = PatchEmbed(spatial_dims, patch_size, in_channels, embed_dim)
        self.pos_drop = nn.Dropout(drop_rate)
        self.layers = nn.ModuleList(
            SwinStage(
                spatial_dims,
                dims[i],
                depths[i],
                num_heads[i],
                window_size,
                grids[i],
                drop_path=rates[i],
                downsample=PatchMerging(spatial_dims, dims[i]) if i < n - 1 else None,
                attention=encoder_attention,
                **common,
            )
            for i in range(n)
        )
        self.memory_merge = (
            nn.ModuleList(MemoryMerge(spatial_dims, dims[i], dims[i + 1], memory_merge) for i in range(n - 1))
            if memory == "sts"
            else None
        )
        self.norm = nn.LayerNorm(dims[-1])

        self.layers_up = nn.ModuleList()
        self.concat_back_dim = nn.ModuleList()
        for i in range(n):
            level = n - 1 - i
            if i == 0:
                self.layers_up.append(PatchExpand(spatial_dims, dims[level]))
                self.concat_back_dim.append(nn.Identity())
                continue
            self.concat_back_dim.append(nn.Linear(2 * dims[level], dims[level]))
            self.layers_up.append(
                SwinStage(
                    spatial_dims,
                    dims[level],
                    depths[level],
                    num_heads[level],
                    window_size,
                    grids[level],
                    drop_path=rates[level],
                    upsample=PatchExpand(spatial_dims, dims[level]) if i < n - 1 else None,
                    attention="window",
                    **common,
                )
            )
        self.norm_up = nn.LayerNorm(embed_dim)
        self.up = PatchExpand(spatial_dims, embed_dim, scale=patch_size, out_dim=embed_dim)
        self.output = Conv[Conv.CONV, spatial_dims](embed_dim, out_channels, kernel_size=1, bias=False)
        self.apply(init_transformer_weights)
        set_fused_attention(self, fused_attention)

    def _carry_memory(self, i: int, memory: Optional[torch.Tensor], grid: Sequence[int]) -> Optional[torch.Tensor]:
        """Memory entering encoder stage i+1: None (none/ists) or stage i's memory merged to the next grid (sts)."""
        if self.memory_merge is None or memory is None:
            return None
        stage, following = self.layers[i], self.layers[i + 1]
        window = stage.window_size
        padded = tuple(-(-g // w) * w for g, w in zip(grid, window))
        merged = self.memory_merge[i](memory_to_grid(memory, window, padded, grid))
        return grid_to_memory(merged, following.window_size, following.blocks[0].attn.num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1 and self.in_channels > 1:
            x = x.repeat(1, self.in_channels, *([1] * self.spatial_dims))
        size = x.shape[2:]
        h = self.pos_drop(self.patch_embed(x))
        skips, memory = [], None
        for i, stage in enumerate(self.layers):
            skips.append(h)
            h, memory = stage(h, memory)
            if i < len(self.layers) - 1:
                memory = self._carry_memory(i, memory, skips[-1].shape[1:-1])
        h = self.norm(h)
        for i, layer in enumerate(self.layers_up):
            if i == 0:
                h = layer(h)
                continue
            skip = skips[len(self.layers) - 1 - i]
            h = self.concat_back_dim[i](torch.cat([crop_grid(h, skip.shape[1:-1]), skip], -1))
            h, _ = layer(h)
        h = self.up(self.norm_up(crop_grid(h, skips[0].shape[1:-1])))
        return self.output(channels_first(crop_grid(h, size)))


def convert_released_swin_unet_state_dict(state_dict: dict) -> dict:
    """A state dict of the released (MAM) Swin-Unet → this module's keys.

    Drops the wrapper prefix ``swin_unet.``, the ``attn_mask`` buffers (the mask is computed from the grid here)
    and the never-called ``decoder0`` MemoryExpand of the released MAM model; every other key is unchanged.
    """
    out = {}
    for key, value in state_dict.items():
        key = key[len("swin_unet.") :] if key.startswith("swin_unet.") else key
        if key.endswith(".attn_mask") or key.startswith("decoder0."):
            continue
        out[key] = value
    return out
