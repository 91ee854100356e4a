"""How the AttentionBased-MIS networks size each attention module at one resolution level."""

from __future__ import annotations

import torch.nn as nn

from medattn_networks.attention import create_attention

SLICE_ATTENTIONS = ("pam", "sca", "csa", "sa")


def level_attention(
    name: str,
    spatial_dims: int,
    channels: int,
    depth: int | None,
    slice_reduction: int,
    channel_reduction: int,
    pooling: str = "avg",
) -> nn.Module:
    """Attention for one level: the channel ratio is ``min(channel_reduction, C)`` as in the paper's code.

    Args:
        name: registry name; modules without a level-wide role (``ag``, ``pe``) are handled by the nets.
        spatial_dims: 2 or 3.
        channels: channels at this level.
        depth: slice count at this level (needed by slice attentions only).
        slice_reduction: r_D of slice attention.
        channel_reduction: r_C of channel attention.
        pooling: channel pooling of cSE/PAM: avg | max | avgmax.
    """
    ratio = min(channel_reduction, channels)
    if name == "cse":
        return create_attention("cse", spatial_dims, channels, reduction=ratio, pooling=pooling)
    if name == "sa":
        return create_attention("sa", spatial_dims, channels, depth=depth, reduction=slice_reduction)
    if name in SLICE_ATTENTIONS:
        if depth is None:
            raise ValueError(f"attention '{name}' needs the slice count: pass depth=<first spatial size of the input>")
        return create_attention(
            name,
            spatial_dims,
            channels,
            depth=depth,
            slice_reduction=slice_reduction,
            channel_reduction=ratio,
            pooling=pooling,
        )
    return create_attention(name, spatial_dims, channels)
