"""FLOP and parameter counts with fvcore's / mmengine's rules (papers.md, "FLOP convention").

The papers' tables were measured with fvcore (``FlopCountAnalysis``) or mmengine's ``get_model_complexity_info``
(the same handlers): a traced forward at batch 1 in ``eval()`` mode, where

- convolution, linear, matmul, mm, addmm, bmm, einsum: 1 FLOP per multiply-add (bias not counted); fused
  scaled-dot-product attention counts its two matmuls (fvcore leaves that op uncounted; no paper net uses it);
- batch norm: 2 per input element in eval mode when affine (1 otherwise); in training mode 5 (4 without affine);
- layer norm, group norm, instance norm: 5 per input element when affine (4 otherwise);
- adaptive average pooling: 1 per input element;
- nearest / bilinear up-sampling: 1 / 4 per output element (fvcore's ``upsample_nearest2d``/``upsample_bilinear2d``);
- everything else (activations, softmax, max-pool, element-wise arithmetic, reductions such as ``mean``) is free.

fvcore records ops with ``torch.jit.trace`` (``aten::linear``, ``aten::matmul``, ``aten::adaptive_avg_pool2d``...).
This counter needs no tracer (fvcore's depends on the deprecated ``torch.jit``): see :class:`FlopCounter`. It was
cross-checked against fvcore 0.1.5.post20221221 on every net of ``medattn_networks.nets.fcn`` /
``resnet`` (all heads, all DSNet plugins, FcaNet): identical totals, except that fvcore rounds generic ``einsum``
counts to four significant digits (numpy's ``einsum_path`` printout) where this counter is exact.

By default the forward runs under ``FakeTensorMode``: shapes propagate, nothing is computed, so a 512×1024 ResNet-50
FCN is counted in about a second on a CPU. Use ``fake=False`` for modules whose control flow reads tensor values.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["FlopCounter", "count_flops", "count_params", "format_count"]


def _numel(shape: Sequence[int]) -> int:
    return int(math.prod(int(s) for s in shape))


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


# ------------------------------------------------------------------------------------------- ATen-level handlers
def _conv(args: tuple, kwargs: dict, out: Any) -> int:
    x, w = args[0], args[1]
    transposed = bool(_arg(args, kwargs, 6, "transposed", False))
    if transposed:  # fvcore: weight [C_in, C_out / groups, *k] applied at every input position
        return int(x.shape[0]) * _numel(w.shape) * _numel(x.shape[2:])
    # weight [C_out, C_in / groups, *k]: MACs = batch · C_out · C_in/groups · prod(k) · prod(out spatial)
    return int(x.shape[0]) * _numel(w.shape) * _numel(out.shape[2:])


def _mm(args: tuple, kwargs: dict, out: Any) -> int:  # mm(a, b), bmm(a, b): every output entry costs K MACs
    return _numel(out.shape) * int(args[0].shape[-1])


def _addmm(args: tuple, kwargs: dict, out: Any) -> int:  # addmm(bias, a, b), baddbmm(bias, a, b)
    return _numel(out.shape) * int(args[1].shape[-1])


def _attention(args: tuple, kwargs: dict, out: Any) -> int:
    """Fused scaled-dot-product attention = q·kᵀ + attn·v: (..., L, E) × (..., S, E) and (..., L, S) × (..., S, Ev)."""
    q, k, v = args[0], args[1], args[2]
    batch = _numel(q.shape[:-2])
    length, source = int(q.shape[-2]), int(k.shape[-2])
    return batch * length * source * (int(q.shape[-1]) + int(v.shape[-1]))


def _batch_norm(training_index: int, has_weight: bool = True) -> Callable[[tuple, dict, Any], int]:
    def handler(args: tuple, kwargs: dict, out: Any) -> int:
        affine = has_weight and args[1] is not None
        training = bool(_arg(args, kwargs, training_index, "training", False)) if training_index >= 0 else False
        if training:
            return _numel(args[0].shape) * (5 if affine else 4)
        return _numel(args[0].shape) * (2 if affine else 1)

    return handler


def _affine_norm(weight_index: int) -> Callable[[tuple, dict, Any], int]:
    def handler(args: tuple, kwargs: dict, out: Any) -> int:
        weight = _arg(args, kwargs, weight_index, "weight")
        return _numel(args[0].shape) * (5 if weight is not None else 4)

    return handler


_ATEN = torch.ops.aten
_DISPATCH_HANDLERS: dict[Any, tuple[str, Callable[[tuple, dict, Any], int]]] = {}


def _register_aten(name: str, handler: Callable[[tuple, dict, Any], int], *packets: str) -> None:
    for packet_name in packets:
        packet = getattr(_ATEN, packet_name, None)
        if packet is None:  # pragma: no cover - op missing in this torch build
            continue
        for overload in packet.overloads():
            _DISPATCH_HANDLERS[getattr(packet, overload)] = (name, handler)


_register_aten("conv", _conv, "convolution", "_convolution")
_register_aten("matmul", _mm, "mm", "bmm")
_register_aten("matmul", _addmm, "addmm", "baddbmm")
# fused attention kernels (the math fallback decomposes into bmm and is counted there)
_register_aten(
    "matmul",
    _attention,
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
)
# native_batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps) and relatives
_register_aten("batch_norm", _batch_norm(5), "native_batch_norm", "cudnn_batch_norm", "miopen_batch_norm")
_register_aten("batch_norm", _batch_norm(-1), "_native_batch_norm_legit_no_training")
_register_aten("layer_norm", _affine_norm(2), "native_layer_norm")
_register_aten("group_norm", _affine_norm(1), "native_group_norm")
# _native_batch_norm_legit(input, weight, bias, running_mean, running_var, training, ...) / .no_stats (..., training)
for _overload in _ATEN._native_batch_norm_legit.overloads():
    _index = 3 if _overload == "no_stats" else 5
    _DISPATCH_HANDLERS[getattr(_ATEN._native_batch_norm_legit, _overload)] = ("batch_norm", _batch_norm(_index))


# ----------------------------------------------------------------------------------------- function-level handlers
def _input_elements(args: tuple, kwargs: dict, out: Any) -> int:
    return _numel(args[0].shape)


def _interpolate(args: tuple, kwargs: dict, out: Any) -> int:
    mode = _arg(args, kwargs, 3, "mode", "nearest")
    per_output = {"nearest": 1, "bilinear": 4}.get(mode, 0)  # fvcore counts only these 2D kernels
    return _numel(out.shape) * per_output


_FUNCTION_HANDLERS: dict[Callable, tuple[str, Callable[[tuple, dict, Any], int]]] = {
    F.adaptive_avg_pool1d: ("adaptive_avg_pool", _input_elements),
    F.adaptive_avg_pool2d: ("adaptive_avg_pool", _input_elements),
    F.adaptive_avg_pool3d: ("adaptive_avg_pool", _input_elements),
    F.interpolate: ("upsample", _interpolate),
}


class _DispatchLevel(TorchDispatchMode):
    def __init__(self, counts: Counter) -> None:
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        entry = _DISPATCH_HANDLERS.get(func)
        if entry is not None:
            name, handler = entry
            self.counts[name] += handler(args, kwargs, out)
        return out


class _FunctionLevel(TorchFunctionMode):
    def __init__(self, counts: Counter) -> None:
        super().__init__()
        self.counts = counts

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        entry = _FUNCTION_HANDLERS.get(func)
        if entry is not None:
            name, handler = entry
            self.counts[name] += handler(args, kwargs, out)
        return out


class FlopCounter:
    """Context manager counting the FLOPs of everything run inside it, with fvcore's rules.

    Two levels: a ``TorchDispatchMode`` counts the compute ops after ATen's decompositions (``convolution``, ``mm``,
    ``addmm``, ``bmm``, ``baddbmm`` — what ``linear``, ``matmul`` and ``einsum`` become — and the batch/layer/group
    norm kernels; instance norm arrives as a training-mode batch norm, 5 per element like fvcore's rule), and a
    ``TorchFunctionMode`` counts adaptive average pooling and interpolation at the ``torch.nn.functional`` call,
    where fvcore's tracer sees them (ATen turns a 1×1 adaptive pool into a ``mean``). Ops inside a handled call
    are never counted twice (each mode is inactive while its handler runs).

    ``counts`` maps op kinds (``conv``, ``matmul``, ``batch_norm``, ``layer_norm``, ``group_norm``,
    ``adaptive_avg_pool``, ``upsample``) to FLOPs; ``total()`` sums them.
    """

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self._modes = (_FunctionLevel(self.counts), _DispatchLevel(self.counts))

    def __enter__(self) -> "FlopCounter":
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)

    def total(self) -> int:
        return int(sum(self.counts.values()))


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of (unique) parameters, as ``sum(p.numel())`` / fvcore's ``parameter_count``."""
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only))


