from medattn_networks.nets.unet3d import UNET_ATTENTIONS, UNet3D
from medattn_networks.nets.vnet import VNET_ATTENTIONS, VNet

__all__ = ["UNet3D", "VNet", "UNET_ATTENTIONS", "VNET_ATTENTIONS"]
