"""The MAM Synapse bundles (seed 000) beyond the generic verifier checks.

The recipe as configured (TransUNet's Dice + CE weights, poly schedule over whole passes), the memory switch, the
ACDC overlay on the shared data, the benchmark variants, and the published cost of Swin-Unet (41.3M / 8.7G, no
extra parameter or FLOP for MAM). Nothing under bundles/ is written.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "ci"))

import benchmark as bm  # noqa: E402
import verify_bundles as vb  # noqa: E402

from medattn_networks.attention.memory import MemoryWindowAttention  # noqa: E402
from medattn_networks.blocks.transformer import WindowAttention  # noqa: E402
from medattn_networks.data import make_synapse_transunet  # noqa: E402
from medattn_networks.engine import count_flops, count_params  # noqa: E402
from medattn_networks.nets import SwinUnet  # noqa: E402

SWIN = "swin_unet_mam_synapse"
ACDC_DATA = REPO_ROOT.parent / "shared" / "data" / "acdc"
SMALL = {"roi_size": [64, 64]}


def _transunet_loss(logits: torch.Tensor, label: torch.Tensor, ce_weight: float, dice_weight: float) -> torch.Tensor:
    """TransUNet / Swin-Unet's loss written out: CE + mean over classes of 1 − (2Σpt + s)/(Σp² + Σt² + s), batch sums."""
    probs = logits.softmax(1)
    smooth = 1e-5
    dice = 0.0
    for c in range(logits.shape[1]):
        p, t = probs[:, c], (label == c).float()
        dice = dice + 1 - (2 * (p * t).sum() + smooth) / ((p * p).sum() + (t * t).sum() + smooth)
    return ce_weight * F.cross_entropy(logits, label) + dice_weight * dice / logits.shape[1]


def test_loss_is_transunets_weighted_dice_and_ce():
    loss = vb.bundle_parser(vb.bundle_path(SWIN), "train.json", SMALL).get_parsed_content("loss")
    torch.manual_seed(0)
    logits, label = torch.randn(3, 9, 16, 16), torch.randint(0, 9, (3, 16, 16))
    expected = _transunet_loss(logits, label, 0.4, 0.6)
    assert torch.allclose(loss(logits, label[:, None]), expected, atol=1e-6)
    assert not torch.allclose(loss(logits, label[:, None]), _transunet_loss(logits, label, 0.5, 0.5), atol=1e-4)


def test_schedule_spans_whole_passes_and_validates_once(tmp_path):
    data = make_synapse_transunet(tmp_path / "syn", ("case0005", "case0006"), ("case0008",), shape=(20, 24, 5))
    overrides = {**SMALL, "dataset_dir": str(data), "batch_size": 2, "num_workers": 0, "run_dir": str(tmp_path / "run")}
    parser = vb.bundle_parser(vb.bundle_path(SWIN), "train.json", overrides)
    loader = parser.get_parsed_content("train#dataloader")
    assert len(loader) == 5  # 10 slices, batch 2
    scheduler = parser.get_parsed_content("lr_scheduler")
    assert scheduler.total_iters == 150 * len(loader)
    assert scheduler.optimizer.param_groups[0]["initial_lr"] == 0.05
    assert parser.get_parsed_content("val_interval") == parser.get_parsed_content("epochs")


@pytest.mark.parametrize("memory, attention, params", [("none", WindowAttention, 9), ("ists", MemoryWindowAttention, 9), ("sts", MemoryWindowAttention, 9)])
def test_memory_switch_builds_the_chosen_attention(memory, attention, params):
    parser = vb.bundle_parser(vb.bundle_path(SWIN), "inference.json", {**SMALL, "memory": memory})
    net = parser.get_parsed_content("network_def")
    encoder = {type(m) for m in net.layers.modules() if isinstance(m, WindowAttention)}
    decoder = {type(m) for m in net.layers_up.modules() if isinstance(m, WindowAttention)}
    assert encoder == {attention} and decoder == {WindowAttention}
    assert net.output.out_channels == params
    assert (net.memory_merge is not None) == (memory == "sts")


