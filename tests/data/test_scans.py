"""Header-only checks of NIfTI / NRRD / MetaImage / DICOM inputs, their output names, and InputSanityd."""

import gzip
import logging

import itk
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medattn_networks.data import (
    MAX_VOXELS,
    RGB_PROBLEM,
    InputSanityd,
    check_nifti,
    check_scan,
    is_dicom_dir,
    list_scans,
    output_names,
    scan_kind,
    scan_stem,
)
from medattn_networks.data import files as files_module

DIRECTION = np.array([[np.cos(0.3), -np.sin(0.3), 0.0], [np.sin(0.3), np.cos(0.3), 0.0], [0.0, 0.0, 1.0]])


def itk_volume(shape_xyz=(5, 6, 7), dtype=np.int16, components=1):
    """A small ITK image with non-identity spacing, origin and direction (shape given as x, y, z)."""
    x, y, z = shape_xyz
    if components == 1:
        image = itk.image_from_array(np.arange(x * y * z, dtype=dtype).reshape(z, y, x))
    else:
        image = itk.image_from_array(np.zeros((z, y, x, components), dtype), is_vector=True)
    image.SetSpacing([0.8, 1.2, 2.5])
    image.SetOrigin([10.0, -20.5, 33.3])
    image.SetDirection(itk.matrix_from_array(DIRECTION))
    return image


def write_dicom_slices(folder, count):
    """``count`` one-slice DICOM files without extension, each of its own series (ITK gives every write new UIDs)."""
    folder.mkdir()
    for i in range(count):
        itk.imwrite(itk.image_from_array(np.full((8, 9), i, np.int16)), str(folder / f"slice{i}.dcm"))
        (folder / f"slice{i}.dcm").rename(folder / f"IM{i:04d}")
    return folder


def nifti(path, shape=(6, 7, 5), dtype=np.float32):
    nib.save(nib.Nifti1Image(np.ones(shape, dtype), np.eye(4)), str(path))
    return path


def test_itk_files_are_listed_and_pass(tmp_path):
    for ext in (".nrrd", ".nhdr", ".mha", ".mhd"):
        itk.imwrite(itk_volume(), str(tmp_path / f"scan{ext}"))
    nifti(tmp_path / ".hidden.nii.gz")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.nii.gz").write_bytes(b"")  # a sub-folder that is no DICOM series: ignored
    names = [p.name for p in list_scans(tmp_path)]
    assert names == ["scan.mha", "scan.mhd", "scan.nhdr", "scan.nrrd"]  # .raw data files are not inputs
    for name in names:
        assert scan_kind(tmp_path / name) == "itk"
        assert scan_stem(tmp_path / name) == "scan"
        assert check_scan(tmp_path / name) is None, name
    assert scan_kind(tmp_path / "other") is None and scan_kind(tmp_path / "notes.txt") is None


def test_itk_shape_channel_and_limit_checks(tmp_path):
    itk.imwrite(itk_volume(), str(tmp_path / "vol.mha"))
    assert check_scan(tmp_path / "vol.mha", num_channels=2) == "expected 2 channel(s), found 1 (shape (5, 6, 7))"
    assert check_scan(tmp_path / "vol.mha", max_voxels=100) == "210 voxels exceed the limit 100"
    itk.imwrite(itk.image_from_array(np.zeros((4, 5), np.float32)), str(tmp_path / "flat.nrrd"))
    assert check_scan(tmp_path / "flat.nrrd") == "expected a 3D image, found shape (5, 4)"
    itk.imwrite(itk_volume(components=3, dtype=np.uint8), str(tmp_path / "rgb.mha"))
    assert check_scan(tmp_path / "rgb.mha") == RGB_PROBLEM
    (tmp_path / "junk.nrrd").write_text("not an image")
    assert check_scan(tmp_path / "junk.nrrd").startswith("not a readable NRRD or MetaImage file")


