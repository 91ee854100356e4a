"""Each attention module against an independent, written-out version of its formula (papers.md §001).

The references below copy the module's parameters and recompute the output with plain tensor operations
(explicit loops over samples and channels where the paper describes per-channel MLPs); they never call the
module's own methods. Everything runs in float64 so the comparisons can be tight.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from medattn_networks.attention import (
    AttentionGate,
    ChannelSE,
    ChannelSliceAttention,
    ProgressiveAttention,
    ProjectExcite,
    SliceAttention,
    SliceChannelAttention,
)

TOL = dict(rtol=1e-10, atol=1e-12)


def _randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Spread the parameters so that every gate is far from 0.5 and the slice weights differ."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.7)
    return module


def _input(*shape: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # a per-slice offset makes the slice profile of every channel non-flat
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    return x + torch.linspace(-1.0, 1.0, shape[2], dtype=torch.float64).view(1, 1, -1, *([1] * (len(shape) - 3)))


def _mlp(w1, b1, w2, b2, v):
    """Linear → ReLU → Linear on a vector, with weights in nn.Linear layout [out, in]."""
    return w2 @ torch.clamp(w1 @ v + b1, min=0) + b2


# ----------------------------------------------------------------------------------------------- cSE
def _cse_reference(module: ChannelSE, x: torch.Tensor, pooling: str) -> torch.Tensor:
    w1, b1 = module.fc[0].weight.detach().clone(), module.fc[0].bias.detach().clone()
    w2, b2 = module.fc[2].weight.detach().clone(), module.fc[2].bias.detach().clone()
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        flat = x[b].reshape(x.shape[1], -1)
        avg, mx = flat.sum(1) / flat.shape[1], flat.max(1).values
        if pooling == "avg":
            logits = _mlp(w1, b1, w2, b2, avg)
        elif pooling == "max":
            logits = _mlp(w1, b1, w2, b2, mx)
        else:
            logits = _mlp(w1, b1, w2, b2, avg) + _mlp(w1, b1, w2, b2, mx)
        gate = 1.0 / (1.0 + torch.exp(-logits))
        for c in range(x.shape[1]):
            out[b, c] = x[b, c] * gate[c]
    return out


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("pooling", ["avg", "max", "avgmax"])
def test_cse_matches_formula(pooling, spatial_dims):
    module = _randomise(ChannelSE(spatial_dims, 8, reduction=4, pooling=pooling).double())
    assert module.fc[0].out_features == 2
    x = _input(2, 8, *([6] * spatial_dims))
    torch.testing.assert_close(module(x), _cse_reference(module, x, pooling), **TOL)


def test_cse_poolings_differ():
    x = _input(2, 8, 6, 6, 6)
    outs = []
    for pooling in ("avg", "max", "avgmax"):
        module = ChannelSE(3, 8, reduction=4, pooling=pooling).double()
        _randomise(module)  # same seed → same weights
        outs.append(module(x))
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[0], outs[2])


def test_cse_hidden_is_at_least_one_and_bad_pooling_raises():
    assert ChannelSE(3, 4, reduction=8).fc[0].out_features == 1
    with pytest.raises(ValueError, match="pooling"):
        ChannelSE(3, 8, pooling="median")


# ----------------------------------------------------------------------------------------- Project & Excite
def _prelu(v: torch.Tensor, slopes: torch.Tensor) -> torch.Tensor:
    return torch.where(v > 0, v, slopes * v)


def _pe_reference(module: ProjectExcite, x: torch.Tensor) -> torch.Tensor:
    conv1, prelu, conv2 = module.excite[0], module.excite[1], module.excite[2]
    w1 = conv1.weight.detach().clone().flatten(1)  # [hidden, C]
    b1 = conv1.bias.detach().clone()
    a = prelu.weight.detach().clone()
    w2 = conv2.weight.detach().clone().flatten(1)  # [C, hidden]
    b2 = conv2.bias.detach().clone()
    B, C = x.shape[:2]
    out = torch.empty_like(x)
    if x.dim() == 5:
        D, H, W = x.shape[2:]
        for b in range(B):
            pd = x[b].sum(dim=(2, 3)) / (H * W)  # [C, D]: projection onto the first axis
            ph = x[b].sum(dim=(1, 3)) / (D * W)  # [C, H]
            pw = x[b].sum(dim=(1, 2)) / (D * H)  # [C, W]
            for d in range(D):
                for h in range(H):
                    for w in range(W):
                        z = (pd[:, d] + ph[:, h] + pw[:, w]) / 3.0
                        e = w2 @ _prelu(w1 @ z + b1, a) + b2
                        out[b, :, d, h, w] = x[b, :, d, h, w] / (1.0 + torch.exp(-e))
    else:
        H, W = x.shape[2:]
        for b in range(B):
            ph = x[b].sum(dim=2) / W  # [C, H]
            pw = x[b].sum(dim=1) / H  # [C, W]
            for h in range(H):
                for w in range(W):
                    z = (ph[:, h] + pw[:, w]) / 2.0
                    e = w2 @ _prelu(w1 @ z + b1, a) + b2
                    out[b, :, h, w] = x[b, :, h, w] / (1.0 + torch.exp(-e))
    return out


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_project_excite_matches_formula(spatial_dims):
    module = _randomise(ProjectExcite(spatial_dims, 6).double())
    assert module.excite[1].weight.numel() == 3  # one PReLU slope per hidden channel (C/2)
    with torch.no_grad():  # distinct slopes, so a shared-slope bug would show
        module.excite[1].weight.copy_(torch.tensor([0.1, -0.3, 0.5], dtype=torch.float64))
    shape = (2, 6, 4, 5, 3) if spatial_dims == 3 else (2, 6, 5, 4)
    x = _input(*shape)
    torch.testing.assert_close(module(x), _pe_reference(module, x), **TOL)


# ------------------------------------------------------------------------------------------ attention gate
def _instance_norm(v: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    out = torch.empty_like(v)
    for b in range(v.shape[0]):
        for c in range(v.shape[1]):
            mean = v[b, c].mean()
            var = ((v[b, c] - mean) ** 2).mean()  # biased variance
            out[b, c] = (v[b, c] - mean) / torch.sqrt(var + eps) * weight[c] + bias[c]
    return out


def _ag_reference(module: AttentionGate, skip: torch.Tensor, gate: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    conv = F.conv3d if spatial_dims == 3 else F.conv2d
    mode = "trilinear" if spatial_dims == 3 else "bilinear"
    theta_w = module.theta.weight.detach().clone()
    assert module.theta.bias is None
    # θ: kernel 2, stride 2, no bias; φ and ψ: 1×1 with bias; the gate already lives at θ's resolution
    theta = conv(skip, theta_w, stride=2)
    phi = conv(gate, module.phi.weight.detach().clone(), module.phi.bias.detach().clone())
    assert phi.shape == theta.shape
    f = torch.clamp(theta + phi, min=0)
    psi = conv(f, module.psi.weight.detach().clone(), module.psi.bias.detach().clone())
    alpha = F.interpolate(1.0 / (1.0 + torch.exp(-psi)), size=skip.shape[2:], mode=mode, align_corners=False)
    gated = alpha * skip
    out_conv, norm = module.out[0], module.out[1]
    y = conv(gated, out_conv.weight.detach().clone(), out_conv.bias.detach().clone())
    return _instance_norm(y, norm.weight.detach().clone(), norm.bias.detach().clone(), norm.eps)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("gate_factor", [1, 2])
def test_attention_gate_matches_formula(spatial_dims, gate_factor):
    C = 4
    module = _randomise(AttentionGate(spatial_dims, C, gate_channels=gate_factor * C).double())
    assert module.theta.out_channels == C // 2 and module.psi.out_channels == 1
    skip = _input(2, C, *([8] * spatial_dims))
    gate = _input(2, gate_factor * C, *([4] * spatial_dims), seed=5)
    torch.testing.assert_close(module(skip, gate), _ag_reference(module, skip, gate, spatial_dims), **TOL)


def test_attention_gate_parameter_count_matches_reference():
    # REPORT.md: per-gate params at C = 64 / 32 / 16 with gate 2C are 24,833 / 6,273 / 1,601
    for C, expected in ((64, 24_833), (32, 6_273), (16, 1_601)):
        gate = AttentionGate(3, C, gate_channels=2 * C)
        assert sum(p.numel() for p in gate.parameters()) == expected


# ----------------------------------------------------------------------------------------- slice attention
def _slice_linears(sa: SliceAttention) -> list[tuple[nn.Linear, nn.Linear]]:
    """C separate nn.Linear pairs with weights copied from the batched tensors (weight1[c] is [D, hidden])."""
    C, D, hidden = sa.weight1.shape
    pairs = []
    for c in range(C):
        lin1 = nn.Linear(D, hidden).double()
        lin2 = nn.Linear(hidden, D).double()
        with torch.no_grad():
            lin1.weight.copy_(sa.weight1[c].T)
            lin1.bias.copy_(sa.bias1[c])
            lin2.weight.copy_(sa.weight2[c].T)
            lin2.bias.copy_(sa.bias2[c])
        pairs.append((lin1, lin2))
    return pairs


def _slice_weights_reference(pairs, x: torch.Tensor) -> torch.Tensor:
    """[B, C, D] slice weights: per channel, per sample, mean of each slice → its own MLP → sigmoid."""
    B, C, D = x.shape[:3]
    s = torch.empty(B, C, D, dtype=x.dtype)
    for c, (lin1, lin2) in enumerate(pairs):
        for b in range(B):
            z = torch.stack([x[b, c, d].mean() for d in range(D)])
            s[b, c] = torch.sigmoid(lin2(torch.relu(lin1(z))))
    return s


def _apply_slice_weights(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            for d in range(x.shape[2]):
                out[b, c, d] = x[b, c, d] * s[b, c, d]
    return out


def _sa_reference(sa: SliceAttention, x: torch.Tensor) -> torch.Tensor:
    return _apply_slice_weights(x, _slice_weights_reference(_slice_linears(sa), x))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_slice_attention_matches_per_channel_linears(spatial_dims):
    D = 8
    sa = _randomise(SliceAttention(spatial_dims, 5, depth=D, reduction=4).double())
    assert sa.weight1.shape == (5, D, 2) and sa.weight2.shape == (5, 2, D)
    x = _input(2, 5, D, *([4] * (spatial_dims - 1)))
    torch.testing.assert_close(sa(x), _sa_reference(sa, x), **TOL)


def test_slice_attention_parameter_count_equals_separate_linears():
    # REPORT.md: per-channel MLP params at D=144/h=9 → 2,745; 72/4 → 652; 36/2 → 182; 18/1 → 55
    for D, expected in ((144, 2_745), (72, 652), (36, 182), (18, 55)):
        sa = SliceAttention(3, 3, depth=D, reduction=16)
        assert sum(p.numel() for p in sa.parameters()) == 3 * expected


def test_slice_attention_rejects_wrong_slice_count():
    sa = SliceAttention(3, 4, depth=8)
    with pytest.raises(ValueError, match=r"8 slices.*got 6"):
        sa(torch.randn(1, 4, 6, 8, 8))
    pam = ProgressiveAttention(3, 4, depth=8)
    with pytest.raises(ValueError, match="slices"):
        pam(torch.randn(1, 4, 10, 8, 8))
    with pytest.raises(ValueError, match="depth"):
        SliceAttention(3, 4, depth=0)


# ---------------------------------------------------------------------------------------------------- PAM
def _pam_reference(pam: ProgressiveAttention, x: torch.Tensor, pooling: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Explicit per-sample, per-channel PAM; returns the output and the key-slice mask [B, C, D]."""
    pairs = _slice_linears(pam.slice_attention)
    fc1, fc2 = nn.Linear(1, 1).double(), nn.Linear(1, 1).double()
    fc1.weight = nn.Parameter(pam.channel_fc[0].weight.detach().clone())
    fc1.bias = nn.Parameter(pam.channel_fc[0].bias.detach().clone())
    fc2.weight = nn.Parameter(pam.channel_fc[2].weight.detach().clone())
    fc2.bias = nn.Parameter(pam.channel_fc[2].bias.detach().clone())
    B, C, D = x.shape[:3]
    outs, masks = [], []
    for b in range(B):
        xb = x[b : b + 1]
        s = _slice_weights_reference(pairs, xb)[0]  # [C, D]
        x_sa = _apply_slice_weights(xb, s[None])[0]  # [C, D, ...]
        avg_desc, max_desc, mask_b = [], [], []
        for c in range(C):
            # KSS: softmax of the channel's slice weights, keep the slices at or above a uniform share 1/D
            p = torch.exp(s[c]) / torch.exp(s[c]).sum()
            keep = [d for d in range(D) if p[d] >= 1.0 / D]
            assert keep, "at least the arg-max slice is always kept"
            mask_b.append(torch.tensor([d in keep for d in range(D)]))
            selected = torch.stack([x_sa[c, d] for d in keep])  # [n_keep, ...]: all in-plane voxels of kept slices
            avg_desc.append(selected.mean())
            max_desc.append(selected.max())
        if pooling == "avg":
            logits = fc2(torch.relu(fc1(torch.stack(avg_desc))))
        elif pooling == "max":
            logits = fc2(torch.relu(fc1(torch.stack(max_desc))))
        else:
            logits = fc2(torch.relu(fc1(torch.stack(avg_desc)))) + fc2(torch.relu(fc1(torch.stack(max_desc))))
        gate = torch.sigmoid(logits)
        outs.append(torch.stack([x_sa[c] * gate[c] for c in range(C)]))
        masks.append(torch.stack(mask_b))
    return torch.stack(outs), torch.stack(masks)


