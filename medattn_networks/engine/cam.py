"""Class activation maps (Grad-CAM, and CAM where it is defined) for segmentation networks, 2D and 3D.

Grad-CAM (Selvaraju et al., ICCV 2017) adapted to segmentation as in Vinogradova et al. (AAAI 2020): for a
target layer with activation ``A`` (``K`` channels) and every class ``c``

    S_c     = sum of logit_c over the voxels predicted as c (argmax of the logits)   [score="predicted", default]
              or over all voxels                                                       [score="all"]
    alpha_k = spatial mean of dS_c / dA_k
    map_c   = ReLU(sum_k alpha_k A_k)

up-sampled (linear / bilinear / trilinear, ``align_corners=False``) to the input size and, unless switched off,
divided by its maximum per sample and class (a map that is zero everywhere, e.g. a class predicted nowhere, stays
zero). The map of a class therefore shows where the target layer's features raise that class's logits in the
region the network assigns to it.

Plain CAM (Zhou et al., CVPR 2016) is only defined for a network that ends in global average pooling followed by
one linear layer (a classifier): then ``map_c = sum_k w_ck A_k`` with the linear weights ``w``. The segmentation
networks of this package (UNet3D, VNet) have no such head, so Grad-CAM is the applicable method for them;
:func:`classifier_cam` gives plain CAM for classifiers.

Computation uses ``torch.autograd.grad`` on the target activation only: parameters' ``.grad`` are never written,
hooks are removed after every call, the network is evaluated in eval mode (every module's train/eval flag is
restored afterwards), and gradients are enabled locally, so it runs inside ``torch.no_grad`` (MONAI evaluators).
Batch items must not interact in eval mode (true for conv nets with instance norm or eval-mode batch norm): the
class score is summed over the batch and each item's gradient is read from its own activation.

For images larger than a fixed-size network input (PAM needs exactly ``roi_size[0]`` slices) use
:class:`GradCAMPredictor` as the predictor of MONAI's ``SlidingWindowInferer``; bundles attach :class:`CAMHandler`
to write the maps next to their predictions (see ``bundles/pam_unet3d_hippocampus/configs/cam.json``).
"""

from __future__ import annotations

import logging
from copy import deepcopy
from typing import Callable, Hashable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from ignite.engine import Engine, Events
from monai.config import KeysCollection
from monai.data import MetaTensor, decollate_batch
from monai.transforms import MapTransform, apply_transform

__all__ = [
    "CAMHandler",
    "GradCAMPredictor",
    "NormalizeCAMd",
    "SegmentationGradCAM",
    "classifier_cam",
    "grad_cam",
    "normalize_maps",
]

logger = logging.getLogger("medattn.cam")

SCORES = ("predicted", "all")
_LINEAR_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _plain(x: torch.Tensor) -> torch.Tensor:
    """A MetaTensor as a plain tensor (no meta tracking through the network), anything else unchanged."""
    return x.as_tensor() if hasattr(x, "as_tensor") else x


def _logits(output) -> torch.Tensor:
    """The logits of a network output: a tensor, or the first item of a tuple/list (deep supervision)."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"the network must return a logits tensor [B, classes, ...], got {type(output).__name__}")
    return _plain(output)


def find_layer(network: nn.Module, name: str) -> nn.Module:
    """The sub-module at dotted path ``name`` (``"decoder_attention.1"``); looks inside a ``.module`` wrapper too."""
    for root in (network, getattr(network, "module", None)):
        if isinstance(root, nn.Module):
            try:
                return root.get_submodule(name)
            except AttributeError:
                continue
    names = [n for n, _ in network.named_modules() if n and n.count(".") <= 1]
    shown = ", ".join(names[:60]) + (", ..." if len(names) > 60 else "")
    raise ValueError(
        f"target layer '{name}' not found in {type(network).__name__}; its layers: {shown} (and their sub-modules)"
    )


def normalize_maps(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Divide each map of ``maps`` [B, C, *spatial] by its maximum: maps ≥ 0 → [0, 1], all-zero ones stay 0."""
    flat = maps.reshape(maps.shape[0], maps.shape[1], -1)
    peak = flat.amax(dim=2).reshape(*maps.shape[:2], *[1] * (maps.ndim - 2))
    return torch.where(peak > eps, maps / peak.clamp_min(eps), torch.zeros_like(maps)).clamp_(0.0, 1.0)


