"""DA-TransUnet (DANet-augmented TransUNet) with optional memory attention (MAM, seed 000, papers.md §000).

R50-ViT-B/16 hybrid encoder: a weight-standardised ResNetV2 (BiT, GroupNorm) down to 1/16, a 1×1 patch embedding,
a DANet block (position and channel attention) on the token map, position embeddings and ``num_layers`` pre-norm ViT
layers; TransUNet's cascaded decoder (``conv_more`` then upsample ×2 / concat skip / two conv-BN-ReLU per block), a
DANet block on the chosen skips, and a 3×3 segmentation head.

``memory``: ``"none"`` is the published DA-TransUnet; ``"sts"`` (the paper's wiring) makes every ViT layer memory
attention with the accumulated query ``M_t = M_{t-1} + Q_t`` carried through all layers. The ViT is one stage, so
``"ists"`` (reset at each stage start) is the same net as ``"sts"``. Memory adds no parameter.

Differences from the released code (CAU-COE-VEICLab/Recurrent-Attention), none of which changes the output:
modules its forward never uses are not built (each DANet head's ``conv6``/``conv7``, whose outputs are discarded, and
the DANet heads of the decoder blocks whose channel test never fires), query/key/value are one ``qkv`` Linear, and
names are ours; :func:`convert_released_da_transunet_state_dict` maps a released state dict.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_norm_layer

from medattn_networks.attention.memory import attention_for
from medattn_networks.attention.registry import create_attention
from medattn_networks.blocks.resnet_blocks import ConvNormAct
from medattn_networks.blocks.transformer import Mlp, set_fused_attention
from medattn_networks.blocks.windows import as_tuple
from medattn_networks.errors import MissingPathError, WeightsError

__all__ = [
    "DATransUnet",
    "DANetBlock",
    "ResNetV2",
    "StdConv2d",
    "load_r50_vit_npz",
    "convert_released_da_transunet_state_dict",
]

# DANet's convs use BatchNorm with these settings in the released code (PyTorch momentum: weight of the new batch)
DANET_NORM = ("batch", {"eps": 1e-3, "momentum": 0.95})


class StdConv2d(nn.Conv2d):
    """Conv2d with weight standardisation (BiT): each filter is shifted and scaled to zero mean, unit variance."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(self.weight, dim=[1, 2, 3], keepdim=True, unbiased=False)
        weight = (self.weight - mean) / torch.sqrt(var + 1e-5)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def _group_norm(channels: int, groups: int = 32, eps: float = 1e-6) -> nn.Module:
    return get_norm_layer(("group", {"num_groups": groups, "eps": eps}), 2, channels)


