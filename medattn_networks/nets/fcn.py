"""FCN-style segmentation nets of DSNet (papers.md §002): ResNet backbone + decode head, built from JSON by name.

Heads follow mmseg / DSNet (DPC-Net commit 9eb75a4) and reuse the attention registry for their attention blocks:

==========  =====================================================================================================
``fcn``     FCNHead: two 3×3 ConvBNReLU (in → 512 → 512), concat with the input → 3×3 ConvBNReLU (in+512 → 512),
            Dropout 0.1, 1×1 classifier (bias).
``dsnet``   DSNet's DSNHead: the FCN head with DSM(512, ratio 2, bias False) between its two convs.
``danet``   mmseg's DAHead: position branch (3×3 in → 512, PAM with 64 q/k channels, 3×3) and channel branch (3×3,
            CAM, 3×3) summed → classifier; the branch classifiers are side outputs for deep supervision.
``ccnet``   mmseg's CCHead: FCN head with criss-cross attention applied twice (shared weights) between the convs.
``gcnet``   mmseg's GCHead: FCN head with a global context block (ratio 1/4, attention pooling, channel add).
``hamnet``  DSNet's HamHead (its ResNet config; not mmseg's multi-level LightHamHead): 3×3 squeeze in → 512 (GN 32),
            Hamburger (NMF, R = 64, 6/7 steps, GN), 3×3 align (GN), concat with the input → 3×3 (GN) → classifier.
``eanet``   DSNet's EAHead: FCN head with external attention (128 memory units) between the convs.
==========  =====================================================================================================

Module names equal mmseg's (``backbone``, ``decode_head.convs.0.conv``/``.bn``, ``conv_cat``, ``conv_seg``,
``auxiliary_head``) except the head's attention block, which is ``decode_head.attention`` (see
:func:`~medattn_networks.nets.resnet.convert_mmseg_state_dict`).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Dropout

from medattn_networks.attention.registry import create_attention
from medattn_networks.blocks.resnet_blocks import ConvNormAct
from medattn_networks.nets.resnet import ResNet

__all__ = [
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

GROUP_NORM_32 = ("group", {"num_groups": 32})


def _init_head(head: nn.Module, skip: Sequence[nn.Module] = ()) -> None:
    """mmcv's ConvModule init (He-normal fan-out, norms 1/0) on the head's own convs; classifiers N(0, 0.01)."""
    skipped = {id(m) for s in skip for m in s.modules()}
    for m in head.modules():
        if id(m) in skipped:
            continue
        if isinstance(m, ConvNormAct):
            conv = m.conv
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
        elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class _DecodeHead(nn.Module):
    """Shared part of the heads: input selection, dropout and the 1×1 classifier ``conv_seg`` (mmseg's ``cls_seg``).

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the selected backbone output.
        channels: head width.
        num_classes: output channels.
        in_index: which backbone output the head reads (-1: the last).
        dropout: Dropout2d/3d rate before the classifier (0 disables).
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, channels: int, num_classes: int, in_index: int, dropout: float
    ) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.channels = channels
        self.num_classes = num_classes
        self.in_index = in_index
        self.conv_seg = Conv[Conv.CONV, spatial_dims](channels, num_classes, 1)
        self.dropout: nn.Module = Dropout[Dropout.DROPOUT, spatial_dims](dropout) if dropout > 0 else nn.Identity()
        nn.init.normal_(self.conv_seg.weight, 0.0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def cls_seg(self, feat: torch.Tensor) -> torch.Tensor:
        return self.conv_seg(self.dropout(feat))

    def forward_all(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Main logits first, then side outputs for deep supervision (none for most heads)."""
        return [self.forward(features)]


class FCNHead(_DecodeHead):
    """mmseg's FCNHead, optionally with an attention block between its first and second conv.

    ``convs``: ``num_convs`` k×k ConvNormAct (in → channels → channels ...); ``conv_cat`` (with ``concat_input``):
    k×k ConvNormAct on [input, convs output]; then dropout and the classifier. With ``attention`` (a registry name)
    the block ``attention`` (C = channels) runs after ``convs[0]`` — DSNet's DSNHead / EAHead, mmseg's CCHead / GCHead.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (2048 for ResNet-50 stage 4).
        channels: head width (512).
        num_classes: output channels.
        num_convs: convs before the concat (2; 1 for the Cityscapes auxiliary head).
        kernel_size: conv kernel (3).
        concat_input: concat the input before the final conv.
        dilation: dilation of ``convs``.
        dropout: dropout before the classifier.
        in_index: backbone output to read.
        norm: MONAI norm spec of the convs.
        attention: registry name of the block between ``convs[0]`` and ``convs[1]``, or None.
        attention_kwargs: its options.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: int,
        num_classes: int,
        num_convs: int = 2,
        kernel_size: int = 3,
        concat_input: bool = True,
        dilation: int = 1,
        dropout: float = 0.1,
        in_index: int = -1,
        norm: Any = "batch",
        attention: Optional[str] = None,
        attention_kwargs: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(spatial_dims, in_channels, channels, num_classes, in_index, dropout)
        if num_convs < 0:
            raise ValueError(f"num_convs must be >= 0, got {num_convs}")
        if num_convs == 0 and in_channels != channels:
            raise ValueError("num_convs == 0 needs in_channels == channels")
        if attention is not None and num_convs < 1:
            raise ValueError("an attention block needs at least one conv before it")
        convs = [
            ConvNormAct(
                spatial_dims, in_channels if i == 0 else channels, channels, kernel_size, dilation=dilation, norm=norm
            )
            for i in range(num_convs)
        ]
        self.convs = nn.Sequential(*convs)
        self.concat_input = concat_input
        self.conv_cat: nn.Module = nn.Identity()
        if concat_input:
            self.conv_cat = ConvNormAct(spatial_dims, in_channels + channels, channels, kernel_size, norm=norm)
        self.attention: nn.Module = nn.Identity()
        if attention is not None:
            self.attention = create_attention(attention, spatial_dims, channels, **dict(attention_kwargs or {}))
        _init_head(self, skip=[self.attention])

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[self.in_index]
        feats = x
        for i, conv in enumerate(self.convs):
            feats = conv(feats)
            if i == 0:
                feats = self.attention(feats)
        if self.concat_input:
            feats = self.conv_cat(torch.cat([x, feats], dim=1))
        return self.cls_seg(feats)


class DSNetHead(FCNHead):
    """DSNet's DSNHead: FCN head (2 convs, concat input) with DSM(channels, ratio, bias) after the first conv.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        channels: head width (512).
        num_classes: output channels.
        ratio: DSM ratio (2).
        bias: DSM conv bias (False, the released ``DSA`` default the head uses).
        kwargs: further :class:`FCNHead` options (``sk_norm`` etc. go through ``attention_kwargs``).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: int,
        num_classes: int,
        ratio: int = 2,
        bias: bool = False,
        **kwargs: Any,
    ) -> None:
        attention_kwargs = {"ratio": ratio, "bias": bias, **dict(kwargs.pop("attention_kwargs", None) or {})}
        super().__init__(
            spatial_dims,
            in_channels,
            channels,
            num_classes,
            attention="dsm",
            attention_kwargs=attention_kwargs,
            **kwargs,
        )


class EAHead(FCNHead):
    """DSNet's EAHead: FCN head with external attention (``memory_units`` = 128) after the first conv.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        channels: head width.
        num_classes: output channels.
        memory_units: external memory size (128).
        seed_view: reproduce the released token reshaping (see the ``ea`` module); False builds true tokens.
        kwargs: further :class:`FCNHead` options.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: int,
        num_classes: int,
        memory_units: int = 128,
        seed_view: bool = False,
        **kwargs: Any,
    ) -> None:
        attention_kwargs = {"memory_units": memory_units, "seed_view": seed_view}
        super().__init__(
            spatial_dims,
            in_channels,
            channels,
            num_classes,
            attention="ea",
            attention_kwargs=attention_kwargs,
            **kwargs,
        )


class CCHead(FCNHead):
    """mmseg's CCHead: FCN head with criss-cross attention run ``recurrence`` times after the first conv.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        channels: head width.
        num_classes: output channels.
        recurrence: criss-cross passes with shared weights (2).
        kwargs: further :class:`FCNHead` options.
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, channels: int, num_classes: int, recurrence: int = 2, **kwargs: Any
    ) -> None:
        super().__init__(
            spatial_dims,
            in_channels,
            channels,
            num_classes,
            attention="cca",
            attention_kwargs={"recurrence": recurrence},
            **kwargs,
        )


class GCHead(FCNHead):
    """mmseg's GCHead: FCN head with a global context block after the first conv.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        channels: head width.
        num_classes: output channels.
        ratio: bottleneck ratio of the context transform (1/4).
        pooling: ``"att"`` or ``"avg"``.
        fusions: ``("channel_add",)`` and/or ``"channel_mul"``.
        kwargs: further :class:`FCNHead` options.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: int,
        num_classes: int,
        ratio: float = 0.25,
        pooling: str = "att",
        fusions: Sequence[str] = ("channel_add",),
        **kwargs: Any,
    ) -> None:
        super().__init__(
            spatial_dims,
            in_channels,
            channels,
            num_classes,
            attention="gc",
            attention_kwargs={"ratio": ratio, "pooling": pooling, "fusions": tuple(fusions)},
            **kwargs,
        )


