"""ResNet building blocks shared by the DSNet family (papers.md §002): conv-norm-act and a bottleneck with plugin slots.

Attribute names follow mmcv/mmseg (``ConvModule``: ``conv``/``bn``|``gn``/``activate``; ``Bottleneck``: ``conv1``,
``bn1``, ..., ``downsample``), which are also torchvision's ResNet names, so torchvision and mmseg state dicts load
with at most a prefix change.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Optional

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_norm_layer

from medattn_networks.attention.registry import create_attention

__all__ = ["ConvNormAct", "Bottleneck", "PLUGIN_POSITIONS", "norm_attribute"]

PLUGIN_POSITIONS = ("after_conv1", "after_conv2", "after_conv3")


def norm_attribute(norm: Any) -> str:
    """mmcv's attribute name for a norm layer: ``bn`` (batch), ``gn`` (group), ``in`` (instance), ``ln`` (layer)."""
    name = (norm[0] if isinstance(norm, (tuple, list)) else str(norm)).lower()
    for key, abbr in (("batch", "bn"), ("group", "gn"), ("instance", "in"), ("layer", "ln")):
        if name.startswith(key):
            return abbr
    return "norm"


class ConvNormAct(nn.Sequential):
    """Conv → norm → ReLU, mmcv's ``ConvModule`` with the same child names (``conv``, ``bn``/``gn``, ``activate``).

    The conv has a bias only when there is no norm (mmcv's ``bias="auto"``); absent parts are left out.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: convolution kernel; padding keeps the size at stride 1 (``dilation·(k-1)/2``).
        stride: convolution stride.
        dilation: convolution dilation.
        norm: MONAI norm spec (``"batch"``, ``("group", {"num_groups": 32})``, ...) or None.
        act: append a ReLU.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        norm: Any = "batch",
        act: bool = True,
    ) -> None:
        padding = dilation * (kernel_size - 1) // 2
        layers: "OrderedDict[str, nn.Module]" = OrderedDict()
        layers["conv"] = Conv[Conv.CONV, spatial_dims](
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=norm is None
        )
        if norm is not None:
            layers[norm_attribute(norm)] = get_norm_layer(norm, spatial_dims, out_channels)
        if act:
            layers["activate"] = nn.ReLU(inplace=True)
        super().__init__(layers)


class Bottleneck(nn.Module):
    """ResNet bottleneck, pytorch style (the stride sits on the 3×3 conv), with one attention plugin slot.

    conv1 1×1 → BN → ReLU → [after_conv1] → conv2 3×3 (stride, dilation) → BN → ReLU → [after_conv2] → conv3 1×1
    → BN → [after_conv3] → + identity (``downsample``: 1×1 conv with the stride → BN) → ReLU. This is mmseg's
    ``Bottleneck`` with ``plugins`` (DPC-Net commit 9eb75a4, ``seg/models/backbones/resnet.py``): the plugin sees
    ``planes`` channels after conv1/conv2 and ``4·planes`` after conv3.

    Args:
        spatial_dims: 2 or 3.
        inplanes: input channels.
        planes: bottleneck width (output is ``4·planes``).
        stride: stride of the 3×3 conv.
        dilation: dilation (and padding) of the 3×3 conv.
        downsample: module applied to the identity path, or None.
        norm: MONAI norm spec.
        plugin: registry name of the attention plugin, or None.
        plugin_position: one of ``PLUGIN_POSITIONS``.
        plugin_kwargs: keyword arguments of the plugin.
    """

    expansion = 4

    def __init__(
        self,
        spatial_dims: int,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: Optional[nn.Module] = None,
        norm: Any = "batch",
        plugin: Optional[str] = None,
        plugin_position: str = "after_conv2",
        plugin_kwargs: Optional[dict] = None,
    ) -> None:
        super().__init__()
        if plugin_position not in PLUGIN_POSITIONS:
            raise ValueError(f"plugin_position must be one of {PLUGIN_POSITIONS}, got '{plugin_position}'")
        conv = Conv[Conv.CONV, spatial_dims]
        width = planes * self.expansion
        self.conv1 = conv(inplanes, planes, 1, bias=False)
        self.bn1 = get_norm_layer(norm, spatial_dims, planes)
        self.conv2 = conv(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = get_norm_layer(norm, spatial_dims, planes)
        self.conv3 = conv(planes, width, 1, bias=False)
        self.bn3 = get_norm_layer(norm, spatial_dims, width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module = downsample if downsample is not None else nn.Identity()
        self.has_plugin = plugin is not None and plugin != "none"
        self.plugin_position = plugin_position
        slots = {p: nn.Identity() for p in PLUGIN_POSITIONS}
        if self.has_plugin:
            channels = width if plugin_position == "after_conv3" else planes
            slots[plugin_position] = create_attention(plugin, spatial_dims, channels, **(plugin_kwargs or {}))
        self.after_conv1: nn.Module = slots["after_conv1"]
        self.after_conv2: nn.Module = slots["after_conv2"]
        self.after_conv3: nn.Module = slots["after_conv3"]

    def own_layers(self) -> list[nn.Module]:
        """The block's convs and norms (not the plugin), for weight initialisation."""
        layers: list[nn.Module] = [self.conv1, self.bn1, self.conv2, self.bn2, self.conv3, self.bn3]
        layers.extend(self.downsample.modules())
        return layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.after_conv1(self.relu(self.bn1(self.conv1(x))))
        out = self.after_conv2(self.relu(self.bn2(self.conv2(out))))
        out = self.after_conv3(self.bn3(self.conv3(out)))
        return self.relu(out + self.downsample(x))
