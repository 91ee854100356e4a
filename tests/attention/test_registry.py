"""Every registered attention module builds by name and runs forward/backward in 2D and 3D."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from medattn_networks.attention import create_attention, get_attention_class, list_attention, register_attention

CHANNELS = 6
SIZE = 8  # voxels per side
SLICE_NAMES = ("sa", "pam", "sca", "csa")


def _kwargs(name: str) -> dict:
    if name == "dsm":
        # DSM's SK fusion normalises one value per channel with BatchNorm (as the paper), which cannot train at
        # batch 1; its LayerNorm option has the same parameters
        return {"sk_norm": "layer"}
    return {"depth": SIZE} if name in SLICE_NAMES else {}


def test_registry_lists_the_paper_modules():
    names = list_attention()
    assert names == sorted(names)
    assert {"none", "cse", "pe", "ag", "sa", "sca", "csa", "pam"} <= set(names)
    assert {"se", "se_mmseg", "eca", "cbam", "fca", "enc", "splat", "gc", "stn"} <= set(names)
    assert {"psa_p", "psa_s", "danet", "danet_position", "danet_channel", "cca", "ea", "ham", "dsm"} <= set(names)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", list_attention())
def test_forward_backward_keeps_shape(name, spatial_dims, batch):
    torch.manual_seed(0)
    module = create_attention(name, spatial_dims, CHANNELS, **_kwargs(name))
    assert isinstance(module, get_attention_class(name))
    x = torch.randn(batch, CHANNELS, *([SIZE] * spatial_dims), requires_grad=True)
    if name in ("ag", "masag"):  # gated: the attention gate takes a coarser gate, MASAG a decoder map of x's size
        gate_size = SIZE // 2 if name == "ag" else SIZE
        gate = torch.randn(batch, CHANNELS, *([gate_size] * spatial_dims), requires_grad=True)
        y = module(x, gate)
    else:
        y = module(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    if name in ("ag", "masag"):
        assert gate.grad is not None and gate.grad.abs().sum() > 0
    if name != "none":
        assert x.grad.abs().sum() > 0
    for pname, p in module.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"


def test_none_is_identity():
    x = torch.randn(2, 3, 4, 4, 4)
    assert torch.equal(create_attention("none", 3, 3)(x), x)


def test_names_are_case_insensitive():
    assert isinstance(create_attention("CSE", 3, 8), get_attention_class("cse"))


def test_unknown_name_raises_key_error_listing_known_names():
    with pytest.raises(KeyError) as info:
        create_attention("no-such-attention", 3, 8)
    message = str(info.value)
    assert "no-such-attention" in message
    for name in list_attention():
        assert name in message


@pytest.mark.parametrize("spatial_dims", [0, 1, 4])
def test_bad_spatial_dims_raises(spatial_dims):
    with pytest.raises(ValueError, match="spatial_dims"):
        create_attention("cse", spatial_dims, 8)


def test_non_positive_channels_raises():
    with pytest.raises(ValueError, match="channels"):
        create_attention("cse", 3, 0)


def test_duplicate_registration_of_another_class_raises():
    with pytest.raises(ValueError, match="already registered"):

        @register_attention("cse")
        class _Other(nn.Module):
            pass
