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

__all__ = [
    "make_msd_task",
    "make_brats_cases",
    "make_nifti_folder",
    "make_btcv_cases",
    "make_ct_scan",
    "make_synapse_transunet",
    "make_acdc_h5",
    "make_mr_nifti_folder",
    "SAMPLE_LAYOUTS",
    "make_sample_data",
]


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


# ----------------------------------------------------------------------------------- Synapse / BTCV, ACDC
# BTCV ids of the synthetic CT "organs" (liver, spleen, kidneys, stomach, aorta, IVC, gallbladder, pancreas), HU;
# the IVC (id 9) is not a TransUNet class and becomes background, as in the real data
_CT_ORGANS = (
    # btcv id, HU, centre (fraction of x, y), radii (fraction of x, y)
    (6, 60.0, (0.32, 0.45), (0.20, 0.22)),
    (1, 45.0, (0.74, 0.62), (0.10, 0.12)),
    (2, 150.0, (0.30, 0.78), (0.07, 0.09)),
    (3, 140.0, (0.70, 0.80), (0.07, 0.09)),
    (7, 20.0, (0.66, 0.34), (0.12, 0.10)),
    (8, 200.0, (0.52, 0.62), (0.04, 0.04)),
    (9, 110.0, (0.44, 0.64), (0.04, 0.04)),
    (4, 10.0, (0.20, 0.62), (0.05, 0.05)),
    (11, 80.0, (0.56, 0.48), (0.09, 0.04)),
)


def _ct_case(rng: np.random.Generator, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(HU image int16, BTCV label uint8) of an axial CT volume stored as (x, y, z): a body of fat and
    muscle in air with elliptic-cylinder organs whose radii shrink towards the first and last slice."""
    x_size, y_size, z_size = (int(s) for s in shape)
    xs, ys = np.meshgrid(np.arange(x_size), np.arange(y_size), indexing="ij")
    body = ((xs - x_size / 2) / (0.48 * x_size)) ** 2 + ((ys - y_size / 2) / (0.46 * y_size)) ** 2 <= 1.0
    image = np.full(shape, -1000.0, np.float32)
    label = np.zeros(shape, np.uint8)
    shift = rng.uniform(-0.04, 0.04, 2)
    for z in range(z_size):
        taper = 1.0 - 0.3 * abs(z - (z_size - 1) / 2) / max(z_size / 2, 1)
        plane_image = np.where(body, -90.0, -1000.0)
        plane_label = np.zeros((x_size, y_size), np.uint8)
        for btcv_id, hu, (cx, cy), (rx, ry) in _CT_ORGANS:
            inside = ((xs - (cx + shift[0]) * x_size) / max(rx * taper * x_size, 1.0)) ** 2 + (
                (ys - (cy + shift[1]) * y_size) / max(ry * taper * y_size, 1.0)
            ) ** 2 <= 1.0
            inside &= body
            plane_image[inside] = hu
            plane_label[inside] = btcv_id
        image[..., z] = plane_image
        label[..., z] = plane_label
    image += rng.normal(0.0, 15.0, shape).astype(np.float32)
    return np.clip(np.rint(image), -1024, 3071).astype(np.int16), label


_CT_AFFINE = np.diag([-0.8, -0.8, 2.5, 1.0])  # BTCV-like: 0.6-0.9 mm in plane, 2.5-5 mm slices


def make_btcv_cases(
    root: str | os.PathLike,
    cases: Sequence[str] = ("case0005", "case0006", "case0008", "case0022"),
    shape: Sequence[int] = (40, 48, 4),
    seed: int = 0,
    with_label: bool = True,
) -> Path:
    """The raw BTCV layout: ``img/imgNNNN.nii.gz`` (int16 HU) and ``label/labelNNNN.nii.gz`` (BTCV ids 0-13).

    ``cases`` are TransUNet names (``caseNNNN`` → ``imgNNNN``); ``shape`` is (x, y, z) as stored.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "img").mkdir(parents=True, exist_ok=True)
    if with_label:
        (root / "label").mkdir(parents=True, exist_ok=True)
    for case in cases:
        number = int(str(case)[4:])
        image, label = _ct_case(rng, shape)
        nib.save(nib.Nifti1Image(image, _CT_AFFINE), str(root / "img" / f"img{number:04d}.nii.gz"))
        if with_label:
            nib.save(nib.Nifti1Image(label, _CT_AFFINE), str(root / "label" / f"label{number:04d}.nii.gz"))
    return root


