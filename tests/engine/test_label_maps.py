"""Label maps written by SaveLabelMapd for NRRD, MetaImage and DICOM inputs: shape, physical affine, atomicity.

The DICOM test uses the real series in ../shared/data/totalseg_ct (skipped when that folder is absent).
"""

from __future__ import annotations

import os
from pathlib import Path

import itk
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.inferers import SimpleInferer
from monai.transforms import (
    Activationsd,
    AsDiscreted,
    Compose,
    EnsureTyped,
    Invertd,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
)

from medattn_networks.data import InputSanityd
from medattn_networks.engine import SaveLabelMapd, inference_datalist

REPO_ROOT = Path(__file__).resolve().parents[2]
TOTALSEG = REPO_ROOT.parent / "shared" / "data" / "totalseg_ct"  # ../shared/data beside the checkout
DICOM = TOTALSEG / "example_ct_dicom"
DICOM_SEG = TOTALSEG / "example_seg_dicom.nii.gz"
SCAN_READER = "medattn_networks.data.ScanReader"

needs_dicom = pytest.mark.skipif(not DICOM.is_dir() or not DICOM_SEG.is_file(), reason=f"no DICOM series at {DICOM}")


def _itk_volume():
    array = np.random.default_rng(0).integers(-100, 100, (7, 6, 5)).astype(np.int16)  # z, y, x
    image = itk.image_from_array(array)
    image.SetSpacing([0.8, 1.2, 2.5])
    image.SetOrigin([10.0, -20.5, 33.3])
    c, s = np.cos(0.3), np.sin(0.3)
    image.SetDirection(itk.matrix_from_array(np.array([[c, 0.0, -s], [s, 0.0, c], [0.0, -1.0, 0.0]])))  # oblique, permuted
    return image


def _preprocessing(reader):
    return Compose([
        LoadImaged("image", ensure_channel_first=True, image_only=True, reader=reader),
        EnsureTyped("image", dtype=torch.float32),
        Orientationd("image", axcodes="RAS"),
    ])


def _segment_and_save(item, reader):
    """The inference postprocessing on a dummy label: threshold the preprocessed image, Invertd, SaveLabelMapd."""
    pre = _preprocessing(reader)
    data = pre(dict(item))
    data["pred"] = (data["image"] > 0).float()
    data = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True)(data)
    SaveLabelMapd(keys="pred", output_key="output")(data)
    return nib.load(item["output"])


@pytest.mark.parametrize("reader", [None, SCAN_READER])
@pytest.mark.parametrize("ext", [".nrrd", ".nhdr", ".mha", ".mhd"])
def test_label_map_of_itk_input_has_its_grid(tmp_path, ext, reader):
    data = tmp_path / "in"
    data.mkdir()
    itk.imwrite(_itk_volume(), str(data / f"scan{ext}"))
    (item,) = inference_datalist(data, num_channels=1, report_dir=tmp_path / "out")
    assert item["output"] == str(tmp_path / "out" / "scan_seg.nii.gz")
    written = _segment_and_save(item, reader)
    loaded = LoadImaged("image", ensure_channel_first=True, image_only=True)({"image": item["image"]})["image"]
    assert written.shape == tuple(loaded.shape[1:]) == (5, 6, 7)
    assert written.get_data_dtype() == np.uint8
    np.testing.assert_allclose(written.affine, loaded.affine.numpy(), atol=1e-4)
    assert int(written.header["sform_code"]) == 1 and int(written.header["qform_code"]) == 1
    np.testing.assert_allclose(written.header.get_qform(), loaded.affine.numpy(), atol=1e-4)
    # voxel for voxel in the input's order, whatever Orientationd did in between
    np.testing.assert_array_equal(np.asarray(written.dataobj), (loaded[0].numpy() > 0).astype(np.uint8))
    image = _itk_volume()  # and that is the physical grid ITK describes (LPS), in RAS
    lps = np.eye(4)
    lps[:3, :3] = itk.array_from_matrix(image.GetDirection()) @ np.diag(list(image.GetSpacing()))
    lps[:3, 3] = list(image.GetOrigin())
    np.testing.assert_allclose(written.affine, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, atol=1e-4)


