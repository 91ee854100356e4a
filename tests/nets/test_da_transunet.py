"""DA-TransUnet with memory attention (MAM, seed 000, papers.md §000).

Full-size nets are only built on the meta device and counted; forward/backward runs on tiny nets (32², hidden 48,
two layers, one unit per ResNet stage).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from medattn_networks.errors import MissingPathError, WeightsError
from medattn_networks.nets.da_transunet import (
    DATransUnet,
    convert_released_da_transunet_state_dict,
    load_r50_vit_npz,
)

torch.set_num_threads(1)

# Released DA-TransUNet(-MAM), R50-ViT-B_16, 224², 9 classes, n_skip 3 (CAU-COE-VEICLab/Recurrent-Attention @ 2e44a4d,
# instantiated outside the project): 107,951,855 parameters, of which 1,513,816 never get a gradient — conv6/conv7
# of the three DANet heads that run (117,760) and the ten decoder DANet heads that never run (1,396,056). Ours builds
# only the live modules.
RELEASED_PARAMS = 107_951_855
RELEASED_DEAD_PARAMS = 1_513_816

TINY = dict(
    img_size=32,
    hidden_size=48,
    num_layers=2,
    num_heads=4,
    mlp_dim=96,
    resnet_blocks=(1, 1, 1),
    resnet_width=32,
    decoder_channels=(32, 16, 8, 8),
    head_channels=32,
)


def tiny(memory: str = "sts", seed: int = 0, **kwargs) -> DATransUnet:
    torch.manual_seed(seed)
    return DATransUnet(memory=memory, **{**TINY, **kwargs})


def liven(model: DATransUnet, value: float = 0.5) -> None:
    """Non-zero DANet residual scales (at 0 the position-attention gradients vanish) and random position
    embeddings (the zero init makes the few tokens of a tiny grid nearly alike)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(value)
        model.position_embedding.normal_()


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------------- full size
@pytest.mark.parametrize("memory", ["none", "ists", "sts"])
def test_full_size_parameter_count(memory):
    with torch.device("meta"):
        model = DATransUnet(memory=memory)
    assert count(model) == RELEASED_PARAMS - RELEASED_DEAD_PARAMS == 106_438_039
    assert model.grid == (14, 14)


def test_full_size_keys_equal_with_and_without_memory():
    with torch.device("meta"):
        plain, mam = DATransUnet(memory="none"), DATransUnet(memory="sts")
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in mam.state_dict().items()}


# --------------------------------------------------------------------------------------------------- state dicts
def test_state_dicts_load_strict_both_ways():
    plain, mam = tiny("none", seed=0), tiny("sts", seed=1)
    mam.load_state_dict(plain.state_dict(), strict=True)
    plain.load_state_dict(tiny("sts", seed=2).state_dict(), strict=True)
    assert count(plain) == count(mam)


