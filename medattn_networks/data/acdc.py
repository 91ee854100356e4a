"""ACDC cardiac cine MRI in the SSL4MIS / TransUNet h5 layout.

::

    train_slices.list        one slice per line: patient099_frame01_slice_15
    val.list, test.list      one volume per line: patient028_frame01
    train.list               training volumes (optional)
    data/<case>_slice_<k>.h5 keys image (H, W) float32 in [0, 1], label (H, W) uint8
    data/<case>.h5           keys image (slices, H, W), label (slices, H, W)

SSL4MIS's loader reads slices from ``data/slices/``; the copy in ``../shared/data/acdc`` keeps them in
``data/`` — both are found. Images were min-max scaled per volume; the files hold no spacing.
Classes: 0 background, 1 right ventricle, 2 myocardium, 3 left ventricle.

Read the files with :class:`~medattn_networks.data.LoadNpzH5d`; :func:`acdc_train_transforms` is the 2D
training pipeline at 256².
"""

from __future__ import annotations

import os
from typing import Sequence

from monai.transforms import Compose

from medattn_networks.data.files import require_dir
from medattn_networks.data.synapse import _SLICE_NAME, slice_train_transforms

__all__ = ["ACDC_CLASSES", "ACDC_LISTS", "acdc_datalist", "acdc_train_transforms"]

ACDC_CLASSES = ("background", "right_ventricle", "myocardium", "left_ventricle")
# split -> (list file, items are 2D slices)
ACDC_LISTS = {
    "train": ("train_slices.list", True),
    "val": ("val.list", False),
    "test": ("test.list", False),
    "train_volumes": ("train.list", False),
}


def acdc_datalist(data_dir: str | os.PathLike, split: str = "train") -> list[dict]:
    """Items of the ACDC h5 layout.

    Args:
        data_dir: folder holding the ``*.list`` files and ``data/``.
        split: ``"train"`` (``train_slices.list``; 2D items ``{"image", "label", "case", "slice"}``),
            ``"val"`` (``val.list``), ``"test"`` (``test.list``) or ``"train_volumes"`` (``train.list``); the
            last three give 3D items ``{"image", "label", "case"}`` with (slices, H, W) volumes.
    """
    if split not in ACDC_LISTS:
        raise ValueError(f"split must be one of {', '.join(ACDC_LISTS)}, got '{split}'")
    root = require_dir(data_dir, "ACDC data folder")
    data = require_dir(root / "data", "ACDC data/ folder")
    list_name, slices = ACDC_LISTS[split]
    listing = root / list_name
    if not listing.is_file():
        raise FileNotFoundError(f"ACDC list file not found: '{listing}'")
    names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    if not names:
        raise ValueError(f"ACDC list file '{listing}' is empty")
    folders = (data / "slices", data) if slices else (data,)
    items, missing = [], []
    for name in names:
        name = name[: -len(".h5")] if name.endswith(".h5") else name
        path = next((f / f"{name}.h5" for f in folders if (f / f"{name}.h5").is_file()), None)
        if path is None:
            missing.append(data / f"{name}.h5")
            continue
        item = {"image": str(path), "label": str(path), "case": name}
        match = _SLICE_NAME.match(name) if slices else None
        if match:
            item["case"], item["slice"] = match["case"], int(match["index"])
        items.append(item)
    if missing:
        raise FileNotFoundError(f"{len(missing)} file(s) named in '{listing}' do not exist, e.g. '{missing[0]}'")
    return items


def acdc_train_transforms(size: int | Sequence[int] = 256, **kwargs) -> Compose:
    """:func:`~medattn_networks.data.slice_train_transforms` at ACDC's 256² (same keyword arguments)."""
    return slice_train_transforms(size=size, **kwargs)
