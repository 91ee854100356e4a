"""DSNet's ResNet backbones and segmentation heads (papers.md §002).

Reproducibility tuples of the seed README, asserted exactly as printed (M/G = 10^6/10^9, rounded as printed), with
parameter counts of the whole model and FLOPs by fvcore's rules (``medattn_networks.engine.flops``, batch 1, eval):

- ImageNet 224², V1b classifier, FLOPs of backbone + global pool (mmpretrain's ``extract_feat``; fc excluded).
- Cityscapes 512×1024, 19 classes, V1c-D8 FCN, FLOPs to the 1/8 logits. The auxiliary FCN head of mmseg's config
  is not counted: DPC-Net's ``tools/analysis_tools/get_flops.py`` sets ``model.auxiliary_head = None``.

Full-size nets are built through the factories bundles use and only counted (under FakeTensorMode), never run.
Tiny nets (base width 16) run forward/backward for every head and plugin slot.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn as nn

from medattn_networks.attention.registry import create_attention
from medattn_networks.engine.flops import count_flops, count_params
from medattn_networks.nets.fcn import SEGMENTATION_HEADS, FCNHead, SegmentationNet, build_head, fcn_resnet50
from medattn_networks.nets.resnet import ResNet, convert_mmseg_state_dict, load_pretrained, resnet50_classifier

ALL_STAGES = (True, True, True, True)
STAGE4 = (False, False, False, True)

# ------------------------------------------------------------------------------------------- reproducibility tuples
# "DSNet50-A"/"DSNet50-B": the README's ImageNet rows are swapped relative to the configs' names (papers.md §002):
# A = DSM ratio 16, bias False, all stages at after_conv2 (the released r50_ex_b config says after_conv1, which gives
# 4.495G, not 4.357G); B = the ex_a config (ratio 2, bias True, stage 4, after_conv2).
IMAGENET = {
    "ResNet50": (dict(), 25.557, 4.109),
    "DSNet50-A": (
        dict(
            plugin="dsm", plugin_stages=ALL_STAGES, plugin_position="after_conv2", plugin_kwargs={"ratio": 16, "bias": False}
        ),
        27.369,
        4.357,
    ),
    "DSNet50-B": (
        dict(
            plugin="dsm", plugin_stages=STAGE4, plugin_position="after_conv2", plugin_kwargs={"ratio": 2, "bias": True}
        ),
        29.106,
        4.208,
    ),
}
FCANET_KWARGS = dict(plugin="fca", plugin_stages=ALL_STAGES, plugin_position="after_conv3")
# The released FcaNet-50 backbone keeps its own (unused) 2048→1000 classifier next to the model's head.
FCANET_UNUSED_FC = 2048 * 1000 + 1000

# Cityscapes rows: the DSNet50-A row is new_configs/dsnet/fcn_r50_ex_a_40k_cityscapes.py (ratio 2, bias True,
# stage 4, after_conv2): +3 × 1,182,977 parameters over FCN, matching 50.68M.
CITYSCAPES = {
    "FCN R50-V1c-D8": (dict(), 47.13, 395.76),
    "FcaNet50": (FCANET_KWARGS, 49.65, 395.91),
    "DSNet50-A": (dict(plugin="dsm", plugin_kwargs={"ratio": 2, "bias": True}), 50.68, 411.91),
}


def _imagenet_counts(**kwargs) -> tuple[int, int]:
    model = resnet50_classifier(**kwargs)
    return count_params(model), count_flops(model, (1, 3, 224, 224), forward=model.forward_features)


@pytest.mark.parametrize("row", sorted(IMAGENET))
def test_imagenet_tuples(row):
    kwargs, params_m, flops_g = IMAGENET[row]
    params, flops = _imagenet_counts(**kwargs)
    assert round(params / 1e6, 3) == params_m
    assert round(flops / 1e9, 3) == flops_g


def test_fca_skips_the_pool_at_its_dct_size():
    """FcaNet pools only maps larger than the DCT size; fvcore counts a pool at 1 FLOP per input element."""
    module = create_attention("fca", 2, 32, dct_size=7)
    _, ops = count_flops(module, (1, 32, 7, 7), by_operator=True)
    assert ops.get("adaptive_avg_pool", 0) == 0
    _, ops = count_flops(module, (1, 32, 14, 14), by_operator=True)
    assert ops.get("adaptive_avg_pool", 0) == 32 * 14 * 14


@functools.lru_cache(maxsize=1)
def _fcanet_imagenet_counts() -> tuple[int, int]:
    return _imagenet_counts(**FCANET_KWARGS)


def test_imagenet_fcanet_params():
    params, _ = _fcanet_imagenet_counts()
    assert round((params + FCANET_UNUSED_FC) / 1e6, 3) == 30.121


def test_imagenet_fcanet_flops():
    _, flops = _fcanet_imagenet_counts()
    assert round(flops / 1e9, 3) == 4.112


@pytest.mark.parametrize("row", sorted(CITYSCAPES))
def test_cityscapes_tuples(row):
    kwargs, params_m, flops_g = CITYSCAPES[row]
    model = fcn_resnet50(19, upsample=False, **kwargs)
    assert round(count_params(model) / 1e6, 2) == params_m
    assert round(count_flops(model, (1, 3, 512, 1024)) / 1e9, 2) == flops_g


def test_cityscapes_count_excludes_the_auxiliary_head():
    with_aux = fcn_resnet50(19, aux_head=True)
    aux = count_params(with_aux.auxiliary_head)
    # FCNHead(1024 → 256, one 3×3 conv, no concat): 9·1024·256 + 2·256 + 256·19 + 19
    assert aux == 2_364_691
    assert count_params(with_aux) - aux == 47_133_043  # the paper's 47.13M is without it
    assert round(count_params(with_aux) / 1e6, 2) == 49.50


# ----------------------------------------------------------------------------------------------- backbone structure
def _dilations(layer: nn.Sequential) -> list[int]:
    return [int(block.conv2.dilation[0]) for block in layer]


def test_v1c_d8_layout():
    net = ResNet(2, 3, stem="v1c", dilated=True)
    stem_convs = [m for m in net.stem if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in stem_convs] == [
        (3, 32, 3, 2),
        (32, 32, 3, 1),
        (32, 64, 3, 1),
    ]
    assert isinstance(net.conv1, nn.Identity)
    assert _dilations(net.layer1) == [1, 1, 1]
    assert _dilations(net.layer2) == [1, 1, 1, 1]
    assert _dilations(net.layer3) == [1, 2, 2, 2, 2, 2]
    assert _dilations(net.layer4) == [2, 4, 4]
    assert [int(layer[0].conv2.stride[0]) for layer in (net.layer1, net.layer2, net.layer3, net.layer4)] == [1, 2, 1, 1]
    assert [int(layer[0].conv1.stride[0]) for layer in (net.layer2, net.layer3)] == [1, 1]  # pytorch style
    assert net.out_channels == [256, 512, 1024, 2048]


def test_v1b_stem_and_torchvision_names():
    model = resnet50_classifier()
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    keys = list(model.state_dict())
    bn_entries = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    expected = ["conv1.weight"] + [f"bn1.{s}" for s in bn_entries]
    assert keys[:6] == expected
    assert keys[-2:] == ["fc.weight", "fc.bias"]
    assert len(keys) == 320  # torchvision's resnet50 state dict size
    assert "layer3.5.conv2.weight" in keys and "layer4.0.downsample.1.running_var" in keys


def test_plugin_slots_and_channels():
    for position, channels in (("after_conv1", 64), ("after_conv2", 64), ("after_conv3", 256)):
        net = ResNet(2, 3, base_channels=8, plugin="gc", plugin_stages=STAGE4, plugin_position=position)
        block = net.layer4[1]
        plugin = getattr(block, position)
        assert plugin.conv_mask.in_channels == channels
        slots = ("after_conv1", "after_conv2", "after_conv3")
        assert all(isinstance(getattr(net.layer3[0], p), nn.Identity) for p in slots)
    net = ResNet(2, 3, base_channels=16, plugin="dsm", plugin_stages=ALL_STAGES, plugin_position="after_conv1")
    stages = (net.layer1, net.layer2, net.layer3, net.layer4)
    assert [layer[0].after_conv1.channels for layer in stages] == [16, 32, 64, 128]


def test_fca_dct_size_follows_the_stage():
    net = ResNet(2, 3, stem="v1b", dilated=False, base_channels=16, stem_channels=16, **FCANET_KWARGS)
    sizes = [layer[0].after_conv3.dct_size for layer in (net.layer1, net.layer2, net.layer3, net.layer4)]
    assert sizes == [[56, 56], [28, 28], [14, 14], [7, 7]]


def test_argument_checks():
    with pytest.raises(ValueError, match="plugin_position"):
        ResNet(2, plugin="se", plugin_position="after_conv4")
    with pytest.raises(ValueError, match="stem"):
        ResNet(2, stem="v1d")
    with pytest.raises(ValueError, match="plugin_stages"):
        ResNet(2, plugin="se", plugin_stages=(True, False))
    with pytest.raises(KeyError, match="known heads"):
        build_head("pspnet", 2, 2048, 512, 2)


# ---------------------------------------------------------------------------------------------------- weights
def test_load_pretrained_torchvision_layout(tmp_path):
    source = resnet50_classifier(stem="v1b")
    path = tmp_path / "resnet50.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    # strict into a classifier with the same names
    target = resnet50_classifier(stem="v1b")
    report = load_pretrained(target, str(path), strict=True)
    assert not report["missing"] and not report["unexpected"]
    assert torch.equal(target.layer2[0].conv2.weight, source.layer2[0].conv2.weight)
    # backbone of a segmentation net with a plugin: fc unused, plugin left at init
    net = fcn_resnet50(2, stem="v1b", plugin="dsm", pretrained=str(path))
    assert torch.equal(net.backbone.layer4[2].conv3.weight, source.layer4[2].conv3.weight)
    report = load_pretrained(net.backbone, source.state_dict())
    assert "fc.weight" in report["unexpected"]
    assert any(".after_conv2." in k for k in report["missing"])
    with pytest.raises(FileNotFoundError):
        load_pretrained(net.backbone, str(tmp_path / "missing.pth"))


def _tiny_backbone(**kwargs) -> ResNet:
    return ResNet(2, 3, base_channels=8, stem_channels=16, **kwargs)


def test_convert_mmseg_state_dict():
    ours = SegmentationNet(
        _tiny_backbone(plugin="dsm", plugin_kwargs={"ratio": 2, "bias": True}), build_head("dsnet", 2, 256, 32, 3)
    )
    # mmseg's names for the same weights
    mmseg = {"data_preprocessor.mean": torch.zeros(3)}
    for key, value in ours.state_dict().items():
        key = key.replace(".after_conv2.", ".dsa.").replace("decode_head.attention.", "decode_head.dsn_block.")
        mmseg[key] = value.clone()
    converted = convert_mmseg_state_dict({"state_dict": mmseg}, plugin_names={"dsa": "after_conv2"})
    fresh = SegmentationNet(
        _tiny_backbone(plugin="dsm", plugin_kwargs={"ratio": 2, "bias": True}), build_head("dsnet", 2, 256, 32, 3)
    )
    fresh.load_state_dict(converted, strict=True)
    with pytest.raises(KeyError, match="plugin_names"):
        convert_mmseg_state_dict(mmseg)
    ham = {
        "decode_head.ham_in.conv.weight": torch.zeros(1),
        "decode_head.ham_out.gn.bias": torch.zeros(1),
        "decode_head.pam.gamma.scale": torch.tensor(0.5),
    }
    assert set(convert_mmseg_state_dict(ham)) == {
        "decode_head.ham.ham_in.weight",
        "decode_head.ham.ham_out.1.bias",
        "decode_head.pam.gamma",
    }


# DSNet's comparison rows SE / CBAM / EncNet (configs/{se,cbam,encnet}/fcn_r50-*-d8_1xb2-40k_synapse-512x512.py of
# DPC-Net 9eb75a4): the plugin sits after conv1 of every bottleneck of every stage; mmcv names it after its class
# (se_layer, cbam, enc_module). Inverse naming, written here independently of the converter: our key inside the
# plugin → the released one.
RELEASED_PLUGIN_NAMES = {
    "se_mmseg": ("se_layer", {"conv1.": "conv1.conv.", "conv2.": "conv2.conv."}, {}),
    "cbam": (
        "cbam",
        {
            "mlp.0.": "ChannelGate.mlp.1.",
            "mlp.2.": "ChannelGate.mlp.3.",
            "spatial_conv.": "SpatialGate.spatial.conv.",
            "spatial_norm.": "SpatialGate.spatial.bn.",
        },
        {"reduction": 4},  # the tiny net's 8-channel stage would give the released C // 16 = 0 hidden units
    ),
    "enc": (
        "enc_module",
        {
            "project.0.": "encoding_project.conv.",
            "project.1.": "encoding_project.bn.",
            "codewords": "encoding.0.codewords",
            "scale": "encoding.0.scale",
            "code_norm.": "encoding.1.",
            "fc.": "fc.0.",
        },
        {"num_codes": 6},
    ),
}
RESNET_BLOCKS_50 = (3, 4, 6, 3)
_BN_LEAVES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# The released keys of one plugin, listed explicitly (mmcv ConvModule: conv[/bn]; CBAM's mlp = Flatten, Linear,
# ReLU, Linear; SpatialGate.spatial = BasicConv(conv, bn); EncModule.encoding = Encoding, BN1d, ReLU; fc = Linear,
# Sigmoid).
RELEASED_PLUGIN_KEYS = {
    "se_layer": {"conv1.conv.weight", "conv1.conv.bias", "conv2.conv.weight", "conv2.conv.bias"},
    "cbam": {
        "ChannelGate.mlp.1.weight",
        "ChannelGate.mlp.1.bias",
        "ChannelGate.mlp.3.weight",
        "ChannelGate.mlp.3.bias",
        "SpatialGate.spatial.conv.weight",
    }
    | {f"SpatialGate.spatial.bn.{leaf}" for leaf in _BN_LEAVES},
    "enc_module": {
        "encoding_project.conv.weight",
        "encoding.0.codewords",
        "encoding.0.scale",
        "fc.0.weight",
        "fc.0.bias",
    }
    | {f"encoding_project.bn.{leaf}" for leaf in _BN_LEAVES}
    | {f"encoding.1.{leaf}" for leaf in _BN_LEAVES},
}


def _released_shape(released: str, rest: str, channels: int, kwargs: dict) -> tuple[int, ...] | None:
    """Shapes of the released plugins' main tensors at C channels (from their constructors), None if not checked."""
    if released == "se_layer":
        hidden = max(8, int(channels // 16 + 4) // 8 * 8)  # make_divisible(C // 16, 8) (never below 0.9·value here)
        return {"conv1.conv.weight": (hidden, channels, 1, 1), "conv2.conv.weight": (channels, hidden, 1, 1)}.get(rest)
    if released == "cbam":
        hidden = channels // kwargs["reduction"]
        return {
            "ChannelGate.mlp.1.weight": (hidden, channels),
            "ChannelGate.mlp.3.weight": (channels, hidden),
            "SpatialGate.spatial.conv.weight": (1, 2, 7, 7),
        }.get(rest)
    codes = kwargs["num_codes"]
    return {
        "encoding_project.conv.weight": (channels, channels, 1, 1),
        "encoding.0.codewords": (codes, channels),
        "encoding.0.scale": (codes,),
        "encoding.1.running_mean": (codes,),
        "fc.0.weight": (channels, channels),
    }.get(rest)


def _plugin_net(plugin: str, kwargs: dict) -> SegmentationNet:
    backbone = _tiny_backbone(
        plugin=plugin, plugin_stages=ALL_STAGES, plugin_position="after_conv1", plugin_kwargs=kwargs
    )
    return SegmentationNet(backbone, build_head("fcn", 2, backbone.out_channels[-1], 32, 3))


def _released_checkpoint(plugin: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A state dict with DPC-Net's names (and unique values per tensor) and the map released key → our key."""
    released, inverse, kwargs = RELEASED_PLUGIN_NAMES[plugin]
    ours = _plugin_net(plugin, kwargs).state_dict()
    checkpoint: dict[str, torch.Tensor] = {"data_preprocessor.mean": torch.zeros(3)}
    where: dict[str, str] = {}
    per_block: dict[str, set[str]] = {}
    for i, (key, value) in enumerate(ours.items()):
        name = key
        if ".after_conv1." in key:
            block, rest = key.split(".after_conv1.")
            old = [o for o in inverse if rest.startswith(o)]
            assert len(old) == 1, key
            rest = inverse[old[0]] + rest[len(old[0]) :]
            per_block.setdefault(block, set()).add(rest)
            name = f"{block}.{released}.{rest}"
            stage = int(block.split(".")[1][len("layer") :])
            shape = _released_shape(released, rest, 8 * 2 ** (stage - 1), kwargs)
            if shape is not None:
                assert tuple(value.shape) == shape, (name, tuple(value.shape), shape)
        if value.dtype == torch.long:
            tensor = torch.tensor(i, dtype=torch.long)  # num_batches_tracked
        else:
            tensor = torch.rand(value.shape, dtype=value.dtype) + i  # values of tensor i lie in [i, i + 1)
        checkpoint[name] = tensor
        where[name] = key
    assert len(per_block) == sum(RESNET_BLOCKS_50)
    assert all(keys == RELEASED_PLUGIN_KEYS[released] for keys in per_block.values())
    return checkpoint, where


@pytest.mark.parametrize("plugin", sorted(RELEASED_PLUGIN_NAMES))
def test_convert_released_se_cbam_enc_plugins(plugin):
    torch.manual_seed(0)
    released, _, kwargs = RELEASED_PLUGIN_NAMES[plugin]
    checkpoint, where = _released_checkpoint(plugin)
    converted = convert_mmseg_state_dict({"state_dict": checkpoint}, plugin_names={released: "after_conv1"})
    assert len(converted) == len(checkpoint) - 1  # every key but data_preprocessor lands, none twice
    net = _plugin_net(plugin, kwargs)
    result = net.load_state_dict(converted, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    loaded = net.state_dict()
    for name, key in where.items():
        assert torch.equal(loaded[key], checkpoint[name]), (name, key)
    # spot checks on named tensors
    block = net.backbone.layer3[4].after_conv1
    prefix = f"backbone.layer3.4.{released}."
    if plugin == "se_mmseg":
        assert torch.equal(block.conv2.bias, checkpoint[prefix + "conv2.conv.bias"])
    elif plugin == "cbam":
        assert torch.equal(block.mlp[2].weight, checkpoint[prefix + "ChannelGate.mlp.3.weight"])
        assert torch.equal(block.spatial_norm.running_var, checkpoint[prefix + "SpatialGate.spatial.bn.running_var"])
    else:
        assert torch.equal(block.codewords, checkpoint[prefix + "encoding.0.codewords"])
        assert torch.equal(block.code_norm.running_mean, checkpoint[prefix + "encoding.1.running_mean"])


def test_convert_released_plugin_errors():
    checkpoint, _ = _released_checkpoint("cbam")
    with pytest.raises(KeyError, match="plugin_names"):
        convert_mmseg_state_dict(checkpoint)
    with pytest.raises(ValueError, match="after_conv1"):
        convert_mmseg_state_dict(checkpoint, plugin_names={"cbam": "conv1"})
    # a key the released CBAM does not have (or ours has no equivalent of)
    bad = dict(checkpoint)
    bad["backbone.layer2.1.cbam.ChannelGate.mlp.5.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match=r"unknown key 'ChannelGate\.mlp\.5\.weight' of the released 'cbam' plugin"):
        convert_mmseg_state_dict(bad, plugin_names={"cbam": "after_conv1"})
    with pytest.raises(KeyError, match="'se_layer' plugin"):
        convert_mmseg_state_dict(
            {"backbone.layer1.0.se_layer.conv1.bn.weight": torch.zeros(8)}, plugin_names={"se_layer": "after_conv1"}
        )
    with pytest.raises(KeyError, match="'enc_module' plugin"):
        convert_mmseg_state_dict(
            {"backbone.layer1.0.enc_module.encoding.0.bias": torch.zeros(8)}, plugin_names={"enc_module": "after_conv1"}
        )
    # CBAM(no_spatial=True): no SpatialGate, which ours always has
    no_spatial = {k: v for k, v in checkpoint.items() if ".SpatialGate." not in k}
    with pytest.raises(ValueError, match="no_spatial"):
        convert_mmseg_state_dict(no_spatial, plugin_names={"cbam": "after_conv1"})


# ------------------------------------------------------------------------------------------ tiny forward / backward
HEAD_KWARGS = {
    "fcn": {},
    "dsnet": {},
    "danet": {"pam_channels": 8},
    "ccnet": {},
    "gcnet": {},
    "hamnet": {"ham_channels": 32, "ham_kwargs": {"rank": 8}},
    "eanet": {"memory_units": 16},
}


def _tiny_net(head: str, deep_supervision: bool = False, aux: bool = False, **backbone_kwargs) -> SegmentationNet:
    backbone = _tiny_backbone(**backbone_kwargs)
    decode = build_head(head, 2, backbone.out_channels[-1], 32, 3, **HEAD_KWARGS[head])
    aux_head = FCNHead(2, backbone.out_channels[2], 16, 3, num_convs=1, concat_input=False, in_index=2) if aux else None
    return SegmentationNet(backbone, decode, aux_head, deep_supervision=deep_supervision)


def _forward_backward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    net.train()
    out = net(x)
    out.float().mean().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads if g is not None)
    return out


def test_heads_cover_the_comparison():
    assert set(SEGMENTATION_HEADS) == {"fcn", "dsnet", "danet", "ccnet", "gcnet", "hamnet", "eanet"}


@pytest.mark.parametrize("head", sorted(HEAD_KWARGS))
def test_head_forward_backward(head):
    torch.manual_seed(0)
    net = _tiny_net(head)
    x = torch.randn(2, 3, 64, 64)
    out = _forward_backward(net, x)
    assert out.shape == (2, 3, 64, 64)
    assert net.backbone.layer1[0].conv1.weight.grad is not None
    net.eval()
    net.upsample = False
    with torch.no_grad():
        assert net(x).shape == (2, 3, 8, 8)  # logits at 1/8 (D8)


@pytest.mark.parametrize("position", ["after_conv1", "after_conv2", "after_conv3"])
@pytest.mark.parametrize("plugin", ["dsm", "se_mmseg", "psa_p"])
def test_plugin_positions_forward_backward(plugin, position):
    torch.manual_seed(0)
    net = _tiny_net("fcn", plugin=plugin, plugin_stages=ALL_STAGES, plugin_position=position)
    out = _forward_backward(net, torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 3, 64, 64)
    plugin_module = getattr(net.backbone.layer3[1], position)
    assert not isinstance(plugin_module, nn.Identity)
    assert all(p.grad is not None for p in plugin_module.parameters())


def test_deep_supervision_and_aux_head():
    net = _tiny_net("danet", deep_supervision=True, aux=True)
    out = _forward_backward(net, torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 4, 3, 32, 32)  # DANet main, PAM, CAM, auxiliary
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_factory_full_width_forward_and_torchscript():
    net = fcn_resnet50(4, in_channels=1, head="dsnet", plugin="dsm", plugin_kwargs={"ratio": 2, "bias": True})
    net.eval()
    x = torch.randn(1, 1, 32, 48)
    with torch.no_grad():
        out = net(x)
        assert out.shape == (1, 4, 32, 48)
        scripted = torch.jit.script(net)
        assert torch.allclose(scripted(x), out, atol=1e-5)


def test_3d_backbone_builds_and_runs():
    net = SegmentationNet(
        ResNet(3, 1, base_channels=4, stem_channels=8, plugin="dsm"), build_head("fcn", 3, 128, 8, 2)
    )
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 16, 16, 16)).shape == (1, 2, 16, 16, 16)
