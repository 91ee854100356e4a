"""SwinUNETR-MAM (papers.md §000): MONAI's SwinUNETR with MAM-ISTS in its 8 swinViT blocks.

Full-size nets (in 1, out 5, feature_size 48) are only built on the meta device. Everything that runs uses
feature_size 12: whole nets at 64³ / 64² (MONAI's InstanceNorm needs more than one voxel at the 1/32 bottleneck,
so 32³ cannot run the full net), the swinViT alone at 32³ / 32².
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import SwinUNETR
from monai.networks.nets.swin_unetr import BasicLayer, SwinTransformerBlock, WindowAttention

from medattn_networks.nets import SwinUNETRMAM
from medattn_networks.nets.swin_unetr_mam import MAMBasicLayer, MAMSwinTransformerBlock, MAMWindowAttention

FULL_PARAMETERS = 62_186_855  # MONAI SwinUNETR, in 1, out 5, feature_size 48 (papers.md §000)
TINY = dict(in_channels=1, out_channels=3, feature_size=12)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _on_meta(build):
    """Build on the meta device (no memory, no initialisation). MONAI's SwinTransformer calls ``.item()`` on a
    ``torch.linspace`` (the drop-path rates), so that one stays on the CPU."""
    linspace = torch.linspace
    with pytest.MonkeyPatch.context() as mp, torch.device("meta"):
        mp.setattr(torch, "linspace", lambda *a, **k: linspace(*a, **{**k, "device": "cpu"}))
        return build()


def _seeded(cls, seed: int, **kw):
    torch.manual_seed(seed)
    return cls(**{**TINY, **kw}).eval()


@pytest.fixture(scope="module")
def tiny3d():
    """MONAI's tiny SwinUNETR, an input and MONAI's output (3D, 64³)."""
    torch.set_num_threads(1)
    monai_net = _seeded(SwinUNETR, 0)
    x = torch.randn(1, 1, 64, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = monai_net(x)
    return monai_net, x, y


@pytest.fixture(scope="module")
def tiny3d_ists(tiny3d):
    """SwinUNETRMAM(ists) with MONAI's weights and its plain-path output."""
    monai_net, x, _ = tiny3d
    net = _seeded(SwinUNETRMAM, 1, memory="ists")
    net.load_state_dict(monai_net.state_dict(), strict=True)
    with torch.no_grad():
        y = net(x)
    return net, y


# 1 ------------------------------------------------------------------------------------------------------------
def test_full_size_parameter_count_and_keys_equal_monai():
    monai_net = _on_meta(lambda: SwinUNETR(in_channels=1, out_channels=5, feature_size=48))
    mam = _on_meta(lambda: SwinUNETRMAM(in_channels=1, out_channels=5, feature_size=48, memory="ists"))
    assert _count(monai_net) == _count(mam) == FULL_PARAMETERS
    assert {k: v.shape for k, v in monai_net.state_dict().items()} == {k: v.shape for k, v in mam.state_dict().items()}
    assert list(monai_net.state_dict()) == list(mam.state_dict())
    stages = mam.stages()
    assert [type(s) for s in stages] == [MAMBasicLayer] * 4
    assert [len(s.blocks) for s in stages] == [2] * 4
    blocks = [b for s in stages for b in s.blocks]
    assert all(type(b) is MAMSwinTransformerBlock and type(b.attn) is MAMWindowAttention for b in blocks)
    # "none" is MONAI's modules, untouched
    none = _on_meta(lambda: SwinUNETRMAM(in_channels=1, out_channels=5, feature_size=48, memory="none"))
    assert [type(s) for s in none.stages()] == [BasicLayer] * 4
    none_blocks = [b for s in none.stages() for b in s.blocks]
    assert all(type(b) is SwinTransformerBlock and type(b.attn) is WindowAttention for b in none_blocks)


@pytest.mark.parametrize("kw", [dict(use_v2=True), dict(downsample="mergingv2", spatial_dims=2, patch_norm=True)])
def test_other_monai_options_keep_the_keys(kw):
    monai_net = _on_meta(lambda: SwinUNETR(**TINY, **kw))
    mam = _on_meta(lambda: SwinUNETRMAM(**TINY, memory="ists", **kw))
    assert {k: v.shape for k, v in monai_net.state_dict().items()} == {k: v.shape for k, v in mam.state_dict().items()}


