"""File-system checks shared by the dataset readers, with errors that name the path and the problem.

A NIfTI file that cannot be read whole (not NIfTI, truncated, wrong channel count) is reported by name and left
out of an inference run, so one bad scan never stops the others from being segmented.
"""

from __future__ import annotations

import csv
import gzip
import logging
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["NIFTI_SUFFIXES", "SKIPPED_REPORT", "is_nifti", "require_dir", "nifti_stem", "check_nifti", "settle_inputs", "write_skipped_report"]

logger = logging.getLogger("medattn.inputs")

NIFTI_SUFFIXES = (".nii.gz", ".nii")
SKIPPED_REPORT = "skipped_inputs.csv"


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


def _decompressed_size(path: Path) -> int:
    """Bytes in a gzip stream, reading it to the end (raises on a truncated or corrupt stream)."""
    total = 0
    with gzip.open(path, "rb") as stream:
        while chunk := stream.read(1 << 22):
            total += len(chunk)
    return total


def check_nifti(path: str | os.PathLike, num_channels: int | None = None, spatial_dims: int = 3) -> str | None:
    """The problem with one NIfTI file, or None when it can be read whole and has the expected channels.

    Args:
        path: .nii or .nii.gz file.
        num_channels: expected channel count (a 4th axis of that length; a plain 3D volume counts as 1 channel).
        spatial_dims: expected spatial dimensions.
    """
    path = Path(path)
    try:
        image = nib.load(str(path))
    except Exception as e:  # nibabel raises several types for foreign or damaged headers
        return f"not a readable NIfTI file ({type(e).__name__}: {e})"
    header = image.header
    shape = tuple(int(s) for s in image.shape)
    if len(shape) < spatial_dims or any(s < 1 for s in shape):
        return f"expected a {spatial_dims}D image, found shape {shape}"
    extra = shape[spatial_dims:]
    channels = int(np.prod(extra)) if extra else 1
    if len(extra) > 1 and any(s != 1 for s in extra[1:]):
        return f"expected a {spatial_dims}D image with channels on axis {spatial_dims + 1}, found shape {shape}"
    if num_channels is not None and channels != num_channels:
        return f"expected {num_channels} channel(s), found {channels} (shape {shape})"
    offset = int(getattr(image.dataobj, "offset", header.get_data_offset()))  # where the voxels really start
    expected = offset + int(np.prod(shape)) * header.get_data_dtype().itemsize
    try:
        available = _decompressed_size(path) if path.name.lower().endswith(".gz") else path.stat().st_size
    except (OSError, EOFError, zlib.error) as e:
        return f"damaged or truncated gzip data ({type(e).__name__}: {e})"
    if available < expected:
        return f"truncated: header promises {expected} bytes of image data, file holds {available}"
    return None


def settle_inputs(
    folder: str | os.PathLike,
    items: list[dict],
    skipped: list[tuple[str, str]],
    report_dir: str | os.PathLike | None,
    nothing_found: str,
) -> list[dict]:
    """Log every skipped input, write (or clear) the skipped report, and fail when nothing is left.

    Args:
        folder: the input folder (for messages).
        items: inputs that can be segmented.
        skipped: ``(path, problem)`` of each input that cannot.
        report_dir: where ``skipped_inputs.csv`` goes (None: no report).
        nothing_found: FileNotFoundError message when there were no candidate inputs at all.
    """
    for path, problem in skipped:
        logger.error("%s: %s; skipped", path, problem)
    if report_dir is not None:
        write_skipped_report(report_dir, skipped)
    if not items:
        if not skipped:
            raise FileNotFoundError(nothing_found)
        details = "; ".join(f"{p}: {why}" for p, why in skipped)
        raise ValueError(f"none of the {len(skipped)} input(s) in '{folder}' can be segmented: {details}")
    logger.info("%d input(s) to segment in %s%s", len(items), folder, f", {len(skipped)} skipped" if skipped else "")
    return items


def write_skipped_report(report_dir: str | os.PathLike, skipped: list[tuple[str, str]]) -> None:
    """Write (or remove a stale) ``skipped_inputs.csv`` in ``report_dir``."""
    report = Path(report_dir) / SKIPPED_REPORT
    if not skipped:
        report.unlink(missing_ok=True)
        return
    report.parent.mkdir(parents=True, exist_ok=True)
    with open(report, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "problem"])
        writer.writerows(skipped)
