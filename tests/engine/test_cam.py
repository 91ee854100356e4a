"""Class activation maps: medattn_networks.engine.cam and the pam_unet3d_hippocampus cam.json run.

Unit tests use tiny 2D/3D nets; correctness is checked against a Grad-CAM computed here independently (a hook
written in the test, ``torch.autograd.grad`` on the layer's own output) and against closed forms (1×1 head, plain
CAM of a pooled linear classifier). The end-to-end test runs ``python -m monai.bundle run`` with
``['configs/inference.json','configs/cam.json']`` on two small synthetic NIfTI files, one stored flipped (LAS), so
that the CAM's inversion through the preprocessing is checked, not only its shape.
"""

from __future__ import annotations

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
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer

from medattn_networks import UNet3D
from medattn_networks.data import make_nifti_folder
from medattn_networks.engine import (
    GradCAMPredictor,
    NormalizeCAMd,
    SegmentationGradCAM,
    classifier_cam,
    grad_cam,
    normalize_maps,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = REPO_ROOT / "bundles" / "pam_unet3d_hippocampus"
CHANNELS = (4, 4, 8, 8)


def tiny_unet(spatial_dims: int, attention: str = "none", depth: int | None = None, classes: int = 3) -> UNet3D:
    torch.manual_seed(0)
    return UNet3D(spatial_dims, 1, classes, channels=CHANNELS, attention=attention, depth=depth).eval()


def _input(shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def reference_grad_cam(net: nn.Module, x: torch.Tensor, layer: nn.Module, score: str = "predicted") -> torch.Tensor:
    """Grad-CAM written independently of the module under test."""
    store = []
    handle = layer.register_forward_hook(lambda m, i, o: store.append(o))
    with torch.enable_grad():
        logits = net(x.clone().requires_grad_(True))
        handle.remove()
        (acti,) = store
        pred = logits.argmax(1)
        dims = tuple(range(2, acti.ndim))
        maps = []
        for c in range(logits.shape[1]):
            mask = (pred == c).float() if score == "predicted" else torch.ones_like(pred, dtype=torch.float)
            (grad,) = torch.autograd.grad((logits[:, c] * mask).sum(), acti, retain_graph=True)
            weights = grad.mean(dim=dims, keepdim=True)
            maps.append(torch.clamp((weights * acti).sum(1), min=0))
    maps = torch.stack(maps, 1).detach()
    mode = {2: "bilinear", 3: "trilinear"}[x.ndim - 2]
    maps = F.interpolate(maps, size=x.shape[2:], mode=mode, align_corners=False)
    peak = maps.flatten(2).max(2).values
    out = torch.zeros_like(maps)
    for b in range(maps.shape[0]):
        for c in range(maps.shape[1]):
            if peak[b, c] > 0:
                out[b, c] = maps[b, c] / peak[b, c]
    return out


def _no_hooks(net: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in net.modules())


# ------------------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize(
    "dims, shape, layer",
    [
        (2, (2, 1, 16, 24), "decoder_attention.1"),
        (2, (1, 1, 16, 16), "decoders.2"),
        (3, (2, 1, 16, 16, 24), "decoder_attention.1"),
        (3, (1, 1, 16, 16, 16), "encoders.3"),
    ],
)
def test_maps_shape_and_range(dims, shape, layer):
    net = tiny_unet(dims)
    x = _input(shape)
    maps = grad_cam(net, x, layer)
    assert maps.shape == (shape[0], 3, *shape[2:])
    assert maps.dtype == torch.float32 and not maps.requires_grad
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    peaks = maps.flatten(2).amax(2)
    assert torch.all((peaks == 0) | torch.isclose(peaks, torch.ones_like(peaks)))  # each map: 0 or max 1
    assert peaks.max() == 1


def test_pam_3d_and_class_subset():
    net = tiny_unet(3, "pam", depth=16)
    x = _input((1, 1, 16, 16, 8))
    maps = SegmentationGradCAM(net, "decoder_attention.2", class_indices=[2, 0])(x)
    full = grad_cam(net, x, "decoder_attention.2")
    assert maps.shape == (1, 2, 16, 16, 8)
    torch.testing.assert_close(maps, full[:, [2, 0]])


# ------------------------------------------------------------------------------------------ correctness
@pytest.mark.parametrize("dims, shape", [(2, (2, 1, 16, 20)), (3, (2, 1, 16, 16, 24))])
@pytest.mark.parametrize("score", ["predicted", "all"])
@pytest.mark.parametrize("layer", ["decoders.1", "decoder_attention.2", "encoders.2"])
def test_matches_independent_grad_cam(dims, shape, score, layer):
    net = tiny_unet(dims)
    x = _input(shape)
    expected = reference_grad_cam(net, x, net.get_submodule(layer), score)
    actual = grad_cam(net, x, layer, score=score)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)
    assert expected.flatten(2).amax(2).max() == 1  # not a trivially zero comparison


