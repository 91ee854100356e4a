"""CBAM and the spatial transformer (issue 3; papers.md §002 and §001).

CBAM's reference counts were read by instantiating DPC-Net @9eb75a4's ``seg/models/utils/cbam.py`` (the official
Jongchan/attention-module code; DSNet's config ``CBAM(in_channels=C)``) outside this project. The numerical tests
recompute the output from the papers' formulas in float64 with the module's parameters copied; the STN tests check
the identity at initialisation and that θ represents known (integer and sub-voxel) translations.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from medattn_networks.attention.gates import CBAM, SpatialTransformer
from medattn_networks.attention.registry import create_attention, get_attention_class
from attention_testing import count_params as _count, float64_input as _input, randomise as _randomise, sigmoid as _sigmoid

NAMES = ("cbam", "stn")
CHANNELS, SIZE = 16, 8
TOL = dict(rtol=1e-10, atol=1e-11)

CBAM_REFERENCE_PARAMS = {64: 680, 256: 8564, 512: 33412}  # DPC-Net's CBAM, r = 16, 7×7 spatial conv + BN(1)










# ----------------------------------------------------------------------------------------------- registry
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", NAMES)
def test_forward_backward(name, spatial_dims, batch):
    torch.manual_seed(0)
    module = create_attention(name, spatial_dims, CHANNELS)
    assert isinstance(module, get_attention_class(name))
    x = torch.randn(batch, CHANNELS, *([SIZE] * spatial_dims), requires_grad=True)
    y = module(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}: bad gradient for {pname}"


# --------------------------------------------------------------------------------------------------- CBAM
@pytest.mark.parametrize("channels", [64, 256, 512])
def test_cbam_parameter_count_matches_reference_code(channels):
    h = channels // 16
    formula = 2 * channels * h + h + channels + 2 * 7 * 7 + 2
    assert _count(create_attention("cbam", 2, channels)) == CBAM_REFERENCE_PARAMS[channels] == formula
    assert _count(create_attention("cbam", 3, channels)) == formula - 2 * 49 + 2 * 343


def _cbam_reference(module: CBAM, x: torch.Tensor, train: bool) -> torch.Tensor:
    batch, channels = x.shape[:2]
    w1, b1 = module.mlp[0].weight.detach(), module.mlp[0].bias.detach()
    w2, b2 = module.mlp[2].weight.detach(), module.mlp[2].bias.detach()
    gated = torch.empty_like(x)
    for b in range(batch):
        flat = x[b].reshape(channels, -1)
        logits = sum(w2 @ torch.clamp(w1 @ v + b1, min=0) + b2 for v in (flat.mean(1), flat.max(1).values))
        gate = _sigmoid(logits)
        for c in range(channels):
            gated[b, c] = x[b, c] * gate[c]
    # spatial gate on the channel-gated map: [max over C, mean over C] → k×k conv (no bias) → BN(1) → sigmoid
    pooled = torch.stack([gated.max(1).values, gated.mean(1)], dim=1)
    conv = F.conv2d if x.dim() == 4 else F.conv3d
    k = module.spatial_conv.weight.shape[-1]
    s = conv(pooled, module.spatial_conv.weight.detach(), padding=(k - 1) // 2)
    bn = module.spatial_norm
    if train:
        mean, var = s.mean(), ((s - s.mean()) ** 2).mean()
    else:
        mean, var = bn.running_mean, bn.running_var
    s = (s - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias
    return gated * _sigmoid(s)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_cbam_matches_formula(spatial_dims, train):
    kernel = 7 if spatial_dims == 2 else 3
    module = _randomise(CBAM(spatial_dims, 32, reduction=4, kernel_size=kernel).double())
    module.train(train)
    x = _input(2, 32, *([6] * spatial_dims))
    with torch.no_grad():
        torch.testing.assert_close(module(x), _cbam_reference(module, x, train), **TOL)


def test_cbam_default_layout():
    module = CBAM(3, 64)
    assert module.mlp[0].out_features == 4 and tuple(module.spatial_conv.weight.shape) == (1, 2, 7, 7, 7)
    assert module.spatial_conv.bias is None and module.spatial_norm.momentum == 0.01


# ---------------------------------------------------------------------------------------------------- STN
def _stn_params(c: int, d: int, h: int = 8, p: int = 4, f: int = 32) -> int:
    n = d * (d + 1)
    return c * h * 3**d + h + h * h * 3**d + h + h * p**d * f + f + f * n + n


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_stn_parameter_count(spatial_dims):
    assert _count(create_attention("stn", spatial_dims, CHANNELS)) == _stn_params(CHANNELS, spatial_dims)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_stn_is_identity_at_init(spatial_dims, batch):
    module = SpatialTransformer(spatial_dims, CHANNELS).double()
    x = _input(batch, CHANNELS, *([SIZE] * spatial_dims))
    eye = torch.eye(spatial_dims, spatial_dims + 1, dtype=torch.float64).expand(batch, -1, -1)
    torch.testing.assert_close(module.theta(x), eye, rtol=0, atol=0)
    torch.testing.assert_close(module(x), x, rtol=0, atol=1e-12)


def _set_translation(module: SpatialTransformer, shift: list[float]) -> None:
    """Make θ a constant translation; ``shift`` is in voxels per axis, in tensor order (D, H, W)."""
    d = module.spatial_dims
    theta = torch.eye(d, d + 1, dtype=torch.float64)
    for axis, s in enumerate(shift):
        # θ's rows follow (x, y, z) = (last axis, ..., first axis); normalised units: 2 per full extent
        theta[d - 1 - axis, d] = 2.0 * s / SIZE
    with torch.no_grad():
        module.fc[-1].weight.zero_()
        module.fc[-1].bias.copy_(theta.flatten())


def _shifted(x: torch.Tensor, axis: int, s: int) -> torch.Tensor:
    """out[i] = x[i + s] along ``axis`` (a spatial axis index), zero where i + s falls outside."""
    dim = 2 + axis
    out = torch.zeros_like(x)
    n = x.shape[dim]
    if s >= 0:
        out.narrow(dim, 0, n - s).copy_(x.narrow(dim, s, n - s))
    else:
        out.narrow(dim, -s, n + s).copy_(x.narrow(dim, 0, n + s))
    return out


@pytest.mark.parametrize("spatial_dims, axis, s", [(2, 0, 2), (2, 1, -3), (3, 0, 1), (3, 1, 2), (3, 2, -1)])
def test_stn_represents_integer_translation(spatial_dims, axis, s):
    module = SpatialTransformer(spatial_dims, CHANNELS).double()
    shift = [0.0] * spatial_dims
    shift[axis] = float(s)
    _set_translation(module, shift)
    x = _input(2, CHANNELS, *([SIZE] * spatial_dims))
    torch.testing.assert_close(module(x), _shifted(x, axis, s), rtol=0, atol=1e-12)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_stn_subvoxel_translation_is_linear_interpolation(spatial_dims):
    module = SpatialTransformer(spatial_dims, CHANNELS).double()
    shift = [0.0] * spatial_dims
    shift[-1] = 0.25  # a quarter voxel along the last axis
    _set_translation(module, shift)
    x = _input(2, CHANNELS, *([SIZE] * spatial_dims))
    expected = 0.75 * x + 0.25 * _shifted(x, spatial_dims - 1, 1)  # zero padding beyond the border
    torch.testing.assert_close(module(x), expected, rtol=0, atol=1e-12)


def test_stn_learns_a_translation():
    """Gradient descent on θ alone recovers a one-voxel shift of a smooth image."""
    torch.manual_seed(0)
    module = SpatialTransformer(2, 1).double()
    grid = torch.linspace(-1, 1, SIZE, dtype=torch.float64)
    x = torch.exp(-(grid.view(-1, 1) ** 2 + grid.view(1, -1) ** 2) / 0.3).view(1, 1, SIZE, SIZE)
    theta = torch.tensor([[[1.0, 0, 2.0 / SIZE], [0, 1.0, 0]]], dtype=torch.float64)
    target = F.grid_sample(x, F.affine_grid(theta, x.shape, align_corners=False), align_corners=False)
    optimiser = torch.optim.Adam([module.fc[-1].bias], lr=0.02)
    for _ in range(150):
        optimiser.zero_grad()
        loss = ((module(x) - target) ** 2).mean()
        loss.backward()
        optimiser.step()
    theta = module.theta(x)[0].detach()
    assert abs(theta[0, 2].item() - 2.0 / SIZE) < 0.02
    assert loss.item() < 1e-5


# -------------------------------------------------------------------------------------- TorchScript & ONNX
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", NAMES)
def test_torchscript_matches_eager(name, spatial_dims):
    module = _randomise(create_attention(name, spatial_dims, CHANNELS), scale=0.1).eval()
    scripted = torch.jit.script(module)
    x = torch.randn(2, CHANNELS, *([SIZE] * spatial_dims))
    torch.testing.assert_close(scripted(x), module(x))


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", NAMES)
def test_onnx_export(name, spatial_dims, tmp_path):
    onnx = pytest.importorskip("onnx")
    module = create_attention(name, spatial_dims, CHANNELS).eval()
    # affine_grid needs opset 20 (grid_sample: 16 for 2D, 20 for 3D)
    opset = 20 if name == "stn" else 17
    path = tmp_path / f"{name}.onnx"
    x = torch.randn(2, CHANNELS, *([SIZE] * spatial_dims))
    torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=opset)
    onnx.checker.check_model(onnx.load(str(path)))
