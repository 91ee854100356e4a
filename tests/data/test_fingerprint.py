"""nnU-Net's dataset fingerprint (target spacing, CT foreground statistics) and how bundles store and read it."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medattn_networks.data import btcv_datalist, dataset_fingerprint, intensity_window, load_fingerprint, make_btcv_cases
from medattn_networks.data.fingerprint import nnunet_target_spacing


def test_target_spacing_median_and_the_anisotropy_rule():
    # isotropic-ish: the per-axis median
    assert nnunet_target_spacing([[1.0, 0.8, 0.8], [2.0, 0.7, 0.7], [3.0, 0.9, 0.9]], [[100, 512, 512]] * 3) == pytest.approx([2.0, 0.8, 0.8])
    # thick slices (median 5 > 3 × 0.8) and few of them (30 · 3 < 512): the slice axis takes its 10th percentile
    spacings = [[5.0, 0.8, 0.8], [5.0, 0.8, 0.8], [1.0, 0.8, 0.8], [5.0, 0.8, 0.8], [2.5, 0.8, 0.8]]
    expected_z = float(np.percentile([5.0, 5.0, 1.0, 5.0, 2.5], 10))
    assert nnunet_target_spacing(spacings, [[30, 512, 512]] * 5) == pytest.approx([max(expected_z, 0.8 + 1e-5), 0.8, 0.8])
    # many thick slices: the rule does not apply
    assert nnunet_target_spacing(spacings, [[200, 512, 512]] * 5)[0] == pytest.approx(5.0)


def test_fingerprint_of_btcv_files_follows_nnunet(tmp_path):
    root = make_btcv_cases(tmp_path / "btcv", ("case0005", "case0006"), shape=(40, 48, 12))
    items = btcv_datalist(root, cases=["case0005", "case0006"])
    fp = dataset_fingerprint(items)
    # stored (x, y, z) at 0.8 × 0.8 × 2.5 mm; SAR puts z first
    assert fp["spacing"] == pytest.approx([2.5, 0.8, 0.8])
    values = []
    for item in items:
        image, label = nib.load(item["image"]).get_fdata(), nib.load(item["label"]).get_fdata()
        # the same voxels in the SAR array order (z, y, x) the fingerprint walks, every 10th foreground voxel
        image_sar, label_sar = (np.flip(np.transpose(a, (2, 1, 0)), (1, 2)) for a in (image, label))
        values.append(image_sar[label_sar > 0][::10])
    values = np.concatenate(values)
    assert fp["intensity"]["lower"] == pytest.approx(np.percentile(values, 0.5))
    assert fp["intensity"]["upper"] == pytest.approx(np.percentile(values, 99.5))
    assert fp["intensity"]["mean"] == pytest.approx(values.mean())
    assert fp["intensity"]["std"] == pytest.approx(values.std())
    window = intensity_window(fp)
    for x in (fp["intensity"]["lower"], fp["intensity"]["mean"], fp["intensity"]["upper"]):
        mapped = window["b_min"] + (x - window["a_min"]) / (window["a_max"] - window["a_min"]) * (window["b_max"] - window["b_min"])
        assert mapped == pytest.approx((x - fp["intensity"]["mean"]) / fp["intensity"]["std"])


def test_load_fingerprint_writes_once_then_reads_and_guards_trained_weights(tmp_path):
    root = make_btcv_cases(tmp_path / "btcv", ("case0005",), shape=(40, 48, 8))
    items = btcv_datalist(root, cases=["case0005"])
    path = tmp_path / "run" / "fingerprint.json"
    written = load_fingerprint(path, items)
    assert json.loads(path.read_text()) == written
    assert [p.name for p in path.parent.iterdir()] == ["fingerprint.json"]  # no temporary file left
    # a second call reads the file, even with another datalist
    path.write_text(json.dumps({**written, "spacing": [9.0, 9.0, 9.0]}))
    assert load_fingerprint(path, items)["spacing"] == [9.0, 9.0, 9.0]

    default = {"spacing": [1.0, 1.0, 1.0], "intensity": {"lower": -1.0, "upper": 1.0, "mean": 0.0, "std": 1.0}}
    missing = tmp_path / "models" / "fingerprint.json"
    assert load_fingerprint(missing, default=default) == default  # no weights: the default
    weights = tmp_path / "models" / "model.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"weights")
    with pytest.raises(FileNotFoundError, match=r"models/fingerprint.json: no dataset fingerprint beside the weights"):
        load_fingerprint(missing, default=default, weights=weights)
    missing.write_text('{"spacing": [1, 1, 1]}')
    with pytest.raises(ValueError, match=r"fingerprint.json: dataset fingerprint lacks intensity"):
        load_fingerprint(missing)
    missing.write_text("{not json")
    with pytest.raises(ValueError, match="unreadable dataset fingerprint"):
        load_fingerprint(missing)
