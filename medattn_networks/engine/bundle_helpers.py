"""Small helpers the bundles call from their JSON configs."""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["flag", "pick", "slices_first_order"]

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def flag(value: Any, name: str = "flag") -> bool:
    """A config switch as a bool, whatever way it reached the config.

    ``python -m monai.bundle run ... --load_pretrain false`` hands the config the *string* ``"false"`` (only
    ``False`` is parsed), which Python treats as true. This accepts bools, 0/1 and true/false, yes/no, on/off in
    any case, and raises a ValueError naming ``name`` for anything else.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"'{name}' must be true or false, got {value!r}")


def pick(options: Mapping[str, Any], name: str, what: str = "option") -> Any:
    """``options[name]``, or a ValueError that lists the known names (instead of a bare KeyError in a config)."""
    if name not in options:
        raise ValueError(f"unknown {what} '{name}'; choose one of: {', '.join(map(str, options))}")
    return options[name]


def slices_first_order(slice_axis: int) -> tuple[int, int, int, int]:
    """``Transposed`` indices that put spatial axis ``slice_axis`` of a channel-first volume (C, a, b, c) first
    and reverse the two in-plane axes.

    For ``slice_axis=2`` (axial slices of a RAS volume stored as x, y, z) this is (0, 3, 2, 1): (C, z, y, x),
    the order TransUNet's and SSL4MIS's h5/npz files hold (SimpleITK's array order), so a NIfTI slice reaches the
    network the way the training slices did. The result is (C, slices, rows, columns); ``Invertd`` undoes it.
    """
    if slice_axis not in (0, 1, 2):
        raise ValueError(f"slice_axis must be a spatial axis 0, 1 or 2, got {slice_axis}")
    in_plane = [a for a in (2, 1, 0) if a != slice_axis]
    return (0, 1 + slice_axis, 1 + in_plane[0], 1 + in_plane[1])
