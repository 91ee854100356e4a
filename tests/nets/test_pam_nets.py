"""UNet3D and VNet of AttentionBased-MIS: reference parameter counts, tiny forward/backward, argument checks, TorchScript.

Reference counts come from the released code (github:Puzzled-Hui/AttentionBased-MIS @ 72800d3), built at
in 1, out 11, channels (16, 32, 64, 128), depth 144, default ratios; see /tmp/pamref/REPORT.md §1.
Full-size models are only instantiated here, never run.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from medattn_networks.nets import UNET_ATTENTIONS, VNET_ATTENTIONS, UNet3D, VNet

ATTENTIONS = ("none", "cse", "pe", "ag", "sca", "csa", "pam")
REFERENCE = dict(spatial_dims=3, in_channels=1, out_channels=11, channels=(16, 32, 64, 128), depth=144)

UNET_REFERENCE_PARAMS = {
    "none": 1_022_259,
    "cse": 1_029_439,
    "pe": 1_044_499,
    "ag": 1_054_966,
    "sca": 1_189_343,
    "csa": 1_189_343,
    "pam": 1_189_343,
}
VNET_REFERENCE_PARAMS = {
    "none": 6_883_755,
    "cse": 6_890_985,
    "sca": 7_060_215,
    "csa": 7_060_215,
    "pam": 7_060_215,
}

TINY_CHANNELS = (4, 8, 16, 32)
# UNet3D pools 3 times: 16³ leaves 2³ at the bottom. VNet goes down 4 times to a bottleneck conv followed by an
# instance norm, which needs more than one voxel in training mode, so its tiny input is 32×16×16 (→ 2×1×1).
UNET_SHAPE = (16, 16, 16)
VNET_SHAPE = (32, 16, 16)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _unet(attention: str, spatial_dims: int = 3, **kwargs) -> UNet3D:
    return UNet3D(spatial_dims, 1, 3, TINY_CHANNELS, attention=attention, depth=UNET_SHAPE[0], **kwargs)


def _vnet(attention: str, in_channels: int = 1) -> VNet:
    return VNet(3, in_channels, 3, TINY_CHANNELS, attention=attention, depth=VNET_SHAPE[0])


def test_attention_lists_cover_the_paper_variants():
    assert set(UNET_ATTENTIONS) == set(ATTENTIONS)
    assert set(VNET_ATTENTIONS) == set(ATTENTIONS)


# ------------------------------------------------------------------------------------------ parameter counts
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_unet3d_parameter_count_matches_reference_code(attention):
    assert _count(UNet3D(attention=attention, **REFERENCE)) == UNET_REFERENCE_PARAMS[attention]


@pytest.mark.parametrize("attention", sorted(VNET_REFERENCE_PARAMS))
def test_vnet_parameter_count_matches_reference_code(attention):
    assert _count(VNet(attention=attention, **REFERENCE)) == VNET_REFERENCE_PARAMS[attention]


@pytest.mark.parametrize("attention", ["pe", "ag"])
def test_vnet_pe_and_ag_add_parameters(attention):
    # no reference counterpart in the released code; they must add parameters over the plain VNet
    assert _count(VNet(attention=attention, **REFERENCE)) > VNET_REFERENCE_PARAMS["none"]


def test_unet3d_pam_with_other_io_channels_matches_reference_shift():
    # REPORT.md: UNet3D with in=4, out=3 has 1,022,771 parameters
    config = dict(REFERENCE, in_channels=4, out_channels=3)
    assert _count(UNet3D(attention="none", **config)) == 1_022_771


def test_unet3d_upsampling_mode_follows_reference():
    modes = {a: UNet3D(attention=a, **REFERENCE).decoders[0].mode for a in ATTENTIONS}
    assert modes == {a: ("trilinear" if a in ("pe", "pam") else "nearest") for a in ATTENTIONS}


# ----------------------------------------------------------------------------------- tiny forward / backward
def _forward_backward(model: nn.Module, x: torch.Tensor, out_channels: int = 3) -> None:
    model.train()
    x.requires_grad_(True)
    y = model(x)
    assert y.shape == (x.shape[0], out_channels, *x.shape[2:])
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_unet3d_forward_backward_3d(attention):
    torch.manual_seed(0)
    _forward_backward(_unet(attention), torch.randn(2, 1, *UNET_SHAPE))


@pytest.mark.parametrize("attention", ["none", "cse", "pe", "ag"])
def test_unet3d_forward_backward_2d(attention):
    torch.manual_seed(0)
    model = UNet3D(2, 1, 3, TINY_CHANNELS, attention=attention)
    _forward_backward(model, torch.randn(2, 1, 16, 16))


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_vnet_forward_backward_3d(attention):
    torch.manual_seed(0)
    _forward_backward(_vnet(attention), torch.randn(2, 1, *VNET_SHAPE))


@pytest.mark.parametrize("attention", ["none", "pam"])
def test_vnet_accepts_four_input_channels(attention):
    # the released VNet added the 4-channel input to the 8-channel residual by broadcasting and crashed here
    torch.manual_seed(0)
    model = _vnet(attention, in_channels=4)
    assert isinstance(model.encoders[0].projection, nn.Conv3d)
    _forward_backward(model, torch.randn(1, 4, *VNET_SHAPE))


def test_vnet_single_channel_input_broadcasts_without_projection():
    assert isinstance(_vnet("none").encoders[0].projection, nn.Identity)


def test_unet3d_with_four_input_channels():
    model = UNet3D(3, 4, 3, TINY_CHANNELS, attention="pam", depth=UNET_SHAPE[0])
    _forward_backward(model, torch.randn(1, 4, *UNET_SHAPE))


def test_slice_attention_nets_reject_inputs_of_another_depth():
    with pytest.raises(ValueError, match="slices"):
        _unet("pam")(torch.randn(1, 1, 8, 16, 16))
    with pytest.raises(ValueError, match="slices"):
        _vnet("sca")(torch.randn(1, 1, 16, 16, 16))


# ------------------------------------------------------------------------------------------ argument checks
@pytest.mark.parametrize("net", [UNet3D, VNet])
def test_invalid_attention_name_raises(net):
    with pytest.raises(ValueError, match="attention"):
        net(3, 1, 2, TINY_CHANNELS, attention="transformer", depth=16)


@pytest.mark.parametrize("attention", ["pam", "sca", "csa"])
@pytest.mark.parametrize("net", [UNet3D, VNet])
def test_slice_attention_without_depth_raises(net, attention):
    with pytest.raises(ValueError, match="depth"):
        net(3, 1, 2, TINY_CHANNELS, attention=attention)


@pytest.mark.parametrize("net, depth", [(UNet3D, 12), (VNet, 24)])
def test_depth_not_divisible_by_the_downsampling_raises(net, depth):
    with pytest.raises(ValueError, match="depth"):
        net(3, 1, 2, TINY_CHANNELS, attention="pam", depth=depth)


@pytest.mark.parametrize("net", [UNet3D, VNet])
def test_wrong_number_of_levels_raises(net):
    with pytest.raises(ValueError, match="channels"):
        net(3, 1, 2, (4, 8, 16), attention="none")


# ---------------------------------------------------------------------------------------------- TorchScript
# every network scripts; the scripted module must give the eager output
ALL_NETS = [(net, a) for net in ("UNet3D", "VNet") for a in ATTENTIONS]


def _tiny(net: str, attention: str) -> tuple[nn.Module, torch.Tensor]:
    if net == "UNet3D":
        return _unet(attention), torch.randn(1, 1, *UNET_SHAPE)
    return _vnet(attention), torch.randn(1, 1, *VNET_SHAPE)


def test_vnet_ag_applies_every_gate():
    # VNet.forward once picked gates with isinstance(); TorchScript then applied only the first of the 4 gates
    model, x = _tiny("VNet", "ag")
    calls = []
    for gate in model.gates:
        gate.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[2:]))
    model(x)
    assert calls == [torch.Size([s // 2**k for s in VNET_SHAPE]) for k in (3, 2, 1, 0)]


@pytest.mark.parametrize("net, attention", ALL_NETS)
def test_torchscript_matches_eager(net, attention):
    torch.manual_seed(0)
    model, x = _tiny(net, attention)
    model.eval()
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), rtol=1e-5, atol=1e-5)
