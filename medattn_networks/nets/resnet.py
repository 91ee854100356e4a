"""ResNet backbones of DSNet (papers.md §002): V1b / V1c stems, optional dilated D8 stages, attention plugins.

The backbone is mmseg's ``ResNet`` / ``ResNetV1c`` as DSNet configures it (DPC-Net commit 9eb75a4,
``seg/models/backbones/resnet.py`` and ``new_configs``), written with MONAI factories so the same code builds 2D and
3D nets (the paper uses 2D). Parameter names equal torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer1.0.downsample.0``, ``fc``) and mmseg's (whose V1c stem is ``stem.0``, ``stem.1``, ``stem.3``, ...), so
ImageNet weights load from a local file with :func:`load_pretrained`; :func:`convert_mmseg_state_dict` maps an mmseg
segmentor checkpoint onto :class:`~medattn_networks.nets.fcn.SegmentationNet`. Weights are never downloaded.
"""

from __future__ import annotations

import logging

import os
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv, Pool
from monai.networks.layers.utils import get_norm_layer

import medattn_networks.attention.channel  # noqa: F401  (registers se, eca, fca, enc, splat, gc)
import medattn_networks.attention.gates  # noqa: F401  (registers cbam)
import medattn_networks.attention.self_attention  # noqa: F401  (registers psa_*, danet*, cca, ea, ham, dsm)
from medattn_networks.blocks.resnet_blocks import PLUGIN_POSITIONS, Bottleneck

__all__ = [
    "ResNet",
    "ResNetClassifier",
    "RESNET_DEPTHS",
    "FCANET_DCT_SIZES",
    "resnet50_classifier",
    "load_pretrained",
    "convert_mmseg_state_dict",
]

RESNET_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
# FcaNet's DCT size per stage (its ``c2wh`` for planes 64/128/256/512: the 224² ImageNet feature sizes).
FCANET_DCT_SIZES = (56, 28, 14, 7)
_BLOCK_KEYS = ("conv1", "conv2", "conv3", "bn1", "bn2", "bn3", "downsample")


def _stage_flags(stages: Sequence[bool] | bool, num_stages: int) -> list[bool]:
    if isinstance(stages, bool):
        return [stages] * num_stages
    flags = [bool(s) for s in stages]
    if len(flags) != num_stages:
        raise ValueError(f"plugin_stages needs {num_stages} flags, got {len(flags)}")
    return flags


