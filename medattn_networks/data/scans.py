"""Input scans of an inference folder beyond NIfTI: NRRD, MetaImage and DICOM series, their header-only checks,
their output names, one reader for all of them and a sanity transform applied right after loading.

Kinds of input (:func:`scan_kind`), found by :func:`list_scans` directly in a folder (sorted by name; hidden
entries, other files and other sub-folders are ignored):

- ``nifti``: ``.nii`` / ``.nii.gz`` files (checked by :func:`medattn_networks.data.check_nifti`);
- ``itk``: ``.nrrd`` / ``.nhdr`` (NRRD) and ``.mha`` / ``.mhd`` (MetaImage) files;
- ``dicom``: a sub-folder whose files are DICOM (``DICM`` at byte 128 of one of its first :data:`DICOM_PROBE`
  files, whatever their extension), holding exactly one series (nested folders are not searched).

Every check (:func:`check_scan`) reads headers only and returns a one-line problem or None. MONAI's
``LoadImaged(keys, ensure_channel_first=True, image_only=True)`` reads all these kinds with its default reader
choice when only MONAI's required readers are installed (nibabel for NIfTI, ITK for the rest); :class:`ScanReader`
pins that choice whatever optional readers (pynrrd, pydicom, nvimgcodec, ``MONAI_DICOM_READER``) are installed.
"""

from __future__ import annotations

import logging
import os
import re
import zlib
from pathlib import Path
from typing import Hashable, Iterable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import ImageReader, ITKReader, NibabelReader
from monai.transforms import MapTransform
from monai.utils import ensure_tuple

from medattn_networks.data.files import (
    MAX_VOXELS,
    NIFTI_SUFFIXES,
    RGB_PROBLEM,
    check_nifti,
    gzip_payload_size,
    nifti_stem,
    truncation_problem,
    voxel_limit_problem,
)
from medattn_networks.data.transforms import source_name

__all__ = [
    "ITK_SUFFIXES",
    "SCAN_SUFFIXES",
    "DICOM_PROBE",
    "scan_kind",
    "scan_stem",
    "is_dicom_file",
    "is_dicom_dir",
    "list_scans",
    "dicom_series",
    "check_itk_image",
    "check_dicom_series",
    "check_scan",
    "output_names",
    "ScanReader",
    "InputSanityd",
]

logger = logging.getLogger("medattn.inputs")

ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
SCAN_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
# 2D photographs (ISIC dermoscopy): not scans, but their label maps are named the same way
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DICOM_PROBE = 4  # files of a sub-folder looked at for the DICM magic
_HEADER_BYTES = 1 << 16  # most of a NRRD / MetaImage text header read to find where its raw data lies


# --------------------------------------------------------------------------------------------- kinds and names


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file with the DICOM ``DICM`` magic at byte 128 (whatever its name)."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_dir(path: str | os.PathLike, probe: int = DICOM_PROBE) -> bool:
    """Whether one of the first ``probe`` visible files (sorted by name) directly in folder ``path`` is DICOM."""
    folder = Path(path)
    try:
        files = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file())
    except OSError:
        return False
    return any(is_dicom_file(p) for p in files[:probe])


def scan_kind(path: str | os.PathLike) -> str | None:
    """``"nifti"``, ``"itk"`` (NRRD / MetaImage), ``"dicom"`` (series folder) or None (not an input)."""
    path = Path(path)
    name = path.name.lower()
    if name.startswith("."):
        return None
    if path.is_dir():
        return "dicom" if is_dicom_dir(path) else None
    if not path.is_file():
        return None
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(ITK_SUFFIXES):
        return "itk"
    return None


def scan_stem(path: str | os.PathLike) -> str:
    """Name of an input without its format suffix (``case.nii.gz`` → ``case``; a DICOM folder → its name)."""
    path = Path(path)
    name = path.name
    lower = name.lower()
    for suffix in SCAN_SUFFIXES + IMAGE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return nifti_stem(name)


