"""Sliding-window inference for networks that also take the window's position in the volume (FINE).

A position-aware network is called as ``network(window, position)`` with ``position`` a (B, spatial_dims) float
tensor: each window's centre minus the centre of the (padded) volume, in voxels of the array the inferer sees, in
array axis order. The training loader hands the same quantity per crop (:class:`CropPositiond`).

Two window placements:

* ``"monai"``: MONAI's ``SlidingWindowInferer`` with ``with_coord=True`` (intervals ``roi·(1 − overlap)``, the
  last window pulled back inside the volume);
* ``"nnunet"``: nnU-Net's placement (``step`` a fraction of the window, ``ceil((size − roi) / (roi·step)) + 1``
  windows spread evenly from the first voxel to the last), stitched here with MONAI's importance maps.

Both pad a volume smaller than the window symmetrically (the lower half of the difference first), as nnU-Net and
MONAI do, and measure positions in that padded array. Mirroring test-time augmentation (``mirror_axes``) runs
every flip combination of each window with the same, unmirrored position and averages the results (after a
softmax with ``softmax=True``, nnU-Net's rule).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from monai.data.utils import compute_importance_map
from monai.inferers import SlidingWindowInferer
from monai.transforms import MapTransform
from monai.utils import TraceKeys, convert_to_dst_type, ensure_tuple_rep

__all__ = [
    "nnunet_window_starts",
    "window_positions",
    "MirroredPredictor",
    "PositionSlidingWindowInferer",
    "crop_position",
    "CropPositiond",
]


def nnunet_window_starts(size: int, roi: int, step: float = 0.5) -> list[int]:
    """nnU-Net's window starts along one axis: as few windows as ``step`` allows, evenly spread (rounded)."""
    if size < roi:
        raise ValueError(f"axis of size {size} is smaller than the window {roi}: pad first")
    if not 0 < step <= 1:
        raise ValueError(f"step must be in (0, 1], got {step}")
    count = int(math.ceil((size - roi) / (roi * step))) + 1
    if count == 1:
        return [0]
    spacing = (size - roi) / (count - 1)
    return [int(round(spacing * i)) for i in range(count)]


