"""MaxViT maxvit_rmlp_small_rw_224 (MSA²Net's encoder, papers.md §004): timm's keys and count, window and grid
partitions, head-first qkv, the MLP relative bias on sign·log offsets, gradients and the two attention paths.

The full-size encoder is built for counts and keys; what runs uses a narrow config at 224² (the 7×7 window and grid
need stage maps of 56, 28, 14 and 7). Numerical equality with timm's own model (weights copied) is checked outside the
suite, where timm can be imported; see the docstring of medattn_networks/nets/maxvit.py.
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

from medattn_networks.blocks.transformer import set_fused_attention
from medattn_networks.blocks.windows import grid_partition, grid_reverse, window_partition
from medattn_networks.nets.maxvit import MaxViT, MaxViTAttention, load_timm_maxvit, maxvit_rmlp_small_rw_224

TIMM_KEYS = Path(__file__).resolve().parent / "data" / "maxvit_rmlp_small_rw_224_state_dict.txt"
SMALL = dict(embed_dims=(32, 32, 64, 64), depths=(1, 1, 2, 1), stem_widths=(8, 16))


def _timm_entries() -> list[tuple[str, tuple[int, ...], str]]:
    return read_key_list(TIMM_KEYS)


def test_encoder_has_timms_count_and_keys_and_loads_a_timm_state_dict_strictly(tmp_path):
    net = maxvit_rmlp_small_rw_224()
    assert count_params(net) == 64_126_044
    entries = _timm_entries()
    assert len(entries) == 651  # timm's 653 entries without head.fc
    assert {k: s for k, s, _ in entries} == {k: tuple(v.shape) for k, v in net.state_dict().items()}
    # a file with timm's exact keys (classifier included, as timm saves it) loads through load_timm_maxvit
    g = torch.Generator().manual_seed(0)
    state = {k: (torch.randn(s, generator=g) if kind == "param" else torch.ones(s)) for k, s, kind in entries}
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(3)
    state["head.fc.weight"], state["head.fc.bias"] = torch.zeros(1000, 768), torch.zeros(1000)
    torch.save(state, tmp_path / "maxvit.pth")
    loaded = load_timm_maxvit(maxvit_rmlp_small_rw_224(), tmp_path / "maxvit.pth")
    assert torch.equal(loaded.stages[2].blocks[4].attn_grid.attn.rel_pos.mlp.fc1.weight, state["stages.2.blocks.4.attn_grid.attn.rel_pos.mlp.fc1.weight"])
    del state["norm.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"broken.pth: not a maxvit_rmlp_small_rw_224 state dict"):
        load_timm_maxvit(maxvit_rmlp_small_rw_224(), tmp_path / "broken.pth")
    with pytest.raises(FileNotFoundError, match="no MaxViT checkpoint"):
        load_timm_maxvit(maxvit_rmlp_small_rw_224(), tmp_path / "absent.pth")


def test_window_and_grid_partitions_by_hand():
    x = torch.arange(2 * 14 * 21 * 3, dtype=torch.float32).reshape(2, 14, 21, 3)
    windows = window_partition(x, (7, 7))  # 2 × 3 windows per image, row-major
    assert torch.equal(windows[1].reshape(7, 7, 3), x[0, 0:7, 7:14])
    assert torch.equal(windows[6 + 5].reshape(7, 7, 3), x[1, 7:14, 14:21])
    grid = grid_partition(x, (7, 7))  # window (i, j) holds the lattice x[i::2, j::3]
    for b in range(2):
        for i in range(2):
            for j in range(3):
                assert torch.equal(grid[b * 6 + i * 3 + j].reshape(7, 7, 3), x[b, i::2, j::3])
    assert torch.equal(grid_reverse(grid, (7, 7), (14, 21)), x)
    with pytest.raises(ValueError, match="not divisible"):
        grid_partition(x, (4, 7))


def test_attention_is_head_first_with_the_log_spaced_mlp_bias():
    torch.manual_seed(0)
    attn = randomise(MaxViTAttention(2, 64, (3, 3), dim_head=32, rel_pos_dim=16), scale=0.3).double().eval()
    x = float64_input(4, 9, 64)
    out, _ = attn.forward_tokens(x)

    # head-first: qkv output = (N, heads, [q | k | v]) with each part 32 wide
    qkv = (x @ attn.qkv.weight.T + attn.qkv.bias).reshape(4, 9, 2, 96)
    q, k, v = qkv[..., :32], qkv[..., 32:64], qkv[..., 64:]
    # relative bias: MLP(2 → 16 → heads) on sign(Δ)·ln(1 + |Δ|) of each query-key offset, written per pair
    fc1, fc2 = attn.rel_pos.mlp.fc1, attn.rel_pos.mlp.fc2
    coords = [(i, j) for i in range(3) for j in range(3)]
    bias = torch.zeros(2, 9, 9, dtype=torch.float64)
    for a, (ia, ja) in enumerate(coords):
        for b, (ib, jb) in enumerate(coords):
            d = torch.tensor([ia - ib, ja - jb], dtype=torch.float64)
            feat = torch.sign(d) * torch.log(1 + d.abs())
            bias[:, a, b] = fc2(torch.relu(fc1(feat)))
    logits = torch.einsum("bnhd,bmhd->bhnm", q, k) / math.sqrt(32) + bias
    expected = torch.einsum("bhnm,bmhd->bnhd", logits.softmax(-1), v).reshape(4, 9, 64) @ attn.proj.weight.T + attn.proj.bias
    torch.testing.assert_close(out, expected)
    set_fused_attention(attn, False)
    torch.testing.assert_close(attn.forward_tokens(x)[0], expected)


def test_features_gradients_and_both_attention_paths():
    torch.manual_seed(0)
    net = MaxViT(**SMALL)
    with torch.no_grad():  # layer scales away from 1e-6 so that the attention branches matter
        for name, p in net.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.5)
    x = torch.randn(2, 3, 224, 224)
    stage_outputs = []
    hooks = [stage.register_forward_hook(lambda m, i, out: stage_outputs.append(out)) for stage in net.stages]
    features = net(x)
    for h in hooks:
        h.remove()
    assert [tuple(f.shape) for f in features] == [(2, 32, 56, 56), (2, 32, 28, 28), (2, 64, 14, 14), (2, 64, 7, 7)]
    # the stage maps as they leave each stage; the final LayerNorm over channels acts on the last one only
    for got, raw in zip(features[:3], stage_outputs[:3]):
        assert torch.equal(got, raw)
    raw = stage_outputs[3].permute(0, 2, 3, 1)
    normed = (raw - raw.mean(-1, keepdim=True)) / torch.sqrt(raw.var(-1, unbiased=False, keepdim=True) + 1e-6)
    torch.testing.assert_close(features[3], (normed * net.norm.weight + net.norm.bias).permute(0, 3, 1, 2), rtol=1e-4, atol=1e-5)
    sum(f.square().mean() for f in features).backward()
    assert [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().gt(0).any()] == []
    net.eval()
    with torch.no_grad():
        fused = net(x)
        set_fused_attention(net, False)
        plain = net(x)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="multiples of 224"):
        net(torch.zeros(1, 3, 200, 224))