class ResNet(nn.Module):
    """Bottleneck ResNet returning the outputs of its four stages (mmseg's ``ResNet``/``ResNetV1c``, pytorch style).

    Stem ``"v1b"``: 7×7 conv stride 2 (``conv1``, ``bn1``) → ReLU → 3×3 max-pool stride 2. Stem ``"v1c"``: three 3×3
    convs (stride 2 then 1, 1; in → stem/2 → stem/2 → stem channels), each BN + ReLU (``stem.0``..``stem.8``) →
    max-pool. Stage i has ``4·base·2^i`` output channels. ``dilated=True`` gives DeepLab's D8 layout: strides
    (1, 2, 1, 1), dilations (1, 1, 2, 4) and, with ``contract_dilation``, the first block of a dilated stage uses half
    the dilation (stage 3: 1, 2, 2, ...; stage 4: 2, 4, 4), so stages 2–4 stay at 1/8.

    Plugins: one attention module from the registry (``medattn_networks.attention``) is inserted into every
    bottleneck of the flagged stages at ``plugin_position`` (``after_conv1``/``after_conv2`` see ``planes``
    channels, ``after_conv3`` sees ``4·planes``, after BN3 and before the residual addition). For ``plugin="fca"``
    the DCT size defaults to FcaNet's per-stage size (56/28/14/7 for stages 1–4) unless ``plugin_kwargs``
    or ``plugin_stage_kwargs`` give one.

    Initialisation (no checkpoint): convs He-normal (fan-out, ReLU), norms weight 1 / bias 0, and with
    ``zero_init_residual`` the last BN of each block starts at zero (mmseg's default); plugins keep their own init.

    Args:
        spatial_dims: 2 (the paper) or 3.
        in_channels: input channels.
        depth: 50, 101 or 152.
        stem: ``"v1b"`` (7×7) or ``"v1c"`` (deep 3×3 stem).
        stem_channels: stem output channels (64).
        base_channels: planes of the first stage (64).
        dilated: use the D8 layout (overrides ``strides``/``dilations``).
        strides: stride of the first block per stage (when not dilated).
        dilations: dilation per stage (when not dilated).
        contract_dilation: halve the dilation of the first block of dilated stages.
        out_indices: which stage outputs to return.
        plugin: registry name of the plugin, or None.
        plugin_stages: one flag per stage (or one bool for all).
        plugin_position: ``after_conv1``, ``after_conv2`` or ``after_conv3``.
        plugin_kwargs: keyword arguments for every plugin (e.g. ``{"ratio": 2, "bias": True}`` for DSM).
        plugin_stage_kwargs: optional per-stage dicts merged over ``plugin_kwargs``.
        norm: MONAI norm spec for the backbone ("batch").
        zero_init_residual: zero-initialise BN3 of every block.
        pretrained: optional path of a local checkpoint loaded with :func:`load_pretrained` (non-strict).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        depth: int = 50,
        stem: str = "v1c",
        stem_channels: int = 64,
        base_channels: int = 64,
        dilated: bool = True,
        strides: Sequence[int] = (1, 2, 2, 2),
        dilations: Sequence[int] = (1, 1, 1, 1),
        contract_dilation: bool = True,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        plugin: Optional[str] = None,
        plugin_stages: Sequence[bool] | bool = (False, False, False, True),
        plugin_position: str = "after_conv2",
        plugin_kwargs: Optional[Mapping[str, Any]] = None,
        plugin_stage_kwargs: Optional[Sequence[Mapping[str, Any]]] = None,
        norm: Any = "batch",
        zero_init_residual: bool = True,
        pretrained: Optional[str] = None,
    ) -> None:
        super().__init__()
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"depth must be one of {sorted(RESNET_DEPTHS)}, got {depth}")
        if stem not in ("v1b", "v1c"):
            raise ValueError(f"stem must be 'v1b' or 'v1c', got '{stem}'")
        if plugin_position not in PLUGIN_POSITIONS:
            raise ValueError(f"plugin_position must be one of {PLUGIN_POSITIONS}, got '{plugin_position}'")
        if dilated:
            strides, dilations = (1, 2, 1, 1), (1, 1, 2, 4)
        if len(strides) != 4 or len(dilations) != 4:
            raise ValueError("strides and dilations need one value per stage (4)")
        if not all(0 <= i < 4 for i in out_indices):
            raise ValueError(f"out_indices must lie in 0..3, got {out_indices}")
        flags = _stage_flags(plugin_stages, 4)
        if plugin_stage_kwargs is not None and len(plugin_stage_kwargs) != 4:
            raise ValueError("plugin_stage_kwargs needs one dict per stage (4)")
        conv = Conv[Conv.CONV, spatial_dims]
        self.spatial_dims = spatial_dims
        self.stem_type = stem
        self.out_indices = [int(i) for i in out_indices]
        self.strides = [int(s) for s in strides]
        self.dilations = [int(d) for d in dilations]

        # v1b: conv1 → bn1 → relu (stem = identity); v1c: stem (conv1/bn1/relu = identity). One forward for both.
        self.conv1: nn.Module = nn.Identity()
        self.bn1: nn.Module = nn.Identity()
        self.relu: nn.Module = nn.Identity()
        self.stem: nn.Module = nn.Identity()
        if stem == "v1b":
            self.conv1 = conv(in_channels, stem_channels, 7, stride=2, padding=3, bias=False)
            self.bn1 = get_norm_layer(norm, spatial_dims, stem_channels)
            self.relu = nn.ReLU(inplace=True)
        else:
            half = stem_channels // 2
            self.stem = nn.Sequential(
                conv(in_channels, half, 3, stride=2, padding=1, bias=False),
                get_norm_layer(norm, spatial_dims, half),
                nn.ReLU(inplace=True),
                conv(half, half, 3, stride=1, padding=1, bias=False),
                get_norm_layer(norm, spatial_dims, half),
                nn.ReLU(inplace=True),
                conv(half, stem_channels, 3, stride=1, padding=1, bias=False),
                get_norm_layer(norm, spatial_dims, stem_channels),
                nn.ReLU(inplace=True),
            )
        self.maxpool = Pool[Pool.MAX, spatial_dims](kernel_size=3, stride=2, padding=1)

        inplanes = stem_channels
        self.out_channels: list[int] = []
        layers = []
        for i, num_blocks in enumerate(RESNET_DEPTHS[depth]):
            planes = base_channels * 2**i
            kwargs = dict(plugin_kwargs or {})
            if plugin_stage_kwargs is not None:
                kwargs.update(plugin_stage_kwargs[i])
            if plugin == "fca" and "dct_size" not in kwargs:
                kwargs["dct_size"] = FCANET_DCT_SIZES[i]
            layer = self._make_layer(
                spatial_dims,
                inplanes,
                planes,
                num_blocks,
                self.strides[i],
                self.dilations[i],
                contract_dilation,
                norm,
                plugin if flags[i] else None,
                plugin_position,
                kwargs,
            )
            layers.append(layer)
            inplanes = planes * Bottleneck.expansion
            self.out_channels.append(inplanes)
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self._init_weights(zero_init_residual)
        if pretrained:
            load_pretrained(self, pretrained)

    @staticmethod
    def _make_layer(
        spatial_dims: int,
        inplanes: int,
        planes: int,
        num_blocks: int,
        stride: int,
        dilation: int,
        contract_dilation: bool,
        norm: Any,
        plugin: Optional[str],
        plugin_position: str,
        plugin_kwargs: Mapping[str, Any],
    ) -> nn.Sequential:
        """One stage (mmseg's ``ResLayer``): a 1×1 strided projection on the first block when the shape changes."""
        downsample = None
        width = planes * Bottleneck.expansion
        if stride != 1 or inplanes != width:
            downsample = nn.Sequential(
                Conv[Conv.CONV, spatial_dims](inplanes, width, 1, stride=stride, bias=False),
                get_norm_layer(norm, spatial_dims, width),
            )
        first_dilation = dilation // 2 if contract_dilation and dilation > 1 else dilation
        blocks = []
        for j in range(num_blocks):
            blocks.append(
                Bottleneck(
                    spatial_dims,
                    inplanes if j == 0 else width,
                    planes,
                    stride=stride if j == 0 else 1,
                    dilation=first_dilation if j == 0 else dilation,
                    downsample=downsample if j == 0 else None,
                    norm=norm,
                    plugin=plugin,
                    plugin_position=plugin_position,
                    plugin_kwargs=dict(plugin_kwargs),
                )
            )
        return nn.Sequential(*blocks)

    def _init_weights(self, zero_init_residual: bool) -> None:
        own: list[nn.Module] = [self.conv1, self.bn1] + list(self.stem.modules())
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                own.extend(block.own_layers())
        for m in own:
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
                for block in layer:
                    if block.bn3.weight is not None:
                        nn.init.zeros_(block.bn3.weight)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_stages(x)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the stages listed in ``out_indices``."""
        x = self.maxpool(self.stem(self.relu(self.bn1(self.conv1(x)))))
        outs: list[torch.Tensor] = []
        x = self.layer1(x)
        if 0 in self.out_indices:
            outs.append(x)
        x = self.layer2(x)
        if 1 in self.out_indices:
            outs.append(x)
        x = self.layer3(x)
        if 2 in self.out_indices:
            outs.append(x)
        x = self.layer4(x)
        if 3 in self.out_indices:
            outs.append(x)
        return outs


class ResNetClassifier(ResNet):
    """ImageNet-style classifier: :class:`ResNet` (last stage) → global average pool → ``fc`` (for count checks).

    Its state dict has exactly torchvision's ResNet names (``conv1``... ``fc``) for the V1b stem, so a torchvision
    ResNet-50 checkpoint loads with ``strict=True``. ``forward_features`` stops before ``fc`` (mmpretrain's
    ``extract_feat``: backbone + GAP neck), which is what the paper's ImageNet FLOPs measure.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: classifier outputs (1000).
        backbone_kwargs: keyword arguments of :class:`ResNet` (``out_indices`` is forced to the last stage,
            ``pretrained`` is loaded after the classifier exists).
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 3, num_classes: int = 1000, **backbone_kwargs: Any):
        backbone_kwargs = dict(backbone_kwargs)
        backbone_kwargs["out_indices"] = (3,)
        pretrained = backbone_kwargs.pop("pretrained", None)
        super().__init__(spatial_dims, in_channels, **backbone_kwargs)
        self.avgpool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.fc = nn.Linear(self.out_channels[-1], num_classes)
        if pretrained:
            load_pretrained(self, pretrained)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.avgpool(self.forward_stages(x)[-1]).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.fc(self.forward_features(x))


