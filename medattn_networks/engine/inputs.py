"""Bundle glue around the inputs of a run: the scans of an inference folder (NIfTI, NRRD, MetaImage files and
DICOM series folders, checked by :func:`medattn_networks.data.check_scan` before any is run), the label map written
for each of them (:class:`SaveLabelMapd`) and the checkpoint a network loads."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection
from monai.data import ImageWriter
from monai.transforms import MapTransform
from monai.utils import ensure_tuple, ensure_tuple_rep

from medattn_networks.data.files import MAX_VOXELS, require_dir, settle_inputs
from medattn_networks.data.scans import IMAGE_SUFFIXES, ITK_SUFFIXES, check_scan, list_scans, output_names
from medattn_networks.engine.checkpoints import atomic_output
from medattn_networks.errors import NoUsableInputError, WeightsError

__all__ = ["inference_datalist", "image_folder_datalist", "check_image", "SaveLabelMapd", "SaveMaskPNGd", "SingleRegiond", "InvertArgmaxd", "require_checkpoint", "with_weights"]

logger = logging.getLogger("medattn.inputs")


def inference_datalist(
    dataset_dir: str | os.PathLike,
    num_channels: int | None = None,
    report_dir: str | os.PathLike | None = None,
    image_key: str = "image",
    checker: Callable[[Path], str | None] | None = None,
    *,
    output_dir: str | os.PathLike | None = None,
    output_key: str = "output",
    output_postfix: str = "seg",
    output_ext: str = ".nii.gz",
    skip_existing: bool = False,
    max_voxels: int | None = MAX_VOXELS,
) -> list[dict]:
    """One ``{image_key: path, output_key: label map path}`` item per good input in ``dataset_dir``, sorted by name.

    Inputs are the ``.nii`` / ``.nii.gz``, ``.nrrd`` / ``.nhdr``, ``.mha`` / ``.mhd`` files and the DICOM series
    sub-folders (one series each) directly in ``dataset_dir``; hidden entries, other files and other sub-folders
    are ignored. Each is checked from its header (:func:`medattn_networks.data.check_scan`: readable, scalar
    pixels, 3D with ``num_channels``, at most ``max_voxels`` voxels, data not truncated); bad ones are logged as
    ``<input>: <problem>`` and, with ``report_dir``, listed in ``skipped_inputs.csv`` there. A missing folder, a
    folder without inputs, or a folder of bad inputs only raises.

    The label map of an input is ``<output_dir>/<stem>_<output_postfix><output_ext>`` (stem: the file name
    without its format suffix, or the DICOM folder's name). Inputs that would share a name (``case.nii`` and
    ``case.nii.gz``) all get one: the later ones in sorted order ``<stem>_2``, ``<stem>_3``, ... with a warning
    (:func:`medattn_networks.data.output_names`; names are given over all inputs, good or bad, so they do not
    change when a bad input is repaired). With ``skip_existing`` inputs whose label map exists are left out
    ("already segmented", not checked); when that leaves none the list is empty (logged, not an error).

    Args:
        dataset_dir: folder of inputs.
        num_channels: channels each image must have (None: do not check).
        report_dir: where to write the list of skipped inputs (usually the output folder).
        image_key: key of the image path in each item.
        checker: replaces :func:`medattn_networks.data.check_scan` (path → problem or None).
        output_dir: folder of the label maps (default ``report_dir``; both None: items get no ``output_key``).
        output_key: key of the label map path in each item (read by :class:`SaveLabelMapd`).
        output_postfix: appended to the stem with ``_`` ("" for none).
        output_ext: label map extension (``.nii.gz``, ``.nii``; ITK extensions need ``SaveLabelMapd(writer="ITKWriter")``).
        skip_existing: leave out inputs whose label map already exists.
        max_voxels: largest accepted input in voxels, all channels together (None: no limit).
    """
    folder = require_dir(dataset_dir, "input folder")
    nothing = (
        f"no .nii or .nii.gz files (nor {', '.join(ITK_SUFFIXES)} files or DICOM series folders) "
        f"in input folder '{folder}'"
    )
    check = checker or (lambda p: check_scan(p, num_channels, max_voxels=max_voxels))
    outputs = dict(output_dir=output_dir, output_key=output_key, output_postfix=output_postfix, output_ext=output_ext)
    return _checked_items(folder, list_scans(folder), nothing, check, report_dir, image_key, skip_existing, **outputs)


def _checked_items(
    folder: Path,
    inputs: Sequence[Path],
    nothing: str,
    check: Callable[[Path], str | None],
    report_dir: str | os.PathLike | None,
    image_key: str,
    skip_existing: bool,
    *,
    output_dir: str | os.PathLike | None,
    output_key: str,
    output_postfix: str,
    output_ext: str,
) -> list[dict]:
    """The items of the candidate ``inputs`` of an inference folder: output names given, already segmented ones
    left out (``skip_existing``), each checked with ``check``; bad ones reported through :func:`settle_inputs`."""
    if not inputs:
        raise NoUsableInputError(nothing)
    out_dir = output_dir if output_dir is not None else report_dir
    if skip_existing and out_dir is None:
        raise ValueError("skip_existing needs output_dir (or report_dir) to know where the label maps are")
    names = output_names(inputs, output_postfix, output_ext) if out_dir is not None else [None] * len(inputs)
    good, skipped, done = [], [], 0
    for path, name in zip(inputs, names):
        item = {image_key: str(path)}
        if name is not None:
            item[output_key] = str(Path(out_dir) / name)
            if skip_existing and Path(item[output_key]).exists():
                logger.info("%s: already segmented (%s); left out", path, item[output_key])
                done += 1
                continue
        problem = check(path)
        if problem is None:
            good.append(item)
        else:
            skipped.append((str(path), problem))
    return settle_inputs(folder, good, skipped, report_dir, nothing, already_done=done)


_MODE_CHANNELS = {"1": 1, "L": 1, "I": 1, "I;16": 1, "F": 1, "LA": 2, "RGB": 3, "YCbCr": 3, "P": 3, "RGBA": 4, "CMYK": 4}


def check_image(path: str | os.PathLike, num_channels: int | None = None) -> str | None:
    """What makes a 2D image file (JPEG / PNG) unusable, or None: unreadable or truncated data, an empty image, or
    another channel count than ``num_channels`` (grey 1, RGB 3; a palette image counts as RGB)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()  # decodes everything: a truncated file fails here
            mode, size = image.mode, image.size
    except (OSError, UnidentifiedImageError, ValueError) as e:
        return f"not a readable image ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no details'})"
    if 0 in size:
        return f"empty image ({size[0]}×{size[1]})"
    channels = _MODE_CHANNELS.get(mode)
    if num_channels is not None and channels != num_channels:
        return f"has {channels if channels is not None else 'an unknown number of'} channel(s) (mode {mode}), the model needs {num_channels}"
    return None


