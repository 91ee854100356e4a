"""nnU-Net's dataset fingerprint for CT, computed with MONAI readers: target spacing and intensity statistics.

nnU-Net (v1, used by FINE) plans its preprocessing from the training set: the target spacing is the median voxel
spacing (with its rule for anisotropic data), and CT images are clipped to the 0.5 / 99.5 percentiles of the
foreground intensities, then normalised with the foreground mean and standard deviation. :func:`dataset_fingerprint`
computes exactly these (foreground = label > 0, every 10th foreground voxel of each case, as nnU-Net v1's
DatasetAnalyzer), in the array axis order after ``Orientationd(axcodes)``.

A bundle stores the fingerprint next to its weights (``models/fingerprint.json``): training writes it once,
evaluation and inference read it, so a model is always run with the preprocessing it was trained with
(:func:`load_fingerprint`).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

__all__ = ["dataset_fingerprint", "nnunet_target_spacing", "load_fingerprint", "intensity_window"]

logger = logging.getLogger(__name__)

FINGERPRINT_KEYS = ("spacing", "intensity")
INTENSITY_KEYS = ("lower", "upper", "mean", "std")


def nnunet_target_spacing(spacings: Sequence[Sequence[float]], sizes: Sequence[Sequence[int]]) -> list[float]:
    """nnU-Net v1's 3D target spacing: the per-axis median; if the coarsest axis is over 3× the finest of the others
    and the median size along it is under a third of the others', that axis takes its 10th percentile (at least the
    other axes' largest spacing)."""
    spacings, sizes = np.asarray(spacings, float), np.asarray(sizes, float)
    target = np.percentile(spacings, 50, axis=0)
    target_size = np.percentile(sizes, 50, axis=0)
    worst = int(np.argmax(target))
    others = [i for i in range(len(target)) if i != worst]
    if target[worst] > 3 * max(target[others]) and target_size[worst] * 3 < min(target_size[others]):
        target[worst] = max(np.percentile(spacings[:, worst], 10), max(target[others]) + 1e-5)
    return [float(s) for s in target]


def dataset_fingerprint(
    datalist: Sequence[Mapping],
    image_key: str = "image",
    label_key: str = "label",
    axcodes: str = "SAR",
    voxel_step: int = 10,
) -> dict:
    """Target spacing and CT intensity statistics of a labelled datalist (nnU-Net v1's rules, see the module).

    Args:
        datalist: items with ``image_key`` and ``label_key`` file paths.
        image_key: image entry (single channel).
        label_key: label entry (foreground = label > 0).
        axcodes: orientation the bundle uses; spacing is reported in its array axis order.
        voxel_step: take every n-th foreground voxel of each case.

    Returns:
        ``{"spacing": [..], "intensity": {"lower", "upper", "mean", "std"}, "axcodes", "num_cases"}``.
    """
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd

    items = list(datalist)
    if not items:
        raise ValueError("dataset fingerprint: the datalist is empty")
    keys = [image_key, label_key]
    load = Compose(
        [LoadImaged(keys, image_only=True), EnsureChannelFirstd(keys), Orientationd(keys, axcodes=axcodes)]
    )
    spacings, sizes, voxels = [], [], []
    for i, item in enumerate(items):
        d = load(dict(item))
        image, label = d[image_key], d[label_key]
        if tuple(image.shape[1:]) != tuple(label.shape[1:]):
            raise ValueError(f"{item[label_key]}: label shape {tuple(label.shape[1:])} differs from its image {tuple(image.shape[1:])}")
        spacings.append([float(s) for s in image.pixdim])
        sizes.append(list(image.shape[1:]))
        foreground = np.asarray(image[0])[np.asarray(label[0]) > 0]
        voxels.append(foreground[::voxel_step].astype(np.float64))
        logger.info(f"fingerprint: {i + 1}/{len(items)} {Path(str(item[image_key])).name}")
    values = np.concatenate(voxels)
    if values.size == 0:
        raise ValueError(f"dataset fingerprint: no foreground voxel (label > 0) in the {len(items)} case(s)")
    return {
        "spacing": nnunet_target_spacing(spacings, sizes),
        "intensity": {
            "lower": float(np.percentile(values, 0.5)),
            "upper": float(np.percentile(values, 99.5)),
            "mean": float(values.mean()),
            "std": float(values.std()),
        },
        "axcodes": axcodes,
        "num_cases": len(items),
    }


def _check(fingerprint: Mapping, source: str) -> dict:
    missing = [k for k in FINGERPRINT_KEYS if k not in fingerprint]
    missing += [f"intensity.{k}" for k in INTENSITY_KEYS if k not in fingerprint.get("intensity", {})]
    if missing:
        raise ValueError(f"{source}: dataset fingerprint lacks {', '.join(missing)}")
    if float(fingerprint["intensity"]["std"]) <= 0:
        raise ValueError(f"{source}: dataset fingerprint has intensity std {fingerprint['intensity']['std']} (must be > 0)")
    return dict(fingerprint)


def load_fingerprint(
    path: str | os.PathLike,
    datalist: Optional[Sequence[Mapping]] = None,
    default: Optional[Mapping] = None,
    weights: Optional[str | os.PathLike] = None,
    **kwargs,
) -> dict:
    """The fingerprint stored at ``path``; else computed from ``datalist`` and written there (training); else
    ``default``, allowed only when no ``weights`` file exists (a model is never run with another preprocessing
    than its own).

    Args:
        path: ``fingerprint.json`` (next to the weights).
        datalist: training items to compute it from when ``path`` is missing.
        default: fingerprint for runs without trained weights.
        weights: the weights file that will be loaded (None: none).
        kwargs: passed to :func:`dataset_fingerprint`.
    """
    path = Path(path)
    if path.is_file():
        try:
            fingerprint = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: unreadable dataset fingerprint ({e})") from None
        logger.info(f"dataset fingerprint from {path}")
        return _check(fingerprint, str(path))
    if datalist is not None:
        fingerprint = dataset_fingerprint(datalist, **kwargs)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(fingerprint, f, indent=2)
        os.replace(tmp, path)
        logger.info(f"dataset fingerprint of {fingerprint['num_cases']} training case(s) written to {path}")
        return fingerprint
    if weights is not None and Path(weights).is_file():
        raise FileNotFoundError(
            f"{path}: no dataset fingerprint beside the weights {weights} (training writes it); "
            "copy it from the training run or pass --fingerprint_file"
        )
    if default is None:
        raise FileNotFoundError(f"{path}: no dataset fingerprint (training writes it)")
    logger.warning(f"no dataset fingerprint at {path} and no weights: using the bundle's default preprocessing")
    return _check(default, "default fingerprint")


def intensity_window(fingerprint: Mapping) -> dict:
    """``ScaleIntensityRange`` arguments that clip to [lower, upper] and map x to (x − mean) / std."""
    s = fingerprint["intensity"]
    lower, upper, mean, std = (float(s[k]) for k in INTENSITY_KEYS)
    return {"a_min": lower, "a_max": upper, "b_min": (lower - mean) / std, "b_max": (upper - mean) / std, "clip": True}