def resnet50_classifier(
    num_classes: int = 1000,
    in_channels: int = 3,
    spatial_dims: int = 2,
    stem: str = "v1b",
    plugin: Optional[str] = None,
    plugin_stages: Sequence[bool] | bool = (False, False, False, True),
    plugin_position: str = "after_conv2",
    plugin_kwargs: Optional[Mapping[str, Any]] = None,
    **kwargs: Any,
) -> ResNetClassifier:
    """ResNet-50 classifier (V1b, undilated by default) with an optional plugin, as the paper's ImageNet rows.

    Args:
        num_classes: classifier outputs.
        in_channels: input channels.
        spatial_dims: 2 or 3.
        stem: ``"v1b"`` or ``"v1c"``.
        plugin: registry name, or None.
        plugin_stages: stage flags.
        plugin_position: plugin slot.
        plugin_kwargs: plugin options.
        kwargs: further :class:`ResNet` options (``dilated`` defaults to False here).
    """
    kwargs.setdefault("dilated", False)
    return ResNetClassifier(
        spatial_dims,
        in_channels,
        num_classes,
        depth=50,
        stem=stem,
        plugin=plugin,
        plugin_stages=plugin_stages,
        plugin_position=plugin_position,
        plugin_kwargs=plugin_kwargs,
        **kwargs,
    )


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights not found: {path} (weights are never downloaded)")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    return dict(obj)


