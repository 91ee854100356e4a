"""SE variants, ECA, FcaNet, EncNet, split attention and GCNet (issue 3; papers.md §002).

Reference parameter counts were read by instantiating the public code outside this project (it is not part of
the repository): DPC-Net @9eb75a4 — ``SELayer``, ``eca_layer``, ``EncModule`` (seg/models/utils) and FcaNet's
``MultiSpectralAttentionLayer`` (pretrain/models/utils, top16, reduction 16) configured as its configs do, with
``in_channels=C`` as the bottleneck plugin receives it; mmcv's ``ContextBlock(C, ratio=1/4)`` (DSNet's GCNet
config); mmseg's ``SplitAttentionConv2d(C, C, 3, radix=2, reduction_factor=4)`` (ResNeSt's bottleneck conv). mmcv
and mmseg pieces were replaced by minimal shims (conv+norm+act, BN) for that count only. The classic SE has no
code in seed 002; its count is SENet's formula.

The numerical tests copy the module's parameters and recompute its output with plain tensor operations written
from the papers' formulas (float64); they never call the module's own methods.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from medattn_networks.attention.channel import (
    ContextBlock,
    EfficientChannelAttention,
    EncodingModule,
    MultiSpectralChannelAttention,
    SplitAttentionConv,
    SqueezeExcitation,
    SqueezeExcitationHSigmoid,
    make_divisible,
)
from medattn_networks.attention.registry import create_attention, get_attention_class
from attention_testing import count_params as _count, float64_input as _input, randomise as _randomise, sigmoid as _sigmoid

NAMES = ("se", "se_mmseg", "eca", "fca", "enc", "splat", "gc")
CHANNELS, SIZE = 16, 8
TOL = dict(rtol=1e-10, atol=1e-11)

# measured on the public code (see the module docstring), C → parameter count
REFERENCE_PARAMS = {
    "se_mmseg": {64: 1096, 256: 8464, 512: 33312},
    "eca": {64: 3, 256: 3, 512: 3},
    "fca": {64: 512, 256: 8192, 512: 32768},
    "enc": {64: 10528, 256: 140128, 512: 542304},
    "gc": {64: 2225, 256: 33473, 512: 132481},
    "splat": {64: 43488, 256: 690048, 512: 2756352},
    "se": {64: 580, 256: 8464, 512: 33312},  # SENet: 2·C·(C/16) + C/16 + C
}


def _formula_params(name: str, c: int, spatial_dims: int = 2) -> int:
    if name == "se":
        h = c // 16
        return 2 * c * h + h + c
    if name == "se_mmseg":
        h = make_divisible(c // 16, 8)
        return 2 * c * h + h + c
    if name == "eca":
        return 3
    if name == "fca":
        return 2 * c * (c // 16)
    if name == "enc":
        return 2 * c * c + (32 + 3) * c + 3 * 32
    if name == "gc":
        p = c // 4
        return 2 * c * p + 2 * c + 3 * p + 1
    if name == "splat":
        inter = max(c // 2, 32)
        return (3**spatial_dims) * c * c + 4 * c + 3 * c * inter + 3 * inter + 2 * c
    raise KeyError(name)










def _bn_eval(v: torch.Tensor, bn: nn.Module, axis: int = 1) -> torch.Tensor:
    """Eval-mode batch norm written out; channel axis ``axis``."""
    shape = [1] * v.dim()
    shape[axis] = -1
    mean, var = bn.running_mean.view(shape), bn.running_var.view(shape)
    return (v - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(shape) + bn.bias.view(shape)


def _bn_train(v: torch.Tensor, bn: nn.Module, axis: int = 1) -> torch.Tensor:
    """Train-mode batch norm written out: statistics over every axis but ``axis``, biased variance."""
    moved = v.movedim(axis, 0).reshape(v.shape[axis], -1)
    mean, var = moved.mean(1), ((moved - moved.mean(1, keepdim=True)) ** 2).mean(1)
    shape = [1] * v.dim()
    shape[axis] = -1
    return (v - mean.view(shape)) / torch.sqrt(var.view(shape) + bn.eps) * bn.weight.view(shape) + bn.bias.view(shape)


def _w(conv: nn.Module) -> torch.Tensor:
    """A 1×1 conv (or Linear) weight as a matrix [out, in]."""
    return conv.weight.detach().reshape(conv.weight.shape[0], -1).clone()


# ------------------------------------------------------------------------------------------- registry & counts
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels", [64, 256, 512])
def test_parameter_count_matches_reference_code(name, channels):
    module = create_attention(name, 2, channels)
    assert isinstance(module, get_attention_class(name))
    assert _count(module) == REFERENCE_PARAMS[name][channels] == _formula_params(name, channels)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_3d(name):
    # only the split-attention conv has a spatial kernel (3×3×3); everything else is dimension-free
    assert _count(create_attention(name, 3, 64)) == _formula_params(name, 64, spatial_dims=3)


def test_make_divisible_gives_mmseg_widths():
    assert [make_divisible(c // 16, 8) for c in (16, 64, 128, 256, 512, 1024)] == [8, 8, 8, 16, 32, 64]
    assert make_divisible(10, 8) == 16  # 8 would lose more than 10 %


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", NAMES)
def test_forward_backward(name, spatial_dims, batch):
    torch.manual_seed(0)
    module = create_attention(name, spatial_dims, CHANNELS)
    x = torch.randn(batch, CHANNELS, *([SIZE] * spatial_dims), requires_grad=True)
    y = module(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}: bad gradient for {pname}"


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_splat_resnest_batch_norm_variant_runs(spatial_dims):
    # ResNeSt's BatchNorm on the pooled [B, inter] vector: batch 3 in training, batch 1 only in eval
    module = create_attention("splat", spatial_dims, CHANNELS, attention_norm="batch")
    assert isinstance(module.norm1, nn.modules.batchnorm._BatchNorm) and _count(module) == _count(
        create_attention("splat", spatial_dims, CHANNELS)
    )
    for batch, train in ((3, True), (1, False)):
        module.train(train)
        x = torch.randn(batch, CHANNELS, *([SIZE] * spatial_dims), requires_grad=True)
        module(x).sum().backward()
        assert x.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------- SE family
def _se_reference(x: torch.Tensor, w1, b1, w2, b2, hard: bool) -> torch.Tensor:
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        v = x[b].reshape(x.shape[1], -1).mean(1)
        z = w2 @ torch.clamp(w1 @ v + b1, min=0) + b2
        gate = torch.clamp((z + 3.0) / 6.0, 0.0, 1.0) if hard else _sigmoid(z)
        for c in range(x.shape[1]):
            out[b, c] = x[b, c] * gate[c]
    return out


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_se_matches_formula(spatial_dims):
    module = _randomise(SqueezeExcitation(spatial_dims, 32, reduction=4).double())
    assert module.fc1.out_channels == 8
    x = _input(2, 32, *([5] * spatial_dims))
    ref = _se_reference(x, _w(module.fc1), module.fc1.bias, _w(module.fc2), module.fc2.bias, hard=False)
    torch.testing.assert_close(module(x), ref, **TOL)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_se_mmseg_matches_formula(spatial_dims):
    module = _randomise(SqueezeExcitationHSigmoid(spatial_dims, 32).double(), scale=1.5)
    assert module.conv1.out_channels == 8  # make_divisible(32 // 16, 8)
    x = _input(2, 32, *([5] * spatial_dims))
    w1, b1, w2, b2 = _w(module.conv1), module.conv1.bias, _w(module.conv2), module.conv2.bias
    ref = _se_reference(x, w1, b1, w2, b2, hard=True)
    torch.testing.assert_close(module(x), ref, **TOL)
    # the test is only meaningful if the hard sigmoid's three regimes all occur
    z = w2 @ torch.clamp(w1 @ x[0].reshape(32, -1).mean(1) + b1, min=0) + b2
    assert (z < -3).any() and (z > 3).any() and ((z.abs() < 3)).any()


# --------------------------------------------------------------------------------------------------------- ECA
def _eca_reference(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    k = kernel.numel()
    half = (k - 1) // 2
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        v = x[b].reshape(x.shape[1], -1).mean(1)
        for c in range(x.shape[1]):
            acc = torch.zeros((), dtype=x.dtype)
            for j in range(k):
                src = c + j - half
                if 0 <= src < x.shape[1]:
                    acc = acc + kernel[j] * v[src]
            out[b, c] = x[b, c] * _sigmoid(acc)
    return out


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("kernel_size", [3, 5])
def test_eca_matches_formula(kernel_size, spatial_dims):
    module = _randomise(EfficientChannelAttention(spatial_dims, 12, kernel_size=kernel_size).double(), scale=1.0)
    x = _input(2, 12, *([4] * spatial_dims))
    torch.testing.assert_close(module(x), _eca_reference(x, module.conv.weight.detach().flatten()), **TOL)


def test_eca_adaptive_kernel_size():
    # k = |log2(C)/2 + 1/2| made odd (ECA-Net): 3 for C ≤ 64, 5 for C = 256/512
    sizes = [EfficientChannelAttention(2, c, kernel_size=None).kernel_size for c in (16, 64, 256, 512)]
    assert sizes == [3, 3, 5, 5]
    with pytest.raises(ValueError):
        EfficientChannelAttention(2, 16, kernel_size=4)


# ------------------------------------------------------------------------------------------------------ FcaNet
# FcaNet's "top" frequency ranking on the 7×7 grid, copied from the paper's code (u along H, v along W)
_TOP_U = [0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2]
_TOP_V = [0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2]


def _dct(pos: int, freq: int, length: int) -> float:
    value = math.cos(math.pi * freq * (pos + 0.5) / length) / math.sqrt(length)
    return value * math.sqrt(2) if freq else value


def _fca_filters(channels: int, sizes: list[int], num_freq: int) -> torch.Tensor:
    """DCT filters [C, *sizes]; 3D: frequency 0 along the first axis, (u, v) in-plane."""
    filters = torch.zeros(channels, *sizes, dtype=torch.float64)
    for c in range(channels):
        i = c * num_freq // channels
        scale = [s // 7 for s in sizes]
        for idx in torch.cartesian_prod(*[torch.arange(s) for s in sizes]).reshape(-1, len(sizes)).tolist():
            value = _dct(idx[-2], _TOP_U[i] * scale[-2], sizes[-2]) * _dct(idx[-1], _TOP_V[i] * scale[-1], sizes[-1])
            if len(sizes) == 3:
                value *= _dct(idx[0], 0, sizes[0])
            filters[(c, *idx)] = value
    return filters


def _fca_reference(module: MultiSpectralChannelAttention, x: torch.Tensor, sizes: list[int], num_freq: int):
    channels = x.shape[1]
    # adaptive average pooling to the DCT size, for input sizes that are multiples of it: block means
    pooled = x
    for axis, s in enumerate(sizes):
        dim = 2 + axis
        f = x.shape[dim] // s
        pooled = pooled.unflatten(dim, (s, f)).mean(dim + 1)
    filters = _fca_filters(channels, sizes, num_freq)
    w1, w2 = _w(module.fc[0]), _w(module.fc[2])
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        y = (pooled[b] * filters).reshape(channels, -1).sum(1)
        gate = _sigmoid(w2 @ torch.clamp(w1 @ y, min=0))
        for c in range(channels):
            out[b, c] = x[b, c] * gate[c]
    return out


@pytest.mark.parametrize(
    "spatial_dims, channels, dct_size, in_size",
    [(2, 16, 7, 7), (2, 32, 7, 14), (2, 16, 14, 14), (2, 12, 7, 7), (3, 16, 7, 7)],
)
def test_fca_matches_formula(spatial_dims, channels, dct_size, in_size):
    module = _randomise(MultiSpectralChannelAttention(spatial_dims, channels, dct_size=dct_size, reduction=4).double())
    sizes = [dct_size] * spatial_dims
    torch.testing.assert_close(module.dct_filters.double(), _fca_filters(channels, sizes, 16), rtol=0, atol=1e-6)
    module.dct_filters.copy_(_fca_filters(channels, sizes, 16))  # float32 buffer → exact float64 basis
    x = _input(2, channels, *([in_size] * spatial_dims))
    torch.testing.assert_close(module(x), _fca_reference(module, x, sizes, 16), **TOL)


def test_fca_filters_are_orthonormal_dct_basis():
    module = MultiSpectralChannelAttention(2, 16, dct_size=14)  # one channel per frequency
    flat = module.dct_filters.flatten(1).double()
    torch.testing.assert_close(flat @ flat.t(), torch.eye(16, dtype=torch.float64), rtol=0, atol=1e-5)
    assert tuple(MultiSpectralChannelAttention(3, 16, dct_size=(7, 14, 14)).dct_filters.shape) == (16, 7, 14, 14)
    with pytest.raises(ValueError):
        MultiSpectralChannelAttention(2, 16, dct_size=4)


# ------------------------------------------------------------------------------------------------------ EncNet
def _enc_reference(module: EncodingModule, x: torch.Tensor, train: bool) -> torch.Tensor:
    bn = _bn_train if train else _bn_eval
    batch, channels = x.shape[:2]
    proj_w = _w(module.project[0])
    flat = x.reshape(batch, channels, -1)
    p = torch.clamp(bn(torch.einsum("oc,bcn->bon", proj_w, flat), module.project[1]), min=0)  # [B, C, N]
    codewords, scale = module.codewords.detach(), module.scale.detach()
    num_codes = codewords.shape[0]
    codes = torch.zeros(batch, num_codes, channels, dtype=x.dtype)
    for b in range(batch):
        descriptors = p[b].t()  # [N, C]
        residual = descriptors.unsqueeze(1) - codewords.unsqueeze(0)  # [N, K, C]
        logits = scale * (residual**2).sum(-1)  # [N, K]
        assign = torch.exp(logits - logits.max(1, keepdim=True).values)
        assign = assign / assign.sum(1, keepdim=True)
        codes[b] = (assign.unsqueeze(-1) * residual).sum(0)
    codes = torch.clamp(bn(codes, module.code_norm, axis=1), min=0)  # BatchNorm1d over the K codes
    gamma = _sigmoid(codes.mean(1) @ _w(module.fc).t() + module.fc.bias)
    return torch.clamp(x + x * gamma.reshape(batch, channels, *([1] * (x.dim() - 2))), min=0)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_enc_matches_formula(spatial_dims, train):
    module = _randomise(EncodingModule(spatial_dims, 12, num_codes=6).double())
    module.train(train)
    x = _input(3, 12, *([4] * spatial_dims))
    with torch.no_grad():
        torch.testing.assert_close(module(x), _enc_reference(module, x, train), rtol=1e-9, atol=1e-10)


# ---------------------------------------------------------------------------------------- split attention
def _splat_reference(module: SplitAttentionConv, x: torch.Tensor, attention_norm: str) -> torch.Tensor:
    """ResNeSt SplAtConv (radix 2, cardinality 1), eval mode: each radix branch convolves its half of the input.

    ``attention_norm="batch"`` is ResNeSt's BN with running statistics; ``"layer"`` normalises the hidden vector
    over its own entries."""
    conv = F.conv2d if x.dim() == 4 else F.conv3d
    channels = x.shape[1]
    weight = module.conv.weight.detach()
    branches = []
    for r in range(2):
        half = x[:, r * channels // 2 : (r + 1) * channels // 2]
        u = conv(half, weight[r * channels : (r + 1) * channels], padding=1)
        bn = module.norm0
        sl = slice(r * channels, (r + 1) * channels)
        shape = [1, -1] + [1] * (x.dim() - 2)
        u = (u - bn.running_mean[sl].view(shape)) / torch.sqrt(bn.running_var[sl].view(shape) + bn.eps)
        branches.append(torch.clamp(u * bn.weight[sl].view(shape) + bn.bias[sl].view(shape), min=0))
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        s = (branches[0][b] + branches[1][b]).reshape(channels, -1).mean(1)
        hidden = _w(module.fc1) @ s + module.fc1.bias
        n1 = module.norm1
        if attention_norm == "batch":
            hidden = (hidden - n1.running_mean) / torch.sqrt(n1.running_var + n1.eps)
        else:
            hidden = (hidden - hidden.mean()) / torch.sqrt(((hidden - hidden.mean()) ** 2).mean() + n1.eps)
        hidden = torch.clamp(hidden * n1.weight + n1.bias, min=0)
        logits = _w(module.fc2) @ hidden + module.fc2.bias  # [2C]: radix-major
        for c in range(channels):
            e0, e1 = torch.exp(logits[c]), torch.exp(logits[channels + c])
            out[b, c] = (e0 * branches[0][b, c] + e1 * branches[1][b, c]) / (e0 + e1)
    return out


@pytest.mark.parametrize("attention_norm", ["batch", "layer"])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_splat_matches_resnest_formula(spatial_dims, attention_norm):
    module = _randomise(SplitAttentionConv(spatial_dims, 8, attention_norm=attention_norm).double()).eval()
    assert module.fc1.out_channels == 32  # max(8·2 // 4, 32)
    x = _input(2, 8, *([5] * spatial_dims))
    with torch.no_grad():
        torch.testing.assert_close(module(x), _splat_reference(module, x, attention_norm), **TOL)


def test_splat_rejects_indivisible_channels():
    with pytest.raises(ValueError):
        SplitAttentionConv(2, 7)


# ------------------------------------------------------------------------------------------------------- GCNet
def _gc_reference(module: ContextBlock, x: torch.Tensor) -> torch.Tensor:
    batch, channels = x.shape[:2]
    out = x.clone()
    for b in range(batch):
        flat = x[b].reshape(channels, -1)
        if module.conv_mask is not None:
            logits = _w(module.conv_mask)[0] @ flat + module.conv_mask.bias
            alpha = torch.exp(logits - logits.max())
            context = flat @ (alpha / alpha.sum())
        else:
            context = flat.mean(1)

        def transform(seq):
            t = _w(seq[0]) @ context + seq[0].bias
            ln = seq[1]
            t = (t - t.mean()) / torch.sqrt(((t - t.mean()) ** 2).mean() + ln.eps)
            t = t * ln.weight.flatten() + ln.bias.flatten()
            return _w(seq[3]) @ torch.clamp(t, min=0) + seq[3].bias

        shape = [channels] + [1] * (x.dim() - 2)
        if module.channel_mul_conv is not None:
            out[b] = out[b] * _sigmoid(transform(module.channel_mul_conv)).view(shape)
        if module.channel_add_conv is not None:
            out[b] = out[b] + transform(module.channel_add_conv).view(shape)
    return out


@pytest.mark.parametrize(
    "pooling, fusions", [("att", ("channel_add",)), ("avg", ("channel_add", "channel_mul")), ("att", ("channel_mul",))]
)
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_gc_matches_formula(spatial_dims, pooling, fusions):
    module = _randomise(ContextBlock(spatial_dims, 16, pooling=pooling, fusions=fusions).double())
    x = _input(2, 16, *([4] * spatial_dims))
    torch.testing.assert_close(module(x), _gc_reference(module, x), **TOL)


def test_gc_starts_as_identity():
    module = ContextBlock(3, 16)
    x = torch.randn(2, 16, 4, 4, 4)
    torch.testing.assert_close(module(x), x, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ TorchScript & ONNX
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", NAMES)
def test_torchscript_matches_eager(name, spatial_dims):
    module = _randomise(create_attention(name, spatial_dims, CHANNELS)).eval()
    scripted = torch.jit.script(module)
    x = torch.randn(2, CHANNELS, *([SIZE] * spatial_dims))
    torch.testing.assert_close(scripted(x), module(x))


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", NAMES)
def test_onnx_export(name, spatial_dims, tmp_path):
    onnx = pytest.importorskip("onnx")
    module = create_attention(name, spatial_dims, CHANNELS).eval()
    # ONNX has no adaptive pooling: FcaNet exports when the input is a multiple of its DCT size (7 here)
    size = 14 if name == "fca" else SIZE
    path = tmp_path / f"{name}.onnx"
    x = torch.randn(2, CHANNELS, *([size] * spatial_dims))
    torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=17)
    onnx.checker.check_model(onnx.load(str(path)))
