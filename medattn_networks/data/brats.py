"""BraTS 2018 layout: one folder per case, ``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz``.

The training release nests the case folders under ``HGG/`` and ``LGG/``; both a flat folder of cases and the
nested layout are found. Labels: 1 necrotic/non-enhancing core, 2 oedema, 4 enhancing tumour. The paper's
targets are overlapping regions: whole tumour (1|2|4), tumour core (1|4), enhancing tumour (4), after a
background channel.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from medattn_networks.data.files import check_nifti, is_nifti, nifti_stem, require_dir, settle_inputs
from medattn_networks.data.msd import split_cases

__all__ = [
    "BRATS_MODALITIES",
    "BRATS_REGIONS",
    "find_brats_cases",
    "brats_datalist",
    "brats_inference_datalist",
    "brats_name_formatter",
    "BratsRegionsd",
    "BratsRegionsToLabelsd",
]

# the paper code's channel order
BRATS_MODALITIES = ("t1", "t2", "t1ce", "flair")
BRATS_REGIONS = ("background", "whole_tumor", "tumor_core", "enhancing_tumor")


def _case_file(case_dir: Path, suffix: str) -> Path | None:
    for ext in (".nii.gz", ".nii"):
        path = case_dir / f"{case_dir.name}_{suffix}{ext}"
        if path.is_file():
            return path
    return None


def find_brats_cases(root: str | os.PathLike) -> list[Path]:
    """Case folders under ``root`` (directly or one level down, e.g. HGG/ and LGG/), sorted by case name."""
    root = require_dir(root, "BraTS dataset folder")
    candidates = [p for p in root.iterdir() if p.is_dir()]
    candidates += [q for p in candidates for q in p.iterdir() if q.is_dir()]
    cases = [c for c in candidates if _case_file(c, "flair") is not None]
    return sorted(cases, key=lambda c: c.name)


def _case_item(case_dir: Path, with_label: bool, modalities: Sequence[str]) -> dict:
    missing = [m for m in (*modalities, *(("seg",) if with_label else ())) if _case_file(case_dir, m) is None]
    if missing:
        names = ", ".join(f"{case_dir.name}_{m}.nii.gz" for m in missing)
        raise FileNotFoundError(f"BraTS case folder '{case_dir}' lacks {names}")
    item = {"image": [str(_case_file(case_dir, m)) for m in modalities], "case": case_dir.name}
    if with_label:
        item["label"] = str(_case_file(case_dir, "seg"))
    return item


def brats_datalist(
    dataset_dir: str | os.PathLike, split: str = "training", num_val: int = 57, modalities: Sequence[str] = BRATS_MODALITIES
) -> list[dict]:
    """Training items ``{"image": [4 modality files], "label": seg file, "case": name}``.

    Args:
        dataset_dir: folder holding the case folders (or HGG/ and LGG/ with them).
        split: ``"training"``, ``"validation"`` (the last ``num_val`` cases by name) or ``"all"``.
        num_val: size of the validation split (57 ≈ 20 % of the 285 BraTS 2018 training cases).
        modalities: channel order.
    """
    cases = find_brats_cases(dataset_dir)
    if not cases:
        raise FileNotFoundError(
            f"no BraTS case folders (<case>/<case>_flair.nii.gz) found in '{dataset_dir}' or its sub-folders"
        )
    by_name = {c.name: c for c in cases}
    if split == "all":
        names = sorted(by_name)
    elif split in ("training", "validation"):
        train, val = split_cases(list(by_name), num_val)
        names = train if split == "training" else val
    else:
        raise ValueError(f"split must be 'training', 'validation' or 'all', got '{split}'")
    return [_case_item(by_name[n], True, modalities) for n in names]


def brats_inference_datalist(
    dataset_dir: str | os.PathLike,
    report_dir: str | os.PathLike | None = None,
    modalities: Sequence[str] = BRATS_MODALITIES,
) -> list[dict]:
    """Inference items from BraTS case folders and/or 4-channel NIfTI files directly in ``dataset_dir``.

    Case folders missing a modality and unreadable or wrongly shaped files are logged and skipped (see
    :func:`medattn_networks.engine.inference_datalist`).
    """
    folder = require_dir(dataset_dir, "input folder")
    items, skipped = [], []
    for case_dir in find_brats_cases(folder):
        try:
            item = _case_item(case_dir, False, modalities)
        except FileNotFoundError as e:
            skipped.append((str(case_dir), str(e)))
            continue
        problems = [f"{Path(f).name}: {p}" for f in item["image"] if (p := check_nifti(f, 1)) is not None]
        if problems:
            skipped.append((str(case_dir), "; ".join(problems)))
        else:
            items.append(item)
    for path in sorted(p for p in folder.iterdir() if is_nifti(p)):
        problem = check_nifti(path, len(modalities))
        if problem is None:
            items.append({"image": str(path), "case": path.name})
        else:
            skipped.append((str(path), problem))
    nothing_found = f"no BraTS case folders and no {len(modalities)}-channel .nii/.nii.gz files in input folder '{folder}'"
    return settle_inputs(folder, items, skipped, report_dir, nothing_found)


def brats_name_formatter(metadict: dict, saver: object) -> dict:
    """SaveImage name formatter: ``<case>`` for a case folder (its first modality file minus the suffix)."""
    source = metadict.get("filename_or_obj", "") if metadict else ""
    stem = nifti_stem(source)
    for modality in BRATS_MODALITIES:
        if stem.endswith(f"_{modality}") and Path(source).parent.name == stem[: -len(modality) - 1]:
            stem = stem[: -len(modality) - 1]
            break
    return {"subject": stem, "idx": metadict.get("patch_index") if metadict else None}


class BratsRegionsd(MapTransform):
    """BraTS labels (0, 1, 2, 4) → 4 channels [background, WT, TC, ET] (overlapping regions, as the paper)."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            label = label[0] if label.shape[0] == 1 else label
            wt = (label == 1) | (label == 2) | (label == 4)
            tc = (label == 1) | (label == 4)
            et = label == 4
            stacked = torch.stack([~wt, wt, tc, et]) if isinstance(label, torch.Tensor) else np.stack([~wt, wt, tc, et])
            d[key] = stacked.float() if isinstance(stacked, torch.Tensor) else stacked.astype(np.float32)
        return d


class BratsRegionsToLabelsd(MapTransform):
    """4 region channels [background, WT, TC, ET] (binary) → one BraTS label map (0, 2 oedema, 1 core, 4 ET).

    Nesting is enforced from the outside in: core only inside whole tumour, enhancing only inside core.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            regions = d[key] > 0.5
            wt, tc, et = regions[1], regions[2] & regions[1], regions[3] & regions[2] & regions[1]
            label = torch.zeros_like(regions[:1], dtype=torch.uint8)
            label[0][wt] = 2
            label[0][tc] = 1
            label[0][et] = 4
            if hasattr(d[key], "meta"):
                from monai.data import MetaTensor

                label = MetaTensor(label, meta=d[key].meta, applied_operations=d[key].applied_operations)
            d[key] = label
        return d
