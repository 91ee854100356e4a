"""File-system checks shared by the dataset readers, with errors that name the path and the problem."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["NIFTI_SUFFIXES", "is_nifti", "require_dir", "nifti_stem"]

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def is_nifti(path: Path) -> bool:
    name = path.name
    return path.is_file() and not name.startswith(".") and name.lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: str | os.PathLike) -> str:
    """File name without its .nii / .nii.gz suffix."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def require_dir(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path, or a FileNotFoundError saying which folder is missing."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} not found: '{folder}' is not a directory")
    return folder