def _pam(spatial_dims: int, pooling: str, C: int = 6, D: int = 8) -> ProgressiveAttention:
    return _randomise(
        ProgressiveAttention(spatial_dims, C, depth=D, slice_reduction=4, channel_reduction=2, pooling=pooling).double()
    )


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("pooling", ["avg", "max", "avgmax"])
def test_pam_matches_per_sample_per_channel_loop(pooling, spatial_dims):
    pam = _pam(spatial_dims, pooling)
    x = _input(3, 6, 8, *([4] * (spatial_dims - 1)))
    expected, mask = _pam_reference(pam, x, pooling)
    # the selection is non-trivial: some slices are dropped, and the masks differ between channels/samples
    assert mask.any(-1).all() and not mask.all()
    assert len({tuple(m.tolist()) for m in mask.flatten(0, 1)}) > 1
    torch.testing.assert_close(pam.key_slices(pam.slice_attention.slice_weights(x)), mask)
    torch.testing.assert_close(pam(x), expected, **TOL)


def test_pam_gradients_match_reference_loop():
    pam = _pam(3, "avg")
    x1 = _input(2, 6, 8, 3, 3).requires_grad_(True)
    x2 = x1.detach().clone().requires_grad_(True)
    g = torch.randn(2, 6, 8, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    (pam(x1) * g).sum().backward()
    expected, _ = _pam_reference(pam, x2, "avg")
    (expected * g).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, **TOL)


