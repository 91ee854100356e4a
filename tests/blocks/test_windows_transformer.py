"""Window geometry and the Swin transformer toolkit (medattn_networks.blocks.windows / .transformer).

* partition / reverse / pad / shift round trips in 2D and 3D with unequal windows per axis;
* the shift mask equals an independent region-labelling construction; relative-position indices ("swin" is a
  bijection, "nnformer" is nnFormer's non-injective formula);
* a SwinBlock equals a naive reference written here (explicit per-window, per-head Python loops, own mask, own
  relative-bias index, own softmax) in float64, with shift, relative bias, padding and the MAM memory;
* fused (SDPA) and plain attention paths agree; patch embed / merge / expand equal written-out expressions.

Tiny shapes only (2 shared CPU cores).
"""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import einops
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "attention"))
from attention_testing import randomise  # noqa: E402

from medattn_networks.blocks.transformer import (  # noqa: E402
    MlpRelativePositionBias,
    PatchEmbed,
    PatchExpand,
    PatchMerging,
    SwinBlock,
    SwinStage,
    WindowAttention,
    set_fused_attention,
)
from medattn_networks.blocks.windows import (
    MASK_VALUE,
    RelativePositionBias,
    as_tuple,
    cyclic_shift,
    fit_window,
    pad_to_windows,
    relative_position_index,
    shift_attention_mask,
    window_partition,
    window_reverse,
)

F64 = dict(rtol=1e-5, atol=1e-5)


def _randomise(module: nn.Module, seed: int = 0, scale: float = 0.3) -> nn.Module:
    return randomise(module, seed, scale)