def test_pam_matches_independent_grad_cam():
    net = tiny_unet(3, "pam", depth=16)
    x = _input((2, 1, 16, 16, 16))
    expected = reference_grad_cam(net, x, net.get_submodule("decoder_attention.1"))
    torch.testing.assert_close(grad_cam(net, x, "decoder_attention.1"), expected, atol=1e-5, rtol=1e-4)


def test_head_input_closed_form():
    """At the input of a 1×1-conv head, score 'all': alpha_k = w_ck, so the map is ReLU(logit_c - bias_c)."""
    net = tiny_unet(3)
    x = _input((1, 1, 16, 16, 16))
    logits = net(x).detach()
    expected = normalize_maps(F.relu(logits - net.head.bias.detach().view(1, -1, 1, 1, 1)))
    torch.testing.assert_close(grad_cam(net, x, "decoder_attention.2", score="all"), expected, atol=1e-5, rtol=1e-4)


class _Classifier(nn.Module):
    def __init__(self, dims: int) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.features = nn.Sequential(
            conv(1, 6, 3, padding=1), nn.ReLU(inplace=True), conv(6, 5, 3, stride=2, padding=1)
        )
        self.act = nn.ReLU(inplace=True)  # in-place right after the target layer
        self.fc = nn.Linear(5, 4)

    def forward(self, x):
        return self.fc(self.act(self.features(x)).flatten(2).mean(2))


@pytest.mark.parametrize("dims", [2, 3])
def test_plain_cam_equals_grad_cam_for_pooled_linear_classifier(dims):
    torch.manual_seed(0)
    net = _Classifier(dims).eval()
    x = _input((2, 1, *([8] * dims)))
    cam = classifier_cam(net, x, "act", "fc")
    gcam = grad_cam(net, x, "act", score="all")  # d logit_c / dA_k = w_ck / N everywhere
    assert cam.shape == gcam.shape == (2, 4, *([8] * dims))
    torch.testing.assert_close(gcam, cam, atol=1e-5, rtol=1e-4)
    with pytest.raises(TypeError, match="nn.Linear"):
        classifier_cam(net, x, "act", "features")


def test_inplace_op_after_target_layer():
    torch.manual_seed(0)
    net = _Classifier(2).eval()
    x = _input((1, 1, 8, 8))
    maps = grad_cam(net, x, "features", score="all")  # followed by ReLU(inplace=True)
    assert torch.isfinite(maps).all() and maps.max() == 1
    assert _no_hooks(net)


# ------------------------------------------------------------------------------------------ side effects
def test_no_side_effects_on_network():
    net = tiny_unet(3)
    params = list(net.parameters())
    marked = params[0]
    marked.grad = torch.full_like(marked, 7.0)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    x = _input((1, 1, 16, 16, 16))
    with torch.no_grad():  # as inside a MONAI evaluator
        maps = grad_cam(net, x, "decoders.1")
    assert maps.max() == 1
    assert torch.equal(marked.grad, torch.full_like(marked, 7.0))
    assert all(p.grad is None for p in params[1:])
    assert all(torch.equal(p, before[n]) for n, p in net.named_parameters())
    assert all(p.requires_grad for p in params)
    assert not net.training and not any(m.training for m in net.modules())
    assert _no_hooks(net)


def test_grad_mode_and_train_flags_restored():
    net = tiny_unet(2)
    x = _input((1, 1, 16, 16))
    eval_maps = grad_cam(net, x, "decoders.1")
    net.train()
    net.decoders[0].eval()  # mixed flags come back exactly
    with torch.no_grad():
        train_maps = grad_cam(net, x, "decoders.1")
        assert not torch.is_grad_enabled()
    torch.testing.assert_close(train_maps, eval_maps)  # computed in eval mode
    assert net.training and not any(m.training for m in net.decoders[0].modules())
    assert all(m.training for n, m in net.named_modules() if not n.startswith("decoders.0"))


def test_frozen_parameters_still_give_maps():
    net = tiny_unet(2)
    for p in net.parameters():
        p.requires_grad_(False)
    x = _input((1, 1, 16, 16))
    expected = grad_cam(tiny_unet(2), x, "decoders.1")
    torch.testing.assert_close(grad_cam(net, x, "decoders.1"), expected)
    assert not any(p.requires_grad for p in net.parameters())


def test_zero_gradient_classes_give_zero_maps():
    net = tiny_unet(3)
    with torch.no_grad():
        net.head.bias.copy_(torch.tensor([1e4, 0.0, 0.0]))  # every voxel predicted background
    x = _input((1, 1, 16, 16, 16))
    maps = grad_cam(net, x, "decoders.1")  # classes 1, 2: empty masks → zero gradient
    assert torch.isfinite(maps).all()
    assert torch.count_nonzero(maps[:, 1:]) == 0
    zero_input = grad_cam(tiny_unet(3), torch.zeros(1, 1, 16, 16, 16), "decoders.1")
    assert torch.isfinite(zero_input).all() and zero_input.min() >= 0 and zero_input.max() <= 1