def test_itk_truncated_or_missing_data(tmp_path):
    image = itk.image_from_array(np.random.default_rng(0).random((20, 20, 20), dtype=np.float32))
    itk.imwrite(image, str(tmp_path / "raw.mha"))
    itk.imwrite(image, str(tmp_path / "gz.nrrd"), compression=True)
    itk.imwrite(image, str(tmp_path / "z.mha"), compression=True)
    itk.imwrite(image, str(tmp_path / "detached.mhd"))
    itk.imwrite(image, str(tmp_path / "gone.nhdr"))
    itk.imwrite(image, str(tmp_path / "gone.mhd"))
    names = ("raw.mha", "gz.nrrd", "z.mha", "detached.mhd", "gone.nhdr", "gone.mhd")
    assert all(check_scan(tmp_path / n) is None for n in names)
    for name in ("raw.mha", "gz.nrrd", "z.mha", "detached.raw"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[:-500])
    (tmp_path / "gone.raw").unlink()
    assert check_scan(tmp_path / "raw.mha") == "truncated: header promises 32000 bytes of image data, file holds 31500"
    assert check_scan(tmp_path / "detached.mhd").startswith("truncated: header promises 32000 bytes")
    assert check_scan(tmp_path / "z.mha").startswith("truncated: header promises 32000 bytes")
    assert "truncated gzip data" in check_scan(tmp_path / "gz.nrrd")
    assert check_scan(tmp_path / "gone.mhd") == "the data file 'gone.raw' named in its header is missing"
    problem = check_scan(tmp_path / "gone.nhdr")  # ITK's NRRD reader looks for the data file itself
    assert problem.startswith("not a readable NRRD or MetaImage file") and "couldn't open" in problem and "gone.raw" in problem


def test_rgb_and_complex_nifti(tmp_path):
    rgb = np.zeros((4, 5, 6), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(tmp_path / "rgb.nii.gz"))
    assert check_nifti(tmp_path / "rgb.nii.gz") == RGB_PROBLEM
    assert check_scan(tmp_path / "rgb.nii.gz") == RGB_PROBLEM
    assert check_nifti(nifti(tmp_path / "c.nii", dtype=np.complex64)) == RGB_PROBLEM
    assert check_nifti(nifti(tmp_path / "vec.nii.gz", shape=(4, 5, 6, 1, 3))) == RGB_PROBLEM  # NIfTI vector axis


def _bomb(path, shape=(1000, 1000, 1000)):
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header["vox_offset"] = 352
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * 4096))
    return path


def test_decompression_bomb_is_rejected_without_inflating(tmp_path, monkeypatch):
    bomb = _bomb(tmp_path / "bomb.nii.gz")
    assert bomb.stat().st_size < 4096
    monkeypatch.setattr(files_module, "gzip_payload_size", lambda *a, **k: pytest.fail("the bomb was inflated"))
    assert check_nifti(bomb) == f"1000000000 voxels exceed the limit {MAX_VOXELS}"
    monkeypatch.undo()
    assert "truncated: header promises" in check_nifti(bomb, max_voxels=None)  # inflated only as far as it goes
    assert check_nifti(nifti(tmp_path / "small.nii.gz"), max_voxels=100) == "210 voxels exceed the limit 100"


def test_gzip_check_stops_at_the_promised_bytes(tmp_path):
    path = nifti(tmp_path / "a.nii.gz", (20, 20, 20))
    whole = gzip.decompress(path.read_bytes())
    stream = gzip.compress(whole + np.random.default_rng(0).bytes(1 << 20))  # 1 MiB of trailing bytes
    path.write_bytes(stream[: len(stream) - 1000])  # cut inside the trailing part: reading to the end fails
    with pytest.raises(EOFError):
        gzip.decompress(path.read_bytes())
    assert check_nifti(path) is None  # the check stopped once the promised bytes were there
    assert files_module.gzip_payload_size(path, len(whole), chunk=1000) == len(whole)


def test_dicom_folders(tmp_path):
    two = write_dicom_slices(tmp_path / "two", 2)
    assert is_dicom_dir(two) and scan_kind(two) == "dicom" and scan_stem(two) == "two"
    assert check_scan(two) == "2 DICOM series in one folder (one series per folder is supported)"
    one = write_dicom_slices(tmp_path / "one", 1)
    (one / "README").write_text("a non-DICOM file beside the series")
    assert check_scan(one) is None
    assert check_scan(one, max_voxels=10) == "72 voxels exceed the limit 10"
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.txt").write_text("x" * 200)
    assert not is_dicom_dir(plain) and [p.name for p in list_scans(tmp_path)] == ["one", "two"]


def test_output_names_are_distinct_and_deterministic(tmp_path, caplog):
    inputs = [tmp_path / n for n in ("case", "case.nii", "case.nii.gz", "case_2.nrrd", "Other.mha", "other.nii")]
    with caplog.at_level(logging.WARNING, logger="medattn.inputs"):
        names = output_names(inputs, "seg", ".nii.gz")
    assert names == ["case_seg.nii.gz", "case_3_seg.nii.gz", "case_4_seg.nii.gz", "case_2_seg.nii.gz",
                     "Other_seg.nii.gz", "other_2_seg.nii.gz"]
    warnings = [r.getMessage() for r in caplog.records]
    assert any(f"{tmp_path / 'case'} and {tmp_path / 'case.nii'} would both be written to case_seg.nii.gz" in w
               and "case_3_seg.nii.gz" in w for w in warnings)
    assert output_names(inputs[:1], "", "nii") == ["case.nii"]


