import gzip

import nibabel as nib
import numpy as np
import pytest

from medattn_networks.data import SKIPPED_REPORT, check_nifti
from medattn_networks.engine import inference_datalist, require_checkpoint


def _save(path, shape=(6, 7, 5), dtype=np.float32):
    nib.save(nib.Nifti1Image(np.ones(shape, dtype), np.eye(4)), str(path))
    return path


def test_good_files_pass(tmp_path):
    assert check_nifti(_save(tmp_path / "a.nii.gz")) is None
    assert check_nifti(_save(tmp_path / "b.nii")) is None
    assert check_nifti(_save(tmp_path / "c.nii.gz", (6, 7, 5, 3)), num_channels=3) is None


def test_truncated_and_foreign_files_are_described(tmp_path):
    raw = _save(tmp_path / "raw.nii", (20, 20, 20))
    raw.write_bytes(raw.read_bytes()[:-100])
    assert "truncated" in check_nifti(raw)
    gz = _save(tmp_path / "gz.nii.gz", (20, 20, 20))
    gz.write_bytes(gz.read_bytes()[:200])
    assert "truncated" in check_nifti(gz)
    short_payload = tmp_path / "short.nii.gz"  # a complete gzip stream holding too few bytes
    _save(tmp_path / "full.nii.gz", (20, 20, 20))
    whole = gzip.decompress((tmp_path / "full.nii.gz").read_bytes())
    short_payload.write_bytes(gzip.compress(whole[: len(whole) // 2]))
    assert "header promises" in check_nifti(short_payload)
    junk = tmp_path / "junk.nii"
    junk.write_text("not an image")
    assert "not a readable NIfTI" in check_nifti(junk)


def test_channel_and_dimension_checks(tmp_path):
    assert "expected 1 channel(s), found 2" in check_nifti(_save(tmp_path / "two.nii.gz", (6, 7, 5, 2)), num_channels=1)
    assert "expected a 3D image" in check_nifti(_save(tmp_path / "flat.nii.gz", (6, 7)))


def test_inference_datalist_skips_and_reports(tmp_path, caplog):
    data = tmp_path / "in"
    data.mkdir()
    _save(data / "ok1.nii.gz")
    _save(data / "ok2.nii")
    (data / "bad.nii.gz").write_bytes(b"\x1f\x8b\x08 truncated")
    (data / "notes.txt").write_text("ignored: not NIfTI by name")
    items = inference_datalist(data, num_channels=1, report_dir=tmp_path / "out")
    assert [i["image"].rsplit("/", 1)[1] for i in items] == ["ok1.nii.gz", "ok2.nii"]
    report = (tmp_path / "out" / SKIPPED_REPORT).read_text().splitlines()
    assert report[0] == "file,problem" and len(report) == 2 and "bad.nii.gz" in report[1]
    assert any("bad.nii.gz" in r.message and "skipped" in r.message for r in caplog.records)
    (data / "bad.nii.gz").unlink()
    inference_datalist(data, report_dir=tmp_path / "out")
    assert not (tmp_path / "out" / SKIPPED_REPORT).exists()  # a stale report is removed


def test_inference_datalist_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="input folder not found: .*missing"):
        inference_datalist(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no .nii or .nii.gz files"):
        inference_datalist(tmp_path)
    (tmp_path / "x.nii").write_text("junk")
    with pytest.raises(ValueError, match="x.nii: not a readable NIfTI"):
        inference_datalist(tmp_path)


def test_require_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no weights at .*model.pt.*--load_pretrain false"):
        require_checkpoint(tmp_path / "model.pt")
    (tmp_path / "model.pt").write_bytes(b"x")
    assert require_checkpoint(tmp_path / "model.pt").endswith("model.pt")


# ------------------------------------------------------------------------ formats, output names, skip_existing


def _dicom_slices(folder, count):
    import itk

    folder.mkdir()
    for i in range(count):
        itk.imwrite(itk.image_from_array(np.full((8, 9), i, np.int16)), str(folder / f"s{i}.dcm"))
        (folder / f"s{i}.dcm").rename(folder / f"IM{i}")  # DICOM found by its magic, not its name
    return folder


def _bomb(path):
    header = nib.Nifti1Header()
    header.set_data_shape((1000, 1000, 1000))
    header.set_data_dtype(np.float32)
    header["vox_offset"] = 352
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4100))
    return path


def test_inference_datalist_all_formats_and_output_names(tmp_path, caplog):
    import itk

    data = tmp_path / "in"
    data.mkdir()
    _save(data / "case.nii")
    _save(data / "case.nii.gz")
    volume = itk.image_from_array(np.zeros((5, 6, 7), np.int16))
    itk.imwrite(volume, str(data / "scan.nrrd"))
    itk.imwrite(volume, str(data / "vol.mha"))
    _dicom_slices(data / "scan", 1)  # a DICOM folder with the NRRD's stem
    (data / "plain").mkdir()
    (data / ".tmp.nii.gz").write_bytes(b"hidden")
    with caplog.at_level("WARNING", logger="medattn.inputs"):
        items = inference_datalist(data, num_channels=1, report_dir=tmp_path / "out")
    out = tmp_path / "out"
    assert [(i["image"].rsplit("/", 1)[1], i["output"]) for i in items] == [
        ("case.nii", str(out / "case_seg.nii.gz")),
        ("case.nii.gz", str(out / "case_2_seg.nii.gz")),
        ("scan", str(out / "scan_seg.nii.gz")),
        ("scan.nrrd", str(out / "scan_2_seg.nii.gz")),
        ("vol.mha", str(out / "vol_seg.nii.gz")),
    ]
    assert f"{data / 'case.nii'} and {data / 'case.nii.gz'} would both be written to case_seg.nii.gz" in caplog.text
    assert f"{data / 'scan'} and {data / 'scan.nrrd'} would both be written to scan_seg.nii.gz" in caplog.text
    other = inference_datalist(data, output_dir=tmp_path / "labels", output_key="label_path", output_postfix="",
                               output_ext=".nii")
    assert other[0]["label_path"] == str(tmp_path / "labels" / "case.nii")
    assert "output" not in inference_datalist(data)[0]  # no output or report folder: no label map path


def test_inference_datalist_reports_rgb_bomb_and_two_series(tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    _save(data / "good.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")]), np.eye(4)),
             str(data / "rgb.nii.gz"))
    _bomb(data / "bomb.nii.gz")
    _dicom_slices(data / "series", 2)
    items = inference_datalist(data, report_dir=tmp_path / "out")
    assert [i["image"].rsplit("/", 1)[1] for i in items] == ["good.nii.gz"]
    rows = (tmp_path / "out" / SKIPPED_REPORT).read_text().splitlines()[1:]
    assert rows == [
        f"{data / 'bomb.nii.gz'},1000000000 voxels exceed the limit 536870912",
        f"{data / 'rgb.nii.gz'},RGB/vector pixels are not supported",
        f"{data / 'series'},2 DICOM series in one folder (one series per folder is supported)",
    ]