@needs_dicom
def test_label_map_of_dicom_series_is_in_the_series_space(tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    os.symlink(DICOM, data / "example_ct_dicom")
    (item,) = inference_datalist(data, num_channels=1, report_dir=tmp_path / "out")
    assert item["image"] == str(data / "example_ct_dicom")
    assert item["output"] == str(tmp_path / "out" / "example_ct_dicom_seg.nii.gz")
    loaded = LoadImaged("image", ensure_channel_first=True, image_only=True)(dict(item))["image"]
    assert tuple(loaded.shape) == (1, 512, 512, 20)
    written = _segment_and_save(item, SCAN_READER)
    assert written.shape == (512, 512, 20)
    np.testing.assert_allclose(written.affine, loaded.affine.numpy(), atol=1e-4)
    # example_seg_dicom.nii.gz holds the same physical grid with its rows stored the other way round (y flipped):
    # equal once both are brought to the closest canonical (RAS) orientation
    reference = nib.load(str(DICOM_SEG))
    assert reference.shape == (512, 512, 20)
    assert not np.allclose(reference.affine, written.affine, atol=1e-4)
    np.testing.assert_allclose(nib.as_closest_canonical(written).affine, nib.as_closest_canonical(reference).affine, atol=1e-4)
    # and its labels do lie on the CT's body in that space (not on air): the claim holds physically
    seg = np.asarray(nib.as_closest_canonical(reference).dataobj)
    ct = np.asarray(nib.as_closest_canonical(nib.Nifti1Image(loaded[0].numpy(), loaded.affine.numpy())).dataobj)
    assert (ct[seg > 0] < -500).mean() < 0.05


def test_save_label_map_in_a_supervised_evaluator(tmp_path):
    """The per-item dicts of SupervisedEvaluator's postprocessing (decollated) carry the output path."""
    data = tmp_path / "in"
    data.mkdir()
    itk.imwrite(_itk_volume(), str(data / "a.nrrd"))
    itk.imwrite(_itk_volume(), str(data / "b.mha"))
    nib.save(nib.Nifti1Image(np.random.default_rng(1).random((6, 5, 4)).astype(np.float32), np.diag([-2.0, 1.5, 3.0, 1.0])),
             str(data / "c.nii.gz"))
    items = inference_datalist(data, num_channels=1, report_dir=tmp_path / "out")
    pre = Compose([
        LoadImaged("image", ensure_channel_first=True, image_only=True, reader=SCAN_READER),
        InputSanityd("image"),
        EnsureTyped("image", dtype=torch.float32),
        Orientationd("image", axcodes="RAS"),
        NormalizeIntensityd("image", channel_wise=True),
    ])
    post = Compose([
        Activationsd("pred", softmax=True),
        Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False, to_tensor=True),
        AsDiscreted("pred", argmax=True),
        SaveLabelMapd("pred", output_key="output"),
    ])
    network = torch.nn.Conv3d(1, 3, 1)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(items, pre), batch_size=1, num_workers=0),
        network=network,
        inferer=SimpleInferer(),
        postprocessing=post,
    )
    evaluator.run()
    for item in items:
        written = nib.load(item["output"])
        loaded = LoadImaged("image", ensure_channel_first=True, image_only=True)({"image": item["image"]})["image"]
        assert written.shape == tuple(loaded.shape[1:])
        np.testing.assert_allclose(written.affine, loaded.affine.numpy(), atol=1e-4)
        assert written.get_data_dtype() == np.uint8 and set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2}
    assert sorted(os.listdir(tmp_path / "out")) == ["a_seg.nii.gz", "b_seg.nii.gz", "c_seg.nii.gz"]


def _label(shape=(4, 5, 6), affine=None, value=1.0):
    label = MetaTensor(torch.full((1, *shape), value), affine=torch.diag(torch.tensor([2.0, 3.0, 4.0, 1.0])) if affine is None else affine)
    label.meta["spatial_shape"] = np.array(shape)
    label.meta["filename_or_obj"] = "scan.nrrd"
    return label


