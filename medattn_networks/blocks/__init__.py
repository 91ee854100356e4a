from medattn_networks.blocks.conv import ConvPReLUNorm, DoubleConv

__all__ = ["ConvPReLUNorm", "DoubleConv"]