def count_flops(
    module: nn.Module,
    input_shape: Sequence[int],
    forward: Optional[Callable[[torch.Tensor], Any]] = None,
    fake: bool = True,
    by_operator: bool = False,
) -> int | tuple[int, dict[str, int]]:
    """FLOPs (fvcore rules, one per multiply-add) of one forward pass of ``module`` in eval mode.

    Args:
        module: the network; it is put in ``eval()`` for the count and its mode is restored afterwards.
        input_shape: full input shape including the batch axis, e.g. ``(1, 3, 512, 1024)`` (the papers use batch 1).
        forward: what to run instead of ``module(x)``, e.g. ``model.forward_features`` (ImageNet FLOPs without
            the classifier) or ``lambda x: model(x)`` of a net built with ``upsample=False``.
        fake: run under ``FakeTensorMode`` (nothing is computed; the module's real parameters are only read for
            their shapes). ``False`` runs a real forward on a random input.
        by_operator: also return the per-op-kind breakdown.
    """
    was_training = module.training
    module.eval()
    run = forward if forward is not None else module
    try:
        with torch.no_grad():
            if fake:
                from torch._subclasses.fake_tensor import FakeTensorMode

                with FakeTensorMode(allow_non_fake_inputs=True) as mode:
                    x = torch.empty(tuple(input_shape))
                    with FlopCounter() as counter:
                        run(x)
                del mode
            else:
                x = torch.randn(tuple(input_shape))
                with FlopCounter() as counter:
                    run(x)
    finally:
        module.train(was_training)
    total = counter.total()
    if by_operator:
        return total, dict(counter.counts)
    return total


def format_count(value: int, unit: str = "G", digits: int = 3) -> str:
    """``format_count(4_109_000_000) == "4.109G"`` — the papers' M/G notation (10^6 / 10^9)."""
    scale = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}[unit]
    return f"{round(value / scale, digits):.{digits}f}{unit}"
