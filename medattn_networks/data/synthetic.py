"""Small NIfTI datasets in the papers' published layouts, for tests, CI and demos (no download needed).

Images are smooth noise with ellipsoid "structures" whose labels the networks can learn; sizes are tiny.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np

from medattn_networks.data.brats import BRATS_MODALITIES

__all__ = ["make_msd_task", "make_brats_cases", "make_nifti_folder"]


def _ellipsoid(shape: Sequence[int], centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0


def _label_volume(rng: np.random.Generator, shape: Sequence[int], values: Sequence[int]) -> np.ndarray:
    """Nested ellipsoids: ``values[0]`` outermost, each next value inside the previous one."""
    label = np.zeros(shape, np.uint8)
    centre = [s / 2 + rng.uniform(-s / 8, s / 8) for s in shape]
    radii = [s / 3.5 for s in shape]
    for value in values:
        label[_ellipsoid(shape, centre, radii)] = value
        radii = [r * 0.6 for r in radii]
    return label


def _image_from_label(rng: np.random.Generator, label: np.ndarray, gain: float) -> np.ndarray:
    noise = rng.normal(0.0, 0.3, label.shape)
    return (100.0 + gain * 40.0 * label + 20.0 * noise).astype(np.float32)


def make_msd_task(
    root: str | os.PathLike, num_cases: int = 8, shape: Sequence[int] = (24, 28, 20), num_classes: int = 3, seed: int = 0
) -> Path:
    """Write ``imagesTr/case_NNN.nii.gz`` and ``labelsTr/case_NNN.nii.gz`` under ``root`` (MSD layout)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    for i in range(num_cases):
        label = _label_volume(rng, shape, list(range(1, num_classes)))
        image = _image_from_label(rng, label, 1.0)
        name = f"case_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(image, affine), str(root / "imagesTr" / name))
        nib.save(nib.Nifti1Image(label, affine), str(root / "labelsTr" / name))
    return root


def make_brats_cases(
    root: str | os.PathLike,
    num_cases: int = 6,
    shape: Sequence[int] = (32, 32, 24),
    seed: int = 0,
    grades: Sequence[str] = ("HGG", "LGG"),
    with_label: bool = True,
) -> Path:
    """BraTS 2018 training layout: ``<grade>/<case>/<case>_{t1,t2,t1ce,flair,seg}.nii.gz`` (labels 0, 1, 2, 4).

    ``shape`` is (x, y, z) as stored in the files (the real data is 240 × 240 × 155).
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])  # BraTS files are stored in LPS-like orientation
    for i in range(num_cases):
        grade = grades[i % len(grades)] if grades else ""
        case = f"Brats18_SYN_{i:03d}_1"
        case_dir = root / grade / case
        case_dir.mkdir(parents=True, exist_ok=True)
        label = _label_volume(rng, shape, (2, 1, 4))
        for k, modality in enumerate(BRATS_MODALITIES):
            gain = (k + 1) / len(BRATS_MODALITIES)
            nib.save(nib.Nifti1Image(_image_from_label(rng, label, gain), affine), str(case_dir / f"{case}_{modality}.nii.gz"))
        if with_label:
            nib.save(nib.Nifti1Image(label, affine), str(case_dir / f"{case}_seg.nii.gz"))
    return root


def make_nifti_folder(
    root: str | os.PathLike, num_files: int = 3, shape: Sequence[int] = (24, 28, 20), channels: int = 1, seed: int = 0
) -> Path:
    """A flat folder of images (``image_N.nii.gz``; 4D with channels last when ``channels > 1``) for inference."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(num_files):
        label = _label_volume(rng, shape, (1, 2))
        image = np.stack([_image_from_label(rng, label, c + 1.0) for c in range(channels)], -1)
        image = image[..., 0] if channels == 1 else image
        affine = np.diag([1.0 + 0.1 * i, 1.0, 1.5, 1.0])
        nib.save(nib.Nifti1Image(image, affine), str(root / f"image_{i}.nii.gz"))
    return root
