"""BraTS 2018 layout: one folder per case, ``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz``.

The training release nests the case folders under ``HGG/`` and ``LGG/``; both a flat folder of cases and the
nested layout are found. Labels: 1 necrotic/non-enhancing core, 2 oedema, 4 enhancing tumour. The paper's
targets are overlapping regions: whole tumour (1|2|4), tumour core (1|4), enhancing tumour (4), after a
background channel.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from medattn_networks.data.files import check_nifti, is_nifti, require_dir, settle_inputs
from medattn_networks.data.msd import split_cases

logger = logging.getLogger("medattn.inputs")

__all__ = [
    "BRATS_MODALITIES",
    "BRATS_REGIONS",
    "find_brats_cases",
    "brats_datalist",
    "brats_inference_datalist",
    "BratsRegionsd",
    "BratsRegionsToLabelsd",
]

# the paper code's channel order
BRATS_MODALITIES = ("t1", "t2", "t1ce", "flair")
BRATS_REGIONS = ("background", "whole_tumor", "tumor_core", "enhancing_tumor")
# file suffixes that mark a case folder: ``<case>/<case>_<suffix>.nii[.gz]``
_CASE_SUFFIXES = (*BRATS_MODALITIES, "seg")


def _case_file(case_dir: Path, suffix: str) -> Path | None:
    for ext in (".nii.gz", ".nii"):
        path = case_dir / f"{case_dir.name}_{suffix}{ext}"
        if path.is_file():
            return path
    return None


def _is_case_dir(folder: Path) -> bool:
    """A folder holding at least one ``<folder>_<t1|t2|t1ce|flair|seg>.nii[.gz]`` file."""
    return any(_case_file(folder, suffix) is not None for suffix in _CASE_SUFFIXES)


def find_brats_cases(root: str | os.PathLike) -> list[Path]:
    """Case folders under ``root`` (directly or one level down, e.g. HGG/ and LGG/), sorted by case name.

    A case folder is one holding any ``<folder>_<t1|t2|t1ce|flair|seg>.nii[.gz]`` file, so a case that lacks
    some modality (the FLAIR included) is still found, and the readers name the missing files.
    """
    root = require_dir(root, "BraTS dataset folder")
    candidates = [p for p in root.iterdir() if p.is_dir()]
    candidates += [q for p in candidates for q in p.iterdir() if q.is_dir()]
    cases = [c for c in candidates if _is_case_dir(c)]
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
            "no BraTS case folders (<case>/<case>_{t1,t2,t1ce,flair,seg}.nii.gz) found in "
            f"'{dataset_dir}' or its sub-folders"
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
    output_dir: str | os.PathLike | None = None,
    output_key: str = "output",
    output_postfix: str = "seg",
    output_ext: str = ".nii.gz",
    skip_existing: bool = False,
) -> list[dict]:
    """Inference items from BraTS case folders and/or 4-channel NIfTI files directly in ``dataset_dir``.

    Case folders missing a modality and unreadable or wrongly shaped files are logged and skipped (see
    :func:`medattn_networks.engine.inference_datalist`). With ``output_dir`` (default ``report_dir``) each item
    gets ``output_key``: ``<case>_<postfix><ext>`` for a case folder, ``<stem>_<postfix><ext>`` for a file (distinct
    names, see :func:`medattn_networks.data.output_names`); ``skip_existing`` leaves out inputs already segmented.
    """
    from medattn_networks.data.scans import output_names

    folder = require_dir(dataset_dir, "input folder")
    candidates = [(case_dir, True) for case_dir in find_brats_cases(folder)]
    candidates += [(path, False) for path in sorted(p for p in folder.iterdir() if is_nifti(p))]
    out_dir = output_dir if output_dir is not None else report_dir
    names = output_names([c for c, _ in candidates], output_postfix, output_ext) if out_dir is not None else [None] * len(candidates)
    items, skipped, done = [], [], 0
    for (source, is_case), name in zip(candidates, names):
        output = {output_key: str(Path(out_dir) / name)} if name is not None else {}
        if skip_existing and output and Path(output[output_key]).exists():
            logger.info("%s: already segmented (%s); left out", source, output[output_key])
            done += 1
            continue
        if is_case:
            try:
                item = _case_item(source, False, modalities)
            except FileNotFoundError as e:
                skipped.append((str(source), str(e)))
                continue
            problems = [f"{Path(f).name}: {p}" for f in item["image"] if (p := check_nifti(f, 1)) is not None]
            if problems:
                skipped.append((str(source), "; ".join(problems)))
            else:
                items.append({**item, **output})
        else:
            problem = check_nifti(source, len(modalities))
            if problem is None:
                items.append({"image": str(source), "case": source.name, **output})
            else:
                skipped.append((str(source), problem))
    nothing_found = f"no BraTS case folders and no {len(modalities)}-channel .nii/.nii.gz files in input folder '{folder}'"
    return settle_inputs(folder, items, skipped, report_dir, nothing_found, already_done=done)


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