def list_scans(folder: str | os.PathLike) -> list[Path]:
    """The inputs directly in ``folder`` (files and DICOM series folders), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if scan_kind(p) is not None)


def _normalize_ext(ext: str) -> str:
    return ext if not ext or ext.startswith(".") else f".{ext}"


def output_names(inputs: Sequence[str | os.PathLike], postfix: str = "seg", ext: str = ".nii.gz") -> list[str]:
    """The label-map file name of each input, ``<stem>_<postfix><ext>``, distinct for all inputs.

    Inputs are taken in the given order (pass them sorted for names that do not change between runs). When two
    inputs share a stem (``case.nii`` and ``case.nii.gz``, ``case.nrrd`` and a ``case/`` DICOM folder; compared
    without regard to case, as on case-insensitive disks) the first keeps it and each later one gets the first free
    ``<stem>_<k>`` (k = 2, 3, ...; never a stem another input has), with a warning naming both inputs.
    """
    ext = _normalize_ext(ext)
    tail = f"_{postfix}{ext}" if postfix else ext
    stems = [scan_stem(p) for p in inputs]
    taken = {s.casefold() for s in stems}  # natural stems are reserved, so a renamed one never takes another's
    used: dict[str, str] = {}
    names = []
    for path, stem in zip(inputs, stems):
        chosen = stem
        if stem.casefold() in used:
            k = 2
            while f"{stem}_{k}".casefold() in taken or f"{stem}_{k}".casefold() in used:
                k += 1
            chosen = f"{stem}_{k}"
            logger.warning(
                "%s and %s would both be written to %s; %s is written to %s",
                used[stem.casefold()], path, f"{stem}{tail}", path, f"{chosen}{tail}",
            )
        used[chosen.casefold()] = str(path)
        names.append(f"{chosen}{tail}")
    return names


# --------------------------------------------------------------------------------------------- header checks


def _shape_problem(shape: tuple[int, ...], components: int, pixel: str, num_channels, spatial_dims, max_voxels):
    if components != 1 or pixel != "scalar":
        return RGB_PROBLEM
    if len(shape) != spatial_dims or any(s < 1 for s in shape):
        return f"expected a {spatial_dims}D image, found shape {shape}"
    if num_channels is not None and num_channels != 1:
        return f"expected {num_channels} channel(s), found 1 (shape {shape})"
    return voxel_limit_problem(int(np.prod(shape, dtype=object)), max_voxels)


def _raw_payload(path: Path) -> tuple[Path, int, str] | None:
    """``(data file, offset, encoding)`` of a NRRD / MetaImage file whose voxels lie in one file, read from its
    text header; None when the header names several data files or a layout this check does not follow."""
    with open(path, "rb") as f:
        head = f.read(_HEADER_BYTES)
    if path.suffix.lower() in (".mha", ".mhd"):
        fields, position = {}, 0
        for line in head.splitlines(keepends=True):
            position += len(line)
            key, _, value = line.decode("latin-1").partition("=")
            fields[key.strip()] = value.strip()
            if key.strip() == "ElementDataFile":
                break
        else:
            return None
        data = fields["ElementDataFile"]
        encoding = "zlib" if fields.get("CompressedData", "False").lower() == "true" else "raw"
        if data.upper() == "LOCAL":
            return path, position, encoding
        if data.startswith("LIST") or " " in data or "%" in data:
            return None
        skip = int(fields.get("HeaderSize", "0") or 0)
        return (path.parent / data, skip, encoding) if skip >= 0 else None
    end = head.find(b"\n\n")
    size = 2
    if end < 0:
        end, size = head.find(b"\r\n\r\n"), 4
    fields = {}
    for line in head[: end if end >= 0 else len(head)].decode("latin-1").splitlines()[1:]:
        if line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.lstrip("=").strip()
    encoding = fields.get("encoding", "raw").lower()
    encoding = "gzip" if encoding in ("gzip", "gz") else encoding
    if any(int(fields.get(k, "0") or 0) != 0 for k in ("byte skip", "byteskip", "line skip", "lineskip")):
        return None
    data = fields.get("data file", fields.get("datafile"))
    if data is None:
        return (path, end + size, encoding) if end >= 0 else None
    if data.startswith("LIST") or " " in data or "%" in data:
        return None
    return path.parent / data, 0, encoding


def _zlib_payload_size(path: Path, needed: int, offset: int = 0, chunk: int = 1 << 22) -> int:
    """Bytes a zlib (or gzip) stream starting at ``offset`` holds, inflated only up to ``needed``."""
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip header
    total = 0
    with open(path, "rb") as f:
        f.seek(offset)
        while total < needed and not inflater.eof:
            data = inflater.unconsumed_tail or f.read(1 << 16)
            if not data:
                break
            total += len(inflater.decompress(data, min(chunk, needed - total)))
    return total


def _payload_problem(path: Path, expected: int) -> str | None:
    """Whether the raw, gzip- or zlib-encoded voxel data of a NRRD / MetaImage file is all there (compressed
    data inflated chunk by chunk, only up to ``expected`` bytes)."""
    try:
        payload = _raw_payload(path)
    except (OSError, ValueError):
        return None  # an unusual header: ITK read it, the loader will tell
    if payload is None:
        return None
    data, offset, encoding = payload
    if not data.is_file():
        return f"the data file '{data.name}' named in its header is missing"
    try:
        if encoding == "raw":
            available = data.stat().st_size - offset
        elif encoding == "gzip":
            available = gzip_payload_size(data, expected, offset=offset)
        elif encoding == "zlib":
            available = _zlib_payload_size(data, expected, offset=offset)
        else:
            return None
    except (OSError, EOFError, zlib.error) as e:
        return f"damaged or truncated {encoding} data ({type(e).__name__}: {e})"
    return truncation_problem(expected, available)


def check_itk_image(
    path: str | os.PathLike, num_channels: int | None = None, spatial_dims: int = 3, max_voxels: int | None = MAX_VOXELS
) -> str | None:
    """The problem with one NRRD / MetaImage file (one line), or None.

    Reads the image information only (``ImageIO.ReadImageInformation``, no voxel data): readable header; scalar
    pixels (RGB/RGBA/vector/complex pixels give :data:`RGB_PROBLEM`); exactly ``spatial_dims`` axes (one
    channel, so ``num_channels`` other than 1 is a problem); at most ``max_voxels`` voxels. Then, for raw or gzip
    encoded data, whether the data file holds the bytes the header promises (gzip inflated only that far).
    """
    import itk

    path = Path(path)
    try:
        io = itk.ImageIOFactory.CreateImageIO(str(path), itk.CommonEnums.IOFileMode_ReadMode)
        if io is None:
            return "not a readable NRRD or MetaImage file (no ITK reader accepts it)"
        io.SetFileName(str(path))
        io.ReadImageInformation()
    except Exception as e:  # ITK raises RuntimeError with a multi-line message
        return f"not a readable NRRD or MetaImage file ({type(e).__name__}: {_first_line(e)})"
    shape = tuple(int(io.GetDimensions(i)) for i in range(io.GetNumberOfDimensions()))
    pixel = str(io.GetPixelTypeAsString(io.GetPixelType()))
    problem = _shape_problem(shape, int(io.GetNumberOfComponents()), pixel, num_channels, spatial_dims, max_voxels)
    return problem or _payload_problem(path, int(io.GetImageSizeInBytes()))


def _first_line(e: BaseException) -> str:
    """The telling line of an ITK exception message (not its source location; NRRD's innermost complaint)."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    lines = [line for line in lines if not re.search(r"\.(cxx|hxx|cpp|h):\d+:?$", line)]
    nrrd = [line for line in lines if line.startswith("[nrrd]")]
    if nrrd:
        return nrrd[-1].removeprefix("[nrrd]").strip()
    described = [line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("description:")]
    text = described[0] if described else lines[0] if lines else ""
    return re.sub(r"^itk::ERROR:\s*\w+\(0x[0-9a-fA-F]+\):\s*", "", text)


def dicom_series(folder: str | os.PathLike) -> dict[str, list[str]]:
    """The DICOM series directly in ``folder`` (identifier → sorted slice files), grouped exactly as MONAI's
    ``ITKReader`` groups them (``itk.GDCMSeriesFileNames`` with series details and the series date)."""
    import itk

    names = itk.GDCMSeriesFileNames.New()
    names.SetUseSeriesDetails(True)
    names.AddSeriesRestriction("0008|0021")  # Series Date, as in monai.data.ITKReader
    names.SetGlobalWarningDisplay(False)
    names.SetDirectory(str(folder))
    return {str(uid): [str(f) for f in names.GetFileNames(uid)] for uid in names.GetSeriesUIDs()}


def check_dicom_series(
    folder: str | os.PathLike, num_channels: int | None = None, spatial_dims: int = 3, max_voxels: int | None = MAX_VOXELS
) -> str | None:
    """The problem with one DICOM series folder (one line), or None.

    One series per folder: several series (by SeriesInstanceUID and the details ITK groups by) are a problem naming
    their count. Then the first slice's image information only: scalar pixels, ``spatial_dims`` axes (columns ×
    rows × slices), one channel, at most ``max_voxels`` voxels.
    """
    import itk

    try:
        series = dicom_series(folder)
    except Exception as e:
        return f"not a readable DICOM series ({type(e).__name__}: {_first_line(e)})"
    if not series:
        return "no readable DICOM image series in the folder"
    if len(series) > 1:
        return f"{len(series)} DICOM series in one folder (one series per folder is supported)"
    files = next(iter(series.values()))
    try:
        io = itk.GDCMImageIO.New()
        io.SetFileName(files[0])
        io.ReadImageInformation()
    except Exception as e:
        return f"not a readable DICOM file {Path(files[0]).name} ({type(e).__name__}: {_first_line(e)})"
    dims = [int(io.GetDimensions(i)) for i in range(io.GetNumberOfDimensions())]
    frames = dims[2] if len(dims) > 2 else 1
    shape = (dims[0], dims[1] if len(dims) > 1 else 1, frames * len(files))
    pixel = str(io.GetPixelTypeAsString(io.GetPixelType()))
    return _shape_problem(shape, int(io.GetNumberOfComponents()), pixel, num_channels, spatial_dims, max_voxels)


def check_scan(
    path: str | os.PathLike, num_channels: int | None = None, spatial_dims: int = 3, max_voxels: int | None = MAX_VOXELS
) -> str | None:
    """The problem with one input of any kind (:func:`scan_kind`), one line, or None when it can be segmented."""
    kind = scan_kind(path)
    if kind == "nifti":
        return check_nifti(path, num_channels, spatial_dims, max_voxels=max_voxels)
    if kind == "itk":
        return check_itk_image(path, num_channels, spatial_dims, max_voxels)
    if kind == "dicom":
        return check_dicom_series(path, num_channels, spatial_dims, max_voxels)
    return "not a NIfTI, NRRD or MetaImage file nor a DICOM series folder"


# --------------------------------------------------------------------------------------------- reader


class _ReadScan:
    """What :meth:`ScanReader.read` returns: the backend object and the reader that made it."""

    def __init__(self, reader: ImageReader, obj) -> None:
        self.reader, self.obj = reader, obj


class ScanReader(ImageReader):
    """MONAI reader for every input kind: NIfTI through ``NibabelReader``, NRRD / MetaImage files and DICOM series
    folders through ``ITKReader`` (affines in RAS either way), whichever optional readers are installed.

    Use it in ``LoadImaged(keys, reader="medattn_networks.data.ScanReader", ensure_channel_first=True,
    image_only=True)``. Several files (channels stacked, as for BraTS) must be of one kind.

    Args:
        nibabel_kwargs: arguments of the ``NibabelReader``.
        itk_kwargs: arguments of the ``ITKReader``.
    """

    def __init__(self, nibabel_kwargs: dict | None = None, itk_kwargs: dict | None = None, **kwargs) -> None:
        super().__init__()
        self.nibabel = NibabelReader(**(nibabel_kwargs or {}))
        self.itk = ITKReader(**(itk_kwargs or {}))

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        return all(Path(f).is_dir() or str(f).lower().endswith(SCAN_SUFFIXES) for f in ensure_tuple(filename))

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs):
        names = ensure_tuple(data)
        nifti = [str(n).lower().endswith(NIFTI_SUFFIXES) and not Path(n).is_dir() for n in names]
        if any(nifti) and not all(nifti):
            raise ValueError(f"ScanReader: files to stack must be all NIfTI or all ITK formats, got {list(names)}")
        reader = self.nibabel if all(nifti) else self.itk
        return _ReadScan(reader, reader.read(data, **kwargs))

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        if not isinstance(img, _ReadScan):
            raise TypeError(f"ScanReader.get_data expects what ScanReader.read returned, got {type(img).__name__}")
        return img.reader.get_data(img.obj)


