"""Slice-by-slice inference of a 2D network over 3D volumes (TransUNet ``utils.test_single_volume``).

Each slice along ``slice_axis`` is resized to the network size (TransUNet: ``scipy.ndimage.zoom`` order 3),
optionally preprocessed and repeated to 3 channels, run through the network a batch of slices at a time, and
its output resized back to the slice grid (TransUNet: the argmax labels with zoom order 0). The result lies in
the volume's grid: logits (B, K, *spatial) or labels (B, 1, *spatial).

Interpolation modes: ``"spline<k>"`` is ``scipy.ndimage.zoom`` of order k on the CPU (TransUNet exactly:
``"spline3"`` in, ``"spline0"`` out); any ``torch.nn.functional.interpolate`` mode (``"bilinear"``,
``"bicubic"``, ``"nearest"``, ``"nearest-exact"``, ``"area"``) runs on the tensor's device.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type
from scipy import ndimage

__all__ = ["SliceWiseInferer", "slicewise_inference", "resize_slices"]


def resize_slices(x: torch.Tensor, size: Sequence[int], mode: str) -> torch.Tensor:
    """Resize a (N, C, H, W) batch to ``size`` with ``mode`` (``"spline<k>"`` or a torch interpolate mode)."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    if mode.startswith("spline"):
        order = int(mode[len("spline") :] or 3)
        factors = (size[0] / x.shape[-2], size[1] / x.shape[-1])
        planes = x.detach().cpu().numpy()
        out = np.stack(
            [np.stack([ndimage.zoom(plane, factors, order=order) for plane in item]) for item in planes]
        )
        if out.shape[-2:] != size:  # zoom rounds the output shape; never expected for these factors
            raise RuntimeError(f"zoom gave {out.shape[-2:]} instead of {size}")
        return torch.from_numpy(out).to(x.device)
    if x.is_floating_point():
        kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
        return F.interpolate(x, size=size, mode=mode, **kwargs)
    if not mode.startswith("nearest"):
        raise ValueError(f"integer label slices can only be resized with nearest or spline0, got '{mode}'")
    return F.interpolate(x.float(), size=size, mode=mode).to(x.dtype)


