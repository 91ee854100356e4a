from medattn_networks.nets.da_transunet import (
    DATransUnet,
    convert_released_da_transunet_state_dict,
    load_r50_vit_npz,
)
from medattn_networks.nets.fcn import (
    SEGMENTATION_HEADS,
    CCHead,
    DAHead,
    DSNetHead,
    EAHead,
    FCNHead,
    GCHead,
    HamHead,
    SegmentationNet,
    build_head,
    fcn_resnet50,
)
from medattn_networks.nets.fine import FINE, convert_released_fine_state_dict
from medattn_networks.nets.maxvit import MaxViT, load_timm_maxvit, maxvit_rmlp_small_rw_224
from medattn_networks.nets.msa2net import MSA2Net
from medattn_networks.nets.nnformer import NNFormer, convert_released_nnformer_state_dict
from medattn_networks.nets.resnet import (
    FCANET_DCT_SIZES,
    RESNET_DEPTHS,
    ResNet,
    ResNetClassifier,
    convert_mmseg_state_dict,
    load_pretrained,
    resnet50_classifier,
)
from medattn_networks.nets.swin_unet import SwinUnet, convert_released_swin_unet_state_dict
from medattn_networks.nets.swin_unetr_mam import SwinUNETRMAM
from medattn_networks.nets.unet3d import UNET_ATTENTIONS, UNet3D
from medattn_networks.nets.vnet import VNET_ATTENTIONS, VNet

__all__ = [
    "UNet3D",
    "SwinUnet",
    "convert_released_swin_unet_state_dict",
    "SwinUNETRMAM",
    "NNFormer",
    "convert_released_nnformer_state_dict",
    "FINE",
    "convert_released_fine_state_dict",
    "MaxViT",
    "maxvit_rmlp_small_rw_224",
    "load_timm_maxvit",
    "MSA2Net",
    "DATransUnet",
    "load_r50_vit_npz",
    "convert_released_da_transunet_state_dict",
    "VNet",
    "UNET_ATTENTIONS",
    "VNET_ATTENTIONS",
    "ResNet",
    "ResNetClassifier",
    "RESNET_DEPTHS",
    "FCANET_DCT_SIZES",
    "resnet50_classifier",
    "load_pretrained",
    "convert_mmseg_state_dict",
    "FCNHead",
    "DSNetHead",
    "DAHead",
    "CCHead",
    "GCHead",
    "HamHead",
    "EAHead",
    "SegmentationNet",
    "SEGMENTATION_HEADS",
    "build_head",
    "fcn_resnet50",
]