# --------------------------------------------------------------------------------------------- sanity transform


def _ras_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel spacing per RAS axis (R-L, A-P, S-I) of a 3D affine, whatever the storage order of the axes."""
    import nibabel as nib

    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    try:
        ornt = nib.orientations.io_orientation(affine)
    except Exception:
        return spacing
    if np.isnan(ornt).any():
        return spacing
    ras = np.empty(3)
    ras[ornt[:, 0].astype(int)] = spacing
    return ras


def _fmt(values: Iterable) -> str:
    return "(" + ", ".join("-" if v is None else f"{float(v):.3g}" for v in values) + ")"


class InputSanityd(MapTransform):
    """Warn about inputs a network cannot segment meaningfully; apply right after ``LoadImaged``.

    For each key (a channel-first MetaTensor):

    - non-finite voxels (NaN, ±Inf) are counted and replaced by the smallest finite value (0 when none is finite);
    - a constant volume gets "constant volume: its segmentation is meaningless" (a constant channel of a
      multi-channel image gets "channel k is constant");
    - ``expected_spacing`` (mm, in RAS axis order as after ``Orientationd(axcodes="RAS")``; None entries are not
      checked; a number applies to all axes): a warning when an axis' spacing (from the affine) is more than
      ``spacing_tolerance`` times larger or smaller;
    - ``intensity_range`` ``[lo, hi]`` (the intensities the bundle expects, e.g. its ScaleIntensityRange window):
      with ``w = hi - lo`` and ``p1``, ``p99`` the 1st and 99th percentiles of the image (estimated from at most
      2**20 evenly strided voxels), a warning when ``p99 < lo - w`` or ``p1 > hi + w`` (the bulk of the image lies
      more than a range width outside it), or when ``p99 - p1`` is above ``20 * w`` or, being non-zero, below
      ``w / 20`` (intensities on another scale, e.g. a [0, 1] normalised image for a HU range).

    Each warning is logged on logger ``medattn.inputs`` as ``<file>: <warning>`` (file from the meta's
    ``filename_or_obj``) and collected in ``data[f"warnings_{key}"]`` (a list of strings, extended when present;
    not ``f"{key}_..."``: MONAI's ``Spacingd`` updates every ``f"{key}_*"`` entry as a meta dict).
    The dtype of the image is kept.

    Args:
        keys: image keys.
        expected_spacing: expected voxel spacing in mm (RAS order) or None.
        spacing_tolerance: allowed factor between actual and expected spacing (> 1).
        intensity_range: ``[lo, hi]`` or None.
        allow_missing_keys: do not fail on a missing key.
    """

    SCALE_FACTOR = 20.0
    SAMPLE = 1 << 20

    def __init__(
        self,
        keys: KeysCollection,
        expected_spacing: float | Sequence[float | None] | None = None,
        spacing_tolerance: float = 2.0,
        intensity_range: Sequence[float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if spacing_tolerance <= 1:
            raise ValueError(f"spacing_tolerance must be > 1, got {spacing_tolerance}")
        if intensity_range is not None:
            if len(intensity_range) != 2 or not float(intensity_range[1]) > float(intensity_range[0]):
                raise ValueError(f"intensity_range must be [lo, hi] with lo < hi, got {intensity_range}")
            intensity_range = (float(intensity_range[0]), float(intensity_range[1]))
        if expected_spacing is not None and not isinstance(expected_spacing, Sequence):
            expected_spacing = (expected_spacing,) * 3
        if expected_spacing is not None and len(expected_spacing) != 3:
            raise ValueError(f"expected_spacing must be a number or 3 values (RAS order), got {expected_spacing}")
        self.expected_spacing = expected_spacing
        self.spacing_tolerance = float(spacing_tolerance)
        self.intensity_range = intensity_range

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            found: list[str] = []
            d[key] = self._check(d[key], found)
            name = source_name(d, key)
            for message in found:
                logger.warning("%s: %s", name, message)
            d[f"warnings_{key}"] = list(d.get(f"warnings_{key}") or []) + found
        return d

    def _check(self, img, found: list[str]):
        if isinstance(img, np.ndarray):
            img = torch.from_numpy(np.array(img))  # a copy, so the caller's array is left alone
            return self._check(img, found).numpy()
        values = img.as_tensor() if hasattr(img, "as_tensor") else img
        if values.is_floating_point():
            bad = ~torch.isfinite(values)
            count = int(bad.sum())
            if count:
                finite = values[~bad]
                fill = float(finite.min()) if finite.numel() else 0.0
                img = img.clone()
                values = img.as_tensor() if hasattr(img, "as_tensor") else img
                values.masked_fill_(bad, fill)
                found.append(f"{count} non-finite voxel(s) (NaN/Inf) replaced by {fill:g}")
        if values.numel() == 0:
            return img
        constant = bool(values.min() == values.max())
        if constant:
            found.append("constant volume: its segmentation is meaningless")
        elif values.ndim > 1 and values.shape[0] > 1:
            flat = values.reshape(values.shape[0], -1)
            for c in torch.nonzero(flat.amin(1) == flat.amax(1)).flatten().tolist():
                found.append(f"channel {c} is constant")
        affine = getattr(img, "affine", None)
        if self.expected_spacing is not None and affine is not None:
            self._spacing(np.asarray(affine, dtype=np.float64), found)
        if self.intensity_range is not None and not constant:
            self._intensity(values, found)
        return img

    def _spacing(self, affine: np.ndarray, found: list[str]) -> None:
        if affine.shape != (4, 4):
            return
        spacing = _ras_spacing(affine)
        expected = list(self.expected_spacing)
        tol = self.spacing_tolerance
        axes = [
            "RAS"[i]
            for i, (s, e) in enumerate(zip(spacing, expected))
            if e is not None and (s > e * tol or s < e / tol)
        ]
        if axes:
            found.append(
                f"voxel spacing {_fmt(spacing)} mm (RAS order) differs from the expected {_fmt(expected)} mm "
                f"by more than x{tol:g} on axis {', '.join(axes)}"
            )

    def _intensity(self, values: torch.Tensor, found: list[str]) -> None:
        flat = values.reshape(-1)
        sample = flat[:: max(1, flat.numel() // self.SAMPLE)].to(torch.float64)
        p1, p99 = (float(q) for q in torch.quantile(sample, torch.tensor([0.01, 0.99], dtype=torch.float64)))
        lo, hi = self.intensity_range
        width = hi - lo
        spread = p99 - p1
        if p99 < lo - width or p1 > hi + width:
            why = "lies far outside"
        elif spread > self.SCALE_FACTOR * width or 0 < spread < width / self.SCALE_FACTOR:
            why = "is on another scale than"
        else:
            return
        found.append(
            f"intensities look foreign: 1st-99th percentile [{p1:.4g}, {p99:.4g}] {why} the expected range "
            f"[{lo:g}, {hi:g}]"
        )