class DAHead(_DecodeHead):
    """mmseg's DAHead (DANet): a position-attention and a channel-attention branch, summed.

    pam: ``pam_in_conv`` 3×3 (in → channels) → PAM (``pam_channels`` q/k) → ``pam_out_conv`` 3×3; cam:
    ``cam_in_conv`` → CAM → ``cam_out_conv``; logits = ``conv_seg``(dropout(pam + cam)). ``forward_all`` adds the
    branch logits (``pam_conv_seg``, ``cam_conv_seg``), which mmseg supervises with the same loss.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        channels: head width (512).
        num_classes: output channels.
        pam_channels: query/key channels of PAM (64).
        dropout: dropout before each classifier.
        in_index: backbone output to read.
        norm: MONAI norm spec of the convs.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: int,
        num_classes: int,
        pam_channels: int = 64,
        dropout: float = 0.1,
        in_index: int = -1,
        norm: Any = "batch",
    ) -> None:
        super().__init__(spatial_dims, in_channels, channels, num_classes, in_index, dropout)
        conv = Conv[Conv.CONV, spatial_dims]
        self.pam_in_conv = ConvNormAct(spatial_dims, in_channels, channels, 3, norm=norm)
        self.pam = create_attention("danet_position", spatial_dims, channels, pam_channels=pam_channels)
        self.pam_out_conv = ConvNormAct(spatial_dims, channels, channels, 3, norm=norm)
        self.pam_conv_seg = conv(channels, num_classes, 1)
        self.cam_in_conv = ConvNormAct(spatial_dims, in_channels, channels, 3, norm=norm)
        self.cam = create_attention("danet_channel", spatial_dims, channels)
        self.cam_out_conv = ConvNormAct(spatial_dims, channels, channels, 3, norm=norm)
        self.cam_conv_seg = conv(channels, num_classes, 1)
        _init_head(self, skip=[self.pam, self.cam])
        for seg in (self.pam_conv_seg, self.cam_conv_seg):
            nn.init.normal_(seg.weight, 0.0, 0.01)
            nn.init.zeros_(seg.bias)

    def branches(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x = features[self.in_index]
        pam_feat = self.pam_out_conv(self.pam(self.pam_in_conv(x)))
        cam_feat = self.cam_out_conv(self.cam(self.cam_in_conv(x)))
        return pam_feat, cam_feat

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        pam_feat, cam_feat = self.branches(features)
        return self.cls_seg(pam_feat + cam_feat)

    def forward_all(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        pam_feat, cam_feat = self.branches(features)
        return [
            self.cls_seg(pam_feat + cam_feat),
            self.pam_conv_seg(self.dropout(pam_feat)),
            self.cam_conv_seg(self.dropout(cam_feat)),
        ]


class HamHead(_DecodeHead):
    """DSNet's HamHead (its HamNet-ResNet config): squeeze → Hamburger (NMF) → align → concat input → classifier.

    ``squeeze``: 3×3 ConvNormAct in → ``ham_channels``; ``ham``: the registry's Hamburger (1×1 ``ham_in`` with bias →
    ReLU → NMF (R = 64, 6 train / 7 eval steps, random bases per call) → 1×1 ``ham_out`` → GN → ReLU(x + ·));
    ``align``: 3×3 ``ham_channels`` → ``channels``; ``conv_cat``: 3×3 on [input, align]; all norms GroupNorm(32).
    Released DSNet back-propagates through every NMF step (``one_step_grad=False``, the default here).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        channels: head width (512).
        num_classes: output channels.
        ham_channels: Hamburger width (512).
        concat_input: concat the input before the final conv.
        dropout: dropout before the classifier.
        in_index: backbone output to read.
        norm: MONAI norm spec of the head's convs (GroupNorm with 32 groups).
        ham_kwargs: options of the ``ham`` module (rank, train_steps, eval_steps, one_step_grad, seed, ...).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: int,
        num_classes: int,
        ham_channels: int = 512,
        concat_input: bool = True,
        dropout: float = 0.1,
        in_index: int = -1,
        norm: Any = GROUP_NORM_32,
        ham_kwargs: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(spatial_dims, in_channels, channels, num_classes, in_index, dropout)
        self.squeeze = ConvNormAct(spatial_dims, in_channels, ham_channels, 3, norm=norm)
        kwargs = {"one_step_grad": False, "norm_groups": 32, **dict(ham_kwargs or {})}
        self.ham = create_attention("ham", spatial_dims, ham_channels, **kwargs)
        self.align = ConvNormAct(spatial_dims, ham_channels, channels, 3, norm=norm)
        self.concat_input = concat_input
        self.conv_cat: nn.Module = nn.Identity()
        if concat_input:
            self.conv_cat = ConvNormAct(spatial_dims, in_channels + channels, channels, 3, norm=norm)
        _init_head(self, skip=[self.ham])

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[self.in_index]
        feats = self.align(self.ham(self.squeeze(x)))
        if self.concat_input:
            feats = self.conv_cat(torch.cat([x, feats], dim=1))
        return self.cls_seg(feats)


