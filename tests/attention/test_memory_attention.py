"""Memory attention (MAM, papers.md §000): M_t = M_{t-1} + Q_t (unscaled, M_0 = 0), softmax(M_t·Kᵀ·s + B + mask)·V.

* MAM without memory is SAM with the same weights; with a memory its query is memory + q, checked against an
  expression written here from the qkv weights, and the memory handed on is memory + q;
* across a SwinStage of depth 3 the memory reaching block t is q_1 + … + q_{t-1} in window layout, never rolled
  with the shift (the shifted blocks included), padded tokens included;
* SAM and MAM stages share keys and load into each other strictly; registry names, ``attention_for``;
* the memory layout helpers and the STS adapter (MemoryMerge) against written-out expressions.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attention_testing import count_params, float64_input, randomise
from medattn_networks.attention.memory import (
    MEMORY_MODES,
    MemoryMerge,
    MemoryWindowAttention,
    attention_for,
    grid_to_memory,
    memory_to_grid,
)
from medattn_networks.attention.registry import create_attention, get_attention_class
from medattn_networks.blocks.transformer import SwinBlock, SwinStage, WindowAttention
from medattn_networks.blocks.windows import cyclic_shift, shift_attention_mask, window_partition

TOL = dict(rtol=1e-9, atol=1e-10)


def _pair(dims: int = 2, seed: int = 0):
    """A SAM and a MAM module with identical (randomised, float64) weights."""
    window = (4, 3) if dims == 2 else (2, 3, 2)
    sam = randomise(WindowAttention(dims, 8, 2, window), seed=seed, scale=0.3).double().eval()
    mam = MemoryWindowAttention(dims, 8, 2, window).double().eval()
    mam.load_state_dict(sam.state_dict(), strict=True)
    return sam, mam, window


def _tokens_and_mask(dims: int):
    grid, shift = ((8, 9), (2, 1)) if dims == 2 else ((4, 6, 4), (1, 1, 1))
    window = (4, 3) if dims == 2 else (2, 3, 2)
    x = float64_input(2, *grid, 8, seed=3)
    return window_partition(cyclic_shift(x, shift), window), shift_attention_mask(grid, window, shift).double()


def _softmax(v: torch.Tensor) -> torch.Tensor:
    e = torch.exp(v - v.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def _written_out(module: WindowAttention, x: torch.Tensor, mask: torch.Tensor, memory: torch.Tensor | None):
    """softmax((memory + q)·kᵀ·scale + B + mask)·v, proj; q, k, v from the qkv weight rows; returns (out, M)."""
    bw, n, c = x.shape
    heads, hd = module.num_heads, c // module.num_heads
    w, b = module.qkv.weight, module.qkv.bias

    def split(rows):  # (BW, N, C) → (BW, heads, N, hd)
        return (x @ w[rows].T + b[rows]).reshape(bw, n, heads, hd).transpose(1, 2)

    q, k, v = split(slice(0, c)), split(slice(c, 2 * c)), split(slice(2 * c, 3 * c))
    m = q if memory is None else memory + q
    index = module.relative_position_index
    bias = module.relative_position_bias_table[index.reshape(-1)].reshape(n, n, heads).permute(2, 0, 1)
    nw = mask.shape[0]
    full_mask = mask.repeat(bw // nw, 1, 1).unsqueeze(1)  # window k of the batch uses mask k % nW
    out = _softmax(m @ k.transpose(-2, -1) * hd**-0.5 + bias + full_mask) @ v
    out = out.transpose(1, 2).reshape(bw, n, c) @ module.proj.weight.T + module.proj.bias
    return out, m


@pytest.mark.parametrize("fused", [True, False], ids=["sdpa", "plain"])
@pytest.mark.parametrize("dims", [2, 3])
def test_mam_without_memory_is_sam(dims, fused):
    sam, mam, window = _pair(dims)
    sam.fused = mam.fused = fused
    tokens, mask = _tokens_and_mask(dims)
    out_sam, mem_sam = sam.forward_tokens(tokens, mask)
    out_mam, mem_mam = mam.forward_tokens(tokens, mask)
    assert mem_sam is None
    torch.testing.assert_close(out_mam, out_sam, **TOL)
    x = float64_input(2, 8, *([5] * dims), seed=4)  # map needing padding
    torch.testing.assert_close(mam(x), sam(x), **TOL)


@pytest.mark.parametrize("fused", [True, False], ids=["sdpa", "plain"])
@pytest.mark.parametrize("dims", [2, 3])
def test_mam_query_is_memory_plus_q(dims, fused):
    sam, mam, window = _pair(dims)
    mam.fused = fused
    tokens, mask = _tokens_and_mask(dims)
    bw, n, _ = tokens.shape
    memory = float64_input(bw, 2, n, 4, seed=9)
    out, handed = mam.forward_tokens(tokens, mask, memory)
    expected, m = _written_out(mam, tokens, mask, memory)
    torch.testing.assert_close(out, expected, **TOL)
    torch.testing.assert_close(handed, m, **TOL)  # M = memory + q, not scaled
    # no memory: the handed-on memory is q itself (M_1 = 0 + Q_1)
    out0, first = mam.forward_tokens(tokens, mask)
    expected0, q = _written_out(mam, tokens, mask, None)
    torch.testing.assert_close(out0, expected0, **TOL)
    torch.testing.assert_close(first, q, **TOL)
    torch.testing.assert_close(handed - memory, first, **TOL)
    assert not torch.allclose(out, out0)
    # SAM ignores a memory it is given
    torch.testing.assert_close(sam.forward_tokens(tokens, mask, memory)[0], out0, **TOL)
    with pytest.raises(ValueError, match="memory"):
        mam.forward_tokens(tokens, mask, memory[:, :, :-1])


def _record_stage(stage: SwinStage):
    """Wrap each block's attention to record the memory it receives, and hook its qkv to record q."""
    received, queries = [], []
    for block in stage.blocks:
        attn = block.attn
        original = attn.forward_tokens

        def wrapper(x, mask=None, memory=None, _original=original):
            received.append(None if memory is None else memory.clone())
            return _original(x, mask, memory)

        attn.forward_tokens = wrapper

        def hook(module, args, output, _attn=attn):
            bw, n, _ = output.shape
            c = _attn.dim
            q = output[..., :c].reshape(bw, n, _attn.num_heads, c // _attn.num_heads).transpose(1, 2)
            queries.append(q.detach().clone())

        attn.qkv.register_forward_hook(hook)
    return received, queries


def test_stage_memory_is_unrolled_cumulative_query_sum():
    grid = (7, 9)  # padded to 8×9 for window 4×3 (… and shift 2×1 in blocks 2)
    stage = SwinStage(2, 8, 3, 2, (4, 3), grid=grid, attention="mam", mlp_ratio=2.0)
    stage = randomise(stage, scale=0.3).double().eval()
    assert stage.shift_size == (2, 1)
    assert [b.shift_size for b in stage.blocks] == [(0, 0), (2, 1), (0, 0)]
    received, queries = _record_stage(stage)
    x = float64_input(2, *grid, 8, seed=5)
    out, memory = stage(x)
    assert len(received) == len(queries) == 3
    assert received[0] is None
    torch.testing.assert_close(received[1], queries[0], **TOL)
    torch.testing.assert_close(received[2], queries[0] + queries[1], **TOL)
    torch.testing.assert_close(memory, queries[0] + queries[1] + queries[2], **TOL)
    # padded tokens carry memory too: the query of a zero (padded) token is the qkv bias, not 0
    q_grid = memory_to_grid(queries[0], (4, 3), (8, 9), (8, 9))
    assert q_grid[:, 7].abs().sum() > 0
    # the memory is not rolled with the shift: rolling it into the shifted frame would give another tensor
    rolled = grid_to_memory(cyclic_shift(q_grid, (2, 1)), (4, 3), 2)
    assert not torch.allclose(received[1], rolled)
    # and the stage equals its blocks run by hand with the memory threaded through
    h, m = x, None
    for block in stage.blocks:
        h, m = SwinBlock.forward(block, h, m)
    torch.testing.assert_close(out, h, **TOL)


def test_stage_memory_in_3d():
    stage = randomise(SwinStage(3, 4, 2, 1, 2, grid=(3, 4, 5), attention="mam", mlp_ratio=1.0), scale=0.3).double()
    received, queries = _record_stage(stage)
    _, memory = stage(float64_input(1, 3, 4, 5, 4, seed=6))
    assert received[0] is None
    torch.testing.assert_close(received[1], queries[0], **TOL)
    torch.testing.assert_close(memory, queries[0] + queries[1], **TOL)
    assert memory.shape == (2 * 2 * 3, 1, 8, 4)  # (B·nW, heads, N, hd) of the padded 4×4×6 grid


def test_sam_and_mam_stage_state_dicts_load_strictly_both_ways():
    def build(attention):
        torch.manual_seed(0)
        return SwinStage(2, 8, 2, 2, 4, grid=(8, 8), attention=attention)

    sam, mam = build("window"), build("mam")
    assert all(isinstance(b.attn, MemoryWindowAttention) for b in mam.blocks)
    assert not any(isinstance(b.attn, MemoryWindowAttention) for b in sam.blocks)
    assert count_params(sam) == count_params(mam)
    assert list(sam.state_dict()) == list(mam.state_dict())
    randomise(sam, seed=1)
    mam.load_state_dict(sam.state_dict(), strict=True)
    for key, value in sam.state_dict().items():
        assert torch.equal(mam.state_dict()[key], value)
    randomise(mam, seed=2)
    sam.load_state_dict(mam.state_dict(), strict=True)
    assert torch.equal(sam.blocks[1].attn.qkv.weight, mam.blocks[1].attn.qkv.weight)


@pytest.mark.parametrize("dims", [2, 3])
def test_registry_builds_window_and_mam_and_runs_on_maps(dims):
    assert get_attention_class("mam") is MemoryWindowAttention
    assert get_attention_class("window") is WindowAttention
    torch.manual_seed(0)
    mam = create_attention("mam", dims, 6, num_heads=2, window_size=3)
    sam = create_attention("window", dims, 6, num_heads=2, window_size=3)
    assert isinstance(mam, MemoryWindowAttention) and type(sam) is WindowAttention
    assert mam.window_size == (3,) * dims
    x = torch.randn(2, 6, *([5, 4, 7][:dims]), requires_grad=True)
    for module in (mam, sam):
        y = module(x)
        assert y.shape == x.shape and torch.isfinite(y).all()
        y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    sam.load_state_dict(mam.state_dict(), strict=True)
    torch.testing.assert_close(sam(x), mam(x))


def test_attention_for():
    assert MEMORY_MODES == ("none", "ists", "sts")
    assert attention_for("none") == "window"
    assert attention_for("ists") == "mam"
    assert attention_for("sts") == "mam"
    with pytest.raises(ValueError, match="none, ists, sts"):
        attention_for("bogus")


@pytest.mark.parametrize("grid, window", [((7, 9), (4, 3)), ((5, 3, 6), (2, 2, 4))])
def test_memory_layout_round_trips(grid, window):
    heads = 2
    tokens = float64_input(2, *grid, 6, seed=8)
    memory = grid_to_memory(tokens, window, heads)
    padded = [-(-g // w) * w for g, w in zip(grid, window)]
    n_windows = math.prod(p // w for p, w in zip(padded, window))
    assert memory.shape == (2 * n_windows, heads, math.prod(window), 3)
    assert torch.equal(memory_to_grid(memory, window, padded, grid), tokens)
    # the other way round it is the identity on real tokens, zero on the padding
    other = float64_input(*memory.shape, seed=10)
    back = grid_to_memory(memory_to_grid(other, window, padded, grid), window, heads)
    full = memory_to_grid(other, window, padded, padded)
    keep = torch.zeros(padded, dtype=torch.bool)
    keep[tuple(slice(0, g) for g in grid)] = True
    expected = grid_to_memory(full * keep[None, ..., None], window, heads)
    assert torch.equal(back, expected)
    assert not torch.equal(back, other)  # padding was actually dropped


def test_memory_layout_matches_the_block_queries():
    """The memory of an unshifted MAM block is norm1(x)·W_q + b_q of each token, in grid_to_memory's layout."""
    block = randomise(SwinBlock(2, 6, 2, (4, 3), 0, attention="mam"), scale=0.3).double()
    x = float64_input(1, 7, 9, 6, seed=11)
    _, memory = block(x)
    w, b = block.attn.qkv.weight[:6], block.attn.qkv.bias[:6]
    q = block.norm1(x) @ w.T + b
    torch.testing.assert_close(memory_to_grid(memory, (4, 3), (8, 9), (7, 9)), q, **TOL)
    q_padded = F.pad(block.norm1(x), (0, 0, 0, 0, 0, 1)) @ w.T + b
    torch.testing.assert_close(memory, grid_to_memory(q_padded, (4, 3), 2), **TOL)


def test_memory_merge_pool_is_avgpool_then_1x1_conv():
    merge = randomise(MemoryMerge(2, 4, 8, "pool")).double()
    tokens = float64_input(2, 7, 9, 4, seed=12)  # odd grid: padded to 8×10
    out = merge(tokens)
    assert out.shape == (2, 4, 5, 8)
    x = F.pad(tokens.movedim(-1, 1), (0, 1, 0, 1))
    expected = F.conv2d(F.avg_pool2d(x, 2, 2), merge.proj.weight, merge.proj.bias).movedim(1, -1)
    torch.testing.assert_close(out, expected, **TOL)
    assert count_params(merge) == 4 * 8 + 8
    assert MemoryMerge(2, 4).proj.out_channels == 8  # default 2·dim


def test_memory_merge_conv_mode_and_3d():
    merge = randomise(MemoryMerge(2, 4, 6, "conv")).double()
    tokens = float64_input(1, 5, 6, 4, seed=13)
    out = merge(tokens)
    assert out.shape == (1, 3, 3, 6)
    x = F.layer_norm(F.pad(tokens, (0, 0, 0, 0, 0, 1)), (4,), merge.norm.weight, merge.norm.bias, merge.norm.eps)
    expected = F.conv2d(x.movedim(-1, 1), merge.proj.weight, merge.proj.bias, stride=2).movedim(1, -1)
    torch.testing.assert_close(out, expected, **TOL)
    assert MemoryMerge(3, 4, mode="pool")(torch.randn(1, 3, 4, 5, 4)).shape == (1, 2, 2, 3, 8)
    assert MemoryMerge(3, 4, mode="conv")(torch.randn(1, 3, 4, 5, 4)).shape == (1, 2, 2, 3, 8)
    with pytest.raises(ValueError, match="pool, conv"):
        MemoryMerge(2, 4, mode="max")