def test_save_label_map_shapes_and_batches(tmp_path):
    target = tmp_path / "deep" / "x_seg.nii.gz"
    SaveLabelMapd()({"pred": _label()[0], "output": str(target)})  # (X, Y, Z) without channel
    written = nib.load(str(target))
    assert written.shape == (4, 5, 6) and np.allclose(written.affine, np.diag([2.0, 3.0, 4.0, 1.0]))
    one_slice = tmp_path / "slice_seg.nii.gz"
    SaveLabelMapd()({"pred": _label((4, 5, 1)), "output": str(one_slice)})
    assert nib.load(str(one_slice)).shape == (4, 5, 1)  # a trailing 1-long axis is kept
    batched = _label()[None]  # a batch of one that was not decollated
    batched.meta["affine"] = batched.affine[None]
    batched.is_batch = True
    SaveLabelMapd()({"pred": batched, "output": [str(tmp_path / "b_seg.nii")]})
    assert nib.load(str(tmp_path / "b_seg.nii")).shape == (4, 5, 6)
    with pytest.raises(ValueError, match=r"label map has shape \(4, 5, 6\) but its input had \(8, 5, 6\).*Invertd"):
        label = _label()
        label.meta["spatial_shape"] = np.array([8, 5, 6])
        SaveLabelMapd()({"pred": label, "output": str(tmp_path / "m.nii.gz")})
    with pytest.raises(ValueError, match="do not fit uint8"):
        SaveLabelMapd()({"pred": _label(value=300.0), "output": str(tmp_path / "v.nii.gz")})
    with pytest.raises(ValueError, match="one-channel label map"):
        SaveLabelMapd()({"pred": MetaTensor(torch.zeros(2, 3, 3, 3)), "output": str(tmp_path / "c.nii.gz")})
    oblique = torch.tensor([[0.0, 0.0, 2.0, 5.0], [1.5, 0.0, 0.0, -3.0], [0.0, -1.0, 0.0, 7.0], [0, 0, 0, 1]], dtype=torch.float64)
    for writer, name in (("NibabelWriter", "sag_seg.nii.gz"), ("ITKWriter", "sag_seg.nrrd")):  # sagittal storage
        SaveLabelMapd(writer=writer)({"pred": _label(affine=oblique, value=2.0), "output": str(tmp_path / name)})
        back = LoadImaged("image", image_only=True)({"image": str(tmp_path / name)})["image"]
        assert tuple(back.shape) == (4, 5, 6) and float(back.max()) == 2.0
        np.testing.assert_allclose(back.affine.numpy(), oblique.numpy(), atol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b_seg.nii", "deep", "sag_seg.nii.gz", "sag_seg.nrrd",
                                                           "slice_seg.nii.gz"]


def test_save_label_map_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "case_seg.nii.gz"
    target.write_bytes(b"previous label map")
    seen = []

    def half_written(image, filename):
        seen.append(Path(filename).name)
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", half_written)
    with pytest.raises(OSError, match="disk full"):
        SaveLabelMapd()({"pred": _label(), "output": str(target)})
    assert seen == [f".case_seg.tmp-{os.getpid()}.nii.gz"]  # written beside the target, same extension
    assert target.read_bytes() == b"previous label map"  # the final name never holds a partial file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case_seg.nii.gz"]  # no temporary file left
    monkeypatch.undo()
    target.unlink()

    class FailingWriter:
        def __init__(self, output_dtype=None):
            pass

        def set_data_array(self, data_array, **kwargs):
            pass

        def set_metadata(self, meta_dict, **kwargs):
            raise RuntimeError("writer broke")

    with pytest.raises(RuntimeError, match="writer broke"):
        SaveLabelMapd(writer=FailingWriter)({"pred": _label(), "output": str(target)})
    assert list(tmp_path.iterdir()) == []
    SaveLabelMapd()({"pred": _label(), "output": str(target)})
    assert nib.load(str(target)).shape == (4, 5, 6) and sorted(p.name for p in tmp_path.iterdir()) == ["case_seg.nii.gz"]
