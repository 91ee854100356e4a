"""Self-attention family of DSNet's comparison (papers.md §002): PSA p/s, DANet, CCNet, EANet, HamNet NMF, DSM.

* Every module builds by name in 2D and 3D and runs forward + backward at batch sizes 1 and 3.
* Parameter counts equal the counts measured by instantiating the code DSNet trained with, outside this project
  (DPC-Net commit 9eb75a4 with small mmcv/mmengine shims; mmseg's PAM/CAM and mmcv 2.0.1's CrissCrossAttention for
  the DANet/CCNet heads). Each count covers exactly the attention block, not the head's 3×3 convs — see COUNTS.
* Each module equals a written-out version of its formula (explicit per-sample / per-position loops, own softmax
  and sigmoid) evaluated with weights copied from the module, in float64.
* Every module scripts with TorchScript and the scripted module gives the eager output; all but ``ham`` export to
  ONNX and onnx's reference evaluator reproduces the output (skipped without the onnx package).
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn

from medattn_networks.attention.registry import create_attention, get_attention_class
from medattn_networks.attention.self_attention import (
    DSM,
    CrissCrossAttention,
    DANetChannelAttention,
    DANetDualAttention,
    DANetPositionAttention,
    ExternalAttention,
    Hamburger,
    PolarizedSelfAttentionParallel,
    PolarizedSelfAttentionSequential,
)

TOL = dict(rtol=1e-9, atol=1e-10)
NAMES = ("psa_p", "psa_s", "danet", "danet_position", "danet_channel", "cca", "ea", "ham", "dsm")
SMALL_KW = {"danet": {"pam_channels": 4}, "danet_position": {"pam_channels": 4}, "ham": {"norm_groups": 4, "seed": 3}}
SHAPE = {2: (6, 7), 3: (4, 5, 6)}  # unequal sides catch swapped axes


def _randomise(module: nn.Module, seed: int = 0, scale: float = 0.5) -> nn.Module:
    """Spread every parameter (γ scalars included, which are 0 at init) so each term of the formula matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return module


def _input(*shape: int, seed: int = 1, positive: bool = False) -> torch.Tensor:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x.abs() if positive else x


def _w(conv: nn.Module) -> torch.Tensor:
    """1×1 conv or linear weight as an [out, in] matrix (copied)."""
    return conv.weight.detach().clone().reshape(conv.weight.shape[0], -1)


def _b(conv: nn.Module, n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.float64) if conv.bias is None else conv.bias.detach().clone()


def _lin(conv: nn.Module, v: torch.Tensor) -> torch.Tensor:
    """Apply a 1×1 conv / linear to a [in, N] matrix → [out, N]."""
    w = _w(conv)
    return w @ v + _b(conv, w.shape[0])[:, None]


def _softmax(v: torch.Tensor, dim: int) -> torch.Tensor:
    e = torch.exp(v - v.max(dim=dim, keepdim=True).values)
    return e / e.sum(dim=dim, keepdim=True)


def _sigmoid(v: torch.Tensor) -> torch.Tensor:
    return 1.0 / (1.0 + torch.exp(-v))


