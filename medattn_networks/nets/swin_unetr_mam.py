"""SwinUNETR-MAM: MONAI's SwinUNETR with memory attention in its swinViT (MAM, seed 000, papers.md §000).

MAM replaces the query of window self-attention by an accumulated memory, ``M_t = M_{t-1} + q_t`` (``M_0 = 0``,
the query after the qkv Linear and head split, before scaling), and attends with ``softmax(M_t·scale·Kᵀ + B +
mask)·V``. Keys, values, bias, masks and every parameter are MONAI's. SwinUNETR-MAM wires all 8 swinViT blocks
(4 stages × depth 2) ISTS: the memory is handed from block to block of a stage and reset at each stage start. It
stays in window layout (B·nW, heads, N, head_dim) of the padded grid: the shifted block adds the memory of the
cyclically offset tokens (never rolled back), and padded tokens carry memory too (the released behaviour).

The model is MONAI's :class:`~monai.networks.nets.SwinUNETR`, built by MONAI; with ``memory="ists"`` its four
stages, their blocks and attentions are then re-classed in place into the thin subclasses below, which add no
parameter or buffer (same modules, keys, initialisation and state dict):

- :class:`MAMWindowAttention` keeps MONAI's ``forward`` (its plain and ``use_flash_attention`` SDPA paths) and only
  changes what the qkv Linear hands it: :meth:`MAMWindowAttention.carrying` hooks ``qkv`` for one call and
  replaces the query third of its output by ``memory + q``.
- :class:`MAMSwinTransformerBlock` keeps MONAI's ``forward_part1`` / ``forward_part2`` and threads the memory
  through its residual ``forward`` (memory is an explicit argument, so gradient checkpointing recomputes right).
- :class:`MAMBasicLayer` loops over its blocks with the memory, starting each stage without one (ISTS).

``memory="none"`` leaves every MONAI module untouched: the net is MONAI's SwinUNETR, bit for bit.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
import torch.utils.checkpoint as checkpoint
from monai.networks.nets.swin_unetr import (
    BasicLayer,
    SwinTransformerBlock,
    SwinUNETR,
    WindowAttention,
    compute_mask,
    get_window_size,
)

from medattn_networks.attention.memory import MemoryWindowAttention, attention_for

__all__ = ["SwinUNETRMAM", "MAMWindowAttention", "MAMSwinTransformerBlock", "MAMBasicLayer", "SWIN_UNETR_MEMORY_MODES"]

SWIN_UNETR_MEMORY_MODES = ("none", "ists")


class _Handed:
    """The memory a :meth:`MAMWindowAttention.carrying` call hands on (set when qkv runs)."""

    memory: Optional[torch.Tensor] = None


class MAMWindowAttention(WindowAttention):
    """MONAI's :class:`WindowAttention` whose query, inside :meth:`carrying`, is ``memory + q``.

    No new parameters or buffers; outside :meth:`carrying` (or with memory None) it is MONAI's module exactly.
    """

    # the toolkit's MAM rule (papers.md §000): returns (query used, memory handed on) = (memory + q, memory + q),
    # or (q, q) without memory; it also checks that the memory fits the query
    accumulate_query = MemoryWindowAttention.accumulate_query

    @classmethod
    def adopt(cls, module: WindowAttention) -> "MAMWindowAttention":
        """Re-class a built MONAI ``WindowAttention`` in place (keeps its parameters, buffers and keys)."""
        if not isinstance(module, WindowAttention):
            raise TypeError(f"expected monai WindowAttention, got {type(module).__name__}")
        module.__class__ = cls
        return module  # type: ignore[return-value]

    @contextmanager
    def carrying(self, memory: Optional[torch.Tensor]) -> Iterator[_Handed]:
        """Within the block, calls of this attention use ``memory + q`` as the query (window layout
        (B·nW, heads, N, head_dim), unscaled); the yielded object's ``memory`` is then the one to hand on.

        MONAI 1.6.1's ``WindowAttention.forward`` splits ``q, k, v`` out of ``self.qkv(x)`` inline, with no seam
        for the query; a forward hook on ``self.qkv``, registered for this call only, rewrites the query third of
        its output (channels ``[0, C)``, head-major as in MONAI's split), so MONAI's forward — both the plain path
        and the SDPA path of ``use_flash_attention`` — runs unchanged, with no copied attention code.
        """
        handed = _Handed()

        def use_memory(_module, _inputs, qkv: torch.Tensor) -> Optional[torch.Tensor]:
            b, n, three_c = qkv.shape
            c = three_c // 3
            q = qkv[..., :c].reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)
            query, handed.memory = self.accumulate_query(q, memory)
            if memory is None:  # M_1 = q: nothing to change
                return None
            return torch.cat((query.transpose(1, 2).reshape(b, n, c), qkv[..., c:]), dim=-1)

        handle = self.qkv.register_forward_hook(use_memory)
        try:
            yield handed
        finally:
            handle.remove()


class MAMSwinTransformerBlock(SwinTransformerBlock):
    """MONAI's :class:`SwinTransformerBlock` with a :class:`MAMWindowAttention`;
    ``forward(x, mask_matrix, memory=None)`` returns ``(x, memory handed on)``. Same arguments and keys."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        MAMWindowAttention.adopt(self.attn)

    @classmethod
    def adopt(cls, module: SwinTransformerBlock) -> "MAMSwinTransformerBlock":
        """Re-class a built MONAI ``SwinTransformerBlock`` (and its attention) in place."""
        if not isinstance(module, SwinTransformerBlock):
            raise TypeError(f"memory attention needs monai SwinTransformerBlock, got {type(module).__name__}")
        module.__class__ = cls
        MAMWindowAttention.adopt(module.attn)
        return module  # type: ignore[return-value]

    def forward_part1(  # type: ignore[override]
        self, x: torch.Tensor, mask_matrix: Optional[torch.Tensor], memory: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """MONAI's norm → pad → shift → window attention → unshift → crop, with the memory in and out."""
        with self.attn.carrying(memory) as handed:  # type: ignore[operator]
            x = super().forward_part1(x, mask_matrix)
        return x, handed.memory  # type: ignore[return-value]

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, mask_matrix: Optional[torch.Tensor], memory: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # MONAI's residual forward, re-written only to pass the memory in and out of forward_part1; the memory is
        # an explicit argument of the checkpointed call so that recomputation in backward uses the same memory
        shortcut = x
        if self.use_checkpoint:
            x, memory = checkpoint.checkpoint(self.forward_part1, x, mask_matrix, memory, use_reentrant=False)
        else:
            x, memory = self.forward_part1(x, mask_matrix, memory)
        x = shortcut + self.drop_path(x)
        if self.use_checkpoint:
            x = x + checkpoint.checkpoint(self.forward_part2, x, use_reentrant=False)
        else:
            x = x + self.forward_part2(x)
        return x, memory  # type: ignore[return-value]


class MAMBasicLayer(BasicLayer):
    """MONAI's :class:`BasicLayer` (one swinViT stage) with MAM blocks and ISTS: the memory flows from block to
    block and every call starts without memory. Same arguments (``use_hyena`` excluded) and keys."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for block in self.blocks:
            MAMSwinTransformerBlock.adopt(block)

    @classmethod
    def adopt(cls, module: BasicLayer) -> "MAMBasicLayer":
        """Re-class a built MONAI ``BasicLayer`` (and its blocks) in place."""
        if not isinstance(module, BasicLayer):
            raise TypeError(f"expected monai BasicLayer, got {type(module).__name__}")
        for block in module.blocks:
            MAMSwinTransformerBlock.adopt(block)  # raises for HyenaTransformerBlock stages
        module.__class__ = cls
        return module  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # MONAI's BasicLayer.forward (2D and 3D in one: channels-last, window fit, shift mask, blocks, downsample)
        # re-written because its block loop has no slot for the memory
        grid = x.shape[2:]
        window_size, shift_size = get_window_size(grid, self.window_size, self.shift_size)
        x = x.movedim(1, -1)
        padded = [math.ceil(g / w) * w for g, w in zip(grid, window_size)]
        attn_mask = compute_mask(padded, window_size, shift_size, x.device)
        memory = None  # ISTS: reset at the stage start
        for block in self.blocks:
            x, memory = block(x, attn_mask, memory)
        if self.downsample is not None:
            x = self.downsample(x)
        return x.movedim(-1, 1)


class SwinUNETRMAM(SwinUNETR):
    """MONAI's SwinUNETR with MAM-ISTS in all swinViT blocks (``memory="ists"``) or unchanged (``"none"``).

    Takes MONAI's SwinUNETR arguments (in_channels, out_channels, patch_size, depths, num_heads, window_size,
    feature_size, norm_name, drop_rate, attn_drop_rate, dropout_path_rate, normalize, norm_layer, patch_norm,
    use_checkpoint, spatial_dims, downsample, use_v2, use_flash_attention, ...) plus ``memory``. No parameter is
    added: a MONAI ``SwinUNETR`` state dict loads with ``strict=True`` both ways, and the same seed builds the
    same weights. STS would need memory adapters across stages (papers.md §000) and is not offered; MAM needs
    attention blocks, so ``use_hyena`` / ``hyena_stages`` stages are refused with ``memory="ists"``.
    """

    def __init__(self, in_channels: int, out_channels: int, *args, memory: str = "ists", **kwargs) -> None:
        attention_for(memory)  # rejects unknown modes with the toolkit's message
        if memory not in SWIN_UNETR_MEMORY_MODES:
            raise ValueError(
                f"SwinUNETR-MAM supports memory {' / '.join(SWIN_UNETR_MEMORY_MODES)} (ISTS, papers.md §000); "
                f"'{memory}' would need memory adapters between stages"
            )
        super().__init__(in_channels, out_channels, *args, **kwargs)
        self.memory = memory
        if memory == "ists":
            if not all(isinstance(b, SwinTransformerBlock) for stage in self.stages() for b in stage.blocks):
                raise ValueError("memory attention needs window-attention stages; use_hyena / hyena_stages give none")
            for stage in self.stages():
                MAMBasicLayer.adopt(stage)

    def stages(self) -> list[BasicLayer]:
        """The four swinViT stages (``swinViT.layers1[0]`` … ``layers4[0]``)."""
        vit = self.swinViT
        return [vit.layers1[0], vit.layers2[0], vit.layers3[0], vit.layers4[0]]  # type: ignore[list-item]