def test_memory_modes_are_checked():
    with pytest.raises(ValueError, match="unknown memory"):
        SwinUNETRMAM(**TINY, memory="recurrent")
    with pytest.raises(ValueError, match="adapters"):
        SwinUNETRMAM(**TINY, memory="sts")


# 2 ------------------------------------------------------------------------------------------------------------
def test_tiny_state_dict_both_ways_none_is_monai_and_ists_differs(tiny3d, tiny3d_ists):
    monai_net, x, y_monai = tiny3d
    ists, y_ists = tiny3d_ists
    # the same seed builds the same weights (MAM only re-classes MONAI's modules)
    same_seed = _seeded(SwinUNETRMAM, 0, memory="ists")
    assert all(torch.equal(a, b) for a, b in zip(same_seed.state_dict().values(), monai_net.state_dict().values()))
    # and back: SwinUNETRMAM's state dict loads strictly into a MONAI SwinUNETR, unchanged
    back = _seeded(SwinUNETR, 2)
    back.load_state_dict(ists.state_dict(), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), monai_net.state_dict().values()))
    none = _seeded(SwinUNETRMAM, 3, memory="none")
    none.load_state_dict(monai_net.state_dict(), strict=True)
    with torch.no_grad():
        y_none = none(x)
    assert torch.equal(y_none, y_monai)  # bit-identical
    assert y_ists.shape == y_monai.shape == (1, 3, 64, 64, 64)
    diff = (y_ists - y_monai).abs().max().item()
    print(f"max |none - MONAI| = {(y_none - y_monai).abs().max().item():.3g}, max |ists - none| = {diff:.3g}")
    assert diff > 1e-3  # the memory changes the output


