"""medattn_networks: attention modules, paper networks and bundle glue for medical image segmentation."""

__version__ = "0.1.0"

from medattn_networks import attention, blocks, data, engine, nets  # noqa: E402
from medattn_networks.attention import create_attention, list_attention  # noqa: E402
from medattn_networks.nets import UNet3D, VNet  # noqa: E402

__all__ = ["attention", "blocks", "data", "engine", "nets", "create_attention", "list_attention", "UNet3D", "VNet", "__version__"]
