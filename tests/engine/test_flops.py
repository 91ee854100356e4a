"""FLOP counter: fvcore / mmengine rules on small modules with hand-computed counts (papers.md, FLOP convention)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from medattn_networks.engine.flops import FlopCounter, count_flops, count_params, format_count


class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _flops(module: nn.Module, shape, **kwargs):
    return count_flops(module, shape, by_operator=True, **kwargs)


def test_conv_counts_one_flop_per_multiply_add_without_bias():
    conv = nn.Conv2d(4, 6, 3, padding=1, stride=2, groups=2)  # out 8×8
    total, ops = _flops(conv, (1, 4, 16, 16))
    assert total == 6 * (4 // 2) * 9 * 8 * 8 == ops["conv"]
    conv3d = nn.Conv3d(2, 3, 3, padding=2, dilation=2)
    assert count_flops(conv3d, (1, 2, 5, 6, 7)) == 3 * 2 * 27 * 5 * 6 * 7
    deconv = nn.ConvTranspose2d(4, 2, 2, stride=2)  # fvcore: weight numel × input positions
    assert count_flops(deconv, (1, 4, 3, 5)) == 4 * 2 * 4 * 3 * 5


def test_linear_matmul_bmm_einsum():
    assert count_flops(nn.Linear(8, 5), (1, 7, 8)) == 7 * 8 * 5
    w = torch.randn(3, 6, 4)
    assert count_flops(_Lambda(lambda x: torch.matmul(x, w)), (3, 5, 6)) == 3 * 5 * 6 * 4
    assert count_flops(_Lambda(lambda x: x @ w), (3, 5, 6)) == 3 * 5 * 6 * 4
    assert count_flops(_Lambda(lambda x: torch.bmm(x, w)), (3, 5, 6)) == 3 * 5 * 6 * 4
    assert count_flops(_Lambda(lambda x: x.bmm(w)), (3, 5, 6)) == 3 * 5 * 6 * 4
    m = torch.randn(6, 2)
    assert count_flops(_Lambda(lambda x: torch.mm(x[0], m)), (1, 5, 6)) == 5 * 6 * 2
    assert count_flops(_Lambda(lambda x: torch.addmm(torch.zeros(2), x[0], m)), (1, 5, 6)) == 5 * 6 * 2
    assert count_flops(_Lambda(lambda x: torch.einsum("bij,bjk->bik", x, w)), (3, 5, 6)) == 3 * 5 * 6 * 4


def test_norms_and_pools():
    bn = nn.BatchNorm2d(4)
    assert count_flops(bn, (1, 4, 5, 5)) == 2 * 100  # eval: 2 per element
    assert count_flops(nn.BatchNorm2d(4, affine=False), (1, 4, 5, 5)) == 100
    assert count_flops(nn.LayerNorm([4, 5, 5]), (1, 4, 5, 5)) == 5 * 100
    assert count_flops(nn.GroupNorm(2, 4), (1, 4, 5, 5)) == 5 * 100
    assert count_flops(nn.GroupNorm(2, 4, affine=False), (1, 4, 5, 5)) == 4 * 100
    assert count_flops(nn.InstanceNorm2d(4, affine=True), (1, 4, 5, 5)) == 5 * 100
    # adaptive average pooling: 1 per input element, also for a 1×1 output (ATen runs it as a mean)
    assert count_flops(nn.AdaptiveAvgPool2d(1), (1, 4, 6, 6)) == 144
    assert count_flops(nn.AdaptiveAvgPool3d((2, 3, 3)), (1, 4, 4, 6, 6)) == 576


def test_free_ops_are_not_counted():
    free = nn.Sequential(
        nn.ReLU(), nn.Sigmoid(), nn.Softmax(dim=1), nn.MaxPool2d(2), nn.AdaptiveMaxPool2d(1), nn.Dropout2d(0.1)
    )
    assert count_flops(free, (1, 4, 8, 8)) == 0
    assert count_flops(_Lambda(lambda x: (x + x * x).mean((2, 3)).sum()), (1, 4, 8, 8)) == 0


def test_upsampling_follows_fvcore():
    assert count_flops(_Lambda(lambda x: F.interpolate(x, scale_factor=2, mode="bilinear")), (1, 2, 4, 4)) == 4 * 128
    assert count_flops(_Lambda(lambda x: F.interpolate(x, scale_factor=2, mode="nearest")), (1, 2, 4, 4)) == 128


@pytest.mark.parametrize("need_weights", [False, True])  # fused SDPA kernel / explicit bmm path
def test_composite_functions_are_counted_inside(need_weights):
    attn = nn.MultiheadAttention(8, 2, batch_first=True)
    total = count_flops(_Lambda(lambda x: attn(x, x, x, need_weights=need_weights)[0]), (1, 5, 8))
    # in-projection 3·(5·8·8), q·kᵀ and attn·v 2·(2 heads · 5·5·4), out-projection 5·8·8
    assert total == 3 * 320 + 2 * 200 + 320


def test_fake_and_real_agree_and_mode_is_restored():
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    net.train()
    fake = count_flops(net, (1, 3, 10, 10))
    real = count_flops(net, (1, 3, 10, 10), fake=False)
    assert fake == real == 4 * 3 * 9 * 64 + 2 * 4 * 64 + 4 * 64 + 4 * 2
    assert net.training
    assert not any(m.running_mean.abs().sum() > 0 for m in net.modules() if isinstance(m, nn.BatchNorm2d))


def test_counter_context_and_helpers():
    with FlopCounter() as counter:
        F.linear(torch.randn(2, 3), torch.randn(4, 3))
    assert counter.total() == 24 and counter.counts["matmul"] == 24
    lin = nn.Linear(3, 4)
    lin.bias.requires_grad_(False)
    assert count_params(lin) == 16 and count_params(lin, trainable_only=True) == 12
    assert format_count(4_109_464_576) == "4.109G"
    assert format_count(47_133_043, "M", 2) == "47.13M"
