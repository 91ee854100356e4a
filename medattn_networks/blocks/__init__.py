from medattn_networks.blocks.conv import ConvPReLUNorm, DoubleConv
from medattn_networks.blocks.resnet_blocks import Bottleneck, ConvNormAct

__all__ = ["ConvPReLUNorm", "DoubleConv", "Bottleneck", "ConvNormAct"]
