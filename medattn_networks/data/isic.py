"""ISIC 2018 Task 1 (lesion boundary segmentation) in the challenge's published layout, for MSA²Net (seed 004).

```
ISIC2018_Task1-2_Training_Input/ISIC_0000000.jpg          RGB dermoscopy image (any size)
ISIC2018_Task1_Training_GroundTruth/ISIC_0000000_segmentation.png   mask, 0 background / 255 lesion
ISIC2018_Task1-2_Validation_Input/ … ISIC2018_Task1_Validation_GroundTruth/ …
ISIC2018_Task1-2_Test_Input/ … ISIC2018_Task1_Test_GroundTruth/ …
```

:func:`isic2018_datalist` lists one split; files other than ``ISIC_<id>.jpg`` (the release's ``ATTRIBUTION.txt``,
``LICENSE.txt``) are ignored. Read the items with MONAI's ``LoadImaged(reader="PILReader")`` and make the mask binary
with ``AsDiscreted(threshold=128)``. :func:`isic2018_split` chooses between the challenge's own three splits and the
1815 / 259 / 520 split of the 2594 training images that the DAE-Former / D-LKA line of papers (MSA²Net's authors'
group) trains, selects and tests on. :func:`make_isic2018` writes small synthetic cases in the same layout.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from medattn_networks.data.files import require_dir

__all__ = ["ISIC2018_FOLDERS", "ISIC2018_SPLITS", "isic2018_datalist", "isic2018_split", "make_image_folder", "make_isic2018"]

ISIC2018_FOLDERS = {
    "train": ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"),
    "val": ("ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth"),
    "test": ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth"),
}
ISIC2018_SPLITS = ("official", "training_images")
# shares of the sorted training images in the "training_images" split: 2594 → 1815 train, 259 val, 520 test
_TRAINING_IMAGE_FRACTIONS = (0.7, 0.1)
_IMAGE = re.compile(r"(ISIC_\d+)\.jpe?g", re.IGNORECASE)


def isic2018_datalist(data_dir: str | os.PathLike, split: str = "train", with_labels: bool = True) -> list[dict]:
    """``{"image": ISIC_<id>.jpg, "label": ISIC_<id>_segmentation.png, "case": "ISIC_<id>"}`` of one split.

    Args:
        data_dir: the folder holding the challenge's ``ISIC2018_Task1…`` folders.
        split: ``"train"``, ``"val"`` or ``"test"``.
        with_labels: require the ground-truth folder and a mask for every image (False: images only).
    """
    if split not in ISIC2018_FOLDERS:
        raise ValueError(f"split must be one of {', '.join(ISIC2018_FOLDERS)}, got '{split}'")
    root = require_dir(data_dir, "ISIC 2018 data folder")
    image_dir_name, mask_dir_name = ISIC2018_FOLDERS[split]
    image_dir = require_dir(root / image_dir_name, f"ISIC 2018 {split} image folder")
    items = []
    for path in sorted(image_dir.iterdir()):
        match = _IMAGE.fullmatch(path.name)
        if match and path.is_file():
            items.append({"image": str(path), "case": match[1]})
    if not items:
        raise FileNotFoundError(f"no ISIC_<id>.jpg images in '{image_dir}'")
    if with_labels:
        mask_dir = require_dir(root / mask_dir_name, f"ISIC 2018 {split} ground-truth folder")
        missing = []
        for item in items:
            mask = mask_dir / f"{item['case']}_segmentation.png"
            if not mask.is_file():
                missing.append(mask.name)
            item["label"] = str(mask)
        if missing:
            raise FileNotFoundError(f"'{mask_dir}' lacks {missing[0]} ({len(missing)} mask(s) missing)")
    return items


def isic2018_split(data_dir: str | os.PathLike, part: str, split: str = "official") -> list[dict]:
    """The labelled items of one ``part`` (``"train"``, ``"val"`` or ``"test"``) of an ISIC 2018 Task 1 split.

    Args:
        data_dir: the folder holding the challenge's ``ISIC2018_Task1…`` folders.
        part: which part of the split.
        split: ``"official"`` — the challenge's training, validation and test folders (ground truth of all three
            is published); ``"training_images"`` — the training folder only, in file-name order: the first
            ⌊0.7·n⌋ images train, the next ⌊0.1·n⌋ validate, the rest test (1815 / 259 / 520 of the 2594).
    """
    if split not in ISIC2018_SPLITS:
        raise ValueError(f"split must be one of {', '.join(ISIC2018_SPLITS)}, got '{split}'")
    if part not in ISIC2018_FOLDERS:
        raise ValueError(f"part must be one of {', '.join(ISIC2018_FOLDERS)}, got '{part}'")
    if split == "official":
        return isic2018_datalist(data_dir, part)
    items = isic2018_datalist(data_dir, "train")
    n = len(items)
    num_train, num_val = (int(n * f) for f in _TRAINING_IMAGE_FRACTIONS)
    if min(num_train, num_val, n - num_train - num_val) < 1:
        raise ValueError(f"the training_images split needs at least 10 training images in '{data_dir}', found {n}")
    bounds = {"train": (0, num_train), "val": (num_train, num_train + num_val), "test": (num_train + num_val, n)}
    start, stop = bounds[part]
    return items[start:stop]


def _dermoscopy_like(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """An (h, w, 3) uint8 skin-coloured image with a darker elliptic lesion, and the lesion's boolean mask."""
    ys, xs = np.ogrid[:h, :w]
    cy, cx = h / 2 + rng.uniform(-h / 8, h / 8), w / 2 + rng.uniform(-w / 8, w / 8)
    lesion = ((ys - cy) / (h / 4)) ** 2 + ((xs - cx) / (w / 3.5)) ** 2 <= 1.0
    skin = np.array([210, 160, 140], np.float64) + rng.normal(0, 8, (h, w, 3))
    return np.where(lesion[..., None], skin * 0.45, skin).clip(0, 255).astype(np.uint8), lesion