def test_a_sam_checkpoint_of_the_bundle_loads_into_the_mam_network():
    build = lambda memory: vb.bundle_parser(vb.bundle_path(SWIN), "inference.json", {**SMALL, "memory": memory}).get_parsed_content("network_def")  # noqa: E731
    sam, mam = build("none"), build("ists")
    mam.load_state_dict(sam.state_dict(), strict=True)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(sam.eval()(x), mam.eval()(x), atol=1e-4)


@pytest.mark.skipif(not (ACDC_DATA / "train_slices.list").is_file(), reason=f"shared ACDC data absent at {ACDC_DATA}")
def test_acdc_overlay_reads_the_shared_data():
    parser = vb.bundle_parser(vb.bundle_path(SWIN), ["train.json", "acdc.json"], {"roi_size": [112, 112]})
    assert Path(parser.get_parsed_content("dataset_dir")).resolve() == ACDC_DATA.resolve()
    train = parser.get_parsed_content("train#dataset#data")
    val = parser.get_parsed_content("validate#dataset#data")
    assert len(train) == 1312 and len(val) == 20
    item = parser.get_parsed_content("train#preprocessing")(train[0])
    assert item["image"].shape == (3, 112, 112) and set(torch.unique(item["label"]).tolist()) <= {0, 1, 2, 3}
    assert parser.get_parsed_content("network_def").output.out_channels == 4
    assert parser.get_parsed_content("class_names")[1:] == ["right_ventricle", "myocardium", "left_ventricle"]


def test_benchmark_variants_switch_memory_and_attention_path():
    candidates, reference = bm.network_candidates(SWIN, torch.device("cpu"), train=False, roi_size=[32, 32], values=["ists", "ists+plain"])
    assert reference == "memory=none" and [c.name for c in candidates] == ["memory=none", "memory=ists", "memory=ists+plain"]
    fused = [{m.fused for m in c.module.modules() if isinstance(m, WindowAttention)} for c in candidates]
    assert fused == [{True}, {True}, {False}]
    assert len({count_params(c.module) for c in candidates}) == 1