class ResNetV2Unit(nn.Module):
    """BiT bottleneck unit as TransUNet uses it (norm after each conv, despite the "pre-activation" name).

    y = GN(conv3 1×1(ReLU(GN(conv2 3×3 s(ReLU(GN(conv1 1×1(x)))))))); out = ReLU(y + GN_proj(conv_proj(x))) with the
    projection only when the stride or width changes. Convs are :class:`StdConv2d` without bias; GN has 32 groups
    (eps 1e-6), the projection's GN one group per channel (eps 1e-5).

    Args:
        in_channels: input width.
        out_channels: output width.
        mid_channels: bottleneck width.
        stride: stride of the 3×3 conv and the projection.
    """

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = StdConv2d(in_channels, mid_channels, 1, bias=False)
        self.gn1 = _group_norm(mid_channels)
        self.conv2 = StdConv2d(mid_channels, mid_channels, 3, stride=stride, padding=1, bias=False)
        self.gn2 = _group_norm(mid_channels)
        self.conv3 = StdConv2d(mid_channels, out_channels, 1, bias=False)
        self.gn3 = _group_norm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: Optional[nn.Module] = None
        self.gn_proj: Optional[nn.Module] = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = StdConv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            self.gn_proj = _group_norm(out_channels, groups=out_channels, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.gn_proj(self.downsample(x))
        y = self.relu(self.gn1(self.conv1(x)))
        y = self.relu(self.gn2(self.conv2(y)))
        return self.relu(residual + self.gn3(self.conv3(y)))


class ResNetV2(nn.Module):
    """R50 hybrid stem of ViT/TransUNet: root (StdConv 7×7 s2, GN, ReLU), max-pool 3 s2, three stages of units.

    Key names are BiT's (``root.conv``, ``body.block1.unit1.conv1``, ...) as in Google's R50+ViT-B_16 npz.
    ``forward`` returns the 1/16 map (16·width channels) and the skips, deepest first: the 1/8 map (8·width), the 1/4
    map (4·width, zero-padded at the end to H/4 because the unpadded max-pool loses a row) and the root output at 1/2
    (width).

    Args:
        in_channels: image channels.
        block_units: units per stage.
        width: root width (stage widths 4·, 8·, 16·width; bottlenecks width, 2·, 4·width).
    """

    def __init__(self, in_channels: int = 3, block_units: Sequence[int] = (3, 4, 9), width: int = 64) -> None:
        super().__init__()
        if len(block_units) != 3:
            raise ValueError(f"block_units needs three stages, got {list(block_units)}")
        self.width = width
        self.out_channels = 16 * width
        self.skip_channels = (8 * width, 4 * width, width)
        self.root = nn.Sequential(
            OrderedDict(
                conv=StdConv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
                gn=_group_norm(width),
                relu=nn.ReLU(inplace=True),
            )
        )
        stages = OrderedDict()
        cin = width
        for i, (units, factor) in enumerate(zip(block_units, (1, 2, 4))):
            cout, cmid, stride = 4 * factor * width, factor * width, 1 if i == 0 else 2
            stage = OrderedDict()
            for j in range(units):
                stage[f"unit{j + 1}"] = ResNetV2Unit(cin if j == 0 else cout, cout, cmid, stride if j == 0 else 1)
            stages[f"block{i + 1}"] = nn.Sequential(stage)
            cin = cout
        self.body = nn.Sequential(stages)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h, w = x.shape[2:]
        x = self.root(x)
        skips = [x]
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=0)
        for i, stage in enumerate(self.body):
            x = stage(x)
            if i < len(self.body) - 1:
                target = (h // (4 * 2**i), w // (4 * 2**i))
                pad = (0, target[1] - x.shape[3], 0, target[0] - x.shape[2])
                skips.append(F.pad(x, pad) if any(pad) else x)
        return x, skips[::-1]


class DANetBlock(nn.Module):
    """The DANet head DA-TransUnet puts on the embeddings and the skips (released ``DANetHead``).

    Two branches on C/16 channels, each 3×3 conv-BN-ReLU → attention → 3×3 conv-BN-ReLU: position attention
    (:class:`~medattn_networks.attention.self_attention.DANetPositionAttention`, query/key width C/128) and channel
    attention (:class:`~medattn_networks.attention.self_attention.DANetChannelAttention`); their sum goes through
    Dropout2d → 1×1 conv (bias) → ReLU to ``out_channels``. No residual around the block. The BatchNorms use
    eps 1e-3, momentum 0.95 as released.

    Args:
        in_channels: input channels C (at least 16).
        out_channels: output channels.
        dropout: Dropout2d rate before the output conv.
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.05) -> None:
        super().__init__()
        inter = in_channels // 16
        if inter < 1:
            raise ValueError(f"DANetBlock needs at least 16 input channels, got {in_channels}")
        # released: inter // 8 query/key channels, which is 0 for C < 128 (a zero-width projection); keep at least 1
        pam_channels = max(inter // 8, 1)
        self.position_in = ConvNormAct(2, in_channels, inter, 3, norm=DANET_NORM)
        self.position_attention = create_attention("danet_position", 2, inter, pam_channels=pam_channels)
        self.position_out = ConvNormAct(2, inter, inter, 3, norm=DANET_NORM)
        self.channel_in = ConvNormAct(2, in_channels, inter, 3, norm=DANET_NORM)
        self.channel_attention = create_attention("danet_channel", 2, inter)
        self.channel_out = ConvNormAct(2, inter, inter, 3, norm=DANET_NORM)
        self.output = nn.Sequential(
            OrderedDict(
                dropout=nn.Dropout2d(dropout),
                conv=Conv[Conv.CONV, 2](inter, out_channels, kernel_size=1),
                act=nn.ReLU(inplace=True),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        position = self.position_out(self.position_attention(self.position_in(x)))
        channel = self.channel_out(self.channel_attention(self.channel_in(x)))
        return self.output(position + channel)


class ViTLayer(nn.Module):
    """Pre-norm ViT layer: x + attn(LN(x)), then x + MLP(LN(x)); LayerNorm eps 1e-6; the memory is handed through.

    Args:
        hidden_size: token width.
        num_heads: attention heads.
        mlp_dim: MLP hidden width.
        grid: token grid (the attention's single window).
        memory: ``"none"`` (self-attention) or ``"ists"``/``"sts"`` (memory attention).
        dropout_rate: dropout in the MLP.
        attention_dropout_rate: dropout on attention weights and after the output projection.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_dim: int,
        grid: Sequence[int],
        memory: str = "sts",
        dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden_size, eps=1e-6)
        self.attn = create_attention(
            attention_for(memory),
            2,
            hidden_size,
            num_heads=num_heads,
            window_size=tuple(grid),
            attn_drop=attention_dropout_rate,
            proj_drop=attention_dropout_rate,
            relative_bias=None,
        )
        self.ffn_norm = nn.LayerNorm(hidden_size, eps=1e-6)
        self.ffn = Mlp(hidden_size, mlp_dim, act="GELU", drop=dropout_rate)

    def forward(
        self, x: torch.Tensor, memory: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        h, memory = self.attn.forward_tokens(self.attention_norm(x), None, memory)
        x = x + h
        return x + self.ffn(self.ffn_norm(x)), memory


class DecoderBlock(nn.Module):
    """TransUNet decoder block: bilinear ×2 (align_corners=True), concat the (optionally DANet-attended) skip,
    two 3×3 conv-BN-ReLU.

    Args:
        in_channels: decoder channels in.
        out_channels: decoder channels out.
        skip_channels: channels of the skip (0: none).
        skip_attention: put a :class:`DANetBlock` (C → C) on the skip.
        danet_dropout_rate: its dropout.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        skip_channels: int = 0,
        skip_attention: bool = False,
        danet_dropout_rate: float = 0.05,
    ) -> None:
        super().__init__()
        self.skip_attention: Optional[nn.Module] = None
        if skip_attention and skip_channels:
            self.skip_attention = DANetBlock(skip_channels, skip_channels, danet_dropout_rate)
        self.conv1 = ConvNormAct(2, in_channels + skip_channels, out_channels, 3, norm="batch")
        self.conv2 = ConvNormAct(2, out_channels, out_channels, 3, norm="batch")

    def forward(self, x: torch.Tensor, skip: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        if skip is not None:
            if self.skip_attention is not None:
                skip = self.skip_attention(skip)
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class DATransUnet(nn.Module):
    """DA-TransUnet (R50-ViT-B/16 hybrid, DANet on embeddings and skips) with ``memory`` none | ists | sts.

    Input (B, in_channels or 1, *img_size) → logits (B, out_channels, *img_size); a 1-channel input is repeated to
    ``in_channels``. The image size is fixed by the position embeddings and must be a multiple of 16.

    Args:
        spatial_dims: 2 (the only one supported).
        in_channels: image channels of the ResNet root.
        out_channels: classes.
        img_size: image size (int or (H, W)); the token grid is img_size / 16.
        memory: ``"none"``, ``"ists"`` or ``"sts"`` (the ViT is one stage: ists = sts).
        hidden_size: ViT width.
        num_layers: ViT layers.
        num_heads: attention heads.
        mlp_dim: ViT MLP width.
        resnet_blocks: units per ResNetV2 stage.
        resnet_width: ResNetV2 root width (skips of 8·, 4·, 1·width channels).
        decoder_channels: output channels of the decoder blocks.
        n_skip: skips used, 0 to 3, deepest first (the fourth decoder block never has one).
        skip_attention: a DANet block on each of the (up to three) skips. The released code's channel test puts it
            on the 8·width and 4·width skips only (its 64-channel head never runs); ``(True, True, True)`` also
            attends the root skip, as the paper describes.
        head_channels: width of ``conv_more`` (the first decoder input).
        dropout_rate: dropout after the position embeddings and in the ViT MLPs.
        attention_dropout_rate: dropout on attention weights and attention output.
        danet_dropout_rate: Dropout2d of the DANet blocks.
        fused_attention: run attention on scaled_dot_product_attention (False: the plain-math path).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 9,
        img_size: int | Sequence[int] = 224,
        memory: str = "sts",
        hidden_size: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        mlp_dim: int = 3072,
        resnet_blocks: Sequence[int] = (3, 4, 9),
        resnet_width: int = 64,
        decoder_channels: Sequence[int] = (256, 128, 64, 16),
        n_skip: int = 3,
        skip_attention: Sequence[bool] = (True, True, False),
        head_channels: int = 512,
        dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.0,
        danet_dropout_rate: float = 0.05,
        fused_attention: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(f"DATransUnet is 2D only, got spatial_dims={spatial_dims}")
        size = as_tuple(img_size, 2, "img_size")
        if any(s % 16 for s in size):
            raise ValueError(f"img_size must be a multiple of 16, got {size}")
        if not 0 <= n_skip <= 3:
            raise ValueError(f"n_skip must be 0..3, got {n_skip}")
        if len(decoder_channels) != 4:
            raise ValueError(f"decoder_channels needs four entries, got {list(decoder_channels)}")
        if len(skip_attention) != 3:
            raise ValueError(f"skip_attention needs one flag per skip (three), got {list(skip_attention)}")
        attention_for(memory)  # validates the mode
        self.in_channels = in_channels
        self.img_size = size
        self.grid = (size[0] // 16, size[1] // 16)
        self.memory = memory
        self.n_skip = n_skip

        self.resnet = ResNetV2(in_channels, resnet_blocks, resnet_width)
        self.patch_embedding = Conv[Conv.CONV, 2](self.resnet.out_channels, hidden_size, kernel_size=1)
        self.embedding_attention = DANetBlock(hidden_size, hidden_size, danet_dropout_rate)
        self.position_embedding = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], hidden_size))
        self.embedding_dropout = nn.Dropout(dropout_rate)
        self.layers = nn.ModuleList(
            ViTLayer(hidden_size, num_heads, mlp_dim, self.grid, memory, dropout_rate, attention_dropout_rate)
            for _ in range(num_layers)
        )
        self.encoder_norm = nn.LayerNorm(hidden_size, eps=1e-6)

        self.conv_more = ConvNormAct(2, hidden_size, head_channels, 3, norm="batch")
        skips = list(self.resnet.skip_channels[:n_skip]) + [0] * (4 - n_skip)
        flags = list(skip_attention) + [False]
        ins = [head_channels] + list(decoder_channels[:-1])
        self.decoder_blocks = nn.ModuleList(
            DecoderBlock(i, o, s, f, danet_dropout_rate) for i, o, s, f in zip(ins, decoder_channels, skips, flags)
        )
        self.segmentation_head = Conv[Conv.CONV, 2](decoder_channels[-1], out_channels, kernel_size=3, padding=1)
        self._init_mlp()
        set_fused_attention(self, fused_attention)

    def _init_mlp(self) -> None:
        # the released ViT MLP init; every other layer keeps PyTorch's default, as released
        for layer in self.layers:
            for fc in (layer.ffn.fc1, layer.ffn.fc2):
                nn.init.xavier_uniform_(fc.weight)
                nn.init.normal_(fc.bias, std=1e-6)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Image → (encoded tokens (B, N, hidden), skips deepest first)."""
        if x.shape[1] == 1 and self.in_channels > 1:
            x = x.repeat(1, self.in_channels, 1, 1)
        if tuple(x.shape[2:]) != self.img_size:
            raise ValueError(f"input size {tuple(x.shape[2:])} differs from img_size {self.img_size}")
        x, skips = self.resnet(x)
        x = self.embedding_attention(self.patch_embedding(x))
        tokens = self.embedding_dropout(x.flatten(2).transpose(1, 2) + self.position_embedding)
        memory = None
        for layer in self.layers:
            tokens, memory = layer(tokens, memory)
        return self.encoder_norm(tokens), skips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, skips = self.encode(x)
        x = self.conv_more(tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *self.grid))
        for i, block in enumerate(self.decoder_blocks):
            x = block(x, skips[i] if i < self.n_skip else None)
        return self.segmentation_head(x)


# ------------------------------------------------------------------------------------------------ weight loading
def _hwio(array: np.ndarray) -> torch.Tensor:
    """Flax conv kernel (H, W, in, out) → PyTorch (out, in, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(array).transpose(3, 2, 0, 1)))


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(array)))


