"""Synapse multi-organ CT (BTCV abdomen) in the TransUNet setting: 8 organs, 18 training / 12 test cases.

Two published layouts are read:

* TransUNet's preprocessed release (``data/Synapse``)::

      train_npz/case0005_slice000.npz     keys image (H, W) float in [0, 1], label (H, W)
      test_vol_h5/case0001.npy.h5         keys image (slices, H, W), label (slices, H, W)
      lists/lists_Synapse/train.txt       one slice name per line (case0031_slice000)
      lists/lists_Synapse/test_vol.txt    one case per line (case0008)

  Images were clipped to HU [-125, 275] and scaled to [0, 1]; labels are already in the TransUNet order.
* The raw BTCV release: ``img/img0001.nii.gz`` and ``label/label0001.nii.gz`` (13 organ labels, HU images).
  :func:`btcv_datalist` lists those volumes, :func:`synapse_nifti_transforms` gives them the preprocessed
  form (HU clip and scale, 13 → 8 labels, slices first) and :func:`convert_btcv_to_transunet` writes the
  TransUNet layout so that training reads 2D slices without decompressing volumes.

Classes (TransUNet order): 0 background, 1 aorta, 2 gallbladder, 3 left kidney, 4 right kidney, 5 liver,
6 pancreas, 7 spleen, 8 stomach.

The slice transforms here (:class:`LoadNpzH5d`, :class:`ZScoreShiftd`, :class:`RandomRotFlipd`,
:func:`slice_train_transforms`) serve ACDC too (:mod:`medattn_networks.data.acdc`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Hashable, Mapping, Sequence

import h5py
import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    Flip,
    LoadImaged,
    MapTransform,
    RandomizableTransform,
    RepeatChanneld,
    Resized,
    Rotate,
    Rotate90,
    ScaleIntensityRanged,
    Transposed,
)

from medattn_networks.data.files import require_dir

__all__ = [
    "SYNAPSE_CLASSES",
    "SYNAPSE_TRAIN_CASES",
    "SYNAPSE_TEST_CASES",
    "SYNAPSE_HU_RANGE",
    "BTCV_LABELS",
    "BTCV_TO_SYNAPSE",
    "TOTALSEG_TO_SYNAPSE",
    "synapse_datalist",
    "btcv_datalist",
    "btcv_case_files",
    "btcv_training_slices",
    "synapse_layout_datalist",
    "synapse_heldout",
    "SYNAPSE_LAYOUTS",
    "convert_btcv_to_transunet",
    "write_transunet_case",
    "synapse_nifti_transforms",
    "slice_train_transforms",
    "LoadNpzH5d",
    "RemapLabelsd",
    "ZScoreShiftd",
    "RandomRotFlipd",
    "remap_labels",
    "zscore_shift",
]

logger = logging.getLogger("medattn.data")

SYNAPSE_CLASSES = (
    "background",
    "aorta",
    "gallbladder",
    "kidney_left",
    "kidney_right",
    "liver",
    "pancreas",
    "spleen",
    "stomach",
)
# TransUNet lists/lists_Synapse: the cases of train.txt (2211 slices) and test_vol.txt (in that file's order)
SYNAPSE_TRAIN_CASES = tuple(
    f"case{i:04d}" for i in (5, 6, 7, 9, 10, 21, 23, 24, 26, 27, 28, 30, 31, 33, 34, 37, 39, 40)
)
SYNAPSE_TEST_CASES = tuple(f"case{i:04d}" for i in (8, 22, 38, 36, 32, 2, 29, 3, 1, 4, 25, 35))
SYNAPSE_HU_RANGE = (-125.0, 275.0)

# BTCV (Synapse "Multi-Atlas Labeling Beyond the Cranial Vault", abdomen) label ids
BTCV_LABELS = {
    1: "spleen",
    2: "kidney_right",
    3: "kidney_left",
    4: "gallbladder",
    5: "esophagus",
    6: "liver",
    7: "stomach",
    8: "aorta",
    9: "inferior_vena_cava",
    10: "portal_and_splenic_vein",
    11: "pancreas",
    12: "adrenal_gland_right",
    13: "adrenal_gland_left",
}
# BTCV id -> TransUNet class; every other id (esophagus, IVC, veins, adrenals) becomes background
BTCV_TO_SYNAPSE = {8: 1, 4: 2, 3: 3, 2: 4, 6: 5, 11: 6, 1: 7, 7: 8}
# TotalSegmentator v2 id -> TransUNet class (aorta 52, gallbladder 4, kidney_left 3, kidney_right 2, liver 5,
# pancreas 7, spleen 1, stomach 6); for smoke tests on ../shared/data/totalseg_ct only
TOTALSEG_TO_SYNAPSE = {52: 1, 4: 2, 3: 3, 2: 4, 5: 5, 7: 6, 1: 7, 6: 8}

_SLICE_NAME = re.compile(r"^(?P<case>.+?)_slice_?(?P<index>\d+)$")
_H5_SUFFIXES = (".h5", ".hdf5")


# ----------------------------------------------------------------------------------------------- lists
def _read_list(path: Path) -> list[str]:
    names = [line.strip() for line in path.read_text().splitlines()]
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"list file '{path}' is empty")
    return names


def _find_list(data_dir: Path, list_dir: str | os.PathLike | None, name: str) -> Path | None:
    if list_dir is not None:
        folder = require_dir(list_dir, "Synapse list folder")
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"Synapse list file not found: '{path}'")
        return path
    for folder in (data_dir / "lists" / "lists_Synapse", data_dir / "lists_Synapse", data_dir):
        if (folder / name).is_file():
            return folder / name
    return None


def _missing_error(what: str, missing: list[Path], source: str) -> FileNotFoundError:
    return FileNotFoundError(f"{len(missing)} {what} named in {source} do not exist, e.g. '{missing[0]}'")


def _slice_item(path: Path, name: str) -> dict:
    match = _SLICE_NAME.match(name)
    item = {"image": str(path), "label": str(path), "case": match["case"] if match else name}
    if match:
        item["slice"] = int(match["index"])
    return item


def synapse_datalist(
    data_dir: str | os.PathLike, split: str = "train", list_dir: str | os.PathLike | None = None
) -> list[dict]:
    """Items of TransUNet's preprocessed Synapse release.

    Args:
        data_dir: the ``data/Synapse`` folder holding ``train_npz/`` and ``test_vol_h5/``.
        split: ``"train"``: one item per 2D slice ``{"image": npz, "label": npz, "case", "slice"}`` from
            ``train.txt`` (or every ``train_npz/*.npz`` when there is no list); ``"test"`` (or ``"test_vol"``):
            one item per volume ``{"image": h5, "label": h5, "case"}`` from ``test_vol.txt`` (or the 12 TransUNet
            test cases). Read the files with :class:`LoadNpzH5d`.
        list_dir: folder of ``train.txt`` / ``test_vol.txt``; by default ``lists/lists_Synapse``,
            ``lists_Synapse`` or ``data_dir`` itself, whichever has the file.
    """
    root = require_dir(data_dir, "Synapse data folder")
    if split == "train":
        folder = require_dir(root / "train_npz", "Synapse train_npz folder")
        listing = _find_list(root, list_dir, "train.txt")
        if listing is None:
            files = sorted(p for p in folder.glob("*.npz") if not p.name.startswith("."))
            if not files:
                raise FileNotFoundError(f"no .npz slices in '{folder}' and no train.txt list found")
            logger.info("no train.txt found: using all %d slices in %s", len(files), folder)
            return [_slice_item(p, p.name[: -len(".npz")]) for p in files]
        names = [n[: -len(".npz")] if n.endswith(".npz") else n for n in _read_list(listing)]
        paths = [folder / f"{n}.npz" for n in names]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise _missing_error("slice file(s)", missing, f"'{listing}'")
        return [_slice_item(p, n) for p, n in zip(paths, names)]
    if split in ("test", "test_vol"):
        folder = require_dir(root / "test_vol_h5", "Synapse test_vol_h5 folder")
        listing = _find_list(root, list_dir, "test_vol.txt")
        names = _read_list(listing) if listing is not None else list(SYNAPSE_TEST_CASES)
        names = [n[: -len(".npy.h5")] if n.endswith(".npy.h5") else n for n in names]
        paths = [folder / f"{n}.npy.h5" for n in names]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            source = f"'{listing}'" if listing is not None else "the TransUNet test split"
            raise _missing_error("test volume(s)", missing, source)
        return [{"image": str(p), "label": str(p), "case": n} for p, n in zip(paths, names)]
    raise ValueError(f"split must be 'train' or 'test', got '{split}'")


# ----------------------------------------------------------------------------------------------- raw BTCV
def _btcv_folders(root: Path) -> tuple[Path, Path]:
    for base in (root, root / "Training", root / "RawData" / "Training", root / "Abdomen" / "RawData" / "Training"):
        if (base / "img").is_dir() and (base / "label").is_dir():
            return base / "img", base / "label"
    raise FileNotFoundError(f"BTCV folder '{root}' has no img/ and label/ folders (nor Training/img, Training/label)")


def btcv_case_files(data_dir: str | os.PathLike) -> dict[str, tuple[Path, Path | None]]:
    """``{"case0001": (img0001.nii.gz, label0001.nii.gz or None)}`` for every image of a raw BTCV folder."""
    root = require_dir(data_dir, "BTCV data folder")
    img_dir, label_dir = _btcv_folders(root)
    cases: dict[str, tuple[Path, Path | None]] = {}
    for path in sorted(img_dir.iterdir()):
        match = re.fullmatch(r"img(\d+)\.nii(\.gz)?", path.name)
        if not match or not path.is_file():
            continue
        candidates = (label_dir / f"label{match[1]}.nii.gz", label_dir / f"label{match[1]}.nii")
        label = next((p for p in candidates if p.is_file()), None)
        cases[f"case{int(match[1]):04d}"] = (path, label)
    if not cases:
        raise FileNotFoundError(f"no imgNNNN.nii.gz files in '{img_dir}'")
    return cases


def btcv_datalist(
    data_dir: str | os.PathLike, split: str = "test", cases: Sequence[str] | None = None
) -> list[dict]:
    """3D items ``{"image": imgNNNN.nii.gz, "label": labelNNNN.nii.gz, "case": "caseNNNN"}`` of raw BTCV.

    Args:
        data_dir: folder with ``img/`` and ``label/`` (or ``Training/`` / ``RawData/Training/`` holding them).
        split: ``"train"`` (TransUNet's 18 cases), ``"test"`` (its 12) or ``"all"`` (every labelled case).
        cases: explicit case names (``caseNNNN``), overriding ``split``.
    Labels are BTCV ids; apply :func:`synapse_nifti_transforms` (or :class:`RemapLabelsd`) before use.
    """
    files = btcv_case_files(data_dir)
    if cases is not None:
        names = list(cases)
    elif split == "train":
        names = list(SYNAPSE_TRAIN_CASES)
    elif split == "test":
        names = list(SYNAPSE_TEST_CASES)
    elif split == "all":
        names = [c for c, (_, label) in files.items() if label is not None]
    else:
        raise ValueError(f"split must be 'train', 'test' or 'all', got '{split}'")
    absent = [c for c in names if c not in files]
    if absent:
        raise FileNotFoundError(
            f"BTCV folder '{data_dir}' lacks img{absent[0][4:]}.nii.gz ({len(absent)} case(s) missing: {', '.join(absent)})"
        )
    unlabelled = [c for c in names if files[c][1] is None]
    if unlabelled:
        raise FileNotFoundError(
            f"BTCV folder '{data_dir}' lacks label{unlabelled[0][4:]}.nii.gz ({len(unlabelled)} case(s) without label)"
        )
    return [{"image": str(files[c][0]), "label": str(files[c][1]), "case": c} for c in names]


def remap_labels(label: np.ndarray | torch.Tensor, mapping: Mapping[int, int]) -> np.ndarray | torch.Tensor:
    """Label map with ``mapping[v]`` for each listed id ``v`` and 0 for every id not listed."""
    if not mapping:
        raise ValueError("label mapping is empty")
    size = max(int(k) for k in mapping) + 1
    table = np.zeros(size, np.int64)
    for source, target in mapping.items():
        table[int(source)] = int(target)
    if isinstance(label, torch.Tensor):
        ids = label.long()
        valid = (ids >= 0) & (ids < size)
        out = torch.zeros_like(ids)
        out[valid] = torch.as_tensor(table, device=ids.device)[ids[valid]]
        return out.to(torch.uint8) if table.max() < 256 else out
    ids = np.asarray(label).astype(np.int64)
    valid = (ids >= 0) & (ids < size)
    out = np.zeros(ids.shape, np.int64)
    out[valid] = table[ids[valid]]
    return out.astype(np.uint8) if table.max() < 256 else out


def write_transunet_case(
    image_file: str | os.PathLike,
    label_file: str | os.PathLike,
    dst_dir: str | os.PathLike,
    case: str,
    split: str,
    mapping: Mapping[int, int] = BTCV_TO_SYNAPSE,
    hu_range: Sequence[float] = SYNAPSE_HU_RANGE,
) -> list[Path]:
    """Write one CT volume in TransUNet's layout; returns the files written.

    The image is clipped to ``hu_range`` and scaled to [0, 1]; labels are mapped with ``mapping`` (unlisted ids
    become 0). Arrays are put slices first as (z, y, x) — the SimpleITK array order of the NIfTI volume, i.e.
    the axial slices TransUNet's test code writes back with ``sitk.GetImageFromArray``. ``split="train"``
    writes ``train_npz/<case>_sliceNNN.npz`` per slice, ``"test"`` writes ``test_vol_h5/<case>.npy.h5``.
    """
    image = np.asarray(nib.load(str(image_file)).dataobj, dtype=np.float32)
    label = np.asarray(nib.load(str(label_file)).dataobj)
    if image.ndim != 3 or image.shape != label.shape:
        raise ValueError(f"{image_file} {image.shape} and {label_file} {label.shape} must be 3D volumes of one shape")
    low, high = float(hu_range[0]), float(hu_range[1])
    image = ((np.clip(image, low, high) - low) / (high - low)).astype(np.float32)
    label = remap_labels(np.rint(label), mapping)
    image, label = np.ascontiguousarray(image.transpose(2, 1, 0)), np.ascontiguousarray(label.transpose(2, 1, 0))
    dst = Path(dst_dir)
    if split == "train":
        folder = dst / "train_npz"
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for k in range(image.shape[0]):
            path = folder / f"{case}_slice{k:03d}.npz"
            np.savez(path, image=image[k], label=label[k])
            written.append(path)
        return written
    if split == "test":
        folder = dst / "test_vol_h5"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{case}.npy.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("image", data=image, compression="gzip")
            f.create_dataset("label", data=label, compression="gzip")
        return [path]
    raise ValueError(f"split must be 'train' or 'test', got '{split}'")


def convert_btcv_to_transunet(
    src_dir: str | os.PathLike,
    dst_dir: str | os.PathLike,
    mapping: Mapping[int, int] = BTCV_TO_SYNAPSE,
    train_cases: Sequence[str] = SYNAPSE_TRAIN_CASES,
    test_cases: Sequence[str] = SYNAPSE_TEST_CASES,
) -> Path:
    """Raw BTCV (``img/``, ``label/``) → TransUNet's ``train_npz/``, ``test_vol_h5/`` and ``lists/lists_Synapse``.

    Every slice of the training cases is written (TransUNet's train.txt lists all 2211 slices of its 18 cases).
    """
    files = btcv_case_files(src_dir)
    for name in (*train_cases, *test_cases):
        if name not in files or files[name][1] is None:
            raise FileNotFoundError(f"BTCV folder '{src_dir}' lacks the image or label of {name}")
    dst = Path(dst_dir)
    slices: list[str] = []
    for case in train_cases:
        for path in write_transunet_case(*files[case], dst, case, "train", mapping):
            slices.append(path.name[: -len(".npz")])
    for case in test_cases:
        write_transunet_case(*files[case], dst, case, "test", mapping)
    lists = dst / "lists" / "lists_Synapse"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "train.txt").write_text("".join(f"{s}\n" for s in slices))
    (lists / "test_vol.txt").write_text("".join(f"{c}\n" for c in test_cases))
    return dst


def _file_stamp(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def btcv_training_slices(
    data_dir: str | os.PathLike,
    cache_dir: str | os.PathLike,
    cases: Sequence[str] | None = None,
    mapping: Mapping[int, int] = BTCV_TO_SYNAPSE,
    hu_range: Sequence[float] = SYNAPSE_HU_RANGE,
) -> list[dict]:
    """2D training items from raw BTCV volumes, written once to ``cache_dir/train_npz`` in TransUNet's form.

    Each training case is converted with :func:`write_transunet_case` (HU clip and scale, 13 → 8 labels, slices
    first) the first time it is needed; ``cache_dir/btcv_slices.json`` records the source files (path, size,
    modification time), the HU range and the mapping, so a later run reuses the slices and a changed source is
    converted again. Items are those of :func:`synapse_datalist` (``{"image", "label", "case", "slice"}``).
    One process should fill the cache (it is not locked against concurrent writers).

    Args:
        data_dir: raw BTCV folder (``img/``, ``label/``; see :func:`btcv_case_files`).
        cache_dir: where the slices go.
        cases: training cases (``caseNNNN``); default TransUNet's 18.
        mapping, hu_range: as :func:`write_transunet_case`.
    """
    names = list(cases) if cases is not None else list(SYNAPSE_TRAIN_CASES)
    volumes = btcv_datalist(data_dir, cases=names)
    cache = Path(cache_dir)
    folder = cache / "train_npz"
    manifest_path = cache / "btcv_slices.json"
    manifest: dict = {}
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError:
            manifest = {}
    settings = {"hu_range": [float(v) for v in hu_range], "mapping": {str(k): int(v) for k, v in mapping.items()}}
    items: list[dict] = []
    for volume in volumes:
        case = volume["case"]
        stamp = {
            "image": _file_stamp(Path(volume["image"])),
            "label": _file_stamp(Path(volume["label"])),
            **settings,
        }
        entry = manifest.get(case)
        paths = [folder / f"{case}_slice{k:03d}.npz" for k in range(entry["slices"])] if entry else []
        if not entry or entry.get("stamp") != stamp or not all(p.is_file() for p in paths):
            for stale in folder.glob(f"{case}_slice*.npz"):
                stale.unlink()
            logger.info("converting %s (%s) to 2D slices in %s", case, volume["image"], folder)
            paths = write_transunet_case(volume["image"], volume["label"], cache, case, "train", mapping, hu_range)
            manifest[case] = {"stamp": stamp, "slices": len(paths)}
            cache.mkdir(parents=True, exist_ok=True)
            tmp = manifest_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(manifest, indent=1))
            tmp.replace(manifest_path)
        items += [_slice_item(p, p.name[: -len(".npz")]) for p in paths]
    return items


SYNAPSE_LAYOUTS = ("transunet", "btcv")


def synapse_heldout(
    data_dir: str | os.PathLike, part: str, num_val: int, list_dir: str | os.PathLike | None = None
) -> list[dict]:
    """A validation split inside TransUNet's training cases, so that models are selected without the test set.

    The last ``num_val`` training cases by name are held out: ``part="train"`` gives the slices of the others (the
    items of ``synapse_datalist(..., "train")``), ``part="val"`` one volume item per held-out case whose ``image`` and
    ``label`` are the case's slice files in slice order (:class:`LoadNpzH5d` stacks them).
    """
    items = synapse_datalist(data_dir, "train", list_dir)
    cases = sorted({item["case"] for item in items})
    if not 1 <= int(num_val) < len(cases):
        raise ValueError(f"num_val must hold out between 1 and {len(cases) - 1} of the {len(cases)} training cases, got {num_val}")
    held = set(cases[-int(num_val) :])
    if part == "train":
        return [item for item in items if item["case"] not in held]
    if part != "val":
        raise ValueError(f"part must be 'train' or 'val', got '{part}'")
    volumes = []
    for case in sorted(held):
        slices = sorted((item for item in items if item["case"] == case), key=lambda item: item.get("slice", 0))
        files = [item["image"] for item in slices]
        volumes.append({"image": files, "label": list(files), "case": case})
    return volumes


def synapse_layout_datalist(
    data_dir: str | os.PathLike,
    split: str,
    layout: str = "transunet",
    list_dir: str | os.PathLike | None = None,
    cases: Sequence[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> list[dict]:
    """Training slices or evaluation volumes of either published Synapse layout (the bundles' single entry).

    Args:
        data_dir: TransUNet's ``data/Synapse`` folder (``layout="transunet"``) or a raw BTCV folder (``"btcv"``).
        split: ``"train"`` (2D slice items) or ``"test"`` (3D volume items: ``.npy.h5`` or NIfTI).
        layout: ``"transunet"`` or ``"btcv"``.
        list_dir: TransUNet list folder (see :func:`synapse_datalist`); ignored for BTCV.
        cases: case names (``caseNNNN``) to keep; None: the layout's own split (the lists, or TransUNet's
            18 / 12 BTCV cases).
        cache_dir: BTCV only, training only: where :func:`btcv_training_slices` writes the slices.
    """
    if layout not in SYNAPSE_LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(SYNAPSE_LAYOUTS)}, got '{layout}'")
    if split not in ("train", "test", "test_vol"):
        raise ValueError(f"split must be 'train' or 'test', got '{split}'")
    if layout == "btcv":
        if split == "train":
            if cache_dir is None:
                raise ValueError("training on the raw BTCV layout needs cache_dir for its 2D slices")
            return btcv_training_slices(data_dir, cache_dir, cases)
        return btcv_datalist(data_dir, "test", cases)
    items = synapse_datalist(data_dir, split, list_dir)
    if cases is not None:
        wanted = list(cases)
        unknown = sorted(set(wanted) - {item["case"] for item in items})
        if unknown:
            raise FileNotFoundError(f"case(s) {', '.join(unknown)} are not in the '{split}' split of '{data_dir}'")
        items = [item for item in items if item["case"] in set(wanted)]
    return items


# ----------------------------------------------------------------------------------------------- transforms
class LoadNpzH5d(MapTransform):
    """Read arrays from ``.npz`` or ``.h5`` files into channel-first MetaTensors (a channel axis is added).

    Each key's value is a file path (or a list of 2D slice files, stacked along a new first axis); the array read is the file's dataset of the same name (``image`` and
    ``label`` in the TransUNet and SSL4MIS layouts) unless ``dataset_names`` says otherwise. Images are cast
    to float32, ``label_keys`` to uint8 (they may be stored as float). The MetaTensor carries
    ``filename_or_obj`` and an identity affine (the files hold no spacing).

    Args:
        keys: keys whose values are file paths.
        dataset_names: ``{key: name inside the file}``; default: the key itself.
        label_keys: keys holding label maps.
    """

    def __init__(
        self,
        keys: KeysCollection,
        dataset_names: Mapping[str, str] | None = None,
        label_keys: Sequence[str] = ("label",),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.dataset_names = dict(dataset_names or {})
        self.label_keys = set(label_keys)

    @staticmethod
    def read(path: str | os.PathLike, name: str) -> np.ndarray:
        """The array ``name`` of an ``.npz`` or ``.h5`` file, with errors naming the file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"file not found: '{path}'")
        try:
            if path.name.lower().endswith(".npz"):
                with np.load(path) as data:
                    if name not in data.files:
                        raise KeyError(f"'{path}' has no array '{name}' (it holds: {', '.join(data.files)})")
                    return data[name]
            if path.name.lower().endswith(_H5_SUFFIXES):
                with h5py.File(path, "r") as data:
                    if name not in data:
                        raise KeyError(f"'{path}' has no dataset '{name}' (it holds: {', '.join(data.keys())})")
                    return data[name][()]
        except (OSError, ValueError) as e:
            raise OSError(f"cannot read '{path}': {e}") from e
        raise ValueError(f"'{path}' is neither an .npz nor an .h5 file")

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            name = self.dataset_names.get(str(key), str(key))
            if isinstance(path, (list, tuple)):  # 2D slices of one case: stacked slices first, as the h5 volumes
                array = np.stack([self.read(p, name) for p in path])
                path = path[0]
            else:
                array = self.read(path, name)
            if str(key) in self.label_keys:
                if np.issubdtype(array.dtype, np.floating):
                    array = np.rint(array)
                array = array.astype(np.uint8)
            else:
                array = array.astype(np.float32)
            meta = {
                "filename_or_obj": str(path),
                "spatial_shape": np.asarray(array.shape),
                "original_channel_dim": "no_channel",
            }
            d[key] = MetaTensor(torch.from_numpy(np.ascontiguousarray(array))[None], meta=meta)
        return d


class RemapLabelsd(MapTransform):
    """Map label ids with ``mapping`` (e.g. :data:`BTCV_TO_SYNAPSE`); ids not in it become background."""

    def __init__(self, keys: KeysCollection, mapping: Mapping[int, int], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mapping = {int(k): int(v) for k, v in mapping.items()}

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            if isinstance(value, torch.Tensor):
                plain = value.as_tensor() if isinstance(value, MetaTensor) else value
                out = remap_labels(torch.round(plain) if plain.is_floating_point() else plain, self.mapping)
                if isinstance(value, MetaTensor):
                    out = MetaTensor(out, meta=value.meta, applied_operations=value.applied_operations)
                d[key] = out
            else:
                d[key] = remap_labels(np.rint(np.asarray(value)), self.mapping)
        return d


def zscore_shift(image: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / std`` over the whole image, then shifted so that its minimum is 0 (float32)."""
    x = image.float()
    std = x.std(unbiased=False)
    x = (x - x.mean()) / torch.clamp(std, min=eps)
    return x - x.min()


class ZScoreShiftd(MapTransform):
    """Per-image z-score, then shift so the minimum is 0 (DSNet's ``Normalize``; papers.md §002).

    One mean and std over all channels and pixels (the repeated grey channels are identical anyway).
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            out = zscore_shift(torch.as_tensor(value))
            if isinstance(value, MetaTensor):
                plain = out.as_tensor() if isinstance(out, MetaTensor) else out
                out = MetaTensor(plain, meta=value.meta, applied_operations=value.applied_operations)
            d[key] = out
        return d


class RandomRotFlipd(RandomizableTransform, MapTransform):
    """2D augmentation of papers.md §002: with ``rotate_prob`` a rotation by an angle drawn uniformly from
    [-``degrees``, ``degrees``] (same size, zero fill), otherwise (with ``flip_prob``) ``rot90`` by a random
    k ∈ {0..3} followed by a flip along a random axis.

    The defaults (0.5, 1.0) are papers.md's "p .5 rotate ±20°, else rot90 + flip", which is SSL4MIS's
    ``RandomGenerator``. The reference codes differ: mmseg's ``RandomRotFlip`` used by DSNet (rotate_prob 0.5,
    flip_prob 0.5) leaves 25 % of images unchanged (``flip_prob=0.5`` reproduces it); TransUNet's
    ``RandomGenerator`` does rot90+flip with p 0.5, else rotation with p 0.5. TransUNet/SSL4MIS rotate image
    and label with order 0 (nearest, integer angles in [-20, 19]); ``modes`` sets the interpolation per key.

    Args:
        keys: channel-first 2D images (C, H, W), e.g. ``("image", "label")``.
        rotate_prob: probability of the small rotation.
        flip_prob: probability of rot90 + flip when not rotated.
        degrees: maximum absolute angle.
        modes: interpolation per key for the rotation ("nearest" or "bilinear").
    """

    def __init__(
        self,
        keys: KeysCollection,
        rotate_prob: float = 0.5,
        flip_prob: float = 1.0,
        degrees: float = 20.0,
        modes: str | Sequence[str] = "nearest",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        if not (0 <= rotate_prob <= 1 and 0 <= flip_prob <= 1):
            raise ValueError(f"rotate_prob and flip_prob must be in [0, 1], got {rotate_prob}, {flip_prob}")
        self.rotate_prob, self.flip_prob, self.degrees = rotate_prob, flip_prob, float(degrees)
        self.modes = [modes] * len(self.keys) if isinstance(modes, str) else list(modes)
        if len(self.modes) != len(self.keys):
            raise ValueError(f"modes needs one entry per key ({len(self.keys)}), got {len(self.modes)}")
        self._rotate = False
        self._flip = False
        self._angle = 0.0
        self._k = 0
        self._axis = 0

    def randomize(self, data: object = None) -> None:
        self._rotate = self.R.rand() < self.rotate_prob
        self._angle = float(self.R.uniform(-self.degrees, self.degrees))
        self._flip = (not self._rotate) and self.R.rand() < self.flip_prob
        self._k = int(self.R.randint(4))
        self._axis = int(self.R.randint(2))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        self.randomize()
        for key, mode in self.key_iterator(d, self.modes):
            image = d[key]
            if image.ndim != 3:
                raise ValueError(
                    f"RandomRotFlipd expects channel-first 2D images (C, H, W); '{key}' has shape {tuple(image.shape)}"
                )
            if self._rotate:
                dtype = image.dtype
                out = Rotate(np.deg2rad(self._angle), keep_size=True, mode=mode, padding_mode="zeros")(image)
                d[key] = out.to(dtype) if isinstance(out, torch.Tensor) else out.astype(dtype)
            elif self._flip:
                d[key] = Flip(spatial_axis=self._axis)(Rotate90(k=self._k, spatial_axes=(0, 1))(image))
        return d


# ----------------------------------------------------------------------------------------------- pipelines
def synapse_nifti_transforms(
    mapping: Mapping[int, int] | None = BTCV_TO_SYNAPSE,
    hu_range: Sequence[float] = SYNAPSE_HU_RANGE,
    keys: Sequence[str] = ("image", "label"),
    slices_first: bool = True,
) -> list:
    """Transforms that give a raw CT NIfTI pair the form of TransUNet's test volumes.

    Load → channel first → HU clip to ``hu_range`` and scale to [0, 1] → labels through ``mapping``
    (:data:`BTCV_TO_SYNAPSE`, or :data:`TOTALSEG_TO_SYNAPSE` for the TotalSegmentator example; None keeps
    them) → with ``slices_first`` the axes (1, x, y, z) become (1, z, y, x) as in ``test_vol_h5`` (MONAI's
    invertible ``Transposed``), so :class:`~medattn_networks.engine.SliceWiseInferer` runs with ``slice_axis=0``.
    """
    image_key, label_key = keys[0], keys[1] if len(keys) > 1 else None
    transforms: list = [LoadImaged(keys=list(keys), image_only=True), EnsureChannelFirstd(keys=list(keys))]
    transforms.append(
        ScaleIntensityRanged(keys=image_key, a_min=hu_range[0], a_max=hu_range[1], b_min=0.0, b_max=1.0, clip=True)
    )
    if label_key is not None and mapping is not None:
        transforms.append(RemapLabelsd(keys=label_key, mapping=mapping))
    if slices_first:
        transforms.append(Transposed(keys=list(keys), indices=(0, 3, 2, 1)))
    return transforms


def slice_train_transforms(
    size: int | Sequence[int] = 224,
    zscore: bool = True,
    rotate_prob: float = 0.5,
    flip_prob: float = 1.0,
    degrees: float = 20.0,
    rotate_modes: str | Sequence[str] = "nearest",
    image_resize_mode: str = "bilinear",
    repeat_channels: int | None = 3,
    keys: Sequence[str] = ("image", "label"),
) -> Compose:
    """2D training pipeline for npz/h5 slices (Synapse ``train_npz``, ACDC ``*_slice_k.h5``).

    Load (:class:`LoadNpzH5d`) → per-image z-score and shift to min 0 (``zscore``; papers.md §002) → resize
    to ``size`` (image ``image_resize_mode``, label nearest; 224 or 512 for Synapse, 256 for ACDC) →
    :class:`RandomRotFlipd` → grey channel repeated ``repeat_channels`` times (ImageNet stems; None: keep 1).
    This is DSNet's order (Normalize → Resize → RandomRotFlip); TransUNet rotates before resizing.
    """
    image_key, label_key = keys
    spatial = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    transforms: list = [LoadNpzH5d(keys=list(keys), label_keys=(label_key,))]
    if zscore:
        transforms.append(ZScoreShiftd(keys=image_key))
    transforms.append(Resized(keys=list(keys), spatial_size=spatial, mode=(image_resize_mode, "nearest")))
    transforms.append(
        RandomRotFlipd(
            keys=list(keys), rotate_prob=rotate_prob, flip_prob=flip_prob, degrees=degrees, modes=rotate_modes
        )
    )
    if repeat_channels and repeat_channels > 1:
        transforms.append(RepeatChanneld(keys=image_key, repeats=repeat_channels))
    return Compose(transforms)