def load_pretrained(module: nn.Module, path: str | Mapping[str, torch.Tensor], strict: bool = False) -> dict:
    """Load local ImageNet (or segmentation) weights into a :class:`ResNet`, :class:`ResNetClassifier` or net.

    Accepted layouts: torchvision's ResNet (``conv1.weight``, ``layer1.0.bn1.weight``, ``fc.weight``), mmseg /
    mmpretrain backbones (the same names, V1c stem as ``stem.0``...; a ``backbone.`` prefix and a ``state_dict``
    wrapper are removed) and ``module.`` prefixes of DataParallel. Keys the target lacks (e.g. ``fc`` for a bare
    backbone) and shape mismatches are skipped and reported; plugin parameters stay at their initialisation.

    Args:
        module: the target.
        path: checkpoint path (``torch.load``-able, read with ``weights_only=True``) or a state dict.
        strict: raise if any target key is left unloaded or any checkpoint key is unused.

    Returns:
        dict with ``loaded``, ``missing`` (target keys not in the checkpoint), ``unexpected`` (unused checkpoint keys).
    """
    state = _read_state_dict(path) if isinstance(path, str) else dict(path)
    target = module.state_dict()
    target_is_backbone = isinstance(module, ResNet)  # classifiers included: their keys carry no prefix
    target_prefix = "backbone." if any(k.startswith("backbone.") for k in target) else ""
    mapped: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, value in state.items():
        name = key[len("module.") :] if key.startswith("module.") else key
        if target_is_backbone and name.startswith("backbone."):
            name = name[len("backbone.") :]
        elif target_prefix and not name.startswith(target_prefix) and f"{target_prefix}{name}" in target:
            name = f"{target_prefix}{name}"
        if name in target and tuple(target[name].shape) == tuple(value.shape):
            mapped[name] = value
        else:
            unexpected.append(key)
    if not mapped:
        source = path if isinstance(path, str) else "the state dict"
        raise ValueError(f"no checkpoint key of {source} matches the model")
    missing = [k for k in target if k not in mapped]
    if strict and (missing or unexpected):
        raise RuntimeError(f"strict load failed: missing {missing[:10]}..., unexpected {unexpected[:10]}...")
    module.load_state_dict(mapped, strict=False)
    source = path if isinstance(path, str) else "a state dict"
    logging.getLogger("medattn.pretrained").info(
        "loaded %d tensors from %s; %d model keys kept their initialisation%s; %d checkpoint keys unused%s",
        len(mapped),
        source,
        len(missing),
        f" (e.g. {missing[0]})" if missing else "",
        len(unexpected),
        f" (e.g. {unexpected[0]})" if unexpected else "",
    )
    return {"loaded": sorted(mapped), "missing": missing, "unexpected": unexpected}