def _copy(target: torch.Tensor, value: torch.Tensor, name: str) -> None:
    value = value.reshape(-1) if target.dim() == 1 else value
    if tuple(target.shape) != tuple(value.shape):
        raise ValueError(f"{name}: checkpoint shape {tuple(value.shape)} does not fit {tuple(target.shape)}")
    target.copy_(value.to(target.dtype))


def _resize_position_embedding(posemb: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """(1, [1 +] g·g, C) → (1, grid[0]·grid[1], C): class token dropped, grid resized bilinearly (corners aligned,
    TransUNet's ``ndimage.zoom(order=1)``)."""
    n_new = grid[0] * grid[1]
    if posemb.shape[1] == n_new:
        return posemb
    tokens = posemb[:, 1:]
    if tokens.shape[1] == n_new:
        return tokens
    side = int(round(tokens.shape[1] ** 0.5))
    if side * side != tokens.shape[1]:
        raise ValueError(f"position embedding of {posemb.shape[1]} tokens is not a square grid (+ class token)")
    grid_map = tokens.reshape(1, side, side, -1).permute(0, 3, 1, 2).double()
    resized = F.interpolate(grid_map, size=tuple(grid), mode="bilinear", align_corners=True)
    return resized.permute(0, 2, 3, 1).reshape(1, n_new, -1).to(posemb.dtype)


@torch.no_grad()
def load_r50_vit_npz(model: DATransUnet, path: str) -> DATransUnet:
    """Load Google's ImageNet ``R50+ViT-B_16.npz`` (as TransUNet's ``load_from`` reads it) into ``model``.

    Sets the ResNetV2, patch embedding, position embeddings (class token dropped, grid resized when it differs),
    the ViT layers and the encoder norm; the DANet blocks, decoder and head keep their values. The file is read
    locally; nothing is downloaded.

    Args:
        model: the network (its ResNet root must take 3 channels for the ImageNet kernel).
        path: path of the ``.npz``.
    """
    if not os.path.isfile(path):
        raise MissingPathError(f"R50-ViT-B/16 weights not found: {path} (weights are never downloaded)")
    try:
        with np.load(path) as archive:
            weights = {name: archive[name] for name in archive.files}
        return _load_r50_vit(model, weights)
    except KeyError as e:
        raise WeightsError(f"{path}: not an R50+ViT-B_16 npz (no array '{e.args[0]}')") from e
    except ValueError as e:
        raise WeightsError(f"{path}: {e}") from e


def _load_r50_vit(model: DATransUnet, weights: Mapping[str, np.ndarray]) -> DATransUnet:
    hidden = model.position_embedding.shape[-1]

    _copy(model.patch_embedding.weight, _hwio(weights["embedding/kernel"]), "embedding/kernel")
    _copy(model.patch_embedding.bias, _tensor(weights["embedding/bias"]), "embedding/bias")
    _copy(model.encoder_norm.weight, _tensor(weights["Transformer/encoder_norm/scale"]), "encoder_norm/scale")
    _copy(model.encoder_norm.bias, _tensor(weights["Transformer/encoder_norm/bias"]), "encoder_norm/bias")
    posemb = _resize_position_embedding(_tensor(weights["Transformer/posembed_input/pos_embedding"]), model.grid)
    _copy(model.position_embedding, posemb, "posembed_input/pos_embedding")

    for i, layer in enumerate(model.layers):
        root = f"Transformer/encoderblock_{i}"
        attention = f"{root}/MultiHeadDotProductAttention_1"
        names = ("query", "key", "value")
        qkv_w = [_tensor(weights[f"{attention}/{n}/kernel"]).reshape(hidden, hidden).t() for n in names]
        qkv_b = [_tensor(weights[f"{attention}/{n}/bias"]).reshape(-1) for n in names]
        _copy(layer.attn.qkv.weight, torch.cat(qkv_w, 0), f"{attention}/qkv kernels")
        _copy(layer.attn.qkv.bias, torch.cat(qkv_b, 0), f"{attention}/qkv biases")
        _copy(layer.attn.proj.weight, _tensor(weights[f"{attention}/out/kernel"]).reshape(hidden, hidden).t(), "out")
        _copy(layer.attn.proj.bias, _tensor(weights[f"{attention}/out/bias"]), f"{attention}/out/bias")
        for fc, dense in ((layer.ffn.fc1, "Dense_0"), (layer.ffn.fc2, "Dense_1")):
            _copy(fc.weight, _tensor(weights[f"{root}/MlpBlock_3/{dense}/kernel"]).t(), f"{root}/{dense}/kernel")
            _copy(fc.bias, _tensor(weights[f"{root}/MlpBlock_3/{dense}/bias"]), f"{root}/{dense}/bias")
        for norm, key in ((layer.attention_norm, "LayerNorm_0"), (layer.ffn_norm, "LayerNorm_2")):
            _copy(norm.weight, _tensor(weights[f"{root}/{key}/scale"]), f"{root}/{key}/scale")
            _copy(norm.bias, _tensor(weights[f"{root}/{key}/bias"]), f"{root}/{key}/bias")

    resnet = model.resnet
    _copy(resnet.root.conv.weight, _hwio(weights["conv_root/kernel"]), "conv_root/kernel")
    _copy(resnet.root.gn.weight, _tensor(weights["gn_root/scale"]), "gn_root/scale")
    _copy(resnet.root.gn.bias, _tensor(weights["gn_root/bias"]), "gn_root/bias")
    for block_name, block in resnet.body.named_children():
        for unit_name, unit in block.named_children():
            prefix = f"{block_name}/{unit_name}"
            for k in (1, 2, 3):
                _copy(getattr(unit, f"conv{k}").weight, _hwio(weights[f"{prefix}/conv{k}/kernel"]), f"{prefix}/conv{k}")
                gn = getattr(unit, f"gn{k}")
                _copy(gn.weight, _tensor(weights[f"{prefix}/gn{k}/scale"]), f"{prefix}/gn{k}/scale")
                _copy(gn.bias, _tensor(weights[f"{prefix}/gn{k}/bias"]), f"{prefix}/gn{k}/bias")
            if unit.downsample is not None:
                _copy(unit.downsample.weight, _hwio(weights[f"{prefix}/conv_proj/kernel"]), f"{prefix}/conv_proj")
                _copy(unit.gn_proj.weight, _tensor(weights[f"{prefix}/gn_proj/scale"]), f"{prefix}/gn_proj/scale")
                _copy(unit.gn_proj.bias, _tensor(weights[f"{prefix}/gn_proj/bias"]), f"{prefix}/gn_proj/bias")
    return model


_DANET_KEYS = (
    (r"conv5a\.0\.", "position_in.conv."),
    (r"conv5a\.1\.", "position_in.bn."),
    (r"sa\.query_conv\.", "position_attention.query_project."),
    (r"sa\.key_conv\.", "position_attention.key_project."),
    (r"sa\.value_conv\.", "position_attention.value_project."),
    (r"sa\.gamma", "position_attention.gamma"),
    (r"conv51\.0\.", "position_out.conv."),
    (r"conv51\.1\.", "position_out.bn."),
    (r"conv5c\.0\.", "channel_in.conv."),
    (r"conv5c\.1\.", "channel_in.bn."),
    (r"sc\.gamma", "channel_attention.gamma"),
    (r"conv52\.0\.", "channel_out.conv."),
    (r"conv52\.1\.", "channel_out.bn."),
    (r"conv8\.1\.", "output.conv."),
)


def _danet_key(rest: str) -> Optional[str]:
    """Our DANetBlock key for a released DANetHead key (after its prefix); None for the unused conv6/conv7."""
    for pattern, ours in _DANET_KEYS:
        m = re.match(pattern, rest)
        if m:
            return ours + rest[m.end() :]
    if re.match(r"conv[67]\.", rest):
        return None
    raise KeyError(f"unexpected DANet key '{rest}'")


def convert_released_da_transunet_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    skip_heads: Sequence[tuple[int, str]] = ((0, "da3"), (1, "da2")),
) -> "OrderedDict[str, torch.Tensor]":
    """Map a released (Recurrent-Attention / DA-TransUNet) state dict onto :class:`DATransUnet`'s keys.

    ``query``/``key``/``value`` are concatenated into ``qkv``; the DANet heads the released forward never runs
    (``conv6``/``conv7`` of every head, and each decoder block's heads other than ``skip_heads``) are dropped.

    Args:
        state_dict: the released model's state dict (keys without a wrapper prefix, ``transformer.``/``decoder.``).
        skip_heads: (decoder block, head name) of the skip DANet heads that run — with the released R50-B/16 config
            and n_skip 3, ``blocks.0.da3`` and ``blocks.1.da2``.
    """
    used = {f"decoder.blocks.{i}.{name}." for i, name in skip_heads}
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    simple = (
        ("transformer.embeddings.hybrid_model.", "resnet."),
        ("transformer.embeddings.patch_embeddings.", "patch_embedding."),
        ("transformer.encoder.encoder_norm.", "encoder_norm."),
        ("segmentation_head.0.", "segmentation_head."),
        ("decoder.conv_more.0.", "conv_more.conv."),
        ("decoder.conv_more.1.", "conv_more.bn."),
    )
    for key, value in state_dict.items():
        new: Optional[str] = None
        if key == "transformer.embeddings.position_embeddings":
            new = "position_embedding"
        elif key.startswith("transformer.embeddings.DAblock1."):
            rest = _danet_key(key[len("transformer.embeddings.DAblock1.") :])
            new = None if rest is None else "embedding_attention." + rest
        elif m := re.match(r"transformer\.encoder\.layer\.(\d+)\.(.*)", key):
            i, rest = m.groups()
            if a := re.match(r"attn\.(query|key|value)\.(weight|bias)", rest):
                qkv.setdefault(f"layers.{i}.attn.qkv.{a.group(2)}", {})[a.group(1)] = value
                continue
            new = f"layers.{i}." + rest.replace("attn.out.", "attn.proj.")
        elif m := re.match(r"decoder\.blocks\.(\d+)\.(conv[12])\.([01])\.(.*)", key):
            i, conv, part, rest = m.groups()
            new = f"decoder_blocks.{i}.{conv}.{'conv' if part == '0' else 'bn'}.{rest}"
        elif m := re.match(r"(decoder\.blocks\.(\d+)\.da\d?\.)(.*)", key):
            prefix, i, rest = m.groups()
            if prefix in used:
                rest = _danet_key(rest)
                new = None if rest is None else f"decoder_blocks.{i}.skip_attention." + rest
        else:
            for old, ours in simple:
                if key.startswith(old):
                    new = ours + key[len(old) :]
                    break
            else:
                raise KeyError(f"unexpected released key '{key}'")
        if new is not None:
            out[new] = value
    for key, parts in qkv.items():
        out[key] = torch.cat([parts["query"], parts["key"], parts["value"]], 0)
    return out