def make_ct_scan(
    path: str | os.PathLike,
    shape: Sequence[int] = (512, 512, 200),
    spacing: Sequence[float] = (0.8, 0.8, 2.5),
    seed: int = 0,
) -> Path:
    """One whole abdominal CT as int16 HU NIfTI (x, y, z as stored, LPS-flipped like a scanner export), no label:
    the input for whole-volume inference measurements (e.g. 512 × 512 × 200 at 0.8 × 0.8 × 2.5 mm)."""
    image, _ = _ct_case(np.random.default_rng(seed), shape)
    affine = np.diag([-float(spacing[0]), -float(spacing[1]), float(spacing[2]), 1.0])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image, affine), str(path))
    return path


def make_synapse_transunet(
    root: str | os.PathLike,
    train_cases: Sequence[str] = ("case0005", "case0006"),
    test_cases: Sequence[str] = ("case0008", "case0022"),
    shape: Sequence[int] = (40, 48, 4),
    seed: int = 0,
) -> Path:
    """TransUNet's preprocessed Synapse layout, written with :func:`~medattn_networks.data.write_transunet_case`
    from synthetic BTCV volumes (so it is what ``convert_btcv_to_transunet`` makes of raw files)::

        train_npz/<case>_sliceNNN.npz   test_vol_h5/<case>.npy.h5   lists/lists_Synapse/{train.txt,test_vol.txt}
    """
    from medattn_networks.data.synapse import write_transunet_case

    root = Path(root)
    raw = root / "_raw_btcv"
    make_btcv_cases(raw, (*train_cases, *test_cases), shape, seed)
    slices = []
    for split, cases in (("train", train_cases), ("test", test_cases)):
        for case in cases:
            number = int(str(case)[4:])
            written = write_transunet_case(
                raw / "img" / f"img{number:04d}.nii.gz", raw / "label" / f"label{number:04d}.nii.gz", root, case, split
            )
            if split == "train":
                slices += [p.name[: -len(".npz")] for p in written]
    lists = root / "lists" / "lists_Synapse"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "train.txt").write_text("".join(f"{s}\n" for s in slices))
    (lists / "test_vol.txt").write_text("".join(f"{c}\n" for c in test_cases))
    for path in sorted(raw.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    raw.rmdir()
    return root


def _heart_slice(rng: np.random.Generator, size: Sequence[int], scale: float) -> tuple[np.ndarray, np.ndarray]:
    """One short-axis cine-MR-like slice: LV blood pool (3) in a myocardium ring (2), RV (1) beside it."""
    h, w = (int(s) for s in size)
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    cy, cx = h * (0.5 + rng.uniform(-0.05, 0.05)), w * (0.55 + rng.uniform(-0.05, 0.05))
    r = lambda y0, x0: np.hypot(ys - y0, xs - x0)  # noqa: E731
    lv_r, myo_r = 0.13 * min(h, w) * scale, 0.21 * min(h, w) * scale
    label = np.zeros((h, w), np.uint8)
    rv = r(cy, cx - 1.6 * myo_r) <= 0.9 * myo_r
    label[rv] = 1
    label[r(cy, cx) <= myo_r] = 2
    label[r(cy, cx) <= lv_r] = 3
    intensity = np.choose(label, [0.15, 0.8, 0.35, 0.85]) + rng.normal(0.0, 0.05, (h, w))
    return intensity.astype(np.float32), label


def make_acdc_h5(
    root: str | os.PathLike,
    train_cases: Sequence[str] = ("patient001_frame01", "patient001_frame02"),
    val_cases: Sequence[str] = ("patient002_frame01", "patient002_frame02"),
    shape: Sequence[int] = (4, 48, 40),
    seed: int = 0,
    slices_subfolder: bool = False,
) -> Path:
    """ACDC in the SSL4MIS h5 layout as in ``../shared/data/acdc``::

        data/<case>.h5                  image (slices, H, W) float32 min-max scaled to [0, 1], label uint8 0-3
        data/<case>_slice_<k>.h5        image (H, W), label (H, W); k counts from 1 as in the shared copy
        train_slices.list               the training slices (shuffled, as the released list)
        val.list                        the validation volumes

    Every case gets its volume file; slices are written for ``train_cases``. ``slices_subfolder`` puts them in
    ``data/slices/`` (SSL4MIS's own release). ``shape`` is (slices, H, W).
    """
    import h5py

    rng = np.random.default_rng(seed)
    root = Path(root)
    data = root / "data"
    slice_dir = data / "slices" if slices_subfolder else data
    slice_dir.mkdir(parents=True, exist_ok=True)
    slices: list[str] = []
    for case in (*train_cases, *val_cases):
        planes = [_heart_slice(rng, shape[1:], 1.0 - 0.4 * abs(k - shape[0] / 2) / shape[0]) for k in range(shape[0])]
        image = np.stack([p[0] for p in planes])
        label = np.stack([p[1] for p in planes])
        image = ((image - image.min()) / max(float(image.max() - image.min()), 1e-6)).astype(np.float32)
        with h5py.File(data / f"{case}.h5", "w") as f:
            f.create_dataset("image", data=image, compression="gzip")
            f.create_dataset("label", data=label, compression="gzip")
        if case in train_cases:
            for k in range(shape[0]):
                name = f"{case}_slice_{k + 1}"
                with h5py.File(slice_dir / f"{name}.h5", "w") as f:
                    f.create_dataset("image", data=image[k])
                    f.create_dataset("label", data=label[k])
                slices.append(name)
    order = rng.permutation(len(slices))
    (root / "train_slices.list").write_text("".join(f"{slices[i]}\n" for i in order))
    (root / "val.list").write_text("".join(f"{c}\n" for c in val_cases))
    return root


def make_mr_nifti_folder(
    root: str | os.PathLike, num_files: int = 2, shape: Sequence[int] = (48, 40, 4), seed: int = 0
) -> Path:
    """Cine-MR-like short-axis volumes ``image_N.nii.gz`` (x, y, z; uint16 intensities, 1.4 × 1.4 × 8 mm,
    an oblique affine as scanners write) for inference."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(num_files):
        planes = [_heart_slice(rng, shape[:2], 1.0)[0] for _ in range(shape[2])]
        image = np.clip(np.stack(planes, -1) * 600.0, 0, None).astype(np.uint16)
        angle = 0.3 + 0.1 * i
        affine = np.eye(4)
        affine[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
        affine[:3, :3] = affine[:3, :3] @ np.diag([-1.4, 1.4, 8.0])  # not RAS: the bundle reorients
        affine[:3, 3] = [-30.0, 20.0, -15.0 * i]
        nib.save(nib.Nifti1Image(image, affine), str(root / f"image_{i}.nii.gz"))
    return root


# ------------------------------------------------------------------------------------- one entry per layout
# layout -> what it writes and which reader of medattn_networks reads it
SAMPLE_LAYOUTS = {
    "nifti": "flat folder image_N.nii.gz (an inference input; engine.inference_datalist)",
    "msd": "imagesTr/ and labelsTr/ case_NNN.nii.gz (msd_datalist)",
    "brats": "HGG|LGG/<case>/<case>_{t1,t2,t1ce,flair,seg}.nii.gz (brats_datalist, brats_inference_datalist)",
    "synapse": "TransUNet train_npz/, test_vol_h5/, lists/lists_Synapse/ (synapse_datalist)",
    "btcv": "raw BTCV img/imgNNNN.nii.gz, label/labelNNNN.nii.gz (btcv_datalist)",
    "acdc": "SSL4MIS h5: data/*.h5, train_slices.list, val.list (acdc_datalist)",
    "isic": "ISIC 2018 Task 1: ISIC2018_Task1-2_{Training,Validation,Test}_Input/ISIC_*.jpg + *_segmentation.png (isic2018_datalist)",
    "images": "flat folder image_N.jpg / .png, RGB (an inference input of the 2D image bundles; engine.image_folder_datalist)",
}


def _split_count(num: int) -> tuple[int, int]:
    """(training, held-out) case counts of ``num`` cases: half each, the odd one to training."""
    return num - num // 2, num // 2


def make_sample_data(root: str | os.PathLike, layout: str = "nifti", num: int = 4, seed: int = 0) -> Path:
    """Write ``num`` small synthetic cases in one of the published layouts (:data:`SAMPLE_LAYOUTS`) under ``root``.

    * ``nifti``: ``num`` images in a flat folder (:func:`make_nifti_folder`);
    * ``msd``: ``num`` image/label pairs (:func:`make_msd_task`);
    * ``brats``: ``num`` case folders under HGG/ and LGG/ (:func:`make_brats_cases`);
    * ``synapse``: TransUNet's preprocessed layout (:func:`make_synapse_transunet`), ``num`` cases (2-30) named
      after TransUNet's split: half of them (the odd one, and any beyond 12 test cases, too) training cases
      (npz slices in ``train.txt``), the rest test volumes (``test_vol.txt``);
    * ``btcv``: the raw BTCV layout (:func:`make_btcv_cases`), ``num`` cases (1-30) named as for ``synapse``;
      read them with ``btcv_datalist(root, "all")`` or by ``cases`` (the full TransUNet splits are 18 / 12);
    * ``acdc``: the SSL4MIS h5 layout (:func:`make_acdc_h5`), ``num`` volumes (at least 2) ``patientNNN_frame01``:
      the first half training (volumes and slices in ``train_slices.list``), the rest in ``val.list``;
    * ``isic``: the ISIC 2018 Task 1 layout (:func:`make_isic2018`), ``num`` training cases (at least 1) and
      ⌈num/4⌉ each in the validation and test folders;
    * ``images``: ``num`` RGB dermoscopy-like JPEG / PNG images in a flat folder (:func:`make_image_folder`).

    Args:
        root: output folder (made if missing; files of the same names are overwritten).
        layout: one of :data:`SAMPLE_LAYOUTS`.
        num: number of images / cases / volumes.
        seed: random seed (same seed, same files).

    Returns:
        ``root`` as a Path.
    """
    if layout not in SAMPLE_LAYOUTS:
        raise ValueError(f"unknown layout '{layout}': choose one of {', '.join(SAMPLE_LAYOUTS)}")
    num = int(num)
    minimum = 2 if layout in ("synapse", "acdc") else 1
    maximum = 30 if layout in ("synapse", "btcv") else None  # the 30 labelled BTCV cases of TransUNet's split
    if num < minimum or (maximum is not None and num > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ValueError(f"num must be {bounds} for layout '{layout}', got {num}")
    if layout == "nifti":
        return make_nifti_folder(root, num, seed=seed)
    if layout == "msd":
        return make_msd_task(root, num, seed=seed)
    if layout == "brats":
        return make_brats_cases(root, num, seed=seed)
    if layout in ("isic", "images"):
        from medattn_networks.data.isic import make_image_folder, make_isic2018

        if layout == "images":
            make_image_folder(root, num, seed=seed)
            return Path(root)
        held_out = -(-num // 4)
        return make_isic2018(root, {"train": num, "val": held_out, "test": held_out}, seed=seed)
    num_train, num_held_out = _split_count(num)
    if layout == "acdc":
        names = [f"patient{i + 1:03d}_frame01" for i in range(num)]
        return make_acdc_h5(root, names[:num_train], names[num_train:], seed=seed)
    from medattn_networks.data.synapse import SYNAPSE_TEST_CASES, SYNAPSE_TRAIN_CASES

    if num_held_out > len(SYNAPSE_TEST_CASES):  # over 24 cases: all 12 test cases, the rest training (18 at most)
        num_held_out = len(SYNAPSE_TEST_CASES)
        num_train = num - num_held_out
    train, test = SYNAPSE_TRAIN_CASES[:num_train], SYNAPSE_TEST_CASES[:num_held_out]
    if layout == "synapse":
        return make_synapse_transunet(root, train, test, seed=seed)
    return make_btcv_cases(root, (*train, *test), seed=seed)
