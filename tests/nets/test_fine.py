"""FINE (seed 003, papers.md §003): memory tokens, volume-token selection, statelessness and the two wirings.

Full-size nets (BCV: crop 64×128×128, embed 192) are built for counts and keys only; everything that runs uses a
small config (crop 16×32×32, patch [2,4,4] → grid 8³, embed 12, 3×3 volume tokens).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "attention"))
from key_lists import read_key_list  # noqa: E402
from attention_testing import count_params, float64_input, randomise  # noqa: E402

from medattn_networks.attention.memory import (
    MemoryTokenWindowAttention,
    TokenAttention,
    gather_tokens,
    scatter_add_tokens,
    volume_token_indices,
)
from medattn_networks.blocks.transformer import set_fused_attention
from medattn_networks.blocks.windows import gather_relative_bias
from medattn_networks.nets.fine import FINE, convert_released_fine_state_dict, released_fine_dead_keys

SMALL = dict(img_size=(16, 32, 32), volume_grid=(3, 3), embed_dim=12, num_heads=(1, 2, 2, 4), drop_path_rate=0.0)
RELEASED_KEYS = Path(__file__).resolve().parent / "data" / "fine_released_bcv_state_dict.txt"


def small_fine(wiring: str = "paper", seed: int = 0, **kw) -> FINE:
    torch.manual_seed(seed)
    return FINE(wiring=wiring, **{**SMALL, **kw}).eval()


def _image(batch: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 1, 16, 32, 32, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------ counts
def _released_entries() -> list[tuple[str, tuple[int, ...], str]]:
    return read_key_list(RELEASED_KEYS)


def test_bcv_counts_released_minus_exactly_the_dead_modules():
    entries = _released_entries()
    params = {k: math.prod(s) for k, s, kind in entries if kind == "param"}
    assert sum(params.values()) == 222_350_491  # the released model's count (papers.md §003)
    dead = released_fine_dead_keys(params)
    dead_groups = {
        "volume- and window-token attention": sum(params[k] for k in dead if "_attn." in k),
        "last PatchMerging": sum(params[k] for k in dead if ".downsample." in k),
        "third head": sum(params[k] for k in dead if k.startswith("final.2.")),
        "visited counter": sum(params[k] for k in dead if k == "vt_check"),
    }
    assert dead_groups == {
        "volume- and window-token attention": 46_941_696,
        "last PatchMerging": 37_754_880,
        "third head": 688_142,
        "visited counter": 25,
    }
    released = FINE(wiring="released")
    assert count_params(released) == 222_350_491 - sum(dead_groups.values()) == 136_965_748
    # the converted released keys and shapes are exactly ours (buffers included)
    shapes = {k: s for k, s, _ in entries}
    converted = convert_released_fine_state_dict(dict(shapes))
    ours = {k: tuple(v.shape) for k, v in released.state_dict().items()}
    assert converted == ours
    # the paper wiring adds back exactly the token attention the released wiring cannot use
    assert count_params(FINE(wiring="paper")) == 136_965_748 + 46_941_696


# ------------------------------------------------------------------------------------------- attention
def test_memory_token_window_attention_equals_naive_expression():
    torch.manual_seed(0)
    attn = randomise(MemoryTokenWindowAttention(3, 8, 2, (2, 2, 2), relative_bias="nnformer")).double()
    x, memory = float64_input(6, 8, 8, seed=1), float64_input(6, 1, 8, seed=2)
    mask = torch.where(torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(3)) > 0.7, -100.0, 0.0).double()
    out, mem = attn.forward_tokens(x, mask, memory)

    tokens = torch.cat([memory, x], 1)  # (6, 9, 8)
    q, k, v = (tokens @ attn.qkv.weight.T + attn.qkv.bias).reshape(6, 9, 3, 2, 4).permute(2, 0, 3, 1, 4)
    logits = q @ k.transpose(-2, -1) / 2.0  # head_dim 4
    bias = gather_relative_bias(attn.relative_position_bias_table, attn.relative_position_index)  # (2, 8, 8)
    full = torch.zeros(6, 2, 9, 9, dtype=torch.float64)
    full[:, :, 1:, 1:] = bias + mask.repeat(2, 1, 1)[:, None]  # windows are batch-major: window w = index % 3
    expected = ((logits + full).softmax(-1) @ v).transpose(1, 2).reshape(6, 9, 8) @ attn.proj.weight.T + attn.proj.bias
    torch.testing.assert_close(out, expected[:, 1:])
    torch.testing.assert_close(mem, expected[:, :1])
    set_fused_attention(attn, False)
    torch.testing.assert_close(attn.forward_tokens(x, mask, memory)[0], out)


def test_token_attention_key_mask_is_per_sample():
    torch.manual_seed(0)
    attn = randomise(TokenAttention(8, 2)).double()
    x = float64_input(2, 5, 8)
    keep = torch.tensor([[1, 1, 0, 0, 1], [0, 1, 1, 1, 1]], dtype=torch.bool)
    q, k, v = (x @ attn.qkv.weight.T + attn.qkv.bias).reshape(2, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)
    logits = (q @ k.transpose(-2, -1) / 2.0).masked_fill(~keep[:, None, None, :], float("-inf"))
    expected = (logits.softmax(-1) @ v).transpose(1, 2).reshape(2, 5, 8) @ attn.proj.weight.T + attn.proj.bias
    torch.testing.assert_close(attn(x, keep), expected)
    # a hidden key's value does not matter
    x2 = x.clone()
    x2[0, 2] += 5.0
    out2 = attn(x2, keep)
    torch.testing.assert_close(out2[0, [0, 1, 3, 4]], expected[0, [0, 1, 3, 4]])
    assert not torch.allclose(out2[0, 2], expected[0, 2])  # only its own query changed
    torch.testing.assert_close(out2[1], expected[1])


def test_gather_and_scatter_add_are_per_sample():
    tokens = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    index = torch.tensor([[0, 3], [1, 2]])
    assert torch.equal(gather_tokens(tokens, index), torch.stack([tokens[0, [0, 3]], tokens[1, [1, 2]]]))
    out = scatter_add_tokens(tokens, index, torch.ones(2, 2, 3))
    expected = tokens.clone()
    expected[0, [0, 3]] += 1
    expected[1, [1, 2]] += 1
    assert torch.equal(out, expected)


# -------------------------------------------------------------------------------------- token selection
def _released_cell(p: float, crop: int, grid: int, max_size: int) -> int:
    """The released pos2vtpos cell along one axis (crop put in the max-size referential, grid centred), with its
    'beyond the last cell → 0' fault replaced by a clamp to the last cell."""
    rc = int(p) + max_size // 2
    diff = max_size - crop * grid
    pad = diff // 2 + (0 if diff % 2 == 0 else 1)
    k = (rc - pad - crop // 2) // crop
    return min(max(k, 0), grid - 1)


def _released_tokens(p1: float, p2: float, crop: int = 128, grid: int = 5, max_size: int = 660) -> list[int]:
    k1, k2 = _released_cell(p1, crop, grid, max_size), _released_cell(p2, crop, grid, max_size)
    n1 = k1 - 1 if k1 == grid - 1 else k1 + 1
    n2 = k2 - 1 if k2 == grid - 1 else k2 + 1
    return [k1 * grid + k2, n1 * grid + k2, k1 * grid + n2, n1 * grid + n2]


@pytest.mark.parametrize(
    "position",
    [
        (0, 0),  # centre
        (-320, -320), (-320, 319), (319, -320), (319, 319),  # the grid's corners (its outermost voxels)
        (-256, -256), (-257, 0), (255, 64), (256, 256), (-129, 127),  # cell edges
        (-1000, 0), (0, 5000), (640, -640), (330, 330),  # beyond the edge (the released code sends ≥ 320 to cell 0)
    ],
)
def test_volume_token_selection_matches_the_released_rule(position):
    got = volume_token_indices(torch.tensor([position], dtype=torch.float32), (5, 5), (128, 128))[0].tolist()
    assert got == _released_tokens(*position)
    assert len(set(got)) == 4


def test_volume_token_selection_examples_and_batch():
    pos = torch.tensor([[0.0, 0.0], [-1000.0, 1000.0], [1000.0, 1000.0]])
    assert volume_token_indices(pos, (5, 5), (128, 128)).tolist() == [[12, 17, 13, 18], [4, 9, 3, 8], [24, 19, 23, 18]]
    with pytest.raises(ValueError, match="at least 2"):
        volume_token_indices(pos, (1, 5), (128, 128))


# ------------------------------------------------------------------------------------------- the network
@pytest.mark.parametrize("wiring", ["paper", "released"])
def test_every_parameter_receives_a_gradient(wiring):
    net = small_fine(wiring).train()
    out = net(_image(2), torch.tensor([[0.0, 0.0, 0.0], [2.0, 30.0, -40.0]]))
    assert [tuple(o.shape) for o in out] == [(2, 14, 16, 32, 32), (2, 14, 16, 16, 16)]
    sum(o.square().mean() for o in out).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().gt(0).any()]
    assert missing == []


def test_released_wiring_builds_only_what_reaches_the_output():
    paper, released = small_fine("paper"), small_fine("released")
    extra = set(dict(paper.named_parameters())) - set(dict(released.named_parameters()))
    # per stage (4 encoder + 3 decoder): vt_attn of both blocks and gt_attn of the second
    assert {k.split(".blocks.")[1].split(".")[0:2][1] for k in extra} == {"gt_attn", "vt_attn"}
    assert len([k for k in extra if k.endswith("qkv.weight")]) == 7 * 3
    assert all(".blocks.1.gt_attn." in k or ".vt_attn." in k for k in extra)


@pytest.mark.parametrize("wiring", ["paper", "released"])
def test_stateless_and_batch_independent(wiring):
    net = small_fine(wiring)
    x, pos = _image(3), torch.tensor([[0.0, 0.0, 0.0], [3.0, 40.0, -50.0], [-5.0, -60.0, 10.0]])
    with torch.no_grad():
        first = net(x, pos)
        net.train()
        net(_image(2, seed=7), torch.tensor([[0.0, 90.0, 90.0], [0.0, -90.0, -90.0]]))  # a training forward between
        net.eval()
        for _ in range(2):
            net(_image(1, seed=9), torch.tensor([[0.0, 70.0, 0.0]]))
        again = net(x, pos)
        single = torch.cat([net(x[i : i + 1], pos[i : i + 1]) for i in range(3)])
    assert torch.equal(first, again)
    torch.testing.assert_close(single, first, rtol=1e-5, atol=1e-5)
    assert dict(net.named_buffers()).keys() == {k for k, _ in net.named_buffers() if k.endswith("relative_position_index")}


@pytest.mark.parametrize("wiring", ["paper", "released"])
def test_volume_tokens_change_the_output_when_the_position_changes(wiring):
    net = small_fine(wiring)
    x = _image(1)
    with torch.no_grad():
        centre = net(x, torch.tensor([[0.0, 0.0, 0.0]]))
        other_cell = net(x, torch.tensor([[0.0, 40.0, -40.0]]))  # cell size 32: a different 2×2 token block
        same_cell = net(x, torch.tensor([[7.0, 5.0, 31.0]]))  # z is ignored; in-plane still cell (1, 1): [0, 32)
        net.model_down.layers[0].volume_token.data[:] = 0.0  # and it is the volume tokens that carry the position
        no_tokens_centre = net(x, torch.tensor([[0.0, 0.0, 0.0]]))
    assert (centre - other_cell).abs().max() > 1e-4
    assert torch.equal(centre, same_cell)
    assert (centre - no_tokens_centre).abs().max() > 1e-4


def test_sdpa_and_plain_paths_agree_and_no_position_means_centre():
    net = small_fine()
    x = _image(2)
    with torch.no_grad():
        fused = net(x, torch.zeros(2, 3))
        set_fused_attention(net, False)
        plain = net(x, torch.zeros(2, 3))
        default = net(x)
    torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-5)
    assert torch.equal(plain, default)


def test_wrong_crop_size_and_position_shape_are_refused():
    net = small_fine()
    with pytest.raises(ValueError, match=r"built for crops of \[16, 32, 32\].*roi_size"):
        net(torch.zeros(1, 1, 16, 32, 48))
    with pytest.raises(ValueError, match="position must be"):
        net(_image(1), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="unknown wiring"):
        FINE(wiring="nnformer")
