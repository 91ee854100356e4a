"""File-system checks shared by the dataset readers, with errors that name the path and the problem.

A NIfTI file that cannot be read whole (not NIfTI, truncated, wrong channel count, RGB/vector pixels, more voxels
than :data:`MAX_VOXELS`) is reported by name and left out of an inference run, so one bad scan never stops the
others from being segmented. The checks read the header only; the voxel data of a ``.nii.gz`` file is inflated in
chunks just far enough to know that it is all there, and never when the header already fails a check (so a
decompression bomb -- a tiny gzip whose header promises 1000**3 voxels -- is rejected without inflating it).
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

from medattn_networks.errors import MissingPathError, NoUsableInputError

__all__ = [
    "MAX_VOXELS",
    "NIFTI_SUFFIXES",
    "RGB_PROBLEM",
    "SKIPPED_REPORT",
    "is_nifti",
    "require_dir",
    "nifti_stem",
    "check_nifti",
    "gzip_payload_size",
    "voxel_limit_problem",
    "settle_inputs",
    "append_skipped_report", "write_skipped_report",
]

logger = logging.getLogger("medattn.inputs")

NIFTI_SUFFIXES = (".nii.gz", ".nii")
SKIPPED_REPORT = "skipped_inputs.csv"

MAX_VOXELS = 512 * 512 * 2048
"""Largest input accepted by the pre-checks, in voxels (all channels together): 2**29 voxels, 2 GiB as float32.

