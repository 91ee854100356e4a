"""The MSA²Net bundles beyond the generic checks. msa2net_synapse: its ACDC overlay on the shared data.
msa2net_isic2018: what the generic bundle checks cannot see — PNG masks in each image's own orientation and
size, bad images skipped and reported, and the paper's metrics (pooled DSC / SE / SP / ACC, per-image Dice)
against an independent count.

The network is replaced by a fixed 1×1 convolution that calls a pixel lesion when its mean RGB value is below a
threshold, so the expected masks and metrics can be written down without a trained model. The generic train →
evaluate → infer run of the real network on generated ISIC files is in test_verify_bundles.py."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "ci"))

import verify_bundles as vb  # noqa: E402

from medattn_networks.data import ISIC2018_FOLDERS, make_image_folder, make_isic2018  # noqa: E402

BUNDLE = REPO_ROOT / "bundles" / "msa2net_isic2018"
THRESHOLD_NET = {"network_def": {"_target_": "torch.nn.Conv2d", "in_channels": 3, "out_channels": 2, "kernel_size": 1}}


def _threshold_weights(path: Path, threshold: float) -> Path:
    """Conv2d(3, 2, 1) weights: logit(lesion) − logit(background) = threshold − mean(r, g, b)."""
    weight = torch.zeros(2, 3, 1, 1)
    weight[1] = -1.0 / 3.0
    bias = torch.tensor([0.0, threshold])
    torch.save({"weight": weight, "bias": bias}, path)
    return path


def _settings(**train_overrides) -> dict:
    settings = vb.load_settings(BUNDLE.name)
    settings["train_overrides"] = {**settings["train_overrides"], **train_overrides}
    return settings


def test_masks_follow_each_image_in_size_and_orientation_and_bad_images_are_reported(tmp_path):
    """Non-square JPEG and PNG inputs of three sizes: each mask has its image's size and covers its lesion; a grey
    image and a truncated JPEG are skipped, listed in skipped_inputs.csv, and leave no mask behind."""
    images = make_image_folder(tmp_path / "in", 3, size=(60, 90), seed=5)
    Image.fromarray(np.full((30, 40), 128, np.uint8)).save(tmp_path / "in" / "grey.png")
    (tmp_path / "in" / "cut.jpg").write_bytes(images[0].read_bytes()[:300])
    ckpt = _threshold_weights(tmp_path / "model.pt", 0.5)
    vb.run_inference(BUNDLE, vb.load_settings(BUNDLE.name), tmp_path / "in", ckpt, tmp_path / "out", THRESHOLD_NET)

    rows = list(csv.reader(open(tmp_path / "out" / "skipped_inputs.csv")))
    skipped = {Path(row[0]).name: row[1] for row in rows[1:]}
    assert set(skipped) == {"grey.png", "cut.jpg"}, rows
    assert "channel" in skipped["grey.png"] and "readable" in skipped["cut.jpg"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [f"image_{k}_seg.png" for k in range(3)]
    for path in images:
        rgb = np.asarray(Image.open(path).convert("RGB"), np.float64) / 255.0
        expected = rgb.mean(axis=-1) < 0.5  # the dark lesion, in PIL's (H, W)
        mask = np.asarray(Image.open(tmp_path / "out" / f"{path.stem}_seg.png"))
        assert mask.shape == expected.shape and set(np.unique(mask)) <= {0, 255}
        predicted = mask == 255
        dice = 2 * (predicted & expected).sum() / (predicted.sum() + expected.sum())
        assert dice > 0.95, (path.name, dice)  # a transposed or misplaced mask scores far lower
        transposed_overlap = 2 * (np.resize(predicted.T, expected.shape) & expected).sum() / (predicted.sum() + expected.sum())
        assert transposed_overlap < dice - 0.05


@pytest.mark.parametrize("single_region", [False, True])
def test_single_region_keeps_one_lesion_without_holes(tmp_path, single_region):
    """The challenge asks for one contiguous lesion without holes: --single_region true keeps the largest
    component and fills it; the default writes the network's mask as it is."""
    from scipy import ndimage

    image = np.full((120, 160, 3), (210, 160, 140), np.uint8)
    image[20:100, 10:90] = (90, 70, 60)  # the lesion, with a skin-coloured hole
    image[50:60, 40:50] = (210, 160, 140)
    image[40:60, 120:140] = (90, 70, 60)  # a smaller second dark spot
    (tmp_path / "in").mkdir()
    Image.fromarray(image).save(tmp_path / "in" / "spots.png")
    ckpt = _threshold_weights(tmp_path / "model.pt", 0.5)
    overrides = {**THRESHOLD_NET, "single_region": single_region}
    vb.run_inference(BUNDLE, vb.load_settings(BUNDLE.name), tmp_path / "in", ckpt, tmp_path / "out", overrides)
    mask = np.asarray(Image.open(tmp_path / "out" / "spots_seg.png")) == 255
    components = ndimage.label(mask)[1]
    holes = ndimage.binary_fill_holes(mask).sum() - mask.sum()
    if single_region:
        assert components == 1 and holes == 0 and mask[20:100, 10:90].all() and not mask[40:60, 120:140].any()
    else:
        assert components == 2 and holes > 0