_HEAD_ATTENTION_NAMES = ("dsn_block", "ea_block", "cca", "gc_block")
_HAM_RENAMES = {
    "ham_in.conv.": "ham.ham_in.",
    "ham_out.conv.": "ham.ham_out.0.",
    "ham_out.gn.": "ham.ham_out.1.",
}
_WEIGHT_BIAS = ("weight", "bias")
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# Backbone plugins of DSNet's comparison table whose internals are named differently from ours. Key: the attribute
# mmcv's ``build_plugin_layer`` gives the plugin in the bottleneck (the class name in snake case: ``SELayer`` →
# ``se_layer``, ``CBAM`` → ``cbam``, ``EncModule`` → ``enc_module``); value: our registry name and, per released
# sub-module, (released prefix, our prefix, the parameter / buffer names it holds). Every released key of these
# plugins must match one row, so nothing is dropped or invented.
_RELEASED_PLUGINS: dict[str, tuple[str, tuple[tuple[str, str, tuple[str, ...]], ...]]] = {
    # SELayer: two mmcv ConvModules without norm (conv with bias), activations ReLU / HSigmoid.
    "se_layer": ("se_mmseg", (("conv1.conv.", "conv1.", _WEIGHT_BIAS), ("conv2.conv.", "conv2.", _WEIGHT_BIAS))),
    # CBAM (official Jongchan code): ChannelGate.mlp = (Flatten, Linear, ReLU, Linear); SpatialGate.spatial is a
    # BasicConv (conv 2→1 without bias, BN).
    "cbam": (
        "cbam",
        (
            ("ChannelGate.mlp.1.", "mlp.0.", _WEIGHT_BIAS),
            ("ChannelGate.mlp.3.", "mlp.2.", _WEIGHT_BIAS),
            ("SpatialGate.spatial.conv.", "spatial_conv.", ("weight",)),
            ("SpatialGate.spatial.bn.", "spatial_norm.", _BN),
        ),
    ),
    # EncModule: encoding_project = ConvModule (conv without bias, bn, ReLU); encoding = (Encoding, BN1d, ReLU);
    # fc = (Linear, Sigmoid).
    "enc_module": (
        "enc",
        (
            ("encoding_project.conv.", "project.0.", ("weight",)),
            ("encoding_project.bn.", "project.1.", _BN),
            ("encoding.0.", "", ("codewords", "scale")),
            ("encoding.1.", "code_norm.", _BN),
            ("fc.0.", "fc.", _WEIGHT_BIAS),
        ),
    ),
}


def _rename_released_plugin(plugin: str, rest: str, key: str) -> str:
    """Our name (inside the plugin) for ``rest``, a key inside the released plugin ``plugin``; KeyError if unknown."""
    registry_name, rows = _RELEASED_PLUGINS[plugin]
    for old, new, leaves in rows:
        if rest.startswith(old) and rest[len(old) :] in leaves:
            return new + rest[len(old) :]
    known = ", ".join(f"{old}{{{'|'.join(leaves)}}}" for old, _, leaves in rows)
    raise KeyError(
        f"unknown key '{rest}' of the released '{plugin}' plugin in '{key}' (our '{registry_name}' has no equivalent);"
        f" known keys: {known}"
    )