# ------------------------------------------------------------------------------------------------ InputSanityd


def _image(values, affine=None, name="scan.nii.gz"):
    t = MetaTensor(torch.as_tensor(values, dtype=torch.float32)[None], affine=torch.eye(4) if affine is None else affine)
    t.meta["filename_or_obj"] = name
    return t


def test_sanity_replaces_non_finite_voxels(caplog):
    values = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6) + 3
    values[0, 0, :3] = [np.nan, np.inf, -np.inf]
    with caplog.at_level(logging.WARNING, logger="medattn.inputs"):
        out = InputSanityd("image")({"image": _image(values)})
    image = out["image"]
    assert image.dtype == torch.float32 and isinstance(image, MetaTensor)
    assert torch.isfinite(image).all() and float(image[0, 0, 0, 0]) == 6.0  # smallest finite value
    assert out["warnings_image"] == ["3 non-finite voxel(s) (NaN/Inf) replaced by 6"]
    assert any(r.getMessage() == "scan.nii.gz: 3 non-finite voxel(s) (NaN/Inf) replaced by 6" for r in caplog.records)
    all_nan = InputSanityd("image")({"image": _image(np.full((3, 3, 3), np.nan))})
    assert float(all_nan["image"].abs().max()) == 0.0
    assert all_nan["warnings_image"][1] == "constant volume: its segmentation is meaningless"


def test_sanity_constant_volume_and_channel(caplog):
    with caplog.at_level(logging.WARNING, logger="medattn.inputs"):
        out = InputSanityd("image")({"image": _image(np.full((4, 4, 4), 7.0))})
    assert out["warnings_image"] == ["constant volume: its segmentation is meaningless"]
    assert "scan.nii.gz: constant volume" in caplog.text
    two = MetaTensor(torch.stack([torch.rand(4, 4, 4), torch.zeros(4, 4, 4)]), affine=torch.eye(4))
    assert InputSanityd("image")({"image": two})["warnings_image"] == ["channel 1 is constant"]


def test_sanity_spacing_in_ras_order():
    values = np.random.default_rng(0).random((4, 5, 6))
    far = np.diag([5.0, 1.0, 1.0, 1.0])
    out = InputSanityd("image", expected_spacing=(1.0, 1.0, 1.0))({"image": _image(values, torch.as_tensor(far))})
    assert len(out["warnings_image"]) == 1 and "more than x2 on axis R" in out["warnings_image"][0]
    assert InputSanityd("image", expected_spacing=(1.0, 1.0, 1.0), spacing_tolerance=6)({"image": _image(values, torch.as_tensor(far))})["warnings_image"] == []
    permuted = torch.tensor([[0.0, 0, 3, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=torch.float64)  # storage axis 3 is R
    ok = InputSanityd("image", expected_spacing=(3.0, 1.0, None))({"image": _image(values, permuted)})
    assert ok["warnings_image"] == []
    fine = InputSanityd("image", expected_spacing=1.5)({"image": _image(values, torch.as_tensor(np.diag([1.0, 2.0, 2.9, 1.0])))})
    assert fine["warnings_image"] == []


def test_sanity_intensity_range():
    rng = np.random.default_rng(0)
    ct = rng.uniform(-1000, 400, (10, 10, 10))
    check = InputSanityd("image", intensity_range=(-1000, 1000))
    assert check({"image": _image(ct)})["warnings_image"] == []
    normalised = check({"image": _image(rng.random((10, 10, 10)))})["warnings_image"]
    assert len(normalised) == 1 and "is on another scale than the expected range [-1000, 1000]" in normalised[0]
    far = check({"image": _image(ct + 10000)})["warnings_image"]
    assert len(far) == 1 and "lies far outside the expected range" in far[0]
    with pytest.raises(ValueError, match="intensity_range"):
        InputSanityd("image", intensity_range=(1, 0))


def test_sanity_warnings_do_not_break_spacing():
    """MONAI's Spacingd treats every ``image_*`` entry as a meta dict; the warnings list must not be one of them."""
    from monai.data import MetaTensor
    from monai.transforms import Spacingd

    image = MetaTensor(torch.rand(1, 8, 8, 8), affine=torch.eye(4), meta={"filename_or_obj": "scan.nii.gz"})
    out = Spacingd("image", pixdim=(2.0, 2.0, 2.0))(InputSanityd("image")({"image": image}))
    assert out["image"].shape == (1, 4, 4, 4) and out["warnings_image"] == []