def _randn(*shape: int, seed: int = 1, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _crop(x: torch.Tensor, grid) -> torch.Tensor:
    return x[(slice(None), *(slice(0, g) for g in grid))]


# ----------------------------------------------------------------------------------------------- geometry


def test_as_tuple_and_fit_window():
    assert as_tuple(3, 3) == (3, 3, 3)
    assert as_tuple((2, 3), 2) == (2, 3)
    with pytest.raises(ValueError, match="window"):
        as_tuple((2, 3), 3, "window")
    # per-axis: an axis no longer than its window takes the grid as window and no shift
    assert fit_window((5, 12), (7, 7), (3, 3), "per_axis") == ((5, 7), (0, 3))
    # min: the smallest axis ≤ window → every axis uses it, nothing shifts (Swin-Unet)
    assert fit_window((7, 14), (7, 7), (3, 3), "min") == ((7, 7), (0, 0))
    assert fit_window((8, 14), (7, 7), (3, 3), "min") == ((7, 7), (3, 3))
    with pytest.raises(ValueError):
        fit_window((8, 8), (7, 7), (3, 3), "bogus")


@pytest.mark.parametrize(
    "grid, window", [((8, 9), (4, 3)), ((4, 6, 6), (2, 3, 1)), ((6, 4, 10), (3, 2, 5))]
)
def test_partition_reverse_round_trip_and_order(grid, window):
    x = _randn(2, *grid, 5)
    windows = window_partition(x, window)
    n_windows = math.prod(g // w for g, w in zip(grid, window))
    assert windows.shape == (2 * n_windows, math.prod(window), 5)
    assert torch.equal(window_reverse(windows, window, grid), x)
    # windows in row-major order of the grid, tokens row-major inside each window (checked by explicit indexing)
    starts = list(itertools.product(*[range(0, g, w) for g, w in zip(grid, window)]))
    offsets = list(itertools.product(*[range(w) for w in window]))
    for b in range(2):
        for k, start in enumerate(starts):
            for t, off in enumerate(offsets):
                pos = tuple(s + o for s, o in zip(start, off))
                assert torch.equal(windows[b * n_windows + k, t], x[(b, *pos)])


def test_partition_matches_einops_2d():
    x = _randn(2, 8, 9, 3)
    expected = einops.rearrange(x, "b (h p1) (w p2) c -> (b h w) (p1 p2) c", p1=4, p2=3)
    assert torch.equal(window_partition(x, (4, 3)), expected)


@pytest.mark.parametrize("grid, window", [((9, 11), (4, 3)), ((5, 7, 6), (3, 3, 3)), ((8, 6), (4, 3))])
def test_pad_to_windows_pads_only_at_the_end(grid, window):
    x = _randn(2, *grid, 4)
    padded, pads = pad_to_windows(x, window)
    expect_pads = tuple((-g) % w for g, w in zip(grid, window))
    assert pads == expect_pads
    assert padded.shape == (2, *[g + p for g, p in zip(grid, expect_pads)], 4)
    assert all(s % w == 0 for s, w in zip(padded.shape[1:-1], window))
    assert torch.equal(_crop(padded, grid), x)
    rest = padded.clone()
    rest[(slice(None), *(slice(0, g) for g in grid))] = 0
    assert torch.count_nonzero(rest) == 0
    if not any(expect_pads):
        assert padded is x


def test_cyclic_shift_rolls_by_minus_shift_and_undoes():
    x = _randn(1, 6, 5, 2)
    y = cyclic_shift(x, (2, 1))
    assert torch.equal(y[:, 0, 0], x[:, 2, 1])  # y[i] = x[i + s]
    assert torch.equal(cyclic_shift(y, (2, 1), reverse=True), x)
    assert cyclic_shift(x, (0, 0)) is x


def _region_ids(padded, window, shift) -> torch.Tensor:
    """Independent labelling: region of coordinate i on an axis (size g, window w, shift s) is
    0 if i < g-w, 1 if i < g-s, else 2; combined base 3 over the axes (on the already-rolled grid)."""
    ids = torch.zeros(padded, dtype=torch.long)
    for pos in itertools.product(*[range(g) for g in padded]):
        rid = 0
        for i, g, w, s in zip(pos, padded, window, shift):
            rid = rid * 3 + (0 if i < g - w else 1 if i < g - s else 2)
        ids[pos] = rid
    return ids


def _independent_mask(padded, window, shift) -> torch.Tensor:
    ids = _region_ids(padded, window, shift)
    starts = list(itertools.product(*[range(0, g, w) for g, w in zip(padded, window)]))
    offsets = list(itertools.product(*[range(w) for w in window]))
    n = len(offsets)
    mask = torch.zeros(len(starts), n, n)
    for k, start in enumerate(starts):
        labels = [ids[tuple(s + o for s, o in zip(start, off))].item() for off in offsets]
        for i in range(n):
            for j in range(n):
                mask[k, i, j] = 0.0 if labels[i] == labels[j] else -100.0
    return mask


@pytest.mark.parametrize(
    "padded, window, shift",
    [((12, 12), (4, 3), (2, 1)), ((8, 6), (4, 3), (2, 0)), ((6, 9, 6), (3, 3, 3), (1, 1, 1)), ((4, 6, 6), (2, 3, 3), (1, 0, 1))],
)
def test_shift_attention_mask_equals_region_construction(padded, window, shift):
    mask = shift_attention_mask(padded, window, shift)
    expected = _independent_mask(padded, window, shift)
    assert MASK_VALUE == -100.0
    assert mask.shape == expected.shape
    assert torch.equal(mask, expected)
    assert (mask != 0).any()  # the shift actually masks something


def test_shift_attention_mask_none_without_shift():
    assert shift_attention_mask((8, 8), (4, 4), (0, 0)) is None


def _offsets(window):
    return list(itertools.product(*[range(w) for w in window]))


@pytest.mark.parametrize("window", [(4, 3), (2, 3, 4), (3, 3, 3)])
def test_swin_relative_index_is_a_bijection(window):
    index = relative_position_index(window, "swin")
    coords = _offsets(window)
    n = len(coords)
    assert index.shape == (n, n)
    seen: dict[tuple, int] = {}
    mult = [math.prod(2 * w - 1 for w in window[a + 1 :]) for a in range(len(window))]
    for i in range(n):
        for j in range(n):
            off = tuple(a - b for a, b in zip(coords[i], coords[j]))
            value = int(index[i, j])
            assert value == sum((d + w - 1) * m for d, w, m in zip(off, window, mult))
            assert seen.setdefault(off, value) == value  # one offset → one entry
    assert len(set(seen.values())) == len(seen)  # distinct offsets → distinct entries
    assert sorted(seen.values()) == list(range(math.prod(2 * w - 1 for w in window)))  # onto the whole table


@pytest.mark.parametrize("w, entries", [(4, 343), (6, 1331), (3, 125)])
def test_nnformer_relative_index_formula_and_collisions(w, entries):
    window = (w, w, w)
    index = relative_position_index(window, "nnformer")
    coords = _offsets(window)
    n = len(coords)
    by_entry: dict[int, set] = {}
    for i in range(n):
        for j in range(n):
            r = [a - b + w - 1 for a, b in zip(coords[i], coords[j])]
            expected = r[0] * (3 * w - 1) + r[1] * (2 * w - 1) + r[2]
            assert int(index[i, j]) == expected
            by_entry.setdefault(expected, set()).add(tuple(r))
    assert any(len(offs) > 1 for offs in by_entry.values())  # not injective: distinct offsets share an entry
    assert len(by_entry) < (2 * w - 1) ** 3
    module = WindowAttention(3, 4, 2, window, relative_bias="nnformer")
    assert module.relative_position_bias_table.shape == (entries, 2)
    assert int(module.relative_position_index.max()) < entries
    assert torch.equal(module.relative_position_index, index)
    with pytest.raises(ValueError):
        relative_position_index((4, 4), "nnformer")


def test_relative_position_bias_module_gathers_the_table():
    rpb = _randomise(RelativePositionBias((2, 3), 3))
    bias = rpb()
    index = relative_position_index((2, 3))
    assert bias.shape == (3, 6, 6)
    for h in range(3):
        for i in range(6):
            for j in range(6):
                assert bias[h, i, j] == rpb.relative_position_bias_table[index[i, j], h]


@pytest.mark.parametrize("log_spaced", [False, True])
def test_mlp_relative_position_bias_is_the_mlp_of_the_offset(log_spaced):
    window = (3, 4)
    module = _randomise(MlpRelativePositionBias(window, 2, hidden_dim=8, log_spaced=log_spaced)).double()
    bias = module()
    coords = _offsets(window)
    n = len(coords)
    assert bias.shape == (2, n, n)
    fc1, fc2 = module.mlp.fc1, module.mlp.fc2

    def mlp(d):
        d = torch.tensor(d, dtype=torch.float64)
        if log_spaced:
            d = torch.sign(d) * torch.log1p(d.abs())
        return fc2.weight @ torch.clamp(fc1.weight @ d + fc1.bias, min=0) + fc2.bias

    for i in range(n):
        for j in range(n):
            off = [a - b for a, b in zip(coords[i], coords[j])]
            # the log-spaced offsets are a float32 buffer computed at build time
            torch.testing.assert_close(bias[:, i, j], mlp(off), rtol=1e-6, atol=1e-7)
    # opposite offsets give different biases (the MLP sees the sign)
    assert not torch.allclose(bias[:, 0, n - 1], bias[:, n - 1, 0])


# ------------------------------------------------------------------------------------ naive Swin block


def _softmax(v: torch.Tensor) -> torch.Tensor:
    e = torch.exp(v - v.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def naive_swin_block(block: SwinBlock, x: torch.Tensor, shift, memory=None):
    """Swin block written out: norm1, pad, roll, every window by explicit indexing, per-head attention with the
    module's weights and this file's mask / bias index, proj, un-roll, crop, residual, MLP. With ``memory``
    (B·nW, heads, N, hd) in this loop's window order, the query of head h is memory + q (MAM); returns the
    output and the query actually used per window (the memory handed on)."""
    attn = block.attn
    b_size, *grid, c = x.shape
    n_axes = len(grid)
    window = block.window_size
    padded = [-(-g // w) * w for g, w in zip(grid, window)]
    heads = attn.num_heads
    hd = c // heads
    scale = hd**-0.5

    norm1 = block.norm1
    h = F.layer_norm(x, (c,), norm1.weight, norm1.bias, norm1.eps)
    hp = x.new_zeros(b_size, *padded, c)
    hp[(slice(None), *(slice(0, g) for g in grid))] = h
    hp = torch.roll(hp, shifts=[-s for s in shift], dims=list(range(1, 1 + n_axes)))
    ids = _region_ids(padded, window, shift)

    offsets = _offsets(window)
    n = len(offsets)
    if attn.relative_bias == "nnformer":  # nnFormer's released multipliers (second window axis), not a bijection
        mult = [3 * window[1] - 1, 2 * window[1] - 1, 1]
    else:
        mult = [math.prod(2 * w - 1 for w in window[a + 1 :]) for a in range(n_axes)]
    table = attn.relative_position_bias_table
    bias = x.new_zeros(heads, n, n)
    for i in range(n):
        for j in range(n):
            entry = sum((a - b + w - 1) * m for a, b, w, m in zip(offsets[i], offsets[j], window, mult))
            bias[:, i, j] = table[entry]

    w_qkv, b_qkv = attn.qkv.weight, attn.qkv.bias
    w_proj, b_proj = attn.proj.weight, attn.proj.bias
    out = torch.zeros_like(hp)
    used = []
    starts = list(itertools.product(*[range(0, g, w) for g, w in zip(padded, window)]))
    k_window = 0
    for b in range(b_size):
        for start in starts:
            positions = [tuple(s + o for s, o in zip(start, off)) for off in offsets]
            tokens = torch.stack([hp[(b, *p)] for p in positions])  # (N, C)
            labels = [ids[p].item() for p in positions]
            mask = x.new_tensor([[0.0 if li == lj else -100.0 for lj in labels] for li in labels])
            qkv = tokens @ w_qkv.T + b_qkv
            q, k, v = qkv[:, :c], qkv[:, c : 2 * c], qkv[:, 2 * c :]
            head_out, head_q = [], []
            for hh in range(heads):
                sl = slice(hh * hd, (hh + 1) * hd)
                qh = q[:, sl] if memory is None else memory[k_window, hh] + q[:, sl]
                head_q.append(qh)
                logits = (qh @ k[:, sl].T) * scale + bias[hh] + mask
                head_out.append(_softmax(logits) @ v[:, sl])
            used.append(torch.stack(head_q))
            o = torch.cat(head_out, -1) @ w_proj.T + b_proj
            for t, p in enumerate(positions):
                out[(b, *p)] = o[t]
            k_window += 1
    out = torch.roll(out, shifts=list(shift), dims=list(range(1, 1 + n_axes)))
    x = x + out[(slice(None), *(slice(0, g) for g in grid))]
    norm2, fc1, fc2 = block.norm2, block.mlp.fc1, block.mlp.fc2
    y = F.layer_norm(x, (c,), norm2.weight, norm2.bias, norm2.eps)
    y = F.gelu(y @ fc1.weight.T + fc1.bias) @ fc2.weight.T + fc2.bias
    return x + y, torch.stack(used)


BLOCK_CASES = {
    "2d_shift": dict(dims=2, grid=(9, 11), window=(4, 3), shift=(2, 1)),
    "2d_noshift": dict(dims=2, grid=(9, 11), window=(4, 3), shift=(0, 0)),
    "3d_shift": dict(dims=3, grid=(5, 7, 6), window=(3, 3, 3), shift=(1, 1, 1)),
    # axis 1 is no longer than its window: the block does not shift it (and pads it to the window)
    "3d_short_axis": dict(dims=3, grid=(5, 2, 7), window=(3, 3, 3), shift=(1, 1, 1)),
    # nnFormer's non-bijective relative index (distinct offsets share table entries), shift and padding
    "3d_nnformer_index": dict(dims=3, grid=(9, 6, 7), window=(4, 4, 4), shift=(2, 2, 2), relative_bias="nnformer"),
}


def _effective_shift(grid, window, shift):
    return tuple(0 if g <= w else s for g, w, s in zip(grid, window, shift))


@pytest.mark.parametrize("fused", [True, False], ids=["sdpa", "plain"])
@pytest.mark.parametrize("case", list(BLOCK_CASES))
def test_swin_block_equals_naive_reference(case, fused):
    cfg = BLOCK_CASES[case]
    torch.manual_seed(0)
    block = SwinBlock(cfg["dims"], 8, 2, cfg["window"], cfg["shift"], mlp_ratio=2.0, relative_bias=cfg.get("relative_bias", "swin"))
    block = _randomise(block).double().eval()
    set_fused_attention(block, fused)
    x = _randn(2, *cfg["grid"], 8)
    out, memory = block(x)
    assert memory is None  # SAM hands no memory on
    expected, _ = naive_swin_block(block, x, _effective_shift(cfg["grid"], cfg["window"], cfg["shift"]))
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected, **F64)


@pytest.mark.parametrize("case", ["2d_shift", "3d_shift"])
def test_mam_swin_block_equals_naive_reference_with_memory(case):
    cfg = BLOCK_CASES[case]
    torch.manual_seed(0)
    block = _randomise(SwinBlock(cfg["dims"], 8, 2, cfg["window"], cfg["shift"], mlp_ratio=2.0, attention="mam"))
    block = block.double().eval()
    x = _randn(2, *cfg["grid"], 8)
    padded = [-(-g // w) * w for g, w in zip(cfg["grid"], cfg["window"])]
    n_windows = 2 * math.prod(p // w for p, w in zip(padded, cfg["window"]))
    memory = _randn(n_windows, 2, math.prod(cfg["window"]), 4, seed=7)
    shift = _effective_shift(cfg["grid"], cfg["window"], cfg["shift"])
    out, handed = block(x, memory)
    expected, used = naive_swin_block(block, x, shift, memory)
    torch.testing.assert_close(out, expected, **F64)
    torch.testing.assert_close(handed, used, **F64)  # M_t = M_{t-1} + q_t, unscaled
    # without memory MAM is SAM; with memory it is not
    out0, first = block(x)
    expected0, used0 = naive_swin_block(block, x, shift)
    torch.testing.assert_close(out0, expected0, **F64)
    torch.testing.assert_close(first, used0, **F64)
    assert not torch.allclose(out, out0)


def _window_inputs(dims, seed=3):
    grid, window, shift = ((8, 9), (4, 3), (2, 1)) if dims == 2 else ((4, 6, 6), (2, 3, 3), (1, 1, 1))
    x = _randn(2, *grid, 8, seed=seed, dtype=torch.float32)
    tokens = window_partition(cyclic_shift(x, shift), window)
    return tokens, shift_attention_mask(grid, window, shift), window


@pytest.mark.parametrize("dims", [2, 3])
def test_fused_and_plain_attention_agree_with_mask_and_bias(dims):
    tokens, mask, window = _window_inputs(dims)
    torch.manual_seed(0)
    attn = _randomise(WindowAttention(dims, 8, 2, window)).eval()
    with torch.no_grad():
        attn.fused = True
        fused, _ = attn.forward_tokens(tokens, mask)
        fused_no_mask = attn(tokens)
        attn.fused = False
        plain, _ = attn.forward_tokens(tokens, mask)
        plain_no_mask = attn(tokens)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused_no_mask, plain_no_mask, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(fused, fused_no_mask, atol=1e-3)  # the mask takes part


def test_set_fused_attention_flips_every_module():
    stage = SwinStage(2, 8, 3, 2, 4, grid=(8, 8), attention="mam")
    assert all(b.attn.fused for b in stage.blocks)
    assert set_fused_attention(stage, False) is stage
    assert [b.attn.fused for b in stage.blocks] == [False] * 3
    set_fused_attention(stage, True)
    assert [b.attn.fused for b in stage.blocks] == [True] * 3


@pytest.mark.parametrize("dims", [2, 3])
def test_window_attention_on_a_map_equals_the_token_path(dims):
    grid, window = ((7, 10), (4, 3)) if dims == 2 else ((5, 3, 7), (2, 2, 3))
    torch.manual_seed(0)
    attn = _randomise(WindowAttention(dims, 6, 2, window)).double().eval()
    x = _randn(2, 6, *grid)
    out = attn(x)
    assert out.shape == x.shape
    tokens = x.movedim(1, -1)
    pads = [(-g) % w for g, w in zip(grid, window)]
    spec = [0, 0]
    for p in reversed(pads):
        spec += [0, p]
    padded = F.pad(tokens, spec)
    if dims == 2:
        pattern = "b (h p1) (w p2) c -> (b h w) (p1 p2) c"
        kw = dict(p1=window[0], p2=window[1])
    else:
        pattern = "b (d p0) (h p1) (w p2) c -> (b d h w) (p0 p1 p2) c"
        kw = dict(p0=window[0], p1=window[1], p2=window[2])
    win = einops.rearrange(padded, pattern, **kw)
    res, _ = attn.forward_tokens(win)
    inv = pattern.split(" -> ")[1] + " -> " + pattern.split(" -> ")[0]
    sizes = {k: v // window[i] for i, (k, v) in enumerate(zip(("h", "w") if dims == 2 else ("d", "h", "w"), padded.shape[1:-1]))}
    back = einops.rearrange(res, inv, **kw, **sizes)
    expected = back[(slice(None), *(slice(0, g) for g in grid))].movedim(-1, 1)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="map"):
        attn(_randn(1, 6, *([2] * (dims + 1))))  # neither window tokens nor a map of this module's dims


# ------------------------------------------------------------------------------- patch embed / merge / expand


def test_patch_merging_2d_equals_swin_concat_with_odd_padding():
    torch.manual_seed(0)
    merge = _randomise(PatchMerging(2, 4)).double()
    x = _randn(2, 7, 9, 4)
    out = merge(x)
    assert out.shape == (2, 4, 5, 8)
    xp = F.pad(x, (0, 0, 0, 1, 0, 1))  # (B, 8, 10, C)
    cat = torch.cat([xp[:, 0::2, 0::2], xp[:, 1::2, 0::2], xp[:, 0::2, 1::2], xp[:, 1::2, 1::2]], -1)
    expected = F.layer_norm(cat, (16,), merge.norm.weight, merge.norm.bias, merge.norm.eps) @ merge.reduction.weight.T
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert merge.reduction.bias is None


def test_patch_merging_3d_shape_and_every_subgrid_once():
    merge = PatchMerging(3, 2, out_dim=5)
    assert merge.reduction.weight.shape == (5, 16)
    assert sorted(merge.offsets) == sorted(itertools.product((0, 1), repeat=3))
    assert merge(_randn(1, 3, 4, 5, 2, dtype=torch.float32)).shape == (1, 2, 2, 3, 5)


@pytest.mark.parametrize("scale, out_dim", [(2, None), (4, 8)])
def test_patch_expand_2d_equals_einops_rearrange(scale, out_dim):
    torch.manual_seed(0)
    expand = _randomise(PatchExpand(2, 8, scale=scale, out_dim=out_dim)).double()
    c = out_dim or 4
    assert expand.expand.weight.shape == (scale * scale * c, 8) and expand.expand.bias is None
    x = _randn(2, 3, 5, 8)
    out = expand(x)
    y = einops.rearrange(x @ expand.expand.weight.T, "b h w (p1 p2 c) -> b (h p1) (w p2) c", p1=scale, p2=scale, c=c)
    expected = F.layer_norm(y, (c,), expand.norm.weight, expand.norm.bias, expand.norm.eps)
    assert out.shape == (2, 3 * scale, 5 * scale, c)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_patch_expand_3d():
    torch.manual_seed(0)
    expand = _randomise(PatchExpand(3, 8)).double()
    x = _randn(1, 2, 3, 4, 8)
    out = expand(x)
    assert out.shape == (1, 4, 6, 8, 4)
    y = einops.rearrange(
        x @ expand.expand.weight.T, "b d h w (p0 p1 p2 c) -> b (d p0) (h p1) (w p2) c", p0=2, p1=2, p2=2, c=4
    )
    expected = F.layer_norm(y, (4,), expand.norm.weight, expand.norm.bias, expand.norm.eps)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dims, size, patch", [(2, (9, 10), 4), (3, (5, 8, 7), (2, 4, 3))])
def test_patch_embed_pads_to_whole_patches(dims, size, patch):
    torch.manual_seed(0)
    embed = _randomise(PatchEmbed(dims, patch, 2, 6)).double()
    x = _randn(1, 2, *size)
    out = embed(x)
    p = as_tuple(patch, dims)
    assert out.shape == (1, *[-(-s // q) for s, q in zip(size, p)], 6)
    spec = []
    for s, q in reversed(list(zip(size, p))):
        spec += [0, (-s) % q]
    conv = F.conv2d if dims == 2 else F.conv3d
    y = conv(F.pad(x, spec), embed.proj.weight, embed.proj.bias, stride=p).movedim(1, -1)
    expected = F.layer_norm(y, (6,), embed.norm.weight, embed.norm.bias, embed.norm.eps)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert PatchEmbed(dims, patch, 2, 6, norm=False).norm is None
