"""Finding and checking the NIfTI files of an inference folder before any of them is run.

A file that cannot be read whole (not NIfTI, truncated, wrong channel count) is reported by name and left
out, so one bad scan never stops the others from being segmented.
"""

from __future__ import annotations

import csv
import gzip
import logging
import os
import zlib
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import torch

from medattn_networks.data.files import is_nifti, require_dir

__all__ = ["check_nifti", "inference_datalist", "settle_inputs", "require_checkpoint", "with_weights", "SKIPPED_REPORT"]

logger = logging.getLogger("medattn.inputs")

SKIPPED_REPORT = "skipped_inputs.csv"


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


def inference_datalist(
    dataset_dir: str | os.PathLike,
    num_channels: int | None = None,
    report_dir: str | os.PathLike | None = None,
    image_key: str = "image",
    checker: Callable[[Path], str | None] | None = None,
) -> list[dict]:
    """One ``{image_key: path}`` item per good NIfTI file in ``dataset_dir`` (sorted; sub-folders ignored).

    Bad files are logged as ``<file>: <problem>`` and, with ``report_dir``, listed in ``skipped_inputs.csv``
    there. A missing folder, a folder without NIfTI files, or a folder of bad files only raises.

    Args:
        dataset_dir: folder of .nii / .nii.gz images.
        num_channels: channels each image must have (None: do not check).
        report_dir: where to write the list of skipped files (usually the output folder).
        image_key: key of the image path in each item.
        checker: replaces :func:`check_nifti` (path → problem or None).
    """
    folder = require_dir(dataset_dir, "input folder")
    files = sorted(p for p in folder.iterdir() if is_nifti(p))
    if not files:
        raise FileNotFoundError(f"no .nii or .nii.gz files in input folder '{folder}'")
    check = checker or (lambda p: check_nifti(p, num_channels))
    good, skipped = [], []
    for path in files:
        problem = check(path)
        if problem is None:
            good.append({image_key: str(path)})
        else:
            skipped.append((str(path), problem))
    return settle_inputs(folder, good, skipped, report_dir, f"no .nii or .nii.gz files in input folder '{folder}'")


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


def require_checkpoint(path: str | os.PathLike) -> str:
    """``path`` if it is a file, else a FileNotFoundError telling the user how to get weights."""
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"no weights at '{path}': train the bundle first (run training), point --ckpt_path at a state dict, "
            "or pass --load_pretrain False to run with random weights"
        )
    return str(path)


def with_weights(network: torch.nn.Module, path: str | os.PathLike | None, device: str | torch.device = "cpu"):
    """``network`` with the state dict at ``path`` loaded (strict), or unchanged when ``path`` is None.

    Used by train.json's ``load_pretrain`` to fine-tune from a checkpoint; the weights are mapped to ``device``.
    """
    if path is None:
        return network
    state = torch.load(require_checkpoint(path), map_location=device, weights_only=True)
    try:
        network.load_state_dict(state)
    except RuntimeError as e:
        raise RuntimeError(f"weights in '{path}' do not fit the configured network: {e}") from None
    logger.info("loaded weights from %s", path)
    return network
