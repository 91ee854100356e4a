"""Small helpers the 2D-slice bundles (dsnet_fcn_r50_synapse, dsnet_fcn_r50_acdc) call from their JSON configs."""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["pick", "slices_first_order"]


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