def test_inference_datalist_max_voxels(tmp_path):
    _save(tmp_path / "a.nii.gz", (10, 10, 10))
    _save(tmp_path / "b.nii.gz", (4, 4, 4))
    items = inference_datalist(tmp_path, max_voxels=500)
    assert [i["image"].rsplit("/", 1)[1] for i in items] == ["b.nii.gz"]
    with pytest.raises(ValueError, match="a.nii.gz: 1000 voxels exceed the limit 50.*b.nii.gz: 64 voxels exceed"):
        inference_datalist(tmp_path, max_voxels=50)


def test_inference_datalist_skip_existing(tmp_path, caplog):
    data, out = tmp_path / "in", tmp_path / "out"
    data.mkdir()
    out.mkdir()
    for name in ("a", "b", "c"):
        _save(data / f"{name}.nii.gz")
    (data / "bad.nii.gz").write_bytes(b"junk")
    (out / "a_seg.nii.gz").write_bytes(b"done")
    with caplog.at_level("INFO", logger="medattn.inputs"):
        items = inference_datalist(data, report_dir=out, skip_existing=True)
    assert [i["image"].rsplit("/", 1)[1] for i in items] == ["b.nii.gz", "c.nii.gz"]
    assert "a.nii.gz: already segmented" in caplog.text
    assert len(inference_datalist(data, report_dir=out)) == 3  # without skip_existing nothing is left out
    (out / "b_seg.nii.gz").write_bytes(b"done")
    (out / "c_seg.nii.gz").write_bytes(b"done")
    caplog.clear()
    with caplog.at_level("INFO", logger="medattn.inputs"):
        assert inference_datalist(data, report_dir=out, skip_existing=True) == []
    assert "3 input(s) in" in caplog.text and "already segmented, left out" in caplog.text and "; skipped" in caplog.text
    assert "bad.nii.gz" in (out / SKIPPED_REPORT).read_text()  # the bad input is still reported
    (out / "bad_seg.nii.gz").write_bytes(b"done")
    assert inference_datalist(data, report_dir=out, skip_existing=True) == []
    assert not (out / SKIPPED_REPORT).exists()
    with pytest.raises(ValueError, match="skip_existing needs output_dir"):
        inference_datalist(data, skip_existing=True)
