"""A bundle's inference on the folders users really have: DICOM series and NRRD next to NIfTI, odd files among good
ones (RGB, a decompression bomb, NaN voxels, two inputs that want one output name)."""

from __future__ import annotations

import csv
import gzip
import os
import subprocess
import sys
from pathlib import Path

import itk
import nibabel as nib
import numpy as np
import pytest

from medattn_networks.data import make_nifti_folder

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLE = REPO_ROOT / "bundles" / "pam_unet3d_hippocampus"
DICOM = REPO_ROOT.parent / "shared" / "data" / "totalseg_ct" / "example_ct_dicom"
SMALL = ["--roi_size", "[16,24,16]", "--num_workers", "0", "--load_pretrain", "false"]


# the FLARE bundles at a CPU-test size: 64×64×32 windows side by side (overlap 0), a small network
FLARE_SMALL = {
    "swinunetr_mam_flare": ["--roi_size", "[64,64,32]", "--feature_size", "12"],
    "nnformer_mam_flare": ["--roi_size", "[64,64,32]", "--embed_dim", "24"],
}


def _infer(
    dataset_dir: Path, output_dir: Path, *extra: str, bundle: Path = BUNDLE, small: list[str] = SMALL
) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", "--logging_file", "configs/logging.conf",
        "--dataset_dir", str(dataset_dir), "--output_dir", str(output_dir), *small, *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=bundle, env=env, capture_output=True, text=True, timeout=600)


def _monai_affine(path: Path) -> tuple[np.ndarray, tuple[int, ...]]:
    from monai.transforms import LoadImage

    from medattn_networks.data import ScanReader

    image = LoadImage(reader=ScanReader(), image_only=True, ensure_channel_first=True)(str(path))
    return np.asarray(image.affine), tuple(image.shape[1:])


@pytest.mark.slow
@pytest.mark.skipif(not DICOM.is_dir(), reason="needs ../shared/data/totalseg_ct beside the checkout")
def test_dicom_series_and_nrrd_are_segmented_in_their_physical_space(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "ct_series").symlink_to(DICOM, target_is_directory=True)
    volume = np.random.default_rng(0).normal(size=(20, 30, 26)).astype(np.float32)  # itk order: z, y, x
    image = itk.image_from_array(volume)
    image.SetSpacing((0.8, 1.1, 2.5))
    image.SetOrigin((-12.0, 30.0, 7.5))
    direction = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    image.SetDirection(itk.matrix_from_array(direction))
    itk.imwrite(image, str(folder / "scan.nrrd"))

    out = _infer(folder, tmp_path / "out")
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    for source, name in ((folder / "ct_series", "ct_series_seg.nii.gz"), (folder / "scan.nrrd", "scan_seg.nii.gz")):
        written = nib.load(str(tmp_path / "out" / name))
        affine, shape = _monai_affine(source)
        assert written.shape == shape
        np.testing.assert_allclose(written.affine, affine, atol=1e-4)
        assert written.get_data_dtype() == np.uint8
    assert nib.load(str(tmp_path / "out" / "ct_series_seg.nii.gz")).shape == (512, 512, 20)


@pytest.mark.slow
@pytest.mark.skipif(not DICOM.is_dir(), reason="needs ../shared/data/totalseg_ct beside the checkout")
@pytest.mark.parametrize("bundle", sorted(FLARE_SMALL))
def test_flare_bundles_segment_a_ct_dicom_series_in_its_space(tmp_path, bundle):
    """A real CT series (512² × 20, 0.98 × 0.98 × 2 mm) through resampling to 1 × 1 × 1.2 mm, the foreground crop
    and the sliding window, back to the series' grid."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "ct_series").symlink_to(DICOM, target_is_directory=True)
    small = [*FLARE_SMALL[bundle], "--sw_overlap", "0", "--num_workers", "0", "--load_pretrain", "false"]
    out = _infer(folder, tmp_path / "out", bundle=REPO_ROOT / "bundles" / bundle, small=small)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    written = nib.load(str(tmp_path / "out" / "ct_series_seg.nii.gz"))
    affine, shape = _monai_affine(folder / "ct_series")
    assert written.shape == shape == (512, 512, 20)
    np.testing.assert_allclose(written.affine, affine, atol=1e-4)
    assert written.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(written.dataobj))) <= set(range(5))
    assert not (tmp_path / "out" / "skipped_inputs.csv").is_file() or "ct_series" not in (
        tmp_path / "out" / "skipped_inputs.csv"
    ).read_text()


def _bomb(path: Path) -> None:
    header = nib.Nifti1Header()
    header.set_data_shape((1000, 1000, 1000))
    header.set_data_dtype(np.float32)
    header["vox_offset"] = 352
    with gzip.open(path, "wb") as f:
        f.write(header.binaryblock + b"\0" * 4 + b"\0" * 100_000)  # a few KB of gzip; 4 GB promised


def test_odd_files_are_reported_and_every_good_file_is_segmented(tmp_path):
    folder = tmp_path / "in"
    make_nifti_folder(folder, 2, shape=(24, 28, 20))  # image_0, image_1
    rgb = np.zeros((24, 28, 20), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(folder / "colour.nii.gz"))
    _bomb(folder / "bomb.nii.gz")
    nan = np.random.default_rng(1).normal(size=(24, 28, 20)).astype(np.float32)
    nan[3, 4, 5], nan[10, 10, 10] = np.nan, np.inf
    nib.save(nib.Nifti1Image(nan, np.eye(4)), str(folder / "with_nan.nii.gz"))
    nib.save(nib.Nifti1Image(nan[::-1].copy() * 0 + 1.0, np.eye(4)), str(folder / "image_0.nii"))  # collides with image_0.nii.gz

    out = _infer(folder, tmp_path / "out")
    text = out.stdout + out.stderr
    assert out.returncode == 4, text[-3000:]  # finished, some inputs skipped
    written = sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz"))
    assert written == ["image_0_2_seg.nii.gz", "image_0_seg.nii.gz", "image_1_seg.nii.gz", "with_nan_seg.nii.gz"]
    rows = {Path(r["file"]).name: r["problem"] for r in csv.DictReader(open(tmp_path / "out" / "skipped_inputs.csv", newline=""))}
    assert set(rows) == {"colour.nii.gz", "bomb.nii.gz"}
    assert "RGB/vector pixels are not supported" in rows["colour.nii.gz"]
    assert "1000000000 voxels exceed the limit" in rows["bomb.nii.gz"]
    assert "2 non-finite voxel(s)" in text and "with_nan.nii.gz" in text
    assert "constant volume" in text  # image_0.nii holds ones only
    assert "would both be written to image_0_seg.nii.gz" in text
    label = np.asarray(nib.load(str(tmp_path / "out" / "with_nan_seg.nii.gz")).dataobj)
    assert label.shape == (24, 28, 20)