def convert_mmseg_state_dict(
    state_dict: Mapping[str, torch.Tensor], plugin_names: Optional[Mapping[str, str]] = None
) -> dict[str, torch.Tensor]:
    """Rename an mmseg ``EncoderDecoder`` checkpoint (DPC-Net's training output) to :class:`SegmentationNet` keys.

    mmseg and this package share the ``backbone.``, ``decode_head.`` and ``auxiliary_head.`` prefixes, the backbone
    names (``backbone.stem.0``, ``backbone.layer1.0.conv1``, ``.bn1``, ``.downsample.0``) and the head names
    (``decode_head.convs.0.conv``/``.bn``, ``conv_cat``, ``conv_seg``, DAHead's ``pam_in_conv``...). Renamed here:

    - backbone plugins: mmseg names them after the plugin class (DSNet's ``DSA`` → ``dsa``, ``ContextBlock`` →
      ``context_block``, ``SELayer`` → ``se_layer``, ``CBAM`` → ``cbam``, ``EncModule`` → ``enc_module``), this
      package after their slot; ``plugin_names`` maps one to the other, e.g. ``{"dsa": "after_conv2"}`` or, for
      the comparison table's SE / CBAM / EncNet rows, ``{"se_layer": "after_conv1"}``;
    - the internals of three released plugins, to the registry modules the net must be built with
      (``plugin=`` of :class:`ResNet`):

      ``se_layer.conv{1,2}.conv.{weight,bias}`` → ``se_mmseg``'s ``conv{1,2}.{weight,bias}``;
      ``cbam.ChannelGate.mlp.{1,3}.*`` → ``cbam``'s ``mlp.{0,2}.*``, ``cbam.SpatialGate.spatial.conv.weight`` →
      ``spatial_conv.weight``, ``cbam.SpatialGate.spatial.bn.*`` → ``spatial_norm.*``;
      ``enc_module.encoding_project.{conv,bn}.*`` → ``enc``'s ``project.{0,1}.*``,
      ``enc_module.encoding.0.{codewords,scale}`` → ``codewords``, ``scale``, ``enc_module.encoding.1.*`` (the
      BatchNorm1d over the codes) → ``code_norm.*``, ``enc_module.fc.0.*`` → ``fc.*``.
      Any other key inside these three plugins raises a ``KeyError`` naming it. Released options without an
      equivalent here: CBAM's ``no_spatial=True`` (no ``SpatialGate`` keys; ours always has the spatial gate — a
      ``ValueError`` says so) and CBAM on fewer channels than its ratio (the released MLP is ``C // r`` wide, 0 for
      C < r; ours is at least 1 wide, so such a checkpoint fails on shapes);
    - the head's attention block (``dsn_block``, ``ea_block``, ``cca``, ``gc_block``) → ``attention``;
    - mmcv ``Scale`` parameters (``gamma.scale``, a 0-d tensor) → ``gamma`` of shape (1,);
    - DSNet's HamHead ``ham_in.conv`` / ``ham_out.conv`` / ``ham_out.gn`` → the ``ham`` module's
      ``ham_in`` / ``ham_out.0`` / ``ham_out.1``.

    ``data_preprocessor`` entries are dropped and a ``state_dict`` wrapper is removed. Module internals of other
    plugins follow each registry module's docstring (DSM, EA, PSA, CCA, GC, DANet use the reference names).

    Args:
        state_dict: the mmseg checkpoint's state dict (or the whole checkpoint dict).
        plugin_names: mmseg plugin attribute → slot name (``after_conv1``, ``after_conv2`` or ``after_conv3``).

    Returns:
        The renamed state dict, ready for ``SegmentationNet.load_state_dict``.
    """
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    renames = dict(plugin_names or {})
    for name, slot in renames.items():
        if slot not in PLUGIN_POSITIONS:
            raise ValueError(f"plugin_names['{name}'] must be one of {PLUGIN_POSITIONS}, got '{slot}'")
    out: dict[str, torch.Tensor] = {}
    cbam_parts: dict[str, set[str]] = {}
    for key, value in state_dict.items():
        if key.startswith("data_preprocessor."):
            continue
        parts = key.split(".")
        # backbone.layerI.J.<plugin>.rest
        if len(parts) > 4 and parts[0] == "backbone" and parts[1].startswith("layer") and parts[3] not in _BLOCK_KEYS:
            plugin = parts[3]
            if plugin not in renames:
                raise KeyError(f"unknown block entry '{plugin}' in '{key}': pass plugin_names={{'{plugin}': slot}}")
            rest = ".".join(parts[4:])
            if plugin in _RELEASED_PLUGINS:
                if plugin == "cbam":
                    cbam_parts.setdefault(".".join(parts[:4]), set()).add(parts[4])
                rest = _rename_released_plugin(plugin, rest, key)
            parts = parts[:3] + [renames[plugin]] + rest.split(".")
        if len(parts) > 2 and parts[0] in ("decode_head", "auxiliary_head") and parts[1] in _HEAD_ATTENTION_NAMES:
            parts[1] = "attention"
        name = ".".join(parts)
        if parts[0] in ("decode_head", "auxiliary_head"):
            for old, new in _HAM_RENAMES.items():
                if name.startswith(f"{parts[0]}.{old}"):
                    name = f"{parts[0]}.{new}" + name[len(parts[0]) + 1 + len(old) :]
        if name.endswith(".gamma.scale"):
            name = name[: -len(".scale")]
            value = value.reshape(1)
        out[name] = value
    for block, gates in cbam_parts.items():
        if "SpatialGate" not in gates:
            raise ValueError(
                f"'{block}.cbam' has no SpatialGate (released CBAM with no_spatial=True): our 'cbam' always has the"
                " spatial gate, so this checkpoint has no equivalent here"
            )
    return out