def test_pam_differs_from_sca():
    # PAM pools only the key slices; scA's cSE pools all of them: with the same weights the outputs differ
    pam = _pam(3, "avg")
    sca = SliceChannelAttention(3, 6, depth=8, slice_reduction=4, channel_reduction=2).double()
    sca.slice_attention.load_state_dict(pam.slice_attention.state_dict())
    sca.channel_attention.fc.load_state_dict(pam.channel_fc.state_dict())
    x = _input(2, 6, 8, 4, 4)
    assert not torch.allclose(pam(x), sca(x))


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_pam_processes_each_sample_independently(pooling):
    pam = _pam(3, pooling).float()
    x = torch.randn(3, 6, 8, 4, 4, generator=torch.Generator().manual_seed(7))
    x[1] *= 3.0
    x[2] += torch.linspace(-2, 2, 8).view(1, 8, 1, 1)
    batched = pam(x)
    for i in range(3):
        torch.testing.assert_close(batched[i : i + 1], pam(x[i : i + 1]), rtol=1e-5, atol=1e-6)
    # the released code took the channel descriptor from sample 0 for the whole batch: here the batch order
    # must not matter
    torch.testing.assert_close(pam(x.flip(0)), batched.flip(0), rtol=1e-5, atol=1e-6)


def test_pam_gradient_flows_to_input_and_weights():
    torch.manual_seed(0)
    pam = ProgressiveAttention(3, 6, depth=8, slice_reduction=4, channel_reduction=2)
    x = torch.randn(2, 6, 8, 4, 4, requires_grad=True)
    (pam(x) * torch.randn(2, 6, 8, 4, 4)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in pam.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # (hidden ReLU units may be dead at random init; the last layer and the slice MLPs always get a gradient)
    for p in (pam.channel_fc[2].bias, pam.slice_attention.weight2, pam.slice_attention.bias2):
        assert p.grad.abs().sum() > 0


def test_pam_bad_pooling_raises():
    with pytest.raises(ValueError, match="pooling"):
        ProgressiveAttention(3, 4, depth=8, pooling="sum")


# ---------------------------------------------------------------------------------------------- scA / csA
@pytest.mark.parametrize("pooling", ["avg", "avgmax"])
def test_sca_is_slice_then_channel_and_csa_is_channel_then_slice(pooling):
    C, D = 6, 8
    sca = _randomise(SliceChannelAttention(3, C, depth=D, slice_reduction=4, channel_reduction=2, pooling=pooling).double())
    csa = ChannelSliceAttention(3, C, depth=D, slice_reduction=4, channel_reduction=2, pooling=pooling).double()
    csa.load_state_dict(sca.state_dict())  # same parameter names and shapes
    x = _input(2, C, D, 4, 4)

    cse = sca.channel_attention
    expected_sca = _cse_reference(cse, _sa_reference(sca.slice_attention, x), pooling)
    expected_csa = _sa_reference(csa.slice_attention, _cse_reference(cse, x, pooling))
    torch.testing.assert_close(sca(x), expected_sca, **TOL)
    torch.testing.assert_close(csa(x), expected_csa, **TOL)
    assert not torch.allclose(expected_sca, expected_csa)


def test_sca_csa_pam_share_one_parameter_set():
    kwargs = dict(depth=16, slice_reduction=4, channel_reduction=2)
    counts = {
        cls.__name__: sum(p.numel() for p in cls(3, 8, **kwargs).parameters())
        for cls in (SliceChannelAttention, ChannelSliceAttention, ProgressiveAttention)
    }
    assert len(set(counts.values())) == 1, counts