def upsample_maps(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Linear (bi-/trilinear) interpolation of ``maps`` [B, C, *spatial] to ``size`` (unchanged if that size)."""
    size = tuple(int(s) for s in size)
    if tuple(maps.shape[2:]) == size:
        return maps
    return F.interpolate(maps, size=size, mode=_LINEAR_MODES[len(size)], align_corners=False)


class _Capture:
    """Forward hook on the target layer: swaps its output for a detached leaf that requires grad.

    The leaf is what the gradient is taken with respect to (present even when no parameter or input requires
    grad); the rest of the network receives ``leaf.clone()`` so that in-place operations after the layer work.
    """

    def __init__(self) -> None:
        self.activation: torch.Tensor | None = None
        self.calls = 0

    def __call__(self, module: nn.Module, inputs, output):
        self.calls += 1
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"the target layer must output one tensor, got {type(output).__name__}")
        leaf = _plain(output).detach().requires_grad_(True)
        self.activation = leaf
        return leaf.clone()


class SegmentationGradCAM:
    """Grad-CAM maps of every class of a segmentation network (2D or 3D), see the module docstring.

    Args:
        network: returns logits [B, classes, *spatial] (or [B, classes] for a classifier).
        target_layer: dotted module path whose output is ``A`` (``"decoder_attention.1"``, ``"decoders.2"``); the
            module must run exactly once per forward.
        score: ``"predicted"`` (class score summed over the voxels predicted as that class; the usual segmentation
            Grad-CAM) or ``"all"`` (summed over every voxel).
        class_indices: classes to compute (default all); the output has one channel per listed class.
        upsample: interpolate the maps to the input's spatial size (else they have the target layer's size).
        normalize: divide every map by its maximum (→ [0, 1]). Switch off when maps of several windows are stitched
            and normalised afterwards (:class:`GradCAMPredictor`).

    Calling it with ``x`` [B, in_channels, *spatial] returns float32 maps [B, len(classes), *spatial], detached.
    """

    def __init__(
        self,
        network: nn.Module,
        target_layer: str,
        score: str = "predicted",
        class_indices: Sequence[int] | None = None,
        upsample: bool = True,
        normalize: bool = True,
    ) -> None:
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got '{score}'")
        self.network = network
        self.target_layer = target_layer
        self.layer = find_layer(network, target_layer)
        self.score = score
        self.class_indices = None if class_indices is None else [int(c) for c in class_indices]
        self.upsample = upsample
        self.normalize = normalize

    def _class_score(self, logits: torch.Tensor, predicted: torch.Tensor | None, c: int) -> torch.Tensor:
        class_logits = logits[:, c]
        if predicted is not None:
            class_logits = class_logits * (predicted == c).to(class_logits.dtype)
        return class_logits.sum()

    def raw_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(maps, logits)``: ReLU'd Grad-CAM maps at the target layer's resolution and the detached logits."""
        x = _plain(x)
        capture = _Capture()
        flags = [(m, m.training) for m in self.network.modules()]
        handle = self.layer.register_forward_hook(capture)
        try:
            self.network.eval()
            with torch.enable_grad():
                logits = _logits(self.network(x))
                if capture.calls != 1 or capture.activation is None:
                    raise ValueError(
                        f"target layer '{self.target_layer}' ran {capture.calls} times in one forward pass; "
                        "choose a layer that runs exactly once"
                    )
                activation = capture.activation
                num_classes = logits.shape[1]
                classes = list(range(num_classes)) if self.class_indices is None else self.class_indices
                bad = [c for c in classes if not 0 <= c < num_classes]
                if bad:
                    raise ValueError(f"class indices {bad} out of range for {num_classes} output channels")
                predicted = logits.argmax(1) if self.score == "predicted" else None
                spatial_axes = tuple(range(2, activation.ndim))
                acti = activation.detach().float()
                maps = []
                for i, c in enumerate(classes):
                    score = self._class_score(logits, predicted, c)
                    grad = None
                    if score.requires_grad:
                        (grad,) = torch.autograd.grad(
                            score, activation, retain_graph=i < len(classes) - 1, allow_unused=True
                        )
                    if grad is None:  # the class logit does not depend on the layer
                        grad = torch.zeros_like(activation)
                    grad = grad.float()
                    alpha = grad.mean(dim=spatial_axes, keepdim=True) if spatial_axes else grad
                    maps.append(F.relu((alpha * acti).sum(dim=1)))
        finally:
            handle.remove()
            for module, training in flags:
                module.training = training
        return torch.stack(maps, dim=1).detach(), logits.detach()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        maps, _ = self.raw_maps(x)
        if self.upsample and x.ndim > 2:
            maps = upsample_maps(maps, x.shape[2:])
        if self.normalize:
            maps = normalize_maps(maps)
        return maps