def _relu(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp(v, min=0)


def _nparams(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# --------------------------------------------------------------------------------------- registry, fwd + bwd
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", NAMES)
def test_builds_by_name_and_trains(name, spatial_dims, batch):
    torch.manual_seed(0)
    kwargs = dict(SMALL_KW.get(name, {}))
    if name == "dsm" and batch == 1:
        kwargs["sk_norm"] = "layer"  # BatchNorm of the SK descriptor needs >= 2 samples in training
    module = create_attention(name, spatial_dims, 32, **kwargs)  # psa_s: LayerNorm over C/8 = 4 values
    assert isinstance(module, get_attention_class(name))
    _randomise(module, scale=0.3)  # γ = 0 at init would hide the attention path from the checks below
    module.train()
    x = torch.rand(batch, 32, *SHAPE[spatial_dims], requires_grad=True)
    y = module(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}: bad gradient for {pname}"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"


def test_dsm_batchnorm_refuses_batch_one_training_but_runs_in_eval():
    module = DSM(2, 8)
    with pytest.raises(ValueError, match="sk_norm='layer'"):
        module(torch.rand(1, 8, 5, 5))
    x = torch.rand(1, 8, 5, 5, requires_grad=True)
    module.eval()(x).sum().backward()
    assert torch.isfinite(x.grad).all()


# ----------------------------------------------------------------------------------------- parameter counts
# Measured by instantiating the released classes (not part of this repository):
#   psa_p  DPC-Net seg/models/utils/PSA.py PSA_p(C)              — the whole plugin (5 convs)
#   psa_s  DPC-Net PSA_s(C)                                       — the whole plugin (conv_up bottleneck + LN)
#   danet  mmseg da_head PAM(C, 64) + CAM()                       — PAM's q/k/v 1×1 convs + γ, CAM's γ; not DAHead's
#          3×3 pam/cam in/out ConvModules nor its classifiers
#   cca    mmcv 2.0.1 ops CrissCrossAttention(C)                  — q/k/v 1×1 convs + γ (CCHead reuses it R times);
#          not CCHead's convs
#   ea     DPC-Net seg/models/utils/eanet.py External_Attention(dim=C, in_dim=C) — q_linear, linear_1/2, proj;
#          not EAHead's convs
#   ham    DPC-Net ham_head.py HamHead(ham_channels=C, GN 32): ham_in + NMF2D + ham_out — not squeeze/align/cls
#   dsm    DPC-Net seg/models/utils/dsa.py DSA(C, ratio, bias)   — the whole plugin incl. SK block and resConv
COUNTS = {
    ("psa_p", ()): {64: 8_256, 256: 131_328, 512: 524_800},
    ("psa_s", ()): {64: 7_064, 256: 111_200, 512: 443_584},
    ("danet", (("pam_channels", 64),)): {64: 12_482, 256: 98_690, 512: 328_322},
    ("danet_position", (("pam_channels", 64),)): {64: 12_481, 256: 98_689, 512: 328_321},
    ("danet_channel", ()): {64: 1, 256: 1, 512: 1},
    ("cca", ()): {64: 5_201, 256: 82_241, 512: 328_321},
    ("ea", ()): {64: 24_768, 256: 197_376, 512: 656_896},
    ("ham", ()): {64: 8_384, 256: 131_840, 512: 525_824},
    ("dsm", (("ratio", 2), ("bias", True))): {64: 18_849, 256: 296_577, 512: 1_182_977},
    ("dsm", (("ratio", 2), ("bias", False))): {64: 18_624, 256: 295_680, 512: 1_181_184},
    ("dsm", (("ratio", 16), ("bias", False))): {64: 5_968, 256: 94_528, 512: 377_472},
    ("dsm", (("ratio", 16), ("bias", True))): {64: 6_109, 256: 95_089, 512: 378_593},
}


@pytest.mark.parametrize("key", list(COUNTS), ids=lambda k: k[0] + "".join(f"-{a}{b}" for a, b in k[1]))
def test_parameter_counts_match_released_code(key):
    name, kwargs = key
    for channels, expected in COUNTS[key].items():
        for spatial_dims in (2, 3):
            assert _nparams(create_attention(name, spatial_dims, channels, **dict(kwargs))) == expected


def test_count_formulas():
    """The closed forms quoted in the docstrings agree with the measured table."""
    for c in (64, 256, 512):
        assert COUNTS[("psa_p", ())][c] == 2 * c * c + c
        assert COUNTS[("psa_s", ())][c] == 27 * c * c // 16 + 19 * c // 8
        assert COUNTS[("cca", ())][c] == 2 * (c * (c // 8) + c // 8) + c * c + c + 1
        assert COUNTS[("ea", ())][c] == 2 * c * c + 259 * c
        assert COUNTS[("ham", ())][c] == 2 * c * c + 3 * c
        for (r, bias) in ((2, True), (2, False), (16, False), (16, True)):
            i = c // r
            expected = c * c + 7 * c * i + 4 * i + c + int(bias) * (2 * c + 3 * i + 1)
            assert COUNTS[("dsm", (("ratio", r), ("bias", bias)))][c] == expected


# ------------------------------------------------------------------------------------------------------ PSA
def _psa_reference(module: nn.Module, x: torch.Tensor, sequential: bool) -> torch.Tensor:
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        xb = x[b].reshape(x.shape[1], -1)  # [C, N]
        q = _softmax(_lin(module.conv_q_right, xb), dim=1)  # [1, N]
        context = _lin(module.conv_v_right, xb) @ q.T  # [C/2, 1]
        if sequential:
            up0, ln, up3 = module.conv_up[0], module.conv_up[1], module.conv_up[3]
            z = _lin(up0, context)[:, 0]
            z = (z - z.mean()) / torch.sqrt(((z - z.mean()) ** 2).mean() + ln.eps)
            z = z * ln.weight.detach().flatten() + ln.bias.detach().flatten()
            ch = _sigmoid(_lin(up3, _relu(z)[:, None]))  # [C, 1]
            xb = xb * ch
            theta = _softmax(_lin(module.conv_v_left, xb), dim=1)  # softmax over positions per channel
            g = _lin(module.conv_q_left, xb).mean(dim=1)  # [C/2]
            res = xb * _sigmoid(g @ theta)[None, :]
        else:
            ch = _sigmoid(_lin(module.conv_up, context))
            g = _lin(module.conv_q_left, xb).mean(dim=1)
            sp = _sigmoid(_softmax(g @ _lin(module.conv_v_left, xb), dim=0))
            res = xb * ch + xb * sp[None, :]
        out[b] = res.reshape(x.shape[1:])
    return out


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("sequential", [False, True])
def test_psa_matches_formula(sequential, spatial_dims):
    cls = PolarizedSelfAttentionSequential if sequential else PolarizedSelfAttentionParallel
    module = _randomise(cls(spatial_dims, 16).double())
    x = _input(2, 16, *SHAPE[spatial_dims])
    torch.testing.assert_close(module(x), _psa_reference(module, x, sequential), **TOL)


# ---------------------------------------------------------------------------------------------------- DANet
def _pam_reference(pam: DANetPositionAttention, x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    gamma = pam.gamma.detach().item()
    for b in range(x.shape[0]):
        xb = x[b].reshape(x.shape[1], -1)
        q, k, v = _lin(pam.query_project, xb), _lin(pam.key_project, xb), _lin(pam.value_project, xb)
        res = torch.empty_like(xb)
        for i in range(xb.shape[1]):
            a = _softmax(q[:, i] @ k, dim=0)  # over keys j
            res[:, i] = (v * a[None, :]).sum(dim=1)
        out[b] = (gamma * res + xb).reshape(x.shape[1:])
    return out


def _cam_reference(cam: DANetChannelAttention, x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    gamma = cam.gamma.detach().item()
    for b in range(x.shape[0]):
        xb = x[b].reshape(x.shape[1], -1)
        energy = xb @ xb.T
        attn = _softmax(energy.max(dim=1, keepdim=True).values - energy, dim=1)
        out[b] = (gamma * (attn @ xb) + xb).reshape(x.shape[1:])
    return out


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_danet_matches_formula(spatial_dims):
    x = _input(2, 8, *SHAPE[spatial_dims]) * 0.5
    pam = _randomise(DANetPositionAttention(spatial_dims, 8, pam_channels=4).double())
    cam = _randomise(DANetChannelAttention(spatial_dims, 8).double())
    torch.testing.assert_close(pam(x), _pam_reference(pam, x), **TOL)
    torch.testing.assert_close(cam(x), _cam_reference(cam, x), **TOL)
    dual = _randomise(DANetDualAttention(spatial_dims, 8, pam_channels=4).double(), seed=2)
    torch.testing.assert_close(dual(x), _pam_reference(dual.pam, x) + _cam_reference(dual.cam, x), **TOL)


# ---------------------------------------------------------------------------------------------------- CCNet
def _cca_reference(module: CrissCrossAttention, x: torch.Tensor) -> torch.Tensor:
    """One pass: every position attends to all positions differing from it in at most one axis (itself once)."""
    gamma = module.gamma.detach().item()
    spatial = list(x.shape[2:])
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        xb = x[b].reshape(x.shape[1], -1)
        q, k, v = (_lin(c, xb).reshape(-1, *spatial) for c in (module.query_conv, module.key_conv, module.value_conv))
        res = torch.empty_like(x[b])
        positions = list(itertools.product(*(range(s) for s in spatial)))
        for p in positions:
            line = [t for t in positions if sum(a != c for a, c in zip(p, t)) <= 1]
            energies = torch.stack([(q[(slice(None),) + p] * k[(slice(None),) + t]).sum() for t in line])
            a = _softmax(energies, dim=0)
            res[(slice(None),) + p] = sum(a[i] * v[(slice(None),) + t] for i, t in enumerate(line))
        out[b] = gamma * res + x[b]
    return out


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_cca_matches_formula(spatial_dims):
    shape = (4, 5) if spatial_dims == 2 else (3, 4, 5)
    module = _randomise(CrissCrossAttention(spatial_dims, 16, recurrence=2).double())
    assert module.query_conv.out_channels == 2  # C // 8
    x = _input(2, 16, *shape) * 0.5
    expected = _cca_reference(module, _cca_reference(module, x))  # recurrence 2 = the same block twice
    torch.testing.assert_close(module(x), expected, **TOL)


def test_cca_3d_ignores_positions_off_the_three_lines():
    module = _randomise(CrissCrossAttention(3, 8, recurrence=1).double())
    x = _input(1, 8, 4, 4, 4)
    y = x.clone()
    y[0, :, 1, 2, 3] += 5.0  # differs from (0, 0, 0) in three axes
    torch.testing.assert_close(module(x)[0, :, 0, 0, 0], module(y)[0, :, 0, 0, 0], **TOL)
    z = x.clone()
    z[0, :, 2, 0, 0] += 5.0  # on the depth line of (0, 0, 0)
    assert not torch.allclose(module(x)[0, :, 0, 0, 0], module(z)[0, :, 0, 0, 0])


# ---------------------------------------------------------------------------------------------------- EANet
def _ea_reference(module: ExternalAttention, x: torch.Tensor, seed_view: bool) -> torch.Tensor:
    B, C = x.shape[:2]
    out = torch.empty_like(x)
    for b in range(B):
        if seed_view:  # rows of C consecutive numbers of the flat [C, *S] memory
            flat = x[b].flatten()
            tokens = torch.stack([flat[i * C : (i + 1) * C] for i in range(flat.numel() // C)])
        else:  # one token per position
            tokens = x[b].reshape(C, -1).T
        t = _lin(module.q_linear, tokens.T).T  # [N, C]
        a = _softmax(t @ _w(module.linear_1).T, dim=0)  # over tokens
        a = a / (1e-9 + a.sum(dim=1, keepdim=True))  # over memory units
        res = t + _lin(module.proj, _lin(module.linear_2, a.T)).T
        out[b] = res.flatten().reshape(x.shape[1:]) if seed_view else res.T.reshape(x.shape[1:])
    return out


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("seed_view", [False, True])
def test_ea_matches_formula(seed_view, spatial_dims):
    module = _randomise(ExternalAttention(spatial_dims, 8, memory_units=16, seed_view=seed_view).double())
    x = _input(2, 8, *SHAPE[spatial_dims])
    torch.testing.assert_close(module(x), _ea_reference(module, x, seed_view), **TOL)


def test_ea_memory_units_and_tied_init():
    module = ExternalAttention(2, 8)
    assert module.linear_1.out_features == 128 and module.linear_1.bias is None
    assert torch.equal(module.linear_2.weight, module.linear_1.weight.T)
    assert module.linear_2.weight.data_ptr() != module.linear_1.weight.data_ptr()  # separate parameters


# --------------------------------------------------------------------------------------------------- HamNet
def _ham_reference(module: Hamburger, x: torch.Tensor, steps: int, detach_iterations: bool) -> torch.Tensor:
    B, C = x.shape[:2]
    S, R = module.heads, module.rank
    D = C // S
    gen = torch.Generator().manual_seed(module.seed)
    bases0 = torch.rand((B * S, D, R), generator=gen, dtype=x.dtype)
    conv_out, gn = module.ham_out[0], module.ham_out[1]
    outs = []
    for b in range(B):
        xb = x[b].reshape(C, -1)
        enjoy = _relu(_lin(module.ham_in, xb))  # [C, N]
        recon = []
        for s in range(S):
            X = enjoy[s * D : (s + 1) * D]
            Xi = X.detach() if detach_iterations else X
            Bs = bases0[b * S + s]
            Bs = Bs / Bs.norm(dim=0, keepdim=True)  # unit-L2 columns
            Ct = _softmax(Xi.T @ Bs, dim=1)  # [N, R]
            for _ in range(steps):
                Ct = Ct * (Xi.T @ Bs) / (Ct @ (Bs.T @ Bs) + 1e-6)
                Bs = Bs * (Xi @ Ct) / (Bs @ (Ct.T @ Ct) + 1e-6)
            Ct = Ct * (X.T @ Bs) / (Ct @ (Bs.T @ Bs) + 1e-6)
            recon.append(Bs @ Ct.T)
        z = _w(conv_out) @ torch.cat(recon)  # [C, N], no bias
        G = gn.num_groups
        zg = z.reshape(G, -1)
        zg = (zg - zg.mean(dim=1, keepdim=True)) / torch.sqrt(zg.var(dim=1, unbiased=False, keepdim=True) + gn.eps)
        z = zg.reshape(C, -1) * gn.weight[:, None] + gn.bias[:, None]
        outs.append(_relu(xb + z).reshape(x.shape[1:]))
    return torch.stack(outs)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("heads", [1, 2])
def test_ham_matches_formula_with_6_train_and_7_eval_steps(heads, spatial_dims):
    module = _randomise(Hamburger(spatial_dims, 16, rank=5, heads=heads, norm_groups=4, seed=11).double(), scale=0.4)
    assert module.ham_out[1].num_groups == 4 and module.train_steps == 6 and module.eval_steps == 7
    x = _input(2, 16, *SHAPE[spatial_dims])
    y_train = module.train()(x)
    torch.testing.assert_close(y_train, _ham_reference(module, x, 6, True), **TOL)
    y_eval = module.eval()(x)
    torch.testing.assert_close(y_eval, _ham_reference(module, x, 7, True), **TOL)
    assert not torch.allclose(y_train, y_eval)


@pytest.mark.parametrize("one_step_grad", [True, False])
def test_ham_gradient_modes(one_step_grad):
    """One-step gradient = autograd with the iterations on detached X; False = autograd through every step."""
    module = _randomise(Hamburger(2, 8, rank=4, norm_groups=2, seed=5, one_step_grad=one_step_grad).double(), scale=0.4)
    x1 = _input(2, 8, 5, 6).requires_grad_()
    x2 = x1.detach().clone().requires_grad_()
    weights = _input(2, 8, 5, 6, seed=9)
    (module(x1) * weights).sum().backward()
    (_ham_reference(module, x2, 6, detach_iterations=one_step_grad) * weights).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, **TOL)
    x3 = x1.detach().clone().requires_grad_()  # the other mode gives a different gradient
    (_ham_reference(module, x3, 6, detach_iterations=not one_step_grad) * weights).sum().backward()
    assert not torch.allclose(x1.grad, x3.grad)


def test_ham_defaults_and_random_bases():
    module = Hamburger(2, 64)
    assert module.rank == 64 and module.heads == 1 and module.ham_out[1].num_groups == 32 and module.one_step_grad
    x = torch.rand(1, 64, 4, 4)
    module.eval()
    assert not torch.equal(module(x), module(x))  # fresh random bases per call, as in HamNet
    module.seed = 0
    assert torch.equal(module(x), module(x))


# ------------------------------------------------------------------------------------------------------ DSM
def _dsm_reference(module: DSM, x: torch.Tensor) -> torch.Tensor:
    B, C = x.shape[:2]
    ln, up = module.conv_up[0], module.conv_up[2]
    sk = module.sk
    series, parallel, descriptors = [], [], []
    for b in range(B):
        xb = x[b].reshape(C, -1)
        v = _lin(module.conv_v_right, xb)  # [c', N]
        q = _softmax(_lin(module.conv_q_right, xb), dim=1)  # [1, N]
        z = (v @ q.T)[:, 0]
        z = (z - z.mean()) / torch.sqrt(((z - z.mean()) ** 2).mean() + ln.eps)
        z = z * ln.weight.detach().flatten() + ln.bias.detach().flatten()
        ch = _sigmoid(_lin(up, _relu(z)[:, None]))[:, 0]  # [C]
        g = _softmax(_lin(module.conv_q_left, xb).max(dim=1).values, dim=0)  # [c']
        sp = _sigmoid(g @ _lin(module.conv_v_left, xb))  # [N]
        Q, P = ch[:, None] * sp[None, :], ch[:, None] + sp[None, :]
        series.append(Q)
        parallel.append(P)
        descriptors.append(_w(sk.fc_reduce) @ (Q + P).mean(dim=1))
    r = torch.stack(descriptors)  # [B, c']
    bn = sk.bn
    if module.training:
        mean, var = r.mean(dim=0), r.var(dim=0, unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    r = _relu((r - mean) / torch.sqrt(var + bn.eps) * bn.weight.detach() + bn.bias.detach())
    out = torch.empty_like(x)
    for b in range(B):
        xb = x[b].reshape(C, -1)
        alpha = _softmax((_w(sk.fc_select) @ r[b]).reshape(2, C), dim=0)
        A = alpha[0][:, None] * series[b] + alpha[1][:, None] * parallel[b]
        M = _softmax(A, dim=1)
        V = _relu(_lin(module.resConv[0], xb))
        out[b] = (xb + (M * V).sum(dim=1, keepdim=True)).reshape(x.shape[1:])
    return out


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("ratio,bias", [(2, True), (4, False)])
@pytest.mark.parametrize("training", [False, True])
def test_dsm_matches_formula(training, ratio, bias, spatial_dims):
    module = _randomise(DSM(spatial_dims, 16, ratio=ratio, bias=bias).double())
    assert module.inner == 16 // ratio and (module.conv_v_right.bias is not None) == bias
    assert module.sk.fc_reduce.bias is None and module.sk.fc_select.bias is None
    with torch.no_grad():
        module.sk.bn.running_mean.copy_(torch.linspace(-0.5, 0.5, module.inner))
        module.sk.bn.running_var.copy_(torch.linspace(0.5, 2.0, module.inner))
    module.train(training)
    x = _input(3, 16, *SHAPE[spatial_dims])
    expected = _dsm_reference(module, x)  # before the forward updates the running statistics
    torch.testing.assert_close(module(x), expected, **TOL)


# ---------------------------------------------------------------------------------------------- TorchScript
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", NAMES)
def test_torchscript_matches_eager(name, spatial_dims):
    torch.manual_seed(0)
    module = _randomise(create_attention(name, spatial_dims, 8, **SMALL_KW.get(name, {})), scale=0.3).eval()
    scripted = torch.jit.script(module)
    x = torch.rand(2, 8, *SHAPE[spatial_dims])
    torch.testing.assert_close(scripted(x), module(x), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------- ONNX
@pytest.mark.parametrize("name", [n for n in NAMES if n != "ham"])
def test_onnx_export_runs_in_the_reference_evaluator(name, tmp_path):
    """2D export (legacy exporter, opset 17) evaluated by onnx's reference runtime. ``ham`` exports only without a
    seed (random bases become a RandomUniformLike node), so its output cannot be compared; see the notes."""
    pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    torch.manual_seed(0)
    module = _randomise(create_attention(name, 2, 8, **SMALL_KW.get(name, {})), scale=0.3).eval()
    x = torch.rand(2, 8, 5, 6)
    path = str(tmp_path / f"{name}.onnx")
    torch.onnx.export(module, (x,), path, dynamo=False, opset_version=17, input_names=["x"])
    y = ReferenceEvaluator(path).run(None, {"x": x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(y), module(x), rtol=1e-4, atol=1e-5)