# 3 ------------------------------------------------------------------------------------------------------------
def _split(attn: WindowAttention, x: torch.Tensor):
    """q, k, v (B·nW, heads, N, hd) of window tokens x (B·nW, N, C), from the attention's qkv weights."""
    bw, n, c = x.shape
    qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias).view(bw, n, 3, attn.num_heads, c // attn.num_heads)
    return qkv.permute(2, 0, 3, 1, 4).unbind(0)


def _window_attention(attn: WindowAttention, q, k, v, mask):
    """proj(softmax(q·scale·kᵀ + B + mask)·v), written out."""
    bw, heads, n, _ = q.shape
    index = attn.relative_position_index[:n, :n].reshape(-1)
    bias = attn.relative_position_bias_table[index].view(n, n, heads).permute(2, 0, 1)
    logits = (q * attn.scale) @ k.transpose(-2, -1) + bias
    if mask is not None:
        nw = mask.shape[0]
        logits = (logits.view(bw // nw, nw, heads, n, n) + mask[None, :, None]).view(bw, heads, n, n)
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(bw, n, heads * q.shape[-1])
    return F.linear(out, attn.proj.weight, attn.proj.bias)


@pytest.mark.parametrize("spatial_dims, depths", [(3, (2, 2, 2, 2)), (2, (4, 2, 2, 2))])
def test_memory_is_the_unscaled_query_sum_within_a_stage_reset_at_stage_start(spatial_dims, depths):
    torch.set_num_threads(1)
    net = _seeded(SwinUNETRMAM, 4, memory="ists", spatial_dims=spatial_dims, depths=depths)
    seen, received, handles = {}, {}, []
    for s, stage in enumerate(net.stages()):
        for i, block in enumerate(stage.blocks):
            attn = block.attn

            def qkv_hook(module, args, out, key=(s, i)):
                seen[key] = {"x": args[0]}

            def attn_hook(module, args, kwargs, out, key=(s, i)):
                seen[key].update(mask=kwargs.get("mask"), out=out)

            def recorder(q, memory, key=(s, i), attn=attn):
                received[key] = memory
                return MAMWindowAttention.accumulate_query(attn, q, memory)

            handles.append(attn.qkv.register_forward_hook(qkv_hook))
            handles.append(attn.register_forward_hook(attn_hook, with_kwargs=True))
            attn.accumulate_query = recorder  # records the memory each block receives
    x = torch.randn(1, 1, *([32] * spatial_dims), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        net.swinViT(x, net.normalize)
    for h in handles:
        h.remove()

    assert sorted(received) == [(s, i) for s in range(4) for i in range(depths[s])]
    # at 32: token grids 16, 8, 4, 2 → windows 7 (padded to 21 / 14; odd blocks shifted), 4 and 2 (no shift)
    assert [seen[(s, 1)]["mask"] is not None for s in range(4)] == [True, True, False, False]
    with torch.no_grad():
        for s, stage in enumerate(net.stages()):
            assert received[(s, 0)] is None  # ISTS: no memory at the stage start
            memory = None
            for i, block in enumerate(stage.blocks):
                attn, record = block.attn, seen[(s, i)]
                if i:  # the unscaled running query sum, in window layout (never rolled with the shift)
                    torch.testing.assert_close(received[(s, i)], memory, rtol=1e-5, atol=1e-5)
                q, k, v = _split(attn, record["x"])
                memory = q if memory is None else memory + q
                expected = _window_attention(attn, memory, k, v, record["mask"])
                torch.testing.assert_close(record["out"], expected, rtol=1e-5, atol=1e-5)
                if i:
                    plain = _window_attention(attn, q, k, v, record["mask"])
                    assert (record["out"] - plain).abs().max() > 1e-4  # the check can tell MAM from SAM


# 4 ------------------------------------------------------------------------------------------------------------
def test_flash_attention_path_equals_plain_path_with_memory(tiny3d, tiny3d_ists):
    monai_net, x, _ = tiny3d
    _, y_plain = tiny3d_ists
    flash = _seeded(SwinUNETRMAM, 6, memory="ists", use_flash_attention=True)
    flash.load_state_dict(monai_net.state_dict(), strict=True)
    assert all(b.attn.use_flash_attention for s in flash.stages() for b in s.blocks)
    calls = []
    with torch.no_grad(), pytest.MonkeyPatch.context() as mp:
        sdpa = F.scaled_dot_product_attention
        mp.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or sdpa(*a, **k))
        y_flash = flash(x)
    assert len(calls) == 8  # every swinViT block took MONAI's SDPA path
    torch.testing.assert_close(y_flash, y_plain, rtol=1e-5, atol=1e-5)


# 5 ------------------------------------------------------------------------------------------------------------
def test_every_parameter_receives_a_gradient():
    torch.set_num_threads(1)
    net = _seeded(SwinUNETRMAM, 7, memory="ists").train()
    x = torch.randn(1, 1, 64, 64, 64, generator=torch.Generator().manual_seed(8))
    net(x).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_gradient_checkpointing_threads_the_same_memory():
    torch.set_num_threads(1)
    plain = _seeded(SwinUNETRMAM, 9, memory="ists").train()
    ckpt = _seeded(SwinUNETRMAM, 10, memory="ists", use_checkpoint=True).train()
    ckpt.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(11))
    outs = []
    for net in (plain, ckpt):
        out = net.swinViT(x, net.normalize)
        sum((o * torch.linspace(-1, 1, o.shape[1]).view(1, -1, 1, 1, 1)).square().mean() for o in out).backward()
        outs.append(out)
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for (name, p), q in zip(plain.swinViT.named_parameters(), ckpt.swinViT.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)


# 6 ------------------------------------------------------------------------------------------------------------
def test_2d_none_is_monai_and_ists_runs():
    torch.set_num_threads(1)
    monai_net = _seeded(SwinUNETR, 12, spatial_dims=2)
    none = _seeded(SwinUNETRMAM, 13, memory="none", spatial_dims=2)
    ists = _seeded(SwinUNETRMAM, 14, memory="ists", spatial_dims=2)
    none.load_state_dict(monai_net.state_dict(), strict=True)
    ists.load_state_dict(monai_net.state_dict(), strict=True)
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(15))
    with torch.no_grad():
        y_monai, y_none, y_ists = monai_net(x), none(x), ists(x)
    assert torch.equal(y_none, y_monai)
    assert y_ists.shape == (2, 3, 64, 64)
    assert (y_ists - y_monai).abs().max() > 1e-3


@pytest.mark.parametrize("flash", [False, True], ids=["plain", "sdpa"])
def test_none_is_monai_and_ists_differs_with_flash_attention_on_and_off(flash):
    monai_net = _seeded(SwinUNETR, 0, use_flash_attention=flash)
    x = torch.randn(1, 1, 64, 64, 64, generator=torch.Generator().manual_seed(2))
    outputs = {}
    for memory in ("none", "ists"):
        net = _seeded(SwinUNETRMAM, 3, memory=memory, use_flash_attention=flash)
        net.load_state_dict(monai_net.state_dict(), strict=True)
        with torch.no_grad():
            outputs[memory] = net(x)
    with torch.no_grad():
        reference = monai_net(x)
    assert torch.equal(outputs["none"], reference)
    assert (outputs["ists"] - reference).abs().max() > 1e-3