class SliceWiseInferer(Inferer):
    """Run a 2D network slice by slice over batch-first volumes (B, C, *spatial) — a MONAI ``Inferer``.

    Use it as a ``SupervisedEvaluator``'s inferer or call it directly (see also :func:`slicewise_inference`).

    Args:
        roi_size: network input size (H, W) or one int; None: slices keep their size.
        slice_axis: spatial axis (0, 1 or 2) the slices are taken along; 0 for the TransUNet / SSL4MIS h5
            volumes (slices, H, W).
        sw_batch_size: slices per network call.
        input_mode: resize mode of the input slices (``"spline3"`` is TransUNet's zoom order 3).
        output_mode: resize mode of the outputs back to the slice size (``"spline0"`` is TransUNet's order-0
            zoom; ``"nearest"`` is the torch equivalent up to rounding of sample positions).
        output: ``"logits"`` (B, K, *spatial) or ``"labels"`` (B, 1, *spatial): argmax at network size, then
            resized, exactly as TransUNet (nearest resizing commutes with argmax, so the logits' argmax agrees).
        repeat_channels: repeat a 1-channel slice to this many channels (3 for ImageNet stems); None: as is.
        slice_transform: callable applied to each (C, H, W) slice before resizing (e.g.
            :func:`~medattn_networks.data.zscore_shift` for the paper's per-image z-score of 2D slices).
        device: device of the output (default: the input's).
    """

    def __init__(
        self,
        roi_size: int | Sequence[int] | None = None,
        slice_axis: int = 0,
        sw_batch_size: int = 16,
        input_mode: str = "spline3",
        output_mode: str = "spline0",
        output: str = "logits",
        repeat_channels: int | None = None,
        slice_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__()
        if roi_size is not None:
            roi_size = (int(roi_size), int(roi_size)) if isinstance(roi_size, int) else tuple(int(s) for s in roi_size)
            if len(roi_size) != 2:
                raise ValueError(f"roi_size must be (H, W), got {roi_size}")
        if slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be a spatial axis 0, 1 or 2, got {slice_axis}")
        if output not in ("logits", "labels"):
            raise ValueError(f"output must be 'logits' or 'labels', got '{output}'")
        if sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be positive, got {sw_batch_size}")
        self.roi_size, self.slice_axis, self.sw_batch_size = roi_size, slice_axis, sw_batch_size
        self.input_mode, self.output_mode, self.output = input_mode, output_mode, output
        self.repeat_channels, self.slice_transform, self.device = repeat_channels, slice_transform, device

    def _prepare(self, chunk: torch.Tensor) -> torch.Tensor:
        if self.slice_transform is not None:
            chunk = torch.stack([torch.as_tensor(self.slice_transform(s)) for s in chunk])
        chunk = chunk.float()
        if self.roi_size is not None:
            chunk = resize_slices(chunk, self.roi_size, self.input_mode)
        if self.repeat_channels and chunk.shape[1] != self.repeat_channels:
            if chunk.shape[1] != 1:
                raise ValueError(f"cannot repeat {chunk.shape[1]} channels to {self.repeat_channels}")
            chunk = chunk.repeat(1, self.repeat_channels, 1, 1)
        return chunk

    def _volume(self, volume: torch.Tensor, network: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        """(C, *spatial) → (K, *spatial) logits or (1, *spatial) labels."""
        slices = volume.movedim(1 + self.slice_axis, 0)  # (S, C, H, W)
        size = tuple(slices.shape[-2:])
        outputs = []
        for start in range(0, slices.shape[0], self.sw_batch_size):
            chunk = self._prepare(slices[start : start + self.sw_batch_size])
            logits = network(chunk, *args, **kwargs)
            if isinstance(logits, (list, tuple)):
                logits = logits[0]  # deep supervision: the full-resolution head
            if isinstance(logits, MetaTensor):
                logits = logits.as_tensor()
            if self.output == "labels":
                logits = logits.argmax(1, keepdim=True)
            logits = resize_slices(logits, size, self.output_mode)
            outputs.append(logits.to(self.device) if self.device is not None else logits)
        return torch.cat(outputs).movedim(0, 1 + self.slice_axis)

    def __call__(self, inputs: torch.Tensor, network: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Slice-wise output for batch-first channel-first volumes ``inputs`` (B, C, *spatial)."""
        if inputs.ndim != 5:
            raise ValueError(f"SliceWiseInferer expects (B, C, D, H, W) volumes, got shape {tuple(inputs.shape)}")
        plain = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        out = torch.stack([self._volume(v, network, *args, **kwargs) for v in plain])
        if isinstance(inputs, MetaTensor):
            out = convert_to_dst_type(out, inputs, dtype=out.dtype, device=out.device)[0]
        return out


def slicewise_inference(
    volume: np.ndarray | torch.Tensor,
    network: torch.nn.Module | Callable,
    roi_size: int | Sequence[int] | None = None,
    slice_axis: int = 0,
    output: str = "labels",
    **kwargs: Any,
) -> np.ndarray | torch.Tensor:
    """Standalone slice-wise inference of one volume (TransUNet's ``test_single_volume`` without metrics).

    Args:
        volume: (D, H, W) without channel, or channel-first (C, D, H, W); numpy or torch.
        network: 2D network; a ``torch.nn.Module`` runs in eval mode (its mode is restored afterwards), and
            the volume is moved to the network's device.
        roi_size, slice_axis, output: as :class:`SliceWiseInferer`; other keyword arguments go to it too.
    Returns:
        labels in the volume's grid — (D, H, W) for a volume without channel, (1, D, H, W) otherwise — or
        logits (K, D, H, W); numpy for numpy input, a tensor on the volume's device otherwise.
    """
    was_numpy = not isinstance(volume, torch.Tensor)
    tensor = torch.as_tensor(np.asarray(volume)) if was_numpy else volume
    has_channel = tensor.ndim == 4
    if tensor.ndim not in (3, 4):
        raise ValueError(f"volume must be (D, H, W) or (C, D, H, W), got shape {tuple(tensor.shape)}")
    x = (tensor if has_channel else tensor[None])[None]
    source_device = x.device
    training = getattr(network, "training", None)
    if isinstance(network, torch.nn.Module):
        parameter = next(network.parameters(), None)
        if parameter is not None:
            x = x.to(parameter.device)
        network.eval()
    try:
        with torch.no_grad():
            out = SliceWiseInferer(roi_size, slice_axis, output=output, **kwargs)(x, network)[0]
    finally:
        if isinstance(network, torch.nn.Module) and training is not None:
            network.train(training)
    if output == "labels" and not has_channel:
        out = out[0]
    out = out.to(source_device)
    return out.cpu().numpy() if was_numpy else out
