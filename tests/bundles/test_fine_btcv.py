"""fine_btcv: the bundle's position plumbing, its nnU-Net pieces (gradient clipping, fingerprint beside the weights)
and one end-to-end CPU run on real CT (../shared/data/totalseg_ct, 8 Synapse organs mapped to BTCV ids).

The generic train → evaluate → infer run on generated BTCV files is in test_verify_bundles.py (every bundle)."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "ci"))

import verify_bundles as vb  # noqa: E402

BUNDLE = REPO_ROOT / "bundles" / "fine_btcv"
TOTALSEG = REPO_ROOT.parent / "shared" / "data" / "totalseg_ct"
# TotalSegmentator v2 ids of the 8 Synapse organs (shared data README) → BTCV ids
TS_TO_BTCV = {52: 8, 4: 4, 3: 3, 2: 2, 5: 6, 7: 11, 1: 1, 6: 7}


def _parsed(config: str, overrides: dict | None = None):
    return vb.bundle_parser(BUNDLE, config, overrides or {})


def _expected_centres(size, roi):
    """Window centres minus volume centre, written out: nnU-Net spreads ceil((s − r) / (r / 2)) + 1 starts evenly."""
    per_axis = []
    for s, r in zip(size, roi):
        p = max(s, r)
        n = int(np.ceil((p - r) / (r * 0.5))) + 1
        starts = [0] if n == 1 else [int(round(i * (p - r) / (n - 1))) for i in range(n)]
        per_axis.append([st + r // 2 - p // 2 for st in starts])
    return sorted(itertools.product(*per_axis))


@pytest.mark.parametrize("config", ["inference.json", "train.json"])
def test_bundle_sliding_window_hands_the_true_window_centres(config):
    roi = [8, 16, 16]
    parser = _parsed(config, {"roi_size": roi, "mirror_axes": [], "val_mirror_axes": []})
    inferer = parser.get_parsed_content("inferer" if config == "inference.json" else "validate#inferer")
    seen = []

    def network(x, position):
        seen.extend(tuple(int(v) for v in p) for p in position.tolist())
        return torch.zeros(x.shape[0], 14, *x.shape[2:])

    for size in [(8, 16, 16), (20, 40, 50), (6, 40, 16)]:  # one window, many, and padded along z
        seen.clear()
        out = inferer(torch.zeros(1, 1, *size), network)
        assert tuple(out.shape) == (1, 14, *size)
        assert sorted(seen) == _expected_centres(size, roi)


def test_training_position_is_taken_before_any_spatial_augmentation():
    transforms = [t["_target_"] for t in json.loads((BUNDLE / "configs" / "train.json").read_text())["train"]["random_transforms"]]
    crop = transforms.index("RandCropByPosNegLabeld")
    assert transforms[crop + 1] == "medattn_networks.engine.CropPositiond"
    for spatial in ("RandRotated", "RandZoomd", "RandFlipd"):
        assert transforms.index(spatial) > crop + 1
    # and the trainer hands the position to the network as its second argument
    trainer = json.loads((BUNDLE / "configs" / "train.json").read_text())["train"]["trainer"]
    assert trainer["prepare_batch"] == "$monai.engines.PrepareBatchExtraInput('position')"


def test_gradient_clipper_clips_before_the_step():
    from monai.engines import SupervisedTrainer

    from medattn_networks.engine import GradientClipper

    torch.manual_seed(0)
    net = torch.nn.Linear(4, 1, bias=False)
    start = net.weight.detach().clone()
    data = [{"image": torch.full((1, 4), 100.0), "label": torch.zeros(1, 1)}]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=data, network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=1.0), loss_function=torch.nn.MSELoss(),
    )  # fmt: skip
    GradientClipper(max_norm=0.5).attach(trainer)
    trainer.run()
    assert float(torch.linalg.vector_norm(net.weight.grad)) == pytest.approx(0.5, rel=1e-5)
    assert float(torch.linalg.vector_norm(net.weight.detach() - start)) == pytest.approx(0.5, rel=1e-5)
    with pytest.raises(ValueError, match="max_norm must be > 0"):
        GradientClipper(0)


def test_promote_carries_the_fingerprint_with_the_weights(tmp_path):
    from medattn_networks.engine import promote

    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    torch.save({"w": torch.ones(2)}, run / "model.pt")
    (run / "fingerprint.json").write_text('{"spacing": [1, 1, 1]}')
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "metadata.json").write_text((BUNDLE / "configs" / "metadata.json").read_text())
    promote(run, bundle)
    assert (bundle / "models" / "fingerprint.json").read_text() == '{"spacing": [1, 1, 1]}'


def test_inference_with_weights_but_no_fingerprint_is_refused(tmp_path):
    weights = tmp_path / "models" / "model.pt"
    weights.parent.mkdir()
    torch.save({}, weights)
    parser = _parsed("inference.json", {"ckpt_path": str(weights)})
    with pytest.raises(RuntimeError) as info:  # the config parser wraps the reader's error
        parser.get_parsed_content("fingerprint")
    assert "no dataset fingerprint beside the weights" in str(info.value.__cause__)
    # without weights (the zoo's weightless check) the documented default applies
    default = _parsed("inference.json", {"ckpt_path": str(tmp_path / "none" / "model.pt")}).get_parsed_content("fingerprint")
    assert default["spacing"] == [3.0, 3.0, 3.0]


def _totalseg_as_btcv(root: Path) -> Path:
    image = nib.load(str(TOTALSEG / "example_ct_sm.nii.gz"))
    seg = nib.load(str(TOTALSEG / "example_seg.nii.gz"))
    ts = np.asarray(seg.dataobj).astype(np.int64)
    label = np.zeros(ts.shape, np.uint8)
    for source, target in TS_TO_BTCV.items():
        label[ts == source] = target
    (root / "img").mkdir(parents=True)
    (root / "label").mkdir()
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj).astype(np.int16), image.affine), str(root / "img" / "img0001.nii.gz"))
    nib.save(nib.Nifti1Image(label, seg.affine), str(root / "label" / "label0001.nii.gz"))
    return root


@pytest.mark.slow
@pytest.mark.skipif(not (TOTALSEG / "example_ct_sm.nii.gz").is_file(), reason="needs ../shared/data/totalseg_ct beside the checkout")
def test_fine_trains_and_segments_a_real_ct_on_cpu(tmp_path):
    """Smoke run on real CT (labels predicted by TotalSegmentator): train 2 epochs at crop 16×64×64, embed 12,
    evaluate, infer on the NIfTI in its own grid. A pipeline check, not a quality claim."""
    data = _totalseg_as_btcv(tmp_path / "btcv")
    settings = vb.load_settings("fine_btcv")
    settings = {
        **settings,
        "overrides": {"roi_size": [16, 64, 64], "embed_dim": 12, "num_workers": 0},
        "train_overrides": {"train_cases": ["case0001"], "val_cases": ["case0001"], "epochs": 2, "epoch_length": 2,
                            "val_interval": 2, "cache_rate": 0.0, "num_samples": 2, "batch_size": 1},
    }  # fmt: skip
    ckpt = tmp_path / "ckpt"
    vb.run_training(BUNDLE, settings, data, ckpt, tmp_path / "eval")
    fingerprint = json.loads((ckpt / "fingerprint.json").read_text())
    assert fingerprint["spacing"] == pytest.approx([3.0, 3.0, 3.0]) and fingerprint["num_cases"] == 1
    metrics = vb.run_evaluation(BUNDLE, settings, data, ckpt / "model.pt", tmp_path / "evaluation", {"val_mirror_axes": []})
    assert 0.0 <= metrics["val_mean_dice"] <= 1.0
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "ct.nii.gz").write_bytes((TOTALSEG / "example_ct_sm.nii.gz").read_bytes())
    vb.run_inference(BUNDLE, settings, inputs, ckpt / "model.pt", tmp_path / "out", {"mirror_axes": [0]})
    out = nib.load(str(tmp_path / "out" / "ct_seg.nii.gz"))
    reference = nib.load(str(inputs / "ct.nii.gz"))
    assert out.shape == reference.shape and np.allclose(out.affine, reference.affine, atol=1e-4)
    assert set(np.unique(np.asarray(out.dataobj)).tolist()) <= set(range(14))