SEGMENTATION_HEADS = {
    "fcn": FCNHead,
    "dsnet": DSNetHead,
    "danet": DAHead,
    "ccnet": CCHead,
    "gcnet": GCHead,
    "hamnet": HamHead,
    "eanet": EAHead,
}


def build_head(
    name: str, spatial_dims: int, in_channels: int, channels: int, num_classes: int, **kwargs: Any
) -> _DecodeHead:
    """Build a decode head by name (see ``SEGMENTATION_HEADS``); ``kwargs`` go to its class."""
    key = str(name).lower()
    if key not in SEGMENTATION_HEADS:
        raise KeyError(f"unknown head '{name}'; known heads: {', '.join(sorted(SEGMENTATION_HEADS))}")
    return SEGMENTATION_HEADS[key](spatial_dims, in_channels, channels, num_classes, **kwargs)


class _NoHead(nn.Module):
    """Placeholder for an absent auxiliary head (keeps ``forward`` free of Optional modules for TorchScript)."""

    def forward_all(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return []

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:  # pragma: no cover - never called
        return features[-1]


class SegmentationNet(nn.Module):
    """Backbone + decode head (+ optional auxiliary head): mmseg's ``EncoderDecoder`` as a plain module.

    ``forward(x)`` returns the head's logits (1/8 of the input for the D8 backbone) bilinearly resized to the input
    size (``align_corners=False``), or the raw logits with ``upsample=False``. With ``deep_supervision=True`` and in
    training mode it returns ``torch.stack([main, *side], dim=1)`` (MONAI's DynUNet convention; unbind on dim 1 for
    the losses): side outputs are the head's extra logits (DANet's branch classifiers) then the auxiliary head's, all
    resized to the input size (to the main logits' size with ``upsample=False``).

    Args:
        backbone: module returning a list of feature maps.
        head: decode head (``forward(features) -> logits``; ``forward_all`` for side outputs).
        aux_head: optional auxiliary head (mmseg's Cityscapes FCN: ``FCNHead(1024 → 256, 1 conv, no concat)`` on
            stage 3), used only for deep supervision.
        upsample: resize the logits to the input size.
        deep_supervision: return stacked side outputs in training mode.
        align_corners: of the resize.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        aux_head: Optional[nn.Module] = None,
        upsample: bool = True,
        deep_supervision: bool = False,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.decode_head = head
        self.has_aux = aux_head is not None
        self.auxiliary_head: nn.Module = aux_head if aux_head is not None else _NoHead()
        self.upsample = upsample
        self.deep_supervision = deep_supervision
        self.align_corners = align_corners

    def _resize(self, logits: torch.Tensor, size: list[int]) -> torch.Tensor:
        mode = "bilinear" if logits.dim() == 4 else "trilinear"
        return F.interpolate(logits, size=size, mode=mode, align_corners=self.align_corners)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = [int(s) for s in x.shape[2:]]
        features = self.backbone(x)
        if self.training and self.deep_supervision:
            outputs = self.decode_head.forward_all(features)
            if self.has_aux:
                outputs = outputs + self.auxiliary_head.forward_all(features)
            target = size if self.upsample else [int(s) for s in outputs[0].shape[2:]]
            resized = [o if [int(s) for s in o.shape[2:]] == target else self._resize(o, target) for o in outputs]
            return torch.stack(resized, dim=1)
        logits = self.decode_head(features)
        if self.upsample:
            logits = self._resize(logits, size)
        return logits


def fcn_resnet50(
    num_classes: int,
    in_channels: int = 3,
    spatial_dims: int = 2,
    plugin: Optional[str] = None,
    plugin_stages: Sequence[bool] | bool = (False, False, False, True),
    plugin_position: str = "after_conv2",
    plugin_kwargs: Optional[Mapping[str, Any]] = None,
    plugin_stage_kwargs: Optional[Sequence[Mapping[str, Any]]] = None,
    head: str = "fcn",
    head_kwargs: Optional[Mapping[str, Any]] = None,
    channels: int = 512,
    dropout: float = 0.1,
    stem: str = "v1c",
    dilated: bool = True,
    depth: int = 50,
    aux_head: bool = False,
    aux_channels: int = 256,
    upsample: bool = True,
    deep_supervision: bool = False,
    pretrained: Optional[str] = None,
) -> SegmentationNet:
    """DSNet's segmentation nets: ResNet-50 (V1c, D8) + a decode head, every variant of the paper by arguments.

    Examples (bundle JSON ``"_target_": "medattn_networks.nets.fcn.fcn_resnet50"``):
    FCN ``{num_classes: 9}``; FCN+DSM ``{plugin: "dsm", plugin_kwargs: {ratio: 2, bias: true}}`` (stage 4,
    after_conv2 are the defaults); FCN+SE ``{plugin: "se_mmseg", plugin_stages: [true, true, true, true],
    plugin_position: "after_conv1"}``; FcaNet ``{plugin: "fca", plugin_stages: [true, true, true, true],
    plugin_position: "after_conv3"}``; DSNet head ``{head: "dsnet"}``; DANet ``{head: "danet"}``.

    Args:
        num_classes: output channels.
        in_channels: image channels (3; grey inputs may be repeated or use 1 with a fresh stem).
        spatial_dims: 2 (the paper) or 3.
        plugin: registry name of a backbone plugin, or None.
        plugin_stages: stage flags (or one bool).
        plugin_position: ``after_conv1`` / ``after_conv2`` / ``after_conv3``.
        plugin_kwargs: plugin options.
        plugin_stage_kwargs: per-stage plugin options merged over ``plugin_kwargs``.
        head: ``fcn``, ``dsnet``, ``danet``, ``ccnet``, ``gcnet``, ``hamnet`` or ``eanet``.
        head_kwargs: extra options of the head class.
        channels: head width (512).
        dropout: dropout before the classifier (0.1).
        stem: ``"v1c"`` (the paper's segmentation backbone) or ``"v1b"``.
        dilated: D8 backbone (logits at 1/8); False gives 1/32.
        depth: 50 (101/152 also build).
        aux_head: add mmseg's Cityscapes auxiliary FCN head on stage 3 (used only with deep supervision; the
            paper's parameter counts exclude it, as mmseg's ``get_flops`` removes it).
        aux_channels: its width (256).
        upsample: resize logits to the input size in ``forward``.
        deep_supervision: return stacked side outputs in training (see :class:`SegmentationNet`).
        pretrained: local ImageNet checkpoint for the backbone (torchvision / mmseg names), never downloaded.
    """
    backbone = ResNet(
        spatial_dims,
        in_channels,
        depth=depth,
        stem=stem,
        dilated=dilated,
        plugin=plugin,
        plugin_stages=plugin_stages,
        plugin_position=plugin_position,
        plugin_kwargs=plugin_kwargs,
        plugin_stage_kwargs=plugin_stage_kwargs,
        pretrained=pretrained,
    )
    head_options = {"dropout": dropout, **dict(head_kwargs or {})}
    decode_head = build_head(head, spatial_dims, backbone.out_channels[-1], channels, num_classes, **head_options)
    auxiliary = None
    if aux_head:
        auxiliary = FCNHead(
            spatial_dims,
            backbone.out_channels[2],
            aux_channels,
            num_classes,
            num_convs=1,
            concat_input=False,
            dropout=dropout,
            in_index=2,
        )
    return SegmentationNet(backbone, decode_head, auxiliary, upsample=upsample, deep_supervision=deep_supervision)