def test_hooks_removed_after_errors():
    net = tiny_unet(3)
    x = _input((1, 1, 16, 16, 16))
    with pytest.raises(ValueError, match="ran 3 times"):
        grad_cam(net, x, "pool")  # max-pool module is shared by 3 levels
    assert _no_hooks(net)
    with pytest.raises(ValueError, match="out of range"):
        SegmentationGradCAM(net, "decoders.1", class_indices=[5])(x)
    assert _no_hooks(net)
    with pytest.raises(ValueError, match="not found.*decoder_attention"):
        grad_cam(net, x, "decoders.9")
    with pytest.raises(ValueError, match="score"):
        SegmentationGradCAM(net, "decoders.1", score="mean")


# -------------------------------------------------------------------------------------- sliding window
def test_predictor_with_sliding_window_on_fixed_depth_net():
    net = tiny_unet(3, "pam", depth=16)
    predictor = GradCAMPredictor(net, "decoder_attention.1")
    inferer = SlidingWindowInferer((16, 16, 16), sw_batch_size=2, overlap=0.5, mode="gaussian")
    with torch.no_grad():
        window = _input((1, 1, 16, 16, 16))
        single = inferer(window, predictor)  # one window: the stitched map is that window's map
        raw = SegmentationGradCAM(net, "decoder_attention.1", normalize=False)(window)
        torch.testing.assert_close(single, raw, atol=1e-5, rtol=1e-4)
        big = inferer(_input((1, 1, 21, 26, 17), seed=3), predictor)  # not a multiple of the window
    assert big.shape == (1, 3, 21, 26, 17)
    assert torch.isfinite(big).all() and big.min() >= 0 and big.max() > 0
    normalized = normalize_maps(big)
    assert normalized.max() == 1 and normalized.min() >= 0
    assert _no_hooks(net) and all(p.grad is None for p in net.parameters())


def test_normalize_cam_keeps_meta():
    affine = torch.diag(torch.tensor([2.0, 1.0, 1.5, 1.0]))
    maps = MetaTensor(torch.rand(3, 4, 5, 6) * 5 - 1, affine=affine)
    maps[1] = 0
    out = NormalizeCAMd("cam")({"cam": maps})["cam"]
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, affine)
    assert out.min() == 0 and out.max() == 1 and torch.count_nonzero(out[1]) == 0
    torch.testing.assert_close(out[0].amax(), torch.tensor(1.0))


# ------------------------------------------------------------------------------------------ bundle run
def _flip_axis0(folder: Path, src: str, dst: str) -> None:
    """Store ``src`` as ``dst`` with axis 0 reversed and the affine adjusted: the same image in world space."""
    img = nib.load(str(folder / src))
    data = np.asarray(img.dataobj)[::-1].copy()
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, data.shape[0] - 1
    nib.save(nib.Nifti1Image(data, img.affine @ flip), str(folder / dst))


def test_bundle_writes_cams(tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    make_nifti_folder(inputs, 2, shape=(24, 28, 20))  # image_0, image_1 (different affines)
    _flip_axis0(inputs, "image_0.nii.gz", "image_1.nii.gz")  # image_1: image_0 stored flipped (LAS)
    cmd = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", "['configs/inference.json','configs/cam.json']",
        "--dataset_dir", str(inputs), "--output_dir", str(out), "--num_workers", "0",
        "--roi_size", "[16,24,16]", "--load_pretrain", "False", "--ckpt_path", str(tmp_path / "none.pt"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "not available" not in log, log[-4000:]  # Invertd found the transform trace

    cams, segs = {}, {}
    for name in ("image_0", "image_1"):
        image = nib.load(str(inputs / f"{name}.nii.gz"))
        seg = nib.load(str(out / f"{name}_seg.nii.gz"))
        cam = nib.load(str(out / f"{name}_cam.nii.gz"))
        assert seg.shape == image.shape and np.allclose(seg.affine, image.affine)
        assert cam.shape == (*image.shape, 3), cam.shape  # channels last, one map per class
        assert np.allclose(cam.affine, image.affine)
        assert cam.get_data_dtype() == np.float32
        data = np.asarray(cam.dataobj)
        assert data.dtype == np.float32 and np.isfinite(data).all()
        assert data.min() >= 0 and data.max() <= 1 and data.max() == 1
        cams[name], segs[name] = data, np.asarray(seg.dataobj)
    # same world image → the flipped file's maps are the other's, flipped back exactly like its labels
    assert np.array_equal(segs["image_1"], segs["image_0"][::-1])
    np.testing.assert_allclose(cams["image_1"], cams["image_0"][::-1], atol=1e-5)
    assert not np.allclose(cams["image_1"], cams["image_0"], atol=1e-3)  # the flip is not a no-op