def _confusion(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    return np.array([(pred & label).sum(), (pred & ~label).sum(), (~pred & ~label).sum(), (~pred & label).sum()], np.float64)


def test_evaluation_reports_pooled_and_per_image_metrics_as_counted_independently(tmp_path):
    root = make_isic2018(tmp_path / "isic", {"train": 2, "val": 1, "test": 2}, size=(48, 64), seed=3)
    # the second test case at another size and with a smaller lesion share, so pooled and per-image means differ
    image_dir, mask_dir = (root / name for name in ISIC2018_FOLDERS["test"])
    image = Image.open(image_dir / "ISIC_0000004.jpg")
    mask = Image.open(mask_dir / "ISIC_0000004_segmentation.png")
    canvas = Image.new("RGB", (160, 120), (210, 160, 140))
    canvas.paste(image, (0, 0))
    canvas.save(image_dir / "ISIC_0000004.jpg", quality=95)
    padded = Image.new("L", (160, 120), 0)
    padded.paste(mask, (0, 0))
    padded.save(mask_dir / "ISIC_0000004_segmentation.png")

    threshold = 0.64  # just below the skin tone: some skin pixels are called lesion, so the metrics are not all 1
    ckpt = _threshold_weights(tmp_path / "model.pt", threshold)
    settings = _settings()
    metrics = vb.run_evaluation(BUNDLE, settings, root, ckpt, tmp_path / "eval", THRESHOLD_NET)

    # independent count: the evaluation's own resizing (224², bilinear with anti-aliasing; masks nearest) from the
    # config, then the decision and the confusion counts in numpy
    parser = vb.bundle_parser(BUNDLE, ["train.json", "evaluate.json"], {**vb._overrides(settings, "train"), "dataset_dir": str(root)})
    preprocessing = parser.get_parsed_content("validate#preprocessing")
    totals, dices = np.zeros(4), []
    for item in parser.get_parsed_content("validate#dataset#data"):
        d = preprocessing(dict(item))
        pred = d["image"].numpy().mean(axis=0) < threshold
        label = d["label"].numpy()[0] > 0.5
        counts = _confusion(pred, label)
        totals += counts
        tp, fp, _, fn = counts
        dices.append(2 * tp / (2 * tp + fp + fn))
    tp, fp, tn, fn = totals
    expected = {
        "val_mean_dice": np.mean(dices),
        "val_dsc": 2 * tp / (2 * tp + fp + fn),
        "val_sensitivity": tp / (tp + fn),
        "val_specificity": tn / (tn + fp),
        "val_accuracy": (tp + tn) / totals.sum(),
    }
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-5), name
    assert 0.3 < expected["val_specificity"] < 0.999 and expected["val_sensitivity"] > 0.9
    assert abs(expected["val_dsc"] - expected["val_mean_dice"]) > 1e-3  # the test tells the two means apart
    raw = list(csv.reader(open(tmp_path / "eval" / "val_mean_dice_raw.csv")))
    assert [Path(row[0]).name for row in raw[1:]] == ["ISIC_0000003.jpg", "ISIC_0000004.jpg"] and raw[0] == ["filename", "lesion", "mean"]
    assert np.isfinite(metrics["val_hd95"])


@pytest.mark.parametrize("config", ["train.json", "inference.json"])
def test_network_sees_rgb_in_unit_range_at_224(config, tmp_path):
    """Both pipelines hand the network (3, 224, 224) in [0, 1], whatever the file's size."""
    make_isic2018(tmp_path / "isic", {"train": 1, "val": 1, "test": 1}, size=(75, 101))
    if config == "train.json":
        parser = vb.bundle_parser(BUNDLE, config, {"dataset_dir": str(tmp_path / "isic"), "split": "official"})
        item = parser.get_parsed_content("validate#dataset#data")[0]
        d = parser.get_parsed_content("validate#preprocessing")(dict(item))
        assert tuple(d["label"].shape) == (1, 224, 224) and set(torch.unique(d["label"]).tolist()) == {0.0, 1.0}
    else:
        image = make_image_folder(tmp_path / "in", 1, size=(75, 101))[0]
        parser = vb.bundle_parser(BUNDLE, config, {"dataset_dir": str(tmp_path / "in")})
        d = parser.get_parsed_content("preprocessing")({"image": str(image)})
    assert tuple(d["image"].shape) == (3, 224, 224)
    assert 0.0 <= float(d["image"].min()) and float(d["image"].max()) <= 1.0 and float(d["image"].max()) > 0.5


def test_full_size_network_has_the_count_the_card_states():
    net = vb.bundle_parser(BUNDLE, "inference.json").get_parsed_content("network_def")
    count = sum(p.numel() for p in net.parameters())
    assert count == 76_605_987  # msa2net_synapse's 76,606,666 less 7 classes × (96 weights + 1 bias)
    assert f"{count:,}" in vb.check_metadata(BUNDLE)["description"]
    assert f"**{count:,} parameters**" in (BUNDLE / "docs" / "README.md").read_text()


@pytest.mark.skipif(not (REPO_ROOT.parent / "shared" / "data" / "acdc" / "train_slices.list").is_file(), reason="shared ACDC data absent")
def test_msa2net_synapse_acdc_overlay_reads_the_shared_data():
    parser = vb.bundle_parser(REPO_ROOT / "bundles" / "msa2net_synapse", ["train.json", "acdc.json"])
    train, val = parser.get_parsed_content("train#dataset#data"), parser.get_parsed_content("validate#dataset#data")
    assert len(train) == 1312 and len(val) == 20
    item = parser.get_parsed_content("train#preprocessing")(train[0])
    assert item["image"].shape == (1, 224, 224) and set(torch.unique(item["label"]).tolist()) <= {0, 1, 2, 3}
    assert parser.get_parsed_content("network_def").decoder_0.last_layer.out_channels == 4
    assert parser.get_parsed_content("class_names")[1:] == ["right_ventricle", "myocardium", "left_ventricle"]
