"""Bundle glue around the inputs of a run: the NIfTI files of an inference folder (checked by
:func:`medattn_networks.data.check_nifti` before any is run) and the checkpoint a network loads."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import torch

from medattn_networks.data.files import check_nifti, is_nifti, require_dir, settle_inputs

__all__ = ["inference_datalist", "require_checkpoint", "with_weights"]

logger = logging.getLogger("medattn.inputs")


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