@pytest.mark.slow
def test_swin_unet_cost_matches_the_published_table():
    """41.3M / 8.7G (the table's Swin-T depths): 8.7G counts the Linear and conv multiply-adds only; the fvcore-rule
    count adds the attention matmuls and LayerNorm. MAM costs nothing extra in either."""
    counts = {}
    for memory in ("none", "ists"):
        net = SwinUnet(memory=memory).eval()
        macs = []

        def linear(module, inputs, output):
            macs.append(output.numel() // module.out_features * module.in_features * module.out_features)

        def conv(module, inputs, output):
            macs.append(output.numel() * module.weight[0].numel())

        hooks = [m.register_forward_hook(linear if isinstance(m, nn.Linear) else conv) for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        with torch.no_grad():
            net(torch.zeros(1, 3, 224, 224))
        for h in hooks:
            h.remove()
        counts[memory] = (count_params(net), sum(macs), count_flops(net, (1, 3, 224, 224)))
    assert counts["none"] == counts["ists"]
    params, layer_macs, flops = counts["none"]
    assert params == 41_380_836 and int(params / 1e5) / 10 == 41.3  # the table truncates to 41.3M
    assert layer_macs == 8_670_412_800 and round(layer_macs / 1e9, 1) == 8.7
    assert flops == 9_003_719_424


@pytest.mark.slow
def test_da_transunet_cost_is_the_same_with_and_without_memory():
    """106,438,039 parameters = the released 107,951,855 minus its 1,513,816 unreachable ones; 30.20 GFLOPs both ways."""
    from medattn_networks.nets import DATransUnet

    counts = {memory: (count_params(net), count_flops(net, (1, 3, 224, 224))) for memory in ("none", "sts") for net in [DATransUnet(memory=memory)]}
    assert counts["none"] == counts["sts"] == (107_951_855 - 1_513_816, 30_204_769_376)


# ------------------------------------------------------------------------------------------ swinunetr_mam_flare
FLARE = "swinunetr_mam_flare"
HIPPOCAMPUS_DATA = REPO_ROOT.parent / "shared" / "data" / "msd_hippocampus"


def test_flare_network_is_monais_swinunetr_with_the_same_keys():
    from monai.networks.nets import SwinUNETR

    overrides = {"roi_size": [64, 64, 64], "feature_size": 12}
    mam = vb.bundle_parser(vb.bundle_path(FLARE), "inference.json", overrides).get_parsed_content("network_def")
    sam = vb.bundle_parser(vb.bundle_path(FLARE), "inference.json", {**overrides, "memory": "none"}).get_parsed_content("network_def")
    monai_net = SwinUNETR(in_channels=1, out_channels=5, feature_size=12, use_flash_attention=True)
    mam.load_state_dict(monai_net.state_dict(), strict=True)
    sam.load_state_dict(monai_net.state_dict(), strict=True)
    x = torch.rand(1, 1, 64, 64, 64)
    with torch.no_grad():
        reference = monai_net.eval()(x)
        assert torch.equal(sam.eval()(x), reference)
        assert not torch.allclose(mam.eval()(x), reference, atol=1e-4)


@pytest.mark.skipif(not (HIPPOCAMPUS_DATA / "imagesTr").is_dir(), reason=f"shared hippocampus data absent at {HIPPOCAMPUS_DATA}")
def test_flare_hippocampus_overlay_reads_the_shared_data():
    parser = vb.bundle_parser(vb.bundle_path(FLARE), ["train.json", "hippocampus.json"])
    train = parser.get_parsed_content("train#dataset#data")
    val = parser.get_parsed_content("validate#dataset#data")
    assert len(train) == 160 and len(val) == 40 and not {t["image"] for t in train} & {v["image"] for v in val}
    crops = parser.get_parsed_content("train#preprocessing")(train[0])
    assert len(crops) == 2 and all(c["image"].shape == (1, 32, 64, 32) for c in crops)  # two pos/neg crops per case
    assert parser.get_parsed_content("network_def").out.conv.conv.out_channels == 3


@pytest.mark.skipif(not (HIPPOCAMPUS_DATA / "imagesTr").is_dir(), reason=f"shared hippocampus data absent at {HIPPOCAMPUS_DATA}")
@pytest.mark.parametrize("memory, weights", [("ists", "hippocampus_ists.pt"), ("none", "hippocampus_sam.pt")])
def test_shipped_hippocampus_weights_segment_held_out_cases(memory, weights):
    """The committed comparison weights load strictly and segment 4 of the 40 held-out cases (card: mean 0.85)."""
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    from medattn_networks.engine import load_weights

    parser = vb.bundle_parser(vb.bundle_path(FLARE), ["train.json", "hippocampus.json"], {"memory": memory})
    net = parser.get_parsed_content("network_def").eval()
    load_weights(net, str(vb.bundle_path(FLARE) / "models" / weights), torch.device("cpu"))
    items = parser.get_parsed_content("validate#dataset#data")[:4]
    preprocess, inferer = parser.get_parsed_content("validate#preprocessing"), parser.get_parsed_content("validate#inferer")
    dice = DiceMetric(include_background=False, reduction="mean_batch")
    with torch.no_grad():
        for item in items:
            data = preprocess(item)
            pred = inferer(data["image"][None], net).argmax(1, keepdim=True)
            dice(one_hot(pred, 3), one_hot(data["label"][None].long(), 3))
    per_class = dice.aggregate()
    assert per_class.shape == (2,) and (per_class > 0.75).all(), per_class


def test_flare_benchmark_plain_variant_switches_monais_flash_attention():
    from monai.networks.nets.swin_unetr import WindowAttention as MonaiWindowAttention

    candidates, reference = bm.network_candidates(FLARE, torch.device("cpu"), train=False, roi_size=[64, 64, 64], values=["ists+plain"])
    assert [c.name for c in candidates] == ["memory=none", "memory=ists+plain"]
    flags = [{m.use_flash_attention for m in c.module.modules() if isinstance(m, MonaiWindowAttention)} for c in candidates]
    assert flags == [{True}, {False}]