def test_memory_changes_output_and_fused_matches_plain_math():
    plain = tiny("none").eval()
    liven(plain)
    mam = tiny("sts").eval()
    mam.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        # compared at the encoder: at default init the decoder's conv-BN-ReLU chain (BN eval = identity) shrinks
        # the token path below the skips, so the logits move only ~1e-6
        assert (plain.encode(x)[0] - mam.encode(x)[0]).abs().max() > 1e-2
        out_plain, out_mam = plain(x), mam(x)
        assert not torch.equal(out_plain, out_mam)
        for model, reference in ((plain, out_plain), (mam, out_mam)):
            unfused = tiny(model.memory, fused_attention=False).eval()
            unfused.load_state_dict(model.state_dict())
            torch.testing.assert_close(unfused(x), reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("memory", ["ists", "sts"])
def test_ists_equals_sts_in_a_single_stage_vit(memory):
    reference = tiny("sts").eval()
    model = tiny(memory).eval()
    model.load_state_dict(reference.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


# --------------------------------------------------------------------------------------------------- memory maths
@pytest.mark.parametrize("memory", ["none", "sts"])
@pytest.mark.parametrize("fused", [True, False])
def test_attention_uses_the_running_unscaled_query_sum(memory, fused):
    """Layer t attends with softmax((Σ_{j≤t} q_j)·k_tᵀ·d^-½)·v_t (memory) or softmax(q_t·k_tᵀ·d^-½)·v_t (none),
    q, k, v taken from the qkv Linear's output."""
    model = tiny(memory, fused_attention=fused, num_layers=3).eval()
    liven(model)
    projections, attended = [], []
    hooks = []
    for layer in model.layers:
        hooks.append(layer.attn.qkv.register_forward_hook(lambda m, i, o: projections.append(o.detach())))
        hooks.append(layer.attn.proj.register_forward_pre_hook(lambda m, i: attended.append(i[0].detach())))
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert len(projections) == len(attended) == 3

    heads, width = 4, TINY["hidden_size"]
    head_dim = width // heads

    def split(t: torch.Tensor) -> torch.Tensor:  # (B, N, C) → (B, heads, N, hd)
        return t.reshape(t.shape[0], t.shape[1], heads, head_dim).transpose(1, 2)

    def attend(query: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(split(query) @ split(k).transpose(-2, -1) * head_dim**-0.5, dim=-1)
        return (weights @ split(v)).transpose(1, 2).reshape(query.shape)

    query_sum = torch.zeros_like(projections[0][..., :width])
    for t, (qkv, out) in enumerate(zip(projections, attended)):
        q, k, v = qkv[..., :width], qkv[..., width : 2 * width], qkv[..., 2 * width :]
        query_sum = query_sum + q
        torch.testing.assert_close(out, attend(query_sum if memory == "sts" else q, k, v), atol=1e-5, rtol=1e-5)
        if t > 0:  # the two hypotheses are told apart
            other = attend(q if memory == "sts" else query_sum, k, v)
            assert (out - other).abs().max() > 1e-3


# --------------------------------------------------------------------------------------------------- gradients, shapes
@pytest.mark.parametrize("memory", ["none", "sts"])
def test_every_parameter_gets_a_gradient(memory):
    model = tiny(memory, n_skip=3, skip_attention=(True, True, True)).train()
    liven(model)
    model(torch.randn(2, 3, 32, 32)).square().mean().backward()
    # DANet's key-projection bias adds q_i·b to every logit of query i: the softmax over keys cancels it, so its
    # gradient is zero up to rounding (DANet builds the bias; it is inert by the maths, not by the wiring)
    inert = {n for n in dict(model.named_parameters()) if n.endswith("position_attention.key_project.bias")}
    assert inert
    for name in inert:
        grad = dict(model.named_parameters())[name].grad
        assert grad is None or float(grad.abs().max()) < 1e-6
    missing = [n for n, p in model.named_parameters() if n not in inert and (p.grad is None or not torch.any(p.grad != 0))]
    assert not missing


def test_default_skip_attention_gradients():
    model = tiny("sts").train()
    assert [b.skip_attention is not None for b in model.decoder_blocks] == [True, True, False, False]
    model(torch.randn(2, 3, 32, 32)).mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("channels", [1, 3])
def test_output_shape(channels):
    model = tiny("sts").eval()
    with torch.no_grad():
        out = model(torch.randn(2, channels, 32, 32))
    assert out.shape == (2, 9, 32, 32)


def test_grey_input_is_repeated():
    model = tiny("sts").eval()
    grey = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(grey), model(grey.repeat(1, 3, 1, 1)))


def test_non_square_and_fewer_skips():
    model = tiny("sts", img_size=(32, 48), n_skip=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 48)).shape == (1, 9, 32, 48)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        DATransUnet(spatial_dims=3)
    with pytest.raises(ValueError):
        tiny(img_size=40)
    with pytest.raises(ValueError):
        tiny(memory="lstm")
    with pytest.raises(ValueError):
        tiny().eval()(torch.randn(1, 3, 48, 48))


# --------------------------------------------------------------------------------------------------- npz loading
def fake_r50_vit_npz(model: DATransUnet, posemb_side: int) -> dict[str, np.ndarray]:
    """Random arrays under Google's R50+ViT-B_16 npz names with its (Flax) layouts, sized for ``model``."""
    rng = np.random.default_rng(0)
    hidden = model.position_embedding.shape[-1]
    heads = model.layers[0].attn.num_heads
    mlp = model.layers[0].ffn.fc1.out_features

    def rand(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    def hwio(conv):
        o, i, h, w = conv.weight.shape
        return rand(h, w, i, o)

    w = {
        "embedding/kernel": hwio(model.patch_embedding),
        "embedding/bias": rand(hidden),
        "Transformer/encoder_norm/scale": rand(hidden),
        "Transformer/encoder_norm/bias": rand(hidden),
        "Transformer/posembed_input/pos_embedding": rand(1, 1 + posemb_side**2, hidden),
        "conv_root/kernel": hwio(model.resnet.root.conv),
        "gn_root/scale": rand(model.resnet.width),
        "gn_root/bias": rand(model.resnet.width),
    }
    for i in range(len(model.layers)):
        root = f"Transformer/encoderblock_{i}"
        for n in ("query", "key", "value"):
            w[f"{root}/MultiHeadDotProductAttention_1/{n}/kernel"] = rand(hidden, heads, hidden // heads)
            w[f"{root}/MultiHeadDotProductAttention_1/{n}/bias"] = rand(heads, hidden // heads)
        w[f"{root}/MultiHeadDotProductAttention_1/out/kernel"] = rand(heads, hidden // heads, hidden)
        w[f"{root}/MultiHeadDotProductAttention_1/out/bias"] = rand(hidden)
        w[f"{root}/MlpBlock_3/Dense_0/kernel"] = rand(hidden, mlp)
        w[f"{root}/MlpBlock_3/Dense_0/bias"] = rand(mlp)
        w[f"{root}/MlpBlock_3/Dense_1/kernel"] = rand(mlp, hidden)
        w[f"{root}/MlpBlock_3/Dense_1/bias"] = rand(hidden)
        for norm in ("LayerNorm_0", "LayerNorm_2"):
            w[f"{root}/{norm}/scale"] = rand(hidden)
            w[f"{root}/{norm}/bias"] = rand(hidden)
    for block_name, block in model.resnet.body.named_children():
        for unit_name, unit in block.named_children():
            prefix = f"{block_name}/{unit_name}"
            for k in (1, 2, 3):
                w[f"{prefix}/conv{k}/kernel"] = hwio(getattr(unit, f"conv{k}"))
                c = getattr(unit, f"gn{k}").num_channels
                w[f"{prefix}/gn{k}/scale"], w[f"{prefix}/gn{k}/bias"] = rand(c), rand(c)
            if unit.downsample is not None:
                w[f"{prefix}/conv_proj/kernel"] = hwio(unit.downsample)
                c = unit.gn_proj.num_channels
                w[f"{prefix}/gn_proj/scale"], w[f"{prefix}/gn_proj/bias"] = rand(c), rand(c)
    return w


def test_load_r50_vit_npz_places_every_array(tmp_path):
    model = tiny("sts")
    weights = fake_r50_vit_npz(model, posemb_side=2)  # the tiny grid: class token dropped, no resize
    path = tmp_path / "R50+ViT-B_16.npz"
    np.savez(path, **weights)
    decoder_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("decoder_blocks")}
    load_r50_vit_npz(model, str(path))

    def t(key):
        return torch.from_numpy(weights[key])

    c = TINY["hidden_size"]
    torch.testing.assert_close(model.patch_embedding.weight, t("embedding/kernel").permute(3, 2, 0, 1))
    torch.testing.assert_close(model.position_embedding, t("Transformer/posembed_input/pos_embedding")[:, 1:])
    torch.testing.assert_close(model.encoder_norm.bias, t("Transformer/encoder_norm/bias"))
    torch.testing.assert_close(model.resnet.root.conv.weight, t("conv_root/kernel").permute(3, 2, 0, 1))
    torch.testing.assert_close(model.resnet.root.gn.weight, t("gn_root/scale"))
    unit = model.resnet.body.block2.unit1
    torch.testing.assert_close(unit.conv2.weight, t("block2/unit1/conv2/kernel").permute(3, 2, 0, 1))
    torch.testing.assert_close(unit.downsample.weight, t("block2/unit1/conv_proj/kernel").permute(3, 2, 0, 1))
    torch.testing.assert_close(unit.gn_proj.bias, t("block2/unit1/gn_proj/bias"))
    for i, layer in enumerate(model.layers):
        root = f"Transformer/encoderblock_{i}/"
        attention = root + "MultiHeadDotProductAttention_1/"
        # y = x·kernel in Flax; a query output feature (head h, dim d) is column h·hd + d
        for j, n in enumerate(("query", "key", "value")):
            kernel = t(attention + f"{n}/kernel").reshape(c, c)
            torch.testing.assert_close(layer.attn.qkv.weight[j * c : (j + 1) * c], kernel.t())
            torch.testing.assert_close(layer.attn.qkv.bias[j * c : (j + 1) * c], t(attention + f"{n}/bias").reshape(-1))
        torch.testing.assert_close(layer.attn.proj.weight, t(attention + "out/kernel").reshape(c, c).t())
        torch.testing.assert_close(layer.ffn.fc1.weight, t(root + "MlpBlock_3/Dense_0/kernel").t())
        torch.testing.assert_close(layer.ffn.fc2.bias, t(root + "MlpBlock_3/Dense_1/bias"))
        torch.testing.assert_close(layer.attention_norm.weight, t(root + "LayerNorm_0/scale"))
        torch.testing.assert_close(layer.ffn_norm.bias, t(root + "LayerNorm_2/bias"))
    for k, v in decoder_before.items():
        torch.testing.assert_close(model.state_dict()[k], v)


def test_load_r50_vit_npz_resizes_the_position_grid(tmp_path):
    model = tiny("none")
    weights = fake_r50_vit_npz(model, posemb_side=4)  # 4×4 (+ class token) onto the tiny 2×2 grid
    np.savez(tmp_path / "w.npz", **weights)
    load_r50_vit_npz(model, str(tmp_path / "w.npz"))
    old = torch.from_numpy(weights["Transformer/posembed_input/pos_embedding"])[0, 1:].reshape(4, 4, -1)
    new = model.position_embedding.detach()[0].reshape(2, 2, -1)
    # corners aligned (ndimage.zoom order 1): the 2×2 grid is exactly the 4×4 grid's corners
    torch.testing.assert_close(new, old[::3, ::3])


def test_load_r50_vit_npz_rejects_wrong_shapes(tmp_path):
    model = tiny("none")
    weights = fake_r50_vit_npz(model, posemb_side=2)
    weights["embedding/bias"] = np.zeros(7, np.float32)
    np.savez(tmp_path / "w.npz", **weights)
    with pytest.raises(WeightsError, match=r"w\.npz: embedding/bias: checkpoint shape \(7,\)"):
        load_r50_vit_npz(model, str(tmp_path / "w.npz"))


def test_load_r50_vit_npz_names_a_missing_file_or_array(tmp_path):
    model = tiny("none")
    with pytest.raises(MissingPathError, match="never downloaded"):
        load_r50_vit_npz(model, str(tmp_path / "absent.npz"))
    weights = fake_r50_vit_npz(model, posemb_side=2)
    del weights["Transformer/encoder_norm/scale"]
    np.savez(tmp_path / "partial.npz", **weights)
    with pytest.raises(WeightsError, match="partial.npz: not an R50.ViT-B_16 npz .no array 'Transformer/encoder_norm/scale'"):
        load_r50_vit_npz(model, str(tmp_path / "partial.npz"))


# --------------------------------------------------------------------------------------------------- released keys
_DANET_RELEASED = {
    "position_in.conv.": "conv5a.0.",
    "position_in.bn.": "conv5a.1.",
    "position_attention.query_project.": "sa.query_conv.",
    "position_attention.key_project.": "sa.key_conv.",
    "position_attention.value_project.": "sa.value_conv.",
    "position_attention.gamma": "sa.gamma",
    "position_out.conv.": "conv51.0.",
    "position_out.bn.": "conv51.1.",
    "channel_in.conv.": "conv5c.0.",
    "channel_in.bn.": "conv5c.1.",
    "channel_attention.gamma": "sc.gamma",
    "channel_out.conv.": "conv52.0.",
    "channel_out.bn.": "conv52.1.",
    "output.conv.": "conv8.1.",
}


def released_style(model: DATransUnet) -> dict[str, torch.Tensor]:
    """Our state dict under the released key names (hand-written from the released modules), dead heads added."""
    out = {}

    def danet(prefix, key, value):
        for ours, theirs in _DANET_RELEASED.items():
            if key.startswith(ours):
                out[prefix + theirs + key[len(ours) :]] = value
                return
        raise AssertionError(key)

    for key, value in model.state_dict().items():
        if key.startswith("resnet."):
            out["transformer.embeddings.hybrid_model." + key[len("resnet.") :]] = value
        elif key.startswith("patch_embedding."):
            out["transformer.embeddings.patch_embeddings." + key.split(".", 1)[1]] = value
        elif key == "position_embedding":
            out["transformer.embeddings.position_embeddings"] = value
        elif key.startswith("embedding_attention."):
            danet("transformer.embeddings.DAblock1.", key.split(".", 1)[1], value)
        elif m := re.match(r"layers\.(\d+)\.attn\.qkv\.(weight|bias)", key):
            for name, part in zip(("query", "key", "value"), value.chunk(3, 0)):
                out[f"transformer.encoder.layer.{m.group(1)}.attn.{name}.{m.group(2)}"] = part
        elif key.startswith("layers."):
            out["transformer.encoder.layer." + key[len("layers.") :].replace("attn.proj.", "attn.out.")] = value
        elif key.startswith("encoder_norm."):
            out["transformer.encoder." + key] = value
        elif key.startswith("conv_more."):
            out["decoder.conv_more." + key.split(".", 1)[1].replace("conv.", "0.").replace("bn.", "1.")] = value
        elif m := re.match(r"decoder_blocks\.(\d+)\.skip_attention\.(.*)", key):
            danet(f"decoder.blocks.{m.group(1)}.{'da3' if m.group(1) == '0' else 'da2'}.", m.group(2), value)
        elif m := re.match(r"decoder_blocks\.(\d+)\.(conv[12])\.(conv|bn)\.(.*)", key):
            i, conv, part, rest = m.groups()
            out[f"decoder.blocks.{i}.{conv}.{0 if part == 'conv' else 1}.{rest}"] = value
        elif key.startswith("segmentation_head."):
            out["segmentation_head.0." + key.split(".", 1)[1]] = value
        else:
            raise AssertionError(key)
    # modules the released forward never runs
    out["transformer.embeddings.DAblock1.conv6.1.weight"] = torch.zeros(3)
    out["transformer.embeddings.DAblock1.conv7.1.bias"] = torch.zeros(3)
    out["decoder.blocks.0.da.conv5a.0.weight"] = torch.zeros(3)
    out["decoder.blocks.1.da3.sa.gamma"] = torch.zeros(1)
    out["decoder.blocks.3.da2.conv8.1.bias"] = torch.zeros(3)
    return out


def test_convert_released_state_dict_roundtrip():
    source = tiny("sts", seed=3)
    target = tiny("none", seed=4)
    target.load_state_dict(convert_released_da_transunet_state_dict(released_style(source)), strict=True)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value)
