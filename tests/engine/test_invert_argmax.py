"""InvertArgmaxd: channel-by-channel inverse + argmax equals Invertd followed by AsDiscreted(argmax=True)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import AsDiscreted, Compose, CropForegroundd, EnsureTyped, Invertd, LoadImaged, Orientationd, Spacingd

from medattn_networks.engine import InvertArgmaxd


def _preprocessed(tmp_path, shape=(30, 26, 12)):
    rng = np.random.default_rng(0)
    image = np.zeros(shape, np.float32)
    image[4:-5, 3:-4, 2:-2] = rng.normal(100, 20, (shape[0] - 9, shape[1] - 7, shape[2] - 4))  # a border to crop
    affine = np.array([[0, -0.8, 0, 10], [0.8, 0, 0, -5], [0, 0, 2.5, 3], [0, 0, 0, 1]])  # not RAS, anisotropic
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), str(path))
    preprocessing = Compose([
        LoadImaged("image", image_only=True, ensure_channel_first=True),
        EnsureTyped("image", dtype=torch.float32),
        Orientationd("image", axcodes="RAS"),
        Spacingd("image", pixdim=(1.0, 1.0, 1.2), mode="bilinear"),
        CropForegroundd("image", source_key="image", allow_smaller=True),
    ])
    data = preprocessing({"image": str(path)})
    return preprocessing, data, shape, affine


@pytest.mark.parametrize("nearest", [False, True])
def test_channelwise_inverse_argmax_equals_invert_then_argmax(tmp_path, nearest):
    preprocessing, data, shape, affine = _preprocessed(tmp_path)
    torch.manual_seed(0)
    logits = torch.randn(5, *data["image"].shape[1:])
    logits[2, :3] = logits[1, :3]  # exact ties: the first channel wins in both
    pred = data["image"].clone()[:1].repeat(5, *[1] * (logits.ndim - 1))
    pred.copy_(torch.softmax(logits, 0))
    reference = Compose([
        Invertd("pred", transform=preprocessing, orig_keys="image", nearest_interp=nearest, to_tensor=True),
        AsDiscreted("pred", argmax=True),
    ])({"image": data["image"], "pred": pred.clone()})["pred"]
    ours = InvertArgmaxd("pred", transform=preprocessing, orig_keys="image", nearest_interp=nearest)({"image": data["image"], "pred": pred})["pred"]
    assert tuple(ours.shape) == (1, *shape) == tuple(reference.shape)
    assert torch.equal(ours.as_tensor(), reference.as_tensor()) and len(torch.unique(ours)) == 5
    np.testing.assert_allclose(ours.affine.numpy(), affine, atol=1e-5)
    assert ours.dtype == reference.dtype == torch.float32
