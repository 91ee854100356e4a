"""nnFormer at the FLARE configuration, with MAM ISTS in its encoder (papers.md §000).

Full-size nets (96³, embed 192) are only built on the meta device, for counts, keys and window geometry; everything
that runs uses a small config (img 16×32×32, patch [2,4,4] → grid 8³, embed 12, three stages, window 2).
Numerical equality with the released nnFormer(-MAM) is checked outside the suite (see the module's report).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "attention"))
from attention_testing import count_params, randomise  # noqa: E402

from medattn_networks.attention.memory import MemoryWindowAttention
from medattn_networks.blocks.transformer import set_fused_attention
from medattn_networks.blocks.windows import gather_relative_bias, relative_position_index
from medattn_networks.nets.nnformer import (
    KVWindowAttention,
    NNFormer,
    NNFormerKVBlock,
    NNFormerPatchExpand,
    NNFormerPatchMerging,
    convert_released_nnformer_state_dict,
)

FULL = 149_265_629
SMALL = dict(
    in_channels=1,
    out_channels=3,
    img_size=(16, 32, 32),
    embed_dim=12,
    depths=(2, 2, 2),
    num_heads=(1, 2, 4),
    patch_size=(2, 4, 4),
    window_size=(2, 2, 2),
    drop_path_rate=0.0,
)
SIZE = (1, 1, 16, 32, 32)


def _small(memory: str, seed: int = 0, **kw) -> NNFormer:
    torch.manual_seed(seed)
    return NNFormer(memory=memory, **{**SMALL, **kw})


def _randomise(net, seed: int = 0, scale: float = 0.2):
    """Spread the weights so the memory visibly changes the output."""
    return randomise(net, seed, scale)


def _input(seed: int = 1, size=SIZE):
    return torch.randn(size, generator=torch.Generator().manual_seed(seed))


def _tables(stage) -> list[int]:
    return [b.attn.relative_position_bias_table.shape[0] for b in stage.blocks]


@pytest.fixture(scope="module")
def full_nets():
    with torch.device("meta"):
        return {m: NNFormer(memory=m) for m in ("none", "ists")}


def test_full_size_counts_keys_and_relative_tables(full_nets):
    none, ists = full_nets["none"], full_nets["ists"]
    assert count_params(none) == FULL and count_params(ists) == FULL  # MAM adds no parameter
    assert list(none.state_dict()) == list(ists.state_dict())
    for net in (none, ists):
        assert [_tables(s) for s in net.model_down.layers] == [[343] * 2, [343] * 2, [1331] * 2, [125] * 2]
        # decoder.layers[k] works at encoder level k; run deep (k=2, window 8 → 6) to fine (k=0, window 4)
        assert [_tables(s) for s in net.decoder.layers] == [[343] * 2, [343] * 2, [1331] * 2]
        assert [s.blocks[0].attn.num_heads for s in net.decoder.layers] == [6, 12, 24]
        assert [len(s.blocks) for s in net.decoder.layers] == [2, 2, 2]
        assert all(isinstance(s.blocks[0], NNFormerKVBlock) for s in net.decoder.layers)
        assert net.final.out_channels == 5 and net.final.kernel_size == (2, 4, 4)
    kv_keys = {k for k in none.state_dict() if ".blocks.0.attn." in k and k.startswith("decoder.")}
    assert {k.rsplit(".", 2)[-2] + "." + k.rsplit(".", 1)[-1] for k in kv_keys} >= {"kv.weight", "kv.bias", "proj.weight"}
    assert not any(k.startswith("decoder.") and ".blocks.0.attn.qkv" in k for k in none.state_dict())
    encoder_attn = [b.attn for s in ists.model_down.layers for b in s.blocks]
    assert len(encoder_attn) == 8 and all(isinstance(a, MemoryWindowAttention) for a in encoder_attn)
    assert not any(isinstance(m, MemoryWindowAttention) for m in none.modules())
    assert not any(isinstance(m, MemoryWindowAttention) for m in ists.decoder.modules())


def test_full_size_effective_windows_and_shifts(full_nets):
    net = full_nets["ists"]
    stages = net.model_down.layers
    assert [s.window_size for s in stages] == [(4,) * 3, (4,) * 3, (6,) * 3, (3,) * 3]
    assert [s.shift_size for s in stages] == [(2,) * 3, (2,) * 3, (0,) * 3, (0,) * 3]
    assert [[b.shift_size for b in s.blocks] for s in stages] == [
        [(0,) * 3, (2,) * 3],
        [(0,) * 3, (2,) * 3],
        [(0,) * 3, (0,) * 3],  # 12×6×6 tokens: window 8 → 6, no shift
        [(0,) * 3, (0,) * 3],  # 6×3×3 tokens: window 4 → 3, no shift
    ]
    dec = net.decoder.layers
    assert [s.window_size for s in dec] == [(4,) * 3, (4,) * 3, (6,) * 3]
    assert [[b.shift_size for b in s.blocks] for s in dec] == [[(0,) * 3, (2,) * 3], [(0,) * 3, (2,) * 3], [(0,) * 3] * 2]


def test_nnformer_relative_index_is_used_and_non_bijective():
    net = _small("none")
    attn = net.model_down.layers[0].blocks[0].attn
    torch.testing.assert_close(attn.relative_position_index, relative_position_index((2, 2, 2), "nnformer"))
    idx = relative_position_index((4, 4, 4), "nnformer")
    offsets = 7**3
    assert idx.max() < offsets and idx.unique().numel() < offsets  # distinct offsets share entries


def test_small_state_dict_round_trip_and_memory_changes_the_output():
    sam = _randomise(_small("none"), scale=0.5).eval()  # weights large enough for non-uniform window softmax
    ists = _small("ists", seed=3).eval()
    ists.load_state_dict(sam.state_dict(), strict=True)
    back = _small("none", seed=7)
    back.load_state_dict(ists.state_dict(), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), sam.state_dict().values()))
    x = _input()
    with torch.no_grad():
        y_sam, y_ists = sam(x), ists(x)
        assert y_sam.shape == (1, 3, 16, 32, 32)
        assert (y_sam - y_ists).abs().max() > 0.05  # the memory changes the output
        other = _small("none", seed=5).eval()
        other.load_state_dict(sam.state_dict(), strict=True)
        torch.testing.assert_close(other(x), y_sam, rtol=0, atol=0)  # same weights, same net


@pytest.mark.parametrize("memory", ["none", "ists"])
def test_fused_and_plain_attention_paths_agree(memory):
    net = _randomise(_small(memory)).eval()
    x = _input()
    with torch.no_grad():
        y_fused = net(x)
        y_plain = set_fused_attention(net, False)(x)
    assert y_fused.abs().max() > 0.1
    torch.testing.assert_close(y_plain, y_fused, rtol=0, atol=1e-5)


def test_ists_memory_resets_at_each_stage_and_decoder_is_plain():
    net = _randomise(_small("ists")).eval()
    seen = {}
    for i, stage in enumerate(net.model_down.layers):
        for j, block in enumerate(stage.blocks):

            def pre(module, args, key=(i, j)):
                seen[key] = None if len(args) < 2 or args[1] is None else args[1].shape

            block.register_forward_pre_hook(pre)
    with torch.no_grad():
        net(_input())
    assert [seen[(i, 0)] for i in range(3)] == [None] * 3  # ISTS: memory reset at every stage start
    assert all(seen[(i, 1)] is not None for i in range(3))  # and handed on inside the stage
    assert seen[(0, 1)] == (1 * 64, 1, 8, 12)  # (B·nW, heads, N, head_dim) of the 8³ grid in 2³ windows


def test_every_parameter_receives_a_gradient():
    for memory in ("none", "ists"):
        net = _small(memory).train()
        weights = torch.randn(1, 3, 16, 32, 32, generator=torch.Generator().manual_seed(3))
        (net(_input(2)) * weights).sum().backward()
        dead = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
        assert dead == [], memory


def test_merging_is_gelu_layernorm_conv_k3_s2_p1():
    torch.manual_seed(0)
    merge = _randomise(NNFormerPatchMerging(4), seed=5, scale=0.5)
    x = torch.randn(2, 5, 6, 7, 4)
    h = F.layer_norm(F.gelu(x), (4,), merge.norm.weight, merge.norm.bias, eps=1e-5)
    expected = F.conv3d(h.permute(0, 4, 1, 2, 3), merge.reduction.weight, merge.reduction.bias, stride=2, padding=1)
    assert merge.reduction.weight.shape == (8, 4, 3, 3, 3)
    y = merge(x)
    assert y.shape == (2, 3, 3, 4, 8)
    torch.testing.assert_close(y, expected.permute(0, 2, 3, 4, 1))


def test_expanding_is_layernorm_transposed_conv_k2_s2():
    torch.manual_seed(0)
    expand = _randomise(NNFormerPatchExpand(8), seed=6, scale=0.5)
    x = torch.randn(1, 2, 3, 2, 8)
    h = F.layer_norm(x, (8,), expand.norm.weight, expand.norm.bias, eps=1e-5).permute(0, 4, 1, 2, 3)
    expected = F.conv_transpose3d(h, expand.up.weight, expand.up.bias, stride=2).permute(0, 2, 3, 4, 1)
    torch.testing.assert_close(expand(x), expected)
    assert expected.shape == (1, 4, 6, 4, 4)


def test_kv_block_queries_the_upsampled_path_and_attends_to_the_skip():
    """Against a written-out reference in float64 on one 2×2×2 window: q = norm1(x_up) (no projection),
    k, v = kv(norm1(skip)), nnFormer relative bias, residual on x_up + skip."""
    torch.manual_seed(0)
    block = _randomise(NNFormerKVBlock(3, 4, 2, window_size=2, relative_bias="nnformer"), seed=4, scale=0.5).double()
    x_up, skip = torch.randn(2, 1, 2, 2, 2, 4, dtype=torch.float64).unbind(0)
    n1 = lambda t: F.layer_norm(t, (4,), block.norm1.weight, block.norm1.bias)  # noqa: E731
    q = n1(x_up).reshape(8, 2, 2).transpose(0, 1)  # (heads, N, hd)
    k, v = (block.attn.kv(n1(skip)).reshape(8, 2, 2, 2).permute(1, 2, 0, 3)).unbind(0)
    bias = gather_relative_bias(block.attn.relative_position_bias_table, relative_position_index((2, 2, 2), "nnformer"))
    attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(2) + bias, -1) @ v
    h = x_up + skip + block.attn.proj(attn.transpose(0, 1).reshape(1, 2, 2, 2, 4))
    expected = h + block.mlp(F.layer_norm(h, (4,), block.norm2.weight, block.norm2.bias))
    assert not hasattr(block.attn, "qkv") and isinstance(block.attn, KVWindowAttention)
    for fused in (True, False):
        block.attn.fused = fused
        torch.testing.assert_close(block(x_up, skip), expected)
    with pytest.raises(ValueError):
        NNFormerKVBlock(3, 4, 2, window_size=2, shift_size=1)


def test_odd_input_size_gives_output_of_the_input_size():
    net = _small("ists").eval()
    with torch.no_grad():
        y = net(_input(size=(1, 1, 15, 30, 29)))
    assert y.shape == (1, 3, 15, 30, 29) and torch.isfinite(y).all()


def test_converter_renames_released_keys():
    net = _small("none")
    ours = net.state_dict()
    released = {}
    for key, value in ours.items():
        key = key.replace(".upsample.", ".Upsample.")
        released[("final.0.up." + key[len("final."):]) if key.startswith("final.") else key] = value
    assert set(released) != set(ours)
    assert convert_released_nnformer_state_dict(released).keys() == ours.keys()
    net.load_state_dict(convert_released_nnformer_state_dict(released), strict=True)
    with pytest.raises(KeyError):
        convert_released_nnformer_state_dict({"final.1.up.weight": torch.zeros(1)})
    with pytest.raises(ValueError):
        NNFormer(memory="sts")