def window_positions(starts: Sequence[Sequence[int]], roi_size: Sequence[int], padded_size: Sequence[int]) -> torch.Tensor:
    """(N, d) positions of windows starting at ``starts``: ``start + roi // 2 − padded_size // 2`` per axis."""
    offset = torch.tensor([r // 2 - p // 2 for r, p in zip(roi_size, padded_size)], dtype=torch.float32)
    return torch.as_tensor(starts, dtype=torch.float32).reshape(-1, len(roi_size)) + offset


class MirroredPredictor:
    """``network(x, position)`` averaged over every flip of ``mirror_axes`` (spatial axes), position unmirrored.

    Args:
        network: callable (x, position) → (B, K, *spatial) (a list/tuple output: its first element).
        mirror_axes: spatial axes (0-based) to mirror; () runs the network once.
        softmax: average softmax probabilities (nnU-Net) instead of the raw outputs.
    """

    def __init__(self, network: Callable, mirror_axes: Sequence[int] = (), softmax: bool = False) -> None:
        self.network = network
        self.mirror_axes = tuple(int(a) for a in mirror_axes)
        self.softmax = softmax

    def __call__(self, x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        flips = [c for n in range(len(self.mirror_axes) + 1) for c in itertools.combinations(self.mirror_axes, n)]
        total = None
        for axes in flips:
            dims = [a + 2 for a in axes]
            out = self.network(torch.flip(x, dims) if dims else x, position)
            out = out[0] if isinstance(out, (list, tuple)) else out
            out = out.softmax(1) if self.softmax else out
            out = torch.flip(out, dims) if dims else out
            total = out if total is None else total + out
        return total / len(flips)


class PositionSlidingWindowInferer(SlidingWindowInferer):
    """MONAI sliding window that hands each window's position to the network (``network(window, position)``).

    Args:
        roi_size: window size (the network's fixed crop).
        sw_batch_size: windows per network call.
        overlap: ``"monai"`` placement: overlap fraction of neighbouring windows.
        mode: importance weighting, ``"gaussian"`` (nnU-Net) or ``"constant"``.
        sigma_scale: Gaussian sigma as a fraction of the window (nnU-Net: 1/8).
        placement: ``"monai"`` or ``"nnunet"``.
        step: ``"nnunet"`` placement: window step as a fraction of the window (nnU-Net: 0.5).
        mirror_axes: spatial axes of mirroring TTA (nnU-Net 3D: (0, 1, 2)); () for none.
        softmax: return averaged softmax probabilities instead of network outputs.
        sw_device: device of the network calls (default: the input's).
        device: device of the stitched output (e.g. CPU for whole CTs).
        kwargs: further ``SlidingWindowInferer`` arguments (``padding_mode``, ``cval``, ``progress``).
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int,
        sw_batch_size: int = 1,
        overlap: float = 0.5,
        mode: str = "gaussian",
        sigma_scale: float = 0.125,
        placement: str = "monai",
        step: float = 0.5,
        mirror_axes: Sequence[int] = (),
        softmax: bool = False,
        sw_device: torch.device | str | None = None,
        device: torch.device | str | None = None,
        **kwargs: Any,
    ) -> None:
        if placement not in ("monai", "nnunet"):
            raise ValueError(f"placement must be 'monai' or 'nnunet', got '{placement}'")
        kwargs.pop("with_coord", None)
        super().__init__(
            roi_size, sw_batch_size, overlap, mode, sigma_scale, sw_device=sw_device, device=device, with_coord=True, **kwargs
        )
        self.placement, self.step = placement, step
        self.mirror_axes, self.softmax = tuple(mirror_axes), softmax

    def _roi(self, inputs: torch.Tensor) -> tuple[int, ...]:
        roi = ensure_tuple_rep(self.roi_size, inputs.ndim - 2)
        return tuple(int(inputs.shape[2 + i]) if r is None or r <= 0 else int(r) for i, r in enumerate(roi))

    def __call__(self, inputs: torch.Tensor, network: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        roi = self._roi(inputs)
        padded = tuple(max(s, r) for s, r in zip(inputs.shape[2:], roi))
        predictor = MirroredPredictor(network, self.mirror_axes, self.softmax)
        if self.placement == "nnunet":
            return self._nnunet(inputs, predictor, roi, padded)

        def with_position(window: torch.Tensor, slices: list) -> torch.Tensor:
            starts = [[s.start for s in item[2:]] for item in slices]
            return predictor(window, window_positions(starts, roi, padded).to(window.device))

        return super().__call__(inputs, with_position, *args, **kwargs)

    def _nnunet(
        self, inputs: torch.Tensor, predictor: MirroredPredictor, roi: tuple[int, ...], padded: tuple[int, ...]
    ) -> torch.Tensor:
        spatial = inputs.shape[2:]
        pad = []
        for s, p in reversed(list(zip(spatial, padded))):
            pad += [(p - s) // 2, p - s - (p - s) // 2]
        x = F.pad(torch.as_tensor(inputs), pad, mode=self.padding_mode, value=self.cval) if any(pad) else inputs
        x = torch.as_tensor(x)
        sw_device = torch.device(self.sw_device) if self.sw_device is not None else x.device
        out_device = torch.device(self.device) if self.device is not None else x.device
        weight = compute_importance_map(roi, mode=self.mode, sigma_scale=self.sigma_scale, device=sw_device)
        starts = list(itertools.product(*(nnunet_window_starts(p, r, self.step) for p, r in zip(padded, roi))))
        positions = window_positions(starts, roi, padded)
        output, count = None, None
        for b in range(x.shape[0]):
            for first in range(0, len(starts), self.sw_batch_size):
                chunk = range(first, min(first + self.sw_batch_size, len(starts)))
                boxes = [tuple(slice(s, s + r) for s, r in zip(starts[i], roi)) for i in chunk]
                window = torch.cat([x[(slice(b, b + 1), slice(None), *box)] for box in boxes]).to(sw_device)
                result = predictor(window, positions[list(chunk)].to(sw_device)) * weight
                if output is None:
                    output = torch.zeros((x.shape[0], result.shape[1], *padded), dtype=result.dtype, device=out_device)
                    count = torch.zeros((1, 1, *padded), dtype=result.dtype, device=out_device)
                for item, box in zip(result, boxes):
                    output[(b, slice(None), *box)] += item.to(out_device)
                    if b == 0:
                        count[(0, 0, *box)] += weight.to(out_device)
        output = output / count
        crop = tuple(slice(pad[2 * (len(spatial) - 1 - i)], pad[2 * (len(spatial) - 1 - i)] + s) for i, s in enumerate(spatial))
        output = output[(slice(None), slice(None), *crop)]
        return convert_to_dst_type(output, inputs, device=out_device)[0] if hasattr(inputs, "meta") else output


def crop_position(image: torch.Tensor) -> torch.Tensor:
    """Position of the last crop applied to a MetaTensor: crop centre minus ``shape // 2`` of what it was cut from.

    Read from the crop's entry in ``applied_operations`` (MONAI records the voxels removed before and after on each
    axis and the size before cropping), so it is the position before any later augmentation.
    """
    ops = getattr(image, "applied_operations", None) or []
    for op in reversed(ops):
        while isinstance(op, dict) and isinstance(op.get(TraceKeys.EXTRA_INFO), dict):
            if "cropped" in op[TraceKeys.EXTRA_INFO]:
                break
            op = op[TraceKeys.EXTRA_INFO]  # random croppers record the inner SpatialCrop as their extra info
        cropped = op.get(TraceKeys.EXTRA_INFO, {}).get("cropped") if isinstance(op, dict) else None
        if cropped is not None:
            size = op[TraceKeys.ORIG_SIZE]
            centres = [
                before + (s - before - after) // 2 - s // 2
                for before, after, s in zip(cropped[0::2], cropped[1::2], size)
            ]
            return torch.tensor(centres, dtype=torch.float32)
    raise ValueError("no crop recorded in the image's applied_operations: put CropPositiond right after the crop")


class CropPositiond(MapTransform):
    """Store each crop's position (:func:`crop_position`) under ``position_key``; place it right after the crop.

    Args:
        keys: the cropped image key (one).
        position_key: where the (spatial_dims,) float tensor goes.
    """

    def __init__(self, keys: str, position_key: str = "position", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.position_key = position_key

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.position_key] = crop_position(d[key])
        return d
