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
    with pytest.raises(FileNotFoundError, match="no weights at .*model.pt.*load_pretrain False"):
        require_checkpoint(tmp_path / "model.pt")
    (tmp_path / "model.pt").write_bytes(b"x")
    assert require_checkpoint(tmp_path / "model.pt").endswith("model.pt")
