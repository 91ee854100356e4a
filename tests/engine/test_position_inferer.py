"""Position-aware sliding window (FINE): the positions a network receives are its windows' true centres, stitching
is exact, nnU-Net's placement and mirroring follow their definitions, and the loader's crop position is the crop's."""

from __future__ import annotations

import itertools

import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, RandCropByPosNegLabeld, RandFlipd, RandRotated, RandSpatialCropd, SpatialPadd

from medattn_networks.engine.position_inferer import (
    CropPositiond,
    MirroredPredictor,
    PositionSlidingWindowInferer,
    crop_position,
    nnunet_window_starts,
)


def _coordinates(shape) -> torch.Tensor:
    """(1, d, *shape): channel i holds each voxel's index along axis i."""
    grids = torch.meshgrid(*(torch.arange(s, dtype=torch.float32) for s in shape), indexing="ij")
    return torch.stack(grids)[None]


def test_nnunet_starts_by_hand():
    # (300 − 128) / 3 = 57.33 between starts: ceil(172 / 64) + 1 = 4 windows, rounded
    assert nnunet_window_starts(300, 128, 0.5) == [0, 57, 115, 172]
    assert nnunet_window_starts(128, 128) == [0]
    assert nnunet_window_starts(129, 128) == [0, 1]
    assert nnunet_window_starts(200, 64, 1.0) == [0, 45, 91, 136]
    with pytest.raises(ValueError, match="smaller than the window"):
        nnunet_window_starts(60, 64)


@pytest.mark.parametrize("placement", ["monai", "nnunet"])
@pytest.mark.parametrize("shape", [(20, 40, 50), (12, 40, 70)])  # the second is padded along its first axis
def test_positions_are_the_true_window_centres(placement, shape):
    roi = (16, 32, 32)
    padded = [max(s, r) for s, r in zip(shape, roi)]
    low = [(p - s) // 2 for s, p in zip(shape, padded)]
    seen = []

    def network(window, position):
        centre = window[:, :, roi[0] // 2, roi[1] // 2, roi[2] // 2]  # coordinates of the window's centre voxel
        for b in range(window.shape[0]):
            inside = [float(centre[b, i]) + low[i] for i in range(3)]  # the padded array's coordinate of that voxel
            if all(window[b, i, roi[0] // 2, roi[1] // 2, roi[2] // 2] >= 0 for i in range(3)):
                assert position[b].tolist() == [inside[i] - padded[i] // 2 for i in range(3)]
                seen.append(tuple(position[b].tolist()))
        return window

    x = _coordinates(shape)
    inferer = PositionSlidingWindowInferer(roi, sw_batch_size=3, placement=placement, cval=-1.0)
    y = inferer(x, network)
    assert seen and len(set(seen)) == len(seen)
    torch.testing.assert_close(y, x)  # identity network: the stitched volume is the input


def test_nnunet_placement_visits_the_nnunet_windows():
    starts = []

    def network(window, position):
        starts.append(position[0].tolist())
        return window

    PositionSlidingWindowInferer((16, 64, 64), placement="nnunet", step=0.5)(torch.zeros(1, 1, 16, 300, 130), network)
    expected = list(itertools.product([0], nnunet_window_starts(300, 64), nnunet_window_starts(130, 64)))
    centres = [[s + r // 2 - p // 2 for s, r, p in zip(start, (16, 64, 64), (16, 300, 130))] for start in expected]
    assert starts == centres


def test_mirroring_averages_every_flip_with_the_unmirrored_position():
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(1, 3, 3, padding=1)  # not flip-equivariant
    positions = []

    def network(x, position):
        positions.append(position.clone())
        return conv(x) + position.sum()

    x, pos = torch.randn(2, 1, 6, 8, 8), torch.tensor([[1.0, -2.0, 3.0], [0.0, 5.0, -1.0]])
    with torch.no_grad():
        out = MirroredPredictor(network, (0, 1, 2), softmax=True)(x, pos)
        expected = 0
        for axes in [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]:
            dims = [a + 2 for a in axes]
            expected = expected + torch.flip((conv(torch.flip(x, dims)) + pos.sum()).softmax(1), dims) / 8
    torch.testing.assert_close(out, expected)
    assert len(positions) == 8 and all(torch.equal(p, pos) for p in positions)


def _meta_volume(shape):
    return MetaTensor(_coordinates(shape)[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crop_position_is_the_crop_centre_before_augmentation(seed):
    shape, roi = (30, 41, 52), (8, 16, 16)
    label = torch.zeros(1, *shape)
    label[0, 5:20, 10:30, 10:40] = 1
    crop = [RandCropByPosNegLabeld(["image", "label"], "label", roi, pos=1, neg=1, num_samples=2), CropPositiond("image")]
    augment = [RandFlipd("image", prob=1.0, spatial_axis=(0, 1, 2)), RandRotated("image", range_x=0.5, prob=1.0)]
    results = []
    for transforms in (crop, crop + augment):
        pipeline = Compose(transforms)
        pipeline.set_random_state(seed)
        results.append(pipeline({"image": _meta_volume(shape), "label": MetaTensor(label)}))
    for plain, augmented in zip(*results):
        centre = plain["image"][:, roi[0] // 2, roi[1] // 2, roi[2] // 2]  # original coordinates of the centre voxel
        assert plain["position"].tolist() == [float(centre[i]) - shape[i] // 2 for i in range(3)]
        assert torch.equal(augmented["position"], plain["position"])  # augmentation never changes it


def test_crop_position_of_a_padded_small_volume_and_errors():
    shape, roi = (6, 20, 20), (8, 16, 16)
    data = Compose([SpatialPadd("image", roi), RandSpatialCropd("image", roi, random_size=False), CropPositiond("image")])
    data.set_random_state(3)
    item = data({"image": _meta_volume(shape)})
    image = item["image"]
    # centre voxel's original coordinates (the padded first axis starts 1 voxel before the volume)
    centre = image[:, roi[0] // 2, roi[1] // 2, roi[2] // 2].tolist()
    padded = (8, 20, 20)
    assert item["position"].tolist()[1:] == [centre[i] - padded[i] // 2 for i in (1, 2)]
    assert item["position"][0].item() == roi[0] // 2 - padded[0] // 2  # the crop spans the whole padded axis
    with pytest.raises(ValueError, match="no crop recorded"):
        crop_position(_meta_volume(shape))
