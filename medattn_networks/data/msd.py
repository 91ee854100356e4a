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


def _folder_pairs(root: Path, images: str, labels: str) -> dict[str, tuple[Path, Path]]:
    images_dir = require_dir(root / images, f"{images} folder")
    labels_dir = require_dir(root / labels, f"{labels} folder")
    pairs = {p.name: (p, labels_dir / p.name) for p in images_dir.iterdir() if is_nifti(p)}
    if not pairs:
        raise FileNotFoundError(f"no NIfTI images (.nii/.nii.gz) found in {images_dir}")
    return pairs


def _manifest_pairs(root: Path, manifest: Path, key: str) -> dict[str, tuple[Path, Path]]:
    entries = json.loads(manifest.read_text()).get(key)
    if not entries:
        raise ValueError(f"{manifest} has no '{key}' list")
    return {Path(e["image"]).name: (root / e["image"], root / e["label"]) for e in entries}


def _require_labels(pairs: dict[str, tuple[Path, Path]], where: Path) -> None:
    missing = [str(label) for _, label in pairs.values() if not label.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} image(s) listed under {where} have no label file, e.g. {missing[0]}")


def msd_datalist(
    dataset_dir: str | os.PathLike, split: str = "training", num_val: int = 40, val_source: str = "split"
) -> list[dict]:
    """Image/label pairs of an MSD / FLARE21 task folder.

    The training cases are the ``training`` list of ``dataset.json`` when the folder holds one, otherwise every
    NIfTI in ``imagesTr`` with a same-named file in ``labelsTr``. Hidden files and macOS ``._`` resource forks
    are ignored. Where the validation cases come from is ``val_source``:

    * ``"split"``: the last ``num_val`` training cases by name (the rest are the training split);
    * ``"folder"``: ``imagesVal/`` with ``labelsVal/`` (the released MAM FLARE layout); all training cases train;
    * ``"json"``: the ``validation`` list of ``dataset.json`` (MONAI / SwinUNETR style); all training cases train.

    Args:
        dataset_dir: the task folder (containing ``imagesTr`` and ``labelsTr``).
        split: ``"training"``, ``"validation"`` or ``"all"`` (every training case, for ``"split"`` both splits).
        num_val: size of the validation split (``val_source="split"`` only).
        val_source: ``"split"``, ``"folder"`` or ``"json"``.
    """
    if split not in ("training", "validation", "all"):
        raise ValueError(f"split must be 'training', 'validation' or 'all', got '{split}'")
    if val_source not in ("split", "folder", "json"):
        raise ValueError(f"val_source must be 'split', 'folder' or 'json', got '{val_source}'")
    root = require_dir(dataset_dir, "MSD dataset folder")
    manifest = root / "dataset.json"
    if split == "validation" and val_source == "folder":
        pairs = _folder_pairs(root, "imagesVal", "labelsVal")
        _require_labels(pairs, root / "imagesVal")
        return [{"image": str(pairs[n][0]), "label": str(pairs[n][1])} for n in sorted(pairs)]
    if split == "validation" and val_source == "json":
        if not manifest.is_file():
            raise FileNotFoundError(f"val_source 'json' needs {manifest}")
        pairs = _manifest_pairs(root, manifest, "validation")
        _require_labels(pairs, manifest)
        return [{"image": str(pairs[n][0]), "label": str(pairs[n][1])} for n in sorted(pairs)]
    require_dir(root / "imagesTr", "MSD imagesTr folder")
    require_dir(root / "labelsTr", "MSD labelsTr folder")
    if manifest.is_file():
        pairs = _manifest_pairs(root, manifest, "training")
        _require_labels(pairs, manifest)
    else:
        pairs = _folder_pairs(root, "imagesTr", "labelsTr")
        _require_labels(pairs, root / "imagesTr")
    names = sorted(pairs)
    if split == "training" and val_source == "split":
        names = split_cases(names, num_val)[0]
    elif split == "validation":
        names = split_cases(names, num_val)[1]
    return [{"image": str(pairs[n][0]), "label": str(pairs[n][1])} for n in names]
