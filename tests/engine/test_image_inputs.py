"""2D image folders (ISIC dermoscopy JPEG / PNG): the inference datalist's checks and the PNG mask writer."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from medattn_networks.data import make_isic2018
from medattn_networks.engine import SaveMaskPNGd, check_image, image_folder_datalist
from medattn_networks.errors import NoUsableInputError


@pytest.fixture
def isic(tmp_path):
    return make_isic2018(tmp_path / "isic", {"train": 2, "test": 1}, size=(30, 44))


def test_image_folder_lists_good_images_and_reports_bad_ones(isic, tmp_path):
    folder = isic / "ISIC2018_Task1-2_Training_Input"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "grey.png")  # 1 channel for a 3-channel model
    (folder / "cut.jpg").write_bytes((folder / "ISIC_0000000.jpg").read_bytes()[:300])  # truncated
    out = tmp_path / "out"
    items = image_folder_datalist(folder, 3, report_dir=out)
    assert [i["image"].rsplit("/", 1)[1] for i in items] == ["ISIC_0000000.jpg", "ISIC_0000001.jpg"]
    assert items[0]["output"] == str(out / "ISIC_0000000_seg.png")  # ATTRIBUTION.txt is not an input
    with open(out / "skipped_inputs.csv") as f:
        rows = {r[0].rsplit("/", 1)[1]: r[1] for r in list(csv.reader(f))[1:]}
    assert set(rows) == {"cut.jpg", "grey.png"}
    assert "not a readable image" in rows["cut.jpg"]
    assert "has 1 channel(s) (mode L), the model needs 3" in rows["grey.png"]
    assert check_image(folder / "ISIC_0000001.jpg", 3) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NoUsableInputError, match="no .jpg, .jpeg, .png images"):
        image_folder_datalist(empty)


def test_png_masks_round_trip_in_the_readers_orientation(isic, tmp_path):
    from monai.transforms import AsDiscrete, EnsureChannelFirst, LoadImage

    source = isic / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000001_segmentation.png"
    label = AsDiscrete(threshold=128)(EnsureChannelFirst()(LoadImage(reader="PILReader", image_only=True)(str(source))))
    target = tmp_path / "out" / "ISIC_0000001_seg.png"
    target.parent.mkdir()
    SaveMaskPNGd("pred")({"pred": label, "output": str(target)})
    assert np.array_equal(np.asarray(Image.open(target)), np.asarray(Image.open(source)))
    assert sorted(p.name for p in target.parent.iterdir()) == ["ISIC_0000001_seg.png"]  # no temporary file left
    with pytest.raises(ValueError, match="leave 0–255"):
        SaveMaskPNGd("pred")({"pred": label * 2, "output": str(tmp_path / "out" / "bad.png")})
    assert not (tmp_path / "out" / "bad.png").exists()


def test_single_region_keeps_the_largest_face_connected_region_and_fills_it():
    from medattn_networks.engine import SingleRegiond

    label = np.zeros((1, 12, 10), np.uint8)
    label[0, 1:8, 1:8] = 1
    label[0, 3, 3] = 0  # a hole
    label[0, 4, 4] = 2  # another class inside: a hole of the lesion too, filled
    label[0, 9:11, 8:10] = 1  # a second, smaller region
    label[0, 8, 8] = 1  # touches the big region only at a corner: its own region
    label[0, 0, 9] = 2  # other labels elsewhere stay
    out = SingleRegiond("pred")({"pred": torch.as_tensor(label)})["pred"]
    assert isinstance(out, torch.Tensor) and out.shape == label.shape and out.dtype == torch.uint8
    expected = np.zeros((12, 10), np.uint8)
    expected[1:8, 1:8] = 1
    expected[0, 9] = 2
    np.testing.assert_array_equal(out[0].numpy(), expected)
    # 3D without a channel axis, as numpy; an empty map stays empty
    volume = np.zeros((5, 6, 7), np.int64)
    volume[1:4, 1:4, 1:4], volume[2, 2, 2], volume[0, 5, 6] = 1, 0, 1
    kept = SingleRegiond("pred")({"pred": volume})["pred"]
    assert kept.sum() == 27 and kept[0, 5, 6] == 0
    assert not SingleRegiond("pred")({"pred": np.zeros((1, 4, 4))})["pred"].any()
