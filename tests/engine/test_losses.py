"""Boundary DoU loss (MSA²Net's Synapse loss) against the released formula written out voxel by voxel."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from medattn_networks.engine.losses import BoundaryDoULoss, boundary_voxels


def _boundary_by_hand(mask: np.ndarray) -> np.ndarray:
    out = np.zeros(mask.shape, bool)
    for b, *idx in itertools.product(*(range(s) for s in mask.shape)):
        if not mask[(b, *idx)]:
            continue
        for axis in range(len(idx)):
            for step in (-1, 1):
                n = list(idx)
                n[axis] += step
                if not 0 <= n[axis] < mask.shape[1 + axis] or not mask[(b, *n)]:
                    out[(b, *idx)] = True
    return out


@pytest.mark.parametrize("shape", [(2, 7, 9), (1, 5, 6, 4)])
def test_boundary_voxels_are_foreground_with_a_background_face_neighbour(shape):
    mask = np.random.default_rng(0).random(shape) > 0.35
    assert np.array_equal(boundary_voxels(torch.from_numpy(mask)).numpy(), _boundary_by_hand(mask))


@pytest.mark.parametrize("spatial", [(8, 10), (5, 6, 7)])
def test_boundary_dou_equals_the_released_formula(spatial):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, *spatial, generator=g, dtype=torch.float64, requires_grad=True)
    label = torch.randint(0, 3, (2, 1, *spatial), generator=g)
    loss = BoundaryDoULoss(3)(logits, label)
    probs = logits.detach().softmax(1).numpy()
    expected, eps = 0.0, 1e-5
    for c in range(3):
        t = (label[:, 0].numpy() == c)
        alpha = min(2 * (1 - (_boundary_by_hand(t).sum() + eps) / (t.sum() + eps)) - 1, 0.8)
        p = probs[:, c]
        inter, z, y = (p * t).sum(), (p * p).sum(), t.sum()
        expected += (z + y - 2 * inter + eps) / (z + y - (1 + alpha) * inter + eps)
    assert float(loss) == pytest.approx(expected / 3, rel=1e-7)  # α in float32, as released
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    # a perfect (one-hot) prediction has no loss left
    perfect = torch.nn.functional.one_hot(label[:, 0], 3).movedim(-1, 1).double() * 50
    assert float(BoundaryDoULoss(3)(perfect, label)) < 1e-6
    with pytest.raises(ValueError, match="for 4 classes"):
        BoundaryDoULoss(4)(logits, label)
