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
