"""One registry of attention modules: a short lower-case name maps to one class.

Every registered class takes ``(spatial_dims, channels, **kwargs)`` as its first arguments, so a network can
swap attention by name without knowing the module's internals.
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

__all__ = ["register_attention", "create_attention", "list_attention", "get_attention_class"]

_REGISTRY: dict[str, type[nn.Module]] = {}


def register_attention(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator registering an attention module under ``name`` (lower case, unique)."""
    key = name.lower()

    def _add(cls: type[nn.Module]) -> type[nn.Module]:
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            raise ValueError(f"attention name '{key}' is already registered to {_REGISTRY[key].__name__}")
        _REGISTRY[key] = cls
        return cls

    return _add


def list_attention() -> list[str]:
    """Sorted names of every registered attention module."""
    return sorted(_REGISTRY)


def get_attention_class(name: str) -> type[nn.Module]:
    key = str(name).lower()
    if key not in _REGISTRY:
        raise KeyError(f"unknown attention '{name}'; known names: {', '.join(list_attention())}")
    return _REGISTRY[key]


def create_attention(name: str, spatial_dims: int, channels: int, **kwargs) -> nn.Module:
    """Build the attention module registered as ``name``.

    Args:
        name: registry name, e.g. ``"cse"``, ``"pam"``; ``"none"`` gives an identity.
        spatial_dims: 2 or 3.
        channels: number of feature channels the module sees.
        kwargs: module-specific options (reduction ratios, slice count, ...).
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if channels < 1:
        raise ValueError(f"channels must be positive, got {channels}")
    return get_attention_class(name)(spatial_dims, channels, **kwargs)


@register_attention("none")
class NoAttention(nn.Identity):
    """Identity placeholder so ``attention="none"`` needs no special case in networks."""

    def __init__(self, spatial_dims: int, channels: int, **kwargs) -> None:
        super().__init__()