def make_isic2018(
    root: str | os.PathLike,
    num_cases: Mapping[str, int] | None = None,
    size: Sequence[int] = (48, 64),
    seed: int = 0,
) -> Path:
    """Write synthetic dermoscopy-like cases in the ISIC 2018 Task 1 layout: an RGB JPEG per case with a darker
    elliptic lesion and its 0/255 PNG mask. ``num_cases`` per split (default train 4, val 2, test 2); ``size`` is
    (height, width)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    counts = dict(num_cases or {"train": 4, "val": 2, "test": 2})
    h, w = (int(s) for s in size)
    number = 0
    for split, count in counts.items():
        image_dir, mask_dir = (root / name for name in ISIC2018_FOLDERS[split])
        image_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        (image_dir / "ATTRIBUTION.txt").write_text("synthetic cases written by medattn_networks.data.make_isic2018\n")
        for _ in range(count):
            image, lesion = _dermoscopy_like(rng, h, w)
            name = f"ISIC_{number:07d}"
            Image.fromarray(image).save(image_dir / f"{name}.jpg", quality=95)
            Image.fromarray((lesion * 255).astype(np.uint8)).save(mask_dir / f"{name}_segmentation.png")
            number += 1
    return root


def make_image_folder(
    root: str | os.PathLike, num: int = 2, size: Sequence[int] = (48, 64), seed: int = 0
) -> list[Path]:
    """Write ``num`` unlabelled dermoscopy-like RGB images into a flat folder, an inference input: alternately
    ``image_<k>.jpg`` and ``image_<k>.png``, each a few pixels larger than the last (sizes differ on purpose);
    ``size`` is (height, width) of the first. Returns the files."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(int(num)):
        image, _ = _dermoscopy_like(rng, int(size[0]) + 4 * k, int(size[1]) + 6 * k)
        path = root / f"image_{k}.{'jpg' if k % 2 == 0 else 'png'}"
        Image.fromarray(image).save(path, **({"quality": 95} if path.suffix == ".jpg" else {}))
        files.append(path)
    return files
