"""Medical Segmentation Decathlon layout: ``imagesTr/<case>.nii.gz`` with ``labelsTr/<case>.nii.gz``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from medattn_networks.data.files import is_nifti, require_dir

__all__ = ["msd_datalist", "split_cases"]


def split_cases(cases: list[str], num_val: int) -> tuple[list[str], list[str]]:
    """Deterministic split: the last ``num_val`` cases in sorted order are the validation set."""
    if not 0 <= num_val < len(cases):
        raise ValueError(f"num_val must be in [0, {len(cases) - 1}] for {len(cases)} cases, got {num_val}")
    ordered = sorted(cases)
    return ordered[: len(ordered) - num_val], ordered[len(ordered) - num_val :]


def msd_datalist(dataset_dir: str | os.PathLike, split: str = "training", num_val: int = 40) -> list[dict]:
    """Image/label pairs of an MSD task folder.

    If the folder holds a ``dataset.json`` its ``training`` list is used, otherwise every NIfTI in ``imagesTr``
    with a same-named file in ``labelsTr``. Hidden files and macOS ``._`` resource forks are ignored.

    Args:
        dataset_dir: the task folder (containing ``imagesTr`` and ``labelsTr``).
        split: ``"training"``, ``"validation"`` (the last ``num_val`` cases by name) or ``"all"``.
        num_val: size of the validation split.
    """
    root = require_dir(dataset_dir, "MSD dataset folder")
    images_dir = require_dir(root / "imagesTr", "MSD imagesTr folder")
    labels_dir = require_dir(root / "labelsTr", "MSD labelsTr folder")
    manifest = root / "dataset.json"
    if manifest.is_file():
        entries = json.loads(manifest.read_text())["training"]
        pairs = {Path(e["image"]).name: (root / e["image"], root / e["label"]) for e in entries}
    else:
        pairs = {p.name: (p, labels_dir / p.name) for p in images_dir.iterdir() if is_nifti(p)}
    if not pairs:
        raise FileNotFoundError(f"no NIfTI images (.nii/.nii.gz) found in {images_dir}")
    missing = [str(label) for _, label in pairs.values() if not label.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) in {images_dir} have no label in {labels_dir}, e.g. {missing[0]}")
    names = sorted(pairs)
    if split == "all":
        chosen = names
    elif split in ("training", "validation"):
        train, val = split_cases(names, num_val)
        chosen = train if split == "training" else val
    else:
        raise ValueError(f"split must be 'training', 'validation' or 'all', got '{split}'")
    return [{"image": str(pairs[n][0]), "label": str(pairs[n][1])} for n in chosen]