Larger inputs (or headers that promise more, like a decompression bomb) are reported and skipped; pass
``max_voxels`` to the checks or to :func:`medattn_networks.engine.inference_datalist` to change it."""

RGB_PROBLEM = "RGB/vector pixels are not supported"
_GZIP_CHUNK = 1 << 22  # bytes inflated per read while checking a .nii.gz payload
_VECTOR_INTENTS = {1007, 2003, 2004}  # NIFTI_INTENT_VECTOR, NIFTI_INTENT_RGB_VECTOR, NIFTI_INTENT_RGBA_VECTOR


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
        raise MissingPathError(f"{what} not found: '{folder}' is not a directory")
    return folder


def voxel_limit_problem(voxels: int, max_voxels: int | None) -> str | None:
    """``"N voxels exceed the limit M"`` when ``voxels > max_voxels`` (None: no limit)."""
    if max_voxels is not None and voxels > max_voxels:
        return f"{voxels} voxels exceed the limit {max_voxels}"
    return None


def gzip_payload_size(path: str | os.PathLike, needed: int, offset: int = 0, chunk: int = _GZIP_CHUNK) -> int:
    """Bytes a gzip stream holds, counted up to ``needed`` only: inflation stops as soon as ``needed`` bytes are
    there (at most ``chunk`` bytes in memory, never more than ``needed`` inflated). Raises ``EOFError`` /
    ``OSError`` / ``zlib.error`` on a stream that is cut or corrupt before that point.

    Args:
        path: file holding the stream.
        needed: bytes the caller expects.
        offset: where the gzip stream starts in the file.
        chunk: bytes inflated per read.
    """
    total = 0
    with open(path, "rb") as raw:
        raw.seek(offset)
        with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
            while total < needed:
                block = stream.read(min(chunk, needed - total))
                if not block:
                    break
                total += len(block)
    return total


def _is_non_scalar(header) -> bool:
    dtype = header.get_data_dtype()
    return dtype.fields is not None or dtype.kind == "c" or int(header.get("intent_code", 0)) in _VECTOR_INTENTS


def check_nifti(
    path: str | os.PathLike, num_channels: int | None = None, spatial_dims: int = 3, max_voxels: int | None = MAX_VOXELS
) -> str | None:
    """The problem with one NIfTI file (one line), or None when it can be read whole and has the expected channels.

    Checks, in order, from the header alone: readable NIfTI header; scalar pixels (RGB/RGBA/complex dtypes, vector
    intents or a 5th axis longer than 1 give :data:`RGB_PROBLEM`); ``spatial_dims`` axes and ``num_channels``;
    at most ``max_voxels`` voxels. Only then is the data size checked: the file size of a ``.nii``, the inflated
    size of a ``.nii.gz`` (inflated chunk by chunk and only up to the byte count the header promises).

    Args:
        path: .nii or .nii.gz file.
        num_channels: expected channel count (a 4th axis of that length; a plain 3D volume counts as 1 channel).
        spatial_dims: expected spatial dimensions.
        max_voxels: largest accepted voxel count, all channels together (None: no limit).
    """
    path = Path(path)
    try:
        image = nib.load(str(path))
    except Exception as e:  # nibabel raises several types for foreign or damaged headers
        return f"not a readable NIfTI file ({type(e).__name__}: {e})"
    header = image.header
    shape = tuple(int(s) for s in image.shape)
    if _is_non_scalar(header) or (len(shape) > 4 and shape[4] > 1):  # NIfTI keeps vector components on axis 5
        return RGB_PROBLEM
    if len(shape) < spatial_dims or any(s < 1 for s in shape):
        return f"expected a {spatial_dims}D image, found shape {shape}"
    extra = shape[spatial_dims:]
    channels = int(np.prod(extra)) if extra else 1
    if len(extra) > 1 and any(s != 1 for s in extra[1:]):
        return f"expected a {spatial_dims}D image with channels on axis {spatial_dims + 1}, found shape {shape}"
    if num_channels is not None and channels != num_channels:
        return f"expected {num_channels} channel(s), found {channels} (shape {shape})"
    voxels = int(np.prod(shape, dtype=object))
    if problem := voxel_limit_problem(voxels, max_voxels):
        return problem
    offset = int(getattr(image.dataobj, "offset", header.get_data_offset()))  # where the voxels really start
    expected = offset + voxels * header.get_data_dtype().itemsize
    try:
        available = gzip_payload_size(path, expected) if path.name.lower().endswith(".gz") else path.stat().st_size
    except (OSError, EOFError, zlib.error) as e:
        return f"damaged or truncated gzip data ({type(e).__name__}: {e})"
    return truncation_problem(expected, available)


def truncation_problem(expected: int, available: int) -> str | None:
    """The problem of image data holding ``available`` of the ``expected`` bytes, or None when it is all there."""
    if available < expected:
        return f"truncated: header promises {expected} bytes of image data, file holds {max(available, 0)}"
    return None


def settle_inputs(
    folder: str | os.PathLike,
    items: list[dict],
    skipped: list[tuple[str, str]],
    report_dir: str | os.PathLike | None,
    nothing_found: str,
    already_done: int = 0,
) -> list[dict]:
    """Log every skipped input, write (or clear) the skipped report, and fail when nothing is left.

    Args:
        folder: the input folder (for messages).
        items: inputs that can be segmented.
        skipped: ``(path, problem)`` of each input that cannot.
        report_dir: where ``skipped_inputs.csv`` goes (None: no report).
        nothing_found: NoUsableInputError message when there were no candidate inputs at all.
        already_done: inputs left out because their label map exists (``skip_existing``); when nothing else is
            left the result is an empty list, not an error.
    """
    for path, problem in skipped:
        logger.error("%s: %s; skipped", path, problem)
    if report_dir is not None:
        write_skipped_report(report_dir, skipped)
    if already_done:
        logger.info("%d input(s) in %s already segmented, left out", already_done, folder)
        if not items:
            return []
    if not items:
        if not skipped:
            raise NoUsableInputError(nothing_found)
        details = "; ".join(f"{p}: {why}" for p, why in skipped)
        raise NoUsableInputError(f"none of the {len(skipped)} input(s) in '{folder}' can be segmented: {details}")
    logger.info("%d input(s) to segment in %s%s", len(items), folder, f", {len(skipped)} skipped" if skipped else "")
    return items


def append_skipped_report(report_dir: str | os.PathLike, skipped: list[tuple[str, str]]) -> None:
    """Add ``(file, problem)`` rows to ``report_dir/skipped_inputs.csv`` (with its header when it is new)."""
    if not skipped:
        return
    report = Path(report_dir) / SKIPPED_REPORT
    new = not report.is_file()
    report.parent.mkdir(parents=True, exist_ok=True)
    with open(report, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["file", "problem"])
        writer.writerows(skipped)


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
