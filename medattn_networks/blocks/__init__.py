from medattn_networks.blocks.conv import ConvPReLUNorm, DoubleConv
from medattn_networks.blocks.resnet_blocks import Bottleneck, ConvNormAct
from medattn_networks.blocks.transformer import (
    Mlp,
    PatchEmbed,
    PatchExpand,
    PatchMerging,
    SwinBlock,
    SwinStage,
    WindowAttention,
    set_fused_attention,
)

__all__ = [
    "ConvPReLUNorm",
    "DoubleConv",
    "Bottleneck",
    "ConvNormAct",
    "Mlp",
    "PatchEmbed",
    "PatchExpand",
    "PatchMerging",
    "SwinBlock",
    "SwinStage",
    "WindowAttention",
    "set_fused_attention",
]
