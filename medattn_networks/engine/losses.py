"""Losses the papers train with that MONAI lacks.

:class:`BoundaryDoULoss` — the Boundary Difference over Union loss (Sun et al., MICCAI 2023) that MSA²Net (seed 004)
trains its Synapse model with, in the released code's form: per class c, over the whole batch,

``L_c = (Σp² + Σt² − 2Σpt + ε) / (Σp² + Σt² − (1 + α_c)·Σpt + ε)``, ``α_c = min(2·(1 − (C_c + ε) / (S_c + ε)) − 1, 0.8)``,

with p the softmax probability, t the one-hot target, S_c its foreground voxels and C_c its boundary voxels (a
foreground voxel with a background voxel, or the image border, among its 2·d face neighbours). The loss is the mean
over all classes, background included. α carries no gradient. 2D and 3D.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["BoundaryDoULoss", "boundary_voxels"]


def boundary_voxels(mask: torch.Tensor) -> torch.Tensor:
    """Boolean map of the voxels of ``mask`` (B, *spatial) that lie on its boundary: foreground with at least one
    face neighbour outside it (outside the image counts as background)."""
    d = mask.dim() - 1
    m = mask.float().unsqueeze(1)
    kernel = torch.zeros((3,) * d, device=mask.device)
    centre = (1,) * d
    kernel[centre] = 1
    for axis in range(d):
        for offset in (0, 2):
            index = list(centre)
            index[axis] = offset
            kernel[tuple(index)] = 1
    conv = (F.conv2d, F.conv3d)[d - 2]
    counts = conv(m, kernel[None, None], padding=1)[:, 0]
    return (mask > 0) & (counts < 2 * d + 1)


class BoundaryDoULoss(nn.Module):
    """Boundary DoU loss on logits (B, K, *spatial) and a label map (B, 1, *spatial) or (B, *spatial).

    Args:
        num_classes: K.
        alpha_max: upper bound of α (the released code's 0.8).
        smooth: ε.
    """

    def __init__(self, num_classes: int, alpha_max: float = 0.8, smooth: float = 1e-5) -> None:
        super().__init__()
        self.num_classes, self.alpha_max, self.smooth = num_classes, alpha_max, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.dim() == logits.dim():
            target = target[:, 0]
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"BoundaryDoULoss for {self.num_classes} classes got logits with {logits.shape[1]} channels")
        probs = logits.softmax(dim=1)
        labels = target.long()
        total = logits.new_zeros(())
        for c in range(self.num_classes):
            t = labels == c
            with torch.no_grad():
                foreground = t.sum().float()
                boundary = boundary_voxels(t).sum().float()
                alpha = torch.clamp(2 * (1 - (boundary + self.smooth) / (foreground + self.smooth)) - 1, max=self.alpha_max)
            p, tf = probs[:, c], t.to(probs.dtype)
            intersect, p_sum, t_sum = (p * tf).sum(), (p * p).sum(), tf.sum()
            total = total + (p_sum + t_sum - 2 * intersect + self.smooth) / (p_sum + t_sum - (1 + alpha) * intersect + self.smooth)
        return total / self.num_classes