def grad_cam(
    network: nn.Module,
    x: torch.Tensor,
    target_layer: str,
    score: str = "predicted",
    class_indices: Sequence[int] | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """Grad-CAM maps [B, classes, *spatial of x] of ``network`` at ``target_layer`` (:class:`SegmentationGradCAM`)."""
    return SegmentationGradCAM(network, target_layer, score, class_indices, upsample=True, normalize=normalize)(x)


class GradCAMPredictor:
    """Predictor for MONAI inferers (``SlidingWindowInferer(...)(image, GradCAMPredictor(net, layer))``).

    Each window gives un-normalised Grad-CAM maps [B, classes, *window]; the inferer stitches them (its blending
    weights) into maps of the whole image, which are then normalised once (:class:`NormalizeCAMd` or
    :func:`normalize_maps`). Normalising per window would give every window its own scale. Fixed-depth networks
    (PAM) thus get maps for any image size. Arguments as :class:`SegmentationGradCAM`.
    """

    def __init__(
        self,
        network: nn.Module,
        target_layer: str,
        score: str = "predicted",
        class_indices: Sequence[int] | None = None,
        normalize: bool = False,
    ) -> None:
        self.cam = SegmentationGradCAM(network, target_layer, score, class_indices, upsample=True, normalize=normalize)

    @property
    def network(self) -> nn.Module:
        return self.cam.network

    def __call__(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.cam(x)


def classifier_cam(
    network: nn.Module, x: torch.Tensor, target_layer: str, fc_layer: str, normalize: bool = True
) -> torch.Tensor:
    """Plain CAM of a classifier ending in global average pooling → ``nn.Linear`` (``fc_layer``).

    ``map_c = ReLU(sum_k w_ck A_k)`` with ``A`` the output of ``target_layer`` (the features that are pooled),
    up-sampled to ``x``'s size and normalised like Grad-CAM. Not defined for segmentation networks (no pooled
    linear head): use :class:`SegmentationGradCAM` for those.
    """
    fc = find_layer(network, fc_layer)
    if not isinstance(fc, nn.Linear):
        raise TypeError(f"plain CAM needs a global-pooling + nn.Linear head; '{fc_layer}' is {type(fc).__name__}")
    x = _plain(x)
    store: dict[str, torch.Tensor] = {}
    handle = find_layer(network, target_layer).register_forward_hook(
        lambda m, i, o: store.__setitem__("A", _plain(o).detach())
    )
    flags = [(m, m.training) for m in network.modules()]
    try:
        network.eval()
        with torch.no_grad():
            network(x)
    finally:
        handle.remove()
        for module, training in flags:
            module.training = training
    acti = store["A"].float()
    if acti.shape[1] != fc.in_features:
        raise ValueError(f"'{target_layer}' has {acti.shape[1]} channels, '{fc_layer}' expects {fc.in_features}")
    maps = F.relu(torch.einsum("ck,bk...->bc...", fc.weight.detach().float(), acti))
    maps = upsample_maps(maps, x.shape[2:])
    return normalize_maps(maps) if normalize else maps


class NormalizeCAMd(MapTransform):
    """Clamp maps [C, *spatial] (channel first, no batch) at 0 and divide each channel by its maximum (→ [0, 1])."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            maps = d[key]
            normalized = normalize_maps(torch.as_tensor(_plain(maps)).float().clamp_min(0.0)[None])[0]
            if isinstance(maps, MetaTensor):  # keep the meta data (affine) for saving
                normalized = MetaTensor(normalized, meta=maps.meta, applied_operations=maps.applied_operations)
            d[key] = normalized
        return d


class CAMHandler:
    """Ignite handler: after every iteration, class activation maps of each image of the batch are computed and
    passed through ``postprocessing`` (typically ``Invertd`` → :class:`NormalizeCAMd` → ``SaveImaged``).

    The maps are computed from the pre-processed image (``image_key``) the evaluator ran on, with
    ``inferer(image, predictor)``; the item given to ``postprocessing`` holds the batch and output entries of that
    image (so ``Invertd`` with ``orig_keys=image_key`` maps the CAM back exactly like the prediction) plus
    ``cam_key``. Nothing is added to the engine's output, so the prediction path is untouched.

    Args:
        predictor: e.g. :class:`GradCAMPredictor`; called by ``inferer`` on [B, C, *window] tensors.
        postprocessing: callable on the item dict (a MONAI ``Compose``), or None to only compute.
        inferer: MONAI inferer (the evaluator's sliding window); default: the predictor on the whole image.
        image_key: key of the pre-processed image.
        cam_key: key the maps [classes, *spatial] are stored under for ``postprocessing``.
    """

    def __init__(
        self,
        predictor: Callable[..., torch.Tensor],
        postprocessing: Callable | None = None,
        inferer: Callable | None = None,
        image_key: str = "image",
        cam_key: str = "cam",
    ) -> None:
        self.predictor = predictor
        self.postprocessing = postprocessing
        self.inferer = inferer
        self.image_key = image_key
        self.cam_key = cam_key

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _device(self, fallback: torch.device) -> torch.device:
        network = getattr(self.predictor, "network", None)
        if isinstance(network, nn.Module):
            for p in network.parameters():
                return p.device
        return fallback

    def compute(self, image: torch.Tensor) -> torch.Tensor:
        """Maps [classes, *spatial] (on CPU) for one pre-processed image [C, *spatial]."""
        x = _plain(image)[None]
        x = x.to(self._device(x.device))
        maps = self.inferer(x, self.predictor) if self.inferer is not None else self.predictor(x)
        return _plain(maps)[0].detach().float().cpu()

    def __call__(self, engine: Engine) -> None:
        batch, output = engine.state.batch, engine.state.output
        if isinstance(batch, list) and isinstance(output, list):
            items = zip(batch, output)
        else:  # an engine that does not decollate
            items = zip(decollate_batch(batch, detach=True), decollate_batch(output, detach=True))
        for b, o in items:
            data = dict(b) if isinstance(b, Mapping) else {}
            if isinstance(o, Mapping):
                data.update(o)
            if self.image_key not in data:
                raise KeyError(f"CAMHandler: no '{self.image_key}' in the engine's batch or output")
            image = data[self.image_key]
            maps = self.compute(image)
            if isinstance(image, MetaTensor):  # carry the image's meta and transform trace, as the prediction does
                trace = deepcopy(image.applied_operations)
                maps = MetaTensor(maps, meta=deepcopy(image.meta), applied_operations=trace)
            data[self.cam_key] = maps
            if self.postprocessing is not None:
                apply_transform(self.postprocessing, data)
            name = getattr(image, "meta", {}).get("filename_or_obj", "?")
            logger.info("class activation maps done: %s", name)
