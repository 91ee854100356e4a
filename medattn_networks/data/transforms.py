"""Small dictionary transforms the bundles need and MONAI lacks."""

from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = ["CheckChannelsd", "source_name"]


def source_name(data: Mapping[Hashable, object], key: Hashable) -> str:
    """The file a MetaTensor came from (or ``'<key>'`` when unknown), for error messages."""
    meta = getattr(data.get(key), "meta", None) or {}
    name = meta.get("filename_or_obj")
    if isinstance(name, (list, tuple)):
        name = ", ".join(map(str, name))
    return str(name) if name else f"<{key}>"


class CheckChannelsd(MapTransform):
    """Fail with the file name when a channel-first image does not have the channels a network expects.

    Args:
        keys: image keys to check (channel-first, after ``EnsureChannelFirstd``).
        num_channels: expected channel count.
        spatial_dims: expected spatial dimensions (3 for volumes).
    """

    def __init__(self, keys: KeysCollection, num_channels: int, spatial_dims: int = 3, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.num_channels = num_channels
        self.spatial_dims = spatial_dims

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            shape: Sequence[int] = tuple(d[key].shape)
            if len(shape) != self.spatial_dims + 1 or shape[0] != self.num_channels:
                raise ValueError(
                    f"{source_name(d, key)}: expected a {self.spatial_dims}D image with {self.num_channels} channel(s) "
                    f"but it has shape {shape[1:]} with {shape[0]} channel(s) (channel first)"
                )
        return d