def image_folder_datalist(
    dataset_dir: str | os.PathLike,
    num_channels: int | None = None,
    report_dir: str | os.PathLike | None = None,
    image_key: str = "image",
    *,
    output_dir: str | os.PathLike | None = None,
    output_key: str = "output",
    output_postfix: str = "seg",
    output_ext: str = ".png",
    skip_existing: bool = False,
) -> list[dict]:
    """:func:`inference_datalist` for a folder of 2D images (``.jpg``, ``.jpeg``, ``.png`` directly in it): one
    ``{image_key: path, output_key: <stem>_<postfix><ext>}`` item per good image, bad ones logged and listed in
    ``skipped_inputs.csv`` (:func:`check_image`); a folder without images, or with bad images only, raises."""
    folder = require_dir(dataset_dir, "input folder")
    nothing = f"no {', '.join(IMAGE_SUFFIXES)} images in input folder '{folder}'"
    inputs = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
    outputs = dict(output_dir=output_dir, output_key=output_key, output_postfix=output_postfix, output_ext=output_ext)
    return _checked_items(folder, inputs, nothing, lambda p: check_image(p, num_channels), report_dir, image_key, skip_existing, **outputs)


class SaveMaskPNGd(MapTransform):
    """Write each label map as an 8-bit PNG (label ``k`` → ``k · scale``; binary masks: 0 / 255) at the path in
    ``data[output_key]``, atomically (a temporary file renamed into place).

    The label map is ``(1, W, H)`` or ``(W, H)`` as MONAI's ``PILReader`` reads images (first axis = width), e.g.
    after ``Invertd`` back to the input's size; it is transposed to PIL's (H, W) for writing.

    Args:
        keys: label map keys.
        output_key: key of the target path (from :func:`image_folder_datalist`).
        scale: grey value per label step (255 for binary masks).
    """

    def __init__(self, keys: KeysCollection = "pred", output_key: str = "output", scale: int = 255, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_key, self.scale = output_key, int(scale)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        from PIL import Image

        d = dict(data)
        for key in self.key_iterator(d):
            target = d[self.output_key]
            target = target[0] if isinstance(target, (list, tuple)) else target
            label = d[key]
            array = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
            if array.ndim == 3:
                if array.shape[0] != 1:
                    raise ValueError(f"expected a one-channel label map, got shape {array.shape} (apply AsDiscreted argmax)")
                array = array[0]
            if array.ndim != 2:
                raise ValueError(f"SaveMaskPNGd writes 2D label maps, got shape {array.shape}")
            values = np.rint(array).astype(np.int64) * self.scale
            if values.min() < 0 or values.max() > 255:
                raise ValueError(f"{target}: label values × {self.scale} leave 0–255 ({values.min()}–{values.max()})")
            with atomic_output(target, suffix=".png") as tmp:
                Image.fromarray(values.astype(np.uint8).T).save(tmp, format="PNG")
            if hasattr(label, "meta"):
                label.meta["saved_to"] = str(target)
        return d


class InvertArgmaxd(MapTransform):
    """``Invertd`` followed by ``AsDiscreted(argmax=True)``, computed one channel at a time: the same label map,
    while the inverse (un-cropping, resampling back to the input's grid) holds one full-size channel and a running
    maximum instead of every channel at once — for whole-CT inference, where the class maps dominate memory.

    Resampling acts on each channel on its own, and the running argmax keeps the first channel on ties (as
    ``torch.argmax``), so the result equals the two transforms in sequence.

    Args:
        keys: the prediction keys (``(C, *spatial)`` MetaTensors: probabilities or logits).
        transform: the preprocessing to invert (as ``Invertd``).
        orig_keys: the key whose applied operations describe the inverse (the image key).
        nearest_interp: invert with nearest-neighbour interpolation (as ``Invertd``).
    """

    def __init__(self, keys: KeysCollection, transform, orig_keys: KeysCollection, nearest_interp: bool = False,
                 allow_missing_keys: bool = False) -> None:
        from monai.transforms import Invertd

        super().__init__(keys, allow_missing_keys)
        self.orig_keys = ensure_tuple_rep(orig_keys, len(self.keys))
        self.inverters = [
            Invertd(keys=key, transform=transform, orig_keys=orig, nearest_interp=nearest_interp, to_tensor=True)
            for key, orig in zip(self.keys, self.orig_keys)
        ]

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key, inverter in zip(self.keys, self.inverters):
            if key not in d:
                if self.allow_missing_keys:
                    continue
                raise KeyError(f"InvertArgmaxd: no '{key}' in the data")
            pred = d[key]
            best = best_value = None
            for channel in range(pred.shape[0]):
                inverted = inverter({**d, key: pred[channel : channel + 1]})[key]
                if best is None:
                    label_dtype = torch.uint8 if pred.shape[0] <= 256 else torch.int64
                    best, best_value = torch.zeros_like(inverted, dtype=label_dtype), inverted.clone()
                    continue
                better = inverted > best_value
                best[better] = channel
                best_value = torch.where(better, inverted, best_value)
                del inverted, better
            best = best.to(torch.float32)  # AsDiscreted(argmax=True) gives float labels too
            d[key] = best
        return d


class SingleRegiond(MapTransform):
    """Keep only the largest connected region of a binary label map and fill its holes (ISIC's rule: one
    contiguous lesion without holes). Faces connect (4-neighbourhood in 2D, 6 in 3D); scipy, so no scikit-image.

    Args:
        keys: label maps, ``(1, *spatial)`` or ``(*spatial)``, foreground = ``foreground``.
        foreground: the label value of the region.
    """

    def __init__(self, keys: KeysCollection = "pred", foreground: int = 1, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.foreground = int(foreground)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        from scipy import ndimage

        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            array = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
            channel_first = array.ndim >= 3 and array.shape[0] == 1
            mask = (array[0] if channel_first else array) == self.foreground
            components, count = ndimage.label(mask)
            if count > 1:
                mask = components == 1 + int(np.argmax(np.bincount(components.ravel())[1:]))
            mask = ndimage.binary_fill_holes(mask)
            spatial = array[0] if channel_first else array
            result = np.where(mask, self.foreground, np.where(spatial == self.foreground, 0, spatial)).astype(array.dtype)
            result = result[None] if channel_first else result
            if isinstance(label, torch.Tensor):
                out = label.clone()
                out.copy_(torch.as_tensor(result))
                d[key] = out
            else:
                d[key] = result
        return d


def _suffix(name: str) -> str:
    """The format extension of a file name: ``.nii.gz`` / ``.nrrd.gz`` style double suffixes included."""
    suffixes = Path(name).suffixes
    if len(suffixes) >= 2 and suffixes[-1].lower() == ".gz":
        return "".join(suffixes[-2:])
    return suffixes[-1] if suffixes else ""


def _resolve_writer(writer):
    if isinstance(writer, str):
        import monai.data

        found = getattr(monai.data, writer, None)
        if found is None:
            from pydoc import locate

            found = locate(writer)
        if found is None:
            raise ValueError(f"unknown image writer '{writer}' (a monai.data writer name or a dotted path)")
        return found
    return writer


class SaveLabelMapd(MapTransform):
    """Write each label map to the path in ``data[output_key]``, atomically, in the space of its input.

    For the per-item dicts of a ``SupervisedEvaluator``'s postprocessing (decollated; a batch of one is accepted
    too): ``data[key]`` is the ``(1, X, Y, Z)`` or ``(X, Y, Z)`` label MetaTensor after ``Invertd``, whose
    ``meta["affine"]`` is the input's affine (what MONAI's ``SaveImage(resample=False)`` writes as well). The file
    holds ``output_dtype`` values with the input's shape (channel squeezed) and that affine (NIfTI qform and sform,
    code 1, so nibabel reads the same affine back). It is written as ``.<name>.tmp-<pid><ext>`` in the target folder (:func:`atomic_output`)
    and moved to its name with ``os.replace``; on any error the temporary file is removed and the error re-raised,
    so a label map at its final name is always complete. ``meta["saved_to"]`` receives the path.

    Args:
        keys: label map keys.
        output_key: key (one per key, or one for a single key) of the target path, from
            :func:`inference_datalist`.
        output_dtype: dtype written (values outside its range raise).
        writer: a MONAI image writer class or its name in ``monai.data`` ("NibabelWriter", "ITKWriter") or a
            dotted path.
        allow_missing_keys: do not fail on a missing key.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        output_key: str | Sequence[str] = "output",
        output_dtype: DtypeLike = np.uint8,
        writer: str | type = "NibabelWriter",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        output_keys = ensure_tuple(output_key)
        if len(output_keys) == 1:
            output_keys = ensure_tuple_rep(output_keys[0], len(self.keys))
        if len(output_keys) != len(self.keys) or (len(self.keys) > 1 and len(set(output_keys)) < len(self.keys)):
            raise ValueError(f"SaveLabelMapd needs one output key per key, got keys {self.keys} and {output_key}")
        self.output_keys = output_keys
        self.output_dtype = np.dtype(output_dtype) if output_dtype is not None else None
        self.writer = writer

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key, out_key in self.key_iterator(d, self.output_keys):
            target = d[out_key]
            if isinstance(target, (list, tuple)):
                if len(target) != 1:
                    raise ValueError(f"SaveLabelMapd writes one item at a time, got {len(target)} paths in '{out_key}'")
                target = target[0]
            self.write(d[key], target, d.get(f"{key}_meta_dict"))
        return d

    def write(self, label, path: str | os.PathLike, meta: Mapping | None = None) -> str:
        """Write one label map to ``path`` atomically; returns the path."""
        array, affine, spatial_shape = self._label_and_affine(label, meta)
        path = Path(path)
        source = (getattr(label, "meta", None) or meta or {}).get("filename_or_obj", "label map")
        if spatial_shape is not None and tuple(spatial_shape) != array.shape:
            raise ValueError(
                f"{source}: the label map has shape {array.shape} but its input had {tuple(spatial_shape)} "
                "(invert the preprocessing with Invertd before SaveLabelMapd)"
            )
        array = self._cast(array, source)
        with atomic_output(path, suffix=_suffix(path.name)) as tmp:
            writer = _resolve_writer(self.writer)(output_dtype=self.output_dtype)
            writer.set_data_array(array, channel_dim=None)
            if isinstance(writer, ImageWriter):
                # what set_metadata(resample=False) would leave, set directly: MONAI 1.6.1's set_metadata takes a
                # channel-less array for 2D and fails on affines whose first two axes leave the x-y plane (sagittal
                # or coronal storage); this also keeps a trailing 1-long axis (a one-slice series) that
                # set_data_array squeezes
                writer.data_obj, writer.affine = array, affine
            else:
                writer.set_metadata({"affine": affine, "original_affine": affine, "spatial_shape": array.shape}, resample=False)
            writer.write(str(tmp), verbose=False)
        if hasattr(label, "meta"):
            label.meta["saved_to"] = str(path)
        logger.debug("%s: label map written to %s", source, path)
        return str(path)

    @staticmethod
    def _label_and_affine(label, meta: Mapping | None):
        meta = dict(getattr(label, "meta", None) or meta or {})
        affine = meta.get("affine")
        if affine is None:
            raise ValueError("SaveLabelMapd: the label map carries no affine (a MetaTensor after Invertd is expected)")
        affine = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
        array = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
        if affine.ndim == 3:  # a batch of one that was not decollated
            if affine.shape[0] != 1:
                raise ValueError(f"SaveLabelMapd writes one item at a time, got a batch of {affine.shape[0]}")
            affine = affine[0]
            if array.ndim == 5:
                array = array[0]
        if array.ndim == 4:
            if array.shape[0] != 1:
                raise ValueError(f"expected a one-channel label map, got shape {array.shape} (apply AsDiscreted argmax)")
            array = array[0]
        if array.ndim != 3:
            raise ValueError(f"expected a (1, X, Y, Z) or (X, Y, Z) label map, got shape {array.shape}")
        shape = meta.get("spatial_shape")
        if shape is not None:
            shape = np.asarray(shape.detach().cpu() if isinstance(shape, torch.Tensor) else shape).reshape(-1)
            shape = tuple(int(s) for s in shape) if shape.size == 3 else None
        return array, affine, shape

    def _cast(self, array: np.ndarray, source) -> np.ndarray:
        dtype = self.output_dtype
        if dtype is None:
            return array
        if np.issubdtype(dtype, np.integer):
            if array.dtype.kind == "f":
                if not np.isfinite(array).all():
                    raise ValueError(f"{source}: the label map holds non-finite values")
                array = np.rint(array)
            info = np.iinfo(dtype)
            if array.size and (array.min() < info.min or array.max() > info.max):
                raise ValueError(
                    f"{source}: label values {array.min():g}..{array.max():g} do not fit {dtype.name}"
                )
        return array.astype(dtype, copy=False)


def require_checkpoint(path: str | os.PathLike) -> str:
    """``path`` if it is a file, else a WeightsError telling the user how to get weights."""
    if not Path(path).is_file():
        from medattn_networks.engine.checkpoints import missing_weights_message

        raise WeightsError(missing_weights_message(path))
    return str(path)


def with_weights(network: torch.nn.Module, path: str | os.PathLike | None, device: str | torch.device = "cpu"):
    """``network`` with the state dict at ``path`` loaded (strict), or unchanged when ``path`` is None.

    Used by train.json's ``load_pretrain`` to fine-tune from a checkpoint; the weights are mapped to ``device``. A
    missing file or weights that do not fit raise a WeightsError naming the file and the first mismatching key.
    """
    if path is None:
        return network
    from medattn_networks.engine.checkpoints import load_weights

    return load_weights(network, path, device)
