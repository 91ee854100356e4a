"""MASAG (MSA²Net, seed 004): the released formula written out with the module's weights, in 2D and 3D; its counts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attention_testing import count_params, float64_input, randomise, sigmoid  # noqa: E402

from medattn_networks.attention import create_attention


def _bn(x, bn):
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return (x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps) * bn.weight.view(shape) + bn.bias.view(shape)


def _conv(x, conv):
    op = F.conv2d if x.dim() == 4 else F.conv3d
    return op(x, conv.weight, conv.bias, padding=conv.padding, dilation=conv.dilation, groups=conv.groups)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_masag_equals_the_formula(spatial_dims):
    torch.manual_seed(0)
    gate = randomise(create_attention("masag", spatial_dims, 6), scale=0.4).double().eval()
    size = (5,) * spatial_dims
    x, g = float64_input(2, 6, *size, seed=1), float64_input(2, 6, *size, seed=2)

    local = gate.multi.local
    h = torch.relu(_bn(_conv(x, local.dconv[0]), local.dconv[1]))  # depthwise 3×3
    h = torch.relu(_bn(_conv(h, local.dconv[3]), local.dconv[4]))  # 3×3, dilation 2
    local_x = _bn(_conv(h, local.proj[0]), local.proj[1])
    pooled = torch.cat([g.mean(1, keepdim=True), g.max(1, keepdim=True).values], 1)
    global_g = _bn(_conv(pooled, gate.multi.global_.proj[0]), gate.multi.global_.proj[1])
    fused = _bn(local_x + global_g, gate.multi.bn)
    logits = _conv(fused, gate.selection)
    weights = torch.exp(logits) / torch.exp(logits).sum(1, keepdim=True)
    a, b = weights[:, :1], weights[:, 1:]
    x1, g1 = a * x + x, b * g + g
    interaction = (sigmoid(g1) * x1) * (sigmoid(x1) * g1)
    p = sigmoid(_bn(_conv(interaction, gate.proj), gate.bn))
    expected = _bn(_conv(p * x, gate.conv_block[0]), gate.bn_2)

    torch.testing.assert_close(gate(x, g), expected)
    assert gate.multi.local.dconv[3].dilation == (2,) * spatial_dims
    with pytest.raises(ValueError, match="one shape"):
        gate(x, g[..., :4])


@pytest.mark.parametrize("channels", [96, 192, 384])  # MSA²Net's three gates
def test_masag_parameter_counts(channels):
    c = channels
    assert count_params(create_attention("masag", 2, c)) == 12 * c * c + 28 * c + 7
    assert count_params(create_attention("masag", 3, c)) == 30 * c * c + 46 * c + 7


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_masag_torchscript_and_onnx(spatial_dims, tmp_path):
    gate = randomise(create_attention("masag", spatial_dims, 4), scale=0.4).eval()
    x, g = torch.randn(1, 4, *([6] * spatial_dims)), torch.randn(1, 4, *([6] * spatial_dims))
    torch.testing.assert_close(torch.jit.script(gate)(x, g), gate(x, g))
    onnx = pytest.importorskip("onnx")
    path = tmp_path / "masag.onnx"
    torch.onnx.export(gate, (x, g), str(path), opset_version=17, dynamo=False)
    onnx.checker.check_model(onnx.load(str(path)))
