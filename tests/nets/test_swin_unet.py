"""Swin-Unet with memory attention (papers.md §000): counts, key compatibility, ISTS/STS wiring, gradients, shapes.

Full-size nets (img 224, embed 96, depths 2,2,6,2) are only instantiated; everything that runs uses a small
config (embed 12, depths (2, 2), heads (1, 2), window 4, img 32).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "attention"))
from attention_testing import count_params, randomise  # noqa: E402

from medattn_networks.attention.memory import MemoryMerge, MemoryWindowAttention, grid_to_memory, memory_to_grid
from medattn_networks.blocks.transformer import WindowAttention, set_fused_attention
from medattn_networks.nets import SwinUnet

FULL_NONE = 41_380_836
FULL_STS = 41_769_252
SMALL = dict(in_channels=3, out_channels=3, img_size=32, embed_dim=12, depths=(2, 2), num_heads=(1, 2), window_size=4, drop_path_rate=0.0)


def _small(memory: str, seed: int = 0, **kw) -> SwinUnet:
    torch.manual_seed(seed)
    return SwinUnet(memory=memory, **{**SMALL, **kw})


def _randomise(net, seed: int = 0, scale: float = 0.2):
    """Spread the weights so the memory visibly changes the output."""
    return randomise(net, seed, scale)


@pytest.fixture(scope="module")
def full_nets():
    """The three full-size nets, built without running the weight initialisers (counts and keys only).

    Parameters stay uninitialised (torch.empty), which keeps three 41M-parameter builds cheap on shared CPUs."""
    import torch.nn as nn

    import medattn_networks.blocks.windows as windows
    import medattn_networks.nets.swin_unet as swin_unet

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(swin_unet, "init_transformer_weights", lambda module: None)
        mp.setattr(windows, "trunc_normal_", lambda tensor, **kw: tensor)
        for cls in (nn.Linear, nn.Conv2d, nn.LayerNorm):
            mp.setattr(cls, "reset_parameters", lambda self: None)
        return {m: SwinUnet(memory=m) for m in ("none", "ists", "sts")}


def test_full_size_parameter_counts(full_nets):
    assert count_params(full_nets["none"]) == FULL_NONE
    assert count_params(full_nets["ists"]) == FULL_NONE  # MAM adds no parameter
    adapters = sum(c * 2 * c + 2 * c for c in (96, 192, 384))  # 1×1 conv C→2C with bias, one per stage change
    assert adapters == 388_416
    assert count_params(full_nets["sts"]) == FULL_NONE + adapters == FULL_STS
    assert count_params(full_nets["sts"].memory_merge) == adapters
    assert all(m.mode == "pool" for m in full_nets["sts"].memory_merge)


def test_full_size_keys_and_wiring(full_nets):
    none, ists, sts = (full_nets[m].state_dict() for m in ("none", "ists", "sts"))
    assert list(none) == list(ists)
    extra = set(sts) - set(ists)
    assert set(ists) <= set(sts) and extra and all(k.startswith("memory_merge.") for k in extra)
    assert not any("memory_expand" in k.lower() for k in sts)  # the released, unused MemoryExpand is not built
    net = full_nets["ists"]
    assert [s.window_size for s in net.layers] == [(7, 7)] * 4
    assert [s.shift_size for s in net.layers] == [(3, 3)] * 3 + [(0, 0)]  # 7×7 bottleneck: no shift (min rule)
    assert [len(s.blocks) for s in net.layers] == [2, 2, 6, 2]
    assert all(isinstance(b.attn, MemoryWindowAttention) for s in net.layers for b in s.blocks)
    decoder = [b.attn for s in net.layers_up[1:] for b in s.blocks]
    assert len(decoder) == 10 and all(type(a) is WindowAttention for a in decoder)  # decoder stays plain
    assert not any(isinstance(m, MemoryWindowAttention) for m in full_nets["none"].modules())


def test_full_size_sam_state_dict_loads_strictly_into_ists(full_nets):
    none, ists = full_nets["none"], full_nets["ists"]
    ists.load_state_dict(none.state_dict(), strict=True)  # the way back is checked on the small net
    key = "layers.2.blocks.3.attn.relative_position_index"  # a buffer, so it is initialised
    assert torch.equal(ists.state_dict()[key], none.state_dict()[key])
    with pytest.raises(RuntimeError):
        none.load_state_dict(full_nets["sts"].state_dict(), strict=True)  # the adapters are unexpected keys


def test_small_ists_with_sam_weights_differs_only_by_the_memory():
    sam = _randomise(_small("none")).eval()
    ists = _small("ists").eval()
    ists.load_state_dict(sam.state_dict(), strict=True)
    assert count_params(ists) == count_params(sam)
    back = _small("none", seed=9)
    back.load_state_dict(ists.state_dict(), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), sam.state_dict().values()))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y_sam, y_ists = sam(x), ists(x)
        assert not torch.allclose(y_sam, y_ists, atol=1e-4)  # the memory changes the output
        # switch the memory off in every MAM module: the ISTS net is then exactly the SAM net
        for m in ists.modules():
            if isinstance(m, MemoryWindowAttention):
                m.accumulate_query = WindowAttention.accumulate_query.__get__(m)
        torch.testing.assert_close(ists(x), y_sam, rtol=0, atol=0)
        # and a "none" net built separately with the same weights is the same SAM net
        other = _small("none", seed=5).eval()
        other.load_state_dict(sam.state_dict(), strict=True)
        torch.testing.assert_close(other(x), y_sam, rtol=0, atol=0)


def _record_memories(net: SwinUnet):
    """Memory received by every block (encoder and decoder), keyed (part, stage, block)."""
    seen = {}
    stages = [("enc", i, s) for i, s in enumerate(net.layers)] + [
        ("dec", i, s) for i, s in enumerate(net.layers_up) if hasattr(s, "blocks")
    ]
    for part, i, stage in stages:
        for j, block in enumerate(stage.blocks):

            def pre(module, args, key=(part, i, j)):
                seen[key] = None if len(args) < 2 or args[1] is None else args[1].detach().clone()

            block.register_forward_pre_hook(pre)
    return seen


@pytest.mark.parametrize("memory", ["none", "ists", "sts"])
def test_memory_transmission_between_stages(memory):
    net = _small(memory).eval()
    seen = _record_memories(net)
    outputs = {}

    def keep_stage0_memory(module, args, out):
        outputs["stage0"] = out[1]  # returns None: the output is left alone

    net.layers[0].register_forward_hook(keep_stage0_memory)
    with torch.no_grad():
        net(torch.randn(2, 3, 32, 32))
    assert seen[("enc", 0, 0)] is None  # M_0 = 0
    assert (seen[("enc", 0, 1)] is not None) == (memory != "none")  # in-stage transmission
    assert (seen[("enc", 1, 1)] is not None) == (memory != "none")
    assert all(v is None for k, v in seen.items() if k[0] == "dec")  # decoder plain
    first_of_stage_2 = seen[("enc", 1, 0)]
    if memory in ("none", "ists"):
        assert first_of_stage_2 is None  # ISTS resets the memory at each stage start
        return
    assert first_of_stage_2 is not None  # STS carries it through the adapter
    stage0_memory = outputs["stage0"]
    grid = (8, 8)
    expected = grid_to_memory(net.memory_merge[0](memory_to_grid(stage0_memory, (4, 4), grid, grid)), (4, 4), 2)
    assert first_of_stage_2.shape == (2 * 1, 2, 16, 12)  # (B·nW, heads, N, hd) of the 4×4 stage
    torch.testing.assert_close(first_of_stage_2, expected)


@pytest.mark.parametrize("memory, merge", [("none", "pool"), ("ists", "pool"), ("sts", "pool"), ("sts", "conv")])
def test_every_parameter_receives_a_gradient(memory, merge):
    net = _small(memory, memory_merge=merge).train()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    weights = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    (net(x) * weights).sum().backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert dead == []
    if memory == "sts":
        assert all(isinstance(m, MemoryMerge) and m.mode == merge for m in net.memory_merge)


def test_one_channel_input_is_repeated():
    net = _small("ists").eval()
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(x.repeat(1, 3, 1, 1)), rtol=0, atol=0)


@pytest.mark.parametrize("memory, size", [("none", (61, 45)), ("ists", (61, 45)), ("sts", (57, 43))])
def test_odd_input_sizes_give_outputs_of_the_input_size(memory, size):
    net = _small(memory).eval()
    with torch.no_grad():
        y = net(torch.randn(1, 3, *size))
    assert y.shape == (1, 3, *size) and torch.isfinite(y).all()


@pytest.mark.parametrize("memory", ["ists", "sts"])
def test_3d_small_config_runs(memory):
    torch.manual_seed(0)
    net = SwinUnet(3, 1, 2, img_size=16, embed_dim=6, depths=(2, 2), num_heads=(1, 2), window_size=2, memory=memory)
    assert net.layers[0].window_size == (2, 2, 2) and net.layers[0].shift_size == (1, 1, 1)
    x = torch.randn(1, 1, 15, 16, 13)
    y = net(x)
    assert y.shape == (1, 2, 15, 16, 13)
    y.sum().backward()
    assert net.layers[0].blocks[1].attn.qkv.weight.grad is not None


@pytest.mark.parametrize("memory", ["none", "sts"])
def test_fused_and_plain_paths_agree_on_the_net(memory):
    net = _randomise(_small(memory), scale=0.1).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        fused = net(x)
        set_fused_attention(net, False)
        assert not any(m.fused for m in net.modules() if isinstance(m, WindowAttention))
        plain = net(x)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    built_plain = _small(memory, fused_attention=False)
    assert not any(m.fused for m in built_plain.modules() if isinstance(m, WindowAttention))


def test_argument_checks():
    with pytest.raises(ValueError, match="depths"):
        SwinUnet(depths=(2, 2), num_heads=(1,))
    with pytest.raises(ValueError, match="none, ists, sts"):
        SwinUnet(memory="bogus", **{k: v for k, v in SMALL.items()})
