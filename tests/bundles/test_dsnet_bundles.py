"""The 2D-slice DSNet bundles (dsnet_fcn_r50_synapse, dsnet_fcn_r50_acdc) beyond the generic verifier checks.

The recipe as configured (loss = 1.2·CE + 0.8·Dice in mmseg's form, SGD + iteration-level poly schedule), the model
presets and override switches, the geometry of NIfTI inference (a known thresholding network must give its answer in
the input's grid), the BTCV slice cache, the real ACDC lists, and one CLI run with a bad input file.
Everything is small (64² or the generated slices' own size); nothing under bundles/ is written.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "ci"))

import verify_bundles as vb  # noqa: E402

from medattn_networks.data import (  # noqa: E402
    make_btcv_cases,
    make_mr_nifti_folder,
    make_synapse_transunet,
    synapse_layout_datalist,
    zscore_shift,
)

DSNET_BUNDLES = ["dsnet_fcn_r50_synapse", "dsnet_fcn_r50_acdc"]
ACDC_DATA = REPO_ROOT.parent / "shared" / "data" / "acdc"  # ../shared/data beside the checkout, as the bundle defaults
SMALL = {"roi_size": [64, 64]}


def _parser(bundle: str, config: str = "train.json", **overrides):
    return vb.bundle_parser(vb.bundle_path(bundle), config, {**SMALL, **overrides})


# ------------------------------------------------------------------------------------------- recipe
def _mmseg_dice(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0, exponent: int = 2) -> torch.Tensor:
    """mmseg (0.x - 1.1) DiceLoss: softmax, per sample and class 1 - (2Σpt + s) / (Σp^e + Σt^e + s), mean."""
    prob = logits.softmax(1)
    onehot = F.one_hot(target[:, 0].long(), logits.shape[1]).movedim(-1, 1).float()
    dims = tuple(range(2, logits.ndim))
    num = 2 * (prob * onehot).sum(dims) + smooth
    den = (prob**exponent).sum(dims) + (onehot**exponent).sum(dims) + smooth
    return (1 - num / den).mean()


@pytest.mark.parametrize("bundle", DSNET_BUNDLES)
def test_dsnet_loss_is_weighted_ce_plus_mmseg_dice(bundle):
    loss = _parser(bundle).get_parsed_content("loss")
    torch.manual_seed(0)
    num_classes = _parser(bundle).get_parsed_content("num_classes")
    logits = torch.randn(2, num_classes, 16, 12)
    target = torch.randint(0, num_classes, (2, 1, 16, 12)).float()
    expected = 1.2 * F.cross_entropy(logits, target[:, 0].long()) + 0.8 * _mmseg_dice(logits, target)
    assert torch.allclose(loss(logits, target), expected, atol=1e-6)


@pytest.mark.parametrize("bundle", DSNET_BUNDLES)
def test_dsnet_sgd_and_iteration_level_poly_schedule(bundle):
    parser = _parser(bundle)
    optimizer = parser.get_parsed_content("optimizer")
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.01, 0.9, 0.0005)
    scheduler = parser.get_parsed_content("lr_scheduler")
    assert isinstance(scheduler, torch.optim.lr_scheduler.PolynomialLR)
    total = parser.get_parsed_content("epochs") * parser.get_parsed_content("epoch_length")
    assert total == 40000 and scheduler.total_iters == total and scheduler.power == 0.9
    assert parser.get_parsed_content("batch_size") == 2
    handler = parser.get_parsed_content("train#handlers#0")
    assert type(handler).__name__ == "LrScheduleHandler" and handler.epoch_level is False
    for _ in range(10000):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * (1 - 10000 / 40000) ** 0.9, rel=1e-6)


def _plugins(net: nn.Module) -> dict[str, str]:
    """{'layer4.0.after_conv2': 'DSM', ...} for the non-identity plugin slots of the backbone."""
    found = {}
    for name, module in net.backbone.named_modules():
        if name.rsplit(".", 1)[-1].startswith("after_conv") and not isinstance(module, nn.Identity):
            found[name] = type(module).__name__
    return found


@pytest.mark.parametrize("bundle", DSNET_BUNDLES)
def test_dsnet_model_presets_and_overrides(bundle):
    default = _parser(bundle).get_parsed_content("network_def")
    plugins = _plugins(default)
    assert plugins == {f"layer4.{i}.after_conv2": "DSM" for i in range(3)}  # every stage-4 bottleneck
    dsm = default.backbone.layer4[0].after_conv2
    assert dsm.conv_v_right.out_channels == 256 and dsm.conv_q_right.bias is not None  # ratio 2 on 512, bias
    assert type(default.decode_head).__name__ == "FCNHead" and isinstance(default.decode_head.attention, nn.Identity)
    assert default.backbone.layer1[0].conv1.in_channels == 64  # V1c deep stem
    assert not default.has_aux

    fcn = _parser(bundle, model="fcn").get_parsed_content("network_def")
    assert _plugins(fcn) == {} and type(fcn.decode_head).__name__ == "FCNHead"
    dsnet = _parser(bundle, model="dsnet").get_parsed_content("network_def")
    assert _plugins(dsnet) == {} and type(dsnet.decode_head).__name__ == "DSNetHead"
    assert type(dsnet.decode_head.attention).__name__ == "DSM"
    se = _parser(bundle, model="fcn+se").get_parsed_content("network_def")
    assert set(_plugins(se).values()) == {"SqueezeExcitationHSigmoid"} and len(_plugins(se)) == 16
    assert all(k.endswith("after_conv1") for k in _plugins(se))
    # the override examples: a plugin of the registry in place of DSM (DSM's ratio/bias are dropped), a head
    cbam = _parser(
        bundle, plugin="cbam", plugin_position="after_conv1", plugin_stages=[True, True, True, True]
    ).get_parsed_content("network_def")
    assert set(_plugins(cbam).values()) == {"CBAM"} and len(_plugins(cbam)) == 16
    danet = _parser(bundle, model="fcn", head="danet").get_parsed_content("network_def")
    assert type(danet.decode_head).__name__ == "DAHead" and _plugins(danet) == {}
    with pytest.raises(RuntimeError) as info:  # MONAI wraps the expression's error; the cause names the choices
        _parser(bundle, model="fcn+xyz").get_parsed_content("network_def")
    assert "unknown model 'fcn+xyz'; choose one of: fcn, fcn+dsm, dsnet, fcn+se" in str(info.value.__cause__)
    # inference.json builds the same parameters for every preset (a checkpoint of any model loads for inference)
    for model in ("fcn", "dsnet", "fcn+se"):
        train_keys = _parser(bundle, model=model).get_parsed_content("network_def").state_dict().keys()
        infer_keys = _parser(bundle, "inference.json", model=model).get_parsed_content("network_def").state_dict().keys()
        assert list(train_keys) == list(infer_keys)


@pytest.mark.parametrize("bundle", DSNET_BUNDLES)
def test_dsnet_training_pipeline_matches_the_recipe(bundle, tmp_path):
    settings = vb.load_settings(bundle)
    data = vb.make_training_data(settings, tmp_path / "data")
    parser = _parser(bundle, dataset_dir=str(data), output_dir=str(tmp_path / "out"), **settings["train_overrides"])
    dataset = parser.get_parsed_content("train#dataset")
    item = dataset[0]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert torch.equal(item["image"][0], item["image"][1]) and torch.equal(item["image"][0], item["image"][2])
    assert item["label"].shape == (1, 64, 64)
    assert set(torch.unique(item["label"]).tolist()) <= set(settings["label_values"])
    names = [type(t).__name__ for t in parser.get_parsed_content("train#preprocessing").transforms]
    assert names == ["LoadNpzH5d", "ZScoreShiftd", "Resized", "RandomRotFlipd", "RepeatChanneld", "EnsureTyped"]
    rotflip = parser.get_parsed_content("train#preprocessing").transforms[3]
    assert (rotflip.rotate_prob, rotflip.flip_prob, rotflip.degrees) == (0.5, 0.5, 20.0)  # DSNet's mmseg config
    assert parser.get_parsed_content("train#dataloader").drop_last  # BN on pooled DSM vectors needs batch > 1
    inferer = parser.get_parsed_content("validate#inferer")
    assert (inferer.roi_size, inferer.slice_axis, inferer.repeat_channels) == ((64, 64), 0, 3)
    assert inferer.slice_transform is zscore_shift
    volumes = parser.get_parsed_content("validate#dataset")
    assert len(volumes) == settings["train_overrides"]["num_val"] and volumes[0]["image"].ndim == 4


# ---------------------------------------------------------------------------------- inference geometry
class _ThresholdNet(nn.Module):
    """Two-class 'network' that sees where it is: foreground where the (z-scored, shifted) grey value exceeds
    ``threshold`` AND the pixel lies in the left half of the columns and the top three quarters of the rows of the
    slice it is given — so a slice presented transposed or flipped gives a different answer."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, cols = x.shape[-2:]
        where = torch.zeros(rows, cols, dtype=torch.bool)
        where[: (3 * rows) // 4, : cols // 2] = True
        fg = ((x[:, :1] > self.threshold) & where).float()
        return torch.cat([1 - fg, fg], 1) + 0 * self.dummy


@pytest.mark.parametrize("axcodes", ["RAS", "stored"])
@pytest.mark.parametrize("bundle", DSNET_BUNDLES)
def test_dsnet_nifti_inference_returns_slices_in_the_input_grid(bundle, axcodes, tmp_path):
    """Orientation to RAS, axial slices shown to the network as (rows = y, columns = x) of the RAS volume, and the
    inversion of both: the answer of a position-aware thresholding net, computed by hand in RAS space and mapped
    back to the stored (non-RAS) grid with nibabel, must come back voxel for voxel. ``--axcodes stored`` keeps the
    stored orientation (the h5 training data's convention)."""
    folder = tmp_path / "in"
    shape = (48, 40, 4)
    if bundle == "dsnet_fcn_r50_synapse":
        make_btcv_cases(folder / "_raw", ["case0001", "case0002"], shape=shape, with_label=False)
        for path in (folder / "_raw" / "img").iterdir():
            path.rename(folder / path.name)
        hu = (-125.0, 275.0)
    else:
        make_mr_nifti_folder(folder, 2, shape=shape)
        hu = None
    threshold = 1.2
    overrides = {
        "dataset_dir": str(folder),
        "output_dir": str(tmp_path / "out"),
        "load_pretrain": False,
        "num_workers": 0,
        "roi_size": [shape[1], shape[0]],  # the (y, x) slice size: no resizing, so the answer must be exact
        "network": _ThresholdNet(threshold),
        "axcodes": axcodes,
    }
    workflow = vb._workflow(vb.bundle_path(bundle), "infer", ["inference.json"], overrides)
    vb._initialize_checked(bundle, "infer", workflow)
    workflow.run()
    workflow.finalize()
    inputs = sorted(folder.glob("*.nii.gz"))
    assert len(inputs) == 2
    for path in inputs:
        image = nib.load(str(path))
        assert nib.aff2axcodes(image.affine) != ("R", "A", "S")  # the test data are not RAS: orientation matters
        array = np.asarray(image.dataobj, dtype=np.float32)
        if hu is not None:
            array = np.clip(array, *hu)
        to_ras = nib.orientations.io_orientation(image.affine) if axcodes == "RAS" else np.array([[0, 1], [1, 1], [2, 1]])
        ras = nib.orientations.apply_orientation(array, to_ras)  # (x, y, z) in RAS, as Orientationd("RAS") gives
        x_size, y_size, z_size = ras.shape
        expected_ras = np.zeros(ras.shape, bool)
        for z in range(z_size):
            plane = (zscore_shift(torch.from_numpy(np.ascontiguousarray(ras[:, :, z]))) > threshold).numpy()
            plane[x_size // 2 :, :] = False  # network columns = RAS x: left half only
            plane[:, (3 * y_size) // 4 :] = False  # network rows = RAS y: top three quarters only
            expected_ras[:, :, z] = plane
        back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), to_ras)
        expected = nib.orientations.apply_orientation(expected_ras, back)
        assert np.array_equal(nib.orientations.apply_orientation(ras, back), array)  # the mapping back is right
        out = nib.load(str(tmp_path / "out" / (path.name[: -len(".nii.gz")] + "_seg.nii.gz")))
        assert out.get_data_dtype() == np.uint8 and out.shape == image.shape
        assert np.allclose(out.affine, image.affine, atol=1e-5)
        got = np.asarray(out.dataobj)
        assert 0 < expected.sum() < expected.size
        assert np.array_equal(got, expected.astype(np.uint8))


# --------------------------------------------------------------------------------------------- readers
def test_dsnet_btcv_slices_are_cached_and_refreshed(tmp_path):
    raw = make_btcv_cases(tmp_path / "btcv", ["case0005", "case0008"], shape=(20, 24, 3))
    cache = tmp_path / "cache"
    items = synapse_layout_datalist(raw, "train", "btcv", cases=["case0005"], cache_dir=cache)
    assert [(i["case"], i["slice"]) for i in items] == [("case0005", k) for k in range(3)]
    first = Path(items[0]["image"]).stat().st_mtime_ns
    again = synapse_layout_datalist(raw, "train", "btcv", cases=["case0005"], cache_dir=cache)
    assert again == items and Path(items[0]["image"]).stat().st_mtime_ns == first  # reused, not rewritten
    make_btcv_cases(tmp_path / "btcv", ["case0005"], shape=(20, 24, 5), seed=3)  # the source changes
    refreshed = synapse_layout_datalist(raw, "train", "btcv", cases=["case0005"], cache_dir=cache)
    assert len(refreshed) == 5 and len(list((cache / "train_npz").glob("*.npz"))) == 5
    volumes = synapse_layout_datalist(raw, "test", "btcv", cases=["case0008"])
    assert [v["case"] for v in volumes] == ["case0008"] and volumes[0]["image"].endswith("img0008.nii.gz")
    with pytest.raises(ValueError, match="needs cache_dir"):
        synapse_layout_datalist(raw, "train", "btcv", cases=["case0005"])
    with pytest.raises(ValueError, match="layout must be one of transunet, btcv"):
        synapse_layout_datalist(raw, "train", "nnunet")


def test_dsnet_transunet_layout_case_selection(tmp_path):
    root = make_synapse_transunet(tmp_path / "syn", ("case0005", "case0006"), ("case0008", "case0022"), shape=(20, 24, 3))
    assert len(synapse_layout_datalist(root, "train")) == 6
    assert [v["case"] for v in synapse_layout_datalist(root, "test", cases=["case0022"])] == ["case0022"]
    with pytest.raises(FileNotFoundError, match="case0001 are not in the 'test' split"):
        synapse_layout_datalist(root, "test", cases=["case0001"])


@pytest.mark.skipif(not (ACDC_DATA / "train_slices.list").is_file(), reason=f"shared ACDC data absent at {ACDC_DATA}")
def test_dsnet_acdc_defaults_read_the_shared_data():
    """The ACDC bundle's default dataset_dir is ../shared/data/acdc: 1312 training slices, 20 validation volumes."""
    parser = vb.bundle_parser(vb.bundle_path("dsnet_fcn_r50_acdc"), "train.json")
    assert Path(parser.get_parsed_content("dataset_dir")).resolve() == ACDC_DATA.resolve()
    train = parser.get_parsed_content("train#dataset#data")
    val = parser.get_parsed_content("validate#dataset#data")
    assert len(train) == 1312 and len(val) == 20
    item = parser.get_parsed_content("train#preprocessing")(train[0])
    assert item["image"].shape == (3, 256, 256) and set(torch.unique(item["label"]).tolist()) <= {0, 1, 2, 3}


# ------------------------------------------------------------------------------------------------- CLI
def test_dsnet_cli_inference_skips_a_bad_file(tmp_path):
    folder = tmp_path / "in"
    make_mr_nifti_folder(folder, 1, shape=(40, 36, 3))
    good = (folder / "image_0.nii.gz").read_bytes()
    (folder / "truncated.nii.gz").write_bytes(good[: len(good) // 2])
    out_dir = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
        "--dataset_dir", str(folder), "--output_dir", str(out_dir), "--num_workers", "0",
        "--roi_size", "[64,64]", "--model", "fcn", "--load_pretrain", "False",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=vb.bundle_path("dsnet_fcn_r50_acdc"), env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 4, out[-3000:]  # finished, one input skipped
    assert sorted(p.name for p in out_dir.glob("*.nii.gz")) == ["image_0_seg.nii.gz"]
    rows = list(csv.DictReader(open(out_dir / "skipped_inputs.csv", newline="")))
    assert [Path(r["file"]).name for r in rows] == ["truncated.nii.gz"] and "truncated" in rows[0]["problem"]
    assert f"{folder / 'truncated.nii.gz'}: " in out
    seg = nib.load(str(out_dir / "image_0_seg.nii.gz"))
    assert seg.shape == (40, 36, 3) and seg.get_data_dtype() == np.uint8


def test_dsnet_settings_cover_both_bundles():
    settings = json.loads(vb.SETTINGS_FILE.read_text())["bundles"]
    assert settings["dsnet_fcn_r50_synapse"]["layout"] == "synapse" and "btcv" in settings["dsnet_fcn_r50_synapse"]["variants"]
    assert settings["dsnet_fcn_r50_acdc"]["layout"] == "acdc"
